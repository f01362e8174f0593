//! The ONE place where an amount becomes a JS number — only to place it on a chart.
//!
//! A chart draws pixels, and a bar's height needs a number; a float cannot carry every
//! decimal amount exactly (`"12345678901234567.89"` would be rounded). So the chart is an
//! approximation for display only: its tooltip and every table on the pages show the exact
//! decimal strings the service sent, and nothing computed here is ever shown as an amount or
//! sent back to the service.

const DECIMAL_TEXT = /^-?\d+(\.\d+)?$/

/**
 * The approximate height of a bar for `amount` (a decimal string). Anything that is not a
 * plain decimal draws nothing rather than a wrong bar.
 */
export function toChartValue(amount: string): number {
  if (!DECIMAL_TEXT.test(amount)) return 0
  // Unary plus on a validated decimal literal: the approximation this module exists for.
  return +amount
}
