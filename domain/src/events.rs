//! The seven payment events (SPEC §2) and the small status enums the read side shows.
//!
//! Events are facts: once appended they are never changed, so every field a read model or an
//! auditor needs is carried in the event itself. Amounts are exact decimal strings.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Currency, PaymentMethod};
use crate::payer::SealedPayer;

/// One event of a payment's stream. Serialized adjacently tagged so that the store can keep
/// `type` in its own column and `data` as jsonb.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum PaymentEvent {
    Created(Created),
    CallbackReceived(CallbackReceived),
    Paid(Paid),
    Failed(Failed),
    RefundRequested(RefundRequested),
    Refunded(Refunded),
    RefundFailed(RefundFailed),
}

impl PaymentEvent {
    /// The snake_case name stored in `events.event_type` and used in NATS subjects.
    pub fn event_type(&self) -> &'static str {
        match self {
            PaymentEvent::Created(_) => "created",
            PaymentEvent::CallbackReceived(_) => "callback_received",
            PaymentEvent::Paid(_) => "paid",
            PaymentEvent::Failed(_) => "failed",
            PaymentEvent::RefundRequested(_) => "refund_requested",
            PaymentEvent::Refunded(_) => "refunded",
            PaymentEvent::RefundFailed(_) => "refund_failed",
        }
    }

    /// The `data` part alone, as stored in the log.
    pub fn data(&self) -> serde_json::Value {
        let tagged =
            serde_json::to_value(self).expect("events are plain data and always serialize");
        match tagged {
            serde_json::Value::Object(mut map) => map.remove("data").unwrap_or_default(),
            _ => unreachable!("adjacently tagged enums serialize to objects"),
        }
    }

    /// Rebuilds an event from its stored type and data.
    pub fn from_parts(
        event_type: &str,
        data: serde_json::Value,
    ) -> Result<Self, serde_json::Error> {
        serde_json::from_value(serde_json::json!({ "type": event_type, "data": data }))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Created {
    pub payment_id: Uuid,
    pub payment_no: String,
    pub order_id: String,
    pub user_id: String,
    pub amount: Decimal,
    pub currency: Currency,
    pub payment_method: PaymentMethod,
    pub payment_url: String,
    /// Where the merchant wants the member sent to try again after a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_url: Option<String>,
    /// The merchant whose bound client key created the payment (keys bound to a merchant
    /// see only its payments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant: Option<String>,
    /// Payer data sealed under the user's data key; only ciphertext enters the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<SealedPayer>,
}

/// What the gateway says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyOutcome {
    Success,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallbackReceived {
    pub callback_id: Uuid,
    pub callback_no: String,
    pub gateway: PaymentMethod,
    pub outcome: NotifyOutcome,
    pub amount: Decimal,
    pub gateway_trade_no: String,
    /// Set when the notification is about a refund rather than the payment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_no: Option<String>,
    /// What the ledger did with it: applied, refused or merely received.
    pub status: CallbackStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Money the gateway says it took and the ledger did not accept as the payment (a success
    /// after the payment failed, a second charge under another trade number): it is held in
    /// the `suspense` account and an operator can refund it.
    #[serde(default)]
    pub flagged_for_refund: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Paid {
    pub paid_at: DateTime<Utc>,
    pub gateway_trade_no: String,
    pub callback_no: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failed {
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefundRequested {
    pub refund_id: Uuid,
    pub refund_no: String,
    pub amount: Decimal,
    pub reason: String,
    /// The part of `amount` that returns flagged money (held in `suspense`) rather than
    /// revenue; decided with the refund so that its postings depend on the event alone.
    #[serde(default, skip_serializing_if = "Decimal::is_zero")]
    pub from_suspense: Decimal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refunded {
    pub refund_id: Uuid,
    pub refund_no: String,
    pub amount: Decimal,
    /// The gateway confirmed a refund the ledger had already recorded as failed: the money
    /// may have gone out twice, so the refund and its payment are flagged for a person.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub late: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefundFailed {
    pub refund_id: Uuid,
    pub refund_no: String,
    pub amount: Decimal,
    pub reason: String,
}

macro_rules! status_enum {
    ($name:ident { $($variant:ident = $code:literal => $text:literal),+ $(,)? }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            /// The seed-compatible numeric code stored in the read tables.
            pub fn code(self) -> i16 {
                match self { $($name::$variant => $code),+ }
            }
            /// The name the API shows.
            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
            pub fn from_code(code: i16) -> Option<Self> {
                match code { $($code => Some($name::$variant),)+ _ => None }
            }
            /// Filters accept the name or the number.
            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $($text => Some($name::$variant),)+
                    other => other.parse::<i16>().ok().and_then(Self::from_code),
                }
            }
        }
    };
}

status_enum!(CallbackStatus {
    Processing = 0 => "processing",
    Success = 1 => "success",
    Failed = 2 => "failed",
});

status_enum!(RefundStatus {
    Processing = 0 => "processing",
    Success = 1 => "success",
    Failed = 2 => "failed",
});

pub(crate) use status_enum;
