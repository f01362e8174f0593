//! The one vue-i18n instance: every visible string of the pages comes from `locales/*.json`.
//!
//! It only holds the messages; which language is active is the locale store's business.

import { createI18n } from 'vue-i18n'
import en from './locales/en.json'
import zh from './locales/zh.json'

export type AppLocale = 'zh' | 'en'

export const SUPPORTED_LOCALES: readonly AppLocale[] = ['zh', 'en']

export const i18n = createI18n({
  legacy: false,
  locale: 'en',
  fallbackLocale: 'en',
  messages: { en, zh },
  // A missing key is a bug the locale tests catch; no console noise in production.
  missingWarn: import.meta.env.DEV,
  fallbackWarn: import.meta.env.DEV,
})

/** Translates outside components (stores, the API client). */
export function translate(key: string, named?: Record<string, unknown>): string {
  return named ? i18n.global.t(key, named) : i18n.global.t(key)
}

/** Whether a message key exists in the active language (or its fallback). */
export function hasMessage(key: string): boolean {
  return i18n.global.te(key) || i18n.global.te(key, 'en')
}
