//! WeChat Pay's side of the wire, for the simulator: checking a merchant's signed request,
//! signing answers and notifications as the platform, and building encrypted notifications.
//!
//! Each function is the inverse of a merchant-side checker in this module, and the tests
//! hold them to that.
//!
//! Must not: pick timestamps, nonces or ids — the simulator passes them in.

use crate::keys::{PrivateKey, PublicKey};

use super::aead::{ApiV3Key, EncryptedResource};
use super::auth::{
    check_fresh, request_message, response_message, Authorization, SignatureHeaders,
};
use super::notify::{NotificationEnvelope, RESOURCE_TYPE_ENCRYPTED};
use super::WechatError;

/// The platform's signing identity: its private key and the serial merchants know it by.
#[derive(Debug, Clone)]
pub struct PlatformSigner {
    pub serial: String,
    pub private_key: PrivateKey,
}

impl PlatformSigner {
    /// The four `Wechatpay-*` headers for an answer or notification `body`.
    pub fn sign(
        &self,
        body: &[u8],
        timestamp: i64,
        nonce: &str,
    ) -> Result<SignatureHeaders, WechatError> {
        if nonce.is_empty() || !nonce.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(WechatError::InvalidNonce);
        }
        let timestamp = timestamp.to_string();
        let message = response_message(&timestamp, nonce, body);
        Ok(SignatureHeaders {
            signature: self.private_key.sign_base64(&message),
            timestamp,
            nonce: nonce.to_owned(),
            serial: self.serial.clone(),
        })
    }
}

/// Checks a merchant request as WeChat Pay does: the `Authorization` header must parse, name
/// `expected_mchid`, carry a timestamp within five minutes of `now_unix`, and its signature
/// must verify with the merchant's public key over method, path, timestamp, nonce and body.
pub fn verify_request(
    authorization: &str,
    method: &str,
    path_and_query: &str,
    body: &str,
    expected_mchid: &str,
    merchant_public_key: &PublicKey,
    now_unix: i64,
) -> Result<Authorization, WechatError> {
    let header = Authorization::parse(authorization)?;
    if header.mchid != expected_mchid {
        return Err(WechatError::MalformedAuthorization(
            "mchid is not the expected merchant",
        ));
    }
    check_fresh(&header.timestamp.to_string(), now_unix)?;
    let message = request_message(
        method,
        path_and_query,
        header.timestamp,
        &header.nonce_str,
        body,
    );
    merchant_public_key
        .verify_base64(message.as_bytes(), &header.signature)
        .map_err(|_| WechatError::BadSignature)?;
    Ok(header)
}

/// The envelope fields of a notification to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationSpec {
    /// Unique notification id (WeChat Pay uses a UUID).
    pub id: String,
    /// RFC 3339 creation time.
    pub create_time: String,
    /// `TRANSACTION.SUCCESS`, `REFUND.SUCCESS`, …
    pub event_type: String,
    /// Human-readable summary, e.g. `支付成功`.
    pub summary: String,
    /// `transaction` or `refund`: what the plaintext is; also used as associated data, as
    /// WeChat Pay does.
    pub original_type: String,
    /// The AEAD nonce: 12 characters, never reused with the same key.
    pub nonce: String,
}

/// Encrypts `resource_json` into a notification body. Sign the result with
/// [`PlatformSigner::sign`] to get its headers.
pub fn build_notification(
    spec: &NotificationSpec,
    resource_json: &str,
    api_v3_key: &ApiV3Key,
) -> Result<String, WechatError> {
    let envelope = NotificationEnvelope {
        id: spec.id.clone(),
        create_time: spec.create_time.clone(),
        event_type: spec.event_type.clone(),
        resource_type: RESOURCE_TYPE_ENCRYPTED.to_owned(),
        resource: EncryptedResource::seal(
            api_v3_key,
            &spec.nonce,
            &spec.original_type,
            &spec.original_type,
            resource_json,
        )?,
        summary: spec.summary.clone(),
    };
    serde_json::to_string(&envelope).map_err(|e| WechatError::InvalidRequest(e.to_string()))
}
