//! The refund driver: after `refund_requested` is committed, call the gateway and append
//! `refunded` or `refund_failed`. It is driven from the read side of the log (refunds still
//! `processing`), so a crash between the append and the gateway call resumes on restart; the
//! gateway's idempotency key is the refund_no, and confirming twice appends nothing, so the
//! refund completes exactly once.
//!
//! The queue is read from the read tables, which trail the log: a refund whose outcome this
//! driver has just recorded stays "due" there until the projector (on this node or another)
//! applies it. So the driver remembers the refunds it recorded and skips them, and after a
//! pass that recorded anything it waits (bounded) for the read side to reach the log's head
//! before it looks again — the gateway is asked once per refund, not once per pass.
//!
//! The queue is ordered by each refund's next attempt (`ledger_projections::queues`): an
//! outcome that stays unknown (the gateway down, a timeout its query cannot settle) is tried
//! again with exponential backoff per refund, so a slow or dead gateway's refunds move to the
//! back while the others go on. Refunds are worked on concurrently, each gateway call under a
//! timeout, so one hung call can neither stall the loop nor shutdown.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Gateways, RefundOutcome};
use crate::domain::{Command, PaymentMethod, RefundStatus};
use crate::duties::Lease;
use crate::projections::queues::{self, DueRefund};
use crate::service::{Bookkeeping, CommandService, Meta};

/// What the driver needs.
#[derive(Clone)]
pub struct RefundDriver {
    pub pool: PgPool,
    pub commands: CommandService,
    pub gateways: Arc<Gateways>,
    pub concurrency_max: usize,
    /// Refunds taken from the queue per pass (LEDGER_DRIVER_BATCH_MAX).
    pub batch_max: i64,
    /// Longest the driver sleeps when nothing woke it and nothing is due sooner.
    pub poll: Duration,
    /// First wait after an unknown outcome; it doubles per attempt up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// The position the read tables include (the projector's, wherever it runs).
    pub applied: watch::Receiver<i64>,
    /// Longest a pass waits for the read side to include what it recorded.
    pub settle_wait: Duration,
}

/// What one refund's turn in a pass came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// Its outcome is in the log.
    Recorded(Uuid),
    /// Its outcome stayed unknown; it waits its backoff.
    Postponed,
    /// Nothing was done (the lease lost, the payment unreadable, the outcome not appended):
    /// the refund is due again as it was.
    Skipped,
}

/// Refunds whose outcome this driver recorded, skipped until the read side shows them settled.
#[derive(Debug, Default)]
pub struct Recorded(HashSet<Uuid>);

impl RefundDriver {
    /// Runs until cancelled, while `lease` (the refund duty) is held.
    ///
    /// A pass is raced against `cancel`: shutdown does not wait for it. Dropping a pass
    /// half-way is the crash the driver is built to resume from (the refund stays
    /// `processing` until its outcome is in the log, and the gateway's key is the refund_no).
    pub async fn run(self, lease: Option<Lease>, cancel: CancellationToken) {
        let wake = self.gateways.refund_wake();
        let mut recorded = Recorded::default();
        while !cancel.is_cancelled() {
            let pass = tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                pass = self.pass(lease.as_ref(), &mut recorded) => pass,
            };
            match pass {
                // More may be due at once (a queue longer than one batch).
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
                .clamp(Duration::from_millis(20), self.poll),
            _ => self.poll,
        }
    }

    /// One pass over the refunds due now. Returns how many it moved on: outcomes recorded
    /// plus refunds rescheduled by their backoff. A refund it could not work on (the lease
    /// lost, its payment unreadable) does not count, so the caller sleeps before the next
    /// pass instead of asking again at once.
    pub async fn pass(
        &self,
        lease: Option<&Lease>,
        recorded: &mut Recorded,
    ) -> Result<usize, anyhow::Error> {
        let due = queues::due_refunds(&self.pool, Utc::now(), self.batch_max).await?;
        if let Ok((depth, oldest)) = queues::refund_queue_depth(&self.pool).await {
            metrics::gauge!("ledger_refund_queue_depth").set(depth as f64);
            metrics::gauge!("ledger_refund_queue_oldest_seconds").set(oldest);
        }
        // What the read side no longer shows as due needs no remembering.
        let still_due: HashSet<Uuid> = due.iter().map(|r| r.refund_id).collect();
        recorded.0.retain(|id| still_due.contains(id));
        let todo: Vec<DueRefund> = due
            .into_iter()
            .filter(|r| !recorded.0.contains(&r.refund_id))
            .collect();
        let progress: Vec<Progress> = futures::stream::iter(todo)
            .map(|refund| self.settle(refund, lease))
            .buffer_unordered(self.concurrency_max.max(1))
            .collect()
            .await;
        let settled: Vec<Uuid> = progress
            .iter()
            .filter_map(|p| match p {
                Progress::Recorded(id) => Some(*id),
                _ => None,
            })
            .collect();
        let moved = progress
            .iter()
            .filter(|p| !matches!(p, Progress::Skipped))
            .count();
        if !settled.is_empty() {
            recorded.0.extend(settled);
            self.wait_for_read_side().await;
        }
        let _ = queues::forget_settled_refunds(&self.pool).await;
        Ok(moved)
    }

    /// Waits (at most `settle_wait`) until the read tables include the log's head.
    async fn wait_for_read_side(&self) {
        let Ok(head) = crate::store::head_position(&self.pool).await else {
            return;
        };
        let mut applied = self.applied.clone();
        let _ = tokio::time::timeout(self.settle_wait, applied.wait_for(|p| *p >= head)).await;
    }

    /// Sends one refund and records its outcome.
    async fn settle(&self, r: DueRefund, lease: Option<&Lease>) -> Progress {
        let Some(method) = PaymentMethod::parse(&r.payment_method) else {
            return Progress::Skipped;
        };
        // Only the leader sends refunds: a node that cannot prove it still holds the duty
        // leaves the refund to whoever does.
        if lease.is_some_and(|l| !l.valid()) {
            return Progress::Skipped;
        }
        // The read side trails the log: a previous leader may have recorded this refund's
        // outcome already. Ask the log, not the gateway, whether anything is left to do.
        match self.commands.reload(r.payment_id).await {
            Ok(Some(p))
                if p.refunds
                    .iter()
                    .any(|x| x.id == r.refund_id && x.status != RefundStatus::Processing) =>
            {
                return Progress::Recorded(r.refund_id)
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(refund_no = %r.refund_no, error = %e, "cannot read the refund's payment; will try again");
                return Progress::Skipped;
            }
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
            Ok(RefundOutcome::Pending) => {
                self.postpone(&r, "pending at the gateway").await;
                return Progress::Postponed;
            }
            Err(e) => {
                tracing::warn!(refund_no = %r.refund_no, error = %e, attempts = r.attempts, "refund outcome unknown; will ask again");
                self.postpone(&r, &e.to_string()).await;
                return Progress::Postponed;
            }
        };
        let meta = Meta::system("refund-driver");
        let book = Bookkeeping {
            fence: lease.map(Lease::fence),
            ..Bookkeeping::default()
        };
        match self
            .commands
            .execute(r.payment_id, &[command], &meta, &book)
            .await
        {
            Ok(_) => Progress::Recorded(r.refund_id),
            Err(e) => {
                tracing::warn!(refund_no = %r.refund_no, error = %e, "could not record the refund outcome");
                Progress::Skipped
            }
        }
    }

    async fn postpone(&self, r: &DueRefund, why: &str) {
        let wait = backoff(r.attempts, self.backoff_base, self.backoff_max);
        let next = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
        if let Err(e) = queues::postpone_refund(&self.pool, r.refund_id, next, why).await {
            tracing::warn!(refund_no = %r.refund_no, error = %e, "could not reschedule the refund");
        }
    }
}

/// The wait before attempt `attempts + 1`: doubling from `base`, at most `max`.
pub fn backoff(attempts: i32, base: Duration, max: Duration) -> Duration {
    base.saturating_mul(1u32 << attempts.clamp(0, 20) as u32)
        .min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_per_attempt_and_stops_at_the_maximum() {
        let (base, max) = (Duration::from_secs(1), Duration::from_secs(300));
        assert_eq!(backoff(0, base, max), Duration::from_secs(1));
        assert_eq!(backoff(3, base, max), Duration::from_secs(8));
        assert_eq!(backoff(30, base, max), max);
        assert_eq!(backoff(-1, base, max), Duration::from_secs(1));
        assert_eq!(
            backoff(2, Duration::from_millis(250), max),
            Duration::from_secs(1)
        );
    }
}
