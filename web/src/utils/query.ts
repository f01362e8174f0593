//! Reading paging and filters from the address bar (so a reload or "back" keeps them).

import type { LocationQueryValue } from 'vue-router'

type QueryValue = LocationQueryValue | LocationQueryValue[] | undefined

/** The first value of a query parameter, or ''. */
export function queryText(v: QueryValue): string {
  const first = Array.isArray(v) ? v[0] : v
  return typeof first === 'string' ? first : ''
}

/** A 1-based page number from the query; anything else is page 1. */
export function pageFromQuery(v: QueryValue): number {
  const text = queryText(v)
  if (!/^\d{1,6}$/.test(text)) return 1
  const n = parseInt(text, 10)
  return n >= 1 ? n : 1
}

/** A page size from the query among the allowed ones, else the first. */
export function sizeFromQuery(v: QueryValue, allowed: readonly number[]): number {
  const text = queryText(v)
  const n = /^\d{1,3}$/.test(text) ? parseInt(text, 10) : 0
  return allowed.includes(n) ? n : allowed[0]!
}
