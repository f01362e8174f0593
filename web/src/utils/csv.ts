//! The reconciliation report as CSV, built in the browser from the service's JSON.
//!
//! Columns and values are the same as `ledger reconcile --format csv` (machine names, exact
//! amounts as strings), plus the service's `detail`, so the file diffs cleanly against the
//! command line's.

import type { ReconcileItem } from '@/api/types'

export const RECONCILE_CSV_COLUMNS = [
  'category',
  'type',
  'line',
  'payment_no',
  'reference',
  'file_amount',
  'ledger_amount',
  'ledger_status',
  'detail',
] as const

/**
 * One RFC 4180 field. A value a spreadsheet would run as a formula (`=`, `+`, `@`, a tab,
 * or `-` not starting a number) is prefixed with `'` so opening the file cannot execute it.
 */
export function csvField(value: string): string {
  let v = value
  if (/^[=+@\t\r]/.test(v) || /^-(?![\d.])/.test(v)) v = `'${v}`
  return /[",\r\n]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v
}

export function reconcileCsv(items: ReconcileItem[]): string {
  const lines = [RECONCILE_CSV_COLUMNS.join(',')]
  for (const i of items) {
    lines.push(
      [
        i.category,
        i.kind,
        i.line === null || i.line === undefined ? '' : String(i.line),
        i.payment_no,
        i.reference,
        i.file_amount ?? '',
        i.ledger_amount ?? '',
        i.ledger_status ?? '',
        i.detail ?? '',
      ]
        .map(csvField)
        .join(','),
    )
  }
  return `${lines.join('\r\n')}\r\n`
}
