//! Ledger totals per currency, computed twice — from the event log and from the read tables
//! (`ledger_entries`) — so that finance sees whether they agree (SPEC §11 "Totals").
//!
//! Both sides read indexed sources: the log side finds `paid`, `refunded` and flagged
//! `callback_received` events by `(event_type, recorded_at)` and each payment's currency by
//! `(stream_id, version)`; the read side sums `ledger_entries` by `(currency, recorded_at)`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;

/// One side's figures for one currency.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct Side {
    pub paid_count: i64,
    pub paid_amount: Decimal,
    pub refunded_amount: Decimal,
    /// Money gateways reported that the ledger did not accept as payments (held in
    /// `suspense` until refunded).
    pub flagged_amount: Decimal,
}

pub type Totals = BTreeMap<String, Side>;

/// Totals per currency from the log (up to `position`) and from `ledger_entries`.
pub async fn compute(
    pool: &sqlx::PgPool,
    currency: Option<&str>,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
    position: i64,
) -> Result<(Totals, Totals), sqlx::Error> {
    let log_paid: Vec<(String, i64, Decimal)> = sqlx::query_as(
        "SELECT c.data->>'currency', COUNT(*), COALESCE(SUM((c.data->>'amount')::numeric), 0) \
         FROM events e JOIN events c ON c.stream_id = e.stream_id AND c.version = 1 \
         WHERE e.event_type = 'paid' AND e.position <= $4 \
         AND ($1::text IS NULL OR c.data->>'currency' = $1) \
         AND ($2::timestamptz IS NULL OR e.recorded_at >= $2) \
         AND ($3::timestamptz IS NULL OR e.recorded_at < $3) GROUP BY 1",
    )
    .bind(currency)
    .bind(start)
    .bind(end)
    .bind(position)
    .fetch_all(pool)
    .await?;
    let log_refunded: Vec<(String, Decimal)> = sqlx::query_as(
        "SELECT c.data->>'currency', COALESCE(SUM((e.data->>'amount')::numeric), 0) \
         FROM events e JOIN events c ON c.stream_id = e.stream_id AND c.version = 1 \
         WHERE e.event_type = 'refunded' AND e.position <= $4 \
         AND ($1::text IS NULL OR c.data->>'currency' = $1) \
         AND ($2::timestamptz IS NULL OR e.recorded_at >= $2) \
         AND ($3::timestamptz IS NULL OR e.recorded_at < $3) GROUP BY 1",
    )
    .bind(currency)
    .bind(start)
    .bind(end)
    .bind(position)
    .fetch_all(pool)
    .await?;
    let log_flagged: Vec<(String, Decimal)> = sqlx::query_as(
        "SELECT c.data->>'currency', COALESCE(SUM((e.data->>'amount')::numeric), 0) \
         FROM events e JOIN events c ON c.stream_id = e.stream_id AND c.version = 1 \
         WHERE e.event_type = 'callback_received' AND e.position <= $4 \
         AND (e.data->>'flagged_for_refund')::boolean \
         AND ($1::text IS NULL OR c.data->>'currency' = $1) \
         AND ($2::timestamptz IS NULL OR e.recorded_at >= $2) \
         AND ($3::timestamptz IS NULL OR e.recorded_at < $3) GROUP BY 1",
    )
    .bind(currency)
    .bind(start)
    .bind(end)
    .bind(position)
    .fetch_all(pool)
    .await?;
    let read: Vec<(String, String, i64, Decimal)> = sqlx::query_as(
        "SELECT currency::text, entry_type, COUNT(*), COALESCE(SUM(amount), 0) FROM ledger_entries \
         WHERE account = 'gateway_clearing' \
         AND entry_type IN ('paid', 'refunded', 'callback_received') \
         AND position <= $4 AND ($1::text IS NULL OR currency = $1) \
         AND ($2::timestamptz IS NULL OR recorded_at >= $2) \
         AND ($3::timestamptz IS NULL OR recorded_at < $3) GROUP BY 1, 2",
    )
    .bind(currency)
    .bind(start)
    .bind(end)
    .bind(position)
    .fetch_all(pool)
    .await?;
    let mut log = Totals::new();
    for (c, n, sum) in log_paid {
        let s = log.entry(c).or_default();
        s.paid_count = n;
        s.paid_amount = sum;
    }
    for (c, sum) in log_refunded {
        log.entry(c).or_default().refunded_amount = sum;
    }
    for (c, sum) in log_flagged {
        log.entry(c).or_default().flagged_amount = sum;
    }
    let mut from_read = Totals::new();
    for (c, kind, n, sum) in read {
        let s = from_read.entry(c).or_default();
        match kind.as_str() {
            "paid" => {
                s.paid_count = n;
                s.paid_amount = sum;
            }
            "callback_received" => s.flagged_amount = sum,
            _ => s.refunded_amount = -sum,
        }
    }
    for side in log.values_mut().chain(from_read.values_mut()) {
        side.paid_amount = side.paid_amount.normalize();
        side.refunded_amount = side.refunded_amount.normalize();
        side.flagged_amount = side.flagged_amount.normalize();
    }
    Ok((log, from_read))
}

/// Paid and refunded amounts of one UTC day in one currency (from `ledger_entries`).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Day {
    pub day: chrono::NaiveDate,
    pub currency: String,
    pub paid_amount: Decimal,
    pub refunded_amount: Decimal,
}

/// Paid and refunded amounts per UTC day, oldest first (the finance chart).
pub async fn daily(
    pool: &sqlx::PgPool,
    currency: Option<&str>,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
) -> Result<Vec<Day>, sqlx::Error> {
    sqlx::query_as(
        "SELECT (recorded_at AT TIME ZONE 'UTC')::date AS day, currency::text AS currency, \
         COALESCE(SUM(amount) FILTER (WHERE entry_type = 'paid'), 0) AS paid_amount, \
         COALESCE(-SUM(amount) FILTER (WHERE entry_type = 'refunded'), 0) AS refunded_amount \
         FROM ledger_entries WHERE account = 'gateway_clearing' \
         AND entry_type IN ('paid', 'refunded') \
         AND ($1::text IS NULL OR currency = $1) \
         AND ($2::timestamptz IS NULL OR recorded_at >= $2) \
         AND ($3::timestamptz IS NULL OR recorded_at < $3) \
         GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .bind(currency)
    .bind(start)
    .bind(end)
    .fetch_all(pool)
    .await
}
