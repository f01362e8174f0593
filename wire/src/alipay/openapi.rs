//! OpenAPI calls the ledger makes server to server: `alipay.trade.query`,
//! `alipay.trade.refund`, `alipay.trade.fastpay.refund.query` and `alipay.trade.close`.
//!
//! Owns: the signed form parameters to POST to the gateway, and the checking of the answer.
//! An answer looks like `{"alipay_trade_query_response":{...},"sign":"..."}` and the
//! signature covers the *exact bytes* of the `*_response` value as they appear in the body —
//! not a re-serialisation, which could reorder keys or change escapes. Those bytes are
//! located with `serde_json`'s `RawValue`, which records a value's span in the input.
//!
//! Must not: do the HTTP exchange or retry; and must not trust an unsigned answer.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::keys::PublicKey;

use super::params::{encode_form, Params};
use super::pay::check_trade_no;
use super::{
    format_amount, parse_amount, AlipayError, Merchant, TradeStatus, CODE_SUCCESS, CODE_UNKNOWN,
    SUB_CODE_TRADE_NOT_EXIST,
};

const TRADE_QUERY: &str = "alipay.trade.query";
const TRADE_REFUND: &str = "alipay.trade.refund";
const REFUND_QUERY: &str = "alipay.trade.fastpay.refund.query";
const TRADE_CLOSE: &str = "alipay.trade.close";

/// A signed OpenAPI request, ready to POST as a form to the gateway URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenApiRequest {
    method: &'static str,
    params: Params,
}

impl OpenApiRequest {
    /// The API method, e.g. `alipay.trade.query`.
    pub fn method(&self) -> &'static str {
        self.method
    }

    /// The signed parameters, `sign` included.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The `application/x-www-form-urlencoded; charset=utf-8` request body.
    pub fn form_body(&self) -> String {
        encode_form(&self.params)
    }

    /// The key under which the answer arrives: `alipay_trade_query_response` and so on.
    pub fn response_key(&self) -> String {
        response_key(self.method)
    }
}

fn response_key(method: &str) -> String {
    format!("{}_response", method.replace('.', "_"))
}

/// A refund to ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRequest {
    pub out_trade_no: String,
    /// Yuan, at most two decimals.
    pub refund_amount: Decimal,
    /// Our refund number: Alipay's idempotency key, so a retried request can never refund
    /// twice — and the key the refund is later queried by.
    pub out_request_no: String,
    pub refund_reason: Option<String>,
}

#[derive(Serialize)]
struct QueryBiz<'a> {
    out_trade_no: &'a str,
}

#[derive(Serialize)]
struct RefundBiz<'a> {
    out_trade_no: &'a str,
    refund_amount: String,
    out_request_no: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    refund_reason: Option<&'a str>,
}

#[derive(Serialize)]
struct RefundQueryBiz<'a> {
    out_trade_no: &'a str,
    out_request_no: &'a str,
}

fn to_json<T: Serialize>(value: &T) -> Result<String, AlipayError> {
    serde_json::to_string(value).map_err(|e| AlipayError::InvalidRequest(e.to_string()))
}

impl Merchant {
    fn openapi(&self, method: &'static str, biz: String, at: DateTime<Utc>) -> OpenApiRequest {
        OpenApiRequest {
            method,
            params: self.signed_params(method, biz, at, &[]),
        }
    }

    /// `alipay.trade.query` by our trade number.
    pub fn trade_query(
        &self,
        out_trade_no: &str,
        at: DateTime<Utc>,
    ) -> Result<OpenApiRequest, AlipayError> {
        check_trade_no("out_trade_no", out_trade_no)?;
        Ok(self.openapi(TRADE_QUERY, to_json(&QueryBiz { out_trade_no })?, at))
    }

    /// `alipay.trade.refund`.
    pub fn trade_refund(
        &self,
        refund: &RefundRequest,
        at: DateTime<Utc>,
    ) -> Result<OpenApiRequest, AlipayError> {
        check_trade_no("out_trade_no", &refund.out_trade_no)?;
        check_trade_no("out_request_no", &refund.out_request_no)?;
        let biz = RefundBiz {
            out_trade_no: &refund.out_trade_no,
            refund_amount: format_amount(refund.refund_amount)?,
            out_request_no: &refund.out_request_no,
            refund_reason: refund.refund_reason.as_deref().filter(|r| !r.is_empty()),
        };
        Ok(self.openapi(TRADE_REFUND, to_json(&biz)?, at))
    }

    /// `alipay.trade.fastpay.refund.query` by trade number and refund number.
    pub fn refund_query(
        &self,
        out_trade_no: &str,
        out_request_no: &str,
        at: DateTime<Utc>,
    ) -> Result<OpenApiRequest, AlipayError> {
        check_trade_no("out_trade_no", out_trade_no)?;
        check_trade_no("out_request_no", out_request_no)?;
        let biz = RefundQueryBiz {
            out_trade_no,
            out_request_no,
        };
        Ok(self.openapi(REFUND_QUERY, to_json(&biz)?, at))
    }

    /// `alipay.trade.close`: stop an unpaid trade from being paid.
    pub fn trade_close(
        &self,
        out_trade_no: &str,
        at: DateTime<Utc>,
    ) -> Result<OpenApiRequest, AlipayError> {
        check_trade_no("out_trade_no", out_trade_no)?;
        Ok(self.openapi(TRADE_CLOSE, to_json(&QueryBiz { out_trade_no })?, at))
    }
}

/// The top-level members of a response body, each value kept as its raw text.
struct RawMembers<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for RawMembers<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = RawMembers<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, &'de RawValue>()? {
                    members.push((key, value));
                }
                Ok(RawMembers(members))
            }
        }
        deserializer.deserialize_map(MembersVisitor)
    }
}

/// The `*_response` value's raw text and the signature, located in a response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedContent<'a> {
    /// The exact bytes Alipay signed: the value of `{method}_response` (or of
    /// `error_response`) from its opening `{` to its closing `}`.
    pub content: &'a str,
    pub sign: Option<String>,
}

/// Locates the signed content of an answer to `method` without checking it (for logging and
/// for the simulator; use [`verify_response`] to accept an answer).
pub fn signed_content<'a>(body: &'a str, method: &str) -> Result<SignedContent<'a>, AlipayError> {
    locate_signed_content(body, &response_key(method))
}

/// Finds `{response_key}` (or, failing that, `error_response`) and `sign` in `body`.
pub(crate) fn locate_signed_content<'a>(
    body: &'a str,
    response_key: &str,
) -> Result<SignedContent<'a>, AlipayError> {
    let members: RawMembers<'a> = serde_json::from_str(body)
        .map_err(|e| AlipayError::MalformedResponse(format!("not a JSON object: {e}")))?;
    let find = |name: &str| -> Result<Option<&'a RawValue>, AlipayError> {
        let mut hits = members.0.iter().filter(|(k, _)| k == name).map(|(_, v)| *v);
        let first = hits.next();
        // Two values under one name would let the signed one and the parsed one differ.
        if hits.next().is_some() {
            return Err(AlipayError::MalformedResponse(format!(
                "`{name}` appears twice"
            )));
        }
        Ok(first)
    };
    let content = match find(response_key)? {
        Some(raw) => raw,
        None => find("error_response")?.ok_or_else(|| {
            AlipayError::MalformedResponse(format!("neither `{response_key}` nor `error_response`"))
        })?,
    };
    let sign = match find("sign")? {
        Some(raw) => Some(
            serde_json::from_str::<String>(raw.get())
                .map_err(|_| AlipayError::MalformedResponse("`sign` is not a string".into()))?,
        ),
        None => None,
    };
    Ok(SignedContent {
        content: content.get(),
        sign: sign.filter(|s| !s.is_empty()),
    })
}

/// The fields every answer carries.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ApiFailure {
    pub code: String,
    #[serde(default)]
    pub msg: String,
    #[serde(default)]
    pub sub_code: Option<String>,
    #[serde(default)]
    pub sub_msg: Option<String>,
}

impl ApiFailure {
    /// `ACQ.TRADE_NOT_EXIST`: Alipay has no trade under this number.
    pub fn is_trade_not_exist(&self) -> bool {
        self.sub_code.as_deref() == Some(SUB_CODE_TRADE_NOT_EXIST)
    }

    /// Code `20000` or an `ACQ.SYSTEM_ERROR`: the call may or may not have taken effect, and
    /// must be settled by a query before anything is declared failed.
    pub fn is_outcome_unknown(&self) -> bool {
        self.code == CODE_UNKNOWN
            || self
                .sub_code
                .as_deref()
                .is_some_and(|s| s.ends_with("ACQ.SYSTEM_ERROR"))
    }
}

/// A verified answer: the call either succeeded (`code` 10000) with a typed result, or
/// failed with Alipay's codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiOutcome<T> {
    Success(T),
    Failure(ApiFailure),
}

/// An answer whose signature has been checked. Only [`verify_response`] makes one, so the
/// typed readers below can only ever run on signed content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedResponse {
    method: String,
    content: String,
    status: ApiFailure,
}

/// Locates the signed content of an OpenAPI answer for `method`, checks its signature with
/// Alipay's public key, and reads its status.
pub fn verify_response(
    body: &str,
    method: &str,
    alipay_public_key: &PublicKey,
) -> Result<VerifiedResponse, AlipayError> {
    let located = locate_signed_content(body, &response_key(method))?;
    let status: ApiFailure = serde_json::from_str(located.content)
        .map_err(|e| AlipayError::MalformedResponse(format!("no code/msg: {e}")))?;
    let Some(sign) = located.sign else {
        if status.code == CODE_SUCCESS {
            return Err(AlipayError::MissingSignature);
        }
        return Err(AlipayError::UnsignedFailure(status));
    };
    let verified = alipay_public_key
        .verify_base64(located.content.as_bytes(), &sign)
        .is_ok()
        // Alipay's own SDKs retry with `\/` unescaped: some answers are signed before the
        // JSON writer escapes `/`. The retry still needs Alipay's signature over the text.
        || (located.content.contains("\\/")
            && alipay_public_key
                .verify_base64(located.content.replace("\\/", "/").as_bytes(), &sign)
                .is_ok());
    if !verified {
        return Err(AlipayError::BadSignature);
    }
    Ok(VerifiedResponse {
        method: method.to_owned(),
        content: located.content.to_owned(),
        status,
    })
}

impl VerifiedResponse {
    /// The signed `*_response` JSON exactly as received.
    pub fn raw(&self) -> &str {
        &self.content
    }

    /// `code`, `msg`, `sub_code`, `sub_msg`.
    pub fn status(&self) -> &ApiFailure {
        &self.status
    }

    pub fn is_success(&self) -> bool {
        self.status.code == CODE_SUCCESS
    }

    fn typed<W, T>(
        &self,
        method: &str,
        read: impl FnOnce(W) -> Result<T, AlipayError>,
    ) -> Result<ApiOutcome<T>, AlipayError>
    where
        W: for<'de> Deserialize<'de>,
    {
        if self.method != method {
            return Err(AlipayError::MalformedResponse(format!(
                "answer is for {}, not {method}",
                self.method
            )));
        }
        if !self.is_success() {
            return Ok(ApiOutcome::Failure(self.status.clone()));
        }
        let wire: W = serde_json::from_str(&self.content)
            .map_err(|e| AlipayError::MalformedResponse(format!("{method}: {e}")))?;
        read(wire).map(ApiOutcome::Success)
    }

    /// Reads an `alipay.trade.query` answer.
    pub fn trade_query(&self) -> Result<ApiOutcome<TradeQuery>, AlipayError> {
        self.typed(TRADE_QUERY, |w: TradeQueryWire| {
            Ok(TradeQuery {
                trade_status: TradeStatus::parse(&required(w.trade_status, "trade_status")?),
                total_amount: parse_amount(
                    "total_amount",
                    &required(w.total_amount, "total_amount")?,
                )?,
                buyer_pay_amount: optional_amount("buyer_pay_amount", w.buyer_pay_amount)?,
                out_trade_no: required(w.out_trade_no, "out_trade_no")?,
                trade_no: required(w.trade_no, "trade_no")?,
                send_pay_date: w.send_pay_date,
            })
        })
    }

    /// Reads an `alipay.trade.refund` answer.
    pub fn trade_refund(&self) -> Result<ApiOutcome<TradeRefund>, AlipayError> {
        self.typed(TRADE_REFUND, |w: TradeRefundWire| {
            Ok(TradeRefund {
                out_trade_no: required(w.out_trade_no, "out_trade_no")?,
                trade_no: required(w.trade_no, "trade_no")?,
                refund_fee: parse_amount("refund_fee", &required(w.refund_fee, "refund_fee")?)?,
                fund_change: w.fund_change.as_deref() == Some("Y"),
                gmt_refund_pay: w.gmt_refund_pay,
            })
        })
    }

    /// Reads an `alipay.trade.fastpay.refund.query` answer.
    pub fn refund_query(&self) -> Result<ApiOutcome<RefundQuery>, AlipayError> {
        self.typed(REFUND_QUERY, |w: RefundQueryWire| {
            Ok(RefundQuery {
                out_trade_no: w.out_trade_no,
                trade_no: w.trade_no,
                out_request_no: w.out_request_no,
                refund_amount: optional_amount("refund_amount", w.refund_amount)?,
                total_amount: optional_amount("total_amount", w.total_amount)?,
                refund_status: match w.refund_status.as_deref() {
                    Some("REFUND_SUCCESS") => RefundStatus::RefundSuccess,
                    None | Some("") => RefundStatus::NotSucceeded,
                    Some(other) => RefundStatus::Other(other.to_owned()),
                },
                gmt_refund_pay: w.gmt_refund_pay,
            })
        })
    }

    /// Reads an `alipay.trade.close` answer.
    pub fn trade_close(&self) -> Result<ApiOutcome<TradeClose>, AlipayError> {
        self.typed(TRADE_CLOSE, |w: TradeCloseWire| {
            Ok(TradeClose {
                out_trade_no: w.out_trade_no,
                trade_no: w.trade_no,
            })
        })
    }
}

fn required(value: Option<String>, name: &'static str) -> Result<String, AlipayError> {
    value
        .filter(|v| !v.is_empty())
        .ok_or(AlipayError::MissingField(name))
}

fn optional_amount(
    name: &'static str,
    value: Option<String>,
) -> Result<Option<Decimal>, AlipayError> {
    value
        .filter(|v| !v.is_empty())
        .map(|v| parse_amount(name, &v))
        .transpose()
}

/// A successful `alipay.trade.query`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TradeQuery {
    pub out_trade_no: String,
    pub trade_no: String,
    pub trade_status: TradeStatus,
    pub total_amount: Decimal,
    pub buyer_pay_amount: Option<Decimal>,
    pub send_pay_date: Option<String>,
}

/// A successful `alipay.trade.refund`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TradeRefund {
    pub out_trade_no: String,
    pub trade_no: String,
    /// The total refunded on this trade so far, this refund included.
    pub refund_fee: Decimal,
    /// `fund_change=Y`: this request moved money. `N` on a retried request that had already
    /// refunded — still a success, just not a second refund.
    pub fund_change: bool,
    pub gmt_refund_pay: Option<String>,
}

/// `refund_status` of a refund query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundStatus {
    /// `REFUND_SUCCESS`.
    RefundSuccess,
    /// The field is absent: Alipay has no successful refund under this request number (never
    /// received, still processing, or failed).
    NotSucceeded,
    Other(String),
}

/// A successful `alipay.trade.fastpay.refund.query`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundQuery {
    pub out_trade_no: Option<String>,
    pub trade_no: Option<String>,
    pub out_request_no: Option<String>,
    pub refund_amount: Option<Decimal>,
    pub total_amount: Option<Decimal>,
    pub refund_status: RefundStatus,
    pub gmt_refund_pay: Option<String>,
}

/// A successful `alipay.trade.close`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TradeClose {
    pub out_trade_no: Option<String>,
    pub trade_no: Option<String>,
}

// Wire shapes: every field optional, amounts as the strings Alipay sends, so that checking
// presence and format is done once, above, with errors that name the field.

#[derive(Deserialize)]
struct TradeQueryWire {
    out_trade_no: Option<String>,
    trade_no: Option<String>,
    trade_status: Option<String>,
    total_amount: Option<String>,
    buyer_pay_amount: Option<String>,
    send_pay_date: Option<String>,
}

#[derive(Deserialize)]
struct TradeRefundWire {
    out_trade_no: Option<String>,
    trade_no: Option<String>,
    refund_fee: Option<String>,
    fund_change: Option<String>,
    gmt_refund_pay: Option<String>,
}

#[derive(Deserialize)]
struct RefundQueryWire {
    out_trade_no: Option<String>,
    trade_no: Option<String>,
    out_request_no: Option<String>,
    refund_amount: Option<String>,
    total_amount: Option<String>,
    refund_status: Option<String>,
    gmt_refund_pay: Option<String>,
}

#[derive(Deserialize)]
struct TradeCloseWire {
    out_trade_no: Option<String>,
    trade_no: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_key_replaces_dots() {
        assert_eq!(
            response_key("alipay.trade.fastpay.refund.query"),
            "alipay_trade_fastpay_refund_query_response"
        );
    }

    #[test]
    fn locating_keeps_the_exact_bytes_of_the_response_value() {
        let body =
            "{ \"alipay_trade_query_response\" : {\"b\":1, \"a\":\"x\\/y\"} ,\"sign\":\"S\"}";
        let located = locate_signed_content(body, "alipay_trade_query_response").unwrap();
        assert_eq!(located.content, "{\"b\":1, \"a\":\"x\\/y\"}");
        assert_eq!(located.sign.as_deref(), Some("S"));
    }

    #[test]
    fn locating_falls_back_to_error_response() {
        let body = r#"{"error_response":{"code":"40002","msg":"Invalid Arguments"}}"#;
        let located = locate_signed_content(body, "alipay_trade_query_response").unwrap();
        assert_eq!(
            located.content,
            r#"{"code":"40002","msg":"Invalid Arguments"}"#
        );
        assert_eq!(located.sign, None);
    }

    #[test]
    fn a_duplicated_response_member_is_refused() {
        let body = r#"{"x_response":{"code":"10000"},"x_response":{"code":"40004"},"sign":"S"}"#;
        assert!(matches!(
            locate_signed_content(body, "x_response"),
            Err(AlipayError::MalformedResponse(_))
        ));
    }

    #[test]
    fn non_object_bodies_are_refused() {
        for body in ["", "[]", "\"x\"", "{\"a\":"] {
            assert!(
                locate_signed_content(body, "x_response").is_err(),
                "{body:?}"
            );
        }
    }
}
