//! The work queues the drivers take from the read tables: refunds still processing, and
//! pending payments past their time to live. Each is ordered by when it is next due, so a
//! refund the gateway keeps postponing moves to the back instead of blocking the ones behind
//! it; the schedules (`refund_schedule`, `expiry_schedule`) hold each item's next attempt and
//! are written only here.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgPool;
use uuid::Uuid;

/// A refund to send or to settle.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct DueRefund {
    pub refund_id: Uuid,
    pub payment_id: Uuid,
    pub refund_no: String,
    pub amount: Decimal,
    pub currency: String,
    pub payment_no: String,
    pub payment_method: String,
    pub payment_amount: Decimal,
    pub attempts: i32,
}

/// Refunds still processing whose next attempt is due, soonest first.
pub async fn due_refunds(
    pool: &PgPool,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<DueRefund>, sqlx::Error> {
    sqlx::query_as(
        "SELECT r.id AS refund_id, r.payment_id, r.refund_no, r.amount, r.currency, \
         p.payment_no, p.payment_method, p.amount AS payment_amount, \
         COALESCE(s.attempts, 0) AS attempts \
         FROM payment_refunds r JOIN payments p ON p.id = r.payment_id \
         LEFT JOIN refund_schedule s ON s.refund_id = r.id \
         WHERE r.status = 0 AND COALESCE(s.next_attempt_at, r.created_at) <= $1 \
         ORDER BY COALESCE(s.next_attempt_at, r.created_at) LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// When the next refund (or payment past its time to live) becomes due, if any is waiting.
pub async fn next_refund_due(pool: &PgPool) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT MIN(COALESCE(s.next_attempt_at, r.created_at)) FROM payment_refunds r \
         LEFT JOIN refund_schedule s ON s.refund_id = r.id WHERE r.status = 0",
    )
    .fetch_one(pool)
    .await
}

/// Puts a refund back in the queue until `next`, counting the attempt.
pub async fn postpone_refund(
    pool: &PgPool,
    refund_id: Uuid,
    next: DateTime<Utc>,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO refund_schedule (refund_id, next_attempt_at, attempts, last_error) \
         VALUES ($1, $2, 1, $3) ON CONFLICT (refund_id) DO UPDATE SET \
         next_attempt_at = EXCLUDED.next_attempt_at, \
         attempts = refund_schedule.attempts + 1, last_error = EXCLUDED.last_error",
    )
    .bind(refund_id)
    .bind(next)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// Forgets the schedule of refunds that are no longer processing.
pub async fn forget_settled_refunds(pool: &PgPool) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "DELETE FROM refund_schedule s USING payment_refunds r \
         WHERE r.id = s.refund_id AND r.status <> 0",
    )
    .execute(pool)
    .await?
    .rows_affected())
}

/// How many refunds are processing, and the age in seconds of the oldest (for metrics).
pub async fn refund_queue_depth(pool: &PgPool) -> Result<(i64, f64), sqlx::Error> {
    sqlx::query_as(
        "SELECT COUNT(*), COALESCE(EXTRACT(EPOCH FROM now() - MIN(created_at))::float8, 0) \
         FROM payment_refunds WHERE status = 0",
    )
    .fetch_one(pool)
    .await
}

/// A pending payment past its time to live.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ExpiredPayment {
    pub payment_id: Uuid,
    pub payment_no: String,
    pub payment_method: String,
    pub attempts: i32,
}

/// Pending payments created before `cutoff` whose next attempt is due, oldest first.
pub async fn expired_pending(
    pool: &PgPool,
    cutoff: DateTime<Utc>,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<ExpiredPayment>, sqlx::Error> {
    sqlx::query_as(
        "SELECT p.id AS payment_id, p.payment_no, p.payment_method, \
         COALESCE(s.attempts, 0) AS attempts \
         FROM payments p LEFT JOIN expiry_schedule s ON s.payment_id = p.id \
         WHERE p.status = 0 AND p.created_at < $1 AND COALESCE(s.next_attempt_at, $2) <= $2 \
         ORDER BY p.created_at LIMIT $3",
    )
    .bind(cutoff)
    .bind(now)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Puts an expiry back until `next`, counting the attempt.
pub async fn postpone_expiry(
    pool: &PgPool,
    payment_id: Uuid,
    next: DateTime<Utc>,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO expiry_schedule (payment_id, next_attempt_at, attempts, last_error) \
         VALUES ($1, $2, 1, $3) ON CONFLICT (payment_id) DO UPDATE SET \
         next_attempt_at = EXCLUDED.next_attempt_at, \
         attempts = expiry_schedule.attempts + 1, last_error = EXCLUDED.last_error",
    )
    .bind(payment_id)
    .bind(next)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// Forgets the schedule of payments that are no longer pending.
pub async fn forget_settled_expiries(pool: &PgPool) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "DELETE FROM expiry_schedule s USING payments p \
         WHERE p.id = s.payment_id AND p.status <> 0",
    )
    .execute(pool)
    .await?
    .rows_affected())
}
