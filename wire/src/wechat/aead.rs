//! `AEAD_AES_256_GCM`, the encryption of a notification's `resource` (and of downloaded
//! platform certificates): AES-256-GCM keyed with the merchant's APIv3 key, a 12-byte nonce
//! sent as a 12-character string, `associated_data` as AAD, and base64 of ciphertext ‖ tag.
//!
//! Must not: generate nonces. Encryption exists for the simulator and takes the nonce as an
//! argument; a caller must never reuse one with the same key.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, Key, KeyInit, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::WechatError;

/// The only `algorithm` API v3 uses.
pub const ALGORITHM: &str = "AEAD_AES_256_GCM";
/// GCM's standard nonce length; WeChat Pay sends it as 12 ASCII characters.
pub const NONCE_LEN: usize = 12;

/// The APIv3 key: the 32 ASCII characters set in the merchant platform, used as the 32 raw
/// key bytes (not hex- or base64-decoded).
#[derive(Clone, PartialEq, Eq)]
pub struct ApiV3Key([u8; 32]);

impl std::fmt::Debug for ApiV3Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiV3Key(..)")
    }
}

impl ApiV3Key {
    /// Accepts exactly 32 bytes of printable ASCII, as the merchant platform issues.
    pub fn new(configured: &str) -> Result<Self, WechatError> {
        let bytes = configured.as_bytes();
        if !bytes.iter().all(u8::is_ascii_graphic) {
            return Err(WechatError::InvalidApiV3Key);
        }
        let key: [u8; 32] = bytes.try_into().map_err(|_| WechatError::InvalidApiV3Key)?;
        Ok(Self(key))
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&self.0))
    }
}

/// An encrypted `resource` as it appears in a notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedResource {
    pub algorithm: String,
    /// base64 of ciphertext ‖ 16-byte tag.
    pub ciphertext: String,
    pub nonce: String,
    /// Optional on the wire; absent means empty AAD.
    #[serde(default)]
    pub associated_data: String,
    /// `transaction`, `refund`, …: what the plaintext is.
    #[serde(default)]
    pub original_type: String,
}

impl EncryptedResource {
    /// Decrypts to the plaintext JSON.
    pub fn decrypt(&self, key: &ApiV3Key) -> Result<String, WechatError> {
        if self.algorithm != ALGORITHM {
            return Err(WechatError::UnsupportedAlgorithm(self.algorithm.clone()));
        }
        let plaintext = decrypt(key, &self.nonce, &self.associated_data, &self.ciphertext)?;
        String::from_utf8(plaintext)
            .map_err(|_| WechatError::MalformedResource("plaintext is not UTF-8"))
    }

    /// Encrypts `plaintext` into a resource (the simulator's side).
    pub fn seal(
        key: &ApiV3Key,
        nonce: &str,
        associated_data: &str,
        original_type: &str,
        plaintext: &str,
    ) -> Result<Self, WechatError> {
        Ok(Self {
            algorithm: ALGORITHM.to_owned(),
            ciphertext: encrypt(key, nonce, associated_data, plaintext.as_bytes())?,
            nonce: nonce.to_owned(),
            associated_data: associated_data.to_owned(),
            original_type: original_type.to_owned(),
        })
    }
}

fn nonce_of(nonce: &str) -> Result<&Nonce<aes_gcm::aead::consts::U12>, WechatError> {
    if nonce.len() != NONCE_LEN {
        return Err(WechatError::MalformedResource("nonce is not 12 bytes"));
    }
    Ok(Nonce::from_slice(nonce.as_bytes()))
}

/// AES-256-GCM decryption of base64 `ciphertext_b64` (ciphertext ‖ tag).
pub fn decrypt(
    key: &ApiV3Key,
    nonce: &str,
    associated_data: &str,
    ciphertext_b64: &str,
) -> Result<Vec<u8>, WechatError> {
    let nonce = nonce_of(nonce)?;
    let sealed = B64
        .decode(ciphertext_b64)
        .map_err(|_| WechatError::MalformedResource("ciphertext is not base64"))?;
    key.cipher()
        .decrypt(
            nonce,
            Payload {
                msg: &sealed,
                aad: associated_data.as_bytes(),
            },
        )
        // Wrong key, wrong AAD, or tampering: GCM cannot tell them apart, and neither can we.
        .map_err(|_| WechatError::DecryptFailed)
}

/// AES-256-GCM encryption; returns base64 of ciphertext ‖ tag.
pub fn encrypt(
    key: &ApiV3Key,
    nonce: &str,
    associated_data: &str,
    plaintext: &[u8],
) -> Result<String, WechatError> {
    let nonce = nonce_of(nonce)?;
    let sealed = key
        .cipher()
        .encrypt(
            nonce,
            Payload {
                msg: plaintext,
                aad: associated_data.as_bytes(),
            },
        )
        // aes-gcm only fails to encrypt a message longer than GCM's 64 GiB limit.
        .map_err(|_| WechatError::InvalidRequest("plaintext too long for AES-GCM".into()))?;
    Ok(B64.encode(sealed))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdefghijklmnopqrstuv";

    #[test]
    fn the_key_must_be_exactly_32_printable_bytes() {
        assert!(ApiV3Key::new(KEY).is_ok());
        assert_eq!(ApiV3Key::new("short"), Err(WechatError::InvalidApiV3Key));
        assert_eq!(
            ApiV3Key::new(&format!("{KEY}x")),
            Err(WechatError::InvalidApiV3Key)
        );
        assert_eq!(
            ApiV3Key::new("0123456789abcdefghijklmnopqrstu "),
            Err(WechatError::InvalidApiV3Key)
        );
        assert_eq!(format!("{:?}", ApiV3Key::new(KEY).unwrap()), "ApiV3Key(..)");
    }

    #[test]
    fn wrong_aad_wrong_key_and_bad_nonce_are_refused() {
        let key = ApiV3Key::new(KEY).unwrap();
        let sealed = encrypt(&key, "abcdefghijkl", "transaction", b"{}").unwrap();
        assert_eq!(
            decrypt(&key, "abcdefghijkl", "transaction", &sealed).unwrap(),
            b"{}"
        );
        assert_eq!(
            decrypt(&key, "abcdefghijkl", "refund", &sealed),
            Err(WechatError::DecryptFailed)
        );
        let other = ApiV3Key::new("vutsrqponmlkjihgfedcba9876543210").unwrap();
        assert_eq!(
            decrypt(&other, "abcdefghijkl", "transaction", &sealed),
            Err(WechatError::DecryptFailed)
        );
        assert!(matches!(
            decrypt(&key, "short", "transaction", &sealed),
            Err(WechatError::MalformedResource(_))
        ));
        assert!(matches!(
            decrypt(&key, "abcdefghijkl", "transaction", "%%"),
            Err(WechatError::MalformedResource(_))
        ));
    }

    #[test]
    fn an_unknown_algorithm_is_refused() {
        let key = ApiV3Key::new(KEY).unwrap();
        let mut resource =
            EncryptedResource::seal(&key, "abcdefghijkl", "", "transaction", "{}").unwrap();
        resource.algorithm = "AEAD_SM4_GCM".into();
        assert_eq!(
            resource.decrypt(&key),
            Err(WechatError::UnsupportedAlgorithm("AEAD_SM4_GCM".into()))
        );
    }
}
