//! Whether the screen is phone-narrow, for components (like descriptions) that take a
//! column count rather than CSS.

import { onBeforeUnmount, ref } from 'vue'

export const NARROW_MAX_PX = 600

export function useNarrow() {
  const query =
    typeof window !== 'undefined' && typeof window.matchMedia === 'function'
      ? window.matchMedia(`(max-width: ${NARROW_MAX_PX}px)`)
      : null
  const narrow = ref(query?.matches ?? false)
  const update = (e: MediaQueryListEvent) => {
    narrow.value = e.matches
  }
  query?.addEventListener('change', update)
  onBeforeUnmount(() => query?.removeEventListener('change', update))
  return narrow
}
