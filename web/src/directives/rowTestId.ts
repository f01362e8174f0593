//! `v-row-test-id="'payments-row'"` on an `<el-table>`: gives each body row a `data-testid`.
//!
//! Element Plus renders its rows itself and offers no hook for row attributes, so the rows are
//! tagged as they appear (a MutationObserver on the table), for the browser tests.

import type { Directive } from 'vue'

type Tagged = HTMLElement & { __rowTestIdObserver?: MutationObserver; __rowTestId?: string }

function tag(el: Tagged): void {
  const id = el.__rowTestId
  if (!id) return
  el.querySelectorAll<HTMLElement>('.el-table__body tr.el-table__row').forEach((tr) => {
    if (tr.dataset.testid !== id) tr.dataset.testid = id
  })
}

export const vRowTestId: Directive<Tagged, string> = {
  mounted(el, binding) {
    el.__rowTestId = binding.value
    tag(el)
    const observer = new MutationObserver(() => tag(el))
    observer.observe(el, { childList: true, subtree: true })
    el.__rowTestIdObserver = observer
  },
  updated(el, binding) {
    el.__rowTestId = binding.value
    tag(el)
  },
  beforeUnmount(el) {
    el.__rowTestIdObserver?.disconnect()
  },
}
