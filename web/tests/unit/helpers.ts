// Shared test helpers: a fresh Pinia, the app's i18n, and a fetch stand-in that answers
// with the service's envelope. fetch is mocked only in these unit tests.
import { vi } from 'vitest'
import { createPinia, setActivePinia } from 'pinia'
import { i18n } from '@/i18n'

export interface Answer {
  status?: number
  code?: number
  message?: string
  data?: unknown
}

export interface Call {
  url: string
  method: string
  headers: Record<string, string>
  body: unknown
}

/** Replaces fetch; `route` maps each call to an answer. Returns the calls seen. */
export function mockFetch(route: (call: Call) => Answer): Call[] {
  const calls: Call[] = []
  vi.stubGlobal(
    'fetch',
    vi.fn(async (url: string, init: RequestInit = {}) => {
      const call: Call = {
        url,
        method: init.method ?? 'GET',
        headers: { ...(init.headers as Record<string, string>) },
        body: init.body,
      }
      calls.push(call)
      const a = route(call)
      const status = a.status ?? 200
      const code = a.code ?? (status < 400 ? 0 : 50001)
      return new Response(
        JSON.stringify({ code, message: a.message ?? (code === 0 ? 'success' : 'error'), data: a.data ?? null }),
        { status, headers: { 'Content-Type': 'application/json' } },
      )
    }),
  )
  return calls
}

// jsdom has no scrolling; the router's scrollBehavior calls it on every navigation.
window.scrollTo = (() => {}) as typeof window.scrollTo

export function freshPinia() {
  const pinia = createPinia()
  setActivePinia(pinia)
  return pinia
}

export function setLanguage(locale: 'zh' | 'en'): void {
  i18n.global.locale.value = locale
}

export const plugins = () => [i18n]
