//! Every view names itself in `document.title`, in the current language.

import { watchEffect } from 'vue'
import { useI18n } from 'vue-i18n'

/** Keeps `document.title` as `<title> · <app name>`; `title` is re-read on language change. */
export function usePageTitle(title: () => string): void {
  const { t } = useI18n()
  watchEffect(() => {
    document.title = `${title()} · ${t('app.name')}`
  })
}
