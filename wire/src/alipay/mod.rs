//! Alipay open platform, RSA2 (SHA256withRSA) flavour: the page-pay and wap-pay redirects,
//! the asynchronous notification, the OpenAPI calls the ledger makes (query, refund, refund
//! query, close) and their signed JSON answers — plus the gateway's side of each, for the
//! simulator.
//!
//! Owns: the bytes. Builders return the exact URL, form parameters or body to send; checkers
//! take the exact bytes received. Amounts are `Decimal` yuan, written and read with exactly
//! two places and never rounded.
//!
//! Must not: do HTTP, read the clock (timestamps are arguments), or decide what a payment's
//! state becomes — a verified message is reported as it is, and the domain decides.

mod notify;
mod openapi;
mod params;
mod pay;
pub mod sim;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::keys::PrivateKey;
use crate::CHINA_STANDARD_TIME;

pub use notify::{
    verify_notification, verify_notification_params, AlipayNotification, TradeStatus,
};
pub use openapi::{
    signed_content, verify_response, ApiFailure, ApiOutcome, OpenApiRequest, RefundQuery,
    RefundRequest, RefundStatus, SignedContent, TradeClose, TradeQuery, TradeRefund,
    VerifiedResponse,
};
pub use params::{
    encode_form, parse_form, sign_params, signing_string, verify_params, Params, SignedFields,
};
pub use pay::{biz_content, PayOrder, PayProduct};

/// The body a merchant answers a notification with once it has durably recorded it. Anything
/// else makes Alipay send the notification again (on a back-off schedule, for about 25 hours).
pub const NOTIFY_ACK: &str = "success";
/// The only signature type this crate speaks. The older SHA1-based `RSA` is refused.
pub const SIGN_TYPE: &str = "RSA2";
/// `code` of a successful OpenAPI call.
pub const CODE_SUCCESS: &str = "10000";
/// `code` meaning "service unavailable": the call's outcome is unknown and must be settled
/// by a query before anything is declared failed.
pub const CODE_UNKNOWN: &str = "20000";
/// `sub_code` of a query for an order Alipay has never seen (the buyer never opened the page).
pub const SUB_CODE_TRADE_NOT_EXIST: &str = "ACQ.TRADE_NOT_EXIST";

const CHARSET: &str = "utf-8";
const FORMAT: &str = "JSON";
const VERSION: &str = "1.0";

/// The largest single amount Alipay accepts (`total_amount`, `refund_amount`), in yuan.
pub const AMOUNT_MAX_YUAN: Decimal = Decimal::from_parts(1_410_065_408, 2, 0, false, 2);

/// Everything that can go wrong building or checking an Alipay message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlipayError {
    #[error("form body is malformed: {0}")]
    MalformedForm(&'static str),
    #[error("parameter `{0}` appears more than once")]
    DuplicateParam(String),
    #[error("required field `{0}` is missing or empty")]
    MissingField(&'static str),
    #[error("field `{field}` is not an amount with at most two decimals: {value:?}")]
    MalformedAmount { field: &'static str, value: String },
    #[error("message carries no signature")]
    MissingSignature,
    #[error("signature does not verify")]
    BadSignature,
    #[error("sign_type {0:?} is not supported; only RSA2 is")]
    UnsupportedSignType(String),
    #[error("charset {0:?} is not supported; only utf-8 is")]
    UnsupportedCharset(String),
    #[error("response is malformed: {0}")]
    MalformedResponse(String),
    /// Alipay answered with a failure it did not sign. It is reported so the caller can log
    /// it, but an unsigned answer proves nothing: treat the call's outcome as unknown.
    #[error("unsigned failure response: {0:?}")]
    UnsignedFailure(ApiFailure),
    #[error("request is invalid: {0}")]
    InvalidRequest(String),
}

/// The merchant's identity on the open platform: the app id and the key that signs for it.
#[derive(Debug, Clone)]
pub struct Merchant {
    pub app_id: String,
    pub private_key: PrivateKey,
}

/// `yyyy-MM-dd HH:mm:ss` in Asia/Shanghai, the form of Alipay's `timestamp` and `time_expire`.
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.with_timezone(&CHINA_STANDARD_TIME)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// Writes an amount the way Alipay wants it (`"88.80"`): positive, at most
/// [`AMOUNT_MAX_YUAN`], exactly two decimals. A value that needs more places is refused, not
/// rounded.
pub fn format_amount(amount: Decimal) -> Result<String, AlipayError> {
    if amount <= Decimal::ZERO || amount > AMOUNT_MAX_YUAN {
        return Err(AlipayError::InvalidRequest(format!(
            "amount {amount} is outside 0.01..={AMOUNT_MAX_YUAN}"
        )));
    }
    let mut exact = amount.normalize();
    if exact.scale() > 2 {
        return Err(AlipayError::InvalidRequest(format!(
            "amount {amount} has more than two decimals"
        )));
    }
    // Raising the scale of a value this small only appends zeros; it cannot overflow.
    exact.rescale(2);
    Ok(exact.to_string())
}

/// Reads an amount Alipay sent: ASCII digits, optionally `.` and one or two more digits.
/// Signs, exponents, spaces and a third decimal are all refused.
pub fn parse_amount(field: &'static str, text: &str) -> Result<Decimal, AlipayError> {
    let malformed = || AlipayError::MalformedAmount {
        field,
        value: text.to_owned(),
    };
    let (int, frac) = match text.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (text, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    // 12 integer digits is far beyond any Alipay amount and keeps the value well inside Decimal.
    if !digits(int) || int.len() > 12 {
        return Err(malformed());
    }
    if let Some(frac) = frac {
        if !digits(frac) || frac.len() > 2 {
            return Err(malformed());
        }
    }
    Decimal::from_str_exact(text).map_err(|_| malformed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn amount_max_is_one_hundred_million() {
        assert_eq!(AMOUNT_MAX_YUAN, d("100000000.00"));
    }

    #[test]
    fn amounts_are_written_with_exactly_two_places() {
        assert_eq!(format_amount(d("88.8")).unwrap(), "88.80");
        assert_eq!(format_amount(d("1")).unwrap(), "1.00");
        assert_eq!(format_amount(d("0.01")).unwrap(), "0.01");
        assert_eq!(format_amount(d("12.3400")).unwrap(), "12.34");
        assert_eq!(format_amount(d("100000000")).unwrap(), "100000000.00");
    }

    #[test]
    fn amounts_needing_rounding_or_out_of_range_are_refused() {
        for bad in ["0.001", "1.005", "0", "-1", "100000000.01"] {
            assert!(format_amount(d(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn amounts_are_read_strictly() {
        assert_eq!(parse_amount("total_amount", "0.10").unwrap(), d("0.10"));
        assert_eq!(parse_amount("total_amount", "88").unwrap(), d("88"));
        for bad in [
            "0.100", "-1.00", "+1", "1e3", " 1.00", "1.", ".5", "", "1,00", "１.00",
        ] {
            assert!(parse_amount("total_amount", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn timestamps_are_shanghai_wall_clock() {
        let at = Utc.with_ymd_and_hms(2019, 8, 15, 7, 56, 22).unwrap();
        assert_eq!(timestamp(at), "2019-08-15 15:56:22");
        let near_midnight = Utc.with_ymd_and_hms(2026, 11, 30, 16, 30, 0).unwrap();
        assert_eq!(timestamp(near_midnight), "2026-12-01 00:30:00");
    }
}
