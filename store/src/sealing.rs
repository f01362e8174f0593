//! Sensitive payer data (SPEC §7): the master key, per-user data keys wrapped under it, and
//! payer records sealed under a data key. The data types and masks are the domain's
//! (`ledger_domain::payer`), re-exported here.
//!
//! Every key and every payer record prints as redacted in `Debug`, so neither can reach a log
//! by accident. This module must not store anything: crypto-shredding a user is done by the
//! caller deleting that user's wrapped data key, after which [`open`] can never succeed again.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use rand::RngCore;

pub use ledger_domain::payer::{
    looks_like_card_number, luhn_valid, mask_account, mask_name, Payer, SealedPayer, ERASED,
};

/// AES-GCM's standard nonce length; random nonces of this size are safe for far more
/// messages per key than one user will ever produce.
const NONCE_LEN: usize = 12;
/// AES-GCM's authentication tag length, appended to every ciphertext.
const TAG_LEN: usize = 16;
const KEY_LEN: usize = 32;

/// Domain separation: a wrapped data key can never be opened as a payer record, nor the
/// reverse, and each is bound to its owner so that ciphertexts cannot be swapped between
/// users or payments.
const DEK_AAD_PREFIX: &[u8] = b"ledger-dek:";
const PAYER_AAD_PREFIX: &[u8] = b"ledger-payer:";

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("malformed key: {0}")]
    MalformedKey(&'static str),
    /// Wrong key, wrong owner, tampered or truncated ciphertext: deliberately one variant,
    /// because telling them apart would help an attacker and never helps the caller.
    #[error("decryption failed")]
    Decrypt,
    #[error("bad signature")]
    BadSignature,
}

/// Best-effort wipe of key bytes on drop. `black_box` keeps the compiler from eliding the
/// store as dead; copies made elsewhere (inside the cipher) are beyond our reach.
fn wipe(bytes: &mut [u8; KEY_LEN]) {
    *bytes = [0; KEY_LEN];
    std::hint::black_box(bytes);
}

fn decode_key_hex(s: &str, what: &'static str) -> Result<[u8; KEY_LEN], CryptoError> {
    let mut bytes = [0u8; KEY_LEN];
    hex::decode_to_slice(s, &mut bytes).map_err(|_| CryptoError::MalformedKey(what))?;
    Ok(bytes)
}

fn random_key() -> [u8; KEY_LEN] {
    let mut bytes = [0u8; KEY_LEN];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes
}

fn random_nonce() -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    rand::thread_rng().fill_bytes(&mut nonce);
    nonce
}

fn cipher(key: &[u8; KEY_LEN]) -> Aes256Gcm {
    Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key))
}

fn aad(prefix: &[u8], owner: &str) -> Vec<u8> {
    [prefix, owner.as_bytes()].concat()
}

/// `LEDGER_MASTER_KEY`: wraps every user's data key and never encrypts payer data itself.
#[derive(Clone)]
pub struct MasterKey([u8; KEY_LEN]);

impl MasterKey {
    /// Parses 64 hex characters (32 bytes).
    pub fn from_hex(s: &str) -> Result<Self, CryptoError> {
        decode_key_hex(s, "master key must be 64 hex characters").map(Self)
    }

    pub fn generate() -> Self {
        Self(random_key())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// A key for another purpose (`label`), derived one way from the master key, so that the
    /// service needs one secret and no derived key reveals it or another derived key.
    pub fn derive(&self, label: &str) -> [u8; KEY_LEN] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"ledger-derive:v1:");
        h.update(label.as_bytes());
        h.update([0u8]);
        h.update(self.0);
        h.finalize().into()
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(**redacted**)")
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

/// One user's data key. It exists in clear only in memory; at rest it is wrapped by the
/// master key, and destroying the wrapped copy shreds all of that user's payer data.
#[derive(Clone)]
pub struct DataKey([u8; KEY_LEN]);

impl DataKey {
    pub fn generate() -> Self {
        Self(random_key())
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(**redacted**)")
    }
}

impl Drop for DataKey {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

/// Encrypts a user's data key under the master key: `nonce (12) ‖ ciphertext ‖ tag (16)`,
/// bound to `user_id` so that one user's wrapped key cannot be filed under another user.
pub fn wrap_key(master: &MasterKey, user_id: &str, key: &DataKey) -> Vec<u8> {
    let nonce = random_nonce();
    let aad = aad(DEK_AAD_PREFIX, user_id);
    let sealed = cipher(&master.0)
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &key.0,
                aad: &aad,
            },
        )
        .expect("AES-GCM only fails on inputs of gigabytes; a key is 32 bytes");
    [nonce.as_slice(), &sealed].concat()
}

/// Reverses [`wrap_key`]; any mismatch of master key, user or bytes is [`CryptoError::Decrypt`].
pub fn unwrap_key(
    master: &MasterKey,
    user_id: &str,
    wrapped: &[u8],
) -> Result<DataKey, CryptoError> {
    if wrapped.len() != NONCE_LEN + KEY_LEN + TAG_LEN {
        return Err(CryptoError::Decrypt);
    }
    let (nonce, sealed) = wrapped.split_at(NONCE_LEN);
    let aad = aad(DEK_AAD_PREFIX, user_id);
    let mut plain = cipher(&master.0)
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: sealed,
                aad: &aad,
            },
        )
        .map_err(|_| CryptoError::Decrypt)?;
    let key = <[u8; KEY_LEN]>::try_from(plain.as_slice()).map_err(|_| CryptoError::Decrypt);
    plain.fill(0);
    std::hint::black_box(&plain);
    key.map(DataKey)
}

/// Encrypts payer data under the user's data key, bound to `payment_id` so that a sealed
/// record copied into another payment's event fails to open.
pub fn seal(key: &DataKey, payment_id: &str, payer: &Payer) -> SealedPayer {
    let nonce = random_nonce();
    let plain = serde_json::to_vec(payer).expect("a struct of optional strings always serializes");
    let aad = aad(PAYER_AAD_PREFIX, payment_id);
    let sealed = cipher(&key.0)
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &plain,
                aad: &aad,
            },
        )
        .expect("AES-GCM only fails on inputs of gigabytes; payer data is bounded by the API");
    SealedPayer {
        nonce: BASE64.encode(nonce),
        ciphertext: BASE64.encode(sealed),
    }
}

/// Reverses [`seal`]; any mismatch of key, payment or bytes is [`CryptoError::Decrypt`].
pub fn open(key: &DataKey, payment_id: &str, sealed: &SealedPayer) -> Result<Payer, CryptoError> {
    let nonce = BASE64
        .decode(&sealed.nonce)
        .map_err(|_| CryptoError::Decrypt)?;
    // `Nonce::from_slice` panics on any other length, and the input comes from storage.
    if nonce.len() != NONCE_LEN {
        return Err(CryptoError::Decrypt);
    }
    let ciphertext = BASE64
        .decode(&sealed.ciphertext)
        .map_err(|_| CryptoError::Decrypt)?;
    let aad = aad(PAYER_AAD_PREFIX, payment_id);
    let plain = cipher(&key.0)
        .decrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &ciphertext,
                aad: &aad,
            },
        )
        .map_err(|_| CryptoError::Decrypt)?;
    // Authenticated bytes that do not parse were not written by `seal`; report them the
    // same way rather than echoing a parser error that might quote the plaintext.
    serde_json::from_slice(&plain).map_err(|_| CryptoError::Decrypt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Payer {
        Payer {
            name: Some("Alice Liddell".to_owned()),
            account: Some("4111 1111 1111 1111".to_owned()),
        }
    }

    #[test]
    fn master_key_round_trips_through_hex() {
        let key = MasterKey::generate();
        let hex = key.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(MasterKey::from_hex(&hex).unwrap().0, key.0);
    }

    #[test]
    fn master_key_of_the_wrong_length_or_not_hex_is_rejected() {
        for bad in ["", "00", &"0".repeat(63), &"0".repeat(66), &"g".repeat(64)] {
            assert!(matches!(
                MasterKey::from_hex(bad),
                Err(CryptoError::MalformedKey(_))
            ));
        }
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(MasterKey::generate().0, MasterKey::generate().0);
        assert_ne!(DataKey::generate().0, DataKey::generate().0);
    }

    #[test]
    fn debug_of_keys_never_contains_the_key() {
        let master = MasterKey::from_hex(&"ab".repeat(32)).unwrap();
        let printed = format!("{master:?} {master:#?}");
        assert!(printed.contains("MasterKey(**redacted**)"));
        assert!(!printed.contains("abab"));
        assert!(!printed.contains("171"));

        let data = DataKey([0xab; 32]);
        let printed = format!("{data:?} {data:#?}");
        assert!(printed.contains("DataKey(**redacted**)"));
        assert!(!printed.contains("abab"));
        assert!(!printed.contains("171"));
    }

    #[test]
    fn a_wrapped_data_key_unwraps_to_the_same_key() {
        let master = MasterKey::generate();
        let key = DataKey::generate();
        let wrapped = wrap_key(&master, "user-1", &key);
        assert_eq!(wrapped.len(), NONCE_LEN + KEY_LEN + TAG_LEN);
        assert_eq!(unwrap_key(&master, "user-1", &wrapped).unwrap().0, key.0);
    }

    #[test]
    fn wrapping_twice_uses_a_fresh_nonce() {
        let master = MasterKey::generate();
        let key = DataKey::generate();
        assert_ne!(
            wrap_key(&master, "user-1", &key),
            wrap_key(&master, "user-1", &key)
        );
    }

    #[test]
    fn a_wrapped_key_fails_under_another_master_key_or_another_user() {
        let master = MasterKey::generate();
        let wrapped = wrap_key(&master, "user-1", &DataKey::generate());
        assert!(matches!(
            unwrap_key(&MasterKey::generate(), "user-1", &wrapped),
            Err(CryptoError::Decrypt)
        ));
        assert!(matches!(
            unwrap_key(&master, "user-2", &wrapped),
            Err(CryptoError::Decrypt)
        ));
    }

    #[test]
    fn a_tampered_or_truncated_wrapped_key_fails() {
        let master = MasterKey::generate();
        let wrapped = wrap_key(&master, "user-1", &DataKey::generate());
        for i in 0..wrapped.len() {
            let mut tampered = wrapped.clone();
            tampered[i] ^= 0x01;
            assert!(unwrap_key(&master, "user-1", &tampered).is_err());
        }
        for len in 0..wrapped.len() {
            assert!(unwrap_key(&master, "user-1", &wrapped[..len]).is_err());
        }
    }

    #[test]
    fn a_sealed_payer_opens_to_the_same_payer() {
        let key = DataKey::generate();
        let sealed = seal(&key, "pay-1", &alice());
        assert_eq!(open(&key, "pay-1", &sealed).unwrap(), alice());

        let empty = Payer::default();
        assert_eq!(
            open(&key, "pay-1", &seal(&key, "pay-1", &empty)).unwrap(),
            empty
        );
    }

    #[test]
    fn a_sealed_payer_holds_no_plaintext() {
        let sealed = seal(&DataKey::generate(), "pay-1", &alice());
        let json = serde_json::to_string(&sealed).unwrap();
        assert!(!json.contains("Alice"));
        assert!(!json.contains("4111"));
        assert_eq!(BASE64.decode(&sealed.nonce).unwrap().len(), NONCE_LEN);
    }

    #[test]
    fn a_sealed_payer_fails_under_another_key_or_another_payment() {
        let key = DataKey::generate();
        let sealed = seal(&key, "pay-1", &alice());
        assert!(matches!(
            open(&DataKey::generate(), "pay-1", &sealed),
            Err(CryptoError::Decrypt)
        ));
        assert!(matches!(
            open(&key, "pay-2", &sealed),
            Err(CryptoError::Decrypt)
        ));
    }

    #[test]
    fn a_wrapped_key_cannot_be_opened_as_a_payer_even_with_matching_ids() {
        // The same 32 bytes used as master and data key, and the same id: only the AAD
        // prefix keeps the two kinds of ciphertext apart.
        let bytes = [7u8; 32];
        let wrapped = wrap_key(&MasterKey(bytes), "x", &DataKey::generate());
        let sealed = SealedPayer {
            nonce: BASE64.encode(&wrapped[..NONCE_LEN]),
            ciphertext: BASE64.encode(&wrapped[NONCE_LEN..]),
        };
        assert!(open(&DataKey(bytes), "x", &sealed).is_err());
    }

    #[test]
    fn a_tampered_sealed_payer_fails() {
        let key = DataKey::generate();
        let sealed = seal(&key, "pay-1", &alice());
        let mut ciphertext = BASE64.decode(&sealed.ciphertext).unwrap();
        ciphertext[0] ^= 0x80;
        let tampered = SealedPayer {
            ciphertext: BASE64.encode(&ciphertext),
            ..sealed.clone()
        };
        assert!(matches!(
            open(&key, "pay-1", &tampered),
            Err(CryptoError::Decrypt)
        ));

        let mut nonce = BASE64.decode(&sealed.nonce).unwrap();
        nonce[0] ^= 0x01;
        let tampered = SealedPayer {
            nonce: BASE64.encode(&nonce),
            ..sealed.clone()
        };
        assert!(open(&key, "pay-1", &tampered).is_err());
    }

    #[test]
    fn a_sealed_payer_with_malformed_fields_fails_without_panicking() {
        let key = DataKey::generate();
        let sealed = seal(&key, "pay-1", &alice());
        let cases = [
            SealedPayer {
                nonce: "not base64!".to_owned(),
                ..sealed.clone()
            },
            SealedPayer {
                nonce: BASE64.encode([0u8; 11]),
                ..sealed.clone()
            },
            SealedPayer {
                nonce: BASE64.encode([0u8; 13]),
                ..sealed.clone()
            },
            SealedPayer {
                nonce: String::new(),
                ..sealed.clone()
            },
            SealedPayer {
                ciphertext: "%%%".to_owned(),
                ..sealed.clone()
            },
            SealedPayer {
                ciphertext: String::new(),
                ..sealed.clone()
            },
        ];
        for case in &cases {
            assert!(matches!(
                open(&key, "pay-1", case),
                Err(CryptoError::Decrypt)
            ));
        }
    }

    #[test]
    fn debug_of_a_payer_shows_presence_but_never_values() {
        let printed = format!("{:?} {:#?}", alice(), alice());
        assert!(!printed.contains("Alice"));
        assert!(!printed.contains("4111"));
        assert!(printed.contains("Some(**redacted**)"));

        let partial = Payer {
            name: None,
            account: Some("secret-account".to_owned()),
        };
        let printed = format!("{partial:?}");
        assert_eq!(printed, "Payer { name: None, account: Some(**redacted**) }");
    }

    #[test]
    fn payer_without_fields_deserializes_to_none() {
        let payer: Payer = serde_json::from_str("{}").unwrap();
        assert_eq!(payer, Payer::default());
    }

    #[test]
    fn names_keep_the_first_character_and_star_the_rest() {
        assert_eq!(mask_name("张三"), "张*");
        assert_eq!(mask_name("欧阳娜娜"), "欧***");
        assert_eq!(mask_name("Alice"), "A****");
        assert_eq!(mask_name("A"), "A");
        assert_eq!(mask_name(""), "");
        assert_eq!(mask_name("😀x"), "😀*");
    }

    #[test]
    fn accounts_show_only_their_last_four_non_space_characters() {
        assert_eq!(mask_account("6222 0212 3456 1234"), "****1234");
        assert_eq!(mask_account("4111111111111111"), "****1111");
        assert_eq!(mask_account("12 34"), "****");
        assert_eq!(mask_account("123 4 5"), "****2345");
        assert_eq!(mask_account("1234"), "****");
        assert_eq!(mask_account("12"), "****");
        assert_eq!(mask_account(""), "****");
        assert_eq!(mask_account("账户号码一二三四五"), "****二三四五");
    }

    #[test]
    fn masks_never_panic_on_arbitrary_unicode() {
        for s in ["\u{0301}", "a\u{0301}b", "🇨🇳🇨🇳🇨🇳", "\0\0\0\0\0", "  \t\n "] {
            let _ = mask_name(s);
            let _ = mask_account(s);
            let _ = luhn_valid(s);
            let _ = looks_like_card_number(s);
        }
    }

    #[test]
    fn luhn_accepts_well_known_valid_card_numbers() {
        assert!(luhn_valid("4111111111111111"));
        assert!(luhn_valid("4111 1111 1111 1111"));
        assert!(luhn_valid("4111-1111-1111-1111"));
        assert!(luhn_valid("5555555555554444"));
        assert!(luhn_valid("378282246310005"));
        assert!(luhn_valid("6011111111111117"));
    }

    #[test]
    fn luhn_rejects_wrong_check_digits_wrong_lengths_and_other_characters() {
        assert!(!luhn_valid("4111111111111112"));
        assert!(!luhn_valid("5555555555554445"));
        // Valid Luhn sums, but too short or too long to be a card.
        assert!(!luhn_valid("0"));
        assert!(!luhn_valid("79927398713"));
        assert!(!luhn_valid(&"0".repeat(20)));
        assert!(!luhn_valid(""));
        assert!(!luhn_valid("4111x111111111111"));
        // Arabic-Indic digits are numeric but not card digits.
        assert!(!luhn_valid("٤١١١١١١١١١١١١١١١"));
    }

    #[test]
    fn card_numbers_are_12_to_19_digits_with_optional_spaces_or_dashes() {
        assert!(looks_like_card_number("4111 1111 1111 1111"));
        assert!(looks_like_card_number("4111-1111-1111-1112"));
        assert!(looks_like_card_number(&"1".repeat(12)));
        assert!(looks_like_card_number(&"1".repeat(19)));
        assert!(!looks_like_card_number(&"1".repeat(11)));
        assert!(!looks_like_card_number(&"1".repeat(20)));
        assert!(!looks_like_card_number("GB29NWBK60161331926819"));
        assert!(!looks_like_card_number(""));
        assert!(!looks_like_card_number("---- ----"));
    }
}
