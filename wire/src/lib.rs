//! The wire formats of the real gateways: pure functions, no I/O.
//!
//! This crate owns the exact bytes the ledger exchanges with Alipay (open platform, RSA2) and
//! WeChat Pay (API v3): what to sign and how, what to send, and how to check and read what
//! comes back — and the gateways' side of each exchange, so a simulator can play the gateway.
//!
//! It must never do I/O: no HTTP client, no server, no async runtime, no file access, no
//! clock and no randomness. Whatever varies — the time, a nonce, a key — is an argument, so
//! every function is deterministic and testable against the vendors' published examples
//! (see `tests/`).
//!
//! - [`keys`]: RSA keys in every form the gateways hand out, and SHA256withRSA.
//! - [`alipay`]: page/wap pay redirects, notifications, OpenAPI requests and answers.
//! - [`wechat`]: request signing, answer/notification verification, AEAD_AES_256_GCM
//!   resources, typed notifications, request bodies and answers.

pub mod alipay;
pub mod keys;
pub mod wechat;

/// China Standard Time, +08:00: how both gateways write wall-clock times. Asia/Shanghai has
/// kept this offset without daylight saving since 1991, so a fixed offset formats every time
/// the gateways can see correctly, without a time-zone database.
pub(crate) const CHINA_STANDARD_TIME: chrono::FixedOffset =
    match chrono::FixedOffset::east_opt(8 * 3600) {
        Some(offset) => offset,
        // Evaluated at compile time: an out-of-range offset would fail the build, not a request.
        None => panic!("+08:00 is within the ±24h a FixedOffset allows"),
    };
