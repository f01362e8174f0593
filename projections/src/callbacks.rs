//! `payment_callbacks`: one row per recorded gateway notification (status 0 processing,
//! 1 success = applied, 2 failed = refused), unique per gateway and callback_no. Rows are only
//! ever inserted, so re-applying an event is a no-op by primary key.

use uuid::Uuid;

use sqlx::PgConnection;

use crate::column;

use ledger_domain::view::CallbackView;
use ledger_domain::NotifyOutcome;

/// Inserts the callbacks the fold added, each with its payment's id.
pub async fn insert(
    conn: &mut PgConnection,
    table: &str,
    callbacks: &[(Uuid, &CallbackView)],
) -> Result<(), sqlx::Error> {
    if callbacks.is_empty() {
        return Ok(());
    }
    sqlx::query(&format!(
        "INSERT INTO {table} (id, payment_id, callback_no, status, created_at, updated_at, outcome, \
         amount, gateway_trade_no, refund_no, reason, flagged_for_refund, position, gateway) \
         SELECT i, p, n, s, t, t, o, a, g, r, re, f, pos, gw FROM UNNEST($1::uuid[], $2::uuid[], \
         $3::text[], $4::int[], $5::timestamptz[], $6::text[], $7::numeric[], $8::text[], \
         $9::text[], $10::text[], $11::bool[], $12::bigint[], $13::text[]) \
         AS x(i, p, n, s, t, o, a, g, r, re, f, pos, gw) \
         ON CONFLICT DO NOTHING"
    ))
    .bind(column(callbacks, |(_, c)| c.id))
    .bind(column(callbacks, |(p, _)| *p))
    .bind(column(callbacks, |(_, c)| c.callback_no.clone()))
    .bind(column(callbacks, |(_, c)| c.status.code() as i32))
    .bind(column(callbacks, |(_, c)| c.created_at))
    .bind(column(callbacks, |(_, c)| outcome_name(c.outcome)))
    .bind(column(callbacks, |(_, c)| c.amount))
    .bind(column(callbacks, |(_, c)| c.gateway_trade_no.clone()))
    .bind(column(callbacks, |(_, c)| c.refund_no.clone()))
    .bind(column(callbacks, |(_, c)| c.reason.clone()))
    .bind(column(callbacks, |(_, c)| c.flagged_for_refund))
    .bind(column(callbacks, |(_, c)| c.position))
    .bind(column(callbacks, |(_, c)| c.gateway.name()))
    .execute(conn)
    .await?;
    Ok(())
}

/// The columns `copy` writes, in order.
pub const COLUMNS: &str = "id, payment_id, callback_no, status, created_at, updated_at, outcome, \
    amount, gateway_trade_no, refund_no, reason, flagged_for_refund, position, gateway";

/// Appends one callback row to a binary COPY in `COLUMNS` order.
pub fn copy(
    c: &mut crate::copy::BinaryCopy<'_>,
    payment_id: Uuid,
    cb: &CallbackView,
) -> Result<(), sqlx::Error> {
    c.row(14);
    c.field(&cb.id)?;
    c.field(&payment_id)?;
    c.field(&cb.callback_no)?;
    c.field(&(cb.status.code() as i32))?;
    c.field(&cb.created_at)?;
    c.field(&cb.created_at)?;
    c.field(&outcome_name(cb.outcome))?;
    c.field(&cb.amount)?;
    c.field(&cb.gateway_trade_no)?;
    c.field(&cb.refund_no)?;
    c.field(&cb.reason)?;
    c.field(&cb.flagged_for_refund)?;
    c.field(&cb.position)?;
    c.field(&cb.gateway.name())
}

/// How the `outcome` column names what the gateway reported.
pub fn outcome_name(outcome: NotifyOutcome) -> &'static str {
    match outcome {
        NotifyOutcome::Success => "success",
        NotifyOutcome::Failed => "failed",
    }
}
