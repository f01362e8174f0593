//! Routes of the pages (history mode; the service answers `index.html` for `/checkout/*`,
//! `/portal*` and `/console*`) and the guards: the portal link's token, the console's session,
//! and one guard per role.
//!
//! Views are lazy-loaded so a member's checkout never downloads the console.

import {
  createRouter,
  createWebHistory,
  type RouterHistory,
  type NavigationGuardWithThis,
  type RouteLocationNormalized,
  type RouteRecordRaw,
} from 'vue-router'
import type { Role } from '@/api/types'
import { useSessionStore } from '@/stores/session'
import { usePortalStore } from '@/stores/portal'

declare module 'vue-router' {
  interface RouteMeta {
    /** A console page: needs a signed-in staff session. */
    console?: boolean
  }
}

/** Where each role starts in the console (admin starts with payments). */
export function homeFor(role: Role | null): string {
  switch (role) {
    case 'auditor':
      return '/console/audit'
    case 'finance':
      return '/console/finance'
    case 'operator':
    case 'admin':
      return '/console/payments'
    default:
      return '/console/login'
  }
}

/** The guard of a page meant for `roles` (admin passes every one). */
export function requireRole(...roles: Role[]): NavigationGuardWithThis<undefined> {
  return () => {
    const session = useSessionStore()
    if (session.can(...roles)) return true
    return { name: 'console-forbidden' }
  }
}

const STAFF: Role[] = ['operator', 'auditor', 'finance']

/** Moves a portal link's `#token=…` into sessionStorage and off the address bar. */
function takePortalToken(to: RouteLocationNormalized) {
  if (!to.hash) return true
  const portal = usePortalStore()
  if (portal.captureToken(to.hash)) {
    return { path: to.path, query: to.query, hash: '', replace: true }
  }
  return true
}

export const routes: RouteRecordRaw[] = [
  { path: '/', redirect: '/console' },
  {
    path: '/checkout/:paymentNo',
    name: 'checkout',
    component: () => import('@/views/CheckoutPage.vue'),
    props: true,
  },
  {
    path: '/portal',
    name: 'portal',
    component: () => import('@/views/PortalHistoryPage.vue'),
    beforeEnter: takePortalToken,
  },
  {
    path: '/portal/payments/:id',
    name: 'portal-payment',
    component: () => import('@/views/PortalPaymentPage.vue'),
    props: true,
    beforeEnter: takePortalToken,
  },
  {
    path: '/console/login',
    name: 'console-login',
    component: () => import('@/views/ConsoleLoginPage.vue'),
  },
  {
    path: '/console',
    component: () => import('@/views/ConsoleShell.vue'),
    meta: { console: true },
    children: [
      {
        // A redirect would be resolved before the session is restored (redirects come before
        // guards), so the role's home is chosen in a guard; the component never renders.
        path: '',
        name: 'console-home',
        component: () => import('@/views/ForbiddenPage.vue'),
        beforeEnter: () => homeFor(useSessionStore().role),
      },
      {
        path: 'payments',
        name: 'console-payments',
        component: () => import('@/views/PaymentListPage.vue'),
        beforeEnter: requireRole(...STAFF),
      },
      {
        path: 'payments/:id',
        name: 'console-payment',
        component: () => import('@/views/PaymentDetailPage.vue'),
        props: true,
        beforeEnter: requireRole(...STAFF),
      },
      {
        path: 'events',
        name: 'console-events',
        component: () => import('@/views/EventFeedPage.vue'),
        beforeEnter: requireRole('auditor'),
      },
      {
        path: 'audit',
        name: 'console-audit',
        component: () => import('@/views/AuditPage.vue'),
        beforeEnter: requireRole('auditor'),
      },
      {
        path: 'finance',
        name: 'console-finance',
        component: () => import('@/views/FinanceTotalsPage.vue'),
        beforeEnter: requireRole('finance'),
      },
      {
        path: 'reconcile',
        name: 'console-reconcile',
        component: () => import('@/views/ReconcilePage.vue'),
        beforeEnter: requireRole('finance'),
      },
      {
        path: 'forbidden',
        name: 'console-forbidden',
        component: () => import('@/views/ForbiddenPage.vue'),
      },
      {
        path: ':pathMatch(.*)*',
        name: 'console-not-found',
        component: () => import('@/views/NotFoundPage.vue'),
      },
    ],
  },
  {
    path: '/:pathMatch(.*)*',
    name: 'not-found',
    component: () => import('@/views/NotFoundPage.vue'),
  },
]

/** The router with its guards; tests pass a memory history. */
export function createAppRouter(history: RouterHistory = createWebHistory('/')) {
  const router = createRouter({
    history,
    routes,
    scrollBehavior: (_to, _from, saved) => saved ?? { top: 0 },
  })

  // The console needs a live session: after a reload, ask the service once for it.
  router.beforeEach(async (to) => {
    if (!to.matched.some((r) => r.meta.console)) return true
    const session = useSessionStore()
    try {
      await session.restore()
    } catch {
      // The service could not be reached: the sign-in page says so when it is tried.
    }
    if (session.signedIn) return true
    return {
      name: 'console-login',
      query: to.fullPath === '/console' ? {} : { redirect: to.fullPath },
    }
  })

  return router
}

export const router = createAppRouter()
