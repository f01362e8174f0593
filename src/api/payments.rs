//! Payment routes: create, status, history, list, detail (with `as_of`), refund, events.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use super::auth::{BodyHash, Caller, PendingNonce};
use super::envelope::{self, ok_read};
use super::error::ApiError;
use super::params::{self, AmountText, Query};
use super::pipeline;
use super::RequestContext;
use super::{payment_id, AppState};
use crate::config::Role;
use crate::domain::money::parse_decimal;
use crate::domain::payment::Notification;
use crate::domain::payment::{check_return_url, check_text, ID_TEXT_CHARS_MAX};
use crate::domain::{Command, Currency, Money, PaymentMethod, PaymentStatus};
use crate::projections::cache::Cached;
use crate::projections::read::{self, Cursor, ListFilter, ListPage, PaymentDetail};
use crate::service::Meta;
use crate::store::sealing::{self as payer, Payer};
use crate::store::{self, StoredEvent};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/payments/create", post(create))
        .route("/api/v1/payments/history", get(history))
        .route("/api/v1/payments", get(list))
        .route("/api/v1/payments/{payment_id}", get(detail))
        .route("/api/v1/payments/{payment_id}/status", get(status))
        .route("/api/v1/payments/{payment_id}/refund", post(refund))
        .route("/api/v1/payments/{payment_id}/events", get(events))
}

const READERS: &[Role] = &[Role::Client, Role::Operator, Role::Auditor, Role::Finance];
const BACK_OFFICE: &[Role] = &[Role::Operator, Role::Auditor, Role::Finance];

/// Longest payer name and account accepted.
const PAYER_NAME_CHARS_MAX: usize = 100;
const PAYER_ACCOUNT_CHARS_MAX: usize = 64;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateRequest {
    /// A JSON number or a decimal string, at most the currency's decimal places.
    #[schema(value_type = String, example = "100.00")]
    amount: AmountText,
    currency: String,
    payment_method: String,
    order_id: String,
    user_id: String,
    #[serde(default)]
    payer: Option<PayerInput>,
    /// The merchant's page to send the member back to after a failure.
    #[serde(default)]
    return_url: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PayerInput {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    account: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RefundRequest {
    #[schema(value_type = String, example = "30.00")]
    amount: AmountText,
    reason: String,
}

/// Metadata of a command from an HTTP request: who asked, the validated request id and the
/// client address (`RequestContext`, set by the observing middleware), and the keys a client
/// chose. Nothing unvalidated from a header enters the immutable log.
pub(crate) fn meta(caller: &Caller, ctx: &RequestContext, headers: &HeaderMap) -> Meta {
    Meta {
        actor: caller.key_id().to_owned(),
        request_id: ctx.request_id.clone(),
        idempotency_key: pipeline::idempotency_key(headers).ok().flatten(),
        client_ip: ctx.client_ip.map(|ip| ip.to_string()),
        causation_id: None,
        correlation_id: headers
            .get("x-correlation-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Uuid::parse_str(v).ok()),
    }
}

fn envelope_ok(data: Value) -> Value {
    json!({ "code": 0, "message": envelope::success_message(envelope::lang()), "data": data })
}

fn validate_payer(p: PayerInput) -> Result<Payer, ApiError> {
    let check = |field: &str, v: &Option<String>, max: usize| -> Result<(), ApiError> {
        if let Some(v) = v {
            let n = v.chars().count();
            if n == 0 || n > max || v.chars().any(char::is_control) {
                return Err(ApiError::BadRequest(format!(
                    "payer.{field} must be 1 to {max} printable characters"
                )));
            }
        }
        Ok(())
    };
    if p.name.is_none() && p.account.is_none() {
        return Err(ApiError::BadRequest(
            "payer needs a name or an account (or leave payer out)".into(),
        ));
    }
    check("name", &p.name, PAYER_NAME_CHARS_MAX)?;
    check("account", &p.account, PAYER_ACCOUNT_CHARS_MAX)?;
    if let Some(account) = &p.account {
        if payer::looks_like_card_number(account) && !payer::luhn_valid(account) {
            return Err(ApiError::BadRequest(
                "payer.account is not a valid card number".into(),
            ));
        }
    }
    Ok(Payer {
        name: p.name,
        account: p.account,
    })
}

#[utoipa::path(post, path = "/api/v1/payments/create", tag = "payments", operation_id = "create_payment",
    summary = "Create a payment",
    description = "Roles: client, operator (admin). Opens the gateway's order and answers once the read models include the payment (`data.position`). `status` is `failed` (with `failure_reason`) when the gateway refused the order. A second live payment for the same `order_id` is 409/40901 with `data.payment_id` naming the existing one. The amount may have no more decimals than the currency's minor unit.",
    request_body = CreateRequest,
    responses((status = 201, description = "created: data {payment_id, payment_no, payment_url, status, failure_reason, amount, currency, return_url, position}")))]
async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Extension(hash): Extension<BodyHash>,
    Extension(ctx): Extension<RequestContext>,
    nonce: Option<Extension<PendingNonce>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(e) = caller.require(&[Role::Client, Role::Operator]) {
        return e.into_response();
    }
    let meta = meta(&caller, &ctx, &headers);
    let route = "POST /api/v1/payments/create".to_owned();
    let post = match pipeline::post(&caller, route, &headers, &hash, nonce.map(|n| n.0), meta) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    pipeline::run(&state, post, |ids| create_work(&state, &caller, &body, ids)).await
}

/// Validates a create, opens the gateway's order and decides what to append: the created
/// payment, and its failure when the gateway refused the order, as one append.
async fn create_work(
    state: &AppState,
    caller: &Caller,
    body: &Bytes,
    ids: pipeline::Ids,
) -> Result<pipeline::Work, ApiError> {
    let req: CreateRequest = params::json(body)?;
    let currency = Currency::from_code(&req.currency).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "currency {:?} is not an active ISO 4217 code",
            req.currency
        ))
    })?;
    let amount = Money::parse(&req.amount.0, currency)?;
    let method = PaymentMethod::parse(&req.payment_method).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "payment_method {:?} is not one of alipay, wechat, bank, credit_card",
            req.payment_method
        ))
    })?;
    check_text("order_id", &req.order_id, ID_TEXT_CHARS_MAX)?;
    check_text("user_id", &req.user_id, ID_TEXT_CHARS_MAX)?;
    if let Some(url) = &req.return_url {
        check_return_url(url)?;
    }
    let payer_input = req.payer.map(validate_payer).transpose()?;

    let id = ids.uuid("payment");
    let payment_no = payment_no_of(id);
    let sealed = match &payer_input {
        Some(p) => {
            let key = state.keyring.data_key(&req.user_id).await?;
            Some(payer::seal(&key, &id.to_string(), p))
        }
        None => None,
    };
    let payment_url = format!("{}/checkout/{payment_no}", state.settings.public_url);
    let order = state
        .gateways
        .get(method)
        .create_order(&payment_no, &amount)
        .await;
    let mut commands = vec![Command::Create {
        payment_id: id,
        payment_no,
        order_id: req.order_id,
        user_id: req.user_id,
        amount,
        method,
        payment_url,
        return_url: req.return_url,
        merchant: bound_merchant(state, caller),
        payer: sealed,
    }];
    if let Err(reason) = order {
        // The gateway could not take the order after retries: the failure is part of the
        // same append, so the member sees it and a replay answers exactly this.
        tracing::warn!(payment_id = %id, reason = %reason, "gateway refused the order");
        commands.push(Command::FailPayment {
            reason: format!("gateway_error: {reason}"),
        });
    }
    Ok(pipeline::Work {
        stream_id: id,
        commands,
        respond: Arc::new(|events: &[StoredEvent]| (201, envelope_ok(created_answer(events)))),
        unchanged: Box::new(|_, _| {
            (
                StatusCode::CONFLICT,
                ApiError::NotAllowed("payment already exists".into()).body(envelope::lang()),
            )
        }),
        on_appended: None,
    })
}

/// The merchant a client key is bound to (`key_id:secret:client:merchant`): such a key
/// creates payments for that merchant and reads only them. None for every other caller.
pub(crate) fn bound_merchant(state: &AppState, caller: &Caller) -> Option<String> {
    match caller {
        Caller::Key { key_id, .. } => state
            .settings
            .api_keys
            .get(key_id)
            .and_then(|k| k.merchant.clone()),
        // A portal link issued by a bound key shows only that merchant's payments too.
        Caller::Portal { merchant, .. } => merchant.clone(),
        _ => None,
    }
}

/// Whether a bound caller may see this payment: only its merchant's ("not found" otherwise,
/// so that ids are not probed). Unbound callers see every payment their role allows.
fn visible_to(state: &AppState, caller: &Caller, d: &PaymentDetail) -> bool {
    bound_merchant(state, caller).is_none_or(|m| d.merchant.as_deref() == Some(m.as_str()))
}

/// The payment number shown to members and gateways: derived from the payment's id, so the
/// log alone resolves a number to its payment.
pub fn payment_no_of(id: Uuid) -> String {
    format!("P{}", id.simple()).to_uppercase()
}

/// The payment id a payment number names, if it is one (the inverse of `payment_no_of`).
pub fn payment_id_of_no(payment_no: &str) -> Option<Uuid> {
    let hex = payment_no.strip_prefix('P')?;
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Uuid::parse_str(hex).ok()
}

/// The create answer, from every event the create appended.
fn created_answer(events: &[StoredEvent]) -> Value {
    let data = events.first().map(|e| e.data.clone()).unwrap_or_default();
    let failed = events.iter().find(|e| e.event_type == "failed");
    json!({
        "payment_id": events.first().map(|e| e.stream_id),
        "payment_no": data["payment_no"],
        "payment_url": data["payment_url"],
        "status": if failed.is_some() { "failed" } else { "pending" },
        "failure_reason": failed.map(|e| e.data["reason"].clone()),
        "amount": data["amount"],
        "currency": data["currency"],
        "return_url": data.get("return_url"),
        "position": events.last().map(|e| e.position),
    })
}

#[utoipa::path(post, path = "/api/v1/payments/{payment_id}/refund", tag = "payments", operation_id = "refund_payment",
    summary = "Refund a payment",
    description = "Role: operator (admin). Refunds a successful payment (or flagged money) up to its refundable amount; answers the refund `processing` (or `success` if the gateway already confirmed it). The amount may have no more decimals than the payment's currency allows.",
    params(("payment_id" = Uuid, Path, description = "The payment's id")),
    request_body = RefundRequest,
    responses((status = 201, description = "refund requested: data {id, payment_id, refund_no, amount, reason, status, created_at, position}")))]
#[allow(clippy::too_many_arguments)]
async fn refund(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Extension(hash): Extension<BodyHash>,
    Extension(ctx): Extension<RequestContext>,
    nonce: Option<Extension<PendingNonce>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(e) = caller.require(&[Role::Operator]) {
        return e.into_response();
    }
    let meta = meta(&caller, &ctx, &headers);
    let route = format!("POST /api/v1/payments/{id}/refund");
    let post = match pipeline::post(&caller, route, &headers, &hash, nonce.map(|n| n.0), meta) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let gateways = state.gateways.clone();
    pipeline::run(&state, post, |ids| async move {
        let id = payment_id(&id)?;
        let req: RefundRequest = params::json(&body)?;
        let amount = parse_decimal(&req.amount.0)?;
        let refund_id = ids.uuid("refund");
        Ok(pipeline::Work {
            stream_id: id,
            commands: vec![Command::RequestRefund {
                refund_id,
                refund_no: format!("R{}", refund_id.simple()).to_uppercase(),
                amount,
                reason: req.reason,
            }],
            respond: Arc::new(|events: &[StoredEvent]| (201, envelope_ok(refund_answer(events)))),
            unchanged: Box::new(|_, _| {
                (
                    StatusCode::CONFLICT,
                    ApiError::NotAllowed("refund already requested".into()).body(envelope::lang()),
                )
            }),
            on_appended: Some(Box::new(move |_, _| gateways.wake_refunds())),
        })
    })
    .await
}

/// The refund answer, from the events the refund appended.
fn refund_answer(events: &[StoredEvent]) -> Value {
    let e = events.iter().find(|e| e.event_type == "refund_requested");
    let data = e.map(|e| e.data.clone()).unwrap_or_default();
    json!({
        "id": data["refund_id"],
        "payment_id": e.map(|e| e.stream_id),
        "refund_no": data["refund_no"],
        "amount": data["amount"],
        "reason": data["reason"],
        "status": "processing",
        "created_at": e.map(|e| store::event::format_time(e.recorded_at)),
        "position": events.last().map(|e| e.position),
    })
}

/// Applies `min_position`, then returns the position the answer may claim.
pub(crate) async fn read_position(state: &AppState, q: &Query) -> Result<i64, ApiError> {
    match q.min_position()? {
        Some(p) => Ok(state
            .wait_for(p, state.settings.limits.min_position_wait())
            .await),
        None => Ok(state.position()),
    }
}

/// A payment's detail: from the cache, or from the read tables (then cached).
pub async fn load_detail(
    state: &AppState,
    id: Uuid,
) -> Result<Option<Arc<Cached<PaymentDetail>>>, ApiError> {
    if let Some(d) = state.cache.detail(&id) {
        return Ok(Some(d));
    }
    let ticket = state.cache.detail_ticket(&id);
    let Some(d) = read::detail(&state.pool, id).await? else {
        return Ok(None);
    };
    let d = Arc::new(Cached::new(d));
    state.cache.store_detail(ticket, d.clone());
    Ok(Some(d))
}

#[utoipa::path(get, path = "/api/v1/payments/{payment_id}", tag = "payments", operation_id = "payment_detail",
    summary = "A payment's detail",
    description = "Roles: operator, auditor, finance (admin); a member portal link for its own payments (without callbacks). `as_of` answers the state rebuilt from the events recorded up to that time (404 before the payment existed).",
    params(("payment_id" = Uuid, Path, description = "The payment's id"),
        ("as_of" = Option<String>, Query, description = "RFC 3339 time"),
        ("min_position" = Option<i64>, Query)),
    responses((status = 200, description = "the payment with its callbacks and refunds", body = PaymentDetail)))]
async fn detail(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let member = caller.portal_user();
    if member.is_none() {
        caller.require(BACK_OFFICE)?;
    }
    let q = Query::parse(raw.as_deref(), &["as_of", "min_position"])?;
    let id = payment_id(&id)?;
    let position = read_position(&state, &q).await?;
    if let Some(as_of) = q.time("as_of")? {
        if member.is_some() {
            return Err(ApiError::Forbidden(
                "a member portal link shows payments as they are now".into(),
            ));
        }
        return detail_as_of(&state, id, as_of, position).await;
    }
    let d = load_detail(&state, id)
        .await?
        .filter(|d| visible_to(&state, &caller, d))
        .ok_or_else(ApiError::not_found)?;
    if let Some(user_id) = member {
        // Another member's payment is "not found", never "forbidden": ids are not probed.
        if d.user_id != user_id {
            return Err(ApiError::not_found());
        }
        // The member sees their payment and its refunds, not the gateways' callbacks.
        let mut view = d.value.clone();
        view.callbacks.clear();
        return Ok(ok_read(position, &view));
    }
    Ok(envelope::ok_read_json(position, &d.json))
}

async fn detail_as_of(
    state: &AppState,
    id: Uuid,
    as_of: DateTime<Utc>,
    position: i64,
) -> Result<Response, ApiError> {
    let events = store::read_stream(&state.pool, id).await?;
    // `recorded_at` never decreases along the log (the writer takes it from the database
    // under the append lock), so the state "as of" a time is a prefix of the stream.
    let upto: Vec<StoredEvent> = events
        .into_iter()
        .take_while(|e| e.recorded_at <= as_of)
        .collect();
    let payer = match upto.first().map(crate::store::decode).transpose()? {
        Some(crate::domain::PaymentEvent::Created(c)) => match &c.payer {
            Some(sealed) => {
                let (name, account) = state.keyring.masked(&c.user_id, id, sealed).await?;
                Some(read::PayerView { name, account })
            }
            None => None,
        },
        _ => None,
    };
    let view = read::detail_from_events(&upto, payer)?.ok_or_else(ApiError::not_found)?;
    Ok(ok_read(position, &view))
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = PaymentStatusView)]
struct StatusView<'a> {
    payment_id: Uuid,
    status: &'a str,
    paid_at: Option<&'a str>,
    amount: &'a str,
    currency: &'a str,
    refunded_amount: &'a str,
}

#[utoipa::path(get, path = "/api/v1/payments/{payment_id}/status", tag = "payments", operation_id = "payment_status",
    summary = "A payment's status",
    description = "Roles: client, operator, auditor, finance (admin); a member portal link for its own payments.",
    params(("payment_id" = Uuid, Path, description = "The payment's id"), ("min_position" = Option<i64>, Query)),
    responses((status = 200, description = "data {payment_id, status, paid_at, amount, currency, refunded_amount}", body = StatusView)))]
async fn status(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let member = caller.portal_user();
    if member.is_none() {
        caller.require(READERS)?;
    }
    let q = Query::parse(raw.as_deref(), &["min_position"])?;
    let id = payment_id(&id)?;
    let position = read_position(&state, &q).await?;
    let d = load_detail(&state, id)
        .await?
        .filter(|d| visible_to(&state, &caller, d))
        .ok_or_else(ApiError::not_found)?;
    if member.is_some_and(|user_id| d.user_id != user_id) {
        return Err(ApiError::not_found());
    }
    Ok(ok_read(
        position,
        &StatusView {
            payment_id: d.id,
            status: &d.status,
            paid_at: d.payment_time.as_deref(),
            amount: &d.amount,
            currency: &d.currency,
            refunded_amount: &d.refunded_amount,
        },
    ))
}

/// `page` and `size`, or the `after=` cursor, within the bound on how deep a numbered page may
/// reach (deeper lists page by cursor: keyset paging costs the same on every page).
fn paging(
    q: &Query,
    limits: &crate::config::Limits,
) -> Result<(u32, u32, Option<Cursor>), ApiError> {
    let size = q.int("size", 10, 1, limits.page_size_max as i64)? as u32;
    let page = q.int("page", 1, 1, i64::from(u32::MAX))? as u32;
    let after = match q.filter("after") {
        None => None,
        Some(text) => Some(Cursor::decode(&text).ok_or_else(|| {
            ApiError::BadRequest("after must be a next_after cursor from a previous page".into())
        })?),
    };
    if after.is_some() && page != 1 {
        return Err(ApiError::BadRequest(
            "use either page or after, not both".into(),
        ));
    }
    if u64::from(page - 1) * u64::from(size) > u64::from(limits.page_offset_max) {
        return Err(ApiError::BadRequest(format!(
            "page {page} of size {size} is deeper than {} rows: page on with after=next_after",
            limits.page_offset_max
        )));
    }
    Ok((page, size, after))
}

fn list_filter(q: &Query, limits: &crate::config::Limits) -> Result<ListFilter, ApiError> {
    let status = match q.filter("status") {
        None => None,
        Some(s) => Some(PaymentStatus::parse(&s).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "unknown status {s:?} (pending, success, failed, refunded or 0-3)"
            ))
        })?),
    };
    let start_time = q.time("start_time")?;
    let end_time = q.time("end_time")?;
    if let (Some(s), Some(e)) = (start_time, end_time) {
        if s > e {
            return Err(ApiError::BadRequest("start_time is after end_time".into()));
        }
    }
    let (page, size, after) = paging(q, limits)?;
    let flagged = match q.filter("flagged").as_deref() {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "flagged {other:?} must be true or false"
            )))
        }
    };
    Ok(ListFilter {
        order_no: q.filter("order_no"),
        payment_no: q.filter("payment_no"),
        user_id: None,
        merchant: None,
        status,
        flagged,
        start_time,
        end_time,
        page,
        size,
        after,
    })
}

async fn load_list(
    state: &AppState,
    filter: &ListFilter,
) -> Result<Arc<Cached<ListPage>>, ApiError> {
    let key = filter.cache_key();
    if let Some(page) = state.cache.list(&key) {
        return Ok(page);
    }
    let ticket = state.cache.list_ticket();
    let page = Arc::new(Cached::new(read::list(&state.pool, filter).await?));
    state.cache.store_list(ticket, filter.clone(), page.clone());
    Ok(page)
}

#[utoipa::path(get, path = "/api/v1/payments", tag = "payments", operation_id = "list_payments",
    summary = "List payments",
    description = "Roles: operator, auditor, finance (admin). Newest first. Page with `page` (and `size`), or past `(page - 1) * size` of LEDGER_PAGE_OFFSET_MAX rows with `after` = the previous page's `next_after`.",
    params(("page" = Option<u32>, Query), ("size" = Option<u32>, Query), ("after" = Option<String>, Query),
        ("order_no" = Option<String>, Query), ("payment_no" = Option<String>, Query),
        ("status" = Option<String>, Query), ("flagged" = Option<String>, Query),
        ("start_time" = Option<String>, Query, description = "created at or after (inclusive)"),
        ("end_time" = Option<String>, Query, description = "created before (exclusive)"),
        ("min_position" = Option<i64>, Query)),
    responses((status = 200, description = "data {total, page, size, list, next_after}", body = ListPage)))]
async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    caller.require(BACK_OFFICE)?;
    let q = Query::parse(
        raw.as_deref(),
        &[
            "page",
            "size",
            "after",
            "order_no",
            "payment_no",
            "status",
            "flagged",
            "start_time",
            "end_time",
            "min_position",
        ],
    )?;
    let filter = list_filter(&q, &state.settings.limits)?;
    let position = read_position(&state, &q).await?;
    let page = load_list(&state, &filter).await?;
    Ok(envelope::ok_read_json(position, &page.json))
}

#[derive(Serialize, utoipa::ToSchema)]
struct HistoryItem<'a> {
    payment_id: Uuid,
    amount: &'a str,
    currency: &'a str,
    status: &'a str,
    payment_method: &'a str,
    order_id: &'a str,
    refunded_amount: &'a str,
    created_at: &'a str,
}

#[derive(Serialize, utoipa::ToSchema)]
struct HistoryView<'a> {
    total: i64,
    page: u32,
    size: u32,
    payments: Vec<HistoryItem<'a>>,
    next_after: Option<&'a str>,
}

#[utoipa::path(get, path = "/api/v1/payments/history", tag = "payments", operation_id = "payment_history",
    summary = "A member's payments",
    description = "Roles: client, operator, auditor, finance (admin); a member portal link for its own member. Newest first.",
    params(("user_id" = String, Query), ("page" = Option<u32>, Query), ("size" = Option<u32>, Query),
        ("after" = Option<String>, Query), ("min_position" = Option<i64>, Query)),
    responses((status = 200, description = "data {total, page, size, payments, next_after}", body = HistoryView)))]
async fn history(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let member = caller.portal_user();
    if member.is_none() {
        caller.require(READERS)?;
    }
    let q = Query::parse(
        raw.as_deref(),
        &["user_id", "page", "size", "after", "min_position"],
    )?;
    let user_id = q
        .filter("user_id")
        .ok_or_else(|| ApiError::BadRequest("user_id is required".into()))?;
    if member.is_some_and(|own| own != user_id) {
        return Err(ApiError::Forbidden(
            "a member portal link shows only its own member's payments".into(),
        ));
    }
    let (page, size, after) = paging(&q, &state.settings.limits)?;
    let filter = ListFilter {
        user_id: Some(user_id),
        merchant: bound_merchant(&state, &caller),
        page,
        size,
        after,
        ..ListFilter::default()
    };
    let position = read_position(&state, &q).await?;
    let page = load_list(&state, &filter).await?;
    let view = HistoryView {
        total: page.total,
        page: page.page,
        size: page.size,
        payments: page
            .list
            .iter()
            .map(|i| HistoryItem {
                payment_id: i.id,
                amount: &i.amount,
                currency: &i.currency,
                status: &i.status,
                payment_method: &i.payment_method,
                order_id: &i.order_no,
                refunded_amount: &i.refunded_amount,
                created_at: &i.created_at,
            })
            .collect(),
        next_after: page.next_after.as_deref(),
    };
    Ok(ok_read(position, &view))
}

#[utoipa::path(get, path = "/api/v1/payments/{payment_id}/events", tag = "audit", operation_id = "payment_events",
    summary = "A payment's events",
    description = "Roles: auditor, operator (admin). Every event of the payment with its metadata and hashes, in version order.",
    params(("payment_id" = Uuid, Path, description = "The payment's id"), ("min_position" = Option<i64>, Query)),
    responses((status = 200, description = "data {payment_id, events}")))]
async fn events(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Auditor, Role::Operator])?;
    let q = Query::parse(raw.as_deref(), &["min_position"])?;
    let id = payment_id(&id)?;
    let position = read_position(&state, &q).await?;
    let events = store::read_stream(&state.pool, id).await?;
    if events.is_empty() {
        return Err(ApiError::not_found());
    }
    let envelopes: Vec<_> = events.iter().map(StoredEvent::envelope).collect();
    Ok(ok_read(
        position,
        &json!({ "payment_id": id, "events": envelopes }),
    ))
}

/// Builds the notification command from a gateway's body (used by `gateways`).
pub(crate) fn notification(
    method: PaymentMethod,
    body: &NotifyBody,
    now: DateTime<Utc>,
) -> Result<Notification, ApiError> {
    crate::domain::payment::check_text(
        "payment_no",
        &body.payment_no,
        crate::domain::payment::ID_TEXT_CHARS_MAX,
    )?;
    if let Some(refund_no) = &body.refund_no {
        crate::domain::payment::check_text(
            "refund_no",
            refund_no,
            crate::domain::payment::ID_TEXT_CHARS_MAX,
        )?;
    }
    let outcome = match body.status.as_str() {
        "success" => crate::domain::NotifyOutcome::Success,
        "failed" => crate::domain::NotifyOutcome::Failed,
        other => {
            return Err(ApiError::BadRequest(format!(
                "status {other:?} must be success or failed"
            )))
        }
    };
    let paid_at = match &body.paid_at {
        Some(t) => params::parse_time(t)
            .ok_or_else(|| ApiError::BadRequest("paid_at must be an RFC 3339 time".into()))?,
        None => now,
    };
    Ok(Notification {
        callback_id: Uuid::now_v7(),
        callback_no: body.callback_no.clone(),
        gateway: method,
        outcome,
        amount: parse_decimal(&body.amount.0)?,
        gateway_trade_no: body.gateway_trade_no.clone(),
        refund_no: body.refund_no.clone(),
        paid_at: store::event::truncate_to_micros(paid_at),
    })
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NotifyBody {
    pub payment_no: String,
    pub callback_no: String,
    /// "success" or "failed".
    pub status: String,
    #[schema(value_type = String)]
    pub amount: AmountText,
    pub gateway_trade_no: String,
    #[serde(default)]
    pub paid_at: Option<String>,
    #[serde(default)]
    pub refund_no: Option<String>,
}
