//! Signed audit digests (SPEC §3, `GET /audit/digest`): the running root over the whole
//! event log and the Ed25519 signature an auditor keeps outside the system, so that a later
//! rewrite of history cannot be hidden by recomputing the hashes.
//!
//! This module only computes and checks; reading the log and choosing the signing time
//! belong to the store and the API.

use std::fmt;

use ed25519_dalek::{Signature, Signer, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::sealing::CryptoError;

/// The root before the first event, and the `prev_hash` of a stream's first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Versioned so that a future change of the signed message cannot be confused with this one.
const DIGEST_MESSAGE_TAG: &str = "ledger-digest:v1";
const HASH_LEN: usize = 32;

/// `LEDGER_SIGNING_KEY`: the Ed25519 key that signs audit digests.
#[derive(Clone)]
pub struct SigningKey(ed25519_dalek::SigningKey);

impl SigningKey {
    /// Parses the 32-byte seed as 64 hex characters.
    pub fn from_hex(s: &str) -> Result<Self, CryptoError> {
        let mut seed = [0u8; 32];
        hex::decode_to_slice(s, &mut seed)
            .map_err(|_| CryptoError::MalformedKey("signing key must be 64 hex characters"))?;
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        seed = [0; 32];
        std::hint::black_box(&seed);
        Ok(Self(key))
    }

    pub fn generate() -> Self {
        Self(ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng))
    }

    /// The 32-byte seed as lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.to_bytes())
    }

    /// The verifying key as lowercase hex, to publish to auditors.
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.0.verifying_key().to_bytes())
    }

    /// Signs [`digest_message`] for this position and root.
    pub fn sign_digest(&self, position: i64, root_hash: &str, signed_at: &str) -> SignedDigest {
        let signature = self
            .0
            .sign(digest_message(position, root_hash, signed_at).as_bytes());
        SignedDigest {
            position,
            root_hash: root_hash.to_owned(),
            signed_at: signed_at.to_owned(),
            public_key: self.public_key_hex(),
            signature: hex::encode(signature.to_bytes()),
        }
    }
}

impl fmt::Debug for SigningKey {
    // The public half is harmless and tells operators which key is loaded.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SigningKey(public_key={}, secret=**redacted**)",
            self.public_key_hex()
        )
    }
}

/// The exact bytes signed: `ledger-digest:v1\n{position}\n{root_hash}\n{signed_at}`.
pub fn digest_message(position: i64, root_hash: &str, signed_at: &str) -> String {
    format!("{DIGEST_MESSAGE_TAG}\n{position}\n{root_hash}\n{signed_at}")
}

/// What `GET /audit/digest` answers; every byte string is lowercase hex.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SignedDigest {
    pub position: i64,
    pub root_hash: String,
    pub signed_at: String,
    pub public_key: String,
    pub signature: String,
}

/// Checks the signature against the public key embedded in the digest.
///
/// That proves only that the digest is intact and self-consistent: whoever rewrites the log
/// can also sign a new digest with a key of their own. An auditor must also compare
/// `public_key` with the key they trust — [`verify_digest_with_key`] does both.
pub fn verify_digest(d: &SignedDigest) -> Result<(), CryptoError> {
    let mut public_key = [0u8; 32];
    hex::decode_to_slice(&d.public_key, &mut public_key)
        .map_err(|_| CryptoError::MalformedKey("public key must be 64 hex characters"))?;
    let public_key = VerifyingKey::from_bytes(&public_key)
        .map_err(|_| CryptoError::MalformedKey("public key is not a valid Ed25519 point"))?;
    let mut signature = [0u8; 64];
    hex::decode_to_slice(&d.signature, &mut signature).map_err(|_| CryptoError::BadSignature)?;
    let signature = Signature::from_bytes(&signature);
    // Strict verification rejects weak keys and malleable signatures, so one digest has
    // exactly one valid signature under a given key.
    public_key
        .verify_strict(
            digest_message(d.position, &d.root_hash, &d.signed_at).as_bytes(),
            &signature,
        )
        .map_err(|_| CryptoError::BadSignature)
}

/// [`verify_digest`], and the digest was signed by `trusted_public_key_hex`.
pub fn verify_digest_with_key(
    d: &SignedDigest,
    trusted_public_key_hex: &str,
) -> Result<(), CryptoError> {
    // Public keys are not secret, so an ordinary comparison is fine; case is ignored because
    // hex of either case names the same key.
    if !d.public_key.eq_ignore_ascii_case(trusted_public_key_hex) {
        return Err(CryptoError::BadSignature);
    }
    verify_digest(d)
}

/// The running root after one more event: lowercase hex of
/// `sha256(raw bytes of prev_root ‖ raw bytes of event_hash)`, starting from [`GENESIS_HASH`].
///
/// Both inputs are expected to be 64 hex characters. The log is exactly what is being
/// audited, so a malformed stored hash must not panic: it is folded in as text behind a
/// 64-byte zero prefix. That preimage is longer than any well-formed one (exactly 64 bytes),
/// so it can never produce the root of a well-formed chain, and verification reports a
/// mismatch instead.
pub fn chain_root(prev_root_hex: &str, event_hash_hex: &str) -> String {
    let mut hasher = Sha256::new();
    match (decode_hash(prev_root_hex), decode_hash(event_hash_hex)) {
        (Some(prev), Some(event)) => {
            hasher.update(prev);
            hasher.update(event);
        }
        _ => {
            hasher.update([0u8; 2 * HASH_LEN]);
            for part in [prev_root_hex, event_hash_hex] {
                hasher.update((part.len() as u64).to_be_bytes());
                hasher.update(part.as_bytes());
            }
        }
    }
    hex::encode(hasher.finalize())
}

fn decode_hash(s: &str) -> Option<[u8; HASH_LEN]> {
    let mut bytes = [0u8; HASH_LEN];
    hex::decode_to_slice(s, &mut bytes).ok()?;
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    const SIGNED_AT: &str = "2024-05-01T12:00:00Z";

    fn hash_of(s: &str) -> String {
        hex::encode(Sha256::digest(s.as_bytes()))
    }

    #[test]
    fn digest_message_has_the_versioned_layout() {
        assert_eq!(
            digest_message(42, ROOT, SIGNED_AT),
            format!("ledger-digest:v1\n42\n{ROOT}\n2024-05-01T12:00:00Z")
        );
    }

    #[test]
    fn a_signed_digest_verifies() {
        let key = SigningKey::generate();
        let digest = key.sign_digest(42, ROOT, SIGNED_AT);
        assert_eq!(digest.position, 42);
        assert_eq!(digest.root_hash, ROOT);
        assert_eq!(digest.public_key, key.public_key_hex());
        assert_eq!(digest.signature.len(), 128);
        verify_digest(&digest).unwrap();
        verify_digest_with_key(&digest, &key.public_key_hex()).unwrap();
    }

    #[test]
    fn a_digest_survives_a_json_round_trip() {
        let digest = SigningKey::generate().sign_digest(7, ROOT, SIGNED_AT);
        let json = serde_json::to_string(&digest).unwrap();
        let back: SignedDigest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, digest);
        verify_digest(&back).unwrap();
    }

    #[test]
    fn changing_any_field_makes_the_digest_fail() {
        let key = SigningKey::generate();
        let digest = key.sign_digest(42, ROOT, SIGNED_AT);
        let mut signature = hex::decode(&digest.signature).unwrap();
        signature[0] ^= 0x01;
        let tampered = [
            SignedDigest {
                position: 43,
                ..digest.clone()
            },
            SignedDigest {
                root_hash: hash_of("other"),
                ..digest.clone()
            },
            SignedDigest {
                signed_at: "2024-05-01T12:00:01Z".to_owned(),
                ..digest.clone()
            },
            SignedDigest {
                public_key: SigningKey::generate().public_key_hex(),
                ..digest.clone()
            },
            SignedDigest {
                signature: hex::encode(signature),
                ..digest.clone()
            },
        ];
        for d in &tampered {
            assert!(verify_digest(d).is_err(), "{d:?} should not verify");
        }
    }

    #[test]
    fn malformed_key_or_signature_hex_fails_without_panicking() {
        let digest = SigningKey::generate().sign_digest(1, ROOT, SIGNED_AT);
        let bad_key = SignedDigest {
            public_key: "zz".to_owned(),
            ..digest.clone()
        };
        assert!(matches!(
            verify_digest(&bad_key),
            Err(CryptoError::MalformedKey(_))
        ));
        for signature in ["", "zz", &digest.signature[..126]] {
            let bad = SignedDigest {
                signature: signature.to_owned(),
                ..digest.clone()
            };
            assert!(matches!(
                verify_digest(&bad),
                Err(CryptoError::BadSignature)
            ));
        }
    }

    #[test]
    fn a_digest_signed_by_an_untrusted_key_is_rejected() {
        let trusted = SigningKey::generate();
        let forger = SigningKey::generate();
        let forged = forger.sign_digest(42, ROOT, SIGNED_AT);
        verify_digest(&forged).unwrap();
        assert!(matches!(
            verify_digest_with_key(&forged, &trusted.public_key_hex()),
            Err(CryptoError::BadSignature)
        ));
    }

    #[test]
    fn signing_key_round_trips_through_hex_and_signs_identically() {
        let key = SigningKey::generate();
        let again = SigningKey::from_hex(&key.to_hex()).unwrap();
        assert_eq!(again.public_key_hex(), key.public_key_hex());
        // Ed25519 is deterministic, so equal keys give equal signatures.
        assert_eq!(
            again.sign_digest(1, ROOT, SIGNED_AT),
            key.sign_digest(1, ROOT, SIGNED_AT)
        );
    }

    #[test]
    fn signing_key_derives_the_rfc8032_public_key_from_its_seed() {
        // RFC 8032 §7.1, test 1.
        let key = SigningKey::from_hex(
            "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        )
        .unwrap();
        assert_eq!(
            key.public_key_hex(),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
    }

    #[test]
    fn malformed_signing_key_hex_is_rejected() {
        for bad in ["", "00", &"0".repeat(63), &"0".repeat(66), &"x".repeat(64)] {
            assert!(matches!(
                SigningKey::from_hex(bad),
                Err(CryptoError::MalformedKey(_))
            ));
        }
    }

    #[test]
    fn debug_of_a_signing_key_never_contains_the_seed() {
        let seed = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
        let key = SigningKey::from_hex(seed).unwrap();
        let printed = format!("{key:?} {key:#?}");
        assert!(!printed.contains(seed));
        assert!(!printed.contains("9d61b1"));
        assert!(printed.contains("**redacted**"));
    }

    #[test]
    fn genesis_hash_is_32_zero_bytes() {
        assert_eq!(GENESIS_HASH.len(), 64);
        assert_eq!(hex::decode(GENESIS_HASH).unwrap(), vec![0u8; 32]);
    }

    #[test]
    fn chain_root_hashes_the_raw_bytes_of_both_inputs() {
        let event = hash_of("event 1");
        let mut preimage = vec![0u8; 32];
        preimage.extend(hex::decode(&event).unwrap());
        assert_eq!(
            chain_root(GENESIS_HASH, &event),
            hex::encode(Sha256::digest(&preimage))
        );
    }

    #[test]
    fn chain_root_is_deterministic_and_order_sensitive() {
        let a = hash_of("event a");
        let b = hash_of("event b");
        let ab = chain_root(&chain_root(GENESIS_HASH, &a), &b);
        let ba = chain_root(&chain_root(GENESIS_HASH, &b), &a);
        assert_eq!(ab, chain_root(&chain_root(GENESIS_HASH, &a), &b));
        assert_ne!(ab, ba);
        assert_ne!(chain_root(&a, &b), chain_root(&b, &a));
        assert_eq!(ab.len(), 64);
        assert_eq!(ab, ab.to_lowercase());
    }

    #[test]
    fn chain_root_of_malformed_input_differs_and_does_not_panic() {
        let a = hash_of("event a");
        let good = chain_root(GENESIS_HASH, &a);
        assert_ne!(chain_root(GENESIS_HASH, "not hex"), good);
        assert_ne!(chain_root(GENESIS_HASH, &a[..62]), good);
        assert_ne!(chain_root("", &a), good);
        assert_ne!(chain_root(GENESIS_HASH, "x"), chain_root(GENESIS_HASH, "y"));
    }
}
