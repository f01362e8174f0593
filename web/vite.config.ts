/// <reference types="vitest/config" />
// Build, dev server and unit-test configuration of the ledger's web pages.
//
// Element Plus components are resolved on demand (only what the pages use lands in the
// bundle, each with its own CSS); nothing is loaded from another host at run time.
import { fileURLToPath, URL } from 'node:url'
import { defineConfig } from 'vite'
import vue from '@vitejs/plugin-vue'
import Components from 'unplugin-vue-components/vite'
import { ElementPlusResolver } from 'unplugin-vue-components/resolvers'

// The Rust binary serves the API and the built pages from one origin; in development the
// Vite server stands in for the pages and forwards everything else to it.
const backend = 'http://127.0.0.1:8080'

export default defineConfig(({ command }) => ({
  base: '/',
  plugins: [
    vue(),
    Components({
      dirs: [],
      // The type file is written by the dev server only: rewritten by `vite build` (run by
      // build.rs) or by Vitest (run by the test suite), its new time would mark the pages'
      // sources changed, and the next cargo command would build the pages and the service
      // again.
      dts: command === 'serve' && !process.env.VITEST ? 'src/components.d.ts' : false,
      resolvers: [ElementPlusResolver({ importStyle: 'css' })],
    }),
  ],
  resolve: {
    alias: { '@': fileURLToPath(new URL('./src', import.meta.url)) },
  },
  server: {
    proxy: {
      '/api': backend,
      '/sandbox': backend,
      '/healthz': backend,
      '/metrics': backend,
    },
  },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    // The pages are only loaded from the service itself; no source maps are published.
    sourcemap: false,
    chunkSizeWarningLimit: 700,
    rollupOptions: {
      output: {
        manualChunks: {
          vue: ['vue', 'vue-router', 'pinia', 'vue-i18n'],
          echarts: ['echarts/core', 'echarts/charts', 'echarts/components', 'echarts/renderers'],
        },
      },
    },
  },
  test: {
    environment: 'jsdom',
    include: ['tests/unit/**/*.spec.ts'],
    // Element Plus ships per-component CSS imports inside its ES modules: let Vite transform
    // them instead of handing them to Node.
    server: { deps: { inline: ['element-plus'] } },
    restoreMocks: true,
    // The first test of a file pays for transforming Element Plus on demand.
    testTimeout: 30_000,
  },
}))
