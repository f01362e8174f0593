//! Queries the API serves from the read tables, and the views they return.
//!
//! Each query is one statement, so it sees one snapshot: a detail never mixes a payment row
//! from before a projector commit with callback rows from after it. A detail is read back into
//! the payment's view and shown through `PaymentDetail::from_view`, the same conversion
//! `as_of` uses on a fold of the log.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use ledger_domain::money::format_amount;
use ledger_domain::view::{self, At, PaymentView};
use ledger_domain::{CallbackStatus, Currency, NotifyOutcome, PaymentMethod, PaymentStatus};
use ledger_store::event::format_time;
use ledger_store::{StoreError, StoredEvent};

use crate::payments::{Masked, PaymentRow};
use crate::refunds::RefundRow;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct CallbackView {
    pub id: Uuid,
    pub callback_no: String,
    /// The gateway that sent it (callback numbers are unique per gateway).
    pub gateway: String,
    pub status: String,
    pub created_at: String,
    pub outcome: String,
    pub amount: String,
    pub gateway_trade_no: String,
    pub refund_no: Option<String>,
    pub reason: Option<String>,
    pub flagged_for_refund: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct RefundView {
    pub id: Uuid,
    pub refund_no: String,
    pub amount: String,
    pub reason: String,
    pub status: String,
    pub created_at: String,
    pub updated_at: String,
    pub failure_reason: Option<String>,
    /// The part of the amount that returns flagged money (held in `suspense`).
    pub from_suspense: String,
    /// Confirmed by the gateway after the ledger had recorded it as failed.
    pub flagged: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct PayerView {
    pub name: Option<String>,
    pub account: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct PaymentDetail {
    pub id: Uuid,
    pub order_no: String,
    pub payment_no: String,
    pub payment_method: String,
    pub amount: String,
    pub currency: String,
    pub refunded_amount: String,
    /// Money still refundable: paid (and flagged) money minus refunds succeeded or in flight.
    pub refundable_amount: String,
    pub status: String,
    pub payment_time: Option<String>,
    pub refund_time: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub user_id: String,
    pub payment_url: String,
    pub return_url: Option<String>,
    /// The merchant whose bound key created it, if any.
    pub merchant: Option<String>,
    pub failure_reason: Option<String>,
    pub flagged_for_refund: bool,
    /// Why it is flagged: `success_after_failure`, `duplicate_charge`, `amount_mismatch`,
    /// `refund_confirmed_after_failure`.
    pub flag_reason: Option<String>,
    /// Money the gateway reported that the ledger did not accept as the payment.
    pub flagged_amount: String,
    pub payer: Option<PayerView>,
    pub callbacks: Vec<CallbackView>,
    pub refunds: Vec<RefundView>,
    /// Log position of the last event applied to this payment.
    #[serde(skip)]
    pub last_position: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ListItem {
    pub id: Uuid,
    pub order_no: String,
    pub payment_no: String,
    pub payment_method: String,
    pub amount: String,
    pub currency: String,
    pub status: String,
    pub payment_time: Option<String>,
    pub created_at: String,
    pub refunded_amount: String,
    pub flagged_for_refund: bool,
    pub user_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ListPage {
    pub total: i64,
    pub page: u32,
    pub size: u32,
    pub list: Vec<ListItem>,
    /// The cursor of the next page (`after=`), when this page is full.
    pub next_after: Option<String>,
}

/// Filters of `GET /payments` (already validated by the API).
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub order_no: Option<String>,
    pub payment_no: Option<String>,
    pub user_id: Option<String>,
    /// Only this merchant's payments (a client key bound to a merchant reads these).
    pub merchant: Option<String>,
    pub status: Option<PaymentStatus>,
    pub flagged: Option<bool>,
    pub start_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
    pub page: u32,
    pub size: u32,
    /// Keyset paging: only payments after this one in the list's order (newest first).
    pub after: Option<Cursor>,
}

/// A position in a list (newest first): the last item's creation time and id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

impl Cursor {
    /// `{microseconds since the epoch}_{id}`: opaque to clients, readable in logs.
    pub fn encode(&self) -> String {
        format!(
            "{}_{}",
            self.created_at.timestamp_micros(),
            self.id.simple()
        )
    }

    /// A time outside years 1–9999 is clamped to them: every payment lies within, so the
    /// page is the same, and PostgreSQL cannot compare a timestamp beyond its own range.
    pub fn decode(text: &str) -> Option<Cursor> {
        const FIRST: i64 = -62_135_596_800_000_000; // 0001-01-01T00:00:00Z
        const LAST: i64 = 253_402_300_799_999_999; // 9999-12-31T23:59:59.999999Z
        let (micros, id) = text.split_once('_')?;
        let micros: i64 = micros.parse().ok()?;
        Some(Cursor {
            created_at: DateTime::from_timestamp_micros(micros.clamp(FIRST, LAST))?,
            id: Uuid::try_parse(id).ok()?,
        })
    }
}

/// What a list filter looks at, of one payment: enough to tell whether a change to the
/// payment can change a cached page of a list.
#[derive(Debug, Clone, PartialEq)]
pub struct RowFacts {
    pub id: Uuid,
    pub order_no: String,
    pub payment_no: String,
    pub user_id: String,
    pub merchant: Option<String>,
    pub status: PaymentStatus,
    pub flagged: bool,
    pub created_at: DateTime<Utc>,
}

impl RowFacts {
    pub fn of(view: &PaymentView) -> RowFacts {
        let p = &view.payment;
        RowFacts {
            id: p.id,
            order_no: p.order_id.clone(),
            payment_no: p.payment_no.clone(),
            user_id: p.user_id.clone(),
            merchant: p.merchant.clone(),
            status: p.status,
            flagged: p.flagged_for_refund,
            created_at: view.created_at,
        }
    }
}

/// One payment a batch changed, as lists saw it before and see it after.
#[derive(Debug, Clone, PartialEq)]
pub struct ListChange {
    pub before: Option<RowFacts>,
    pub after: RowFacts,
}

impl ListFilter {
    /// Whether the payment belongs to this filter's list (ignoring paging).
    pub fn matches(&self, r: &RowFacts) -> bool {
        self.order_no.as_ref().is_none_or(|v| *v == r.order_no)
            && self.payment_no.as_ref().is_none_or(|v| *v == r.payment_no)
            && self.user_id.as_ref().is_none_or(|v| *v == r.user_id)
            && self
                .merchant
                .as_ref()
                .is_none_or(|v| Some(v) == r.merchant.as_ref())
            && self.status.is_none_or(|s| s == r.status)
            && self.flagged.is_none_or(|f| f == r.flagged)
            && self.start_time.is_none_or(|t| r.created_at >= t)
            && self.end_time.is_none_or(|t| r.created_at < t)
    }

    /// Whether a change can alter any page of this list: the payment was or is in it (its
    /// row, the total and the positions of others may change). A change to a payment that
    /// is in the list neither before nor after leaves every page as it was.
    pub fn affected_by(&self, c: &ListChange) -> bool {
        self.matches(&c.after) || c.before.as_ref().is_some_and(|b| self.matches(b))
    }

    /// A stable cache key for the filter.
    pub fn cache_key(&self) -> String {
        format!(
            "payment:list:{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}",
            self.order_no.as_deref().unwrap_or(""),
            self.payment_no.as_deref().unwrap_or(""),
            self.user_id.as_deref().unwrap_or(""),
            self.merchant.as_deref().unwrap_or(""),
            self.status.map(|s| s.code()).unwrap_or(-1),
            match self.flagged {
                None => "",
                Some(true) => "f",
                Some(false) => "n",
            },
            self.start_time.map(format_time).unwrap_or_default(),
            self.end_time.map(format_time).unwrap_or_default(),
            self.page,
            self.size,
            self.after.map(|c| c.encode()).unwrap_or_default()
        )
    }
}

fn amount_text(amount: Decimal, currency: &str) -> String {
    match Currency::from_code(currency) {
        Some(c) => format_amount(amount, c),
        None => amount.to_string(),
    }
}

fn status_name(code: i32) -> String {
    PaymentStatus::from_code(code as i16)
        .map(|s| s.name())
        .unwrap_or("unknown")
        .to_owned()
}

impl PaymentDetail {
    /// What a detail shows of a view: the one conversion from the fold to the API's answer,
    /// used for the read tables and for `as_of` alike.
    pub fn from_view(view: &PaymentView, payer: Option<PayerView>) -> PaymentDetail {
        let p = &view.payment;
        let c = p.currency();
        PaymentDetail {
            id: p.id,
            order_no: p.order_id.clone(),
            payment_no: p.payment_no.clone(),
            payment_method: p.method.name().to_owned(),
            amount: format_amount(p.amount.amount(), c),
            currency: c.code().to_owned(),
            refunded_amount: format_amount(p.refunded_amount(), c),
            refundable_amount: format_amount(p.refundable_amount().max(Decimal::ZERO), c),
            status: p.status.name().to_owned(),
            payment_time: p.paid_at.map(format_time),
            refund_time: view.refund_time.map(format_time),
            created_at: format_time(view.created_at),
            updated_at: format_time(view.updated_at),
            user_id: p.user_id.clone(),
            payment_url: p.payment_url.clone(),
            return_url: p.return_url.clone(),
            merchant: p.merchant.clone(),
            failure_reason: p.failure_reason.clone(),
            flagged_for_refund: p.flagged_for_refund,
            flag_reason: p.flag_reason.clone(),
            flagged_amount: format_amount(p.flagged_amount, c),
            payer,
            callbacks: view
                .callbacks
                .iter()
                .map(|cb| CallbackView {
                    id: cb.id,
                    callback_no: cb.callback_no.clone(),
                    gateway: cb.gateway.name().to_owned(),
                    status: cb.status.name().to_owned(),
                    created_at: format_time(cb.created_at),
                    outcome: crate::callbacks::outcome_name(cb.outcome).to_owned(),
                    amount: format_amount(cb.amount, c),
                    gateway_trade_no: cb.gateway_trade_no.clone(),
                    refund_no: cb.refund_no.clone(),
                    reason: cb.reason.clone(),
                    flagged_for_refund: cb.flagged_for_refund,
                })
                .collect(),
            refunds: view::refunds(view)
                .map(|(r, t)| RefundView {
                    id: r.id,
                    refund_no: r.refund_no.clone(),
                    amount: format_amount(r.amount, c),
                    reason: r.reason.clone(),
                    status: r.status.name().to_owned(),
                    created_at: format_time(t.created_at),
                    updated_at: format_time(t.updated_at),
                    failure_reason: r.failure_reason.clone(),
                    from_suspense: format_amount(r.from_suspense, c),
                    flagged: r.late,
                })
                .collect(),
            last_position: view.position,
        }
    }
}

fn payer_view((name, account): Masked) -> Option<PayerView> {
    match (name, account) {
        (None, None) => None,
        (name, account) => Some(PayerView { name, account }),
    }
}

#[derive(sqlx::FromRow)]
struct DetailRow {
    #[sqlx(flatten)]
    payment: PaymentRow,
    callbacks: sqlx::types::Json<Vec<CallbackJson>>,
    refunds: sqlx::types::Json<Vec<RefundJson>>,
}

#[derive(Deserialize)]
struct CallbackJson {
    id: Uuid,
    callback_no: String,
    gateway: String,
    status: i16,
    created_at: DateTime<Utc>,
    outcome: String,
    amount: Decimal,
    gateway_trade_no: String,
    refund_no: Option<String>,
    reason: Option<String>,
    flagged_for_refund: bool,
    position: i64,
}

impl CallbackJson {
    fn into_view(self, method: PaymentMethod) -> Option<view::CallbackView> {
        Some(view::CallbackView {
            id: self.id,
            callback_no: self.callback_no,
            gateway: PaymentMethod::parse(&self.gateway).unwrap_or(method),
            status: CallbackStatus::from_code(self.status)?,
            outcome: match self.outcome.as_str() {
                "success" => NotifyOutcome::Success,
                _ => NotifyOutcome::Failed,
            },
            amount: self.amount,
            gateway_trade_no: self.gateway_trade_no,
            refund_no: self.refund_no,
            reason: self.reason,
            flagged_for_refund: self.flagged_for_refund,
            created_at: self.created_at,
            position: self.position,
        })
    }
}

#[derive(Deserialize)]
struct RefundJson {
    id: Uuid,
    refund_no: String,
    amount: Decimal,
    reason: Option<String>,
    status: i32,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    failure_reason: Option<String>,
    last_position: i64,
    from_suspense: Decimal,
    late: bool,
}

/// A payment with its callbacks and refunds, or None. One statement, so one snapshot.
pub async fn detail(pool: &PgPool, id: Uuid) -> Result<Option<PaymentDetail>, sqlx::Error> {
    let row: Option<DetailRow> = sqlx::query_as(&format!(
        "SELECT {columns}, \
         COALESCE((SELECT json_agg(json_build_object('id', c.id, 'callback_no', c.callback_no, \
            'gateway', c.gateway, 'status', c.status, 'created_at', c.created_at, \
            'outcome', c.outcome, 'amount', c.amount::text, \
            'gateway_trade_no', c.gateway_trade_no, 'refund_no', c.refund_no, \
            'reason', c.reason, 'flagged_for_refund', c.flagged_for_refund, \
            'position', c.position) ORDER BY c.position) \
            FROM payment_callbacks c WHERE c.payment_id = p.id), '[]') AS callbacks, \
         COALESCE((SELECT json_agg(json_build_object('id', r.id, 'refund_no', r.refund_no, \
            'amount', r.amount::text, 'reason', r.reason, 'status', r.status, \
            'created_at', r.created_at, 'updated_at', r.updated_at, \
            'failure_reason', r.failure_reason, 'last_position', r.last_position, \
            'from_suspense', r.from_suspense::text, 'late', r.late) \
            ORDER BY r.created_at, r.id) \
            FROM payment_refunds r WHERE r.payment_id = p.id), '[]') AS refunds \
         FROM payments p WHERE p.id = $1",
        columns = crate::payments::COLUMNS
            .split(", ")
            .map(|c| format!("p.{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ")
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let currency = row.payment.currency.clone();
    let refunds = row
        .refunds
        .0
        .into_iter()
        .map(|r| RefundRow {
            id: r.id,
            payment_id: id,
            refund_no: r.refund_no,
            amount: r.amount,
            reason: r.reason,
            status: r.status,
            created_at: r.created_at,
            updated_at: r.updated_at,
            currency: currency.clone(),
            failure_reason: r.failure_reason,
            last_position: r.last_position,
            from_suspense: r.from_suspense,
            late: r.late,
        })
        .collect();
    let (mut view, masked) = row
        .payment
        .into_view(refunds)
        .map_err(sqlx::Error::Protocol)?;
    let method = view.payment.method;
    view.callbacks = row
        .callbacks
        .0
        .into_iter()
        .filter_map(|c| c.into_view(method))
        .collect();
    Ok(Some(PaymentDetail::from_view(&view, payer_view(masked))))
}

#[derive(sqlx::FromRow)]
struct ListRow {
    id: Uuid,
    order_id: String,
    payment_no: String,
    payment_method: String,
    amount: Decimal,
    currency: String,
    status: i32,
    payment_time: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    refunded_amount: Decimal,
    flagged_for_refund: bool,
    user_id: String,
    total: i64,
}

/// One page of payments, newest first, with the total matching the filter.
pub async fn list(pool: &PgPool, f: &ListFilter) -> Result<ListPage, sqlx::Error> {
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
        "SELECT id, order_id, payment_no, payment_method, amount, currency, status, payment_time, \
         created_at, refunded_amount, flagged_for_refund, user_id, COUNT(*) OVER () AS total \
         FROM payments WHERE true",
    );
    push_filters(&mut q, f);
    if let Some(c) = f.after {
        q.push(" AND (created_at, id) < (")
            .push_bind(c.created_at)
            .push(", ")
            .push_bind(c.id)
            .push(")");
    }
    q.push(" ORDER BY created_at DESC, id DESC LIMIT ")
        .push_bind(f.size as i64)
        .push(" OFFSET ")
        .push_bind((f.page as i64 - 1) * f.size as i64);
    let rows: Vec<ListRow> = q.build_query_as().fetch_all(pool).await?;
    let total = match rows.first() {
        // After a cursor the window counts only what follows it; the total is the filter's.
        Some(r) if f.after.is_none() => r.total,
        // An empty page past the end still reports the true total.
        None if f.page == 1 && f.after.is_none() => 0,
        _ => count(pool, f).await?,
    };
    let next_after = (rows.len() == f.size as usize)
        .then(|| rows.last())
        .flatten()
        .map(|r| {
            Cursor {
                created_at: r.created_at,
                id: r.id,
            }
            .encode()
        });
    Ok(ListPage {
        total,
        page: f.page,
        size: f.size,
        list: rows
            .into_iter()
            .map(|r| ListItem {
                id: r.id,
                order_no: r.order_id,
                payment_no: r.payment_no,
                payment_method: r.payment_method,
                amount: amount_text(r.amount, &r.currency),
                refunded_amount: amount_text(r.refunded_amount, &r.currency),
                currency: r.currency,
                status: status_name(r.status),
                payment_time: r.payment_time.map(format_time),
                created_at: format_time(r.created_at),
                flagged_for_refund: r.flagged_for_refund,
                user_id: r.user_id,
            })
            .collect(),
        next_after,
    })
}

fn push_filters(q: &mut QueryBuilder<'_, Postgres>, f: &ListFilter) {
    if let Some(v) = &f.order_no {
        q.push(" AND order_id = ").push_bind(v.clone());
    }
    if let Some(v) = &f.payment_no {
        q.push(" AND payment_no = ").push_bind(v.clone());
    }
    if let Some(v) = &f.user_id {
        q.push(" AND user_id = ").push_bind(v.clone());
    }
    if let Some(v) = &f.merchant {
        q.push(" AND merchant = ").push_bind(v.clone());
    }
    if let Some(s) = f.status {
        q.push(" AND status = ").push_bind(s.code() as i32);
    }
    if let Some(flagged) = f.flagged {
        q.push(" AND flagged_for_refund = ").push_bind(flagged);
    }
    if let Some(t) = f.start_time {
        q.push(" AND created_at >= ").push_bind(t);
    }
    if let Some(t) = f.end_time {
        q.push(" AND created_at < ").push_bind(t);
    }
}

async fn count(pool: &PgPool, f: &ListFilter) -> Result<i64, sqlx::Error> {
    let mut q: QueryBuilder<Postgres> =
        QueryBuilder::new("SELECT COUNT(*) FROM payments WHERE true");
    push_filters(&mut q, f);
    q.build_query_scalar().fetch_one(pool).await
}

/// The payment a gateway notification names.
pub async fn payment_by_no(pool: &PgPool, payment_no: &str) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM payments WHERE payment_no = $1")
        .bind(payment_no)
        .fetch_optional(pool)
        .await
}

/// The detail as it stood after `events` (a prefix of one payment's stream): the one fold, in
/// memory. Used for `?as_of=`. None when the prefix is empty.
pub fn detail_from_events(
    events: &[StoredEvent],
    payer: Option<PayerView>,
) -> Result<Option<PaymentDetail>, StoreError> {
    let decoded = ledger_store::decode_all(events)?;
    let view = view::fold(decoded.iter().zip(events).map(|(event, e)| {
        (
            event,
            At {
                recorded_at: e.recorded_at,
                version: e.version,
                position: e.position,
            },
        )
    }));
    Ok(view.map(|v| PaymentDetail::from_view(&v, payer)))
}
