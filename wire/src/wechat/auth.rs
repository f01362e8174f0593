//! WeChat Pay API v3 signatures in both directions.
//!
//! Requests: the merchant signs `"{METHOD}\n{path?query}\n{timestamp}\n{nonce}\n{body}\n"`
//! with its API key and sends `Authorization: WECHATPAY2-SHA256-RSA2048 mchid="…",
//! nonce_str="…",signature="…",timestamp="…",serial_no="…"`.
//!
//! Answers and notifications: WeChat Pay signs `"{timestamp}\n{nonce}\n{body}\n"` with the
//! platform key named by `Wechatpay-Serial`, and the merchant checks it against its keyring
//! ([`PlatformKeys`]) and refuses a timestamp more than five minutes from its own clock.
//!
//! Must not: read the clock or invent nonces — both are arguments.

use std::collections::BTreeMap;

use crate::keys::{Certificate, KeyError, PrivateKey, PublicKey};

use super::WechatError;

/// The `Authorization` scheme of API v3.
pub const AUTH_SCHEME: &str = "WECHATPAY2-SHA256-RSA2048";
pub const HEADER_TIMESTAMP: &str = "Wechatpay-Timestamp";
pub const HEADER_NONCE: &str = "Wechatpay-Nonce";
pub const HEADER_SIGNATURE: &str = "Wechatpay-Signature";
pub const HEADER_SERIAL: &str = "Wechatpay-Serial";
/// How far a signed timestamp may be from our clock, either way. WeChat Pay's SDKs use the
/// same five minutes; it bounds how long a captured message can be replayed.
pub const TIMESTAMP_SKEW_MAX_SECS: i64 = 300;
/// The longest nonce we send (WeChat Pay accepts up to 32 characters).
pub const NONCE_LEN_MAX: usize = 32;

/// The message a request signature covers.
pub fn request_message(
    method: &str,
    path_and_query: &str,
    timestamp: i64,
    nonce: &str,
    body: &str,
) -> String {
    format!("{method}\n{path_and_query}\n{timestamp}\n{nonce}\n{body}\n")
}

/// The message an answer or notification signature covers. The body is taken as bytes: it is
/// signed exactly as sent, whatever it contains.
pub fn response_message(timestamp: &str, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(timestamp.len() + nonce.len() + body.len() + 3);
    message.extend_from_slice(timestamp.as_bytes());
    message.push(b'\n');
    message.extend_from_slice(nonce.as_bytes());
    message.push(b'\n');
    message.extend_from_slice(body);
    message.push(b'\n');
    message
}

/// The merchant's API identity: merchant number, API certificate serial, API private key.
#[derive(Debug, Clone)]
pub struct Merchant {
    pub mchid: String,
    /// Serial of the merchant API certificate, upper-case hex.
    pub serial_no: String,
    pub private_key: PrivateKey,
}

impl Merchant {
    /// The `Authorization` header value for a request. `path_and_query` is the URL without
    /// scheme and host, exactly as sent (`/v3/pay/transactions/out-trade-no/X?mchid=1`);
    /// `body` is the exact body (empty for GET).
    pub fn authorization(
        &self,
        method: &str,
        path_and_query: &str,
        body: &str,
        timestamp: i64,
        nonce: &str,
    ) -> Result<String, WechatError> {
        if !is_send_nonce(nonce) {
            return Err(WechatError::InvalidNonce);
        }
        if timestamp < 0 {
            return Err(WechatError::InvalidRequest("timestamp is negative".into()));
        }
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(WechatError::InvalidRequest(format!(
                "method {method:?} must be upper case"
            )));
        }
        if !path_and_query.starts_with('/') || path_and_query.contains(['\n', ' ']) {
            return Err(WechatError::InvalidRequest(
                "path must be absolute, without host".into(),
            ));
        }
        let message = request_message(method, path_and_query, timestamp, nonce, body);
        let header = Authorization {
            mchid: self.mchid.clone(),
            nonce_str: nonce.to_owned(),
            signature: self.private_key.sign_base64(message.as_bytes()),
            timestamp,
            serial_no: self.serial_no.clone(),
        };
        Ok(header.to_header_value())
    }
}

/// Nonces we generate: 1..=32 ASCII letters and digits, so they can never break the quoted
/// header syntax or the line structure of the signed message.
fn is_send_nonce(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce.len() <= NONCE_LEN_MAX
        && nonce.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// A parsed `Authorization: WECHATPAY2-SHA256-RSA2048 …` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub mchid: String,
    pub nonce_str: String,
    pub signature: String,
    pub timestamp: i64,
    pub serial_no: String,
}

impl Authorization {
    /// The header value, parameters in the order WeChat Pay's documentation shows them.
    pub fn to_header_value(&self) -> String {
        format!(
            "{AUTH_SCHEME} mchid=\"{}\",nonce_str=\"{}\",signature=\"{}\",timestamp=\"{}\",serial_no=\"{}\"",
            self.mchid, self.nonce_str, self.signature, self.timestamp, self.serial_no
        )
    }

    /// Parses a header value. The five parameters may come in any order (the documentation
    /// says so); each must appear exactly once, double-quoted, and nothing else may appear.
    pub fn parse(value: &str) -> Result<Self, WechatError> {
        let malformed = WechatError::MalformedAuthorization;
        let rest = value
            .trim()
            .strip_prefix(AUTH_SCHEME)
            .ok_or(malformed("scheme is not WECHATPAY2-SHA256-RSA2048"))?;
        let rest = rest
            .strip_prefix(' ')
            .ok_or(malformed("no space after the scheme"))?
            .trim_start();
        let mut fields: BTreeMap<&str, &str> = BTreeMap::new();
        for part in rest.split(',') {
            let (name, quoted) = part
                .trim()
                .split_once('=')
                .ok_or(malformed("a parameter has no `=`"))?;
            let inner = quoted
                .strip_prefix('"')
                .and_then(|q| q.strip_suffix('"'))
                .ok_or(malformed("a value is not double-quoted"))?;
            if inner.contains('"') {
                return Err(malformed("a value contains a quote"));
            }
            if !matches!(
                name,
                "mchid" | "nonce_str" | "signature" | "timestamp" | "serial_no"
            ) {
                return Err(malformed("unknown parameter"));
            }
            if fields.insert(name, inner).is_some() {
                return Err(malformed("a parameter appears twice"));
            }
        }
        let take = |name: &'static str| -> Result<String, WechatError> {
            fields
                .get(name)
                .filter(|v| !v.is_empty())
                .map(|v| (*v).to_owned())
                .ok_or(malformed("a parameter is missing"))
        };
        let timestamp_text = take("timestamp")?;
        let timestamp = parse_timestamp_digits(&timestamp_text)
            .ok_or_else(|| WechatError::MalformedTimestamp(timestamp_text.clone()))?;
        let nonce_str = take("nonce_str")?;
        if !is_receive_nonce(&nonce_str) {
            return Err(WechatError::InvalidNonce);
        }
        Ok(Self {
            mchid: take("mchid")?,
            nonce_str,
            signature: take("signature")?,
            timestamp,
            serial_no: take("serial_no")?,
        })
    }
}

/// Nonces we accept: printable ASCII without whitespace. A newline in a nonce would let
/// bytes move between the nonce and the body while the signed message stays the same.
fn is_receive_nonce(nonce: &str) -> bool {
    !nonce.is_empty() && nonce.len() <= 64 && nonce.bytes().all(|b| b.is_ascii_graphic())
}

/// A timestamp that is only ASCII digits and fits `i64`; `None` otherwise.
fn parse_timestamp_digits(text: &str) -> Option<i64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<i64>().ok()
}

/// Checks a signed timestamp against `now` with checked arithmetic, so that no value — not
/// even one overflowing `i64` — can wrap around into the window.
pub(crate) fn check_fresh(timestamp_text: &str, now_unix: i64) -> Result<i64, WechatError> {
    if timestamp_text.is_empty() || !timestamp_text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(WechatError::MalformedTimestamp(timestamp_text.to_owned()));
    }
    let stale = || WechatError::StaleTimestamp {
        timestamp: timestamp_text.to_owned(),
        now: now_unix,
    };
    // All digits but beyond i64: a well-formed number, just absurdly far away.
    let timestamp = timestamp_text.parse::<i64>().map_err(|_| stale())?;
    let skew = now_unix.checked_sub(timestamp).ok_or_else(stale)?;
    match skew.checked_abs() {
        Some(distance) if distance <= TIMESTAMP_SKEW_MAX_SECS => Ok(timestamp),
        _ => Err(stale()),
    }
}

/// The four signature headers of an answer or notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeaders {
    pub timestamp: String,
    pub nonce: String,
    pub signature: String,
    pub serial: String,
}

impl SignatureHeaders {
    /// Reads the headers through `get`, which looks a header up by name (case-insensitively,
    /// as HTTP header maps do). Keeps this crate free of any HTTP library.
    pub fn from_lookup<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Result<Self, WechatError> {
        let header = |name: &'static str| -> Result<String, WechatError> {
            get(name)
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .ok_or(WechatError::MissingHeader(name))
        };
        Ok(Self {
            timestamp: header(HEADER_TIMESTAMP)?,
            nonce: header(HEADER_NONCE)?,
            signature: header(HEADER_SIGNATURE)?,
            serial: header(HEADER_SERIAL)?,
        })
    }
}

/// WeChat Pay's platform keys, by serial: certificate serials (platform certificates) or
/// `PUB_KEY_ID_…` ids (the newer platform public key). More than one is normal while keys
/// rotate.
#[derive(Debug, Clone, Default)]
pub struct PlatformKeys {
    keys: BTreeMap<String, PublicKey>,
}

impl PlatformKeys {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the key for `serial`.
    pub fn insert(&mut self, serial: impl Into<String>, key: PublicKey) {
        self.keys.insert(serial.into(), key);
    }

    /// Adds a platform certificate under its own serial, which is returned.
    pub fn insert_certificate_pem(&mut self, pem: &str) -> Result<String, KeyError> {
        let cert = Certificate::parse_pem(pem)?;
        self.keys.insert(cert.serial_hex.clone(), cert.public_key);
        Ok(cert.serial_hex)
    }

    pub fn get(&self, serial: &str) -> Option<&PublicKey> {
        self.keys.get(serial)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// A body whose signature has been checked. Only [`verify_signature`] makes one, and the
/// typed readers take it, so nothing unverified can be read as a gateway answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedBody<'a> {
    body: &'a [u8],
}

impl<'a> VerifiedBody<'a> {
    pub fn bytes(&self) -> &'a [u8] {
        self.body
    }
}

/// Checks an answer's or notification's signature: the serial must be in `keys`, the
/// timestamp within [`TIMESTAMP_SKEW_MAX_SECS`] of `now_unix`, and the signature must verify
/// over `"{timestamp}\n{nonce}\n{body}\n"`.
pub fn verify_signature<'a>(
    headers: &SignatureHeaders,
    body: &'a [u8],
    keys: &PlatformKeys,
    now_unix: i64,
) -> Result<VerifiedBody<'a>, WechatError> {
    let key = keys
        .get(&headers.serial)
        .ok_or_else(|| WechatError::UnknownSerial(headers.serial.clone()))?;
    check_fresh(&headers.timestamp, now_unix)?;
    if !is_receive_nonce(&headers.nonce) {
        return Err(WechatError::InvalidNonce);
    }
    let message = response_message(&headers.timestamp, &headers.nonce, body);
    key.verify_base64(&message, &headers.signature)
        .map_err(|_| WechatError::BadSignature)?;
    Ok(VerifiedBody { body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_message_has_five_newline_terminated_lines() {
        assert_eq!(
            request_message(
                "GET",
                "/v3/certificates",
                1554208460,
                "593BEC0C930BF1AFEB40B4A08C8FB242",
                ""
            ),
            "GET\n/v3/certificates\n1554208460\n593BEC0C930BF1AFEB40B4A08C8FB242\n\n"
        );
    }

    #[test]
    fn fresh_timestamps_pass_and_wild_ones_are_stale_not_overflowing() {
        assert_eq!(check_fresh("1000", 1000), Ok(1000));
        assert_eq!(check_fresh("700", 1000), Ok(700));
        assert_eq!(check_fresh("1300", 1000), Ok(1300));
        for wild in [
            "699",
            "1301",
            "0",
            "9223372036854775807",
            "99999999999999999999999",
        ] {
            assert!(
                matches!(
                    check_fresh(wild, 1000),
                    Err(WechatError::StaleTimestamp { .. })
                ),
                "{wild}"
            );
        }
        assert!(matches!(
            check_fresh("0", i64::MIN),
            Err(WechatError::StaleTimestamp { .. })
        ));
        assert!(matches!(
            check_fresh("9223372036854775807", i64::MIN),
            Err(WechatError::StaleTimestamp { .. })
        ));
        for malformed in ["", "-5", "+5", "12a", " 1000", "1e3"] {
            assert!(
                matches!(
                    check_fresh(malformed, 1000),
                    Err(WechatError::MalformedTimestamp(_))
                ),
                "{malformed:?}"
            );
        }
    }

    #[test]
    fn authorization_round_trips_and_accepts_any_parameter_order() {
        let header = Authorization {
            mchid: "1900009191".into(),
            nonce_str: "593BEC0C930BF1AFEB40B4A08C8FB242".into(),
            signature: "abc+/=".into(),
            timestamp: 1554208460,
            serial_no: "1DDE55AD98ED71D6EDD4A4A16996DE7B47773A8C".into(),
        };
        assert_eq!(
            Authorization::parse(&header.to_header_value()),
            Ok(header.clone())
        );
        let shuffled = "WECHATPAY2-SHA256-RSA2048 serial_no=\"1DDE55AD98ED71D6EDD4A4A16996DE7B47773A8C\",timestamp=\"1554208460\",signature=\"abc+/=\",nonce_str=\"593BEC0C930BF1AFEB40B4A08C8FB242\",mchid=\"1900009191\"";
        assert_eq!(Authorization::parse(shuffled), Ok(header));
    }

    #[test]
    fn malformed_authorization_headers_are_refused() {
        let ok = "mchid=\"1\",nonce_str=\"N\",signature=\"S\",timestamp=\"1\",serial_no=\"X\"";
        assert!(Authorization::parse(&format!("{AUTH_SCHEME} {ok}")).is_ok());
        for bad in [
            format!("Bearer {ok}"),
            format!("{AUTH_SCHEME}{ok}"),
            format!("{AUTH_SCHEME} {ok},mchid=\"2\""),
            format!("{AUTH_SCHEME} {ok},extra=\"2\""),
            format!("{AUTH_SCHEME} mchid='1',nonce_str=\"N\",signature=\"S\",timestamp=\"1\",serial_no=\"X\""),
            format!("{AUTH_SCHEME} nonce_str=\"N\",signature=\"S\",timestamp=\"1\",serial_no=\"X\""),
            format!("{AUTH_SCHEME} mchid=\"1\",nonce_str=\"N\",signature=\"S\",timestamp=\"-1\",serial_no=\"X\""),
        ] {
            assert!(Authorization::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn missing_signature_headers_are_named() {
        let err = SignatureHeaders::from_lookup(|name| (name != HEADER_SERIAL).then_some("1"));
        assert_eq!(err, Err(WechatError::MissingHeader(HEADER_SERIAL)));
    }
}
