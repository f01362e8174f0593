//! The app's language: chosen from the browser's, switched by the user, remembered in
//! localStorage, and mirrored into vue-i18n, `<html lang>` and the API's Accept-Language.
//!
//! It owns no translated text; Element Plus's own locale is derived from it in App.vue.

import { defineStore } from 'pinia'
import { computed, ref } from 'vue'
import { i18n, type AppLocale, SUPPORTED_LOCALES } from '@/i18n'

export const LOCALE_STORAGE_KEY = 'ledger.locale'

function storedLocale(): AppLocale | null {
  try {
    const value = window.localStorage.getItem(LOCALE_STORAGE_KEY)
    return SUPPORTED_LOCALES.includes(value as AppLocale) ? (value as AppLocale) : null
  } catch {
    // Storage can be disabled (privacy modes); the browser's language still applies.
    return null
  }
}

/** The user's saved choice, else the browser's language: any `zh…` is Chinese. */
export function detectLocale(): AppLocale {
  const saved = storedLocale()
  if (saved) return saved
  const browser = typeof navigator !== 'undefined' ? navigator.language || '' : ''
  return browser.toLowerCase().startsWith('zh') ? 'zh' : 'en'
}

export const useLocaleStore = defineStore('locale', () => {
  const locale = ref<AppLocale>(detectLocale())

  /** The value of `<html lang>`. */
  const htmlLang = computed(() => (locale.value === 'zh' ? 'zh-CN' : 'en'))
  /** What the API is asked to answer in (its messages come back in this language). */
  const acceptLanguage = computed(() => (locale.value === 'zh' ? 'zh-CN' : 'en'))

  function apply(): void {
    i18n.global.locale.value = locale.value
    document.documentElement.lang = htmlLang.value
  }

  function setLocale(next: AppLocale): void {
    locale.value = next
    try {
      window.localStorage.setItem(LOCALE_STORAGE_KEY, next)
    } catch {
      // Not remembered across visits, but the switch itself still works.
    }
    apply()
  }

  apply()
  return { locale, htmlLang, acceptLanguage, setLocale }
})
