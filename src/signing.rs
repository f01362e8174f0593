//! HMAC-SHA256 request signing (SPEC §6, §11): the string to sign, the signature, its
//! constant-time check and the nonce format. It must not decide policy — clock skew, nonce
//! reuse and which routes are unsigned belong to the API layer.

use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Shortest nonce accepted, in characters.
pub const NONCE_LEN_MIN: usize = 16;
/// Longest nonce accepted, in characters.
pub const NONCE_LEN_MAX: usize = 64;
/// Length of the nonces this crate generates: 32 characters of a 64-symbol alphabet is
/// 192 bits, far beyond any chance of a collision within the replay window.
const NONCE_LEN_GENERATED: usize = 32;
const NONCE_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";

/// Lowercase hex SHA-256 of a request body (the last line of the string to sign).
pub fn body_sha256_hex(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// `{timestamp}\n{nonce}\n{METHOD}\n{path and query}\n{hex sha256 of body}`.
///
/// `path_and_query` must be the request target exactly as sent, because re-encoding it
/// here would make a client and the server disagree on percent-encoding.
pub fn string_to_sign(
    timestamp: &str,
    nonce: &str,
    method: &str,
    path_and_query: &str,
    body: &[u8],
) -> String {
    // HTTP methods are ASCII tokens; ASCII uppercasing keeps any odd input byte-for-byte.
    format!(
        "{timestamp}\n{nonce}\n{}\n{path_and_query}\n{}",
        method.to_ascii_uppercase(),
        body_sha256_hex(body)
    )
}

fn mac_over(
    secret: &str,
    timestamp: &str,
    nonce: &str,
    method: &str,
    path_and_query: &str,
    body: &[u8],
) -> HmacSha256 {
    let mut mac =
        HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(string_to_sign(timestamp, nonce, method, path_and_query, body).as_bytes());
    mac
}

/// Lowercase hex HMAC-SHA256 of the string to sign, keyed by the secret's UTF-8 bytes.
pub fn sign(
    secret: &str,
    timestamp: &str,
    nonce: &str,
    method: &str,
    path_and_query: &str,
    body: &[u8],
) -> String {
    let mac = mac_over(secret, timestamp, nonce, method, path_and_query, body);
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `signature_hex` is the signature of this request under `secret`.
///
/// The comparison is constant time so that a caller cannot learn a valid signature byte by
/// byte from response timings. Malformed hex, or a signature of the wrong length, is false.
pub fn verify(
    secret: &str,
    timestamp: &str,
    nonce: &str,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    signature_hex: &str,
) -> bool {
    let Ok(signature) = hex::decode(signature_hex) else {
        return false;
    };
    mac_over(secret, timestamp, nonce, method, path_and_query, body)
        .verify_slice(&signature)
        .is_ok()
}

/// Whether a nonce is 16–64 characters of `[A-Za-z0-9_-]`.
pub fn valid_nonce(nonce: &str) -> bool {
    // Every accepted character is one byte, so the byte length is the character length.
    (NONCE_LEN_MIN..=NONCE_LEN_MAX).contains(&nonce.len())
        && nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A fresh random nonce of 32 characters from `[A-Za-z0-9_-]`.
pub fn new_nonce() -> String {
    // The alphabet has exactly 64 symbols, so a uniform index gives a uniform nonce.
    let mut rng = rand::thread_rng();
    (0..NONCE_LEN_GENERATED)
        .map(|_| char::from(NONCE_ALPHABET[rng.gen_range(0..NONCE_ALPHABET.len())]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "s3cr3t-κλειδί";
    const TS: &str = "1700000000";
    const NONCE: &str = "abcDEF0123456789_-xy";
    const PATH: &str = "/api/v1/payments?page=1&size=10";
    const BODY: &[u8] = br#"{"amount":"12.34"}"#;

    fn reference_signature(secret: &str, message: &str) -> String {
        let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(message.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn empty_body_hashes_to_the_well_known_sha256_of_nothing() {
        assert_eq!(
            body_sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn string_to_sign_joins_the_parts_with_newlines_and_uppercases_the_method() {
        let expected = format!(
            "{TS}\n{NONCE}\nPOST\n{PATH}\n{}",
            hex::encode(Sha256::digest(BODY))
        );
        assert_eq!(string_to_sign(TS, NONCE, "post", PATH, BODY), expected);
    }

    #[test]
    fn signature_matches_an_independently_computed_hmac() {
        let message = format!(
            "1700000000\nabcDEF0123456789_-xy\nPOST\n/api/v1/payments?page=1&size=10\n{}",
            hex::encode(Sha256::digest(BODY))
        );
        let expected = reference_signature(SECRET, &message);
        let signature = sign(SECRET, TS, NONCE, "POST", PATH, BODY);
        assert_eq!(signature, expected);
        assert_eq!(signature.len(), 64);
        assert_eq!(signature, signature.to_lowercase());
    }

    #[test]
    fn the_reference_hmac_matches_a_published_test_vector() {
        // HMAC-SHA256 with key "key" over the classic pangram, a published test vector,
        // guards against the helper and the code under test sharing a mistake.
        assert_eq!(
            reference_signature("key", "The quick brown fox jumps over the lazy dog"),
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }

    #[test]
    fn a_correct_signature_verifies() {
        let signature = sign(SECRET, TS, NONCE, "GET", PATH, b"");
        assert!(verify(SECRET, TS, NONCE, "GET", PATH, b"", &signature));
        assert!(verify(SECRET, TS, NONCE, "get", PATH, b"", &signature));
    }

    #[test]
    fn a_tampered_body_path_timestamp_nonce_method_or_secret_fails() {
        let signature = sign(SECRET, TS, NONCE, "POST", PATH, BODY);
        let other_body: &[u8] = br#"{"amount":"99.99"}"#;
        let other_path = "/api/v1/payments?page=2&size=10";
        let other_nonce = "abcDEF0123456789_-xz";
        // (secret, timestamp, nonce, method, path and query, body), each with one change.
        type Request<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str, &'a [u8]);
        let cases: [Request; 6] = [
            (SECRET, TS, NONCE, "POST", PATH, other_body),
            (SECRET, TS, NONCE, "POST", other_path, BODY),
            (SECRET, "1700000001", NONCE, "POST", PATH, BODY),
            (SECRET, TS, other_nonce, "POST", PATH, BODY),
            (SECRET, TS, NONCE, "PUT", PATH, BODY),
            ("other", TS, NONCE, "POST", PATH, BODY),
        ];
        for (secret, ts, nonce, method, path, body) in cases {
            assert!(!verify(secret, ts, nonce, method, path, body, &signature));
        }
    }

    #[test]
    fn malformed_or_truncated_signature_hex_is_simply_false() {
        let signature = sign(SECRET, TS, NONCE, "POST", PATH, BODY);
        assert!(!verify(
            SECRET,
            TS,
            NONCE,
            "POST",
            PATH,
            BODY,
            "not hex at all"
        ));
        assert!(!verify(SECRET, TS, NONCE, "POST", PATH, BODY, ""));
        assert!(!verify(
            SECRET,
            TS,
            NONCE,
            "POST",
            PATH,
            BODY,
            &signature[..63]
        ));
        assert!(!verify(
            SECRET,
            TS,
            NONCE,
            "POST",
            PATH,
            BODY,
            &signature[..32]
        ));
        assert!(!verify(
            SECRET,
            TS,
            NONCE,
            "POST",
            PATH,
            BODY,
            &format!("{signature}00")
        ));
    }

    #[test]
    fn nonces_of_16_to_64_allowed_characters_are_valid() {
        assert!(valid_nonce(&"a".repeat(16)));
        assert!(valid_nonce(&"Z".repeat(64)));
        assert!(valid_nonce("AZaz09_-AZaz09_-"));
    }

    #[test]
    fn nonces_too_short_too_long_or_with_other_characters_are_invalid() {
        assert!(!valid_nonce(""));
        assert!(!valid_nonce(&"a".repeat(15)));
        assert!(!valid_nonce(&"a".repeat(65)));
        assert!(!valid_nonce("abcdefghijklmno="));
        assert!(!valid_nonce("abcdefghijklmno "));
        assert!(!valid_nonce("abcdefghijklmnoé"));
        // Eight two-byte characters are 16 bytes but not valid characters.
        assert!(!valid_nonce("éééééééé"));
    }

    #[test]
    fn generated_nonces_are_valid_32_characters_and_differ() {
        let a = new_nonce();
        let b = new_nonce();
        assert_eq!(a.len(), 32);
        assert!(valid_nonce(&a));
        assert!(valid_nonce(&b));
        assert_ne!(a, b);
    }
}
