//! Payer data (SPEC §7) as the domain sees it: sealed in events, in clear only in memory,
//! masked on the read side. Sealing and opening need keys and randomness, so they live in the
//! store (`ledger_store::sealing`); this module only names the data and the masking rules.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a read model shows in place of payer data once the user's data key is destroyed.
pub const ERASED: &str = "[erased]";

/// Shortest and longest card number, in digits (ISO/IEC 7812).
const CARD_DIGITS_MIN: usize = 12;
const CARD_DIGITS_MAX: usize = 19;

/// Payer data as it appears in events: only ciphertext, so the log's hashes cover it and
/// shredding the key does not change a single stored byte.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SealedPayer {
    /// Base64 (standard, padded) of the 12-byte AES-GCM nonce.
    pub nonce: String,
    /// Base64 (standard, padded) of the ciphertext followed by its tag.
    pub ciphertext: String,
}

/// Payer data in clear, as given on create. Both fields are optional.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Default)]
pub struct Payer {
    pub name: Option<String>,
    pub account: Option<String>,
}

/// Stands in for a value in `Debug` output.
struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("**redacted**")
    }
}

impl fmt::Debug for Payer {
    // Presence is useful when debugging; the values are exactly what must never be logged.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Payer")
            .field("name", &self.name.as_ref().map(|_| Redacted))
            .field("account", &self.account.as_ref().map(|_| Redacted))
            .finish()
    }
}

/// The first character, then one `*` per remaining character: "张三" → "张*", "Alice" → "A****".
pub fn mask_name(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => std::iter::once(first).chain(chars.map(|_| '*')).collect(),
        None => String::new(),
    }
}

/// "****" and the last four non-space characters; four or fewer characters show nothing,
/// since revealing them would reveal the whole account.
pub fn mask_account(account: &str) -> String {
    let visible: Vec<char> = account.chars().filter(|c| !c.is_whitespace()).collect();
    if visible.len() <= 4 {
        return "****".to_owned();
    }
    let mut masked = String::from("****");
    masked.extend(&visible[visible.len() - 4..]);
    masked
}

/// The digits of a card number written with optional spaces or dashes, or `None` if any
/// other character appears. `to_digit` accepts ASCII digits only, which is what we want:
/// other scripts' digits are not card numbers.
fn card_digits(s: &str) -> Option<Vec<u32>> {
    s.chars()
        .filter(|&c| c != ' ' && c != '-')
        .map(|c| c.to_digit(10))
        .collect()
}

/// Whether the input looks like a card number: only digits, spaces and dashes, with
/// 12–19 digits.
pub fn looks_like_card_number(account: &str) -> bool {
    card_digits(account)
        .is_some_and(|digits| (CARD_DIGITS_MIN..=CARD_DIGITS_MAX).contains(&digits.len()))
}

/// Whether the input is a card number (see [`looks_like_card_number`]) whose Luhn check
/// digit is right.
pub fn luhn_valid(digits: &str) -> bool {
    let Some(digits) = card_digits(digits) else {
        return false;
    };
    if !(CARD_DIGITS_MIN..=CARD_DIGITS_MAX).contains(&digits.len()) {
        return false;
    }
    // From the right, every second digit is doubled, and a two-digit result is summed.
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 {
                    doubled - 9
                } else {
                    doubled
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}
