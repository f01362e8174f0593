// The API client: language header, portal bearer token, and errors in the user's language.
import { beforeEach, describe, expect, it } from 'vitest'
import { ApiError, errorText, getCheckout, getPortalSession, getPayment } from '@/api/client'
import { useLocaleStore } from '@/stores/locale'
import { usePortalStore, PORTAL_TOKEN_KEY } from '@/stores/portal'
import { freshPinia, mockFetch } from './helpers'

describe('API client', () => {
  beforeEach(() => {
    sessionStorage.clear()
    localStorage.clear()
    freshPinia()
  })

  it('asks for answers in the current language', async () => {
    const calls = mockFetch(() => ({ data: {} }))
    useLocaleStore().setLocale('zh')
    await getCheckout('P1')
    expect(calls[0]!.headers['Accept-Language']).toBe('zh-CN')
    useLocaleStore().setLocale('en')
    await getCheckout('P1')
    expect(calls[1]!.headers['Accept-Language']).toBe('en')
  })

  it('turns an error envelope into a message in the user language, keeping the detail', async () => {
    mockFetch(() => ({ status: 409, code: 40902, message: 'refund 5.00 exceeds refundable 3.00' }))
    useLocaleStore().setLocale('en')
    const e = await getPayment('p1').catch((x: unknown) => x)
    expect(e).toBeInstanceOf(ApiError)
    const err = e as ApiError
    expect(err.code).toBe(40902)
    expect(err.message).toBe('The refund is larger than the refundable amount.')
    expect(err.detail).toBe('refund 5.00 exceeds refundable 3.00')
    useLocaleStore().setLocale('zh')
    expect(errorText(err)).toBe('退款金额超过可退金额。')
  })

  it('says the service could not be reached when fetch fails', async () => {
    const { vi } = await import('vitest')
    vi.stubGlobal('fetch', vi.fn(async () => { throw new TypeError('Failed to fetch') }))
    useLocaleStore().setLocale('en')
    const e = (await getCheckout('P1').catch((x: unknown) => x)) as ApiError
    expect(e.status).toBe(0)
    expect(e.message).toContain('could not be reached')
  })

  it('sends the portal token as a bearer token and forgets it on 401', async () => {
    const portal = usePortalStore()
    expect(portal.captureToken('#token=abc.def')).toBe(true)
    expect(sessionStorage.getItem(PORTAL_TOKEN_KEY)).toBe('abc.def')
    const calls = mockFetch(() => ({ status: 401, code: 40101 }))
    await expect(getPortalSession()).rejects.toBeInstanceOf(ApiError)
    expect(calls[0]!.headers.Authorization).toBe('Bearer abc.def')
    expect(portal.state).toBe('invalid')
    expect(sessionStorage.getItem(PORTAL_TOKEN_KEY)).toBeNull()
  })

  it('portal without a token is invalid at once', async () => {
    const calls = mockFetch(() => ({ data: {} }))
    const portal = usePortalStore()
    await portal.start()
    expect(portal.state).toBe('invalid')
    expect(calls).toHaveLength(0)
  })
})
