//! The member checkout: one payment by its payment_no, followed live while it is pending.
//!
//! Polling is a chain of timeouts (never overlapping requests) that stops for good on a final
//! status, on an unknown payment, and when the page is left.

import { defineStore } from 'pinia'
import { computed, ref } from 'vue'
import { ApiError, getCheckout } from '@/api/client'
import type { CheckoutView } from '@/api/types'

/** How often a pending payment is asked for again. */
export const CHECKOUT_POLL_MS = 1500

export const useCheckoutStore = defineStore('checkout', () => {
  const paymentNo = ref<string | null>(null)
  const view = ref<CheckoutView | null>(null)
  const notFound = ref(false)
  const loading = ref(false)
  /** The last failed refresh (the page keeps trying while pending). */
  const error = ref<unknown>(null)
  let timer: ReturnType<typeof setTimeout> | null = null
  /** Bumped on every open/stop so that an answer for an older page is ignored. */
  let generation = 0

  const isFinal = computed(
    () => notFound.value || (view.value !== null && view.value.status !== 'pending'),
  )
  const polling = ref(false)

  async function refresh(): Promise<void> {
    const no = paymentNo.value
    if (!no) return
    const mine = generation
    try {
      const answer = await getCheckout(no)
      if (mine !== generation) return
      view.value = answer
      error.value = null
    } catch (e) {
      if (mine !== generation) return
      if (e instanceof ApiError && e.isNotFound) {
        notFound.value = true
        view.value = null
      } else {
        error.value = e
      }
    }
  }

  function schedule(): void {
    const mine = generation
    if (isFinal.value) {
      polling.value = false
      return
    }
    polling.value = true
    timer = setTimeout(async () => {
      timer = null
      if (mine !== generation) return
      await refresh()
      if (mine === generation) schedule()
    }, CHECKOUT_POLL_MS)
  }

  /** Shows `no` and follows it until its status is final. */
  async function open(no: string): Promise<void> {
    stop()
    const mine = generation
    paymentNo.value = no
    view.value = null
    notFound.value = false
    error.value = null
    loading.value = true
    await refresh()
    if (mine !== generation) return
    loading.value = false
    schedule()
  }

  function stop(): void {
    generation += 1
    if (timer !== null) clearTimeout(timer)
    timer = null
    polling.value = false
  }

  return { paymentNo, view, notFound, loading, error, isFinal, polling, open, stop, refresh }
})
