//! `payment_refunds`: one row per refund (status 0 processing, 1 success, 2 failed), written
//! from the payment's view. Rows carry the log position they last applied, so re-applying an
//! event changes nothing.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;

use crate::column;
use uuid::Uuid;

use ledger_domain::payment::Refund;
use ledger_domain::view::{self, PaymentView, RefundTimes};
use ledger_domain::RefundStatus;

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct RefundRow {
    pub id: Uuid,
    pub payment_id: Uuid,
    pub refund_no: String,
    pub amount: Decimal,
    pub reason: Option<String>,
    pub status: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub currency: String,
    pub failure_reason: Option<String>,
    pub last_position: i64,
    pub from_suspense: Decimal,
    pub late: bool,
}

pub const COLUMNS: &str = "id, payment_id, refund_no, amount, reason, status, created_at, \
    updated_at, currency, failure_reason, last_position, from_suspense, late";

impl RefundRow {
    /// The rows of every refund of `view`.
    pub fn from_view(view: &PaymentView) -> impl Iterator<Item = RefundRow> + '_ {
        view::refunds(view).map(move |(r, t)| RefundRow {
            id: r.id,
            payment_id: view.id(),
            refund_no: r.refund_no.clone(),
            amount: r.amount,
            reason: Some(r.reason.clone()),
            status: r.status.code() as i32,
            created_at: t.created_at,
            updated_at: t.updated_at,
            currency: view.currency().code().to_owned(),
            failure_reason: r.failure_reason.clone(),
            last_position: t.position,
            from_suspense: r.from_suspense,
            late: r.late,
        })
    }

    /// The refund's state and times, as the view holds them.
    pub fn into_parts(self) -> Result<(Refund, RefundTimes), String> {
        let status = RefundStatus::from_code(self.status as i16)
            .ok_or_else(|| format!("payment_refunds row {}: status code", self.id))?;
        Ok((
            Refund {
                id: self.id,
                refund_no: self.refund_no,
                amount: self.amount,
                reason: self.reason.unwrap_or_default(),
                status,
                from_suspense: self.from_suspense,
                failure_reason: self.failure_reason,
                late: self.late,
            },
            RefundTimes {
                id: self.id,
                created_at: self.created_at,
                updated_at: self.updated_at,
                position: self.last_position,
            },
        ))
    }
}

impl RefundRow {
    /// Appends this row to a binary COPY in `COLUMNS` order.
    pub fn copy(&self, c: &mut crate::copy::BinaryCopy<'_>) -> Result<(), sqlx::Error> {
        c.row(13);
        c.field(&self.id)?;
        c.field(&self.payment_id)?;
        c.field(&self.refund_no)?;
        c.field(&self.amount)?;
        c.field(&self.reason)?;
        c.field(&self.status)?;
        c.field(&self.created_at)?;
        c.field(&self.updated_at)?;
        c.field(&self.currency)?;
        c.field(&self.failure_reason)?;
        c.field(&self.last_position)?;
        c.field(&self.from_suspense)?;
        c.field(&self.late)
    }
}

/// The refunds of the given payments, in the order they were requested.
pub async fn load(
    conn: &mut PgConnection,
    table: &str,
    payment_ids: &[Uuid],
) -> Result<Vec<RefundRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM {table} WHERE payment_id = ANY($1) ORDER BY created_at, id"
    ))
    .bind(payment_ids)
    .fetch_all(conn)
    .await
}

/// Writes rows; a row not newer than the stored one (by log position) changes nothing.
pub async fn upsert(
    conn: &mut PgConnection,
    table: &str,
    rows: &[RefundRow],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(&format!(
        "INSERT INTO {table} ({COLUMNS}) \
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::numeric[], $5::text[], \
         $6::int[], $7::timestamptz[], $8::timestamptz[], $9::text[], $10::text[], $11::bigint[], \
         $12::numeric[], $13::bool[]) \
         ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, updated_at = EXCLUDED.updated_at, \
         failure_reason = EXCLUDED.failure_reason, last_position = EXCLUDED.last_position, \
         late = EXCLUDED.late \
         WHERE {table}.last_position < EXCLUDED.last_position"
    ))
    .bind(column(rows, |r| r.id))
    .bind(column(rows, |r| r.payment_id))
    .bind(column(rows, |r| r.refund_no.clone()))
    .bind(column(rows, |r| r.amount))
    .bind(column(rows, |r| r.reason.clone()))
    .bind(column(rows, |r| r.status))
    .bind(column(rows, |r| r.created_at))
    .bind(column(rows, |r| r.updated_at))
    .bind(column(rows, |r| r.currency.clone()))
    .bind(column(rows, |r| r.failure_reason.clone()))
    .bind(column(rows, |r| r.last_position))
    .bind(column(rows, |r| r.from_suspense))
    .bind(column(rows, |r| r.late))
    .execute(conn)
    .await?;
    Ok(())
}
