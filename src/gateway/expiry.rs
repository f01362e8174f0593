//! The expiry driver: a pending payment nobody paid within `LEDGER_PAYMENT_TTL_SECS` has its
//! gateway order closed and then fails with reason `expired`, releasing its order for a new
//! payment. It is driven from the read side of the log (payments still pending), so a crash
//! resumes it; a payment the payer paid meanwhile is left to its notification, and a late
//! success after expiry is flagged for refund like any success after failure.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{CloseOutcome, Gateways};
use crate::domain::{Command, PaymentMethod};
use crate::duties::Lease;
use crate::projections::queues::{self, ExpiredPayment};
use crate::service::{Bookkeeping, CommandService, Meta};

/// How often expired payments are looked for.
pub const POLL: Duration = Duration::from_secs(1);
/// Payments expired per pass.
pub const BATCH_MAX: i64 = 100;
/// The failure reason of an expired payment.
pub const EXPIRED: &str = "expired";

#[derive(Clone)]
pub struct ExpiryDriver {
    pub pool: PgPool,
    pub commands: CommandService,
    pub gateways: Arc<Gateways>,
    pub ttl: Duration,
    pub backoff_max: Duration,
}

impl ExpiryDriver {
    /// Runs until cancelled, while `lease` (the expiry duty) is held.
    pub async fn run(self, lease: Option<Lease>, cancel: CancellationToken) {
        loop {
            if let Err(e) = self.pass(lease.as_ref()).await {
                tracing::warn!(error = %e, "expiry pass failed");
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(POLL) => {}
            }
        }
        tracing::info!("expiry driver stopped");
    }

    /// One pass. Returns how many payments it expired.
    pub async fn pass(&self, lease: Option<&Lease>) -> Result<usize, anyhow::Error> {
        let now = Utc::now();
        let cutoff = now - chrono::Duration::from_std(self.ttl)?;
        let due = queues::expired_pending(&self.pool, cutoff, now, BATCH_MAX).await?;
        let mut expired = 0;
        for p in due {
            if lease.is_some_and(|l| !l.valid()) {
                break;
            }
            if self.expire(&p, lease).await {
                expired += 1;
            }
        }
        let _ = queues::forget_settled_expiries(&self.pool).await;
        Ok(expired)
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
        let wait = super::refunds::backoff(p.attempts, self.backoff_max);
        let next = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
        if let Err(e) = queues::postpone_expiry(&self.pool, p.payment_id, next, why).await {
            tracing::warn!(payment_no = %p.payment_no, error = %e, "could not reschedule the expiry");
        }
    }
}
