//! Notifications WeChat Pay POSTs to `notify_url`: a signed JSON envelope
//! `{id, create_time, event_type, resource_type, resource, summary}` whose `resource` is
//! encrypted with the APIv3 key.
//!
//! Owns: verify the signature over the raw body, then decrypt, then read — in that order, so
//! nothing unauthenticated is ever decrypted or parsed into a typed event.
//!
//! Must not: deduplicate or act. WeChat Pay resends until it gets a 2xx; the envelope `id`
//! and the resource's numbers are what the domain deduplicates on.

use serde::{Deserialize, Serialize};

use super::aead::{ApiV3Key, EncryptedResource};
use super::auth::{verify_signature, PlatformKeys, SignatureHeaders};
use super::model::{RefundNotice, TradeState, Transaction};
use super::WechatError;

pub const EVENT_TRANSACTION_SUCCESS: &str = "TRANSACTION.SUCCESS";
pub const EVENT_REFUND_SUCCESS: &str = "REFUND.SUCCESS";
pub const EVENT_REFUND_ABNORMAL: &str = "REFUND.ABNORMAL";
pub const EVENT_REFUND_CLOSED: &str = "REFUND.CLOSED";
/// `resource_type` of every encrypted notification.
pub const RESOURCE_TYPE_ENCRYPTED: &str = "encrypt-resource";

/// The notification envelope as sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationEnvelope {
    pub id: String,
    pub create_time: String,
    pub event_type: String,
    pub resource_type: String,
    pub resource: EncryptedResource,
    #[serde(default)]
    pub summary: String,
}

/// Which refund event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundEvent {
    /// `REFUND.SUCCESS`
    Success,
    /// `REFUND.ABNORMAL`
    Abnormal,
    /// `REFUND.CLOSED`
    Closed,
}

/// What a verified notification says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotificationEvent {
    /// `TRANSACTION.SUCCESS`: the order was paid. `trade_state` is `SUCCESS`, and
    /// `transaction_id`, `success_time` and `amount` are present (checked).
    TransactionSuccess(Transaction),
    /// `REFUND.SUCCESS`, `REFUND.ABNORMAL` or `REFUND.CLOSED`.
    Refund {
        event: RefundEvent,
        notice: RefundNotice,
    },
    /// Any other event, decrypted but not interpreted.
    Other {
        event_type: String,
        plaintext: String,
    },
}

/// A notification that was signed by WeChat Pay, fresh, and decrypted with our key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedNotification {
    pub id: String,
    pub create_time: String,
    pub event_type: String,
    pub summary: String,
    pub event: NotificationEvent,
}

/// Reads the envelope of a notification body without checking anything.
pub fn parse_envelope(body: &[u8]) -> Result<NotificationEnvelope, WechatError> {
    serde_json::from_slice(body)
        .map_err(|e| WechatError::MalformedBody(format!("notification envelope: {e}")))
}

/// Verifies, decrypts and reads a notification.
pub fn verify_notification(
    headers: &SignatureHeaders,
    body: &[u8],
    platform_keys: &PlatformKeys,
    api_v3_key: &ApiV3Key,
    now_unix: i64,
) -> Result<VerifiedNotification, WechatError> {
    let verified = verify_signature(headers, body, platform_keys, now_unix)?;
    let envelope = parse_envelope(verified.bytes())?;
    let plaintext = envelope.resource.decrypt(api_v3_key)?;
    let event = match envelope.event_type.as_str() {
        EVENT_TRANSACTION_SUCCESS => {
            let transaction: Transaction = resource_json(&plaintext)?;
            let complete = transaction.trade_state == TradeState::Success
                && transaction.transaction_id.is_some()
                && transaction.success_time.is_some()
                && transaction.amount.is_some();
            if !complete {
                return Err(WechatError::MalformedResource(
                    "TRANSACTION.SUCCESS without SUCCESS state, transaction_id, success_time or amount",
                ));
            }
            NotificationEvent::TransactionSuccess(transaction)
        }
        EVENT_REFUND_SUCCESS | EVENT_REFUND_ABNORMAL | EVENT_REFUND_CLOSED => {
            let event = match envelope.event_type.as_str() {
                EVENT_REFUND_SUCCESS => RefundEvent::Success,
                EVENT_REFUND_ABNORMAL => RefundEvent::Abnormal,
                _ => RefundEvent::Closed,
            };
            NotificationEvent::Refund {
                event,
                notice: resource_json(&plaintext)?,
            }
        }
        other => NotificationEvent::Other {
            event_type: other.to_owned(),
            plaintext,
        },
    };
    Ok(VerifiedNotification {
        id: envelope.id,
        create_time: envelope.create_time,
        event_type: envelope.event_type,
        summary: envelope.summary,
        event,
    })
}

fn resource_json<T: for<'de> Deserialize<'de>>(plaintext: &str) -> Result<T, WechatError> {
    serde_json::from_str(plaintext)
        .map_err(|e| WechatError::MalformedBody(format!("decrypted resource: {e}")))
}
