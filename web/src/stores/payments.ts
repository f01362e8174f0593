//! Console payments: the filtered list, one payment's detail (now or as of a time), its
//! events, and refunds followed to their end.
//!
//! Amounts stay the service's decimal strings throughout; this store never does arithmetic
//! on money (the refundable amount is the service's).

import { defineStore } from 'pinia'
import { ref } from 'vue'
import {
  ApiError,
  getPayment,
  getPaymentEvents,
  listPayments,
  refundPayment,
} from '@/api/client'
import type {
  LedgerEvent,
  ListFilter,
  ListPage,
  PaymentDetail,
  RefundCreated,
} from '@/api/types'

/** How long a refund is followed before the page says it is still being processed. */
export const REFUND_FOLLOW_MS = 30_000
export const REFUND_FOLLOW_INTERVAL_MS = 1_000

export type RefundOutcome = 'success' | 'failed' | 'processing'

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

export const usePaymentsStore = defineStore('payments', () => {
  const page = ref<ListPage | null>(null)
  const listLoading = ref(false)
  const listError = ref<unknown>(null)

  const detail = ref<PaymentDetail | null>(null)
  const detailAsOf = ref<string | null>(null)
  const detailLoading = ref(false)
  const detailError = ref<unknown>(null)
  const detailNotFound = ref(false)

  const events = ref<LedgerEvent[] | null>(null)
  const eventsError = ref<unknown>(null)

  let listGeneration = 0
  let detailGeneration = 0

  async function loadList(filter: ListFilter): Promise<void> {
    const mine = ++listGeneration
    listLoading.value = true
    listError.value = null
    try {
      const answer = await listPayments(filter)
      if (mine === listGeneration) page.value = answer
    } catch (e) {
      if (mine === listGeneration) listError.value = e
    } finally {
      if (mine === listGeneration) listLoading.value = false
    }
  }

  async function loadDetail(id: string, asOf: string | null): Promise<void> {
    const mine = ++detailGeneration
    detailLoading.value = true
    detailError.value = null
    detailNotFound.value = false
    try {
      const answer = await getPayment(id, asOf)
      if (mine !== detailGeneration) return
      detail.value = answer
      detailAsOf.value = asOf
    } catch (e) {
      if (mine !== detailGeneration) return
      detail.value = null
      if (e instanceof ApiError && e.isNotFound) detailNotFound.value = true
      else detailError.value = e
    } finally {
      if (mine === detailGeneration) detailLoading.value = false
    }
  }

  async function loadEvents(id: string): Promise<void> {
    eventsError.value = null
    try {
      events.value = (await getPaymentEvents(id)).events
    } catch (e) {
      events.value = null
      eventsError.value = e
    }
  }

  function refund(
    id: string,
    amount: string,
    reason: string,
    idempotencyKey: string,
  ): Promise<RefundCreated> {
    return refundPayment(id, { amount, reason }, idempotencyKey)
  }

  /**
   * Re-reads the payment until the refund leaves `processing` (or the time is up), keeping
   * the detail shown current. Stops early if another payment is opened meanwhile.
   */
  async function followRefund(id: string, refundId: string): Promise<RefundOutcome> {
    const deadline = Date.now() + REFUND_FOLLOW_MS
    const mine = detailGeneration
    for (;;) {
      const current = await getPayment(id, null)
      if (mine !== detailGeneration) return 'processing'
      detail.value = current
      detailAsOf.value = null
      const r = current.refunds.find((x) => x.id === refundId)
      if (r && r.status !== 'processing') return r.status === 'success' ? 'success' : 'failed'
      if (Date.now() + REFUND_FOLLOW_INTERVAL_MS > deadline) return 'processing'
      await sleep(REFUND_FOLLOW_INTERVAL_MS)
    }
  }

  function clearDetail(): void {
    detailGeneration += 1
    detail.value = null
    detailAsOf.value = null
    events.value = null
    detailError.value = null
    eventsError.value = null
    detailNotFound.value = false
  }

  return {
    page,
    listLoading,
    listError,
    detail,
    detailAsOf,
    detailLoading,
    detailError,
    detailNotFound,
    events,
    eventsError,
    loadList,
    loadDetail,
    loadEvents,
    refund,
    followRefund,
    clearDetail,
  }
})
