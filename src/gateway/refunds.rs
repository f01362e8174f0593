//! The refund driver: after `refund_requested` is committed, call the gateway and append
//! `refunded` or `refund_failed`. It is driven from the read side of the log (refunds still
//! `processing`), so a crash between the append and the gateway call resumes on restart; the
//! gateway's idempotency key is the refund_no, and confirming twice appends nothing, so the
//! refund completes exactly once.
//!
//! The queue is ordered by each refund's next attempt (`ledger_projections::queues`): an
//! outcome that stays unknown (the gateway down, a timeout its query cannot settle) is tried
//! again with exponential backoff per refund, so a slow or dead gateway's refunds move to the
//! back while the others go on. Refunds are worked on concurrently, each gateway call under a
//! timeout, so one hung call can neither stall the loop nor shutdown.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{Gateways, RefundOutcome};
use crate::domain::{Command, PaymentMethod};
use crate::duties::Lease;
use crate::projections::queues::{self, DueRefund};
use crate::service::{Bookkeeping, CommandService, Meta};

/// Longest the driver sleeps when nothing woke it and nothing is due sooner.
pub const IDLE_MAX: Duration = Duration::from_secs(1);
/// Refunds taken from the queue per pass.
pub const BATCH_MAX: i64 = 100;
/// First wait after an unknown outcome; it doubles per attempt up to the configured maximum.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);

/// What the driver needs.
#[derive(Clone)]
pub struct RefundDriver {
    pub pool: PgPool,
    pub commands: CommandService,
    pub gateways: Arc<Gateways>,
    pub concurrency_max: usize,
    pub backoff_max: Duration,
}

impl RefundDriver {
    /// Runs until cancelled, while `lease` (the refund duty) is held.
    pub async fn run(self, lease: Option<Lease>, cancel: CancellationToken) {
        let wake = self.gateways.refund_wake();
        loop {
            match self.pass(lease.as_ref()).await {
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "refund pass failed"),
            }
            let sleep = self.idle_time().await;
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
        tracing::info!("refund driver stopped");
    }

    async fn idle_time(&self) -> Duration {
        match queues::next_refund_due(&self.pool).await {
            Ok(Some(at)) => (at - Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO)
                .clamp(Duration::from_millis(20), IDLE_MAX),
            _ => IDLE_MAX,
        }
    }

    /// One pass over the refunds due now. Returns how many it took from the queue.
    pub async fn pass(&self, lease: Option<&Lease>) -> Result<usize, anyhow::Error> {
        let due = queues::due_refunds(&self.pool, Utc::now(), BATCH_MAX).await?;
        let taken = due.len();
        if let Ok((depth, oldest)) = queues::refund_queue_depth(&self.pool).await {
            metrics::gauge!("ledger_refund_queue_depth").set(depth as f64);
            metrics::gauge!("ledger_refund_queue_oldest_seconds").set(oldest);
        }
        futures::stream::iter(due)
            .for_each_concurrent(self.concurrency_max.max(1), |refund| async move {
                self.settle(refund, lease).await;
            })
            .await;
        let _ = queues::forget_settled_refunds(&self.pool).await;
        Ok(taken)
    }

    async fn settle(&self, r: DueRefund, lease: Option<&Lease>) {
        let Some(method) = PaymentMethod::parse(&r.payment_method) else {
            return;
        };
        // Only the leader sends refunds: a node that cannot prove it still holds the duty
        // leaves the refund to whoever does.
        if lease.is_some_and(|l| !l.valid()) {
            return;
        }
        let outcome = self
            .gateways
            .get(method)
            .refund(&r.refund_no, &r.payment_no, r.amount)
            .await;
        let command = match outcome {
            Ok(RefundOutcome::Confirmed) => Command::ConfirmRefund {
                refund_id: r.refund_id,
            },
            Ok(RefundOutcome::Rejected(reason)) => Command::FailRefund {
                refund_id: r.refund_id,
                reason,
            },
            Ok(RefundOutcome::Pending) => return self.postpone(&r, "pending at the gateway").await,
            Err(e) => {
                tracing::warn!(refund_no = %r.refund_no, error = %e, attempts = r.attempts, "refund outcome unknown; will ask again");
                return self.postpone(&r, &e.to_string()).await;
            }
        };
        let meta = Meta::system("refund-driver");
        let book = Bookkeeping {
            fence: lease.map(Lease::fence),
            ..Bookkeeping::default()
        };
        if let Err(e) = self
            .commands
            .execute(r.payment_id, &[command], &meta, &book)
            .await
        {
            tracing::warn!(refund_no = %r.refund_no, error = %e, "could not record the refund outcome");
        }
    }

    async fn postpone(&self, r: &DueRefund, why: &str) {
        let wait = backoff(r.attempts, self.backoff_max);
        let next = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
        if let Err(e) = queues::postpone_refund(&self.pool, r.refund_id, next, why).await {
            tracing::warn!(refund_no = %r.refund_no, error = %e, "could not reschedule the refund");
        }
    }
}

/// The wait before attempt `attempts + 1`: doubling from `BACKOFF_BASE`, at most `max`.
pub fn backoff(attempts: i32, max: Duration) -> Duration {
    BACKOFF_BASE
        .saturating_mul(1u32 << attempts.clamp(0, 20) as u32)
        .min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_per_attempt_and_stops_at_the_maximum() {
        let max = Duration::from_secs(300);
        assert_eq!(backoff(0, max), Duration::from_secs(1));
        assert_eq!(backoff(3, max), Duration::from_secs(8));
        assert_eq!(backoff(30, max), max);
        assert_eq!(backoff(-1, max), Duration::from_secs(1));
    }
}
