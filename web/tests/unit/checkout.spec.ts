// The checkout follows a pending payment and stops for good on a final status.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { CHECKOUT_POLL_MS, useCheckoutStore } from '@/stores/checkout'
import { freshPinia, mockFetch } from './helpers'

function view(status: string) {
  return {
    payment_no: 'P1',
    order_id: 'O-1',
    amount: '100.00',
    currency: 'CNY',
    payment_method: 'alipay',
    status,
    failure_reason: status === 'failed' ? 'expired' : null,
    return_url: null,
    pay_url: '/sandbox/pay/P1',
    created_at: '2026-11-30T08:00:00Z',
    paid_at: status === 'success' ? '2026-11-30T08:01:00Z' : null,
    expires_at: '2026-11-30T08:30:00Z',
  }
}

describe('checkout store', () => {
  beforeEach(() => {
    freshPinia()
    vi.useFakeTimers()
  })
  afterEach(() => vi.useRealTimers())

  it('polls while pending and stops on success', async () => {
    const statuses = ['pending', 'pending', 'success']
    const calls = mockFetch(() => ({ data: view(statuses.shift() ?? 'success') }))
    const store = useCheckoutStore()
    await store.open('P1')
    expect(calls).toHaveLength(1)
    expect(calls[0]!.url).toBe('/api/v1/checkout/P1')
    expect(store.polling).toBe(true)

    await vi.advanceTimersByTimeAsync(CHECKOUT_POLL_MS)
    expect(calls).toHaveLength(2)
    await vi.advanceTimersByTimeAsync(CHECKOUT_POLL_MS)
    expect(calls).toHaveLength(3)
    expect(store.view?.status).toBe('success')
    expect(store.isFinal).toBe(true)
    expect(store.polling).toBe(false)

    await vi.advanceTimersByTimeAsync(CHECKOUT_POLL_MS * 10)
    expect(calls).toHaveLength(3)
  })

  it('does not poll a payment that is already final', async () => {
    const calls = mockFetch(() => ({ data: view('failed') }))
    const store = useCheckoutStore()
    await store.open('P1')
    await vi.advanceTimersByTimeAsync(CHECKOUT_POLL_MS * 5)
    expect(calls).toHaveLength(1)
    expect(store.view?.failure_reason).toBe('expired')
  })

  it('an unknown payment number is not found and is not polled', async () => {
    const calls = mockFetch(() => ({ status: 404, code: 40401 }))
    const store = useCheckoutStore()
    await store.open('NOPE')
    await vi.advanceTimersByTimeAsync(CHECKOUT_POLL_MS * 5)
    expect(store.notFound).toBe(true)
    expect(calls).toHaveLength(1)
  })

  it('keeps trying through a transient error while pending', async () => {
    const answers = [{ data: view('pending') }, { status: 503, code: 50301 }, { data: view('success') }]
    const calls = mockFetch(() => answers.shift() ?? { data: view('success') })
    const store = useCheckoutStore()
    await store.open('P1')
    await vi.advanceTimersByTimeAsync(CHECKOUT_POLL_MS)
    expect(store.error).not.toBeNull()
    await vi.advanceTimersByTimeAsync(CHECKOUT_POLL_MS)
    expect(store.view?.status).toBe('success')
    expect(store.error).toBeNull()
    await vi.advanceTimersByTimeAsync(CHECKOUT_POLL_MS * 3)
    expect(calls).toHaveLength(3)
  })

  it('stops when the page is left', async () => {
    const calls = mockFetch(() => ({ data: view('pending') }))
    const store = useCheckoutStore()
    await store.open('P1')
    store.stop()
    await vi.advanceTimersByTimeAsync(CHECKOUT_POLL_MS * 5)
    expect(calls).toHaveLength(1)
  })
})
