//! WeChat Pay API v3: request signing (`WECHATPAY2-SHA256-RSA2048`), verification of signed
//! answers and notifications against the platform keyring, `AEAD_AES_256_GCM` resources,
//! typed notifications, and the request bodies and answers of the calls the ledger makes —
//! plus the platform's side of each, for the simulator.
//!
//! Owns: the bytes, and the exact conversion between `Decimal` yuan and integer fen.
//!
//! Must not: do HTTP, read the clock, or generate nonces — timestamps, nonces and "now" are
//! arguments, so every function is deterministic and the tests can pin them.

mod aead;
mod amount;
mod api;
mod auth;
mod model;
mod notify;
pub mod sim;

pub use aead::{decrypt, encrypt, ApiV3Key, EncryptedResource, ALGORITHM, NONCE_LEN};
pub use amount::{fen_to_yuan, yuan_to_fen, AmountError};
pub use api::{
    close_order, h5_order, native_order, notify_failure_body, parse_error_body, parse_h5_prepay,
    parse_native_prepay, parse_refund, parse_transaction, query_order, query_refund, refund,
    ApiRequest, ErrorBody, H5Prepay, H5Scene, HttpMethod, NativePrepay, Order, RefundOrder,
    CURRENCY_CNY, ERROR_ORDER_NOT_EXIST, ERROR_ORDER_PAID, ERROR_RESOURCE_NOT_EXISTS,
    ERROR_SYSTEM_ERROR,
};
pub use auth::{
    request_message, response_message, verify_signature, Authorization, Merchant, PlatformKeys,
    SignatureHeaders, VerifiedBody, AUTH_SCHEME, HEADER_NONCE, HEADER_SERIAL, HEADER_SIGNATURE,
    HEADER_TIMESTAMP, NONCE_LEN_MAX, TIMESTAMP_SKEW_MAX_SECS,
};
pub use model::{
    Refund, RefundAmount, RefundNotice, RefundStatus, TradeState, Transaction, TransactionAmount,
};
pub use notify::{
    parse_envelope, verify_notification, NotificationEnvelope, NotificationEvent, RefundEvent,
    VerifiedNotification, EVENT_REFUND_ABNORMAL, EVENT_REFUND_CLOSED, EVENT_REFUND_SUCCESS,
    EVENT_TRANSACTION_SUCCESS, RESOURCE_TYPE_ENCRYPTED,
};

/// Everything that can go wrong building or checking a WeChat Pay message. Unknown serial,
/// stale timestamp and bad signature are distinct on purpose: the first means our keyring
/// needs a new platform key, the second a clock or a replay, the third a forgery or a bug.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WechatError {
    #[error("header `{0}` is missing or empty")]
    MissingHeader(&'static str),
    #[error("timestamp {0:?} is not a decimal number of seconds")]
    MalformedTimestamp(String),
    #[error("timestamp {timestamp} is more than five minutes from now ({now})")]
    StaleTimestamp { timestamp: String, now: i64 },
    #[error("no platform key with serial {0:?}")]
    UnknownSerial(String),
    #[error("signature does not verify")]
    BadSignature,
    #[error("Authorization header is malformed: {0}")]
    MalformedAuthorization(&'static str),
    #[error("nonce must be 1..=32 ASCII letters or digits (printable ASCII when received)")]
    InvalidNonce,
    #[error("APIv3 key must be exactly 32 printable ASCII characters")]
    InvalidApiV3Key,
    #[error("algorithm {0:?} is not supported; only AEAD_AES_256_GCM is")]
    UnsupportedAlgorithm(String),
    #[error("encrypted resource is malformed: {0}")]
    MalformedResource(&'static str),
    #[error("resource does not decrypt with this APIv3 key (wrong key, or tampered)")]
    DecryptFailed,
    #[error("body is malformed: {0}")]
    MalformedBody(String),
    #[error(transparent)]
    Amount(#[from] AmountError),
    #[error("request is invalid: {0}")]
    InvalidRequest(String),
}
