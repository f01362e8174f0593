//! RSA keys and SHA256withRSA (RSASSA-PKCS1-v1_5 with SHA-256), the one signature scheme
//! both gateways use: Alipay calls it `RSA2`, WeChat Pay `WECHATPAY2-SHA256-RSA2048`.
//!
//! Owns: reading keys in every form the gateways hand out — PEM `PRIVATE KEY` (PKCS#8),
//! `RSA PRIVATE KEY` (PKCS#1), `PUBLIC KEY` (SPKI), `RSA PUBLIC KEY` (PKCS#1), `CERTIFICATE`
//! (X.509), and the bare base64 DER that the Alipay console shows — and signing or verifying
//! bytes with them.
//!
//! Must not: know any gateway's message format, read files, or use randomness. PKCS#1 v1.5
//! signatures are deterministic, which is what lets the tests compare against the vendors'
//! published signatures byte for byte.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey, LineEnding};
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::Sha256;
use x509_cert::der::{Decode, Encode};

/// The smallest modulus we accept. Both gateways require 2048-bit keys for RSA2 / APIv3;
/// anything smaller is a configuration mistake (or the deprecated 1024-bit `RSA` scheme).
pub const RSA_BITS_MIN: usize = 2048;

/// Why a key or certificate could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("PEM block `{0}` is not a supported key or certificate type")]
    UnsupportedPemLabel(String),
    #[error("PEM armour is malformed: {0}")]
    MalformedPem(&'static str),
    #[error("key material is not valid base64")]
    Base64,
    #[error("key material is not a valid {0} structure")]
    Der(&'static str),
    #[error("RSA key has {bits} bits; at least {RSA_BITS_MIN} are required")]
    TooSmall { bits: usize },
    #[error("certificate does not carry an RSA public key")]
    NotRsa,
}

/// Why a signature was rejected. Callers fold both into their own "bad signature" error;
/// the distinction only helps a person debugging a misconfigured key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature is not well-formed base64 of the right length")]
    Malformed,
    #[error("signature does not match the message and key")]
    Mismatch,
}

/// A merchant's (or, in a simulator, a gateway's) RSA private key, ready to sign.
#[derive(Clone)]
pub struct PrivateKey {
    signing: SigningKey<Sha256>,
    public: PublicKey,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material, even in a panic message or a debug log.
        f.debug_struct("PrivateKey")
            .field("bits", &self.public.bits())
            .finish_non_exhaustive()
    }
}

impl PrivateKey {
    /// Reads a private key from PEM (`PRIVATE KEY` or `RSA PRIVATE KEY`) or from bare base64
    /// DER of either structure, as the Alipay console displays it.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let key = match pem_block(text)? {
            Some((label, der)) => match label.as_str() {
                "PRIVATE KEY" => {
                    RsaPrivateKey::from_pkcs8_der(&der).map_err(|_| KeyError::Der("PKCS#8"))?
                }
                "RSA PRIVATE KEY" => {
                    RsaPrivateKey::from_pkcs1_der(&der).map_err(|_| KeyError::Der("PKCS#1"))?
                }
                _ => return Err(KeyError::UnsupportedPemLabel(label)),
            },
            None => {
                let der = bare_base64(text)?;
                RsaPrivateKey::from_pkcs8_der(&der)
                    .or_else(|_| RsaPrivateKey::from_pkcs1_der(&der))
                    .map_err(|_| KeyError::Der("PKCS#8 or PKCS#1 private key"))?
            }
        };
        Self::from_rsa(key)
    }

    fn from_rsa(key: RsaPrivateKey) -> Result<Self, KeyError> {
        let public = PublicKey::from_rsa(key.to_public_key())?;
        Ok(Self {
            signing: SigningKey::<Sha256>::new(key),
            public,
        })
    }

    /// The matching public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// SHA256withRSA over `message`, the raw signature bytes.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        // The only failure PKCS#1 v1.5 signing has is a modulus too short for the SHA-256
        // DigestInfo (62 bytes); `from_rsa` refused anything under 2048 bits.
        let signature: Signature = self
            .signing
            .try_sign(message)
            .expect("a >= 2048-bit modulus always fits a SHA-256 DigestInfo");
        signature.to_vec()
    }

    /// SHA256withRSA over `message`, base64 (standard alphabet, padded) as both gateways send it.
    pub fn sign_base64(&self, message: &[u8]) -> String {
        B64.encode(self.sign(message))
    }
}

/// An RSA public key used to verify SHA256withRSA signatures.
#[derive(Clone)]
pub struct PublicKey {
    rsa: RsaPublicKey,
    verifying: VerifyingKey<Sha256>,
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.rsa == other.rsa
    }
}

impl Eq for PublicKey {}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey")
            .field("bits", &self.bits())
            .finish_non_exhaustive()
    }
}

impl PublicKey {
    /// Reads a public key from PEM (`PUBLIC KEY`, `RSA PUBLIC KEY` or `CERTIFICATE`) or from
    /// bare base64 of an SPKI structure (the form Alipay's console shows its public key in).
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        match pem_block(text)? {
            Some((label, der)) => match label.as_str() {
                "PUBLIC KEY" => Self::from_spki_der(&der),
                "RSA PUBLIC KEY" => Self::from_rsa(
                    RsaPublicKey::from_pkcs1_der(&der).map_err(|_| KeyError::Der("PKCS#1"))?,
                ),
                "CERTIFICATE" => Ok(Certificate::from_der(&der)?.public_key),
                _ => Err(KeyError::UnsupportedPemLabel(label)),
            },
            None => Self::from_spki_der(&bare_base64(text)?),
        }
    }

    fn from_spki_der(der: &[u8]) -> Result<Self, KeyError> {
        Self::from_rsa(RsaPublicKey::from_public_key_der(der).map_err(|_| KeyError::Der("SPKI"))?)
    }

    fn from_rsa(rsa: RsaPublicKey) -> Result<Self, KeyError> {
        let bits = rsa.n().bits();
        if bits < RSA_BITS_MIN {
            return Err(KeyError::TooSmall { bits });
        }
        Ok(Self {
            verifying: VerifyingKey::<Sha256>::new(rsa.clone()),
            rsa,
        })
    }

    /// The modulus size in bits.
    pub fn bits(&self) -> usize {
        self.rsa.n().bits()
    }

    /// Checks a raw SHA256withRSA signature over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), SignatureError> {
        let signature = Signature::try_from(signature).map_err(|_| SignatureError::Malformed)?;
        self.verifying
            .verify(message, &signature)
            .map_err(|_| SignatureError::Mismatch)
    }

    /// Checks a base64 SHA256withRSA signature over `message`.
    pub fn verify_base64(&self, message: &[u8], signature_b64: &str) -> Result<(), SignatureError> {
        let raw = B64
            .decode(signature_b64.trim())
            .map_err(|_| SignatureError::Malformed)?;
        // A PKCS#1 v1.5 signature is exactly as long as the modulus; anything else is garbage
        // (WeChat's probe traffic, for instance, sends a `WECHATPAY/SIGNTEST/` prefix).
        if raw.len() != self.rsa.size() {
            return Err(SignatureError::Malformed);
        }
        self.verify(message, &raw)
    }

    /// The key as a `-----BEGIN PUBLIC KEY-----` PEM document (what a simulator hands to the
    /// merchant configuration).
    pub fn to_spki_pem(&self) -> String {
        // Encoding an in-memory RSA public key into SPKI cannot fail: both integers are
        // already valid and the output is unbounded.
        self.rsa
            .to_public_key_pem(LineEnding::LF)
            .expect("an RSA public key always encodes as SPKI")
    }
}

/// An X.509 certificate reduced to what the gateways use it for: its serial number and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    /// The serial number in upper-case hex without leading zeros — the form WeChat Pay puts
    /// in `Wechatpay-Serial` (the same as `openssl x509 -serial` minus leading zeros, Java's
    /// `BigInteger.toString(16).toUpperCase()` and Go's `%X`).
    pub serial_hex: String,
    pub public_key: PublicKey,
}

impl Certificate {
    /// Reads a `-----BEGIN CERTIFICATE-----` PEM document.
    pub fn parse_pem(text: &str) -> Result<Self, KeyError> {
        match pem_block(text)? {
            Some((label, der)) if label == "CERTIFICATE" => Self::from_der(&der),
            Some((label, _)) => Err(KeyError::UnsupportedPemLabel(label)),
            None => Err(KeyError::MalformedPem("no BEGIN line")),
        }
    }

    /// Reads a DER-encoded certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, KeyError> {
        let cert = x509_cert::Certificate::from_der(der).map_err(|_| KeyError::Der("X.509"))?;
        let tbs = &cert.tbs_certificate;
        let spki = tbs
            .subject_public_key_info
            .to_der()
            .map_err(|_| KeyError::Der("X.509 subject public key"))?;
        let rsa = RsaPublicKey::from_public_key_der(&spki).map_err(|_| KeyError::NotRsa)?;
        Ok(Self {
            serial_hex: serial_hex(tbs.serial_number.as_bytes()),
            public_key: PublicKey::from_rsa(rsa)?,
        })
    }
}

/// Upper-case hex of a big-endian unsigned integer, without leading zeros ("0" for zero).
fn serial_hex(bytes: &[u8]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02X}")).collect();
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// Splits a PEM document into its label and DER payload, or `None` when the text has no
/// `-----BEGIN` line (bare base64). Written by hand rather than with a strict RFC 7468 decoder
/// because the gateways' own files use 76-column lines and CRLF endings.
fn pem_block(text: &str) -> Result<Option<(String, Vec<u8>)>, KeyError> {
    let text = text.trim();
    let Some(rest) = text.strip_prefix("-----BEGIN ") else {
        return Ok(None);
    };
    let (label, rest) = rest
        .split_once("-----")
        .ok_or(KeyError::MalformedPem("unterminated BEGIN line"))?;
    let end_marker = format!("-----END {label}-----");
    let (body, after) = rest
        .split_once(end_marker.as_str())
        .ok_or(KeyError::MalformedPem("no matching END line"))?;
    if !after.trim().is_empty() {
        return Err(KeyError::MalformedPem("text after the END line"));
    }
    let der = bare_base64(body)?;
    Ok(Some((label.to_owned(), der)))
}

/// Decodes base64 that may be wrapped over several lines.
fn bare_base64(text: &str) -> Result<Vec<u8>, KeyError> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if compact.is_empty() {
        return Err(KeyError::Base64);
    }
    B64.decode(compact).map_err(|_| KeyError::Base64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_hex_drops_leading_zero_bytes_and_nibbles() {
        assert_eq!(serial_hex(&[0x00, 0xD7, 0xCE]), "D7CE");
        assert_eq!(serial_hex(&[0x0A, 0xBC]), "ABC");
        assert_eq!(serial_hex(&[0x00]), "0");
    }

    #[test]
    fn pem_with_unknown_label_is_refused() {
        let err =
            PublicKey::parse("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----");
        assert_eq!(
            err,
            Err(KeyError::UnsupportedPemLabel("EC PRIVATE KEY".into()))
        );
    }

    #[test]
    fn pem_without_end_line_is_refused() {
        let err = PublicKey::parse("-----BEGIN PUBLIC KEY-----\nAAAA\n");
        assert_eq!(err, Err(KeyError::MalformedPem("no matching END line")));
    }

    #[test]
    fn garbage_is_not_a_key() {
        assert_eq!(PublicKey::parse("not base64!"), Err(KeyError::Base64));
        assert_eq!(PublicKey::parse(""), Err(KeyError::Base64));
        assert!(matches!(PrivateKey::parse("AAAA"), Err(KeyError::Der(_))));
    }
}
