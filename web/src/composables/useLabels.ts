//! Names for the service's machine values (statuses, methods, event types, reasons) in the
//! user's language; an unknown value is shown as the service sent it.

import { useI18n } from 'vue-i18n'

export type StatusKind = 'payment' | 'refund' | 'callback'

export function useLabels() {
  const { t, te } = useI18n()

  function known(key: string, raw: string): string {
    return te(key) || te(key, 'en') ? t(key) : raw
  }

  return {
    status: (kind: StatusKind, value: string) => known(`status.${kind}.${value}`, value),
    method: (value: string) => known(`method.${value}`, value),
    eventType: (value: string) => known(`eventType.${value}`, value),
    role: (value: string) => known(`role.${value}`, value),
    category: (value: string) => known(`reconcile.categories.${value}`, value),
    kind: (value: string) => known(`reconcile.kinds.${value}`, value),
    /** Why a payment failed: known reasons translated, gateway errors made generic. */
    failureReason: (value: string) => {
      if (value.startsWith('gateway_error')) return t('failure.gateway_error')
      return known(`failure.${value}`, value)
    },
  }
}
