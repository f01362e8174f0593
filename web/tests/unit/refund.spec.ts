// The refund form: confirmation, one Idempotency-Key per confirmed submission, the refund
// followed until it leaves `processing`, and the new refunded amount shown exactly.
import { beforeEach, describe, expect, it, vi } from 'vitest'
import { flushPromises, mount } from '@vue/test-utils'
import { createMemoryHistory, RouterView } from 'vue-router'
import { defineComponent, h } from 'vue'
import { ElMessageBox } from 'element-plus'
import { createAppRouter } from '@/router'
import { i18n } from '@/i18n'
import { useLocaleStore } from '@/stores/locale'
import { freshPinia, mockFetch, type Call } from './helpers'

const Root = defineComponent({ render: () => h(RouterView) })

function detail(refunded: string, refundable: string, refunds: unknown[]) {
  return {
    id: 'p1',
    order_no: 'O-1',
    payment_no: 'P1',
    payment_method: 'alipay',
    amount: '12345678901234567.89',
    currency: 'CNY',
    refunded_amount: refunded,
    refundable_amount: refundable,
    status: 'success',
    payment_time: '2026-11-30T08:01:00Z',
    refund_time: null,
    created_at: '2026-11-30T08:00:00Z',
    updated_at: '2026-11-30T08:01:00Z',
    user_id: 'U-1',
    failure_reason: null,
    flagged_for_refund: false,
    flag_reason: null,
    payer: null,
    callbacks: [],
    refunds,
  }
}

describe('refund form', () => {
  beforeEach(() => {
    document.body.innerHTML = ''
  })

  it('confirms, sends one idempotency key, follows the refund and shows the new amount', async () => {
    const confirm = vi.spyOn(ElMessageBox, 'confirm').mockResolvedValue('confirm' as never)
    let refunded = false
    const calls = mockFetch((call: Call) => {
      if (call.url === '/api/v1/console/sessions/current') {
        return { data: { key_id: 'op', role: 'operator', csrf_token: 'csrf-1', expires_at: '2026-11-30T09:00:00Z' } }
      }
      if (call.url.endsWith('/events')) return { data: { payment_id: 'p1', events: [] } }
      if (call.method === 'POST') {
        refunded = true
        return {
          status: 201,
          data: { id: 'r1', payment_id: 'p1', refund_no: 'R1', amount: '0.01', reason: 'customer asked', status: 'processing', created_at: '2026-11-30T09:00:00Z' },
        }
      }
      return refunded
        ? { data: detail('0.01', '12345678901234567.88', [{ id: 'r1', refund_no: 'R1', amount: '0.01', reason: 'customer asked', status: 'success', created_at: '2026-11-30T09:00:00Z' }]) }
        : { data: detail('0.00', '12345678901234567.89', []) }
    })
    const pinia = freshPinia()
    useLocaleStore().setLocale('en')
    const router = createAppRouter(createMemoryHistory())
    const wrapper = mount(Root, { global: { plugins: [pinia, i18n, router] }, attachTo: document.body })
    await router.push('/console/payments/p1')
    await flushPromises()
    await flushPromises()

    expect(wrapper.find('[data-testid="detail-refundable-amount"]').text()).toContain('12345678901234567.89')
    expect(wrapper.find('[data-testid="detail-status"]').attributes('data-status')).toBe('success')

    // An amount that is not a decimal is refused before anything is sent.
    await wrapper.find('[data-testid="refund-amount"]').setValue('1,5')
    await wrapper.find('[data-testid="refund-reason"]').setValue('customer asked')
    await wrapper.find('[data-testid="refund-form"] form').trigger('submit')
    await flushPromises()
    expect(confirm).not.toHaveBeenCalled()
    expect(wrapper.find('[data-testid="refund-error"]').exists()).toBe(true)

    await wrapper.find('[data-testid="refund-amount"]').setValue('0.01')
    await wrapper.find('[data-testid="refund-form"] form').trigger('submit')
    await flushPromises()
    await flushPromises()

    expect(confirm).toHaveBeenCalledOnce()
    const posts = calls.filter((c) => c.method === 'POST')
    expect(posts).toHaveLength(1)
    expect(posts[0]!.url).toBe('/api/v1/payments/p1/refund')
    expect(posts[0]!.headers['Idempotency-Key']).toMatch(/^[0-9a-f-]{36}$/)
    expect(posts[0]!.headers['X-CSRF-Token']).toBe('csrf-1')
    expect(JSON.parse(posts[0]!.body as string)).toEqual({ amount: '0.01', reason: 'customer asked' })

    expect(wrapper.find('[data-testid="detail-refunded-amount"]').text()).toContain('0.01')
    expect(wrapper.find('[data-testid="detail-refundable-amount"]').text()).toContain('12345678901234567.88')
    expect(wrapper.findAll('[data-testid="refund-row"]')).toHaveLength(1)
    wrapper.unmount()
  })
})
