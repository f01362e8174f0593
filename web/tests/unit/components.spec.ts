// Money is shown exactly as sent, times in the viewer's zone with the exact instant on
// hover, and statuses by their translated names.
import { beforeEach, describe, expect, it } from 'vitest'
import { mount } from '@vue/test-utils'
import MoneyText from '@/components/MoneyText.vue'
import TimeText from '@/components/TimeText.vue'
import StatusTag from '@/components/StatusTag.vue'
import { useLocaleStore } from '@/stores/locale'
import { freshPinia, plugins } from './helpers'

function mountWith<T>(component: T, props: Record<string, unknown>) {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  return mount(component as any, { props, global: { plugins: plugins() } })
}

describe('MoneyText', () => {
  beforeEach(() => {
    freshPinia()
  })

  it('shows a large amount exactly as given', () => {
    const w = mountWith(MoneyText, { amount: '12345678901234567.89', currency: 'CNY' })
    expect(w.find('.money-text__amount').text()).toBe('12345678901234567.89')
    expect(w.text()).toContain('CNY')
  })

  it('keeps trailing zeros and zero-decimal currencies as sent', () => {
    expect(mountWith(MoneyText, { amount: '100.00' }).text()).toBe('100.00')
    expect(mountWith(MoneyText, { amount: '500', currency: 'JPY' }).find('.money-text__amount').text()).toBe('500')
    expect(mountWith(MoneyText, { amount: '0.10' }).text()).toBe('0.10')
  })
})

describe('TimeText', () => {
  beforeEach(() => {
    freshPinia()
    useLocaleStore().setLocale('en')
  })

  it("shows the viewer's local time and the exact instant in the title", () => {
    process.env.TZ = 'Asia/Shanghai'
    const iso = '2026-11-30T16:05:09.123456Z'
    const w = mountWith(TimeText, { value: iso })
    const el = w.find('time')
    expect(el.attributes('title')).toBe(iso)
    expect(el.attributes('datetime')).toBe(iso)
    // 16:05:09 UTC is 00:05:09 the next day in Shanghai (UTC+8).
    expect(el.text()).toContain('01/12/2026')
    expect(el.text()).toContain('00:05:09')
    process.env.TZ = 'America/New_York'
    const w2 = mountWith(TimeText, { value: iso })
    expect(w2.find('time').text()).toContain('30/11/2026')
    expect(w2.find('time').text()).toContain('11:05:09')
    process.env.TZ = 'UTC'
  })

  it('shows a dash for a missing time', () => {
    const w = mountWith(TimeText, { value: null })
    expect(w.find('time').exists()).toBe(false)
    expect(w.text()).toBe('—')
  })
})

describe('StatusTag', () => {
  beforeEach(() => {
    freshPinia()
  })

  it('names payment statuses in English and Chinese', () => {
    const locale = useLocaleStore()
    locale.setLocale('en')
    expect(mountWith(StatusTag, { status: 'success' }).text()).toBe('Paid')
    expect(mountWith(StatusTag, { status: 'pending' }).text()).toBe('Pending')
    expect(mountWith(StatusTag, { status: 'refunded' }).text()).toBe('Refunded')
    locale.setLocale('zh')
    expect(mountWith(StatusTag, { status: 'success' }).text()).toBe('支付成功')
    expect(mountWith(StatusTag, { status: 'failed' }).text()).toBe('支付失败')
  })

  it('names refund statuses by their own kind', () => {
    const locale = useLocaleStore()
    locale.setLocale('en')
    expect(mountWith(StatusTag, { status: 'processing', kind: 'refund' }).text()).toBe('Processing')
    expect(mountWith(StatusTag, { status: 'success', kind: 'refund' }).text()).toBe('Refunded')
    locale.setLocale('zh')
    expect(mountWith(StatusTag, { status: 'processing', kind: 'refund' }).text()).toBe('退款中')
  })

  it('shows an unknown status as sent, and colours by status', () => {
    useLocaleStore().setLocale('en')
    expect(mountWith(StatusTag, { status: 'mystery' }).text()).toBe('mystery')
    expect(mountWith(StatusTag, { status: 'failed' }).classes().join(' ')).toContain('el-tag--danger')
    expect(mountWith(StatusTag, { status: 'success' }).classes().join(' ')).toContain('el-tag--success')
  })
})
