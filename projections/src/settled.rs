//! What the ledger holds as settled, for reconciliation against a gateway's settlement file
//! (`ledger reconcile`, the console's upload): payments and refunds with their status and
//! settlement time.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgPool;

use ledger_domain::{PaymentStatus, RefundStatus};

/// A payment as the ledger holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerPayment {
    pub payment_no: String,
    pub amount: Decimal,
    pub status: PaymentStatus,
    pub paid_at: Option<DateTime<Utc>>,
}

/// A refund as the ledger holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerRefund {
    pub refund_no: String,
    pub payment_no: String,
    pub amount: Decimal,
    pub status: RefundStatus,
    pub updated_at: DateTime<Utc>,
}

/// payment_no, amount, status, payment_time.
type PaymentRow = (String, Decimal, i32, Option<DateTime<Utc>>);
/// refund_no, payment_no, amount, status, updated_at.
type RefundRow = (String, String, Decimal, i32, DateTime<Utc>);

fn payments_of(rows: Vec<PaymentRow>) -> Vec<LedgerPayment> {
    rows.into_iter()
        .filter_map(|(payment_no, amount, status, paid_at)| {
            Some(LedgerPayment {
                payment_no,
                amount,
                status: PaymentStatus::from_code(status as i16)?,
                paid_at,
            })
        })
        .collect()
}

fn refunds_of(rows: Vec<RefundRow>) -> Vec<LedgerRefund> {
    rows.into_iter()
        .filter_map(|(refund_no, payment_no, amount, status, updated_at)| {
            Some(LedgerRefund {
                refund_no,
                payment_no,
                amount,
                status: RefundStatus::from_code(status as i16)?,
                updated_at,
            })
        })
        .collect()
}

/// The ledger's payments and refunds, optionally bounded to a period (payment time, refund
/// confirmation time); unsettled ones are always included, so a file line naming one is a
/// status mismatch rather than missing.
pub async fn load(
    pool: &PgPool,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
) -> Result<(Vec<LedgerPayment>, Vec<LedgerRefund>), sqlx::Error> {
    let rows: Vec<PaymentRow> = sqlx::query_as(
        "SELECT payment_no, amount, status, payment_time FROM payments \
         WHERE payment_time IS NULL \
            OR (($1::timestamptz IS NULL OR payment_time >= $1) \
            AND ($2::timestamptz IS NULL OR payment_time < $2))",
    )
    .bind(start)
    .bind(end)
    .fetch_all(pool)
    .await?;
    let payments = payments_of(rows);
    let rows: Vec<RefundRow> = sqlx::query_as(
        "SELECT r.refund_no, p.payment_no, r.amount, r.status, r.updated_at \
         FROM payment_refunds r JOIN payments p ON p.id = r.payment_id \
         WHERE r.status <> 1 \
            OR (($1::timestamptz IS NULL OR r.updated_at >= $1) \
            AND ($2::timestamptz IS NULL OR r.updated_at < $2))",
    )
    .bind(start)
    .bind(end)
    .fetch_all(pool)
    .await?;
    let refunds = refunds_of(rows);
    Ok((payments, refunds))
}

/// The payments with these payment_nos and all their refunds, whatever their time: what one
/// run of `ledger demo` created, reconciled on a ledger that also holds other traffic.
pub async fn load_named(
    pool: &PgPool,
    payment_nos: &[String],
) -> Result<(Vec<LedgerPayment>, Vec<LedgerRefund>), sqlx::Error> {
    let rows: Vec<PaymentRow> = sqlx::query_as(
        "SELECT payment_no, amount, status, payment_time FROM payments \
         WHERE payment_no = ANY($1)",
    )
    .bind(payment_nos)
    .fetch_all(pool)
    .await?;
    let payments = payments_of(rows);
    let rows: Vec<RefundRow> = sqlx::query_as(
        "SELECT r.refund_no, p.payment_no, r.amount, r.status, r.updated_at \
         FROM payment_refunds r JOIN payments p ON p.id = r.payment_id \
         WHERE p.payment_no = ANY($1)",
    )
    .bind(payment_nos)
    .fetch_all(pool)
    .await?;
    let refunds = refunds_of(rows);
    Ok((payments, refunds))
}
