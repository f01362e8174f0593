//! Starts the pages: Pinia, vue-i18n, the router, the bundled font and the theme.

import { createApp } from 'vue'
import { createPinia } from 'pinia'
import '@fontsource-variable/inter/wght.css'
// Services called from code (not templates) need their styles imported by hand.
import 'element-plus/es/components/message/style/css'
import 'element-plus/es/components/message-box/style/css'
import './styles/theme.css'
import App from './App.vue'
import { i18n } from './i18n'
import { router } from './router'
import { useLocaleStore } from './stores/locale'

const app = createApp(App)
app.use(createPinia())
app.use(i18n)
// Applies the saved or browser language before the first page renders.
useLocaleStore()
app.use(router)
app.mount('#app')
