//! Auditor tools: the global event feed (paged forward by position), chain verification and
//! the signed digest to keep outside the system.

import { defineStore } from 'pinia'
import { ref } from 'vue'
import { getDigest, getEventFeed, verifyLog } from '@/api/client'
import type { LedgerEvent, SignedDigest, VerifyReport } from '@/api/types'

export const FEED_LIMIT_DEFAULT = 100

export const useAuditStore = defineStore('audit', () => {
  const feed = ref<LedgerEvent[]>([])
  /** The `after` of the page shown, and those of the pages before it (for "previous"). */
  const after = ref(0)
  const previous = ref<number[]>([])
  const nextAfter = ref<number | null>(null)
  const limit = ref(FEED_LIMIT_DEFAULT)
  const feedLoading = ref(false)
  const feedError = ref<unknown>(null)

  const report = ref<VerifyReport | null>(null)
  const verifying = ref(false)
  const verifyError = ref<unknown>(null)
  const digestError = ref<unknown>(null)

  async function loadFeed(from: number): Promise<void> {
    feedLoading.value = true
    feedError.value = null
    try {
      const answer = await getEventFeed(from, limit.value)
      feed.value = answer.events
      after.value = from
      nextAfter.value = answer.next_after
    } catch (e) {
      feedError.value = e
    } finally {
      feedLoading.value = false
    }
  }

  /** From a chosen position (0 = genesis), forgetting the pages before it. */
  function startFeed(from: number): Promise<void> {
    previous.value = []
    return loadFeed(from)
  }

  async function nextPage(): Promise<void> {
    if (nextAfter.value === null || nextAfter.value === after.value) return
    previous.value.push(after.value)
    await loadFeed(nextAfter.value)
  }

  async function previousPage(): Promise<void> {
    const back = previous.value.pop()
    if (back !== undefined) await loadFeed(back)
  }

  async function verify(): Promise<void> {
    verifying.value = true
    verifyError.value = null
    try {
      report.value = await verifyLog()
    } catch (e) {
      report.value = null
      verifyError.value = e
    } finally {
      verifying.value = false
    }
  }

  async function digest(): Promise<SignedDigest | null> {
    digestError.value = null
    try {
      return await getDigest()
    } catch (e) {
      digestError.value = e
      return null
    }
  }

  return {
    feed,
    after,
    previous,
    nextAfter,
    limit,
    feedLoading,
    feedError,
    report,
    verifying,
    verifyError,
    digestError,
    startFeed,
    nextPage,
    previousPage,
    verify,
    digest,
  }
})
