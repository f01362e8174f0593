//! The ECharts option for the finance page's daily chart (paid and refunded per UTC day).
//!
//! Bar heights come from `toChartValue` (an approximation); the tooltip shows the exact
//! decimal strings of the rows, so what a reader can read is never rounded.

import type { DailyRow } from '@/api/types'
import { toChartValue } from './chartValue'

export interface DailyChartLabels {
  paid: string
  refunded: string
  day: string
}

/** The days of one currency in date order, with exact strings kept for the tooltip. */
export function rowsForCurrency(rows: DailyRow[], currency: string): DailyRow[] {
  return rows
    .filter((r) => r.currency === currency)
    .slice()
    .sort((a, b) => (a.day < b.day ? -1 : a.day > b.day ? 1 : 0))
}

/** The currencies present in `rows`, sorted. */
export function currenciesOf(rows: DailyRow[]): string[] {
  return Array.from(new Set(rows.map((r) => r.currency))).sort()
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)
}

export function buildDailyChartOption(
  rows: DailyRow[],
  currency: string,
  labels: DailyChartLabels,
) {
  const days = rowsForCurrency(rows, currency)
  return {
    aria: { enabled: true },
    color: ['#1e7b34', '#c62f2f'],
    grid: { left: 8, right: 8, top: 40, bottom: 8, containLabel: true },
    legend: { top: 0, data: [labels.paid, labels.refunded] },
    tooltip: {
      trigger: 'axis',
      // Exact strings from the rows, never the approximated bar values.
      formatter: (params: unknown) => {
        const list = Array.isArray(params) ? (params as { dataIndex: number }[]) : []
        const row = list.length > 0 ? days[list[0]!.dataIndex] : undefined
        if (!row) return ''
        return [
          `${escapeHtml(labels.day)}: ${escapeHtml(row.day)}`,
          `${escapeHtml(labels.paid)}: ${escapeHtml(row.paid_amount)} ${escapeHtml(row.currency)}`,
          `${escapeHtml(labels.refunded)}: ${escapeHtml(row.refunded_amount)} ${escapeHtml(row.currency)}`,
        ].join('<br/>')
      },
    },
    xAxis: { type: 'category', data: days.map((r) => r.day) },
    yAxis: { type: 'value', name: currency },
    series: [
      { name: labels.paid, type: 'bar', data: days.map((r) => toChartValue(r.paid_amount)) },
      {
        name: labels.refunded,
        type: 'bar',
        data: days.map((r) => toChartValue(r.refunded_amount)),
      },
    ],
  }
}
