//! The Alipay simulator: the open platform's gateway (`/gateway.do`) as a merchant sees it.
//!
//! - `GET /gateway.do?{signed page-pay params}`: verifies the merchant's RSA2 signature and
//!   `app_id`, opens the trade (Alipay creates it only now) and shows it with Pay and Close
//!   buttons (`POST /sim/pay`, `POST /sim/close`).
//! - Paying or closing sends a `trade_status_sync` notification (form-encoded, RSA2-signed
//!   with the simulator's key over every parameter but `sign` and `sign_type`) to the
//!   trade's `notify_url`, again and again with backoff until the answer is `success`.
//! - `POST /gateway.do` with `method=`: `alipay.trade.query`, `alipay.trade.refund`,
//!   `alipay.trade.fastpay.refund.query`, `alipay.trade.close`, each answered with
//!   `{"<method>_response":{…},"sign":"…"}` signed over the exact content bytes.
//! - `GET /sim/state` (JSON) and `POST /sim/faults` (`name=count,…`) for people and demos.
//!
//! Must not: build a signature or message by hand (`ledger_wire::alipay::sim` does).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Form, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{NaiveDateTime, Utc};
use ledger_wire::alipay::{
    encode_form, format_amount, parse_amount, parse_form, sim, timestamp, Params, TradeStatus,
};
use ledger_wire::keys::{PrivateKey, PublicKey};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{
    html, lock, page, random_alnum, take, Delivery, DeliveryRecord, Faults, Notifier,
    NotifySchedule, Prepared, Running, Sequence, ORDERS_MAX,
};

const TRADE_QUERY: &str = "alipay.trade.query";
const TRADE_REFUND: &str = "alipay.trade.refund";
const REFUND_QUERY: &str = "alipay.trade.fastpay.refund.query";
const TRADE_CLOSE: &str = "alipay.trade.close";

/// What the simulator is, and how it behaves.
#[derive(Debug, Clone)]
pub struct AlipaySimConfig {
    /// The merchant's app id: requests must carry it, notifications name it.
    pub app_id: String,
    /// The simulator's own key ("Alipay's private key"): it signs answers and notifications.
    pub alipay_key: PrivateKey,
    /// The merchant's app public key: requests must verify with it.
    pub merchant_public_key: PublicKey,
    pub notify: NotifySchedule,
    /// How long an answer armed with `timeout_next` takes.
    pub slow_answer: Duration,
    /// How long a refund armed with `refund_pending` stays pending.
    pub refund_settle: Duration,
}

impl AlipaySimConfig {
    pub fn new(alipay_key: PrivateKey, merchant_public_key: PublicKey) -> Self {
        Self {
            app_id: "2021000000000001".into(),
            alipay_key,
            merchant_public_key,
            notify: NotifySchedule::default(),
            slow_answer: Duration::from_secs(30),
            refund_settle: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, Clone)]
struct SimRefund {
    out_request_no: String,
    amount: Decimal,
    done: bool,
}

#[derive(Debug, Clone)]
struct Trade {
    out_trade_no: String,
    trade_no: String,
    total_amount: Decimal,
    subject: String,
    notify_url: String,
    return_url: Option<String>,
    status: TradeStatus,
    gmt_create: String,
    gmt_payment: Option<String>,
    gmt_close: Option<String>,
    refunds: Vec<SimRefund>,
}

impl Trade {
    fn refunded(&self) -> Decimal {
        self.refunds
            .iter()
            .filter(|r| r.done)
            .map(|r| r.amount)
            .sum()
    }

    fn promised(&self) -> Decimal {
        self.refunds.iter().map(|r| r.amount).sum()
    }
}

/// A trade as the simulator holds it, for tests and `/sim/state`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TradeView {
    pub out_trade_no: String,
    pub trade_no: String,
    pub status: String,
    pub total_amount: String,
    pub refunded: String,
    pub refunds: Vec<(String, String, bool)>,
}

impl From<&Trade> for TradeView {
    fn from(t: &Trade) -> Self {
        TradeView {
            out_trade_no: t.out_trade_no.clone(),
            trade_no: t.trade_no.clone(),
            status: t.status.as_str().to_owned(),
            total_amount: t.total_amount.to_string(),
            refunded: t.refunded().to_string(),
            refunds: t
                .refunds
                .iter()
                .map(|r| (r.out_request_no.clone(), r.amount.to_string(), r.done))
                .collect(),
        }
    }
}

/// The simulated gateway.
pub struct AlipaySim {
    pub config: AlipaySimConfig,
    pub faults: Faults,
    trades: Mutex<HashMap<String, Trade>>,
    /// Every `alipay.trade.close` received: (out_trade_no, what it answered).
    closes: Mutex<Vec<(String, String)>>,
    seq: Sequence,
    notifier: Arc<Notifier>,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

/// Starts the simulator on `listener`; `base_url` is where it is reached.
pub fn spawn(
    config: AlipaySimConfig,
    listener: tokio::net::TcpListener,
    base_url: String,
) -> anyhow::Result<(Arc<AlipaySim>, Running)> {
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let notifier = Arc::new(Notifier::new(
        config.notify.clone(),
        |_, body| body.trim() == ledger_wire::alipay::NOTIFY_ACK,
        tracker.clone(),
        cancel.clone(),
    )?);
    let sim = Arc::new(AlipaySim {
        config,
        faults: Faults::default(),
        trades: Mutex::new(HashMap::new()),
        closes: Mutex::new(Vec::new()),
        seq: Sequence::default(),
        notifier,
        tracker: tracker.clone(),
        cancel: cancel.clone(),
    });
    let router = Router::new()
        .route("/gateway.do", get(pay_page).post(openapi))
        .route("/sim/pay", post(pay_button))
        .route("/sim/close", post(close_button))
        .route("/sim/state", get(state))
        .route("/sim/faults", post(arm_faults))
        .layer(axum::extract::DefaultBodyLimit::max(super::BODY_BYTES_MAX))
        .with_state(sim.clone());
    let running = Running::start(listener, base_url, router, cancel, tracker)?;
    Ok((sim, running))
}

fn success(mut fields: Value) -> String {
    fields["code"] = json!("10000");
    fields["msg"] = json!("Success");
    fields.to_string()
}

fn business_failure(sub_code: &str, sub_msg: &str) -> String {
    json!({"code": "40004", "msg": "Business Failed", "sub_code": sub_code, "sub_msg": sub_msg})
        .to_string()
}

fn unknown_outcome() -> String {
    json!({"code": "20000", "msg": "Service Currently Unavailable", "sub_code": "aop.ACQ.SYSTEM_ERROR", "sub_msg": "系统繁忙"})
        .to_string()
}

fn amount(d: Decimal) -> String {
    format_amount(d).unwrap_or_else(|_| d.to_string())
}

/// `yyyy-MM-dd HH:mm:ss` in +08:00, as Alipay writes `time_expire`.
fn parse_cst(text: &str) -> Option<chrono::DateTime<Utc>> {
    let local = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").ok()?;
    Some(local.and_utc() - chrono::Duration::hours(8))
}

enum Notice {
    Paid,
    Closed,
    Refund { out_biz_no: String },
}

impl AlipaySim {
    pub fn trade(&self, out_trade_no: &str) -> Option<TradeView> {
        lock(&self.trades).get(out_trade_no).map(TradeView::from)
    }

    /// Every close request received: (out_trade_no, answer code).
    pub fn closes(&self) -> Vec<(String, String)> {
        lock(&self.closes).clone()
    }

    pub fn deliveries(&self) -> Vec<DeliveryRecord> {
        self.notifier.deliveries()
    }

    /// Opens the trade a page-pay URL's query describes (what the payer's browser does).
    pub fn open(&self, query: &[u8]) -> Result<TradeView, String> {
        let params = sim::verify_request(query, &self.config.merchant_public_key)
            .map_err(|e| format!("isv.invalid-signature: {e}"))?;
        let get = |k: &str| params.get(k).map(String::as_str).unwrap_or_default();
        if get("app_id") != self.config.app_id {
            return Err(format!("isv.invalid-app-id: {:?}", get("app_id")));
        }
        if !matches!(
            get("method"),
            "alipay.trade.page.pay" | "alipay.trade.wap.pay"
        ) {
            return Err(format!("isv.invalid-method: {:?}", get("method")));
        }
        let biz: Value = serde_json::from_str(get("biz_content"))
            .map_err(|e| format!("isv.invalid-biz-content: {e}"))?;
        let text = |k: &str| biz[k].as_str().unwrap_or_default().to_owned();
        let out_trade_no = text("out_trade_no");
        let total =
            parse_amount("total_amount", &text("total_amount")).map_err(|e| e.to_string())?;
        let expired = parse_cst(&text("time_expire")).is_some_and(|t| t < Utc::now());
        let mut trades = lock(&self.trades);
        if let Some(t) = trades.get_mut(&out_trade_no) {
            if t.total_amount != total {
                return Err(
                    "ACQ.TRADE_HAS_CHANGE: the trade was opened with another amount".into(),
                );
            }
            if expired && t.status == TradeStatus::WaitBuyerPay {
                t.status = TradeStatus::TradeClosed;
                t.gmt_close = Some(timestamp(Utc::now()));
            }
            return Ok(TradeView::from(&*t));
        }
        if out_trade_no.is_empty() || get("notify_url").is_empty() {
            return Err("isv.missing-parameter: out_trade_no and notify_url are required".into());
        }
        if trades.len() >= ORDERS_MAX {
            return Err("ACQ.SYSTEM_ERROR: the simulator is full".into());
        }
        let now = Utc::now();
        let trade = Trade {
            trade_no: format!("{}22001{:012}", now.format("%Y%m%d"), self.seq.next()),
            out_trade_no: out_trade_no.clone(),
            total_amount: total,
            subject: text("subject"),
            notify_url: get("notify_url").to_owned(),
            return_url: params.get("return_url").cloned(),
            status: if expired {
                TradeStatus::TradeClosed
            } else {
                TradeStatus::WaitBuyerPay
            },
            gmt_create: timestamp(now),
            gmt_payment: None,
            gmt_close: expired.then(|| timestamp(now)),
            refunds: Vec::new(),
        };
        let view = TradeView::from(&trade);
        trades.insert(out_trade_no, trade);
        Ok(view)
    }

    /// The payer pays (the Pay button).
    pub fn pay(&self, out_trade_no: &str) -> Result<TradeView, String> {
        self.settle_by_payer(out_trade_no, true)
    }

    /// The payer gives up and the trade closes (the Close button).
    pub fn close_by_payer(&self, out_trade_no: &str) -> Result<TradeView, String> {
        self.settle_by_payer(out_trade_no, false)
    }

    fn settle_by_payer(&self, out_trade_no: &str, pay: bool) -> Result<TradeView, String> {
        let (delivery, view) = {
            let mut trades = lock(&self.trades);
            let t = trades
                .get_mut(out_trade_no)
                .ok_or_else(|| "ACQ.TRADE_NOT_EXIST".to_owned())?;
            if t.status != TradeStatus::WaitBuyerPay {
                return Err(format!("the trade is {}", t.status.as_str()));
            }
            let now = timestamp(Utc::now());
            if pay {
                t.status = TradeStatus::TradeSuccess;
                t.gmt_payment = Some(now);
            } else {
                t.status = TradeStatus::TradeClosed;
                t.gmt_close = Some(now);
            }
            let notice = if pay { Notice::Paid } else { Notice::Closed };
            (self.notification(t, notice), TradeView::from(&*t))
        };
        self.notifier
            .send(delivery, take(&self.faults.notify_out_of_order));
        Ok(view)
    }

    /// A notification about `t`, with the faults armed for it taken.
    fn notification(&self, t: &Trade, notice: Notice) -> Delivery {
        let now = Utc::now();
        let notify_id = format!("{}{}", now.format("%Y%m%d%H%M%S"), random_alnum(20));
        let app_id = if take(&self.faults.notify_other_merchant) {
            super::other_id(&self.config.app_id)
        } else {
            self.config.app_id.clone()
        };
        let mut total = t.total_amount;
        if matches!(notice, Notice::Paid) && take(&self.faults.notify_wrong_amount) {
            total = if total > Decimal::new(1, 2) {
                total - Decimal::new(1, 2)
            } else {
                total + Decimal::new(1, 2)
            };
        }
        let mut params: Params = [
            ("notify_time", timestamp(now)),
            ("notify_type", "trade_status_sync".to_owned()),
            ("notify_id", notify_id.clone()),
            ("app_id", app_id),
            ("charset", "utf-8".to_owned()),
            ("version", "1.0".to_owned()),
            ("trade_no", t.trade_no.clone()),
            ("out_trade_no", t.out_trade_no.clone()),
            ("trade_status", t.status.as_str().to_owned()),
            ("total_amount", amount(total)),
            ("subject", t.subject.clone()),
            ("gmt_create", t.gmt_create.clone()),
            ("seller_id", "2088000000000001".to_owned()),
            ("buyer_id", "2088000000000002".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let mut optional = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                params.insert(k.to_owned(), v);
            }
        };
        optional("gmt_payment", t.gmt_payment.clone());
        optional("gmt_close", t.gmt_close.clone());
        let kind = match &notice {
            Notice::Paid => {
                optional("receipt_amount", Some(amount(total)));
                optional("buyer_pay_amount", Some(amount(total)));
                t.status.as_str().to_owned()
            }
            Notice::Closed => t.status.as_str().to_owned(),
            Notice::Refund { out_biz_no } => {
                optional("out_biz_no", Some(out_biz_no.clone()));
                optional("refund_fee", Some(amount(t.refunded())));
                optional("gmt_refund", Some(timestamp(now)));
                format!("REFUND {out_biz_no}")
            }
        };
        let signed = sim::sign_notification(&params, &self.config.alipay_key);
        // Tampered: the amount changed after Alipay signed it.
        let tampered = take(&self.faults.notify_tampered).then(|| {
            let mut form = parse_form(signed.as_bytes()).unwrap_or_default();
            if let Some(v) = form.get_mut("total_amount") {
                *v = amount(t.total_amount + Decimal::ONE);
            }
            encode_form(&form)
        });
        Delivery {
            message_id: notify_id,
            out_trade_no: t.out_trade_no.clone(),
            kind,
            url: t.notify_url.clone(),
            twice: take(&self.faults.notify_twice),
            prepare: Arc::new(move |attempt| Prepared {
                body: match (&tampered, attempt) {
                    (Some(bad), 1) => bad.clone().into_bytes(),
                    _ => signed.clone().into_bytes(),
                },
                content_type: "application/x-www-form-urlencoded; charset=utf-8",
                headers: Vec::new(),
            }),
        }
    }

    /// Answers an OpenAPI request (the signed body of `POST /gateway.do`).
    pub fn api(self: &Arc<Self>, form: &[u8]) -> String {
        let params = parse_form(form).unwrap_or_default();
        let method = params.get("method").cloned().unwrap_or_default();
        let content = match sim::verify_request(form, &self.config.merchant_public_key) {
            Err(e) => json!({"code": "40002", "msg": "Invalid Arguments", "sub_code": "isv.invalid-signature", "sub_msg": e.to_string()}).to_string(),
            Ok(_) if params.get("app_id") != Some(&self.config.app_id) => json!({"code": "40002", "msg": "Invalid Arguments", "sub_code": "isv.invalid-app-id", "sub_msg": "app_id"}).to_string(),
            Ok(params) => {
                let biz: Value = params
                    .get("biz_content")
                    .and_then(|b| serde_json::from_str(b).ok())
                    .unwrap_or(Value::Null);
                let text = |k: &str| biz[k].as_str().unwrap_or_default().to_owned();
                match method.as_str() {
                    TRADE_QUERY => self.query(&text("out_trade_no")),
                    TRADE_REFUND => self.refund(
                        &text("out_trade_no"),
                        &text("out_request_no"),
                        &text("refund_amount"),
                    ),
                    REFUND_QUERY => self.refund_query(&text("out_trade_no"), &text("out_request_no")),
                    TRADE_CLOSE => self.close(&text("out_trade_no")),
                    _ => json!({"code": "40002", "msg": "Invalid Arguments", "sub_code": "isv.invalid-method", "sub_msg": method}).to_string(),
                }
            }
        };
        let method = if method.is_empty() {
            "error"
        } else {
            method.as_str()
        };
        sim::sign_response(method, &content, &self.config.alipay_key).unwrap_or_default()
    }

    fn query(&self, out_trade_no: &str) -> String {
        let trades = lock(&self.trades);
        let Some(t) = trades.get(out_trade_no) else {
            return business_failure("ACQ.TRADE_NOT_EXIST", "交易不存在");
        };
        let mut fields = json!({
            "out_trade_no": t.out_trade_no,
            "trade_no": t.trade_no,
            "trade_status": t.status.as_str(),
            "total_amount": amount(t.total_amount),
        });
        if t.status.is_paid() {
            fields["buyer_pay_amount"] = json!(amount(t.total_amount));
            fields["send_pay_date"] = json!(t.gmt_payment);
        }
        success(fields)
    }

    fn refund(
        self: &Arc<Self>,
        out_trade_no: &str,
        out_request_no: &str,
        refund_amount: &str,
    ) -> String {
        let Ok(refund_amount) = parse_amount("refund_amount", refund_amount) else {
            return business_failure("ACQ.INVALID_PARAMETER", "refund_amount");
        };
        let mut trades = lock(&self.trades);
        let Some(t) = trades.get_mut(out_trade_no) else {
            return business_failure("ACQ.TRADE_NOT_EXIST", "交易不存在");
        };
        // The refund number is the idempotency key: a retry reports the first request's fate.
        if let Some(r) = t
            .refunds
            .iter()
            .find(|r| r.out_request_no == out_request_no)
        {
            if !r.done {
                return unknown_outcome();
            }
            return success(json!({
                "out_trade_no": t.out_trade_no, "trade_no": t.trade_no,
                "refund_fee": amount(t.refunded()), "fund_change": "N",
            }));
        }
        if t.status != TradeStatus::TradeSuccess {
            return business_failure("ACQ.TRADE_STATUS_ERROR", "交易状态不合法");
        }
        if refund_amount + t.promised() > t.total_amount {
            return business_failure("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "退款金额超限");
        }
        let pending = take(&self.faults.refund_pending);
        t.refunds.push(SimRefund {
            out_request_no: out_request_no.to_owned(),
            amount: refund_amount,
            done: !pending,
        });
        if pending {
            let (me, no, request) = (
                self.clone(),
                out_trade_no.to_owned(),
                out_request_no.to_owned(),
            );
            let settle = self.config.refund_settle;
            self.tracker.spawn(async move {
                tokio::select! {
                    _ = me.cancel.cancelled() => {}
                    _ = tokio::time::sleep(settle) => me.settle_refund(&no, &request),
                }
            });
            return unknown_outcome();
        }
        if t.refunded() >= t.total_amount {
            t.status = TradeStatus::TradeClosed;
        }
        success(json!({
            "out_trade_no": t.out_trade_no, "trade_no": t.trade_no,
            "refund_fee": amount(t.refunded()), "fund_change": "Y",
            "gmt_refund_pay": timestamp(Utc::now()),
        }))
    }

    /// A pending refund goes through, and Alipay notifies it.
    fn settle_refund(&self, out_trade_no: &str, out_request_no: &str) {
        let delivery = {
            let mut trades = lock(&self.trades);
            let Some(t) = trades.get_mut(out_trade_no) else {
                return;
            };
            let Some(r) = t
                .refunds
                .iter_mut()
                .find(|r| r.out_request_no == out_request_no)
            else {
                return;
            };
            r.done = true;
            if t.refunded() >= t.total_amount {
                t.status = TradeStatus::TradeClosed;
            }
            self.notification(
                t,
                Notice::Refund {
                    out_biz_no: out_request_no.to_owned(),
                },
            )
        };
        self.notifier
            .send(delivery, take(&self.faults.notify_out_of_order));
    }

    fn refund_query(&self, out_trade_no: &str, out_request_no: &str) -> String {
        let trades = lock(&self.trades);
        let Some(t) = trades.get(out_trade_no) else {
            return business_failure("ACQ.TRADE_NOT_EXIST", "交易不存在");
        };
        let mut fields = json!({"out_trade_no": t.out_trade_no, "trade_no": t.trade_no});
        if let Some(r) = t
            .refunds
            .iter()
            .find(|r| r.out_request_no == out_request_no && r.done)
        {
            fields["out_request_no"] = json!(r.out_request_no);
            fields["refund_amount"] = json!(amount(r.amount));
            fields["total_amount"] = json!(amount(t.total_amount));
            fields["refund_status"] = json!("REFUND_SUCCESS");
        }
        success(fields)
    }

    fn close(&self, out_trade_no: &str) -> String {
        let answer = {
            let mut trades = lock(&self.trades);
            match trades.get_mut(out_trade_no) {
                None => Err("ACQ.TRADE_NOT_EXIST"),
                Some(t) if t.status == TradeStatus::WaitBuyerPay => {
                    t.status = TradeStatus::TradeClosed;
                    t.gmt_close = Some(timestamp(Utc::now()));
                    Ok(success(
                        json!({"out_trade_no": t.out_trade_no, "trade_no": t.trade_no}),
                    ))
                }
                Some(_) => Err("ACQ.TRADE_STATUS_ERROR"),
            }
        };
        let mut closes = lock(&self.closes);
        if closes.len() < ORDERS_MAX {
            let what = answer.as_ref().map(|_| "closed").unwrap_or_else(|e| e);
            closes.push((out_trade_no.to_owned(), what.to_owned()));
        }
        answer.unwrap_or_else(|code| business_failure(code, "交易状态不允许关闭"))
    }
}

async fn pay_page(State(sim): State<Arc<AlipaySim>>, RawQuery(query): RawQuery) -> Response {
    match sim.open(query.unwrap_or_default().as_bytes()) {
        Ok(t) => {
            let buttons = if t.status == TradeStatus::WaitBuyerPay.as_str() {
                let no = html(&t.out_trade_no);
                format!(
                    "<form method=\"post\" action=\"/sim/pay\"><input type=\"hidden\" name=\"out_trade_no\" value=\"{no}\"><button id=\"pay\">Pay</button></form>\
                     <form method=\"post\" action=\"/sim/close\"><input type=\"hidden\" name=\"out_trade_no\" value=\"{no}\"><button id=\"close\">Close</button></form>"
                )
            } else {
                String::new()
            };
            page(
                "Alipay (simulator)",
                &format!(
                    "<dl><dt>Merchant app</dt><dd>{}</dd><dt>Order</dt><dd>{}</dd><dt>Amount</dt><dd id=\"amount\">¥{}</dd><dt>Status</dt><dd id=\"status\">{}</dd></dl>{buttons}",
                    html(&sim.config.app_id),
                    html(&t.out_trade_no),
                    html(&t.total_amount),
                    html(&t.status)
                ),
            )
            .into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            page(
                "Alipay (simulator): error",
                &format!("<p id=\"error\">{}</p>", html(&e)),
            ),
        )
            .into_response(),
    }
}

async fn openapi(State(sim): State<Arc<AlipaySim>>, body: Bytes) -> Response {
    if take(&sim.faults.fail_next) {
        return (StatusCode::SERVICE_UNAVAILABLE, "simulated outage").into_response();
    }
    let slow = take(&sim.faults.timeout_next);
    let answer = sim.api(&body);
    if slow {
        tokio::select! {
            _ = sim.cancel.cancelled() => {}
            _ = tokio::time::sleep(sim.config.slow_answer) => {}
        }
    }
    (
        [(header::CONTENT_TYPE, "application/json;charset=utf-8")],
        answer,
    )
        .into_response()
}

fn after_button(sim: &AlipaySim, result: Result<TradeView, String>, no: &str) -> Response {
    match result {
        Ok(t) => {
            let back = lock(&sim.trades)
                .get(no)
                .and_then(|t| t.return_url.clone())
                .map(|u| {
                    format!(
                        "<p><a id=\"return\" href=\"{}\">Back to the merchant</a></p>",
                        html(&u)
                    )
                })
                .unwrap_or_default();
            page(
                "Alipay (simulator)",
                &format!(
                    "<p id=\"status\">{}</p><p>The merchant is being notified.</p>{back}",
                    html(&t.status)
                ),
            )
            .into_response()
        }
        Err(e) => (
            StatusCode::CONFLICT,
            page(
                "Alipay (simulator): error",
                &format!("<p id=\"error\">{}</p>", html(&e)),
            ),
        )
            .into_response(),
    }
}

async fn pay_button(
    State(sim): State<Arc<AlipaySim>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let no = form.get("out_trade_no").cloned().unwrap_or_default();
    let result = sim.pay(&no);
    after_button(&sim, result, &no)
}

async fn close_button(
    State(sim): State<Arc<AlipaySim>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let no = form.get("out_trade_no").cloned().unwrap_or_default();
    let result = sim.close_by_payer(&no);
    after_button(&sim, result, &no)
}

async fn state(State(sim): State<Arc<AlipaySim>>) -> Response {
    let trades: Vec<TradeView> = lock(&sim.trades).values().map(TradeView::from).collect();
    axum::Json(json!({
        "app_id": sim.config.app_id,
        "trades": trades,
        "closes": sim.closes(),
        "deliveries": sim.deliveries(),
    }))
    .into_response()
}

async fn arm_faults(State(sim): State<Arc<AlipaySim>>, body: Bytes) -> Response {
    match sim.faults.arm(&String::from_utf8_lossy(&body)) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
    }
}
