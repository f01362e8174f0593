// Auditor and finance pages: Verify shows the result plainly, the digest is saved as
// digest-<position>.json, totals say whether log and read tables agree, and a settlement
// file is sent as text/csv.
import { beforeEach, describe, expect, it, vi } from 'vitest'
import { flushPromises, mount } from '@vue/test-utils'
import { createMemoryHistory, RouterView } from 'vue-router'
import { defineComponent, h } from 'vue'
import { createAppRouter } from '@/router'
import { i18n } from '@/i18n'
import { useLocaleStore } from '@/stores/locale'
import { freshPinia, mockFetch, type Answer, type Call } from './helpers'

const Root = defineComponent({ render: () => h(RouterView) })

/** jsdom's Blob has no text(); FileReader it is. */
function blobText(blob: Blob): Promise<string> {
  return new Promise((resolve, reject) => {
    const reader = new FileReader()
    reader.onload = () => resolve(reader.result as string)
    reader.onerror = () => reject(reader.error)
    reader.readAsText(blob)
  })
}

async function open(path: string, role: string, route: (call: Call) => Answer) {
  const pinia = freshPinia()
  const calls = mockFetch((call) =>
    call.url === '/api/v1/console/sessions/current'
      ? { data: { key_id: 'k', role, csrf_token: 'csrf-9', expires_at: '2026-11-30T09:00:00Z' } }
      : route(call),
  )
  useLocaleStore().setLocale('en')
  const router = createAppRouter(createMemoryHistory())
  const wrapper = mount(Root, { global: { plugins: [pinia, i18n, router] }, attachTo: document.body })
  await router.push(path)
  await flushPromises()
  await flushPromises()
  return { wrapper, calls }
}

describe('audit page', () => {
  beforeEach(() => {
    document.body.innerHTML = ''
  })

  it('shows a broken chain plainly with its first broken position', async () => {
    const { wrapper } = await open('/console/audit', 'auditor', () => ({
      data: { ok: false, events_checked: 120, head_position: 120, head_hash: 'ab'.repeat(32), first_broken_position: 77 },
    }))
    await wrapper.find('[data-testid="verify-run"]').trigger('click')
    await flushPromises()
    const result = wrapper.find('[data-testid="verify-result"]')
    expect(result.attributes('data-ok')).toBe('false')
    expect(result.text()).toContain('BROKEN')
    expect(wrapper.find('[data-testid="verify-first-broken"]').text()).toBe('77')
    wrapper.unmount()
  })

  it('saves the digest as digest-<position>.json', async () => {
    const saved: { name: string; blob: Blob }[] = []
    URL.createObjectURL = vi.fn((blob: Blob) => {
      saved.push({ name: '', blob })
      return 'blob:digest'
    }) as typeof URL.createObjectURL
    URL.revokeObjectURL = vi.fn()
    const click = vi.spyOn(HTMLAnchorElement.prototype, 'click').mockImplementation(function (this: HTMLAnchorElement) {
      saved[saved.length - 1]!.name = this.download
    })
    const digest = { position: 42, root_hash: 'cd'.repeat(32), signed_at: '2026-11-30T09:00:00Z', public_key: 'pk', signature: 'sig' }
    const { wrapper } = await open('/console/audit', 'admin', () => ({ data: digest }))
    await wrapper.find('[data-testid="digest-download"]').trigger('click')
    await flushPromises()
    expect(click).toHaveBeenCalledOnce()
    expect(saved[0]!.name).toBe('digest-42.json')
    expect(JSON.parse(await blobText(saved[0]!.blob))).toEqual(digest)
    wrapper.unmount()
  })
})

describe('finance pages', () => {
  beforeEach(() => {
    document.body.innerHTML = ''
  })

  it('says MISMATCH when the log and the read tables disagree, per currency and overall', async () => {
    const { wrapper } = await open('/console/finance', 'finance', (call) =>
      call.url.startsWith('/api/v1/ledger/totals')
        ? {
            data: {
              matches: false,
              currencies: [
                { currency: 'CNY', paid_count: 2, paid_amount: '12345678901234567.89', refunded_amount: '0.00', net_amount: '12345678901234567.89', matches: true },
                { currency: 'USD', paid_count: 1, paid_amount: '9.99', refunded_amount: '0.00', net_amount: '9.99', matches: false },
              ],
            },
          }
        : { data: { days: [] } },
    )
    const overall = wrapper.find('[data-testid="totals-matches"]')
    expect(overall.attributes('data-matches')).toBe('false')
    expect(overall.text()).toContain('MISMATCH')
    await flushPromises()
    const rows = wrapper.findAll('[data-testid="totals-row"]')
    expect(rows).toHaveLength(2)
    expect(rows[0]!.text()).toContain('12345678901234567.89')
    expect(rows[0]!.text()).toContain('Agree')
    expect(rows[1]!.text()).toContain('MISMATCH')
    wrapper.unmount()
  })

  it('sends the settlement file as text/csv and shows the counts', async () => {
    const { wrapper, calls } = await open('/console/reconcile', 'finance', () => ({
      data: {
        all_match: false,
        counts: { matched: 3, missing_in_ledger: 1, missing_in_file: 0, amount_mismatch: 1, status_mismatch: 0, duplicate_in_file: 0 },
        items: [
          { category: 'amount_mismatch', line: 4, payment_no: 'P1', reference: 'T1', kind: 'payment', file_amount: '10.01', ledger_amount: '10.00', detail: null },
        ],
      },
    }))
    const csv = 'payment_no,gateway_trade_no,type,amount,fee,settled_at\nP1,T1,payment,10.01,0,2026-11-30T08:00:00Z\n'
    const input = wrapper.find('[data-testid="reconcile-file"]')
    Object.defineProperty(input.element, 'files', { value: [new File([csv], 'settle.csv', { type: 'text/csv' })] })
    await input.trigger('change')
    await wrapper.find('form').trigger('submit')
    await flushPromises()
    const post = calls.find((c) => c.method === 'POST')!
    expect(post.url).toBe('/api/v1/reconcile')
    expect(post.headers['Content-Type']).toBe('text/csv')
    expect(post.headers['X-CSRF-Token']).toBe('csrf-9')
    expect(await blobText(post.body as Blob)).toBe(csv)
    const summary = wrapper.find('[data-testid="reconcile-summary"]')
    expect(summary.attributes('data-all-match')).toBe('false')
    expect(summary.find('[data-category="amount_mismatch"]').text()).toContain('1')
    expect(wrapper.findAll('[data-testid="reconcile-row"]')).toHaveLength(1)
    expect(wrapper.find('[data-testid="reconcile-export"]').exists()).toBe(true)
    wrapper.unmount()
  })
})
