//! The JSON shapes WeChat Pay returns for a transaction and a refund — in query answers, the
//! refund answer, and (decrypted) in notifications. Amounts stay integer fen as on the wire;
//! helpers give exact `Decimal` yuan.
//!
//! Unknown fields are ignored and unknown enum values kept verbatim, so a field WeChat Pay
//! adds tomorrow cannot make a verified message unreadable.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::amount::fen_to_yuan;

/// `trade_state` of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum TradeState {
    /// `SUCCESS`: paid.
    Success,
    /// `REFUND`: paid, then (partly) refunded.
    Refund,
    /// `NOTPAY`: not paid yet.
    NotPay,
    /// `CLOSED`: closed unpaid.
    Closed,
    /// `REVOKED`: cancelled (payment-code flows).
    Revoked,
    /// `USERPAYING`: waiting for the payer (payment-code flows).
    UserPaying,
    /// `PAYERROR`: payment failed at the bank.
    PayError,
    Other(String),
}

impl From<String> for TradeState {
    fn from(value: String) -> Self {
        match value.as_str() {
            "SUCCESS" => TradeState::Success,
            "REFUND" => TradeState::Refund,
            "NOTPAY" => TradeState::NotPay,
            "CLOSED" => TradeState::Closed,
            "REVOKED" => TradeState::Revoked,
            "USERPAYING" => TradeState::UserPaying,
            "PAYERROR" => TradeState::PayError,
            _ => TradeState::Other(value),
        }
    }
}

impl From<TradeState> for String {
    fn from(value: TradeState) -> Self {
        match value {
            TradeState::Success => "SUCCESS".into(),
            TradeState::Refund => "REFUND".into(),
            TradeState::NotPay => "NOTPAY".into(),
            TradeState::Closed => "CLOSED".into(),
            TradeState::Revoked => "REVOKED".into(),
            TradeState::UserPaying => "USERPAYING".into(),
            TradeState::PayError => "PAYERROR".into(),
            TradeState::Other(s) => s,
        }
    }
}

/// `amount` of a transaction, in fen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionAmount {
    pub total: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_total: Option<i64>,
    pub currency: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_currency: Option<String>,
}

impl TransactionAmount {
    /// `total` in yuan, exact.
    pub fn total_yuan(&self) -> Decimal {
        fen_to_yuan(self.total)
    }
}

/// A transaction: the answer to a query by `out_trade_no`, and the decrypted resource of a
/// `TRANSACTION.SUCCESS` notification. Fields WeChat Pay leaves out before payment
/// (`transaction_id`, `success_time`, …) are optional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    pub appid: String,
    pub mchid: String,
    pub out_trade_no: String,
    /// WeChat Pay's transaction number; present once paid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    /// `NATIVE`, `MWEB` (H5), `JSAPI`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_type: Option<String>,
    pub trade_state: TradeState,
    #[serde(default)]
    pub trade_state_desc: String,
    /// RFC 3339, e.g. `2018-06-08T10:34:56+08:00`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<TransactionAmount>,
}

/// Status of a refund: `status` in refund answers, `refund_status` in refund notifications.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum RefundStatus {
    /// `SUCCESS`: the money went back.
    Success,
    /// `PROCESSING`: accepted, not settled; wait for the notification or query again.
    Processing,
    /// `ABNORMAL`: stuck (e.g. the payer's card was cancelled); needs manual handling.
    Abnormal,
    /// `CLOSED`: closed without refunding.
    Closed,
    Other(String),
}

impl From<String> for RefundStatus {
    fn from(value: String) -> Self {
        match value.as_str() {
            "SUCCESS" => RefundStatus::Success,
            "PROCESSING" => RefundStatus::Processing,
            "ABNORMAL" => RefundStatus::Abnormal,
            "CLOSED" => RefundStatus::Closed,
            _ => RefundStatus::Other(value),
        }
    }
}

impl From<RefundStatus> for String {
    fn from(value: RefundStatus) -> Self {
        match value {
            RefundStatus::Success => "SUCCESS".into(),
            RefundStatus::Processing => "PROCESSING".into(),
            RefundStatus::Abnormal => "ABNORMAL".into(),
            RefundStatus::Closed => "CLOSED".into(),
            RefundStatus::Other(s) => s,
        }
    }
}

/// `amount` of a refund, in fen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundAmount {
    /// The original order's total.
    pub total: i64,
    /// This refund.
    pub refund: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_total: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_refund: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

impl RefundAmount {
    /// `refund` in yuan, exact.
    pub fn refund_yuan(&self) -> Decimal {
        fen_to_yuan(self.refund)
    }
}

/// A refund as returned by `POST /v3/refund/domestic/refunds` and
/// `GET /v3/refund/domestic/refunds/{out_refund_no}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    pub refund_id: String,
    pub out_refund_no: String,
    #[serde(default)]
    pub transaction_id: String,
    pub out_trade_no: String,
    pub status: RefundStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_received_account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<String>,
    pub amount: RefundAmount,
}

/// The decrypted resource of a `REFUND.*` notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundNotice {
    pub mchid: String,
    pub out_trade_no: String,
    pub transaction_id: String,
    pub out_refund_no: String,
    pub refund_id: String,
    pub refund_status: RefundStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_received_account: Option<String>,
    pub amount: RefundAmount,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_unknown_values_are_kept() {
        for s in [
            "SUCCESS",
            "REFUND",
            "NOTPAY",
            "CLOSED",
            "REVOKED",
            "USERPAYING",
            "PAYERROR",
            "NEW",
        ] {
            assert_eq!(String::from(TradeState::from(s.to_owned())), s);
        }
        for s in ["SUCCESS", "PROCESSING", "ABNORMAL", "CLOSED", "NEW"] {
            assert_eq!(String::from(RefundStatus::from(s.to_owned())), s);
        }
    }

    #[test]
    fn a_not_yet_paid_transaction_reads_without_payment_fields() {
        let body = r#"{"amount":{"currency":"CNY","payer_currency":"CNY","total":1},"appid":"wx1","mchid":"1230000109","out_trade_no":"T1","promotion_detail":[],"scene_info":{"device_id":""},"trade_state":"NOTPAY","trade_state_desc":"订单未支付"}"#;
        let t: Transaction = serde_json::from_str(body).unwrap();
        assert_eq!(t.trade_state, TradeState::NotPay);
        assert_eq!(t.transaction_id, None);
        assert_eq!(t.amount.unwrap().total_yuan().to_string(), "0.01");
    }
}
