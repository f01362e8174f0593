//! `payment_callbacks`: one row per recorded gateway notification (status 0 processing,
//! 1 success = applied, 2 failed = refused). Rows are only ever inserted, so re-applying an
//! event is a no-op by primary key.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;

use super::Decoded;
use crate::domain::events::PaymentEvent;

pub async fn apply(
    conn: &mut PgConnection,
    events: &[Decoded<'_>],
    table: &str,
) -> Result<(), sqlx::Error> {
    let mut id = Vec::new();
    let mut payment_id = Vec::new();
    let mut callback_no = Vec::new();
    let mut status = Vec::new();
    let mut at: Vec<DateTime<Utc>> = Vec::new();
    let mut outcome = Vec::new();
    let mut amount: Vec<Decimal> = Vec::new();
    let mut trade_no = Vec::new();
    let mut refund_no = Vec::new();
    let mut reason = Vec::new();
    let mut flagged = Vec::new();
    let mut position = Vec::new();
    for d in events {
        if let PaymentEvent::CallbackReceived(c) = &d.event {
            id.push(c.callback_id);
            payment_id.push(d.stored.stream_id);
            callback_no.push(c.callback_no.clone());
            status.push(c.status.code() as i32);
            at.push(d.stored.recorded_at);
            outcome.push(match c.outcome {
                crate::domain::NotifyOutcome::Success => "success",
                crate::domain::NotifyOutcome::Failed => "failed",
            });
            amount.push(c.amount);
            trade_no.push(c.gateway_trade_no.clone());
            refund_no.push(c.refund_no.clone());
            reason.push(c.reason.clone());
            flagged.push(c.flagged_for_refund);
            position.push(d.stored.position);
        }
    }
    if id.is_empty() {
        return Ok(());
    }
    sqlx::query(&format!(
        "INSERT INTO {table} (id, payment_id, callback_no, status, created_at, updated_at, outcome, \
         amount, gateway_trade_no, refund_no, reason, flagged_for_refund, position) \
         SELECT i, p, n, s, t, t, o, a, g, r, re, f, pos FROM UNNEST($1::uuid[], $2::uuid[], \
         $3::text[], $4::int[], $5::timestamptz[], $6::text[], $7::numeric[], $8::text[], \
         $9::text[], $10::text[], $11::bool[], $12::bigint[]) AS x(i, p, n, s, t, o, a, g, r, re, f, pos) \
         ON CONFLICT DO NOTHING"
    ))
    .bind(&id)
    .bind(&payment_id)
    .bind(&callback_no)
    .bind(&status)
    .bind(&at)
    .bind(&outcome)
    .bind(&amount)
    .bind(&trade_no)
    .bind(&refund_no)
    .bind(&reason)
    .bind(&flagged)
    .bind(&position)
    .execute(conn)
    .await?;
    Ok(())
}
