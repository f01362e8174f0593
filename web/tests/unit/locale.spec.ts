// The language starts from the browser's, is remembered, and sets <html lang>.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { LOCALE_STORAGE_KEY, useLocaleStore } from '@/stores/locale'
import { i18n } from '@/i18n'
import { freshPinia } from './helpers'

function browserLanguage(lang: string) {
  vi.spyOn(window.navigator, 'language', 'get').mockReturnValue(lang)
}

describe('locale store', () => {
  beforeEach(() => {
    localStorage.clear()
    freshPinia()
  })
  afterEach(() => vi.restoreAllMocks())

  it('starts in Chinese when the browser language starts with zh', () => {
    browserLanguage('zh-CN')
    const store = useLocaleStore()
    expect(store.locale).toBe('zh')
    expect(document.documentElement.lang).toBe('zh-CN')
    expect(i18n.global.locale.value).toBe('zh')
    expect(store.acceptLanguage).toBe('zh-CN')
  })

  it('starts in English for any other browser language', () => {
    browserLanguage('fr-FR')
    const store = useLocaleStore()
    expect(store.locale).toBe('en')
    expect(document.documentElement.lang).toBe('en')
  })

  it('remembers the choice and prefers it over the browser on the next visit', () => {
    browserLanguage('en-US')
    useLocaleStore().setLocale('zh')
    expect(localStorage.getItem(LOCALE_STORAGE_KEY)).toBe('zh')
    expect(document.documentElement.lang).toBe('zh-CN')

    freshPinia()
    expect(useLocaleStore().locale).toBe('zh')
  })

  it('ignores a stored value it does not know', () => {
    browserLanguage('zh-TW')
    localStorage.setItem(LOCALE_STORAGE_KEY, 'de')
    expect(useLocaleStore().locale).toBe('zh')
  })
})
