//! The refund process: after `refund_requested` is committed, call the gateway and append
//! `refunded` or `refund_failed`. It is driven from the read side of the log (refunds still
//! `processing`), so a crash between the append and the gateway call resumes on restart; the
//! gateway's idempotency key is the refund_no, and confirming twice appends nothing, so the
//! refund completes exactly once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Gateways, RefundOutcome};
use crate::domain::{Command, PaymentMethod};
use crate::service::{CommandService, Meta};

/// How often processing refunds are looked at when nothing woke the process.
pub const POLL: Duration = Duration::from_millis(500);
/// How long a refund the gateway reported pending is left alone before asking again.
pub const PENDING_RECHECK: Duration = Duration::from_secs(5);
/// Refunds handled per pass.
pub const BATCH_MAX: i64 = 100;

pub async fn run(
    pool: PgPool,
    commands: CommandService,
    gateways: Arc<Gateways>,
    cancel: CancellationToken,
) {
    let wake = gateways.refund_wake();
    let mut pending_since: HashMap<Uuid, Instant> = HashMap::new();
    loop {
        if let Err(e) = pass(&pool, &commands, &gateways, &mut pending_since).await {
            tracing::warn!(error = %e, "refund pass failed");
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
    }
    tracing::info!("refund process stopped");
}

type Row = (Uuid, Uuid, String, Decimal, String, String);

/// One pass over the refunds still processing. Returns how many were settled.
pub async fn pass(
    pool: &PgPool,
    commands: &CommandService,
    gateways: &Gateways,
    pending_since: &mut HashMap<Uuid, Instant>,
) -> Result<usize, anyhow::Error> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT r.id, r.payment_id, r.refund_no, r.amount, p.payment_no, p.payment_method \
         FROM payment_refunds r JOIN payments p ON p.id = r.payment_id \
         WHERE r.status = 0 ORDER BY r.created_at LIMIT $1",
    )
    .bind(BATCH_MAX)
    .fetch_all(pool)
    .await?;
    let mut settled = 0;
    for (refund_id, payment_id, refund_no, amount, payment_no, method) in rows {
        if pending_since
            .get(&refund_id)
            .is_some_and(|t| t.elapsed() < PENDING_RECHECK)
        {
            continue;
        }
        let Some(method) = PaymentMethod::parse(&method) else {
            continue;
        };
        let outcome = gateways
            .get(method)
            .refund(&refund_no, &payment_no, amount)
            .await;
        let command = match outcome {
            Ok(RefundOutcome::Confirmed) => Command::ConfirmRefund { refund_id },
            Ok(RefundOutcome::Rejected(reason)) => Command::FailRefund { refund_id, reason },
            Ok(RefundOutcome::Pending) => {
                pending_since.insert(refund_id, Instant::now());
                continue;
            }
            Err(e) => {
                // Unreachable even for the status query: leave it processing and try later.
                tracing::warn!(refund_no = %refund_no, error = %e, "refund outcome unknown; will retry");
                pending_since.insert(refund_id, Instant::now());
                continue;
            }
        };
        pending_since.remove(&refund_id);
        let meta = Meta::system("refund-process");
        match commands.execute(payment_id, &command, &meta, None).await {
            Ok(_) => settled += 1,
            Err(e) => {
                tracing::warn!(refund_no = %refund_no, error = %e, "could not record the refund outcome")
            }
        }
    }
    Ok(settled)
}
