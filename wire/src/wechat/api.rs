//! The API v3 calls the ledger makes: Native and H5 orders, query and close by
//! `out_trade_no`, refund and refund query — each as method, path and exact JSON body — and
//! the typed readers of their (verified) answers.
//!
//! Must not: send anything. [`ApiRequest::authorization`] signs exactly the path and body
//! this module built, so the HTTP layer must send those bytes unchanged.

use chrono::{DateTime, Utc};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::amount::yuan_to_fen;
use super::auth::{Merchant, VerifiedBody};
use super::model::{Refund, Transaction};
use super::WechatError;
use crate::CHINA_STANDARD_TIME;

/// The only currency the ledger orders in.
pub const CURRENCY_CNY: &str = "CNY";
/// Error `code` of a query or close for an order WeChat Pay does not know.
pub const ERROR_ORDER_NOT_EXIST: &str = "ORDER_NOT_EXIST";
/// Error `code` of a refund query for an unknown refund.
pub const ERROR_RESOURCE_NOT_EXISTS: &str = "RESOURCE_NOT_EXISTS";
/// Error `code` meaning the outcome is unknown: query before concluding anything.
pub const ERROR_SYSTEM_ERROR: &str = "SYSTEM_ERROR";
/// Error `code` of a close on an order that has already been paid.
pub const ERROR_ORDER_PAID: &str = "ORDERPAID";

/// Characters left unescaped in a path segment: RFC 3986 unreserved ones, plus `*` and `@`
/// which WeChat Pay allows in merchant numbers and which are legal in a path. Everything
/// else (`|` above all) is percent-encoded, so the signed path is the path sent.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'*')
    .remove(b'@');

/// HTTP methods API v3 uses here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMethod {
    Get,
    Post,
}

impl HttpMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Post => "POST",
        }
    }
}

/// A request to send to `https://api.mch.weixin.qq.com{path}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiRequest {
    pub method: HttpMethod,
    /// Path and query, exactly as to be sent and signed.
    pub path: String,
    /// The JSON body (`application/json`), empty for GET.
    pub body: String,
}

impl ApiRequest {
    /// The `Authorization` header for this request.
    pub fn authorization(
        &self,
        merchant: &Merchant,
        timestamp: i64,
        nonce: &str,
    ) -> Result<String, WechatError> {
        merchant.authorization(
            self.method.as_str(),
            &self.path,
            &self.body,
            timestamp,
            nonce,
        )
    }
}

/// An order to place (Native or H5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub appid: String,
    pub mchid: String,
    /// What the payer sees; at most 127 characters.
    pub description: String,
    /// Our payment number: 6..=32 of `[0-9A-Za-z_-|*]`, WeChat Pay's idempotency key.
    pub out_trade_no: String,
    pub notify_url: String,
    /// Yuan, at most two decimals.
    pub total: Decimal,
    /// When WeChat Pay should stop accepting payment (our pending TTL), if set.
    pub time_expire: Option<DateTime<Utc>>,
}

/// `scene_info` of an H5 order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct H5Scene {
    /// The payer's IP address as seen by us (IPv4 or IPv6).
    pub payer_client_ip: String,
    /// `Wap`, `iOS` or `Android`.
    pub h5_type: String,
}

#[derive(Serialize)]
struct OrderBody<'a> {
    appid: &'a str,
    mchid: &'a str,
    description: &'a str,
    out_trade_no: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    time_expire: Option<String>,
    notify_url: &'a str,
    amount: OrderAmount,
    #[serde(skip_serializing_if = "Option::is_none")]
    scene_info: Option<SceneInfo<'a>>,
}

#[derive(Serialize)]
struct OrderAmount {
    total: i64,
    currency: &'static str,
}

#[derive(Serialize)]
struct SceneInfo<'a> {
    payer_client_ip: &'a str,
    h5_info: H5Info<'a>,
}

#[derive(Serialize)]
struct H5Info<'a> {
    #[serde(rename = "type")]
    h5_type: &'a str,
}

fn invalid(what: impl Into<String>) -> WechatError {
    WechatError::InvalidRequest(what.into())
}

fn check_mchid(mchid: &str) -> Result<(), WechatError> {
    if mchid.is_empty() || mchid.len() > 32 || !mchid.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid("mchid must be 1..=32 digits"));
    }
    Ok(())
}

/// WeChat Pay's rule for `out_trade_no`: 6..=32 of digits, letters, `_`, `-`, `|`, `*`.
fn check_out_trade_no(value: &str) -> Result<(), WechatError> {
    let ok = (6..=32).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'|' | b'*'));
    if ok {
        Ok(())
    } else {
        Err(invalid("out_trade_no must be 6..=32 of [0-9A-Za-z_-|*]"))
    }
}

/// WeChat Pay's rule for `out_refund_no`: 1..=64 of digits, letters, `_`, `-`, `|`, `*`, `@`.
fn check_out_refund_no(value: &str) -> Result<(), WechatError> {
    let ok = (1..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'|' | b'*' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(invalid("out_refund_no must be 1..=64 of [0-9A-Za-z_-|*@]"))
    }
}

fn positive_fen(field: &str, yuan: Decimal) -> Result<i64, WechatError> {
    let fen = yuan_to_fen(yuan)?;
    if fen < 1 {
        return Err(invalid(format!("{field} must be at least 0.01 yuan")));
    }
    Ok(fen)
}

/// RFC 3339 in China Standard Time, the form WeChat Pay's examples use for `time_expire`.
fn rfc3339_cst(at: DateTime<Utc>) -> String {
    at.with_timezone(&CHINA_STANDARD_TIME)
        .format("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

fn to_json<T: Serialize>(value: &T) -> Result<String, WechatError> {
    serde_json::to_string(value).map_err(|e| invalid(e.to_string()))
}

fn order_body(order: &Order, scene_info: Option<SceneInfo<'_>>) -> Result<String, WechatError> {
    check_mchid(&order.mchid)?;
    check_out_trade_no(&order.out_trade_no)?;
    if order.appid.is_empty() {
        return Err(invalid("appid is required"));
    }
    if order.description.is_empty() || order.description.chars().count() > 127 {
        return Err(invalid("description must be 1..=127 characters"));
    }
    if order.notify_url.is_empty() {
        return Err(invalid("notify_url is required"));
    }
    to_json(&OrderBody {
        appid: &order.appid,
        mchid: &order.mchid,
        description: &order.description,
        out_trade_no: &order.out_trade_no,
        time_expire: order.time_expire.map(rfc3339_cst),
        notify_url: &order.notify_url,
        amount: OrderAmount {
            total: positive_fen("total", order.total)?,
            currency: CURRENCY_CNY,
        },
        scene_info,
    })
}

/// `POST /v3/pay/transactions/native`; the answer carries `code_url` for a QR code.
pub fn native_order(order: &Order) -> Result<ApiRequest, WechatError> {
    Ok(ApiRequest {
        method: HttpMethod::Post,
        path: "/v3/pay/transactions/native".to_owned(),
        body: order_body(order, None)?,
    })
}

/// `POST /v3/pay/transactions/h5`; the answer carries `h5_url` to send the browser to.
pub fn h5_order(order: &Order, scene: &H5Scene) -> Result<ApiRequest, WechatError> {
    if scene.payer_client_ip.parse::<std::net::IpAddr>().is_err() {
        return Err(invalid("payer_client_ip must be an IP address"));
    }
    if !matches!(scene.h5_type.as_str(), "Wap" | "iOS" | "Android") {
        return Err(invalid("h5_type must be Wap, iOS or Android"));
    }
    let scene_info = SceneInfo {
        payer_client_ip: &scene.payer_client_ip,
        h5_info: H5Info {
            h5_type: &scene.h5_type,
        },
    };
    Ok(ApiRequest {
        method: HttpMethod::Post,
        path: "/v3/pay/transactions/h5".to_owned(),
        body: order_body(order, Some(scene_info))?,
    })
}

/// `GET /v3/pay/transactions/out-trade-no/{out_trade_no}?mchid={mchid}`.
pub fn query_order(mchid: &str, out_trade_no: &str) -> Result<ApiRequest, WechatError> {
    check_mchid(mchid)?;
    check_out_trade_no(out_trade_no)?;
    Ok(ApiRequest {
        method: HttpMethod::Get,
        path: format!(
            "/v3/pay/transactions/out-trade-no/{}?mchid={mchid}",
            utf8_percent_encode(out_trade_no, PATH_SEGMENT)
        ),
        body: String::new(),
    })
}

#[derive(Serialize)]
struct CloseBody<'a> {
    mchid: &'a str,
}

/// `POST /v3/pay/transactions/out-trade-no/{out_trade_no}/close`; answered `204`.
pub fn close_order(mchid: &str, out_trade_no: &str) -> Result<ApiRequest, WechatError> {
    check_mchid(mchid)?;
    check_out_trade_no(out_trade_no)?;
    Ok(ApiRequest {
        method: HttpMethod::Post,
        path: format!(
            "/v3/pay/transactions/out-trade-no/{}/close",
            utf8_percent_encode(out_trade_no, PATH_SEGMENT)
        ),
        body: to_json(&CloseBody { mchid })?,
    })
}

/// A refund to ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundOrder {
    pub out_trade_no: String,
    /// Our refund number: WeChat Pay's idempotency key for the refund.
    pub out_refund_no: String,
    pub reason: Option<String>,
    pub notify_url: Option<String>,
    /// This refund, in yuan.
    pub refund: Decimal,
    /// The original order's total, in yuan (WeChat Pay checks it).
    pub total: Decimal,
}

#[derive(Serialize)]
struct RefundBody<'a> {
    out_trade_no: &'a str,
    out_refund_no: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    notify_url: Option<&'a str>,
    amount: RefundBodyAmount,
}

#[derive(Serialize)]
struct RefundBodyAmount {
    refund: i64,
    total: i64,
    currency: &'static str,
}

/// `POST /v3/refund/domestic/refunds`.
pub fn refund(order: &RefundOrder) -> Result<ApiRequest, WechatError> {
    check_out_trade_no(&order.out_trade_no)?;
    check_out_refund_no(&order.out_refund_no)?;
    let refund = positive_fen("refund", order.refund)?;
    let total = positive_fen("total", order.total)?;
    if refund > total {
        return Err(invalid("refund exceeds the order total"));
    }
    if order
        .reason
        .as_deref()
        .is_some_and(|r| r.chars().count() > 80)
    {
        return Err(invalid("reason must be at most 80 characters"));
    }
    Ok(ApiRequest {
        method: HttpMethod::Post,
        path: "/v3/refund/domestic/refunds".to_owned(),
        body: to_json(&RefundBody {
            out_trade_no: &order.out_trade_no,
            out_refund_no: &order.out_refund_no,
            reason: order.reason.as_deref().filter(|r| !r.is_empty()),
            notify_url: order.notify_url.as_deref().filter(|u| !u.is_empty()),
            amount: RefundBodyAmount {
                refund,
                total,
                currency: CURRENCY_CNY,
            },
        })?,
    })
}

/// `GET /v3/refund/domestic/refunds/{out_refund_no}`.
pub fn query_refund(out_refund_no: &str) -> Result<ApiRequest, WechatError> {
    check_out_refund_no(out_refund_no)?;
    Ok(ApiRequest {
        method: HttpMethod::Get,
        path: format!(
            "/v3/refund/domestic/refunds/{}",
            utf8_percent_encode(out_refund_no, PATH_SEGMENT)
        ),
        body: String::new(),
    })
}

/// Answer to a Native order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NativePrepay {
    /// `weixin://wxpay/bizpayurl?pr=…`, to be shown as a QR code.
    pub code_url: String,
}

/// Answer to an H5 order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct H5Prepay {
    /// The page to send the payer's mobile browser to.
    pub h5_url: String,
}

/// A non-2xx answer's body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

impl ErrorBody {
    /// The call may or may not have taken effect; settle it with a query.
    pub fn is_outcome_unknown(&self) -> bool {
        self.code == ERROR_SYSTEM_ERROR
    }
}

fn read<T: for<'de> Deserialize<'de>>(what: &str, body: &[u8]) -> Result<T, WechatError> {
    serde_json::from_slice(body).map_err(|e| WechatError::MalformedBody(format!("{what}: {e}")))
}

/// Reads a verified Native order answer.
pub fn parse_native_prepay(body: &VerifiedBody<'_>) -> Result<NativePrepay, WechatError> {
    read("native prepay", body.bytes())
}

/// Reads a verified H5 order answer.
pub fn parse_h5_prepay(body: &VerifiedBody<'_>) -> Result<H5Prepay, WechatError> {
    read("h5 prepay", body.bytes())
}

/// Reads a verified query-by-`out_trade_no` answer.
pub fn parse_transaction(body: &VerifiedBody<'_>) -> Result<Transaction, WechatError> {
    read("transaction", body.bytes())
}

/// Reads a verified refund or refund-query answer.
pub fn parse_refund(body: &VerifiedBody<'_>) -> Result<Refund, WechatError> {
    read("refund", body.bytes())
}

/// Reads an error body. It takes raw bytes because error answers from WeChat Pay's edge
/// (a 401 from the gateway, say) are not always signed: use it to log and to decide whether
/// to query, never as proof that something did not happen.
pub fn parse_error_body(body: &[u8]) -> Result<ErrorBody, WechatError> {
    read("error body", body)
}

/// The body to answer a notification with when it could not be processed (with a 4xx or 5xx
/// status, so WeChat Pay retries). Success is a `200` or `204` with an empty body.
pub fn notify_failure_body(message: &str) -> String {
    serde_json::json!({ "code": "FAIL", "message": message }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_escape_what_a_path_cannot_carry() {
        let q = query_order("1230000109", "ab|cd*ef-_").unwrap();
        assert_eq!(
            q.path,
            "/v3/pay/transactions/out-trade-no/ab%7Ccd*ef-_?mchid=1230000109"
        );
        let r = query_refund("R@1|2").unwrap();
        assert_eq!(r.path, "/v3/refund/domestic/refunds/R@1%7C2");
    }

    #[test]
    fn malformed_numbers_are_refused() {
        assert!(query_order("12a", "ORDER123").is_err());
        assert!(query_order("1230000109", "short").is_err());
        assert!(query_order("1230000109", "has/slash").is_err());
        assert!(query_refund("").is_err());
        assert!(query_refund("a?b").is_err());
    }

    #[test]
    fn failure_body_escapes_the_message() {
        assert_eq!(
            notify_failure_body("bad \"x\""),
            r#"{"code":"FAIL","message":"bad \"x\""}"#
        );
    }
}
