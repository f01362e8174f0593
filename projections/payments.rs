//! `payments`: one row per payment, status codes as in the seed (0 pending, 1 success,
//! 2 failed, 3 refunded).
//!
//! A batch loads the rows it touches, folds the events onto them in memory and writes them
//! back with one statement, so a batch of a thousand events costs three round trips.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Currencies, Decoded, ProjectionContext};
use crate::crypto::payer::{self, SealedPayer, ERASED};
use crate::domain::events::PaymentEvent;
use crate::domain::PaymentStatus;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PaymentRow {
    pub id: Uuid,
    pub order_id: String,
    pub payment_no: String,
    pub payment_method: String,
    pub amount: Decimal,
    pub status: i32,
    pub payment_time: Option<DateTime<Utc>>,
    pub refund_time: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub currency: String,
    pub user_id: String,
    pub refunded_amount: Decimal,
    pub payment_url: String,
    pub gateway_trade_no: Option<String>,
    pub failure_reason: Option<String>,
    pub flagged_for_refund: bool,
    pub payer_name: Option<String>,
    pub payer_account: Option<String>,
    pub last_version: i32,
    pub last_position: i64,
}

pub const COLUMNS: &str =
    "id, order_id, payment_no, payment_method, amount, status, payment_time, \
    refund_time, created_at, updated_at, currency, user_id, refunded_amount, payment_url, \
    gateway_trade_no, failure_reason, flagged_for_refund, payer_name, payer_account, \
    last_version, last_position";

/// Applies the events; returns the currency of every payment touched.
pub async fn apply(
    conn: &mut PgConnection,
    ctx: &ProjectionContext,
    events: &[Decoded<'_>],
    table: &str,
) -> Result<Currencies, sqlx::Error> {
    let ids: Vec<Uuid> = {
        let mut ids: Vec<Uuid> = events.iter().map(|e| e.stored.stream_id).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    };
    let existing: Vec<PaymentRow> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM {table} WHERE id = ANY($1)"))
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await?;
    let mut rows: HashMap<Uuid, PaymentRow> = existing.into_iter().map(|r| (r.id, r)).collect();
    let mut changed: Vec<Uuid> = Vec::new();
    let payers = open_payers(conn, ctx, events).await?;
    for d in events {
        let e = d.stored;
        if let PaymentEvent::Created(c) = &d.event {
            if rows.contains_key(&e.stream_id) {
                continue;
            }
            let (payer_name, payer_account) =
                payers.get(&e.stream_id).cloned().unwrap_or((None, None));
            rows.insert(
                e.stream_id,
                PaymentRow {
                    id: e.stream_id,
                    order_id: c.order_id.clone(),
                    payment_no: c.payment_no.clone(),
                    payment_method: c.payment_method.name().to_owned(),
                    amount: c.amount,
                    status: PaymentStatus::Pending.code() as i32,
                    payment_time: None,
                    refund_time: None,
                    created_at: e.recorded_at,
                    updated_at: e.recorded_at,
                    currency: c.currency.code().to_owned(),
                    user_id: c.user_id.clone(),
                    refunded_amount: Decimal::ZERO,
                    payment_url: c.payment_url.clone(),
                    gateway_trade_no: None,
                    failure_reason: None,
                    flagged_for_refund: false,
                    payer_name,
                    payer_account,
                    last_version: e.version,
                    last_position: e.position,
                },
            );
            changed.push(e.stream_id);
            continue;
        }
        let Some(row) = rows.get_mut(&e.stream_id) else {
            tracing::error!(
                position = e.position,
                "event for a payment the projection never saw created"
            );
            continue;
        };
        if e.version <= row.last_version {
            continue; // already applied
        }
        evolve_row(row, &d.event, e.recorded_at);
        row.last_version = e.version;
        row.last_position = e.position;
        row.updated_at = e.recorded_at;
        changed.push(e.stream_id);
    }
    changed.sort_unstable();
    changed.dedup();
    if !changed.is_empty() {
        upsert(conn, table, changed.iter().filter_map(|id| rows.get(id))).await?;
    }
    Ok(rows
        .into_iter()
        .map(|(id, r)| (id, (r.currency, r.amount)))
        .collect())
}

/// The pure part: what one event does to a row.
pub fn evolve_row(row: &mut PaymentRow, event: &PaymentEvent, at: DateTime<Utc>) {
    match event {
        PaymentEvent::Created(_)
        | PaymentEvent::RefundRequested(_)
        | PaymentEvent::RefundFailed(_) => {}
        PaymentEvent::CallbackReceived(c) => {
            if c.flagged_for_refund {
                row.flagged_for_refund = true;
            }
        }
        PaymentEvent::Paid(p) => {
            row.status = PaymentStatus::Success.code() as i32;
            row.payment_time = Some(p.paid_at);
            row.gateway_trade_no = Some(p.gateway_trade_no.clone());
        }
        PaymentEvent::Failed(f) => {
            row.status = PaymentStatus::Failed.code() as i32;
            row.failure_reason = Some(f.reason.clone());
        }
        PaymentEvent::Refunded(r) => {
            row.refunded_amount += r.amount;
            if row.refunded_amount >= row.amount {
                row.status = PaymentStatus::Refunded.code() as i32;
                row.refund_time = Some(at);
            }
        }
    }
}

async fn upsert<'a>(
    conn: &mut PgConnection,
    table: &str,
    rows: impl Iterator<Item = &'a PaymentRow>,
) -> Result<(), sqlx::Error> {
    let mut c = Cols::default();
    for r in rows {
        c.id.push(r.id);
        c.order_id.push(r.order_id.clone());
        c.payment_no.push(r.payment_no.clone());
        c.payment_method.push(r.payment_method.clone());
        c.amount.push(r.amount);
        c.status.push(r.status);
        c.payment_time.push(r.payment_time);
        c.refund_time.push(r.refund_time);
        c.created_at.push(r.created_at);
        c.updated_at.push(r.updated_at);
        c.currency.push(r.currency.clone());
        c.user_id.push(r.user_id.clone());
        c.refunded_amount.push(r.refunded_amount);
        c.payment_url.push(r.payment_url.clone());
        c.gateway_trade_no.push(r.gateway_trade_no.clone());
        c.failure_reason.push(r.failure_reason.clone());
        c.flagged.push(r.flagged_for_refund);
        c.payer_name.push(r.payer_name.clone());
        c.payer_account.push(r.payer_account.clone());
        c.last_version.push(r.last_version);
        c.last_position.push(r.last_position);
    }
    sqlx::query(&format!(
        "INSERT INTO {table} ({COLUMNS}) SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], \
         $4::text[], $5::numeric[], $6::int[], $7::timestamptz[], $8::timestamptz[], \
         $9::timestamptz[], $10::timestamptz[], $11::text[], $12::text[], $13::numeric[], \
         $14::text[], $15::text[], $16::text[], $17::bool[], $18::text[], $19::text[], \
         $20::int[], $21::bigint[]) \
         ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, \
         payment_time = EXCLUDED.payment_time, refund_time = EXCLUDED.refund_time, \
         updated_at = EXCLUDED.updated_at, refunded_amount = EXCLUDED.refunded_amount, \
         gateway_trade_no = EXCLUDED.gateway_trade_no, failure_reason = EXCLUDED.failure_reason, \
         flagged_for_refund = EXCLUDED.flagged_for_refund, last_version = EXCLUDED.last_version, \
         last_position = EXCLUDED.last_position \
         WHERE {table}.last_version < EXCLUDED.last_version"
    ))
    .bind(&c.id)
    .bind(&c.order_id)
    .bind(&c.payment_no)
    .bind(&c.payment_method)
    .bind(&c.amount)
    .bind(&c.status)
    .bind(&c.payment_time)
    .bind(&c.refund_time)
    .bind(&c.created_at)
    .bind(&c.updated_at)
    .bind(&c.currency)
    .bind(&c.user_id)
    .bind(&c.refunded_amount)
    .bind(&c.payment_url)
    .bind(&c.gateway_trade_no)
    .bind(&c.failure_reason)
    .bind(&c.flagged)
    .bind(&c.payer_name)
    .bind(&c.payer_account)
    .bind(&c.last_version)
    .bind(&c.last_position)
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(Default)]
struct Cols {
    id: Vec<Uuid>,
    order_id: Vec<String>,
    payment_no: Vec<String>,
    payment_method: Vec<String>,
    amount: Vec<Decimal>,
    status: Vec<i32>,
    payment_time: Vec<Option<DateTime<Utc>>>,
    refund_time: Vec<Option<DateTime<Utc>>>,
    created_at: Vec<DateTime<Utc>>,
    updated_at: Vec<DateTime<Utc>>,
    currency: Vec<String>,
    user_id: Vec<String>,
    refunded_amount: Vec<Decimal>,
    payment_url: Vec<String>,
    gateway_trade_no: Vec<Option<String>>,
    failure_reason: Vec<Option<String>>,
    flagged: Vec<bool>,
    payer_name: Vec<Option<String>>,
    payer_account: Vec<Option<String>>,
    last_version: Vec<i32>,
    last_position: Vec<i64>,
}

type Masked = (Option<String>, Option<String>);

/// Opens the payer data of created events in the batch and masks it. A user whose key was
/// shredded (or never existed) reads `[erased]`.
async fn open_payers(
    conn: &mut PgConnection,
    ctx: &ProjectionContext,
    events: &[Decoded<'_>],
) -> Result<HashMap<Uuid, Masked>, sqlx::Error> {
    let sealed: Vec<(Uuid, &str, &SealedPayer)> = events
        .iter()
        .filter_map(|d| match &d.event {
            PaymentEvent::Created(c) => c
                .payer
                .as_ref()
                .map(|p| (d.stored.stream_id, c.user_id.as_str(), p)),
            _ => None,
        })
        .collect();
    let mut out = HashMap::new();
    if sealed.is_empty() {
        return Ok(out);
    }
    let users: Vec<&str> = sealed.iter().map(|s| s.1).collect();
    let keys: Vec<(String, Option<Vec<u8>>)> =
        sqlx::query_as("SELECT user_id, wrapped_key FROM user_keys WHERE user_id = ANY($1)")
            .bind(&users)
            .fetch_all(conn)
            .await?;
    let keys: HashMap<String, Option<Vec<u8>>> = keys.into_iter().collect();
    for (payment_id, user_id, sealed) in sealed {
        let opened = keys
            .get(user_id)
            .and_then(|k| k.as_deref())
            .and_then(|wrapped| payer::unwrap_key(&ctx.master_key, user_id, wrapped).ok())
            .and_then(|key| payer::open(&key, &payment_id.to_string(), sealed).ok());
        let masked = match opened {
            Some(p) => (
                p.name.as_deref().map(payer::mask_name),
                p.account.as_deref().map(payer::mask_account),
            ),
            None => (Some(ERASED.to_owned()), Some(ERASED.to_owned())),
        };
        out.insert(payment_id, masked);
    }
    Ok(out)
}
