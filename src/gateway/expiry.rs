//! The expiry driver: a pending payment nobody paid within `LEDGER_PAYMENT_TTL_SECS` has its
//! gateway order closed and then fails with reason `expired`, releasing its order for a new
//! payment. It is driven from the read side of the log (payments still pending), so a crash
//! resumes it; a payment the payer paid meanwhile is left to its notification, and a late
//! success after expiry is flagged for refund like any success after failure.
//!
//! As with refunds (`super::refunds`), a payment this driver expired is skipped until the
//! read side, which trails the log, no longer shows it pending, and a pass that expired any
//! waits (bounded) for the read side to reach the head: each order is closed once.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{CloseOutcome, Gateways};
use crate::domain::{Command, PaymentMethod};
use crate::duties::Lease;
use crate::projections::queues::{self, ExpiredPayment};
use crate::service::{Bookkeeping, CommandService, Meta};

/// The failure reason of an expired payment.
pub const EXPIRED: &str = "expired";

#[derive(Clone)]
pub struct ExpiryDriver {
    pub pool: PgPool,
    pub commands: CommandService,
    pub gateways: Arc<Gateways>,
    pub ttl: Duration,
    /// Payments expired per pass (LEDGER_DRIVER_BATCH_MAX).
    pub batch_max: i64,
    /// How often expired payments are looked for.
    pub poll: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// The position the read tables include (the projector's, wherever it runs).
    pub applied: watch::Receiver<i64>,
    /// Longest a pass waits for the read side to include what it recorded.
    pub settle_wait: Duration,
}

impl ExpiryDriver {
    /// Runs until cancelled, while `lease` (the expiry duty) is held.
    pub async fn run(self, lease: Option<Lease>, cancel: CancellationToken) {
        let mut expired = HashSet::new();
        loop {
            if let Err(e) = self.pass(lease.as_ref(), &mut expired).await {
                tracing::warn!(error = %e, "expiry pass failed");
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(self.poll) => {}
            }
        }
        tracing::info!("expiry driver stopped");
    }

    /// One pass. Returns how many payments it expired. `expired` holds the payments this
    /// driver expired that the read side may still show pending.
    pub async fn pass(
        &self,
        lease: Option<&Lease>,
        expired: &mut HashSet<Uuid>,
    ) -> Result<usize, anyhow::Error> {
        let now = Utc::now();
        let cutoff = now - chrono::Duration::from_std(self.ttl)?;
        let due = queues::expired_pending(&self.pool, cutoff, now, self.batch_max).await?;
        let still_due: HashSet<Uuid> = due.iter().map(|p| p.payment_id).collect();
        expired.retain(|id| still_due.contains(id));
        let todo: Vec<&ExpiredPayment> = due
            .iter()
            .filter(|p| !expired.contains(&p.payment_id))
            .collect();
        let mut count = 0;
        for p in todo {
            if lease.is_some_and(|l| !l.valid()) {
                break;
            }
            if self.expire(p, lease).await {
                expired.insert(p.payment_id);
                count += 1;
            }
        }
        if count > 0 {
            if let Ok(head) = crate::store::head_position(&self.pool).await {
                let mut applied = self.applied.clone();
                let _ =
                    tokio::time::timeout(self.settle_wait, applied.wait_for(|p| *p >= head)).await;
            }
        }
        let _ = queues::forget_settled_expiries(&self.pool).await;
        Ok(count)
    }

    async fn expire(&self, p: &ExpiredPayment, lease: Option<&Lease>) -> bool {
        let Some(method) = PaymentMethod::parse(&p.payment_method) else {
            return false;
        };
        match self.gateways.get(method).close_order(&p.payment_no).await {
            Ok(CloseOutcome::Closed) => {}
            Ok(CloseOutcome::AlreadyPaid) => {
                self.postpone(p, "paid at the gateway; waiting for its notification")
                    .await;
                return false;
            }
            Err(e) => {
                self.postpone(p, &e.to_string()).await;
                return false;
            }
        }
        let command = Command::FailPayment {
            reason: EXPIRED.into(),
        };
        match self
            .commands
            .execute(
                p.payment_id,
                &[command],
                &Meta::system("expiry-driver"),
                &Bookkeeping {
                    fence: lease.map(Lease::fence),
                    ..Bookkeeping::default()
                },
            )
            .await
        {
            Ok(_) => {
                metrics::counter!("ledger_payments_expired_total").increment(1);
                true
            }
            Err(e) => {
                // Paid meanwhile (a notification won the race): nothing to expire.
                tracing::info!(payment_no = %p.payment_no, error = %e, "payment not expired");
                false
            }
        }
    }

    async fn postpone(&self, p: &ExpiredPayment, why: &str) {
        let wait = super::refunds::backoff(p.attempts, self.backoff_base, self.backoff_max);
        let next = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
        if let Err(e) = queues::postpone_expiry(&self.pool, p.payment_id, next, why).await {
            tracing::warn!(payment_no = %p.payment_no, error = %e, "could not reschedule the expiry");
        }
    }
}
