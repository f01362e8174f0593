//! The asynchronous notification (`notify_type=trade_status_sync`) Alipay POSTs to
//! `notify_url` when a trade changes: paid, finished, closed, or partly refunded.
//!
//! Owns: parsing the raw form body, checking its RSA2 signature with Alipay's public key over
//! every parameter except `sign` and `sign_type`, and reading the fields the ledger needs.
//!
//! Must not: act on the notification. The same notification arrives again and again until
//! the merchant answers [`super::NOTIFY_ACK`]; deduplication (by `notify_id` or the trade) is
//! the domain's job.

use std::collections::BTreeMap;

use rust_decimal::Decimal;

use crate::keys::PublicKey;

use super::params::{parse_form, verify_params, Params, SignedFields};
use super::{parse_amount, AlipayError};

/// Alipay's `trade_status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TradeStatus {
    /// `WAIT_BUYER_PAY`: created, not paid.
    WaitBuyerPay,
    /// `TRADE_SUCCESS`: paid; still refundable.
    TradeSuccess,
    /// `TRADE_FINISHED`: paid and past the refund window.
    TradeFinished,
    /// `TRADE_CLOSED`: closed unpaid, or fully refunded.
    TradeClosed,
    /// A status this crate does not know, kept verbatim.
    Other(String),
}

impl TradeStatus {
    pub fn parse(text: &str) -> Self {
        match text {
            "WAIT_BUYER_PAY" => TradeStatus::WaitBuyerPay,
            "TRADE_SUCCESS" => TradeStatus::TradeSuccess,
            "TRADE_FINISHED" => TradeStatus::TradeFinished,
            "TRADE_CLOSED" => TradeStatus::TradeClosed,
            other => TradeStatus::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            TradeStatus::WaitBuyerPay => "WAIT_BUYER_PAY",
            TradeStatus::TradeSuccess => "TRADE_SUCCESS",
            TradeStatus::TradeFinished => "TRADE_FINISHED",
            TradeStatus::TradeClosed => "TRADE_CLOSED",
            TradeStatus::Other(s) => s,
        }
    }

    /// Money has reached the merchant (`TRADE_SUCCESS` or `TRADE_FINISHED`).
    pub fn is_paid(&self) -> bool {
        matches!(self, TradeStatus::TradeSuccess | TradeStatus::TradeFinished)
    }
}

/// A notification whose signature has been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlipayNotification {
    /// Unique per notification attempt series; stable across Alipay's retries.
    pub notify_id: String,
    pub notify_type: Option<String>,
    pub notify_time: Option<String>,
    /// The app the trade belongs to. The caller must compare it with its own app id: a
    /// signature only proves Alipay sent this, not that it was meant for us.
    pub app_id: String,
    pub out_trade_no: String,
    /// Alipay's trade number.
    pub trade_no: String,
    pub trade_status: TradeStatus,
    /// The order total in yuan, exact.
    pub total_amount: Decimal,
    pub receipt_amount: Option<Decimal>,
    pub buyer_pay_amount: Option<Decimal>,
    /// `yyyy-MM-dd HH:mm:ss`, Asia/Shanghai, as sent.
    pub gmt_payment: Option<String>,
    pub gmt_close: Option<String>,
    /// Set on refund notifications: the refund's request number (our refund number).
    pub out_biz_no: Option<String>,
    /// Set on refund notifications: the total refunded so far, in yuan.
    pub refund_fee: Option<Decimal>,
    pub gmt_refund: Option<String>,
    pub out_request_no: Option<String>,
    /// Every parameter as received (after form decoding), `sign` included, for the record.
    pub params: BTreeMap<String, String>,
}

/// Verifies a raw notification body and reads it.
pub fn verify_notification(
    body: &[u8],
    alipay_public_key: &PublicKey,
) -> Result<AlipayNotification, AlipayError> {
    verify_notification_params(parse_form(body)?, alipay_public_key)
}

/// Verifies already-decoded notification parameters and reads them.
pub fn verify_notification_params(
    params: Params,
    alipay_public_key: &PublicKey,
) -> Result<AlipayNotification, AlipayError> {
    if let Some(charset) = params.get("charset") {
        let utf8 = charset.eq_ignore_ascii_case("utf-8") || charset.eq_ignore_ascii_case("utf8");
        if !utf8 {
            return Err(AlipayError::UnsupportedCharset(charset.clone()));
        }
    }
    verify_params(
        &params,
        alipay_public_key,
        SignedFields::AllButSignAndSignType,
    )?;

    let required = |name: &'static str| -> Result<String, AlipayError> {
        params
            .get(name)
            .filter(|v| !v.is_empty())
            .cloned()
            .ok_or(AlipayError::MissingField(name))
    };
    let optional = |name: &str| params.get(name).filter(|v| !v.is_empty()).cloned();
    let amount = |name: &'static str| -> Result<Option<Decimal>, AlipayError> {
        optional(name).map(|v| parse_amount(name, &v)).transpose()
    };

    Ok(AlipayNotification {
        notify_id: required("notify_id")?,
        notify_type: optional("notify_type"),
        notify_time: optional("notify_time"),
        app_id: required("app_id")?,
        out_trade_no: required("out_trade_no")?,
        trade_no: required("trade_no")?,
        trade_status: TradeStatus::parse(&required("trade_status")?),
        total_amount: parse_amount("total_amount", &required("total_amount")?)?,
        receipt_amount: amount("receipt_amount")?,
        buyer_pay_amount: amount("buyer_pay_amount")?,
        gmt_payment: optional("gmt_payment"),
        gmt_close: optional("gmt_close"),
        out_biz_no: optional("out_biz_no"),
        refund_fee: amount("refund_fee")?,
        gmt_refund: optional("gmt_refund"),
        out_request_no: optional("out_request_no"),
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trade_status_round_trips_and_keeps_unknown_values() {
        for s in [
            "WAIT_BUYER_PAY",
            "TRADE_SUCCESS",
            "TRADE_FINISHED",
            "TRADE_CLOSED",
            "NEW_ONE",
        ] {
            assert_eq!(TradeStatus::parse(s).as_str(), s);
        }
        assert_eq!(
            TradeStatus::parse("NEW_ONE"),
            TradeStatus::Other("NEW_ONE".into())
        );
        assert!(TradeStatus::TradeFinished.is_paid());
        assert!(!TradeStatus::TradeClosed.is_paid());
    }
}
