//! The staff console's session: who is signed in, with which role, and the CSRF token.
//!
//! It keeps exactly `{key_id, role, csrf_token, expires_at}` in memory — never the secret,
//! and nothing in localStorage or sessionStorage: the session itself lives in the service's
//! HttpOnly cookie, and a reload asks the service for it again.

import { defineStore } from 'pinia'
import { computed, ref } from 'vue'
import {
  ApiError,
  createConsoleSession,
  currentConsoleSession,
  deleteConsoleSession,
} from '@/api/client'
import type { ConsoleSession, Role } from '@/api/types'

/** Why the user is back at the sign-in page. */
export type EndReason = 'ended' | 'signed_out'

function keep(s: ConsoleSession): ConsoleSession {
  return { key_id: s.key_id, role: s.role, csrf_token: s.csrf_token, expires_at: s.expires_at }
}

export const useSessionStore = defineStore('session', () => {
  const session = ref<ConsoleSession | null>(null)
  /** Whether the service was asked for a live session since the page loaded. */
  const restored = ref(false)
  const endReason = ref<EndReason | null>(null)

  const role = computed<Role | null>(() => session.value?.role ?? null)
  const keyId = computed(() => session.value?.key_id ?? null)
  const csrfToken = computed(() => session.value?.csrf_token ?? null)
  const signedIn = computed(() => session.value !== null)

  /** Whether the signed-in role may use something meant for `roles` (admin may do all). */
  function can(...roles: Role[]): boolean {
    const r = role.value
    return r !== null && (r === 'admin' || roles.includes(r))
  }

  /** Sends the secret once, to the sign-in endpoint; only the answer is kept. */
  async function signIn(keyIdInput: string, secret: string): Promise<void> {
    const created = await createConsoleSession(keyIdInput, secret)
    session.value = keep(created)
    endReason.value = null
    restored.value = true
  }

  /** After a reload: asks the service whether the cookie still names a live session. */
  async function restore(): Promise<void> {
    if (session.value || restored.value) return
    try {
      session.value = keep(await currentConsoleSession())
      restored.value = true
    } catch (e) {
      if (e instanceof ApiError && e.isUnauthorized) {
        restored.value = true
        return
      }
      throw e
    }
  }

  async function signOut(): Promise<void> {
    try {
      await deleteConsoleSession()
    } finally {
      session.value = null
      endReason.value = 'signed_out'
    }
  }

  /** A call answered 401: the session expired or was revoked. */
  function end(): void {
    if (session.value) endReason.value = 'ended'
    session.value = null
    restored.value = true
  }

  return { session, restored, endReason, role, keyId, csrfToken, signedIn, can, signIn, restore, signOut, end }
})
