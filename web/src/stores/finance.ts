//! Finance: ledger totals (log against read tables), daily figures for the chart, and the
//! reconciliation of a gateway's settlement file.

import { defineStore } from 'pinia'
import { ref } from 'vue'
import { getDaily, getTotals, reconcileSettlement } from '@/api/client'
import type { DailyRow, PeriodFilter, ReconcileReport, Totals } from '@/api/types'

export const useFinanceStore = defineStore('finance', () => {
  const totals = ref<Totals | null>(null)
  const daily = ref<DailyRow[]>([])
  const loading = ref(false)
  const error = ref<unknown>(null)
  const dailyError = ref<unknown>(null)

  const report = ref<ReconcileReport | null>(null)
  const reconciling = ref(false)
  const reconcileError = ref<unknown>(null)

  async function loadPeriod(filter: PeriodFilter): Promise<void> {
    loading.value = true
    error.value = null
    dailyError.value = null
    // The chart is secondary: a failure there leaves the totals shown.
    const [t, d] = await Promise.allSettled([getTotals(filter), getDaily(filter)])
    if (t.status === 'fulfilled') totals.value = t.value
    else {
      totals.value = null
      error.value = t.reason
    }
    if (d.status === 'fulfilled') daily.value = d.value.days ?? []
    else {
      daily.value = []
      dailyError.value = d.reason
    }
    loading.value = false
  }

  async function reconcile(
    file: Blob,
    period: { start_time?: string; end_time?: string },
  ): Promise<void> {
    reconciling.value = true
    reconcileError.value = null
    try {
      report.value = await reconcileSettlement(file, period)
    } catch (e) {
      report.value = null
      reconcileError.value = e
    } finally {
      reconciling.value = false
    }
  }

  return {
    totals,
    daily,
    loading,
    error,
    dailyError,
    report,
    reconciling,
    reconcileError,
    loadPeriod,
    reconcile,
  }
})
