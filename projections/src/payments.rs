//! `payments`: one row per payment, status codes as in the seed (0 pending, 1 success,
//! 2 failed, 3 refunded). The row is a serialisation of the payment's `PaymentView` (the one
//! fold, `ledger_domain::view`); it also keeps the payer data masked at creation.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use ledger_domain::payment::Payment;
use ledger_domain::view::PaymentView;
use ledger_domain::{Currency, Money, PaymentMethod, PaymentStatus};
use ledger_store::sealing::{self as payer, SealedPayer, ERASED};

use crate::refunds::RefundRow;
use crate::{Decoded, ProjectionContext};

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
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
    pub return_url: Option<String>,
    pub merchant: Option<String>,
    pub gateway_trade_no: Option<String>,
    pub failure_reason: Option<String>,
    pub flagged_for_refund: bool,
    pub flag_reason: Option<String>,
    pub flagged_amount: Decimal,
    pub payer_name: Option<String>,
    pub payer_account: Option<String>,
    pub last_version: i32,
    pub last_position: i64,
}

pub const COLUMNS: &str =
    "id, order_id, payment_no, payment_method, amount, status, payment_time, \
    refund_time, created_at, updated_at, currency, user_id, refunded_amount, payment_url, \
    return_url, merchant, gateway_trade_no, failure_reason, flagged_for_refund, flag_reason, \
    flagged_amount, payer_name, payer_account, last_version, last_position";

/// Masked payer fields as the read side shows them.
pub type Masked = (Option<String>, Option<String>);

impl PaymentRow {
    /// The row that shows `view`, with the payer data masked when the payment was created.
    pub fn from_view(view: &PaymentView, masked: &Masked) -> PaymentRow {
        let p = &view.payment;
        PaymentRow {
            id: p.id,
            order_id: p.order_id.clone(),
            payment_no: p.payment_no.clone(),
            payment_method: p.method.name().to_owned(),
            amount: p.amount.amount(),
            status: p.status.code() as i32,
            payment_time: p.paid_at,
            refund_time: view.refund_time,
            created_at: view.created_at,
            updated_at: view.updated_at,
            currency: p.currency().code().to_owned(),
            user_id: p.user_id.clone(),
            refunded_amount: p.refunded_amount(),
            payment_url: p.payment_url.clone(),
            return_url: p.return_url.clone(),
            merchant: p.merchant.clone(),
            gateway_trade_no: p.gateway_trade_no.clone(),
            failure_reason: p.failure_reason.clone(),
            flagged_for_refund: p.flagged_for_refund,
            flag_reason: p.flag_reason.clone(),
            flagged_amount: p.flagged_amount,
            payer_name: masked.0.clone(),
            payer_account: masked.1.clone(),
            last_version: view.version,
            last_position: view.position,
        }
    }

    /// The view this row (with its refunds) shows, to continue folding from. Callbacks are not
    /// part of it: the fold only ever adds them. A row that cannot be read back is a corrupt
    /// read table, reported rather than folded on.
    pub fn into_view(self, refunds: Vec<RefundRow>) -> Result<(PaymentView, Masked), String> {
        let bad = |what: &str| format!("payments row {}: {what}", self.id);
        let currency = Currency::from_code(&self.currency).ok_or_else(|| bad("currency"))?;
        let amount = Money::new(self.amount, currency).map_err(|_| bad("amount"))?;
        let method = PaymentMethod::parse(&self.payment_method).ok_or_else(|| bad("method"))?;
        let status =
            PaymentStatus::from_code(self.status as i16).ok_or_else(|| bad("status code"))?;
        let mut refund_times = Vec::with_capacity(refunds.len());
        let mut states = Vec::with_capacity(refunds.len());
        for r in refunds {
            let (state, times) = r.into_parts()?;
            states.push(state);
            refund_times.push(times);
        }
        let payment = Payment {
            id: self.id,
            version: self.last_version as u32,
            payment_no: self.payment_no,
            order_id: self.order_id,
            user_id: self.user_id,
            amount,
            method,
            payment_url: self.payment_url,
            return_url: self.return_url,
            merchant: self.merchant,
            status,
            paid_at: self.payment_time,
            gateway_trade_no: self.gateway_trade_no,
            failure_reason: self.failure_reason,
            flagged_for_refund: self.flagged_for_refund,
            flag_reason: self.flag_reason,
            flagged_amount: self.flagged_amount,
            callbacks: Default::default(),
            refunds: states,
        };
        let view = PaymentView {
            payment,
            created_at: self.created_at,
            updated_at: self.updated_at,
            refund_time: self.refund_time,
            payer: None,
            callbacks: Vec::new(),
            refund_times,
            version: self.last_version,
            position: self.last_position,
        };
        Ok((view, (self.payer_name, self.payer_account)))
    }
}

impl PaymentRow {
    /// Appends this row to a binary COPY in `COLUMNS` order.
    pub fn copy(&self, c: &mut crate::copy::BinaryCopy<'_>) -> Result<(), sqlx::Error> {
        c.row(25);
        c.field(&self.id)?;
        c.field(&self.order_id)?;
        c.field(&self.payment_no)?;
        c.field(&self.payment_method)?;
        c.field(&self.amount)?;
        c.field(&self.status)?;
        c.field(&self.payment_time)?;
        c.field(&self.refund_time)?;
        c.field(&self.created_at)?;
        c.field(&self.updated_at)?;
        c.field(&self.currency)?;
        c.field(&self.user_id)?;
        c.field(&self.refunded_amount)?;
        c.field(&self.payment_url)?;
        c.field(&self.return_url)?;
        c.field(&self.merchant)?;
        c.field(&self.gateway_trade_no)?;
        c.field(&self.failure_reason)?;
        c.field(&self.flagged_for_refund)?;
        c.field(&self.flag_reason)?;
        c.field(&self.flagged_amount)?;
        c.field(&self.payer_name)?;
        c.field(&self.payer_account)?;
        c.field(&self.last_version)?;
        c.field(&self.last_position)
    }
}

/// Rows of the given payments.
pub async fn load(
    conn: &mut PgConnection,
    table: &str,
    ids: &[Uuid],
) -> Result<Vec<PaymentRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM {table} WHERE id = ANY($1)"))
        .bind(ids)
        .fetch_all(conn)
        .await
}

/// Writes rows; a row older than the stored one (by stream version) changes nothing.
pub async fn upsert<'a>(
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
        c.return_url.push(r.return_url.clone());
        c.merchant.push(r.merchant.clone());
        c.gateway_trade_no.push(r.gateway_trade_no.clone());
        c.failure_reason.push(r.failure_reason.clone());
        c.flagged.push(r.flagged_for_refund);
        c.flag_reason.push(r.flag_reason.clone());
        c.flagged_amount.push(r.flagged_amount);
        c.payer_name.push(r.payer_name.clone());
        c.payer_account.push(r.payer_account.clone());
        c.last_version.push(r.last_version);
        c.last_position.push(r.last_position);
    }
    if c.id.is_empty() {
        return Ok(());
    }
    sqlx::query(&format!(
        "INSERT INTO {table} ({COLUMNS}) SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], \
         $4::text[], $5::numeric[], $6::int[], $7::timestamptz[], $8::timestamptz[], \
         $9::timestamptz[], $10::timestamptz[], $11::text[], $12::text[], $13::numeric[], \
         $14::text[], $15::text[], $16::text[], $17::text[], $18::text[], $19::bool[], \
         $20::text[], $21::numeric[], $22::text[], $23::text[], $24::int[], $25::bigint[]) \
         ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, \
         payment_time = EXCLUDED.payment_time, refund_time = EXCLUDED.refund_time, \
         updated_at = EXCLUDED.updated_at, refunded_amount = EXCLUDED.refunded_amount, \
         gateway_trade_no = EXCLUDED.gateway_trade_no, failure_reason = EXCLUDED.failure_reason, \
         flagged_for_refund = EXCLUDED.flagged_for_refund, flag_reason = EXCLUDED.flag_reason, \
         flagged_amount = EXCLUDED.flagged_amount, last_version = EXCLUDED.last_version, \
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
    .bind(&c.return_url)
    .bind(&c.merchant)
    .bind(&c.gateway_trade_no)
    .bind(&c.failure_reason)
    .bind(&c.flagged)
    .bind(&c.flag_reason)
    .bind(&c.flagged_amount)
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
    return_url: Vec<Option<String>>,
    merchant: Vec<Option<String>>,
    gateway_trade_no: Vec<Option<String>>,
    failure_reason: Vec<Option<String>>,
    flagged: Vec<bool>,
    flag_reason: Vec<Option<String>>,
    flagged_amount: Vec<Decimal>,
    payer_name: Vec<Option<String>>,
    payer_account: Vec<Option<String>>,
    last_version: Vec<i32>,
    last_position: Vec<i64>,
}

/// Opens the payer data of created events in the batch and masks it. A user whose key was
/// shredded (or never existed) reads `[erased]`.
pub async fn open_payers(
    conn: &mut PgConnection,
    ctx: &ProjectionContext,
    events: &[Decoded<'_>],
) -> Result<HashMap<Uuid, Masked>, sqlx::Error> {
    let sealed: Vec<(Uuid, &str, &SealedPayer)> = events
        .iter()
        .filter_map(|d| match &d.event {
            ledger_domain::PaymentEvent::Created(c) => c
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
    let keys = ledger_store::keyring::wrapped_keys(conn, &users).await?;
    for (payment_id, user_id, sealed) in sealed {
        let opened = keys
            .get(user_id)
            .and_then(|k| k.as_deref())
            .and_then(|wrapped| payer::unwrap_key(&ctx.master_key, user_id, wrapped).ok())
            .and_then(|key| payer::open(&key, &payment_id.to_string(), sealed).ok());
        out.insert(payment_id, mask(opened));
    }
    Ok(out)
}

/// The masks of opened payer data, or `[erased]` when it cannot be opened.
pub fn mask(opened: Option<ledger_store::sealing::Payer>) -> Masked {
    match opened {
        Some(p) => (
            p.name.as_deref().map(payer::mask_name),
            p.account.as_deref().map(payer::mask_account),
        ),
        None => (Some(ERASED.to_owned()), Some(ERASED.to_owned())),
    }
}
