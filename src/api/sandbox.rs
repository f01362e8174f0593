//! The sandbox gateway's pay page (`/sandbox/pay/{payment_no}`), mounted only while
//! `LEDGER_SANDBOX=on` (development; refused in production). A person sees the order, the
//! amount and the method, and pays or fails it; the page then sends the notification a real
//! gateway would, signed with the sandbox's own secret (never a real gateway's), and comes
//! back to a result page with a way back to the checkout.
//!
//! The page cannot be used to forge or repeat money movements:
//! - it acts only on a pending payment whose sandbox order is still open;
//! - each rendering carries a one-time token (signed, expiring, bound to the payment) from
//!   which the notification's callback_no is derived, so a resubmitted form (a reload, a
//!   double click, a stale tab) is the same callback — a duplicate, never a new one;
//! - a form posted from another origin, or without a valid token, is refused;
//! - after acting it redirects (POST-redirect-GET), so a reload of the result does nothing.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Form, Router};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;

use super::envelope::{parse_accept_language, Lang};
use super::payments::payment_id_of_no;
use super::AppState;
use crate::domain::money::format_amount;
use crate::domain::{Payment, PaymentMethod, PaymentStatus};
use crate::gateway::sandbox::OrderState;
use crate::signing;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/sandbox/pay/{payment_no}", get(page).post(act))
        .route("/sandbox/pay/{payment_no}/result", get(result))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The page's two languages: everything visible is in both tables.
struct Text {
    title: &'static str,
    heading: &'static str,
    order: &'static str,
    amount: &'static str,
    method: &'static str,
    status: &'static str,
    pay: &'static str,
    fail: &'static str,
    not_found: &'static str,
    not_pending: &'static str,
    closed: &'static str,
    refused: &'static str,
    paid: &'static str,
    failed: &'static str,
    undelivered: &'static str,
    back: &'static str,
    note: &'static str,
    switch: &'static str,
}

const EN: Text = Text {
    title: "Sandbox gateway",
    heading: "Sandbox payment gateway",
    order: "Order",
    amount: "Amount",
    method: "Method",
    status: "Status",
    pay: "Pay",
    fail: "Decline",
    not_found: "There is no such payment.",
    not_pending: "This payment is no longer waiting to be paid.",
    closed: "This order was closed by the merchant (it expired).",
    refused: "This form cannot be used: open the payment page again from the checkout.",
    paid: "Payment succeeded",
    failed: "Payment declined",
    undelivered: "The gateway could not tell the merchant; try again.",
    back: "Back to the checkout",
    note: "Development only: no real money moves.",
    switch: "中文",
};

const ZH: Text = Text {
    title: "沙箱网关",
    heading: "沙箱支付网关",
    order: "订单",
    amount: "金额",
    method: "支付方式",
    status: "状态",
    pay: "支付",
    fail: "拒绝",
    not_found: "找不到该支付。",
    not_pending: "该支付已不在等待付款状态。",
    closed: "该订单已被商户关闭（已过期）。",
    refused: "此表单无法使用：请从收银台重新打开支付页面。",
    paid: "支付成功",
    failed: "支付被拒绝",
    undelivered: "网关未能通知商户，请重试。",
    back: "返回收银台",
    note: "仅用于开发环境：不会发生真实扣款。",
    switch: "English",
};

fn text(lang: Lang) -> &'static Text {
    match lang {
        Lang::En => &EN,
        Lang::Zh => &ZH,
    }
}

fn method_name(m: PaymentMethod, lang: Lang) -> &'static str {
    match (m, lang) {
        (PaymentMethod::Alipay, Lang::Zh) => "支付宝",
        (PaymentMethod::Wechat, Lang::Zh) => "微信支付",
        (PaymentMethod::Bank, Lang::Zh) => "银行转账",
        (PaymentMethod::CreditCard, Lang::Zh) => "信用卡",
        (PaymentMethod::Alipay, Lang::En) => "Alipay",
        (PaymentMethod::Wechat, Lang::En) => "WeChat Pay",
        (PaymentMethod::Bank, Lang::En) => "Bank transfer",
        (PaymentMethod::CreditCard, Lang::En) => "Credit card",
    }
}

#[derive(Deserialize, Default)]
struct LangQuery {
    lang: Option<String>,
    outcome: Option<String>,
    delivered: Option<String>,
}

fn lang_of(q: &LangQuery, headers: &HeaderMap) -> Lang {
    match q.lang.as_deref() {
        Some("zh") => Lang::Zh,
        Some("en") => Lang::En,
        _ => parse_accept_language(headers),
    }
}

const STYLE: &str = "*{box-sizing:border-box}body{margin:0;font-family:system-ui,-apple-system,\
'Segoe UI','PingFang SC','Microsoft YaHei',sans-serif;background:#eef2f7;color:#1f2933}\
main{max-width:28rem;margin:0 auto;padding:1.25rem}\
.card{background:#fff;border-radius:12px;padding:1.5rem;box-shadow:0 2px 10px #0002}\
h1{font-size:1.25rem;margin:0 0 1rem}dl{display:grid;grid-template-columns:auto 1fr;\
gap:.5rem 1rem;margin:0 0 1.25rem}dt{color:#52606d}dd{margin:0;font-weight:600;\
word-break:break-all}.amount{font-size:1.75rem}form{display:flex;gap:.75rem;flex-wrap:wrap}\
button{flex:1;min-width:8rem;font-size:1.05rem;padding:.85rem;border-radius:8px;border:0;\
cursor:pointer}button:focus-visible,a:focus-visible{outline:3px solid #1d4ed8;\
outline-offset:2px}#pay{background:#1d4ed8;color:#fff}#fail{background:#e4e7eb;color:#1f2933}\
.note{color:#52606d;font-size:.85rem;margin-top:1rem}.lang{float:right;color:#1d4ed8}\
.ok{color:#116d3a}.bad{color:#a61b1b}a{color:#1d4ed8}";

fn shell(lang: Lang, status: StatusCode, body: &str, switch_to: &str) -> Response {
    let t = text(lang);
    let html = format!(
        "<!doctype html><html lang=\"{html_lang}\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>{STYLE}</style></head><body><main>\
         <a class=\"lang\" href=\"{switch_to}\">{switch}</a>\
         <div class=\"card\">{body}</div><p class=\"note\">{note}</p></main></body></html>",
        html_lang = if lang == Lang::Zh { "zh-CN" } else { "en" },
        title = t.title,
        switch = t.switch,
        note = t.note,
    );
    let mut r = (status, Html(html)).into_response();
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn other_lang(lang: Lang) -> &'static str {
    match lang {
        Lang::En => "zh",
        Lang::Zh => "en",
    }
}

fn message(lang: Lang, status: StatusCode, no: &str, line: &str, back: bool) -> Response {
    let t = text(lang);
    let back = if back {
        format!(
            "<p><a id=\"back\" href=\"/checkout/{no}\">{}</a></p>",
            t.back,
            no = escape(no)
        )
    } else {
        String::new()
    };
    let body = format!("<h1>{}</h1><p id=\"message\">{line}</p>{back}", t.heading);
    let switch = format!("?lang={}", other_lang(lang));
    shell(lang, status, &body, &switch)
}

/// The payment a sandbox page names, from the log (a new payment's page never waits for
/// the projection).
async fn payment(state: &AppState, payment_no: &str) -> Option<Arc<Payment>> {
    let id = payment_id_of_no(payment_no)?;
    state
        .commands
        .load(id)
        .await
        .ok()
        .flatten()
        .filter(|p| p.payment_no == payment_no)
        // A payment a real gateway serves is paid at that gateway, never on this page.
        .filter(|p| !state.gateways.is_real(p.method))
}

fn token_key(state: &AppState) -> Vec<u8> {
    state.settings.master_key.derive("sandbox-page").to_vec()
}

fn mac(key: &[u8], payment_no: &str, expires: i64, nonce: &str) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(format!("{payment_no}\n{expires}\n{nonce}").as_bytes());
    hex::encode(m.finalize().into_bytes())
}

/// A one-time token for one rendering of one payment's page: `{expires}.{nonce}.{mac}`.
fn issue_token(state: &AppState, payment_no: &str) -> String {
    let expires = state.clock.now().timestamp() + state.settings.limits.sandbox_token_ttl_secs;
    let nonce = signing::new_nonce();
    format!(
        "{expires}.{nonce}.{}",
        mac(&token_key(state), payment_no, expires, &nonce)
    )
}

/// The token's nonce when the token is genuine, for this payment, and not expired.
fn check_token(state: &AppState, payment_no: &str, token: &str) -> Option<String> {
    let mut parts = token.splitn(3, '.');
    let (expires, nonce, given) = (parts.next()?, parts.next()?, parts.next()?);
    let expires: i64 = expires.parse().ok()?;
    if expires < state.clock.now().timestamp() || !signing::valid_nonce(nonce) {
        return None;
    }
    let expected = mac(&token_key(state), payment_no, expires, nonce);
    use subtle::ConstantTimeEq;
    bool::from(expected.as_bytes().ct_eq(given.as_bytes())).then(|| nonce.to_owned())
}

#[utoipa::path(get, path = "/sandbox/pay/{payment_no}", tag = "sandbox", operation_id = "sandbox_page",
    summary = "The sandbox gateway's pay page",
    description = "HTML, in English or Chinese (`lang`, else Accept-Language). Offers Pay and Decline for a pending payment, with a one-time token.",
    params(("payment_no" = String, Path), ("lang" = Option<String>, Query, description = "en or zh")),
    responses((status = 200, description = "the page", content_type = "text/html", body = String),
        (status = 404, description = "no such payment (a page saying so)", content_type = "text/html", body = String)))]
async fn page(
    State(state): State<Arc<AppState>>,
    Path(payment_no): Path<String>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
) -> Response {
    let lang = lang_of(&q, &headers);
    let t = text(lang);
    let Some(p) = payment(&state, &payment_no).await else {
        return message(lang, StatusCode::NOT_FOUND, &payment_no, t.not_found, false);
    };
    let no = escape(&p.payment_no);
    let closed = state.gateways.sandbox.order_state(&p.payment_no) == Some(OrderState::Closed);
    let actions = if p.status != PaymentStatus::Pending {
        format!("<p id=\"message\">{}</p>", t.not_pending)
    } else if closed {
        format!("<p id=\"message\">{}</p>", t.closed)
    } else {
        format!(
            "<form method=\"post\" action=\"/sandbox/pay/{no}?lang={l}\">\
             <input type=\"hidden\" name=\"token\" value=\"{token}\">\
             <button id=\"pay\" name=\"outcome\" value=\"success\">{pay}</button>\
             <button id=\"fail\" name=\"outcome\" value=\"failed\">{fail}</button></form>",
            l = if lang == Lang::Zh { "zh" } else { "en" },
            token = escape(&issue_token(&state, &p.payment_no)),
            pay = t.pay,
            fail = t.fail,
        )
    };
    let body = format!(
        "<h1>{heading}</h1><dl><dt>{order_l}</dt><dd id=\"order\">{order}</dd>\
         <dt>{amount_l}</dt><dd id=\"amount\" class=\"amount\">{amount} {currency}</dd>\
         <dt>{method_l}</dt><dd id=\"method\">{method}</dd>\
         <dt>{status_l}</dt><dd id=\"status\">{status}</dd></dl>{actions}\
         <p><a id=\"back\" href=\"/checkout/{no}\">{back}</a></p>",
        heading = t.heading,
        order_l = t.order,
        order = escape(&p.order_id),
        amount_l = t.amount,
        amount = format_amount(p.amount.amount(), p.currency()),
        currency = p.currency().code(),
        method_l = t.method,
        method = method_name(p.method, lang),
        status_l = t.status,
        status = p.status.name(),
        back = t.back,
    );
    let switch = format!("/sandbox/pay/{no}?lang={}", other_lang(lang));
    shell(lang, StatusCode::OK, &body, &switch)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = SandboxAction)]
struct Action {
    outcome: String,
    #[serde(default)]
    token: String,
}

/// Whether the form came from this service's own pages: a browser says where a form was
/// posted from (`Origin`, `Sec-Fetch-Site`); another site's form is refused.
fn same_origin(state: &AppState, headers: &HeaderMap) -> bool {
    let origin_ok = match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(origin) => {
            let own = state.settings.public_url.trim_end_matches('/');
            let host = headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            origin == own
                || origin == format!("http://{host}")
                || origin == format!("https://{host}")
        }
    };
    let fetch_ok = match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        None => true,
        Some(site) => site == "same-origin" || site == "none",
    };
    origin_ok && fetch_ok
}

#[utoipa::path(post, path = "/sandbox/pay/{payment_no}", tag = "sandbox", operation_id = "sandbox_act",
    summary = "Pay or decline in the sandbox",
    description = "The pay page's form: sends the signed notification a real gateway would, then redirects to the result page. Needs the page's one-time token and this service's origin.",
    params(("payment_no" = String, Path), ("lang" = Option<String>, Query, description = "en or zh")),
    request_body(content = Action, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303, description = "done: see the result page", headers(("Location" = String, description = "/sandbox/pay/{payment_no}/result?..."))),
        (status = 400, description = "outcome is neither success nor failed (a page saying so)", content_type = "text/html", body = String),
        (status = 403, description = "a bad or expired token, or another site's form (a page saying so)", content_type = "text/html", body = String),
        (status = 404, description = "no such payment (a page saying so)", content_type = "text/html", body = String),
        (status = 409, description = "the order was closed (a page saying so)", content_type = "text/html", body = String)))]
async fn act(
    State(state): State<Arc<AppState>>,
    Path(payment_no): Path<String>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
    Form(action): Form<Action>,
) -> Response {
    let lang = lang_of(&q, &headers);
    let t = text(lang);
    let Some(p) = payment(&state, &payment_no).await else {
        return message(lang, StatusCode::NOT_FOUND, &payment_no, t.not_found, false);
    };
    let outcome = match action.outcome.as_str() {
        o @ ("success" | "failed") => o,
        _ => return message(lang, StatusCode::BAD_REQUEST, &payment_no, t.refused, true),
    };
    let nonce = match check_token(&state, &payment_no, &action.token) {
        Some(n) if same_origin(&state, &headers) => n,
        _ => {
            tracing::warn!(payment_no = %payment_no, "sandbox form refused: foreign origin or bad token");
            return message(lang, StatusCode::FORBIDDEN, &payment_no, t.refused, true);
        }
    };
    // A payment already settled: nothing to do (a resubmission of a used page lands here
    // too, after its first notification settled the payment).
    if p.status != PaymentStatus::Pending {
        return see_result(&payment_no, lang, None, true);
    }
    if outcome == "success" && !state.gateways.sandbox.mark_paid(&p.payment_no) {
        return message(lang, StatusCode::CONFLICT, &payment_no, t.closed, true);
    }
    let delivered = notify(&state, &p, outcome, &nonce).await;
    see_result(&payment_no, lang, Some(outcome), delivered)
}

fn see_result(payment_no: &str, lang: Lang, outcome: Option<&str>, delivered: bool) -> Response {
    let l = if lang == Lang::Zh { "zh" } else { "en" };
    let mut to = format!("/sandbox/pay/{payment_no}/result?lang={l}&delivered={delivered}");
    if let Some(o) = outcome {
        to.push_str(&format!("&outcome={o}"));
    }
    Redirect::to(&to).into_response()
}

/// Sends the notification a real gateway would, signed with the sandbox's own secret, to
/// this service's notify endpoint. The callback number comes from the page's token, so a
/// resubmitted form repeats the same callback. Returns whether it was accepted.
async fn notify(state: &AppState, p: &Payment, outcome: &str, nonce: &str) -> bool {
    let Some(secret) = state.settings.sandbox_secret.clone() else {
        return false;
    };
    let faults = &state.gateways.sandbox.faults;
    let amount = p.amount.amount();
    let amount = if faults.take_wrong_amount() {
        // One minor unit more: well-formed in the currency, but not what the payment asks.
        amount + rust_decimal::Decimal::new(1, p.currency().minor_unit())
    } else {
        amount
    };
    let body = json!({
        "payment_no": p.payment_no,
        "callback_no": format!("SBX-{nonce}"),
        "status": outcome,
        "amount": format_amount(amount, p.currency()),
        "gateway_trade_no": format!("SBXT-{nonce}"),
        "paid_at": crate::store::event::format_time(state.clock.now()),
    })
    .to_string();
    let late = faults.take_late_ms();
    let times = if faults.take_notify_twice() { 2 } else { 1 };
    let method = p.method;
    let url = format!(
        "{}/api/v1/gateways/{}/notify",
        state.settings.public_url,
        method.name()
    );
    let path = format!("/api/v1/gateways/{}/notify", method.name());
    let send = async move {
        if late > 0 {
            tokio::time::sleep(Duration::from_millis(late as u64)).await;
        }
        let client = reqwest::Client::new();
        let mut delivered = false;
        for _ in 0..times {
            let ts = chrono::Utc::now().timestamp().to_string();
            let nonce = signing::new_nonce();
            let sig = signing::sign(&secret, &ts, &nonce, "POST", &path, body.as_bytes());
            let r = client
                .post(&url)
                .header("content-type", "application/json")
                .header("x-key-id", method.name())
                .header("x-timestamp", ts)
                .header("x-nonce", nonce)
                .header("x-signature", sig)
                .body(body.clone())
                .send()
                .await;
            delivered = match r {
                Ok(r) => r.status().is_success(),
                Err(e) => {
                    tracing::warn!(error = %e, "sandbox could not deliver its notification");
                    false
                }
            };
        }
        delivered
    };
    if late > 0 {
        tokio::spawn(send);
        return true;
    }
    send.await
}

#[utoipa::path(get, path = "/sandbox/pay/{payment_no}/result", tag = "sandbox", operation_id = "sandbox_result",
    summary = "The sandbox's result page",
    params(("payment_no" = String, Path), ("lang" = Option<String>, Query, description = "en or zh"),
        ("outcome" = Option<String>, Query), ("delivered" = Option<String>, Query)),
    responses((status = 200, description = "the result", content_type = "text/html", body = String),
        (status = 404, description = "no such payment (a page saying so)", content_type = "text/html", body = String)))]
async fn result(
    State(state): State<Arc<AppState>>,
    Path(payment_no): Path<String>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
) -> Response {
    let lang = lang_of(&q, &headers);
    let t = text(lang);
    let Some(p) = payment(&state, &payment_no).await else {
        return message(lang, StatusCode::NOT_FOUND, &payment_no, t.not_found, false);
    };
    let line = match (q.delivered.as_deref(), q.outcome.as_deref()) {
        (Some("false"), _) => format!("<span class=\"bad\">{}</span>", t.undelivered),
        (_, Some("success")) => format!("<span id=\"result\" class=\"ok\">{}</span>", t.paid),
        (_, Some("failed")) => format!("<span id=\"result\" class=\"bad\">{}</span>", t.failed),
        _ => t.not_pending.to_owned(),
    };
    message(lang, StatusCode::OK, &p.payment_no, &line, true)
}
