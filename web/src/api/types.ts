//! The shapes the API answers with (docs/pages-api.md), as the pages read them.
//!
//! Every amount is a decimal string exactly as the service formatted it, and every time an
//! RFC 3339 UTC string: neither is ever turned into a JS number or Date for display.
//! Fields the contract names but an older server may not send yet are optional.

/** The `{code, message, data}` envelope around every answer. */
export interface Envelope<T> {
  code: number
  message: string
  data: T
}

export type Role = 'operator' | 'auditor' | 'finance' | 'admin'

export type PaymentStatus = 'pending' | 'success' | 'failed' | 'refunded'
export type RefundStatus = 'processing' | 'success' | 'failed'

/** A staff session as the browser keeps it: never the secret. */
export interface ConsoleSession {
  key_id: string
  role: Role
  csrf_token: string
  expires_at: string
}

export interface ConsoleSessionCreated extends ConsoleSession {
  idle_timeout_secs?: number
}

export interface CheckoutView {
  payment_no: string
  order_id: string
  amount: string
  currency: string
  payment_method: string
  status: string
  failure_reason: string | null
  return_url: string | null
  pay_url: string | null
  created_at: string
  paid_at: string | null
  expires_at: string | null
}

export interface PortalSession {
  user_id: string
  expires_at: string
}

export interface HistoryItem {
  payment_id: string
  amount: string
  currency: string
  status: string
  payment_method?: string
  order_id?: string
  refunded_amount?: string
  created_at: string
}

export interface HistoryPage {
  total: number
  page: number
  size: number
  payments: HistoryItem[]
}

export interface ListItem {
  id: string
  order_no: string
  payment_no: string
  payment_method: string
  amount: string
  currency: string
  status: string
  payment_time: string | null
  created_at: string
  flagged_for_refund?: boolean
}

export interface ListPage {
  total: number
  page: number
  size: number
  list: ListItem[]
}

export interface ListFilter {
  page: number
  size: number
  order_no?: string
  payment_no?: string
  status?: string
  start_time?: string
  end_time?: string
  flagged?: 'true' | 'false'
}

export interface CallbackView {
  id: string
  callback_no: string
  status: string
  outcome?: string
  amount?: string
  gateway_trade_no?: string
  refund_no?: string | null
  reason?: string | null
  flagged_for_refund?: boolean
  created_at: string
}

export interface RefundView {
  id: string
  refund_no: string
  amount: string
  reason: string
  status: string
  created_at: string
  updated_at?: string
  failure_reason?: string | null
  flagged?: boolean
}

export interface PayerView {
  name: string | null
  account: string | null
}

export interface PaymentDetail {
  id: string
  order_no: string
  payment_no: string
  payment_method: string
  amount: string
  currency: string
  refunded_amount: string
  refundable_amount?: string
  status: string
  payment_time: string | null
  refund_time: string | null
  created_at: string
  updated_at: string
  user_id?: string
  failure_reason?: string | null
  flagged_for_refund?: boolean
  flag_reason?: string | null
  payer?: PayerView | null
  callbacks: CallbackView[]
  refunds: RefundView[]
}

export interface RefundCreated {
  id: string
  payment_id: string
  refund_no: string
  amount: string
  reason: string
  status: string
  created_at: string
  position?: number
}

export interface LedgerEvent {
  event_id: string
  position: number
  payment_id: string
  version: number
  type: string
  data: Record<string, unknown>
  metadata: Record<string, unknown>
  recorded_at: string
  prev_hash: string
  hash: string
}

export interface PaymentEvents {
  payment_id: string
  events: LedgerEvent[]
}

export interface EventFeed {
  events: LedgerEvent[]
  next_after: number
}

export interface VerifyReport {
  ok: boolean
  events_checked: number
  head_position: number
  head_hash: string
  root_hash?: string
  first_broken_position: number | null
  problem?: string | null
}

export interface SignedDigest {
  position: number
  root_hash: string
  signed_at: string
  public_key: string
  signature: string
}

export interface CurrencyTotals {
  currency: string
  paid_count: number
  paid_amount: string
  refunded_amount: string
  net_amount: string
  matches: boolean
}

export interface Totals {
  matches: boolean
  currencies: CurrencyTotals[]
}

export interface DailyRow {
  day: string
  currency: string
  paid_amount: string
  refunded_amount: string
}

export interface Daily {
  days?: DailyRow[]
}

export interface PeriodFilter {
  currency?: string
  start_time?: string
  end_time?: string
}

export type ReconcileCategory =
  | 'matched'
  | 'missing_in_ledger'
  | 'missing_in_file'
  | 'amount_mismatch'
  | 'status_mismatch'
  | 'duplicate_in_file'

export const RECONCILE_CATEGORIES: readonly ReconcileCategory[] = [
  'matched',
  'missing_in_ledger',
  'missing_in_file',
  'amount_mismatch',
  'status_mismatch',
  'duplicate_in_file',
]

export interface ReconcileItem {
  category: string
  line: number | null
  payment_no: string
  reference: string
  kind: string
  file_amount: string | null
  ledger_amount: string | null
  ledger_status?: string | null
  detail?: string | null
}

export interface ReconcileReport {
  all_match: boolean
  counts: Partial<Record<ReconcileCategory, number>>
  items: ReconcileItem[]
}
