//! The WeChat Pay API v3 simulator: the REST API a merchant calls, and the platform's side of
//! notifications.
//!
//! - Every `/v3/…` call must carry `Authorization: WECHATPAY2-SHA256-RSA2048 …` signed with
//!   the merchant's key (checked against its public key, mchid and certificate serial, with a
//!   five-minute timestamp window); every answer, errors included, is signed with the
//!   simulator's platform key (`Wechatpay-Timestamp`, `-Nonce`, `-Signature`, `-Serial`).
//! - `POST /v3/pay/transactions/native` answers a `code_url`: here a link to the simulator's
//!   own pay page (`/pay/{code}`), which a browser can open where a phone would scan
//!   `weixin://wxpay/bizpayurl?pr=…`. Placing the same order again answers the same code.
//! - Query and close by `out_trade_no`, refund (`out_refund_no` is the idempotency key) and
//!   refund query, with WeChat Pay's error codes (`ORDER_NOT_EXIST`, `ORDERPAID`,
//!   `RESOURCE_NOT_EXISTS`, …).
//! - Paying sends `TRANSACTION.SUCCESS`, a pending refund that settles sends
//!   `REFUND.SUCCESS`: a signed JSON envelope whose `resource` is AEAD_AES_256_GCM-encrypted
//!   with the APIv3 key, re-signed for each attempt until the merchant answers a 2xx.
//!
//! Must not: build a signature or an encryption by hand (`ledger_wire::wechat::sim` does).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Form, Path, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::Utc;
use ledger_wire::keys::{PrivateKey, PublicKey};
use ledger_wire::wechat::sim::{self, NotificationSpec, PlatformSigner};
use ledger_wire::wechat::{
    self as wire, ApiV3Key, Refund, RefundAmount, RefundNotice, RefundStatus, TradeState,
    Transaction, TransactionAmount,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{
    html, lock, page, random_alnum, take, Delivery, DeliveryRecord, Faults, Notifier,
    NotifySchedule, Prepared, Running, Sequence, ORDERS_MAX,
};

/// How far in the past a notification armed with `notify_stale` is signed.
pub const STALE_SECS: i64 = 600;

/// What the simulator is, and how it behaves.
#[derive(Debug, Clone)]
pub struct WechatSimConfig {
    pub mchid: String,
    pub appid: String,
    /// The APIv3 key shared with the merchant (notifications are encrypted with it).
    pub apiv3_key: ApiV3Key,
    /// The same key as text, to print for the merchant's configuration.
    pub apiv3_key_text: String,
    /// The platform's signing key and the serial merchants know it by.
    pub platform: PlatformSigner,
    pub merchant_public_key: PublicKey,
    /// The serial of the merchant's API certificate: requests must name it.
    pub merchant_serial: String,
    pub notify: NotifySchedule,
    pub slow_answer: Duration,
    pub refund_settle: Duration,
}

impl WechatSimConfig {
    /// A simulator with fresh ids and APIv3 key around the given keys.
    pub fn new(platform_key: PrivateKey, merchant_public_key: PublicKey) -> Self {
        let apiv3_key_text = random_alnum(32);
        Self {
            mchid: "1900000001".into(),
            appid: "wx0000000000000001".into(),
            apiv3_key: ApiV3Key::new(&apiv3_key_text)
                .expect("32 random letters and digits are a valid APIv3 key"),
            apiv3_key_text,
            platform: PlatformSigner {
                serial: format!("PUB_KEY_ID_{}", random_alnum(16).to_uppercase()),
                private_key: platform_key,
            },
            merchant_public_key,
            merchant_serial: hex::encode_upper(rand::random::<[u8; 20]>()),
            notify: NotifySchedule::default(),
            slow_answer: Duration::from_secs(30),
            refund_settle: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, Clone)]
struct Order {
    out_trade_no: String,
    description: String,
    total: i64,
    notify_url: String,
    code: String,
    state: TradeState,
    transaction_id: Option<String>,
    success_time: Option<String>,
    refunded: i64,
}

#[derive(Debug, Clone)]
struct SimRefund {
    refund: Refund,
    notify_url: Option<String>,
}

/// An order as the simulator holds it, for tests and `/sim/state`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OrderView {
    pub out_trade_no: String,
    pub state: String,
    pub total_fen: i64,
    pub refunded_fen: i64,
    pub transaction_id: Option<String>,
}

impl From<&Order> for OrderView {
    fn from(o: &Order) -> Self {
        OrderView {
            out_trade_no: o.out_trade_no.clone(),
            state: String::from(o.state.clone()),
            total_fen: o.total,
            refunded_fen: o.refunded,
            transaction_id: o.transaction_id.clone(),
        }
    }
}

#[derive(Default)]
struct Books {
    orders: HashMap<String, Order>,
    /// code → out_trade_no
    codes: HashMap<String, String>,
    refunds: HashMap<String, SimRefund>,
    /// Every close request: (out_trade_no, what it answered).
    closes: Vec<(String, String)>,
}

/// The simulated gateway.
pub struct WechatSim {
    pub config: WechatSimConfig,
    pub faults: Faults,
    base_url: String,
    books: Mutex<Books>,
    seq: Sequence,
    notifier: Arc<Notifier>,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

/// Starts the simulator on `listener`; `base_url` is where it is reached (its code URLs).
pub fn spawn(
    config: WechatSimConfig,
    listener: tokio::net::TcpListener,
    base_url: String,
) -> anyhow::Result<(Arc<WechatSim>, Running)> {
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let notifier = Arc::new(Notifier::new(
        config.notify.clone(),
        |status, _| (200..300).contains(&status),
        tracker.clone(),
        cancel.clone(),
    )?);
    let sim = Arc::new(WechatSim {
        config,
        faults: Faults::default(),
        base_url: base_url.trim_end_matches('/').to_owned(),
        books: Mutex::new(Books::default()),
        seq: Sequence::default(),
        notifier,
        tracker: tracker.clone(),
        cancel: cancel.clone(),
    });
    let router = Router::new()
        .route("/v3/pay/transactions/native", post(native))
        .route("/v3/pay/transactions/out-trade-no/{no}", get(query))
        .route("/v3/pay/transactions/out-trade-no/{no}/close", post(close))
        .route("/v3/refund/domestic/refunds", post(refund))
        .route("/v3/refund/domestic/refunds/{no}", get(refund_query))
        .route("/pay/{code}", get(pay_page))
        .route("/sim/pay", post(pay_button))
        .route("/sim/state", get(state))
        .route("/sim/faults", post(arm_faults))
        .layer(axum::extract::DefaultBodyLimit::max(super::BODY_BYTES_MAX))
        .with_state(sim.clone());
    let running = Running::start(listener, sim.base_url.clone(), router, cancel, tracker)?;
    Ok((sim, running))
}

/// An API answer before signing.
type Answer = (StatusCode, String);

fn error(status: StatusCode, code: &str, message: &str) -> Answer {
    (
        status,
        json!({"code": code, "message": message}).to_string(),
    )
}

fn now_rfc3339() -> String {
    Utc::now()
        .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).expect("+08:00 is a valid offset"))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

#[derive(Deserialize)]
struct AmountBody {
    total: i64,
    #[serde(default)]
    currency: Option<String>,
}

#[derive(Deserialize)]
struct NativeBody {
    appid: String,
    mchid: String,
    description: String,
    out_trade_no: String,
    notify_url: String,
    amount: AmountBody,
}

#[derive(Deserialize)]
struct RefundAmountBody {
    refund: i64,
    total: i64,
}

#[derive(Deserialize)]
struct RefundBody {
    out_trade_no: String,
    out_refund_no: String,
    #[serde(default)]
    notify_url: Option<String>,
    amount: RefundAmountBody,
}

impl WechatSim {
    pub fn order(&self, out_trade_no: &str) -> Option<OrderView> {
        lock(&self.books)
            .orders
            .get(out_trade_no)
            .map(OrderView::from)
    }

    /// Every close request received: (out_trade_no, answer).
    pub fn closes(&self) -> Vec<(String, String)> {
        lock(&self.books).closes.clone()
    }

    pub fn deliveries(&self) -> Vec<DeliveryRecord> {
        self.notifier.deliveries()
    }

    /// Signs an answer as the platform.
    fn signed(&self, (status, body): Answer) -> Response {
        let nonce = random_alnum(32);
        let mut response = (status, body.clone()).into_response();
        let headers = response.headers_mut();
        if !body.is_empty() {
            headers.insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
        }
        if let Ok(h) = self
            .config
            .platform
            .sign(body.as_bytes(), Utc::now().timestamp(), &nonce)
        {
            for (name, value) in [
                (wire::HEADER_TIMESTAMP, h.timestamp),
                (wire::HEADER_NONCE, h.nonce),
                (wire::HEADER_SIGNATURE, h.signature),
                (wire::HEADER_SERIAL, h.serial),
                ("Request-ID", format!("SIM-{}", self.seq.next())),
            ] {
                if let Ok(v) = header::HeaderValue::from_str(&value) {
                    headers.insert(name, v);
                }
            }
        }
        response
    }

    /// Checks the merchant's `Authorization` as WeChat Pay does.
    fn authorized(
        &self,
        headers: &HeaderMap,
        method: &Method,
        uri: &Uri,
        body: &str,
    ) -> Result<(), Answer> {
        let unauthorized = |why: String| error(StatusCode::UNAUTHORIZED, "SIGN_ERROR", &why);
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| unauthorized("no Authorization".into()))?;
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let auth = sim::verify_request(
            authorization,
            method.as_str(),
            path,
            body,
            &self.config.mchid,
            &self.config.merchant_public_key,
            Utc::now().timestamp(),
        )
        .map_err(|e| unauthorized(e.to_string()))?;
        if auth.serial_no != self.config.merchant_serial {
            return Err(unauthorized(
                "serial_no is not the merchant certificate's".into(),
            ));
        }
        Ok(())
    }

    /// Faults, authentication, the work, a slow answer if armed, and the signature.
    async fn call(
        &self,
        headers: &HeaderMap,
        method: &Method,
        uri: &Uri,
        body: &[u8],
        work: impl FnOnce(&str) -> Answer,
    ) -> Response {
        if take(&self.faults.fail_next) {
            return (StatusCode::SERVICE_UNAVAILABLE, "simulated outage").into_response();
        }
        let Ok(text) = std::str::from_utf8(body) else {
            return self.signed(error(
                StatusCode::BAD_REQUEST,
                "PARAM_ERROR",
                "body is not UTF-8",
            ));
        };
        if let Err(answer) = self.authorized(headers, method, uri, text) {
            return self.signed(answer);
        }
        let slow = take(&self.faults.timeout_next);
        let answer = work(text);
        if slow {
            tokio::select! {
                _ = self.cancel.cancelled() => {}
                _ = tokio::time::sleep(self.config.slow_answer) => {}
            }
        }
        self.signed(answer)
    }

    fn transaction(&self, o: &Order) -> Transaction {
        Transaction {
            appid: self.config.appid.clone(),
            mchid: self.config.mchid.clone(),
            out_trade_no: o.out_trade_no.clone(),
            transaction_id: o.transaction_id.clone(),
            trade_type: Some("NATIVE".into()),
            trade_state: o.state.clone(),
            trade_state_desc: match o.state {
                TradeState::Success => "支付成功",
                TradeState::NotPay => "订单未支付",
                TradeState::Closed => "订单已关闭",
                TradeState::Refund => "转入退款",
                _ => "",
            }
            .into(),
            success_time: o.success_time.clone(),
            amount: Some(TransactionAmount {
                total: o.total,
                payer_total: o.transaction_id.as_ref().map(|_| o.total),
                currency: wire::CURRENCY_CNY.into(),
                payer_currency: Some(wire::CURRENCY_CNY.into()),
            }),
        }
    }

    fn place(&self, text: &str) -> Answer {
        let Ok(b) = serde_json::from_str::<NativeBody>(text) else {
            return error(StatusCode::BAD_REQUEST, "PARAM_ERROR", "malformed order");
        };
        if b.mchid != self.config.mchid || b.appid != self.config.appid {
            return error(
                StatusCode::BAD_REQUEST,
                "APPID_MCHID_NOT_MATCH",
                "appid和mch_id不匹配",
            );
        }
        if b.amount.total < 1
            || b.amount
                .currency
                .as_deref()
                .is_some_and(|c| c != wire::CURRENCY_CNY)
        {
            return error(StatusCode::BAD_REQUEST, "PARAM_ERROR", "amount");
        }
        let mut books = lock(&self.books);
        if let Some(o) = books.orders.get(&b.out_trade_no) {
            let same = o.total == b.amount.total
                && o.description == b.description
                && o.notify_url == b.notify_url;
            return match &o.state {
                _ if !same => error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_REQUEST",
                    "out_trade_no used with other parameters",
                ),
                TradeState::NotPay => (
                    StatusCode::OK,
                    json!({"code_url": self.code_url(&o.code)}).to_string(),
                ),
                TradeState::Closed => error(StatusCode::BAD_REQUEST, "ORDER_CLOSED", "订单已关闭"),
                _ => error(
                    StatusCode::BAD_REQUEST,
                    wire::ERROR_ORDER_PAID,
                    "订单已支付",
                ),
            };
        }
        if books.orders.len() >= ORDERS_MAX {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                wire::ERROR_SYSTEM_ERROR,
                "the simulator is full",
            );
        }
        let code = random_alnum(24);
        books.codes.insert(code.clone(), b.out_trade_no.clone());
        books.orders.insert(
            b.out_trade_no.clone(),
            Order {
                out_trade_no: b.out_trade_no,
                description: b.description,
                total: b.amount.total,
                notify_url: b.notify_url,
                code: code.clone(),
                state: TradeState::NotPay,
                transaction_id: None,
                success_time: None,
                refunded: 0,
            },
        );
        (
            StatusCode::OK,
            json!({"code_url": self.code_url(&code)}).to_string(),
        )
    }

    fn code_url(&self, code: &str) -> String {
        format!("{}/pay/{code}", self.base_url)
    }

    fn query(&self, out_trade_no: &str) -> Answer {
        match lock(&self.books).orders.get(out_trade_no) {
            Some(o) => {
                let mut t = serde_json::to_value(self.transaction(o)).unwrap_or(Value::Null);
                if o.transaction_id.is_some() {
                    t["payer"] = json!({"openid": "oSIMULATOR0000000000000000000"});
                    t["bank_type"] = json!("OTHERS");
                }
                (StatusCode::OK, t.to_string())
            }
            None => error(
                StatusCode::NOT_FOUND,
                wire::ERROR_ORDER_NOT_EXIST,
                "订单不存在",
            ),
        }
    }

    fn close(&self, out_trade_no: &str, text: &str) -> Answer {
        let mchid = serde_json::from_str::<Value>(text)
            .ok()
            .and_then(|v| v["mchid"].as_str().map(str::to_owned));
        if mchid.as_deref() != Some(self.config.mchid.as_str()) {
            return error(StatusCode::BAD_REQUEST, "PARAM_ERROR", "mchid");
        }
        let mut books = lock(&self.books);
        let answer = match books.orders.get_mut(out_trade_no) {
            None => error(
                StatusCode::NOT_FOUND,
                wire::ERROR_ORDER_NOT_EXIST,
                "订单不存在",
            ),
            Some(o) if matches!(o.state, TradeState::NotPay | TradeState::Closed) => {
                o.state = TradeState::Closed;
                (StatusCode::NO_CONTENT, String::new())
            }
            Some(_) => error(
                StatusCode::BAD_REQUEST,
                wire::ERROR_ORDER_PAID,
                "订单已支付",
            ),
        };
        if books.closes.len() < ORDERS_MAX {
            let what = if answer.0 == StatusCode::NO_CONTENT {
                "closed".to_owned()
            } else {
                serde_json::from_str::<Value>(&answer.1)
                    .ok()
                    .and_then(|v| v["code"].as_str().map(str::to_owned))
                    .unwrap_or_default()
            };
            books.closes.push((out_trade_no.to_owned(), what));
        }
        answer
    }

    fn refund(self: &Arc<Self>, text: &str) -> Answer {
        let Ok(b) = serde_json::from_str::<RefundBody>(text) else {
            return error(StatusCode::BAD_REQUEST, "PARAM_ERROR", "malformed refund");
        };
        let mut books = lock(&self.books);
        // The refund number is the idempotency key: a retry reports the refund as it is.
        if let Some(r) = books.refunds.get(&b.out_refund_no) {
            return (
                StatusCode::OK,
                serde_json::to_string(&r.refund).unwrap_or_default(),
            );
        }
        let Some(o) = books.orders.get_mut(&b.out_trade_no) else {
            return error(
                StatusCode::NOT_FOUND,
                wire::ERROR_RESOURCE_NOT_EXISTS,
                "订单不存在",
            );
        };
        if !matches!(o.state, TradeState::Success | TradeState::Refund) {
            return error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", "订单未支付");
        }
        if b.amount.total != o.total {
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                "订单金额与退款请求不符",
            );
        }
        if b.amount.refund < 1 || o.refunded + b.amount.refund > o.total {
            return error(StatusCode::FORBIDDEN, "NOT_ENOUGH", "退款金额超过可退金额");
        }
        let pending = take(&self.faults.refund_pending);
        o.refunded += b.amount.refund;
        o.state = TradeState::Refund;
        let refund = Refund {
            refund_id: format!(
                "50300{}{:010}",
                Utc::now().format("%Y%m%d"),
                self.seq.next()
            ),
            out_refund_no: b.out_refund_no.clone(),
            transaction_id: o.transaction_id.clone().unwrap_or_default(),
            out_trade_no: o.out_trade_no.clone(),
            status: if pending {
                RefundStatus::Processing
            } else {
                RefundStatus::Success
            },
            channel: Some("ORIGINAL".into()),
            user_received_account: Some("支付用户零钱".into()),
            success_time: (!pending).then(now_rfc3339),
            create_time: Some(now_rfc3339()),
            amount: RefundAmount {
                total: o.total,
                refund: b.amount.refund,
                payer_total: Some(o.total),
                payer_refund: Some(b.amount.refund),
                currency: Some(wire::CURRENCY_CNY.into()),
            },
        };
        let answer = serde_json::to_string(&refund).unwrap_or_default();
        books.refunds.insert(
            b.out_refund_no.clone(),
            SimRefund {
                refund,
                notify_url: b.notify_url,
            },
        );
        if pending {
            let (me, no) = (self.clone(), b.out_refund_no);
            let settle = self.config.refund_settle;
            self.tracker.spawn(async move {
                tokio::select! {
                    _ = me.cancel.cancelled() => {}
                    _ = tokio::time::sleep(settle) => me.settle_refund(&no),
                }
            });
        }
        (StatusCode::OK, answer)
    }

    /// A pending refund goes through, and WeChat Pay notifies it.
    fn settle_refund(&self, out_refund_no: &str) {
        let delivery = {
            let mut books = lock(&self.books);
            let Some(r) = books.refunds.get_mut(out_refund_no) else {
                return;
            };
            r.refund.status = RefundStatus::Success;
            r.refund.success_time = Some(now_rfc3339());
            let Some(url) = r.notify_url.clone() else {
                return;
            };
            let refund = r.refund.clone();
            let notice = RefundNotice {
                mchid: self.notified_mchid(),
                out_trade_no: refund.out_trade_no.clone(),
                transaction_id: refund.transaction_id.clone(),
                out_refund_no: refund.out_refund_no.clone(),
                refund_id: refund.refund_id.clone(),
                refund_status: RefundStatus::Success,
                success_time: refund.success_time.clone(),
                user_received_account: refund.user_received_account.clone(),
                amount: refund.amount.clone(),
            };
            self.notification(
                &url,
                &refund.out_trade_no,
                wire::EVENT_REFUND_SUCCESS,
                "退款成功",
                "refund",
                serde_json::to_string(&notice).unwrap_or_default(),
            )
        };
        self.notifier
            .send(delivery, take(&self.faults.notify_out_of_order));
    }

    fn refund_query(&self, out_refund_no: &str) -> Answer {
        match lock(&self.books).refunds.get(out_refund_no) {
            Some(r) => (
                StatusCode::OK,
                serde_json::to_string(&r.refund).unwrap_or_default(),
            ),
            None => error(
                StatusCode::NOT_FOUND,
                wire::ERROR_RESOURCE_NOT_EXISTS,
                "退款单不存在",
            ),
        }
    }

    fn notified_mchid(&self) -> String {
        if take(&self.faults.notify_other_merchant) {
            super::other_id(&self.config.mchid)
        } else {
            self.config.mchid.clone()
        }
    }

    /// The payer pays (the Pay button).
    pub fn pay(&self, out_trade_no: &str) -> Result<OrderView, String> {
        let (delivery, view) = {
            let mut books = lock(&self.books);
            let o = books
                .orders
                .get_mut(out_trade_no)
                .ok_or_else(|| "ORDER_NOT_EXIST".to_owned())?;
            if o.state != TradeState::NotPay {
                return Err(format!("the order is {}", String::from(o.state.clone())));
            }
            o.state = TradeState::Success;
            o.transaction_id = Some(format!(
                "4200{}{:014}",
                Utc::now().format("%Y%m%d"),
                self.seq.next()
            ));
            o.success_time = Some(now_rfc3339());
            let mut t = self.transaction(o);
            t.mchid = self.notified_mchid();
            if take(&self.faults.notify_wrong_amount) {
                if let Some(a) = t.amount.as_mut() {
                    a.total += if a.total > 1 { -1 } else { 1 };
                }
            }
            let mut resource = serde_json::to_value(&t).unwrap_or(Value::Null);
            resource["payer"] = json!({"openid": "oSIMULATOR0000000000000000000"});
            resource["bank_type"] = json!("OTHERS");
            let delivery = self.notification(
                &o.notify_url,
                &o.out_trade_no,
                wire::EVENT_TRANSACTION_SUCCESS,
                "支付成功",
                "transaction",
                resource.to_string(),
            );
            (delivery, OrderView::from(&*o))
        };
        self.notifier
            .send(delivery, take(&self.faults.notify_out_of_order));
        Ok(view)
    }

    /// A notification envelope around `resource_json`, signed afresh for each attempt.
    fn notification(
        &self,
        url: &str,
        out_trade_no: &str,
        event_type: &str,
        summary: &str,
        original_type: &str,
        resource_json: String,
    ) -> Delivery {
        let id = uuid::Uuid::new_v4().to_string();
        let spec = NotificationSpec {
            id: id.clone(),
            create_time: now_rfc3339(),
            event_type: event_type.to_owned(),
            summary: summary.to_owned(),
            original_type: original_type.to_owned(),
            nonce: random_alnum(wire::NONCE_LEN),
        };
        let body = sim::build_notification(&spec, &resource_json, &self.config.apiv3_key)
            .unwrap_or_default();
        let stale = take(&self.faults.notify_stale);
        let tampered = take(&self.faults.notify_tampered);
        let platform = self.config.platform.clone();
        let other_id = uuid::Uuid::new_v4().to_string();
        Delivery {
            message_id: id.clone(),
            out_trade_no: out_trade_no.to_owned(),
            kind: event_type.to_owned(),
            url: url.to_owned(),
            twice: take(&self.faults.notify_twice),
            prepare: Arc::new(move |attempt| {
                let first = attempt == 1;
                let timestamp =
                    Utc::now().timestamp() - if stale && first { STALE_SECS } else { 0 };
                let headers = platform
                    .sign(body.as_bytes(), timestamp, &random_alnum(32))
                    .map(|h| {
                        vec![
                            (wire::HEADER_TIMESTAMP, h.timestamp),
                            (wire::HEADER_NONCE, h.nonce),
                            (wire::HEADER_SIGNATURE, h.signature),
                            (wire::HEADER_SERIAL, h.serial),
                        ]
                    })
                    .unwrap_or_default();
                // Tampered: the envelope's id changed after the platform signed it.
                let sent = if tampered && first {
                    body.replacen(&id, &other_id, 1)
                } else {
                    body.clone()
                };
                Prepared {
                    body: sent.into_bytes(),
                    content_type: "application/json",
                    headers,
                }
            }),
        }
    }
}

async fn native(
    State(sim): State<Arc<WechatSim>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    sim.call(&headers, &method, &uri, &body, |text| sim.place(text))
        .await
}

async fn query(
    State(sim): State<Arc<WechatSim>>,
    Path(no): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    sim.call(&headers, &method, &uri, b"", |_| sim.query(&no))
        .await
}

async fn close(
    State(sim): State<Arc<WechatSim>>,
    Path(no): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    sim.call(&headers, &method, &uri, &body, |text| sim.close(&no, text))
        .await
}

async fn refund(
    State(sim): State<Arc<WechatSim>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    sim.call(&headers, &method, &uri, &body, |text| sim.refund(text))
        .await
}

async fn refund_query(
    State(sim): State<Arc<WechatSim>>,
    Path(no): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    sim.call(&headers, &method, &uri, b"", |_| sim.refund_query(&no))
        .await
}

async fn pay_page(State(sim): State<Arc<WechatSim>>, Path(code): Path<String>) -> Response {
    let order = {
        let books = lock(&sim.books);
        books
            .codes
            .get(&code)
            .and_then(|no| books.orders.get(no))
            .cloned()
    };
    let Some(o) = order else {
        return (
            StatusCode::NOT_FOUND,
            page(
                "WeChat Pay (simulator): error",
                "<p id=\"error\">no such code</p>",
            ),
        )
            .into_response();
    };
    let button = if o.state == TradeState::NotPay {
        format!(
            "<form method=\"post\" action=\"/sim/pay\"><input type=\"hidden\" name=\"out_trade_no\" value=\"{}\"><button id=\"pay\">Pay</button></form>",
            html(&o.out_trade_no)
        )
    } else {
        String::new()
    };
    page(
        "WeChat Pay (simulator)",
        &format!(
            "<dl><dt>Merchant</dt><dd>{}</dd><dt>Description</dt><dd>{}</dd><dt>Amount</dt><dd id=\"amount\">¥{}</dd><dt>State</dt><dd id=\"status\">{}</dd></dl>{button}",
            html(&sim.config.mchid),
            html(&o.description),
            wire::fen_to_yuan(o.total),
            html(&String::from(o.state.clone()))
        ),
    )
    .into_response()
}

async fn pay_button(
    State(sim): State<Arc<WechatSim>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let no = form.get("out_trade_no").cloned().unwrap_or_default();
    match sim.pay(&no) {
        Ok(o) => page(
            "WeChat Pay (simulator)",
            &format!(
                "<p id=\"status\">{}</p><p>The merchant is being notified.</p>",
                html(&o.state)
            ),
        )
        .into_response(),
        Err(e) => (
            StatusCode::CONFLICT,
            page(
                "WeChat Pay (simulator): error",
                &format!("<p id=\"error\">{}</p>", html(&e)),
            ),
        )
            .into_response(),
    }
}

async fn state(State(sim): State<Arc<WechatSim>>) -> Response {
    let (orders, closes): (Vec<OrderView>, _) = {
        let books = lock(&sim.books);
        (
            books.orders.values().map(OrderView::from).collect(),
            books.closes.clone(),
        )
    };
    axum::Json(json!({
        "mchid": sim.config.mchid,
        "orders": orders,
        "closes": closes,
        "deliveries": sim.deliveries(),
    }))
    .into_response()
}

async fn arm_faults(State(sim): State<Arc<WechatSim>>, body: Bytes) -> Response {
    match sim.faults.arm(&String::from_utf8_lossy(&body)) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
    }
}
