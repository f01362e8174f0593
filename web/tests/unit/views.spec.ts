// Pages through the real router (memory history): checkout outcomes, the portal link's
// token, the console's session and role guards, and translated page titles.
import { beforeEach, describe, expect, it } from 'vitest'
import { flushPromises, mount } from '@vue/test-utils'
import { createMemoryHistory } from 'vue-router'
import { defineComponent, h } from 'vue'
import { RouterView } from 'vue-router'
import { createAppRouter } from '@/router'
import { i18n } from '@/i18n'
import { useLocaleStore } from '@/stores/locale'
import { PORTAL_TOKEN_KEY } from '@/stores/portal'
import { freshPinia, mockFetch, type Answer, type Call } from './helpers'

const Root = defineComponent({ render: () => h(RouterView) })

async function open(path: string, route: (call: Call) => Answer, locale: 'en' | 'zh' = 'en') {
  const pinia = freshPinia()
  const calls = mockFetch(route)
  useLocaleStore().setLocale(locale)
  const router = createAppRouter(createMemoryHistory())
  const wrapper = mount(Root, { global: { plugins: [pinia, i18n, router] }, attachTo: document.body })
  await router.push(path)
  await router.isReady()
  await flushPromises()
  await flushPromises()
  return { wrapper, router, calls }
}

function checkout(status: string, extra: Record<string, unknown> = {}) {
  return {
    data: {
      payment_no: 'P1',
      order_id: 'O-1',
      amount: '12345678901234567.89',
      currency: 'CNY',
      payment_method: 'wechat',
      status,
      failure_reason: null,
      return_url: null,
      pay_url: '/sandbox/pay/P1',
      created_at: '2026-11-30T08:00:00Z',
      paid_at: null,
      expires_at: '2026-11-30T08:30:00Z',
      ...extra,
    },
  }
}

describe('checkout page', () => {
  beforeEach(() => {
    localStorage.clear()
    sessionStorage.clear()
    document.body.innerHTML = ''
  })

  it('shows the amount exactly and the way on to the gateway while pending', async () => {
    const { wrapper } = await open('/checkout/P1', () => checkout('pending'))
    expect(wrapper.find('[data-testid="checkout-amount"]').text()).toContain('12345678901234567.89')
    expect(wrapper.find('[data-testid="checkout-status"]').attributes('data-status')).toBe('pending')
    expect(wrapper.find('[data-testid="checkout-pay"]').attributes('href')).toBe('/sandbox/pay/P1')
    expect(document.title).toBe('Checkout · Ledger')
    wrapper.unmount()
  })

  it('explains a gateway error generically and offers the merchant page', async () => {
    const { wrapper } = await open('/checkout/P1', () =>
      checkout('failed', { failure_reason: 'gateway_error: connect timeout', return_url: 'https://shop.example/cart' }),
    )
    expect(wrapper.find('[data-testid="checkout-reason"]').text()).toBe('The payment gateway could not take the payment.')
    expect(wrapper.find('[data-testid="checkout-return"]').attributes('href')).toBe('https://shop.example/cart')
    expect(wrapper.find('[data-testid="checkout-pay"]').exists()).toBe(false)
    wrapper.unmount()
  })

  it('translates known reasons and shows unknown ones raw', async () => {
    let r = await open('/checkout/P1', () => checkout('failed', { failure_reason: 'expired' }), 'zh')
    expect(r.wrapper.find('[data-testid="checkout-reason"]').text()).toBe('支付未在规定时间内完成，已过期。')
    expect(document.title).toBe('支付失败 · 账本')
    expect(r.wrapper.find('[data-testid="checkout-return"]').exists()).toBe(false)
    r.wrapper.unmount()
    r = await open('/checkout/P1', () => checkout('failed', { failure_reason: 'card_blocked' }))
    expect(r.wrapper.find('[data-testid="checkout-reason"]').text()).toBe('card_blocked')
    r.wrapper.unmount()
  })

  it('shows a WeChat Pay code_url as a QR code to scan and a link that opens the app', async () => {
    const code = 'weixin://wxpay/bizpayurl?pr=AbC123xyz'
    const { wrapper } = await open('/checkout/P1', () => checkout('pending', { pay_url: code }), 'zh')
    await flushPromises()
    await new Promise((resolve) => setTimeout(resolve, 0))
    await flushPromises()
    const img = wrapper.find('[data-testid="checkout-qr"]')
    expect(img.exists()).toBe(true)
    const src = img.attributes('src') ?? ''
    expect(src.startsWith('data:image/svg+xml;charset=utf-8,')).toBe(true)
    const svg = decodeURIComponent(src.slice(src.indexOf(',') + 1))
    expect(svg).toContain('<svg')
    expect(svg).toContain('<path')
    expect(img.attributes('alt')).toBe('本笔支付的微信支付二维码')
    expect(wrapper.find('[data-testid="checkout-scan"]').text()).toBe('请使用微信扫描二维码完成支付。')
    expect(wrapper.find('[data-testid="checkout-open-app"]').attributes('href')).toBe(code)
    expect(wrapper.find('[data-testid="checkout-pay"]').exists()).toBe(false)
    wrapper.unmount()
  })

  it('offers no way on for a pay url it cannot follow safely', async () => {
    const { wrapper } = await open('/checkout/P1', () => checkout('pending', { pay_url: 'javascript:alert(1)' }))
    expect(wrapper.find('[data-testid="checkout-pay"]').exists()).toBe(false)
    expect(wrapper.find('[data-testid="checkout-qr"]').exists()).toBe(false)
    expect(wrapper.find('[data-testid="checkout-open-app"]').exists()).toBe(false)
    wrapper.unmount()
  })

  it('does not link to a javascript: return url', async () => {
    const { wrapper } = await open('/checkout/P1', () =>
      checkout('failed', { failure_reason: 'expired', return_url: 'javascript:alert(1)' }),
    )
    expect(wrapper.find('[data-testid="checkout-return"]').exists()).toBe(false)
    wrapper.unmount()
  })

  it('says clearly when the payment does not exist', async () => {
    const { wrapper } = await open('/checkout/NOPE', () => ({ status: 404, code: 40401 }))
    expect(wrapper.find('[data-testid="checkout-not-found"]').exists()).toBe(true)
    expect(document.title).toBe('Payment not found · Ledger')
    wrapper.unmount()
  })
})

describe('member portal', () => {
  beforeEach(() => {
    localStorage.clear()
    sessionStorage.clear()
    document.body.innerHTML = ''
  })

  it('moves the token out of the address and lists the payments', async () => {
    const { wrapper, router, calls } = await open('/portal#token=tok-1', (call) => {
      if (call.url === '/api/v1/portal/session') return { data: { user_id: 'U-1', expires_at: '2026-11-30T09:00:00Z' } }
      return {
        data: {
          total: 2,
          page: 1,
          size: 10,
          payments: [
            { payment_id: 'a', amount: '10.00', currency: 'CNY', status: 'success', payment_method: 'alipay', order_id: 'O-2', refunded_amount: '2.50', created_at: '2026-11-30T08:00:00Z' },
            { payment_id: 'b', amount: '500', currency: 'JPY', status: 'pending', payment_method: 'bank', order_id: 'O-1', refunded_amount: '0', created_at: '2026-11-29T08:00:00Z' },
          ],
        },
      }
    })
    expect(router.currentRoute.value.hash).toBe('')
    expect(sessionStorage.getItem(PORTAL_TOKEN_KEY)).toBe('tok-1')
    expect(calls.every((c) => c.headers.Authorization === 'Bearer tok-1')).toBe(true)
    expect(calls[1]!.url).toBe('/api/v1/payments/history?user_id=U-1&page=1&size=10')
    const rows = wrapper.findAll('[data-testid="portal-row"]')
    expect(rows).toHaveLength(2)
    expect(rows[0]!.text()).toContain('10.00')
    expect(rows[0]!.text()).toContain('2.50')
    expect(rows[1]!.text()).toContain('500')
    wrapper.unmount()
  })

  it('shows an empty history plainly', async () => {
    const { wrapper } = await open('/portal#token=t', (call) =>
      call.url === '/api/v1/portal/session'
        ? { data: { user_id: 'U-1', expires_at: '2026-11-30T09:00:00Z' } }
        : { data: { total: 0, page: 1, size: 10, payments: [] } },
    )
    expect(wrapper.find('[data-testid="portal-empty"]').exists()).toBe(true)
    wrapper.unmount()
  })

  it('an expired or altered link gets the clear invalid page', async () => {
    const { wrapper } = await open('/portal#token=bad', () => ({ status: 401, code: 40101 }))
    expect(wrapper.find('[data-testid="portal-invalid"]').text()).toContain('ask the merchant for a new one')
    expect(sessionStorage.getItem(PORTAL_TOKEN_KEY)).toBeNull()
    wrapper.unmount()
  })

  it('a missing token gets the invalid page without calling the service', async () => {
    const { wrapper, calls } = await open('/portal', () => ({ data: {} }))
    expect(wrapper.find('[data-testid="portal-invalid"]').exists()).toBe(true)
    expect(calls).toHaveLength(0)
    wrapper.unmount()
  })
})

describe('console guards', () => {
  beforeEach(() => {
    localStorage.clear()
    sessionStorage.clear()
    document.body.innerHTML = ''
  })

  const as = (role: string) => (call: Call): Answer =>
    call.url === '/api/v1/console/sessions/current'
      ? { data: { key_id: 'k', role, csrf_token: 'c', expires_at: '2026-11-30T09:00:00Z' } }
      : call.url.startsWith('/api/v1/ledger/totals')
        ? { data: { matches: true, currencies: [] } }
        : call.url.startsWith('/api/v1/ledger/daily')
          ? { data: { days: [] } }
          : { data: { total: 0, page: 1, size: 10, list: [] } }

  it('sends a visitor without a session to sign-in, remembering where they were going', async () => {
    const { wrapper, router } = await open('/console/payments', () => ({ status: 401, code: 40101 }))
    expect(router.currentRoute.value.name).toBe('console-login')
    expect(router.currentRoute.value.query.redirect).toBe('/console/payments')
    expect(wrapper.find('[data-testid="login-key-id"]').exists()).toBe(true)
    expect(wrapper.find('[data-testid="login-secret"]').attributes('type')).toBe('password')
    expect(document.title).toBe('Sign in · Ledger')
    wrapper.unmount()
  })

  it('/ leads to the console, which starts each role on its own page', async () => {
    let r = await open('/', as('finance'))
    expect(r.router.currentRoute.value.path).toBe('/console/finance')
    r.wrapper.unmount()
    r = await open('/console', as('auditor'))
    expect(r.router.currentRoute.value.path).toBe('/console/audit')
    r.wrapper.unmount()
  })

  it('keeps a role out of pages that are not its own', async () => {
    let r = await open('/console/finance', as('auditor'))
    expect(r.router.currentRoute.value.name).toBe('console-forbidden')
    r.wrapper.unmount()
    r = await open('/console/audit', as('operator'))
    expect(r.router.currentRoute.value.name).toBe('console-forbidden')
    r.wrapper.unmount()
    r = await open('/console/reconcile', as('admin'))
    expect(r.router.currentRoute.value.name).toBe('console-reconcile')
    r.wrapper.unmount()
  })

  it('lists payments for an operator with a row per payment', async () => {
    const { wrapper, calls } = await open('/console/payments?status=success&page=2', (call) =>
      call.url === '/api/v1/console/sessions/current'
        ? { data: { key_id: 'op', role: 'operator', csrf_token: 'c', expires_at: '2026-11-30T09:00:00Z' } }
        : {
            data: {
              total: 11,
              page: 2,
              size: 10,
              list: [
                { id: 'p1', order_no: 'O-1', payment_no: 'P1', payment_method: 'alipay', amount: '99999999999999999.99', currency: 'CNY', status: 'success', payment_time: '2026-11-30T08:01:00Z', created_at: '2026-11-30T08:00:00Z', flagged_for_refund: true },
              ],
            },
          },
    )
    expect(calls.some((c) => c.url === '/api/v1/payments?page=2&size=10&status=success')).toBe(true)
    await flushPromises()
    const rows = wrapper.findAll('[data-testid="payments-row"]')
    expect(rows).toHaveLength(1)
    expect(rows[0]!.text()).toContain('99999999999999999.99')
    expect(document.title).toBe('Payments · Ledger')
    wrapper.unmount()
  })

  it('shows an unknown address as not found', async () => {
    const { wrapper } = await open('/nowhere/at/all', () => ({ data: {} }))
    expect(wrapper.find('[data-testid="not-found"]').exists()).toBe(true)
    expect(document.title).toBe('Page not found · Ledger')
    wrapper.unmount()
  })
})
