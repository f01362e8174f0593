//! The real gateways' notification routes (issue 15), in their own formats:
//!
//! - `POST /api/v1/gateways/alipay/notify/rsa2`: Alipay's form-encoded `trade_status_sync`,
//!   answered with the plain text `success` once recorded, `fail` otherwise (Alipay then sends
//!   it again, for about 25 hours).
//! - `POST /api/v1/gateways/wechat/notify/v3`: WeChat Pay's signed JSON envelope with its
//!   encrypted `resource`, answered `204` once recorded, or a 4xx/5xx with
//!   `{"code":"FAIL","message":…}` so that WeChat Pay sends it again.
//!
//! They are not signed with our HMAC (`auth::is_unsigned` lets exactly these two paths in):
//! the gateway's RSA signature authenticates them, checked here with the key configured for
//! it, before anything is read. A verified notice becomes a `Command::Notify` through the one
//! pipeline (`gateways::notify_work`), so duplicates, flagged double charges and success
//! after failure follow the same rules as every other notification. The gateway's message id
//! (Alipay's `notify_id`, WeChat Pay's notification `id`) is the callback_no: its retries of
//! one message are duplicates, and there is no nonce. Their outcomes are counted like every
//! route's (`ledger_http_requests_total{route, status}`: 200/204 recorded, 4xx/5xx refused).
//!
//! Must not: trust anything before its signature is checked, read the body beyond the
//! request limit, or echo an internal cause to the gateway.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use chrono::{DateTime, NaiveDateTime, Utc};
use ledger_wire::alipay::{self as alipay_wire, AlipayNotification, TradeStatus};
use ledger_wire::wechat::{self as wechat_wire, NotificationEvent, RefundEvent, WechatError};
use rust_decimal::Decimal;
use serde_json::Value;
use uuid::Uuid;

use super::auth::{self, Caller};
use super::error::ApiError;
use super::gateways::{notify_work, resolve_payment};
use super::payments::meta;
use super::{pipeline, AppState, RequestContext};
use crate::domain::payment::Notification;
use crate::domain::{NotifyOutcome, Payment, PaymentMethod};
use crate::gateway::{alipay, wechat};
use crate::store::event::truncate_to_micros;

/// Longest pipeline answer read back to map it onto the gateway's answer.
const PIPELINE_ANSWER_BYTES_MAX: usize = 64 * 1024;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(alipay::NOTIFY_PATH, post(alipay_notify))
        .route(wechat::NOTIFY_PATH, post(wechat_notify))
}

/// Whether `path` is one of these routes (reachable without our signature).
pub fn is_notify_path(path: &str) -> bool {
    path == alipay::NOTIFY_PATH || path == wechat::NOTIFY_PATH
}

/// Why a notification was not recorded: the status to answer with and a message that is safe
/// to show the gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        // `Display` of an internal error is its fixed text, never its cause.
        Refusal {
            status: e.status(),
            message: e.to_string(),
        }
    }
}

fn refused(status: StatusCode, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        message: message.into(),
    }
}

/// What a verified notice asks of the ledger.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// Nothing to record (Alipay's `WAIT_BUYER_PAY`, a WeChat Pay event we do not act on):
    /// acknowledged so that the gateway stops sending it.
    Ignore,
    Record(Pending),
}

/// A notice to record, once its payment is known.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub payment_no: String,
    pub callback_no: String,
    pub outcome: NotifyOutcome,
    pub amount: NoticeAmount,
    pub gateway_trade_no: String,
    pub refund_no: Option<String>,
    pub paid_at: DateTime<Utc>,
}

/// The amount a notice reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NoticeAmount {
    /// The payment's or the refund's own amount.
    Exact(Decimal),
    /// Alipay's refund notice: `refund_fee` is the trade's total refunded so far and
    /// `total_amount` the trade's; the refund's own amount is found with the payment.
    AlipayRefund { refund_fee: Decimal, total: Decimal },
}

impl NoticeAmount {
    /// The amount to put in the notification. For Alipay's refund notice it is the refund's
    /// amount when the cumulative `refund_fee` can include it (at least the refund, at most
    /// the trade), and `refund_fee` itself otherwise — which the domain then records as a
    /// failed callback (`amount_mismatch`) rather than confirming a refund on a number that
    /// cannot be right.
    pub fn resolve(self, payment: &Payment, refund_no: Option<&str>) -> Decimal {
        match self {
            NoticeAmount::Exact(amount) => amount,
            NoticeAmount::AlipayRefund { refund_fee, total } => {
                match refund_no.and_then(|no| payment.refund_by_no(no)) {
                    Some(r) if r.amount <= refund_fee && refund_fee <= total => r.amount,
                    _ => refund_fee,
                }
            }
        }
    }
}

/// `yyyy-MM-dd HH:mm:ss` in Asia/Shanghai (+08:00, no daylight saving), as Alipay writes times.
pub fn alipay_time(text: &str) -> Option<DateTime<Utc>> {
    let local = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").ok()?;
    Some(local.and_utc() - chrono::Duration::hours(8))
}

/// Reads a verified Alipay notification (its `app_id` already checked).
pub fn alipay_notice(n: &AlipayNotification, now: DateTime<Utc>) -> Result<Notice, Refusal> {
    let base = |outcome: NotifyOutcome,
                amount: NoticeAmount,
                refund_no: Option<String>,
                at: Option<&String>| {
        Notice::Record(Pending {
            payment_no: n.out_trade_no.clone(),
            callback_no: n.notify_id.clone(),
            outcome,
            amount,
            gateway_trade_no: n.trade_no.clone(),
            refund_no,
            paid_at: at.and_then(|t| alipay_time(t)).unwrap_or(now),
        })
    };
    // A refund notice carries the refund fields whatever the trade's status (`TRADE_CLOSED`
    // once fully refunded): it is about the refund, never a failure of the payment.
    if n.out_biz_no.is_some() || n.refund_fee.is_some() {
        let (Some(refund_no), Some(refund_fee)) = (&n.out_biz_no, n.refund_fee) else {
            return Err(refused(
                StatusCode::BAD_REQUEST,
                "a refund notice needs out_biz_no and refund_fee",
            ));
        };
        return Ok(base(
            NotifyOutcome::Success,
            NoticeAmount::AlipayRefund {
                refund_fee,
                total: n.total_amount,
            },
            Some(refund_no.clone()),
            n.gmt_refund.as_ref(),
        ));
    }
    match &n.trade_status {
        TradeStatus::TradeSuccess | TradeStatus::TradeFinished => Ok(base(
            NotifyOutcome::Success,
            NoticeAmount::Exact(n.total_amount),
            None,
            n.gmt_payment.as_ref(),
        )),
        TradeStatus::TradeClosed => Ok(base(
            NotifyOutcome::Failed,
            NoticeAmount::Exact(n.total_amount),
            None,
            n.gmt_close.as_ref(),
        )),
        TradeStatus::WaitBuyerPay => Ok(Notice::Ignore),
        // A status this ledger does not know: not acknowledged, so that it stays visible (in
        // the log and Alipay's retries) instead of being dropped.
        TradeStatus::Other(s) => Err(refused(
            StatusCode::BAD_REQUEST,
            format!("unknown trade_status {s:?}"),
        )),
    }
}

/// Reads a verified WeChat Pay notification, checking that it is this merchant's.
pub fn wechat_notice(
    n: &wechat_wire::VerifiedNotification,
    mchid: &str,
    appid: &str,
    now: DateTime<Utc>,
) -> Result<Notice, Refusal> {
    let time = |t: &Option<String>| {
        t.as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or(now)
    };
    let payment_no = |out_trade_no: &str| {
        wechat::payment_no_of(out_trade_no)
            .ok_or_else(|| refused(StatusCode::NOT_FOUND, "out_trade_no names no payment"))
    };
    match &n.event {
        NotificationEvent::TransactionSuccess(t) => {
            if t.mchid != mchid || t.appid != appid {
                return Err(refused(
                    StatusCode::FORBIDDEN,
                    "the transaction is not this merchant's (mchid/appid)",
                ));
            }
            // `verify_notification` checked that a TRANSACTION.SUCCESS has these.
            let (Some(amount), Some(transaction_id)) = (&t.amount, &t.transaction_id) else {
                return Err(refused(StatusCode::BAD_REQUEST, "incomplete transaction"));
            };
            if amount.currency != wechat::CURRENCY {
                return Err(refused(
                    StatusCode::BAD_REQUEST,
                    format!("currency {:?} is not CNY", amount.currency),
                ));
            }
            Ok(Notice::Record(Pending {
                payment_no: payment_no(&t.out_trade_no)?,
                callback_no: n.id.clone(),
                outcome: NotifyOutcome::Success,
                amount: NoticeAmount::Exact(wechat_wire::fen_to_yuan(amount.total)),
                gateway_trade_no: transaction_id.clone(),
                refund_no: None,
                paid_at: time(&t.success_time),
            }))
        }
        NotificationEvent::Refund { event, notice } => {
            if notice.mchid != mchid {
                return Err(refused(
                    StatusCode::FORBIDDEN,
                    "the refund is not this merchant's (mchid)",
                ));
            }
            Ok(Notice::Record(Pending {
                payment_no: payment_no(&notice.out_trade_no)?,
                callback_no: n.id.clone(),
                outcome: match event {
                    RefundEvent::Success => NotifyOutcome::Success,
                    RefundEvent::Abnormal | RefundEvent::Closed => NotifyOutcome::Failed,
                },
                amount: NoticeAmount::Exact(wechat_wire::fen_to_yuan(notice.amount.refund)),
                gateway_trade_no: notice.refund_id.clone(),
                refund_no: Some(notice.out_refund_no.clone()),
                paid_at: time(&notice.success_time),
            }))
        }
        NotificationEvent::Other { event_type, .. } => {
            tracing::info!(event_type = %event_type, id = %n.id, "wechat pay notification of an event the ledger does not act on");
            Ok(Notice::Ignore)
        }
    }
}

/// How a WeChat Pay verification failure is answered: forged, stale or for a key we do not
/// have → 401; undecryptable or malformed → 400.
fn wechat_refusal(e: &WechatError) -> Refusal {
    let status = match e {
        WechatError::MissingHeader(_)
        | WechatError::MalformedTimestamp(_)
        | WechatError::StaleTimestamp { .. }
        | WechatError::UnknownSerial(_)
        | WechatError::BadSignature
        | WechatError::InvalidNonce => StatusCode::UNAUTHORIZED,
        _ => StatusCode::BAD_REQUEST,
    };
    refused(status, e.to_string())
}

#[tracing::instrument(skip_all, fields(gateway = "alipay"))]
async fn alipay_notify(
    State(state): State<Arc<AppState>>,
    Extension(ctx): Extension<RequestContext>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let verdict = alipay_verdict(&state, &ctx, &headers, body).await;
    let (status, text) = match verdict {
        Ok(()) => (StatusCode::OK, alipay_wire::NOTIFY_ACK),
        Err(r) => (r.status, "fail"),
    };
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

async fn alipay_verdict(
    state: &Arc<AppState>,
    ctx: &RequestContext,
    headers: &HeaderMap,
    body: Body,
) -> Result<(), Refusal> {
    let Some(settings) = &state.settings.alipay else {
        return Err(refused(
            StatusCode::NOT_FOUND,
            "alipay is not a real gateway here",
        ));
    };
    let bytes = read(state, headers, body).await?;
    let n = alipay_wire::verify_notification(&bytes, &settings.alipay_public_key).map_err(|e| {
        tracing::warn!(error = %e, "alipay notification refused");
        refused(StatusCode::UNAUTHORIZED, e.to_string())
    })?;
    if n.app_id != settings.app_id {
        tracing::warn!(app_id = %n.app_id, "alipay notification for another app refused");
        return Err(refused(
            StatusCode::FORBIDDEN,
            "app_id is not this merchant's",
        ));
    }
    let notice = alipay_notice(&n, state.clock.now()).inspect_err(|r| {
        tracing::warn!(notify_id = %n.notify_id, reason = %r.message, "alipay notification refused");
    })?;
    record(
        state,
        ctx,
        headers,
        PaymentMethod::Alipay,
        alipay::NOTIFY_PATH,
        &bytes,
        notice,
    )
    .await
}

#[tracing::instrument(skip_all, fields(gateway = "wechat"))]
async fn wechat_notify(
    State(state): State<Arc<AppState>>,
    Extension(ctx): Extension<RequestContext>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let verdict = wechat_verdict(&state, &ctx, &headers, body).await;
    match verdict {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => {
            let status = if r.status.is_client_error() || r.status.is_server_error() {
                r.status
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            (
                status,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                wechat_wire::notify_failure_body(&r.message),
            )
                .into_response()
        }
    }
}

async fn wechat_verdict(
    state: &Arc<AppState>,
    ctx: &RequestContext,
    headers: &HeaderMap,
    body: Body,
) -> Result<(), Refusal> {
    let Some(settings) = &state.settings.wechat else {
        return Err(refused(
            StatusCode::NOT_FOUND,
            "wechat pay is not a real gateway here",
        ));
    };
    let bytes = read(state, headers, body).await?;
    let verified = wechat_wire::SignatureHeaders::from_lookup(|name| {
        headers.get(name).and_then(|v| v.to_str().ok())
    })
    .and_then(|signature| {
        wechat_wire::verify_notification(
            &signature,
            &bytes,
            &settings.platform_keys,
            &settings.apiv3_key,
            state.clock.now().timestamp(),
        )
    })
    .map_err(|e| {
        tracing::warn!(error = %e, "wechat pay notification refused");
        wechat_refusal(&e)
    })?;
    let notice = wechat_notice(
        &verified,
        &settings.mchid,
        &settings.appid,
        state.clock.now(),
    )
    .inspect_err(|r| {
        tracing::warn!(id = %verified.id, reason = %r.message, "wechat pay notification refused");
    })?;
    record(
        state,
        ctx,
        headers,
        PaymentMethod::Wechat,
        wechat::NOTIFY_PATH,
        &bytes,
        notice,
    )
    .await
}

async fn read(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<axum::body::Bytes, Refusal> {
    auth::read_limited(
        body,
        headers.get(header::CONTENT_LENGTH),
        state.settings.limits.body_bytes_max,
    )
    .await
    .map_err(Refusal::from)
}

/// Records a notice through the pipeline and reads its answer: recorded (whatever the domain
/// made of it — applied, a failed callback, a duplicate) is `Ok`; anything else is refused,
/// so that the gateway sends it again.
#[allow(clippy::too_many_arguments)]
async fn record(
    state: &Arc<AppState>,
    ctx: &RequestContext,
    headers: &HeaderMap,
    method: PaymentMethod,
    path: &str,
    body: &[u8],
    notice: Notice,
) -> Result<(), Refusal> {
    let Notice::Record(p) = notice else {
        return Ok(());
    };
    let caller = Caller::Gateway(method);
    let post = pipeline::Post {
        meta: meta(&caller, ctx, headers),
        route: format!("POST {path}"),
        idempotency_key: None,
        body_hash: crate::signing::body_sha256_hex(body),
        // The gateway's message id is the callback_no: that is what makes a retry a duplicate.
        nonce: None,
        caller,
    };
    let answer = pipeline::run(state, post, |_ids| async {
        let payment_id = resolve_payment(state, &p.payment_no).await?;
        let amount = match p.amount {
            NoticeAmount::Exact(amount) => amount,
            other => {
                let payment = state
                    .commands
                    .load(payment_id)
                    .await?
                    .ok_or_else(ApiError::not_found)?;
                other.resolve(&payment, p.refund_no.as_deref())
            }
        };
        Ok(notify_work(
            payment_id,
            Notification {
                callback_id: Uuid::now_v7(),
                callback_no: p.callback_no.clone(),
                gateway: method,
                outcome: p.outcome,
                amount,
                gateway_trade_no: p.gateway_trade_no.clone(),
                refund_no: p.refund_no.clone(),
                paid_at: truncate_to_micros(p.paid_at),
            },
        ))
    })
    .await;
    verdict_of(answer).await
}

/// The pipeline's JSON answer as a verdict: a 2xx is recorded; otherwise its status and the
/// envelope's message (never an internal cause: a 5xx envelope carries only its fixed text).
async fn verdict_of(answer: Response) -> Result<(), Refusal> {
    let status = answer.status();
    if status.is_success() {
        return Ok(());
    }
    let bytes = axum::body::to_bytes(answer.into_body(), PIPELINE_ANSWER_BYTES_MAX)
        .await
        .unwrap_or_default();
    let message = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("refused").to_owned());
    Err(refused(status, message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-30T02:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn alipay(status: &str) -> AlipayNotification {
        AlipayNotification {
            notify_id: "N1".into(),
            notify_type: Some("trade_status_sync".into()),
            notify_time: None,
            app_id: "2021000000000001".into(),
            out_trade_no: "P0123".into(),
            trade_no: "2026113022001".into(),
            trade_status: TradeStatus::parse(status),
            total_amount: d("10.00"),
            receipt_amount: None,
            buyer_pay_amount: None,
            gmt_payment: Some("2026-11-30 10:00:04".into()),
            gmt_close: None,
            out_biz_no: None,
            refund_fee: None,
            gmt_refund: None,
            out_request_no: None,
            params: BTreeMap::new(),
        }
    }

    fn pending(n: Notice) -> Pending {
        match n {
            Notice::Record(p) => p,
            Notice::Ignore => panic!("ignored"),
        }
    }

    /// A paid payment of 100.00 with one refund of 30.00 in flight, under `R1`.
    fn refunding() -> Payment {
        use crate::domain::{decide, evolve, Command, Currency, Money};
        let commands = [
            Command::Create {
                payment_id: Uuid::now_v7(),
                payment_no: "P1".into(),
                order_id: "O1".into(),
                user_id: "U1".into(),
                amount: Money::parse("100.00", Currency::from_code("CNY").unwrap()).unwrap(),
                method: PaymentMethod::Alipay,
                payment_url: "http://x/checkout/P1".into(),
                return_url: None,
                merchant: None,
                payer: None,
            },
            Command::Notify(Notification {
                callback_id: Uuid::now_v7(),
                callback_no: "N1".into(),
                gateway: PaymentMethod::Alipay,
                outcome: NotifyOutcome::Success,
                amount: d("100.00"),
                gateway_trade_no: "T1".into(),
                refund_no: None,
                paid_at: now(),
            }),
            Command::RequestRefund {
                refund_id: Uuid::now_v7(),
                refund_no: "R1".into(),
                amount: d("30.00"),
                reason: "asked".into(),
            },
        ];
        let mut state = None;
        for c in &commands {
            for e in decide(&state, c).unwrap() {
                state = evolve(state, &e);
            }
        }
        state.unwrap()
    }

    #[test]
    fn an_alipay_refund_notice_takes_the_refunds_amount_only_when_refund_fee_can_include_it() {
        let p = refunding();
        let notice = |fee: &str| NoticeAmount::AlipayRefund {
            refund_fee: d(fee),
            total: d("100.00"),
        };
        // refund_fee is cumulative: this refund alone, or with earlier ones.
        assert_eq!(notice("30.00").resolve(&p, Some("R1")), d("30.00"));
        assert_eq!(notice("80.00").resolve(&p, Some("R1")), d("30.00"));
        // Less than this refund, or more than the trade: the number itself, which the
        // domain records as a failed callback.
        assert_eq!(notice("29.99").resolve(&p, Some("R1")), d("29.99"));
        assert_eq!(notice("100.01").resolve(&p, Some("R1")), d("100.01"));
        assert_eq!(notice("30.00").resolve(&p, Some("R9")), d("30.00"));
        assert_eq!(NoticeAmount::Exact(d("5.00")).resolve(&p, None), d("5.00"));
    }

    #[test]
    fn alipay_times_are_shanghai_wall_clock() {
        assert_eq!(
            alipay_time("2026-11-30 10:00:04").unwrap().to_rfc3339(),
            "2026-11-30T02:00:04+00:00"
        );
        assert_eq!(alipay_time("yesterday"), None);
    }

    #[test]
    fn alipay_trade_statuses_map_onto_outcomes() {
        let paid = pending(alipay_notice(&alipay("TRADE_SUCCESS"), now()).unwrap());
        assert_eq!(paid.outcome, NotifyOutcome::Success);
        assert_eq!(paid.amount, NoticeAmount::Exact(d("10.00")));
        assert_eq!(paid.callback_no, "N1");
        assert_eq!(paid.payment_no, "P0123", "out_trade_no is the payment_no");
        assert_eq!(paid.paid_at.to_rfc3339(), "2026-11-30T02:00:04+00:00");
        let finished = pending(alipay_notice(&alipay("TRADE_FINISHED"), now()).unwrap());
        assert_eq!(finished.outcome, NotifyOutcome::Success);
        let closed = pending(alipay_notice(&alipay("TRADE_CLOSED"), now()).unwrap());
        assert_eq!(closed.outcome, NotifyOutcome::Failed);
        assert_eq!(closed.paid_at, now());
        assert_eq!(
            alipay_notice(&alipay("WAIT_BUYER_PAY"), now()),
            Ok(Notice::Ignore)
        );
        assert_eq!(
            alipay_notice(&alipay("SOMETHING_NEW"), now())
                .unwrap_err()
                .status,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn an_alipay_refund_notice_settles_the_refund_whatever_the_trade_status() {
        for status in ["TRADE_SUCCESS", "TRADE_CLOSED"] {
            let mut n = alipay(status);
            n.out_biz_no = Some("R1".into());
            n.refund_fee = Some(d("4.00"));
            let p = pending(alipay_notice(&n, now()).unwrap());
            assert_eq!(p.outcome, NotifyOutcome::Success, "{status}");
            assert_eq!(p.refund_no.as_deref(), Some("R1"));
            assert_eq!(
                p.amount,
                NoticeAmount::AlipayRefund {
                    refund_fee: d("4.00"),
                    total: d("10.00")
                }
            );
        }
        let mut n = alipay("TRADE_SUCCESS");
        n.refund_fee = Some(d("4.00"));
        assert_eq!(
            alipay_notice(&n, now()).unwrap_err().status,
            StatusCode::BAD_REQUEST,
            "a refund notice without its refund number"
        );
    }

    fn transaction(
        mchid: &str,
        appid: &str,
        out_trade_no: &str,
        total: i64,
    ) -> wechat_wire::VerifiedNotification {
        wechat_wire::VerifiedNotification {
            id: "EV-1".into(),
            create_time: String::new(),
            event_type: wechat_wire::EVENT_TRANSACTION_SUCCESS.into(),
            summary: String::new(),
            event: NotificationEvent::TransactionSuccess(wechat_wire::Transaction {
                appid: appid.into(),
                mchid: mchid.into(),
                out_trade_no: out_trade_no.into(),
                transaction_id: Some("4200000001".into()),
                trade_type: Some("NATIVE".into()),
                trade_state: wechat_wire::TradeState::Success,
                trade_state_desc: String::new(),
                success_time: Some("2026-11-30T10:00:04+08:00".into()),
                amount: Some(wechat_wire::TransactionAmount {
                    total,
                    payer_total: None,
                    currency: "CNY".into(),
                    payer_currency: None,
                }),
            }),
        }
    }

    #[test]
    fn a_wechat_transaction_maps_fen_and_out_trade_no_back_exactly() {
        let hex = "0191F2A3B4C5D6E7F8091A2B3C4D5E6F";
        let p = pending(
            wechat_notice(&transaction("190", "wx1", hex, 1230), "190", "wx1", now()).unwrap(),
        );
        assert_eq!(p.payment_no, format!("P{hex}"));
        assert_eq!(p.amount, NoticeAmount::Exact(d("12.30")));
        assert_eq!(p.callback_no, "EV-1");
        assert_eq!(p.gateway_trade_no, "4200000001");
        assert_eq!(p.paid_at.to_rfc3339(), "2026-11-30T02:00:04+00:00");
        for (mchid, appid) in [("191", "wx1"), ("190", "wx2")] {
            assert_eq!(
                wechat_notice(&transaction(mchid, appid, hex, 1230), "190", "wx1", now())
                    .unwrap_err()
                    .status,
                StatusCode::FORBIDDEN
            );
        }
        assert_eq!(
            wechat_notice(
                &transaction("190", "wx1", "ORDER-OF-SOMEONE-ELSE", 1),
                "190",
                "wx1",
                now()
            )
            .unwrap_err()
            .status,
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn wechat_refund_events_settle_the_refund_by_its_number_in_exact_fen() {
        let hex = "0191F2A3B4C5D6E7F8091A2B3C4D5E6F";
        let notice = |event: RefundEvent, mchid: &str| wechat_wire::VerifiedNotification {
            id: "EV-2".into(),
            create_time: String::new(),
            event_type: String::new(),
            summary: String::new(),
            event: NotificationEvent::Refund {
                event,
                notice: wechat_wire::RefundNotice {
                    mchid: mchid.into(),
                    out_trade_no: hex.into(),
                    transaction_id: "4200000001".into(),
                    out_refund_no: "R01".into(),
                    refund_id: "50300001".into(),
                    refund_status: wechat_wire::RefundStatus::Success,
                    success_time: None,
                    user_received_account: None,
                    amount: wechat_wire::RefundAmount {
                        total: 10_000,
                        refund: 2_999,
                        payer_total: None,
                        payer_refund: None,
                        currency: None,
                    },
                },
            },
        };
        for (event, outcome) in [
            (RefundEvent::Success, NotifyOutcome::Success),
            (RefundEvent::Abnormal, NotifyOutcome::Failed),
            (RefundEvent::Closed, NotifyOutcome::Failed),
        ] {
            let p = pending(wechat_notice(&notice(event, "190"), "190", "wx1", now()).unwrap());
            assert_eq!(p.outcome, outcome, "{event:?}");
            assert_eq!(p.refund_no.as_deref(), Some("R01"));
            assert_eq!(p.payment_no, format!("P{hex}"));
            assert_eq!(p.amount, NoticeAmount::Exact(d("29.99")));
            assert_eq!(p.callback_no, "EV-2");
        }
        assert_eq!(
            wechat_notice(&notice(RefundEvent::Success, "191"), "190", "wx1", now())
                .unwrap_err()
                .status,
            StatusCode::FORBIDDEN
        );
    }

    #[test]
    fn wechat_verification_failures_are_401_or_400() {
        assert_eq!(
            wechat_refusal(&WechatError::BadSignature).status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            wechat_refusal(&WechatError::StaleTimestamp {
                timestamp: "1".into(),
                now: 1000
            })
            .status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            wechat_refusal(&WechatError::DecryptFailed).status,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn only_the_two_notify_paths_are_unsigned() {
        assert!(is_notify_path("/api/v1/gateways/alipay/notify/rsa2"));
        assert!(is_notify_path("/api/v1/gateways/wechat/notify/v3"));
        assert!(!is_notify_path("/api/v1/gateways/alipay/notify"));
        assert!(!is_notify_path("/api/v1/gateways/alipay/notify/rsa2/x"));
    }
}
