//! Alipay's parameter maps: the form encoding they travel in and the RSA2 signature over them.
//!
//! Owns the signing string (every parameter except `sign` — and, for notifications, also
//! `sign_type` — with non-empty key and value, sorted by key in ASCII order, joined `k=v&k=v`
//! with values *not* URL-encoded) and the strict `application/x-www-form-urlencoded` codec.
//!
//! Must not: know what any parameter means; that belongs to the message modules.

use std::collections::BTreeMap;

use crate::keys::{PrivateKey, PublicKey};

use super::{AlipayError, SIGN_TYPE};

/// An Alipay parameter map. A `BTreeMap` of `String` keys iterates in byte order, which for
/// the ASCII parameter names Alipay uses is exactly the "ASCII order" its signing string needs.
pub type Params = BTreeMap<String, String>;

/// Which parameters a signature covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignedFields {
    /// Everything but `sign`: OpenAPI requests, page-pay redirects, and the notifications
    /// Alipay's SDKs check with `rsaCheckV2`-style "keep sign_type" rules.
    AllButSign,
    /// Everything but `sign` and `sign_type`: asynchronous trade notifications (`rsaCheckV1`).
    AllButSignAndSignType,
}

impl SignedFields {
    fn excludes(self, key: &str) -> bool {
        key == "sign" || (self == SignedFields::AllButSignAndSignType && key == "sign_type")
    }
}

/// The exact string Alipay signs for `params`.
pub fn signing_string(params: &Params, fields: SignedFields) -> String {
    let mut out = String::new();
    for (key, value) in params {
        // Empty keys and values are left out, as every Alipay SDK does (`areNotEmpty(k, v)`).
        if key.is_empty() || value.is_empty() || fields.excludes(key) {
            continue;
        }
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(key);
        out.push('=');
        out.push_str(value);
    }
    out
}

/// Signs `params` and returns the base64 signature (the value of `sign`).
pub fn sign_params(params: &Params, key: &PrivateKey, fields: SignedFields) -> String {
    key.sign_base64(signing_string(params, fields).as_bytes())
}

/// Checks the `sign` in `params` against `key`.
pub fn verify_params(
    params: &Params,
    key: &PublicKey,
    fields: SignedFields,
) -> Result<(), AlipayError> {
    let sign = params
        .get("sign")
        .filter(|s| !s.is_empty())
        .ok_or(AlipayError::MissingSignature)?;
    if let Some(sign_type) = params.get("sign_type") {
        if sign_type != SIGN_TYPE {
            return Err(AlipayError::UnsupportedSignType(sign_type.clone()));
        }
    }
    key.verify_base64(signing_string(params, fields).as_bytes(), sign)
        .map_err(|_| AlipayError::BadSignature)
}

/// Parses an `application/x-www-form-urlencoded` body: `+` is a space, `%XX` a byte, the
/// result must be UTF-8 (no lossy replacement, so a mangled byte can never be "repaired" into
/// something that verifies), and a name may appear only once.
pub fn parse_form(body: &[u8]) -> Result<Params, AlipayError> {
    let mut params = Params::new();
    for pair in body.split(|&b| b == b'&') {
        if pair.is_empty() {
            continue;
        }
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &pair[..0]),
        };
        let name = decode_component(name)?;
        let value = decode_component(value)?;
        if params.contains_key(&name) {
            return Err(AlipayError::DuplicateParam(name));
        }
        params.insert(name, value);
    }
    Ok(params)
}

fn decode_component(raw: &[u8]) -> Result<String, AlipayError> {
    let spaced: Vec<u8> = raw
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    let bytes: Vec<u8> = percent_encoding::percent_decode(&spaced).collect();
    String::from_utf8(bytes).map_err(|_| AlipayError::MalformedForm("a value is not UTF-8"))
}

/// Encodes `params` as a form body (also used as a URL query string).
pub fn encode_form(params: &Params) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter())
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn signing_string_sorts_skips_empty_and_excludes_sign() {
        let p = params(&[
            ("method", "alipay.trade.query"),
            ("app_id", "2021"),
            ("sign", "xxx"),
            ("sign_type", "RSA2"),
            ("empty", ""),
            ("", "nameless"),
            ("biz_content", "{\"a\":\"b c&d\"}"),
        ]);
        assert_eq!(
            signing_string(&p, SignedFields::AllButSign),
            "app_id=2021&biz_content={\"a\":\"b c&d\"}&method=alipay.trade.query&sign_type=RSA2"
        );
        assert_eq!(
            signing_string(&p, SignedFields::AllButSignAndSignType),
            "app_id=2021&biz_content={\"a\":\"b c&d\"}&method=alipay.trade.query"
        );
    }

    #[test]
    fn form_decoding_turns_plus_into_space_and_keeps_encoded_plus() {
        let p = parse_form(b"subject=a+b%2Bc&sign=AB%2F%3D&flag").unwrap();
        assert_eq!(p["subject"], "a b+c");
        assert_eq!(p["sign"], "AB/=");
        assert_eq!(p["flag"], "");
    }

    #[test]
    fn form_with_repeated_name_is_refused() {
        assert_eq!(
            parse_form(b"a=1&a=2"),
            Err(AlipayError::DuplicateParam("a".into()))
        );
    }

    #[test]
    fn form_with_invalid_utf8_is_refused() {
        assert!(matches!(
            parse_form(b"a=%FF"),
            Err(AlipayError::MalformedForm(_))
        ));
    }

    #[test]
    fn form_round_trips_through_encoding() {
        let p = params(&[("subject", "语雀 500人 a+b&c=d"), ("x", "%20")]);
        assert_eq!(parse_form(encode_form(&p).as_bytes()).unwrap(), p);
    }
}
