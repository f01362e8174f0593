// The CSV export keeps amounts exact and cannot smuggle formulas; the chart helper is the
// only string→number conversion and is only used for bar heights.
import { describe, expect, it } from 'vitest'
import { csvField, reconcileCsv } from '@/utils/csv'
import { toChartValue } from '@/utils/chartValue'
import { buildDailyChartOption } from '@/utils/dailyChart'
import { tokenFromHash } from '@/stores/portal'
import { newIdempotencyKey } from '@/utils/idempotency'

describe('reconcile CSV', () => {
  it('writes the exact amounts and quotes where needed', () => {
    const csv = reconcileCsv([
      {
        category: 'amount_mismatch',
        kind: 'payment',
        line: 3,
        payment_no: 'P1',
        reference: 'T,1',
        file_amount: '12345678901234567.89',
        ledger_amount: '12345678901234567.80',
        ledger_status: 'success',
        detail: null,
      },
      {
        category: 'missing_in_file',
        kind: 'refund',
        line: null,
        payment_no: 'P2',
        reference: 'R2',
        file_amount: null,
        ledger_amount: '5.00',
      },
    ])
    const lines = csv.trimEnd().split('\r\n')
    expect(lines[0]).toBe('category,type,line,payment_no,reference,file_amount,ledger_amount,ledger_status,detail')
    expect(lines[1]).toBe('amount_mismatch,payment,3,P1,"T,1",12345678901234567.89,12345678901234567.80,success,')
    expect(lines[2]).toBe('missing_in_file,refund,,P2,R2,,5.00,,')
  })

  it('neutralises spreadsheet formulas but keeps negative amounts', () => {
    expect(csvField('=HYPERLINK("x")')).toBe('"\'=HYPERLINK(""x"")"')
    expect(csvField('@SUM(A1)')).toBe("'@SUM(A1)")
    expect(csvField('-1.50')).toBe('-1.50')
    expect(csvField('-cmd')).toBe("'-cmd")
  })
})

describe('chart values', () => {
  it('converts plain decimals for bar heights only', () => {
    expect(toChartValue('100.50')).toBe(100.5)
    expect(toChartValue('500')).toBe(500)
    expect(toChartValue('not a number')).toBe(0)
    expect(toChartValue('1e5')).toBe(0)
  })

  it('keeps the exact strings in the tooltip', () => {
    const option = buildDailyChartOption(
      [
        { day: '2026-11-30', currency: 'CNY', paid_amount: '12345678901234567.89', refunded_amount: '0.00' },
        { day: '2026-11-29', currency: 'CNY', paid_amount: '1.00', refunded_amount: '0.50' },
        { day: '2026-11-30', currency: 'USD', paid_amount: '9.99', refunded_amount: '0.00' },
      ],
      'CNY',
      { paid: 'Paid', refunded: 'Refunded', day: 'Day' },
    )
    expect(option.xAxis.data).toEqual(['2026-11-29', '2026-11-30'])
    const tip = option.tooltip.formatter([{ dataIndex: 1 }])
    expect(tip).toContain('12345678901234567.89 CNY')
  })
})

describe('portal token', () => {
  it('is read from the fragment', () => {
    expect(tokenFromHash('#token=abc')).toBe('abc')
    expect(tokenFromHash('#other=1&token=x.y-z')).toBe('x.y-z')
    expect(tokenFromHash('#')).toBeNull()
    expect(tokenFromHash('')).toBeNull()
  })
})

describe('idempotency keys', () => {
  it('are distinct UUIDs', () => {
    const a = newIdempotencyKey()
    const b = newIdempotencyKey()
    expect(a).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
    expect(a).not.toBe(b)
  })
})
