//! Alipay's side of the wire, for the simulator: checking a merchant's signed request, and
//! producing signed notifications and OpenAPI answers the way the real gateway does.
//!
//! Each function here is the exact inverse of a merchant-side checker in this module, and the
//! tests hold them to that: whatever is signed here verifies there, and nothing else does.
//!
//! Must not: hold keys of its own or choose any value — the caller passes the key, the
//! parameters and the content.

use crate::keys::{PrivateKey, PublicKey};

use super::params::{encode_form, parse_form, sign_params, verify_params, Params, SignedFields};
use super::{AlipayError, SIGN_TYPE};

/// Checks a merchant's request (form body or the query string of a page-pay redirect) with
/// the merchant's public key, and returns its parameters.
pub fn verify_request(form: &[u8], merchant_public_key: &PublicKey) -> Result<Params, AlipayError> {
    let params = parse_form(form)?;
    if params.get("sign_type").map(String::as_str) != Some(SIGN_TYPE) {
        return Err(AlipayError::UnsupportedSignType(
            params.get("sign_type").cloned().unwrap_or_default(),
        ));
    }
    // Requests are signed over everything but `sign`, `sign_type` included.
    verify_params(&params, merchant_public_key, SignedFields::AllButSign)?;
    Ok(params)
}

/// Signs notification parameters as Alipay does — over everything but `sign` and
/// `sign_type` — and returns the form body to POST to the merchant's `notify_url`. Any `sign`
/// already in `params` is replaced and `sign_type` is set to `RSA2`.
pub fn sign_notification(params: &Params, alipay_private_key: &PrivateKey) -> String {
    let mut params = params.clone();
    params.remove("sign");
    params.insert("sign_type".to_owned(), SIGN_TYPE.to_owned());
    let sign = sign_params(
        &params,
        alipay_private_key,
        SignedFields::AllButSignAndSignType,
    );
    params.insert("sign".to_owned(), sign);
    encode_form(&params)
}

/// Wraps `content` (the JSON object text of the answer) into an OpenAPI answer body for
/// `method`, signed over exactly those bytes.
pub fn sign_response(
    method: &str,
    content: &str,
    alipay_private_key: &PrivateKey,
) -> Result<String, AlipayError> {
    let object: serde_json::Value = serde_json::from_str(content)
        .map_err(|e| AlipayError::InvalidRequest(format!("content is not JSON: {e}")))?;
    if !object.is_object() {
        return Err(AlipayError::InvalidRequest(
            "content must be a JSON object".into(),
        ));
    }
    let sign = alipay_private_key.sign_base64(content.as_bytes());
    let key = format!("{}_response", method.replace('.', "_"));
    // The signature is base64 (no quotes or backslashes), so writing it inline is exact.
    Ok(format!("{{\"{key}\":{content},\"sign\":\"{sign}\"}}"))
}
