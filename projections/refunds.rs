//! `payment_refunds`: one row per refund (status 0 processing, 1 success, 2 failed). Rows
//! carry the log position they last applied, so re-applying an event changes nothing.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Currencies, Decoded};
use crate::domain::events::PaymentEvent;
use crate::domain::RefundStatus;

#[derive(Debug, Clone)]
struct Row {
    id: Uuid,
    payment_id: Uuid,
    refund_no: String,
    amount: Decimal,
    reason: String,
    status: i32,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    currency: String,
    failure_reason: Option<String>,
    last_position: i64,
}

/// A stored `payment_refunds` row, in SELECT order.
type RefundRow = (
    Uuid,
    Uuid,
    String,
    Decimal,
    Option<String>,
    i32,
    DateTime<Utc>,
    DateTime<Utc>,
    String,
    Option<String>,
    i64,
);

pub async fn apply(
    conn: &mut PgConnection,
    events: &[Decoded<'_>],
    currencies: &Currencies,
    table: &str,
) -> Result<(), sqlx::Error> {
    let touched: Vec<Uuid> = events
        .iter()
        .filter_map(|d| match &d.event {
            PaymentEvent::Refunded(r) => Some(r.refund_id),
            PaymentEvent::RefundFailed(r) => Some(r.refund_id),
            _ => None,
        })
        .collect();
    let mut rows: HashMap<Uuid, Row> = HashMap::new();
    if !touched.is_empty() {
        let existing: Vec<RefundRow> = sqlx::query_as(&format!(
            "SELECT id, payment_id, refund_no, amount, reason, status, created_at, updated_at, \
                 currency, failure_reason, last_position FROM {table} WHERE id = ANY($1)"
        ))
        .bind(&touched)
        .fetch_all(&mut *conn)
        .await?;
        for r in existing {
            rows.insert(
                r.0,
                Row {
                    id: r.0,
                    payment_id: r.1,
                    refund_no: r.2,
                    amount: r.3,
                    reason: r.4.unwrap_or_default(),
                    status: r.5,
                    created_at: r.6,
                    updated_at: r.7,
                    currency: r.8,
                    failure_reason: r.9,
                    last_position: r.10,
                },
            );
        }
    }
    let mut changed: Vec<Uuid> = Vec::new();
    for d in events {
        let e = d.stored;
        match &d.event {
            PaymentEvent::RefundRequested(r) => {
                rows.entry(r.refund_id).or_insert_with(|| Row {
                    id: r.refund_id,
                    payment_id: e.stream_id,
                    refund_no: r.refund_no.clone(),
                    amount: r.amount,
                    reason: r.reason.clone(),
                    status: RefundStatus::Processing.code() as i32,
                    created_at: e.recorded_at,
                    updated_at: e.recorded_at,
                    currency: currencies
                        .get(&e.stream_id)
                        .map(|c| c.0.clone())
                        .unwrap_or_default(),
                    failure_reason: None,
                    last_position: e.position,
                });
                changed.push(r.refund_id);
            }
            PaymentEvent::Refunded(r) => {
                if let Some(row) = rows
                    .get_mut(&r.refund_id)
                    .filter(|row| row.last_position < e.position)
                {
                    row.status = RefundStatus::Success.code() as i32;
                    row.updated_at = e.recorded_at;
                    row.last_position = e.position;
                    changed.push(r.refund_id);
                }
            }
            PaymentEvent::RefundFailed(r) => {
                if let Some(row) = rows
                    .get_mut(&r.refund_id)
                    .filter(|row| row.last_position < e.position)
                {
                    row.status = RefundStatus::Failed.code() as i32;
                    row.failure_reason = Some(r.reason.clone());
                    row.updated_at = e.recorded_at;
                    row.last_position = e.position;
                    changed.push(r.refund_id);
                }
            }
            _ => {}
        }
    }
    changed.sort_unstable();
    changed.dedup();
    if changed.is_empty() {
        return Ok(());
    }
    let rows: Vec<&Row> = changed.iter().filter_map(|id| rows.get(id)).collect();
    sqlx::query(&format!(
        "INSERT INTO {table} (id, payment_id, refund_no, amount, reason, status, created_at, \
         updated_at, currency, failure_reason, last_position) \
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::numeric[], $5::text[], \
         $6::int[], $7::timestamptz[], $8::timestamptz[], $9::text[], $10::text[], $11::bigint[]) \
         ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, updated_at = EXCLUDED.updated_at, \
         failure_reason = EXCLUDED.failure_reason, last_position = EXCLUDED.last_position \
         WHERE {table}.last_position < EXCLUDED.last_position"
    ))
    .bind(rows.iter().map(|r| r.id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.payment_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.refund_no.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.amount).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.reason.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.status).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.created_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.updated_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.currency.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.failure_reason.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.last_position).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}
