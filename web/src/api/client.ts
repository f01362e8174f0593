//! The one way the pages talk to the service (`/api/v1/...`, same origin).
//!
//! It adds what every call needs — `Accept-Language` from the locale store, the staff
//! session's `X-CSRF-Token` on POST/DELETE, the member portal's `Authorization: Bearer` —
//! unwraps the `{code, message, data}` envelope, and turns an error envelope into an
//! `ApiError` whose message is in the user's language. It keeps no state of its own and never
//! sees or stores a staff secret beyond the one sign-in request that carries it.

import { translate, hasMessage } from '@/i18n'
import { useLocaleStore } from '@/stores/locale'
import { useSessionStore } from '@/stores/session'
import { usePortalStore } from '@/stores/portal'
import type {
  CheckoutView,
  ConsoleSession,
  ConsoleSessionCreated,
  Daily,
  Envelope,
  EventFeed,
  HistoryPage,
  ListFilter,
  ListPage,
  PaymentDetail,
  PaymentEvents,
  PeriodFilter,
  PortalSession,
  ReconcileReport,
  RefundCreated,
  SignedDigest,
  Totals,
  VerifyReport,
} from './types'

export const API_BASE = '/api/v1'

/** Who a call is made for: decides the credentials sent and what a 401 means. */
export type Audience = 'public' | 'console' | 'portal'

/** Error codes of the service (SPEC §5) plus the sign-in throttle; 0 = no answer at all. */
export const ErrorCode = {
  Network: 0,
  BadRequest: 40001,
  Unauthorized: 40101,
  Replay: 40102,
  Forbidden: 40301,
  NotFound: 40401,
  NotAllowed: 40901,
  RefundExceeds: 40902,
  IdempotencyMismatch: 40903,
  TooLarge: 41301,
  TooManySignIns: 42901,
  Internal: 50001,
  Unavailable: 50301,
} as const

/** A failed call: `message` is for the user (their language), `detail` is the server's words. */
export class ApiError extends Error {
  readonly status: number
  readonly code: number
  readonly detail: string
  readonly data: unknown

  constructor(status: number, code: number, serverMessage: string, data: unknown = null) {
    super(describeError(status, code))
    this.name = 'ApiError'
    this.status = status
    this.code = code
    this.data = data
    // The server already answers in the requested language; keep its words only when they
    // add something to the sentence shown.
    this.detail = serverMessage && serverMessage !== this.message ? serverMessage : ''
  }

  get isNotFound(): boolean {
    return this.status === 404
  }

  get isUnauthorized(): boolean {
    return this.status === 401
  }
}

/** The user-facing sentence for an error, in the current language. */
export function describeError(status: number, code: number): string {
  if (status === 0) return translate('errors.network')
  const key = `errors.code.${code}`
  if (code && hasMessage(key)) return translate(key)
  return translate('errors.unexpected', { status })
}

/** Any thrown value as a sentence for the user (re-translated at the time it is shown). */
export function errorText(e: unknown): string {
  if (e instanceof ApiError) return describeError(e.status, e.code)
  return translate('errors.unknown')
}

/** The server's detail for an error, if it adds to `errorText`. */
export function errorDetail(e: unknown): string {
  return e instanceof ApiError ? e.detail : ''
}

type Query = Record<string, string | number | boolean | null | undefined>

interface RequestOptions {
  method?: 'GET' | 'POST' | 'DELETE'
  audience: Audience
  query?: Query
  /** A JSON body (serialised here). */
  json?: unknown
  /** A raw body with its content type (the settlement CSV). */
  raw?: { body: Blob | string; contentType: string }
  headers?: Record<string, string>
  /**
   * The call itself asks whether a session is live (sign-in, session restore): its 401 is an
   * answer, not a sign that the session ended.
   */
  own401?: boolean
}

export function queryString(query: Query | undefined): string {
  if (!query) return ''
  const params = new URLSearchParams()
  for (const [k, v] of Object.entries(query)) {
    if (v === undefined || v === null || v === '') continue
    params.append(k, String(v))
  }
  const s = params.toString()
  return s ? `?${s}` : ''
}

/** Calls the API and returns the envelope's `data`, or throws `ApiError`. */
export async function request<T>(path: string, opts: RequestOptions): Promise<T> {
  const method = opts.method ?? 'GET'
  const headers: Record<string, string> = {
    Accept: 'application/json',
    'Accept-Language': useLocaleStore().acceptLanguage,
    ...opts.headers,
  }
  let body: BodyInit | undefined
  if (opts.json !== undefined) {
    headers['Content-Type'] = 'application/json'
    body = JSON.stringify(opts.json)
  } else if (opts.raw) {
    headers['Content-Type'] = opts.raw.contentType
    body = opts.raw.body
  }
  if (opts.audience === 'console' && method !== 'GET') {
    const csrf = useSessionStore().csrfToken
    if (csrf) headers['X-CSRF-Token'] = csrf
  }
  if (opts.audience === 'portal') {
    const token = usePortalStore().token
    if (token) headers.Authorization = `Bearer ${token}`
  }

  let response: Response
  try {
    response = await fetch(`${API_BASE}${path}${queryString(opts.query)}`, {
      method,
      headers,
      body,
      credentials: 'same-origin',
      cache: 'no-store',
    })
  } catch {
    throw new ApiError(0, ErrorCode.Network, '')
  }

  let envelope: Envelope<T> | null = null
  try {
    envelope = (await response.json()) as Envelope<T>
  } catch {
    envelope = null
  }
  if (response.ok && envelope && envelope.code === 0) return envelope.data

  const code = envelope && typeof envelope.code === 'number' ? envelope.code : 0
  const error = new ApiError(
    response.status,
    code,
    envelope && typeof envelope.message === 'string' ? envelope.message : '',
    envelope ? envelope.data : null,
  )
  if (response.status === 401 && !opts.own401) {
    if (opts.audience === 'console') useSessionStore().end()
    if (opts.audience === 'portal') usePortalStore().invalidate()
  }
  throw error
}

// ---- Staff console session -------------------------------------------------------------

export function createConsoleSession(keyId: string, secret: string) {
  return request<ConsoleSessionCreated>('/console/sessions', {
    method: 'POST',
    audience: 'console',
    json: { key_id: keyId, secret },
    own401: true,
  })
}

export function currentConsoleSession() {
  return request<ConsoleSession>('/console/sessions/current', {
    audience: 'console',
    own401: true,
  })
}

export function deleteConsoleSession() {
  return request<unknown>('/console/sessions/current', {
    method: 'DELETE',
    audience: 'console',
    own401: true,
  })
}

// ---- Member checkout and portal --------------------------------------------------------

export function getCheckout(paymentNo: string) {
  return request<CheckoutView>(`/checkout/${encodeURIComponent(paymentNo)}`, {
    audience: 'public',
  })
}

export function getPortalSession() {
  return request<PortalSession>('/portal/session', { audience: 'portal' })
}

export function getPortalHistory(userId: string, page: number, size: number) {
  return request<HistoryPage>('/payments/history', {
    audience: 'portal',
    query: { user_id: userId, page, size },
  })
}

export function getPortalPayment(id: string) {
  return request<PaymentDetail>(`/payments/${encodeURIComponent(id)}`, { audience: 'portal' })
}

// ---- Console: payments ------------------------------------------------------------------

export function listPayments(filter: ListFilter) {
  return request<ListPage>('/payments', { audience: 'console', query: { ...filter } })
}

export function getPayment(id: string, asOf?: string | null) {
  return request<PaymentDetail>(`/payments/${encodeURIComponent(id)}`, {
    audience: 'console',
    query: { as_of: asOf ?? undefined },
  })
}

export function refundPayment(
  id: string,
  body: { amount: string; reason: string },
  idempotencyKey: string,
) {
  return request<RefundCreated>(`/payments/${encodeURIComponent(id)}/refund`, {
    method: 'POST',
    audience: 'console',
    json: body,
    headers: { 'Idempotency-Key': idempotencyKey },
  })
}

export function getPaymentEvents(id: string) {
  return request<PaymentEvents>(`/payments/${encodeURIComponent(id)}/events`, {
    audience: 'console',
  })
}

// ---- Console: audit ---------------------------------------------------------------------

export function getEventFeed(after: number, limit: number) {
  return request<EventFeed>('/events', { audience: 'console', query: { after, limit } })
}

export function verifyLog() {
  return request<VerifyReport>('/audit/verify', { audience: 'console' })
}

export function getDigest() {
  return request<SignedDigest>('/audit/digest', { audience: 'console' })
}

// ---- Console: finance -------------------------------------------------------------------

export function getTotals(filter: PeriodFilter) {
  return request<Totals>('/ledger/totals', { audience: 'console', query: { ...filter } })
}

export function getDaily(filter: PeriodFilter) {
  return request<Daily>('/ledger/daily', { audience: 'console', query: { ...filter } })
}

export function reconcileSettlement(
  file: Blob,
  period: { start_time?: string; end_time?: string },
) {
  return request<ReconcileReport>('/reconcile', {
    method: 'POST',
    audience: 'console',
    query: period,
    raw: { body: file, contentType: 'text/csv' },
  })
}
