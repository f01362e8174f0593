//! The member portal: the link's token (sessionStorage only, for this tab), the member it
//! names, their payment history and one payment's detail.
//!
//! The token arrives in the address's fragment (`#token=…`), which never reaches a server
//! log; it is moved into sessionStorage and removed from the address bar at once.

import { defineStore } from 'pinia'
import { ref } from 'vue'
import {
  ApiError,
  getPortalHistory,
  getPortalPayment,
  getPortalSession,
} from '@/api/client'
import type { HistoryPage, PaymentDetail, PortalSession } from '@/api/types'

export const PORTAL_TOKEN_KEY = 'ledger.portal.token'
export const PORTAL_PAGE_SIZE = 10

function readToken(): string | null {
  try {
    return window.sessionStorage.getItem(PORTAL_TOKEN_KEY)
  } catch {
    return null
  }
}

/** The token named by a fragment such as `#token=abc`, or null. */
export function tokenFromHash(hash: string): string | null {
  const raw = hash.startsWith('#') ? hash.slice(1) : hash
  if (!raw) return null
  const token = new URLSearchParams(raw).get('token')
  return token && token.trim() ? token.trim() : null
}

export type PortalState = 'idle' | 'loading' | 'ready' | 'invalid'

export const usePortalStore = defineStore('portal', () => {
  const token = ref<string | null>(readToken())
  const state = ref<PortalState>('idle')
  const member = ref<PortalSession | null>(null)
  const history = ref<HistoryPage | null>(null)
  const historyLoading = ref(false)
  const error = ref<unknown>(null)

  /** Takes the token out of a fragment; returns whether there was one. */
  function captureToken(hash: string): boolean {
    const found = tokenFromHash(hash)
    if (!found) return false
    token.value = found
    try {
      window.sessionStorage.setItem(PORTAL_TOKEN_KEY, found)
    } catch {
      // Kept in memory for this page only.
    }
    // A new link starts over, even in a tab that held an older one.
    state.value = 'idle'
    member.value = null
    history.value = null
    return true
  }

  /** The link is expired, altered or missing. */
  function invalidate(): void {
    state.value = 'invalid'
    token.value = null
    member.value = null
    history.value = null
    try {
      window.sessionStorage.removeItem(PORTAL_TOKEN_KEY)
    } catch {
      // Nothing stored.
    }
  }

  /** Checks the link with the service once per page load. */
  async function start(): Promise<void> {
    if (state.value === 'ready' || state.value === 'invalid') return
    if (!token.value) {
      invalidate()
      return
    }
    state.value = 'loading'
    error.value = null
    try {
      member.value = await getPortalSession()
      state.value = 'ready'
    } catch (e) {
      if (e instanceof ApiError && e.isUnauthorized) {
        invalidate()
      } else {
        state.value = 'idle'
        error.value = e
      }
    }
  }

  async function loadHistory(page: number): Promise<void> {
    if (!member.value) return
    historyLoading.value = true
    error.value = null
    try {
      history.value = await getPortalHistory(member.value.user_id, page, PORTAL_PAGE_SIZE)
    } catch (e) {
      error.value = e
    } finally {
      historyLoading.value = false
    }
  }

  async function loadPayment(id: string): Promise<PaymentDetail> {
    return getPortalPayment(id)
  }

  return {
    token,
    state,
    member,
    history,
    historyLoading,
    error,
    captureToken,
    invalidate,
    start,
    loadHistory,
    loadPayment,
  }
})
