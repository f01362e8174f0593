// Staff sign-in keeps no secret anywhere, and console POST/DELETE carry the CSRF token.
import { beforeEach, describe, expect, it } from 'vitest'
import { useSessionStore } from '@/stores/session'
import { refundPayment, listPayments, ApiError } from '@/api/client'
import { freshPinia, mockFetch } from './helpers'

const SECRET = 's3cr3t-never-kept'
const CSRF = 'csrf-token-123'

function signInRoutes() {
  return mockFetch((call) => {
    if (call.url === '/api/v1/console/sessions' && call.method === 'POST') {
      return {
        status: 201,
        data: {
          key_id: 'op-1',
          role: 'operator',
          csrf_token: CSRF,
          expires_at: '2026-12-01T10:00:00Z',
          idle_timeout_secs: 900,
        },
      }
    }
    if (call.url.startsWith('/api/v1/payments?')) {
      return { data: { total: 0, page: 1, size: 10, list: [] } }
    }
    if (call.url.endsWith('/refund')) {
      return {
        status: 201,
        data: { id: 'r1', payment_id: 'p1', refund_no: 'R1', amount: '1.00', reason: 'x', status: 'processing', created_at: '2026-12-01T09:00:00Z' },
      }
    }
    return { status: 404, code: 40401 }
  })
}

describe('session store', () => {
  beforeEach(() => {
    localStorage.clear()
    sessionStorage.clear()
    freshPinia()
  })

  it('sends the secret only to the sign-in endpoint and keeps only the session fields', async () => {
    const calls = signInRoutes()
    const session = useSessionStore()
    await session.signIn('op-1', SECRET)

    expect(calls).toHaveLength(1)
    expect(calls[0]!.url).toBe('/api/v1/console/sessions')
    expect(JSON.parse(calls[0]!.body as string)).toEqual({ key_id: 'op-1', secret: SECRET })

    expect(session.session).toEqual({
      key_id: 'op-1',
      role: 'operator',
      csrf_token: CSRF,
      expires_at: '2026-12-01T10:00:00Z',
    })
    expect(JSON.stringify(session.$state)).not.toContain(SECRET)
    for (const storage of [localStorage, sessionStorage]) {
      for (let i = 0; i < storage.length; i++) {
        const key = storage.key(i)!
        expect(storage.getItem(key) ?? '').not.toContain(SECRET)
      }
    }
  })

  it('adds X-CSRF-Token on POST and not on GET', async () => {
    const calls = signInRoutes()
    await useSessionStore().signIn('op-1', SECRET)
    await listPayments({ page: 1, size: 10 })
    await refundPayment('p1', { amount: '1.00', reason: 'x' }, 'key-1')

    const get = calls.find((c) => c.url.startsWith('/api/v1/payments?'))!
    const post = calls.find((c) => c.url.endsWith('/refund'))!
    expect(get.headers['X-CSRF-Token']).toBeUndefined()
    expect(post.headers['X-CSRF-Token']).toBe(CSRF)
    expect(post.headers['Idempotency-Key']).toBe('key-1')
    expect(JSON.parse(post.body as string)).toEqual({ amount: '1.00', reason: 'x' })
  })

  it('a 401 from a console call ends the session', async () => {
    signInRoutes()
    const session = useSessionStore()
    await session.signIn('op-1', SECRET)
    mockFetch(() => ({ status: 401, code: 40101 }))
    await expect(listPayments({ page: 1, size: 10 })).rejects.toBeInstanceOf(ApiError)
    expect(session.signedIn).toBe(false)
    expect(session.endReason).toBe('ended')
  })

  it('a wrong secret is an error of the sign-in, not an ended session', async () => {
    mockFetch(() => ({ status: 401, code: 40101 }))
    const session = useSessionStore()
    await expect(session.signIn('op-1', 'wrong')).rejects.toMatchObject({ status: 401 })
    expect(session.endReason).toBeNull()
  })

  it('restores the session from the cookie after a reload', async () => {
    const calls = mockFetch(() => ({
      data: { key_id: 'au-1', role: 'auditor', csrf_token: 'c2', expires_at: '2026-12-01T10:00:00Z' },
    }))
    const session = useSessionStore()
    await session.restore()
    await session.restore()
    expect(calls).toHaveLength(1)
    expect(calls[0]!.url).toBe('/api/v1/console/sessions/current')
    expect(session.role).toBe('auditor')
    expect(session.can('auditor')).toBe(true)
    expect(session.can('finance')).toBe(false)
  })

  it('admin may do everything', async () => {
    mockFetch(() => ({
      data: { key_id: 'ad', role: 'admin', csrf_token: 'c', expires_at: '2026-12-01T10:00:00Z' },
    }))
    const session = useSessionStore()
    await session.restore()
    expect(session.can('operator')).toBe(true)
    expect(session.can('finance')).toBe(true)
    expect(session.can('auditor')).toBe(true)
  })
})
