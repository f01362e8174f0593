//! Queries the API serves from the read tables, and the views they return.
//!
//! Each query is one statement, so it sees one snapshot: a detail never mixes a payment row
//! from before a projector commit with callback rows from after it.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::domain::money::format_amount;
use crate::domain::{CallbackStatus, Currency, PaymentStatus, RefundStatus};
use crate::store::event::format_time;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct CallbackView {
    pub id: Uuid,
    pub callback_no: String,
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
    pub status: String,
    pub payment_time: Option<String>,
    pub refund_time: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub user_id: String,
    pub payment_url: String,
    pub failure_reason: Option<String>,
    pub flagged_for_refund: bool,
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
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ListPage {
    pub total: i64,
    pub page: u32,
    pub size: u32,
    pub list: Vec<ListItem>,
}

/// Filters of `GET /payments` (already validated by the API).
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub order_no: Option<String>,
    pub payment_no: Option<String>,
    pub user_id: Option<String>,
    pub status: Option<PaymentStatus>,
    pub start_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
    pub page: u32,
    pub size: u32,
}

impl ListFilter {
    /// A stable cache key for the filter.
    pub fn cache_key(&self) -> String {
        format!(
            "payment:list:{}|{}|{}|{}|{}|{}|{}|{}",
            self.order_no.as_deref().unwrap_or(""),
            self.payment_no.as_deref().unwrap_or(""),
            self.user_id.as_deref().unwrap_or(""),
            self.status.map(|s| s.code()).unwrap_or(-1),
            self.start_time.map(format_time).unwrap_or_default(),
            self.end_time.map(format_time).unwrap_or_default(),
            self.page,
            self.size
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

#[derive(sqlx::FromRow)]
struct DetailRow {
    id: Uuid,
    order_id: String,
    payment_no: String,
    payment_method: String,
    amount: Decimal,
    currency: String,
    refunded_amount: Decimal,
    status: i32,
    payment_time: Option<DateTime<Utc>>,
    refund_time: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    user_id: String,
    payment_url: String,
    failure_reason: Option<String>,
    flagged_for_refund: bool,
    payer_name: Option<String>,
    payer_account: Option<String>,
    last_position: i64,
    callbacks: sqlx::types::Json<Vec<CallbackJson>>,
    refunds: sqlx::types::Json<Vec<RefundJson>>,
}

#[derive(Deserialize)]
struct CallbackJson {
    id: Uuid,
    callback_no: String,
    status: i32,
    created_at: DateTime<Utc>,
    outcome: String,
    amount: Decimal,
    gateway_trade_no: String,
    refund_no: Option<String>,
    reason: Option<String>,
    flagged_for_refund: bool,
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
}

/// A payment with its callbacks and refunds, or None.
pub async fn detail(pool: &PgPool, id: Uuid) -> Result<Option<PaymentDetail>, sqlx::Error> {
    let row: Option<DetailRow> = sqlx::query_as(
        "SELECT p.id, p.order_id, p.payment_no, p.payment_method, p.amount, p.currency, \
         p.refunded_amount, p.status, p.payment_time, p.refund_time, p.created_at, p.updated_at, \
         p.user_id, p.payment_url, p.failure_reason, p.flagged_for_refund, p.payer_name, \
         p.payer_account, p.last_position, \
         COALESCE((SELECT json_agg(json_build_object('id', c.id, 'callback_no', c.callback_no, \
            'status', c.status, 'created_at', c.created_at, 'outcome', c.outcome, \
            'amount', c.amount::text, 'gateway_trade_no', c.gateway_trade_no, \
            'refund_no', c.refund_no, 'reason', c.reason, \
            'flagged_for_refund', c.flagged_for_refund) ORDER BY c.position) \
            FROM payment_callbacks c WHERE c.payment_id = p.id), '[]') AS callbacks, \
         COALESCE((SELECT json_agg(json_build_object('id', r.id, 'refund_no', r.refund_no, \
            'amount', r.amount::text, 'reason', r.reason, 'status', r.status, \
            'created_at', r.created_at, 'updated_at', r.updated_at, \
            'failure_reason', r.failure_reason) ORDER BY r.created_at, r.id) \
            FROM payment_refunds r WHERE r.payment_id = p.id), '[]') AS refunds \
         FROM payments p WHERE p.id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| {
        let payer = match (&r.payer_name, &r.payer_account) {
            (None, None) => None,
            (name, account) => Some(PayerView {
                name: name.clone(),
                account: account.clone(),
            }),
        };
        PaymentDetail {
            id: r.id,
            order_no: r.order_id,
            payment_no: r.payment_no,
            payment_method: r.payment_method,
            amount: amount_text(r.amount, &r.currency),
            refunded_amount: amount_text(r.refunded_amount, &r.currency),
            status: status_name(r.status),
            payment_time: r.payment_time.map(format_time),
            refund_time: r.refund_time.map(format_time),
            created_at: format_time(r.created_at),
            updated_at: format_time(r.updated_at),
            user_id: r.user_id,
            payment_url: r.payment_url,
            failure_reason: r.failure_reason,
            flagged_for_refund: r.flagged_for_refund,
            payer,
            callbacks: r
                .callbacks
                .0
                .into_iter()
                .map(|c| CallbackView {
                    id: c.id,
                    callback_no: c.callback_no,
                    status: CallbackStatus::from_code(c.status as i16)
                        .map(|s| s.name())
                        .unwrap_or("unknown")
                        .to_owned(),
                    created_at: format_time(c.created_at),
                    outcome: c.outcome,
                    amount: amount_text(c.amount, &r.currency),
                    gateway_trade_no: c.gateway_trade_no,
                    refund_no: c.refund_no,
                    reason: c.reason,
                    flagged_for_refund: c.flagged_for_refund,
                })
                .collect(),
            refunds: r
                .refunds
                .0
                .into_iter()
                .map(|f| RefundView {
                    id: f.id,
                    refund_no: f.refund_no,
                    amount: amount_text(f.amount, &r.currency),
                    reason: f.reason.unwrap_or_default(),
                    status: RefundStatus::from_code(f.status as i16)
                        .map(|s| s.name())
                        .unwrap_or("unknown")
                        .to_owned(),
                    created_at: format_time(f.created_at),
                    updated_at: format_time(f.updated_at),
                    failure_reason: f.failure_reason,
                })
                .collect(),
            currency: r.currency,
            last_position: r.last_position,
        }
    }))
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
    total: i64,
}

/// One page of payments, newest first, with the total matching the filter.
pub async fn list(pool: &PgPool, f: &ListFilter) -> Result<ListPage, sqlx::Error> {
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
        "SELECT id, order_id, payment_no, payment_method, amount, currency, status, payment_time, \
         created_at, COUNT(*) OVER () AS total FROM payments WHERE true",
    );
    push_filters(&mut q, f);
    q.push(" ORDER BY created_at DESC, id DESC LIMIT ")
        .push_bind(f.size as i64)
        .push(" OFFSET ")
        .push_bind((f.page as i64 - 1) * f.size as i64);
    let rows: Vec<ListRow> = q.build_query_as().fetch_all(pool).await?;
    let total = match rows.first() {
        Some(r) => r.total,
        // An empty page past the end still reports the true total.
        None if f.page > 1 => count(pool, f).await?,
        None => 0,
    };
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
                currency: r.currency,
                status: status_name(r.status),
                payment_time: r.payment_time.map(format_time),
                created_at: format_time(r.created_at),
            })
            .collect(),
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
    if let Some(s) = f.status {
        q.push(" AND status = ").push_bind(s.code() as i32);
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

/// The detail as it stood after `events` (a prefix of one payment's stream): the same fold the
/// projections do, in memory. Used for `?as_of=`. None when the prefix is empty.
pub fn detail_from_events(
    events: &[crate::store::StoredEvent],
    payer: Option<PayerView>,
) -> Result<Option<PaymentDetail>, crate::store::StoreError> {
    use crate::domain::events::PaymentEvent;
    let mut row: Option<super::payments::PaymentRow> = None;
    let mut callbacks: Vec<CallbackView> = Vec::new();
    let mut refunds: Vec<RefundView> = Vec::new();
    for e in events {
        let event = crate::service::decode(e)?;
        let at = e.recorded_at;
        match (&mut row, &event) {
            (None, PaymentEvent::Created(c)) => {
                row = Some(super::payments::PaymentRow {
                    id: e.stream_id,
                    order_id: c.order_id.clone(),
                    payment_no: c.payment_no.clone(),
                    payment_method: c.payment_method.name().to_owned(),
                    amount: c.amount,
                    status: PaymentStatus::Pending.code() as i32,
                    payment_time: None,
                    refund_time: None,
                    created_at: at,
                    updated_at: at,
                    currency: c.currency.code().to_owned(),
                    user_id: c.user_id.clone(),
                    refunded_amount: Decimal::ZERO,
                    payment_url: c.payment_url.clone(),
                    gateway_trade_no: None,
                    failure_reason: None,
                    flagged_for_refund: false,
                    payer_name: payer.as_ref().and_then(|p| p.name.clone()),
                    payer_account: payer.as_ref().and_then(|p| p.account.clone()),
                    last_version: e.version,
                    last_position: e.position,
                });
                continue;
            }
            (None, _) => continue,
            (Some(r), ev) => {
                super::payments::evolve_row(r, ev, at);
                r.updated_at = at;
                r.last_version = e.version;
                r.last_position = e.position;
            }
        }
        let currency = row.as_ref().map(|r| r.currency.clone()).unwrap_or_default();
        match &event {
            PaymentEvent::CallbackReceived(c) => callbacks.push(CallbackView {
                id: c.callback_id,
                callback_no: c.callback_no.clone(),
                status: c.status.name().to_owned(),
                created_at: format_time(at),
                outcome: match c.outcome {
                    crate::domain::NotifyOutcome::Success => "success".into(),
                    crate::domain::NotifyOutcome::Failed => "failed".into(),
                },
                amount: amount_text(c.amount, &currency),
                gateway_trade_no: c.gateway_trade_no.clone(),
                refund_no: c.refund_no.clone(),
                reason: c.reason.clone(),
                flagged_for_refund: c.flagged_for_refund,
            }),
            PaymentEvent::RefundRequested(r) => refunds.push(RefundView {
                id: r.refund_id,
                refund_no: r.refund_no.clone(),
                amount: amount_text(r.amount, &currency),
                reason: r.reason.clone(),
                status: RefundStatus::Processing.name().to_owned(),
                created_at: format_time(at),
                updated_at: format_time(at),
                failure_reason: None,
            }),
            PaymentEvent::Refunded(r) => {
                if let Some(v) = refunds.iter_mut().find(|v| v.id == r.refund_id) {
                    v.status = RefundStatus::Success.name().to_owned();
                    v.updated_at = format_time(at);
                }
            }
            PaymentEvent::RefundFailed(r) => {
                if let Some(v) = refunds.iter_mut().find(|v| v.id == r.refund_id) {
                    v.status = RefundStatus::Failed.name().to_owned();
                    v.updated_at = format_time(at);
                    v.failure_reason = Some(r.reason.clone());
                }
            }
            _ => {}
        }
    }
    Ok(row.map(|r| PaymentDetail {
        id: r.id,
        order_no: r.order_id,
        payment_no: r.payment_no,
        payment_method: r.payment_method,
        amount: amount_text(r.amount, &r.currency),
        refunded_amount: amount_text(r.refunded_amount, &r.currency),
        status: status_name(r.status),
        payment_time: r.payment_time.map(format_time),
        refund_time: r.refund_time.map(format_time),
        created_at: format_time(r.created_at),
        updated_at: format_time(r.updated_at),
        user_id: r.user_id,
        payment_url: r.payment_url,
        failure_reason: r.failure_reason,
        flagged_for_refund: r.flagged_for_refund,
        payer: match (r.payer_name, r.payer_account) {
            (None, None) => None,
            (name, account) => Some(PayerView { name, account }),
        },
        callbacks,
        refunds,
        currency: r.currency,
        last_position: r.last_position,
    }))
}
