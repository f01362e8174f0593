//! Times: the service sends RFC 3339 UTC strings; people read them in their own time zone.

import type { AppLocale } from '@/i18n'

/** `iso` in the viewer's time zone and language, or null when it is not a time. */
export function formatLocalTime(iso: string, locale: AppLocale): string | null {
  const d = new Date(iso)
  if (Number.isNaN(d.getTime())) return null
  return new Intl.DateTimeFormat(locale === 'zh' ? 'zh-CN' : 'en-GB', {
    year: 'numeric',
    month: '2-digit',
    day: '2-digit',
    hour: '2-digit',
    minute: '2-digit',
    second: '2-digit',
    hour12: false,
    timeZoneName: 'short',
  }).format(d)
}

/** A picked date as the RFC 3339 instant the API takes. */
export function toApiTime(d: Date | null | undefined): string | undefined {
  return d ? d.toISOString() : undefined
}

/** A time from the address bar (`?as_of=`) as a Date, or null. */
export function parseTime(text: string | null | undefined): Date | null {
  if (!text) return null
  const d = new Date(text)
  return Number.isNaN(d.getTime()) ? null : d
}
