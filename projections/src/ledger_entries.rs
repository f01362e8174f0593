//! `ledger_entries`: double-entry postings, one row per line, as `ledger_domain::postings`
//! decides them (the chart of accounts lives there). Keyed by (event, line), so re-applying
//! an event inserts nothing.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;

use crate::column;
use uuid::Uuid;

pub use ledger_domain::postings::{
    postings, GATEWAY_CLEARING, MERCHANT_REVENUE, REFUNDS_PAYABLE, SUSPENSE,
};

/// One line to insert.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub event_id: Uuid,
    pub line: i16,
    pub position: i64,
    pub payment_id: Uuid,
    pub account: &'static str,
    pub currency: &'static str,
    pub amount: Decimal,
    pub entry_type: &'static str,
    pub recorded_at: DateTime<Utc>,
}

/// The columns `Entry::copy` writes, in order.
pub const COLUMNS: &str =
    "event_id, line, position, payment_id, account, currency, amount, entry_type, recorded_at";

impl Entry {
    /// Appends this line to a binary COPY in `COLUMNS` order.
    pub fn copy(&self, c: &mut crate::copy::BinaryCopy<'_>) -> Result<(), sqlx::Error> {
        c.row(9);
        c.field(&self.event_id)?;
        c.field(&self.line)?;
        c.field(&self.position)?;
        c.field(&self.payment_id)?;
        c.field(&self.account)?;
        c.field(&self.currency)?;
        c.field(&self.amount)?;
        c.field(&self.entry_type)?;
        c.field(&self.recorded_at)
    }
}

pub async fn insert(
    conn: &mut PgConnection,
    table: &str,
    entries: &[Entry],
) -> Result<(), sqlx::Error> {
    if entries.is_empty() {
        return Ok(());
    }
    sqlx::query(&format!(
        "INSERT INTO {table} (event_id, line, position, payment_id, account, currency, amount, \
         entry_type, recorded_at) SELECT * FROM UNNEST($1::uuid[], $2::smallint[], $3::bigint[], \
         $4::uuid[], $5::text[], $6::text[], $7::numeric[], $8::text[], $9::timestamptz[]) \
         ON CONFLICT DO NOTHING"
    ))
    .bind(column(entries, |e| e.event_id))
    .bind(column(entries, |e| e.line))
    .bind(column(entries, |e| e.position))
    .bind(column(entries, |e| e.payment_id))
    .bind(column(entries, |e| e.account))
    .bind(column(entries, |e| e.currency))
    .bind(column(entries, |e| e.amount))
    .bind(column(entries, |e| e.entry_type))
    .bind(column(entries, |e| e.recorded_at))
    .execute(conn)
    .await?;
    Ok(())
}
