//! The WeChat Pay API v3 driver: the `Gateway` of `wechat` when LEDGER_WECHAT_MCHID is set.
//! Every byte on the wire comes from `ledger_wire::wechat`; this module does the HTTP
//! exchange and maps WeChat Pay's answers onto the gateway outcomes of SPEC §8.
//!
//! - **Numbers**: WeChat Pay's `out_trade_no` is 6–32 of `[0-9A-Za-z_-|*]`, and our payment_no
//!   is `P` + 32 upper-case hex digits (33 characters). The out_trade_no is therefore the
//!   payment_no **without its leading `P`** (the 32 hex digits), and whatever WeChat Pay sends
//!   back gets the `P` again ([`out_trade_no_of`], [`payment_no_of`]). A refund's
//!   `out_refund_no` is our refund_no as it is (33 characters, within 64).
//! - **Amounts** are integer fen on the wire, converted exactly (`yuan_to_fen`, `fen_to_yuan`);
//!   a currency other than CNY is refused at create.
//! - **Orders** are Native: the answer's `code_url` is what the payer scans. It is kept in a
//!   bounded cache for the checkout; when the cache has forgotten it, the order is placed
//!   again with the same body, which WeChat Pay answers with the same order's code.
//! - **Every answer** must be signed by a platform key of LEDGER_WECHAT_PLATFORM_KEYS, chosen
//!   by `Wechatpay-Serial`, with a timestamp within five minutes. An unsigned or unverifiable
//!   answer, a timeout, a 5xx and `SYSTEM_ERROR` are unknown outcomes
//!   (`GatewayError::Timeout`), settled by a query and never taken for success.
//!
//! Must not: hand-write any signature, encryption or format, or decide what a payment becomes.

use std::time::Duration;

use chrono::Utc;
use ledger_wire::wechat::{
    self as wire, ApiRequest, ErrorBody, HttpMethod, Merchant, Order, PlatformKeys, Refund,
    RefundOrder, SignatureHeaders, TradeState, Transaction,
};
use rand::distributions::{Alphanumeric, DistString};
use rust_decimal::Decimal;

use super::{
    transport_error, CheckoutOrder, CloseOutcome, Gateway, GatewayError, QueryOutcome,
    RefundOutcome,
};
use crate::config::WechatSettings;
use crate::domain::Money;

/// Where WeChat Pay posts its notifications, under LEDGER_PUBLIC_URL (`notify_url`).
pub const NOTIFY_PATH: &str = "/api/v1/gateways/wechat/notify/v3";
/// The only currency the ledger places WeChat Pay orders in.
pub const CURRENCY: &str = "CNY";
/// How long a Native order's `code_url` is valid at WeChat Pay.
pub const CODE_URL_TTL: Duration = Duration::from_secs(2 * 3600);
/// Error code of a request WeChat Pay wants sent again later.
pub const ERROR_FREQUENCY_LIMITED: &str = "FREQUENCY_LIMITED";
/// Error code of an order that was closed.
pub const ERROR_ORDER_CLOSED: &str = "ORDER_CLOSED";

/// WeChat Pay's `out_trade_no` for a payment_no: the payment_no without its `P`.
pub fn out_trade_no_of(payment_no: &str) -> Result<String, GatewayError> {
    match payment_no.strip_prefix('P') {
        Some(hex) if hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(hex.to_owned())
        }
        _ => Err(GatewayError::Refused(format!(
            "{payment_no:?} is not a payment number (P + 32 hex digits)"
        ))),
    }
}

/// The payment_no an `out_trade_no` from WeChat Pay names, if it is one of ours.
pub fn payment_no_of(out_trade_no: &str) -> Option<String> {
    (out_trade_no.len() == 32 && out_trade_no.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| format!("P{out_trade_no}"))
}

/// The amount in yuan, or a refusal for any other currency (WeChat Pay orders are in CNY).
pub fn cny(amount: &Money) -> Result<Decimal, GatewayError> {
    if amount.currency().code() != CURRENCY {
        return Err(GatewayError::Refused(format!(
            "wechat pay takes CNY only, not {}",
            amount.currency().code()
        )));
    }
    // Checked here so that a refusal names the amount, not a wire error.
    wire::yuan_to_fen(amount.amount())
        .map_err(|e| GatewayError::Refused(format!("wechat pay: {e}")))?;
    Ok(amount.amount())
}

/// What the payer sees as the order's description.
pub fn description(payment_no: &str) -> String {
    format!("Payment {payment_no}")
}

/// A verified answer: its status and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    /// The error body of a non-2xx answer (verified like any answer).
    fn error(&self) -> Option<ErrorBody> {
        wire::parse_error_body(&self.body).ok()
    }
}

/// A non-2xx answer as a gateway error: unknown for 5xx and `SYSTEM_ERROR`, "try later" for
/// rate limits, a refusal otherwise.
pub fn error_of(answer: &Answer) -> GatewayError {
    let body = answer.error();
    match &body {
        _ if answer.status >= 500 => GatewayError::Timeout,
        Some(e) if e.is_outcome_unknown() => GatewayError::Timeout,
        Some(e) if e.code == ERROR_FREQUENCY_LIMITED || answer.status == 429 => {
            GatewayError::Unavailable(format!("wechat pay {}: {}", e.code, e.message))
        }
        Some(e) => GatewayError::Refused(format!("wechat pay {}: {}", e.code, e.message)),
        None => GatewayError::Refused(format!("wechat pay answered {}", answer.status)),
    }
}

fn error_code(answer: &Answer) -> Option<String> {
    answer.error().map(|e| e.code)
}

/// A query's answer → the order's outcome.
pub fn transaction_outcome(t: &Transaction) -> QueryOutcome {
    match &t.trade_state {
        TradeState::Success | TradeState::Refund => QueryOutcome::Succeeded,
        TradeState::NotPay | TradeState::UserPaying => QueryOutcome::Pending,
        TradeState::Closed | TradeState::Revoked | TradeState::PayError => {
            QueryOutcome::Failed(String::from(t.trade_state.clone()).to_lowercase())
        }
        TradeState::Other(_) => QueryOutcome::Pending,
    }
}

/// A refund's state (answer or query) → its outcome.
pub fn refund_outcome(r: &Refund) -> RefundOutcome {
    match &r.status {
        wire::RefundStatus::Success => RefundOutcome::Confirmed,
        wire::RefundStatus::Processing | wire::RefundStatus::Other(_) => RefundOutcome::Pending,
        wire::RefundStatus::Abnormal => RefundOutcome::Rejected("wechat pay: ABNORMAL".into()),
        wire::RefundStatus::Closed => RefundOutcome::Rejected("wechat pay: CLOSED".into()),
    }
}

/// The WeChat Pay gateway.
pub struct Wechat {
    merchant: Merchant,
    appid: String,
    platform_keys: PlatformKeys,
    base_url: String,
    /// LEDGER_PUBLIC_URL: where WeChat Pay sends notifications.
    public_url: String,
    http: reqwest::Client,
    /// payment_no → code_url of its Native order.
    code_urls: moka::sync::Cache<String, String>,
    /// Longest answer read, in bytes (LEDGER_GATEWAY_ANSWER_BYTES_MAX).
    answer_bytes_max: usize,
}

impl std::fmt::Debug for Wechat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wechat")
            .field("mchid", &self.merchant.mchid)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl Wechat {
    pub fn new(
        settings: &WechatSettings,
        public_url: &str,
        limits: &crate::config::Limits,
    ) -> Result<Self, reqwest::Error> {
        Ok(Self {
            merchant: Merchant {
                mchid: settings.mchid.clone(),
                serial_no: settings.cert_serial.clone(),
                private_key: settings.private_key.clone(),
            },
            appid: settings.appid.clone(),
            platform_keys: settings.platform_keys.clone(),
            base_url: settings.base_url.clone(),
            public_url: public_url.trim_end_matches('/').to_owned(),
            http: super::vendor_http(limits)?,
            code_urls: moka::sync::Cache::builder()
                // Remembered for the checkout, oldest forgotten first.
                .max_capacity(limits.wechat_code_urls_max)
                .time_to_live(CODE_URL_TTL)
                .build(),
            answer_bytes_max: limits.gateway_answer_bytes_max,
        })
    }

    pub fn notify_url(&self) -> String {
        format!("{}{NOTIFY_PATH}", self.public_url)
    }

    fn checkout_page(&self, payment_no: &str) -> String {
        format!("{}/checkout/{payment_no}", self.public_url)
    }

    /// Sends a request built by the wire crate, exactly as built, and returns the answer once
    /// its signature has been verified.
    async fn call(
        &self,
        request: Result<ApiRequest, wire::WechatError>,
    ) -> Result<Answer, GatewayError> {
        let request = request.map_err(|e| GatewayError::Refused(format!("wechat pay: {e}")))?;
        let now = Utc::now().timestamp();
        let nonce = Alphanumeric.sample_string(&mut rand::thread_rng(), wire::NONCE_LEN_MAX);
        let authorization = request
            .authorization(&self.merchant, now, &nonce)
            .map_err(|e| GatewayError::Refused(format!("wechat pay: {e}")))?;
        let url = format!("{}{}", self.base_url, request.path);
        let builder = match request.method {
            HttpMethod::Get => self.http.get(&url),
            HttpMethod::Post => self
                .http
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(request.body.clone()),
        };
        let answer = builder
            .header(reqwest::header::AUTHORIZATION, authorization)
            .header(reqwest::header::ACCEPT, "application/json")
            .header(reqwest::header::USER_AGENT, "ledger")
            .send()
            .await
            .map_err(|e| transport_error(&e))?;
        let status = answer.status().as_u16();
        let headers = answer.headers().clone();
        let Some(body) = super::read_bounded(answer, self.answer_bytes_max)
            .await
            .map_err(|e| transport_error(&e))?
        else {
            tracing::warn!(
                bytes_max = self.answer_bytes_max,
                "wechat answer too long; outcome unknown"
            );
            return Err(GatewayError::Timeout);
        };
        let signed =
            SignatureHeaders::from_lookup(|name| headers.get(name).and_then(|v| v.to_str().ok()))
                .and_then(|h| {
                    wire::verify_signature(&h, &body, &self.platform_keys, Utc::now().timestamp())
                        .map(|_| ())
                });
        if let Err(e) = signed {
            // Unsigned or unverifiable: it proves nothing either way.
            tracing::warn!(path = %request.path, status, error = %e, "wechat pay answer not verified; outcome unknown");
            return Err(GatewayError::Timeout);
        }
        Ok(Answer {
            status,
            body: body.to_vec(),
        })
    }

    fn order(&self, payment_no: &str, amount: &Money) -> Result<Order, GatewayError> {
        Ok(Order {
            appid: self.appid.clone(),
            mchid: self.merchant.mchid.clone(),
            description: description(payment_no),
            out_trade_no: out_trade_no_of(payment_no)?,
            notify_url: self.notify_url(),
            total: cny(amount)?,
            // The ledger closes the order itself when the payment expires; leaving the
            // expiry out keeps the body the same each time the order is placed.
            time_expire: None,
        })
    }

    /// Places the Native order (again): its `code_url`, or `None` when the order can no
    /// longer be paid (paid or closed).
    async fn place(
        &self,
        payment_no: &str,
        amount: &Money,
    ) -> Result<Option<String>, GatewayError> {
        let order = self.order(payment_no, amount)?;
        let answer = self.call(wire::native_order(&order)).await?;
        if (200..300).contains(&answer.status) {
            let prepay: wire::NativePrepay =
                serde_json::from_slice(&answer.body).map_err(|_| GatewayError::Timeout)?;
            self.code_urls
                .insert(payment_no.to_owned(), prepay.code_url.clone());
            return Ok(Some(prepay.code_url));
        }
        match error_code(&answer).as_deref() {
            Some(wire::ERROR_ORDER_PAID) | Some(ERROR_ORDER_CLOSED) => Ok(None),
            _ => Err(error_of(&answer)),
        }
    }

    /// The order as WeChat Pay knows it; `None` when it does not.
    async fn transaction(&self, payment_no: &str) -> Result<Option<Transaction>, GatewayError> {
        let out_trade_no = out_trade_no_of(payment_no)?;
        let answer = self
            .call(wire::query_order(&self.merchant.mchid, &out_trade_no))
            .await?;
        if answer.status == 404
            || error_code(&answer).as_deref() == Some(wire::ERROR_ORDER_NOT_EXIST)
        {
            return Ok(None);
        }
        if !(200..300).contains(&answer.status) {
            return Err(error_of(&answer));
        }
        let t: Transaction =
            serde_json::from_slice(&answer.body).map_err(|_| GatewayError::Timeout)?;
        if t.out_trade_no != out_trade_no || t.mchid != self.merchant.mchid {
            return Err(GatewayError::Unavailable(format!(
                "wechat pay answered for order {:?} of {:?}",
                t.out_trade_no, t.mchid
            )));
        }
        Ok(Some(t))
    }

    fn read_refund(&self, answer: &Answer, refund_no: &str) -> Result<Refund, GatewayError> {
        let r: Refund = serde_json::from_slice(&answer.body).map_err(|_| GatewayError::Timeout)?;
        if r.out_refund_no != refund_no {
            return Err(GatewayError::Unavailable(format!(
                "wechat pay answered for refund {:?}",
                r.out_refund_no
            )));
        }
        Ok(r)
    }
}

#[async_trait::async_trait]
impl Gateway for Wechat {
    async fn create_order(&self, payment_no: &str, amount: &Money) -> Result<String, GatewayError> {
        match self.place(payment_no, amount).await? {
            Some(code_url) => Ok(code_url),
            None => Err(GatewayError::Refused(
                "wechat pay: the order is already paid or closed".into(),
            )),
        }
    }

    async fn query_order(
        &self,
        payment_no: &str,
    ) -> Result<(QueryOutcome, Option<String>), GatewayError> {
        let Some(t) = self.transaction(payment_no).await? else {
            return Ok((QueryOutcome::NotFound, None));
        };
        let outcome = transaction_outcome(&t);
        // The order exists; its code is on the checkout page (placed again if forgotten).
        let page = matches!(outcome, QueryOutcome::Pending | QueryOutcome::Succeeded).then(|| {
            self.code_urls
                .get(payment_no)
                .unwrap_or_else(|| self.checkout_page(payment_no))
        });
        Ok((outcome, page))
    }

    async fn refund(
        &self,
        refund_no: &str,
        payment_no: &str,
        amount: Decimal,
    ) -> Result<RefundOutcome, GatewayError> {
        // WeChat Pay wants the order's total with every refund: its own record is the truth.
        let Some(t) = self.transaction(payment_no).await? else {
            return Err(GatewayError::Refused("wechat pay has no such order".into()));
        };
        let Some(total) = t.amount.as_ref().map(|a| a.total) else {
            return Err(GatewayError::Refused(
                "wechat pay: the order has no amount".into(),
            ));
        };
        let order = RefundOrder {
            out_trade_no: out_trade_no_of(payment_no)?,
            out_refund_no: refund_no.to_owned(),
            reason: None,
            notify_url: Some(self.notify_url()),
            refund: amount,
            total: wire::fen_to_yuan(total),
        };
        let answer = self.call(wire::refund(&order)).await?;
        if !(200..300).contains(&answer.status) {
            return Err(error_of(&answer));
        }
        Ok(refund_outcome(&self.read_refund(&answer, refund_no)?))
    }

    async fn query_refund(
        &self,
        refund_no: &str,
        _payment_no: &str,
    ) -> Result<QueryOutcome, GatewayError> {
        let answer = self.call(wire::query_refund(refund_no)).await?;
        if answer.status == 404
            || error_code(&answer).as_deref() == Some(wire::ERROR_RESOURCE_NOT_EXISTS)
        {
            return Ok(QueryOutcome::NotFound);
        }
        if !(200..300).contains(&answer.status) {
            return Err(error_of(&answer));
        }
        Ok(
            match refund_outcome(&self.read_refund(&answer, refund_no)?) {
                RefundOutcome::Confirmed => QueryOutcome::Succeeded,
                RefundOutcome::Pending => QueryOutcome::Pending,
                RefundOutcome::Rejected(reason) => QueryOutcome::Failed(reason),
            },
        )
    }

    async fn close_order(&self, payment_no: &str) -> Result<CloseOutcome, GatewayError> {
        let out_trade_no = out_trade_no_of(payment_no)?;
        let answer = self
            .call(wire::close_order(&self.merchant.mchid, &out_trade_no))
            .await?;
        self.code_urls.invalidate(payment_no);
        if (200..300).contains(&answer.status) {
            return Ok(CloseOutcome::Closed);
        }
        match error_code(&answer).as_deref() {
            Some(wire::ERROR_ORDER_PAID) => Ok(CloseOutcome::AlreadyPaid),
            Some(wire::ERROR_ORDER_NOT_EXIST) | Some(ERROR_ORDER_CLOSED) => {
                Ok(CloseOutcome::Closed)
            }
            _ => Err(error_of(&answer)),
        }
    }

    async fn checkout_url(&self, order: &CheckoutOrder) -> Result<Option<String>, GatewayError> {
        if let Some(url) = self.code_urls.get(&order.payment_no) {
            return Ok(Some(url));
        }
        self.place(&order.payment_no, &order.amount).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Currency;

    fn money(amount: &str, currency: &str) -> Money {
        Money::parse(amount, Currency::from_code(currency).unwrap()).unwrap()
    }

    #[test]
    fn the_out_trade_no_is_the_payment_no_without_its_p_and_back() {
        let no = "P0191F2A3B4C5D6E7F8091A2B3C4D5E6F";
        let out = out_trade_no_of(no).unwrap();
        assert_eq!(out, "0191F2A3B4C5D6E7F8091A2B3C4D5E6F");
        assert_eq!(out.len(), 32, "WeChat Pay takes at most 32 characters");
        assert_eq!(payment_no_of(&out).as_deref(), Some(no));
        for bad in [
            "0191F2A3B4C5D6E7F8091A2B3C4D5E6F",
            "P123",
            "Pxyz1F2A3B4C5D6E7F8091A2B3C4D5E6F",
        ] {
            assert!(out_trade_no_of(bad).is_err(), "{bad}");
        }
        for bad in [
            "",
            "12345",
            "G191F2A3B4C5D6E7F8091A2B3C4D5E6F",
            "0191F2A3B4C5D6E7F8091A2B3C4D5E6F0",
        ] {
            assert_eq!(payment_no_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn amounts_are_cny_only_and_convert_to_fen_exactly() {
        assert_eq!(cny(&money("12.30", "CNY")).unwrap().to_string(), "12.30");
        assert_eq!(
            wire::yuan_to_fen(cny(&money("12.30", "CNY")).unwrap()),
            Ok(1230)
        );
        assert_eq!(wire::fen_to_yuan(1).to_string(), "0.01");
        assert!(matches!(
            cny(&money("12.30", "EUR")),
            Err(GatewayError::Refused(r)) if r.contains("CNY only, not EUR")
        ));
    }

    fn transaction(state: TradeState) -> Transaction {
        Transaction {
            appid: "wx1".into(),
            mchid: "1900000001".into(),
            out_trade_no: "0".repeat(32),
            transaction_id: None,
            trade_type: None,
            trade_state: state,
            trade_state_desc: String::new(),
            success_time: None,
            amount: None,
        }
    }

    #[test]
    fn trade_states_map_onto_query_outcomes() {
        assert_eq!(
            transaction_outcome(&transaction(TradeState::Success)),
            QueryOutcome::Succeeded
        );
        assert_eq!(
            transaction_outcome(&transaction(TradeState::Refund)),
            QueryOutcome::Succeeded
        );
        assert_eq!(
            transaction_outcome(&transaction(TradeState::NotPay)),
            QueryOutcome::Pending
        );
        assert_eq!(
            transaction_outcome(&transaction(TradeState::Closed)),
            QueryOutcome::Failed("closed".into())
        );
        assert_eq!(
            transaction_outcome(&transaction(TradeState::PayError)),
            QueryOutcome::Failed("payerror".into())
        );
    }

    fn refund(status: wire::RefundStatus) -> Refund {
        Refund {
            refund_id: "50000000".into(),
            out_refund_no: "R1".into(),
            transaction_id: "4200000".into(),
            out_trade_no: "0".repeat(32),
            status,
            channel: None,
            user_received_account: None,
            success_time: None,
            create_time: None,
            amount: wire::RefundAmount {
                total: 100,
                refund: 100,
                payer_total: None,
                payer_refund: None,
                currency: None,
            },
        }
    }

    #[test]
    fn refund_states_map_onto_refund_outcomes() {
        assert_eq!(
            refund_outcome(&refund(wire::RefundStatus::Success)),
            RefundOutcome::Confirmed
        );
        assert_eq!(
            refund_outcome(&refund(wire::RefundStatus::Processing)),
            RefundOutcome::Pending
        );
        assert!(matches!(
            refund_outcome(&refund(wire::RefundStatus::Abnormal)),
            RefundOutcome::Rejected(_)
        ));
        assert!(matches!(
            refund_outcome(&refund(wire::RefundStatus::Closed)),
            RefundOutcome::Rejected(_)
        ));
    }

    fn answer(status: u16, code: &str) -> Answer {
        Answer {
            status,
            body: format!(r#"{{"code":"{code}","message":"m"}}"#).into_bytes(),
        }
    }

    #[test]
    fn error_answers_are_unknown_retryable_or_refusals() {
        assert_eq!(
            error_of(&answer(500, "SYSTEM_ERROR")),
            GatewayError::Timeout
        );
        assert_eq!(
            error_of(&answer(400, "SYSTEM_ERROR")),
            GatewayError::Timeout
        );
        assert!(matches!(
            error_of(&answer(429, "FREQUENCY_LIMITED")),
            GatewayError::Unavailable(_)
        ));
        assert!(
            matches!(error_of(&answer(403, "NOT_ENOUGH")), GatewayError::Refused(r) if r.contains("NOT_ENOUGH"))
        );
        assert!(matches!(
            error_of(&Answer {
                status: 400,
                body: b"<html>".to_vec()
            }),
            GatewayError::Refused(_)
        ));
    }
}
