//! Exact money: a `rust_decimal::Decimal` amount tied to its ISO 4217 currency.
//!
//! The only constructor validates: positive, at most the currency's minor unit of decimal
//! places (never rounded: "1.005" CNY is refused, "1.50" and "1.500" are the same 1.50), and
//! at most `AMOUNT_MAJOR_UNITS_MAX`. Amounts are rendered with exactly the currency's scale.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{Currency, DomainError};

/// The largest amount accepted, in major units (SPEC §11).
pub const AMOUNT_MAJOR_UNITS_MAX: i64 = 1_000_000_000_000;

/// An amount valid in its currency. Deserializing validates it as `Money::new` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "MoneyWire")]
pub struct Money {
    #[serde(with = "rust_decimal::serde::str")]
    amount: Decimal,
    currency: Currency,
}

/// `Money` as it is written, before validation.
#[derive(Deserialize)]
struct MoneyWire {
    #[serde(with = "rust_decimal::serde::str")]
    amount: Decimal,
    currency: Currency,
}

impl TryFrom<MoneyWire> for Money {
    type Error = DomainError;

    fn try_from(w: MoneyWire) -> Result<Self, DomainError> {
        Money::new(w.amount, w.currency)
    }
}

impl Money {
    /// Validates `amount` against `currency`; the stored value carries the currency's scale.
    pub fn new(amount: Decimal, currency: Currency) -> Result<Self, DomainError> {
        let amount = check_amount(amount, currency)?;
        Ok(Self { amount, currency })
    }

    /// Parses a decimal text ("100", "100.5", "1e2") exactly, then validates it.
    pub fn parse(text: &str, currency: Currency) -> Result<Self, DomainError> {
        Self::new(parse_decimal(text)?, currency)
    }

    pub fn amount(&self) -> Decimal {
        self.amount
    }

    pub fn currency(&self) -> Currency {
        self.currency
    }
}

impl std::fmt::Display for Money {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}",
            format_amount(self.amount, self.currency),
            self.currency
        )
    }
}

/// Parses decimal text without ever going through a float. Accepts plain and scientific
/// notation as JSON numbers may use either; rejects anything else.
pub fn parse_decimal(text: &str) -> Result<Decimal, DomainError> {
    let text = text.trim();
    let bad = || DomainError::Invalid(format!("amount {text:?} is not a decimal number"));
    if text.is_empty() || text.len() > 64 {
        return Err(bad());
    }
    let plain = text
        .bytes()
        .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'+');
    if plain {
        // Zeros after the last significant decimal carry no value, and may be more than a
        // decimal's 28 places hold: dropped before parsing, so "1.50" + 60 zeros is 1.5.
        let text = match text.split_once('.') {
            Some((int, fraction)) if !fraction.is_empty() => {
                let kept = fraction.trim_end_matches('0');
                if kept.is_empty() {
                    std::borrow::Cow::Owned(int.to_owned())
                } else if kept.len() < fraction.len() {
                    std::borrow::Cow::Owned(format!("{int}.{kept}"))
                } else {
                    std::borrow::Cow::Borrowed(text)
                }
            }
            _ => std::borrow::Cow::Borrowed(text),
        };
        Decimal::from_str_exact(&text).map_err(|_| bad())
    } else if text.bytes().any(|b| b == b'e' || b == b'E') {
        Decimal::from_scientific(text).map_err(|_| bad())
    } else {
        Err(bad())
    }
}

/// Validates an amount for a currency and returns it at exactly the currency's scale.
pub fn check_amount(amount: Decimal, currency: Currency) -> Result<Decimal, DomainError> {
    if amount <= Decimal::ZERO {
        return Err(DomainError::Invalid("amount must be greater than 0".into()));
    }
    if amount > Decimal::from(AMOUNT_MAJOR_UNITS_MAX) {
        return Err(DomainError::Invalid(format!(
            "amount must not exceed {AMOUNT_MAJOR_UNITS_MAX}"
        )));
    }
    let scale = currency.minor_unit();
    let normalized = amount.normalize();
    if normalized.scale() > scale {
        return Err(DomainError::Invalid(format!(
            "amount {amount} has more than {scale} decimal places allowed for {currency}"
        )));
    }
    let mut exact = normalized;
    exact.rescale(scale);
    debug_assert_eq!(
        exact, amount,
        "rescaling within the minor unit never rounds"
    );
    Ok(exact)
}

/// Renders an amount with exactly the currency's number of decimal places.
pub fn format_amount(amount: Decimal, currency: Currency) -> String {
    let mut value = amount;
    value.rescale(currency.minor_unit());
    value.to_string()
}

impl FromStr for Money {
    type Err = DomainError;

    /// "100.00 CNY".
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (amount, code) = s
            .split_once(' ')
            .ok_or_else(|| DomainError::Invalid("expected \"<amount> <currency>\"".into()))?;
        let currency = Currency::from_code(code)
            .ok_or_else(|| DomainError::Invalid(format!("unknown currency {code:?}")))?;
        Money::parse(amount, currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cny() -> Currency {
        Currency::from_code("CNY").expect("CNY is in the table")
    }
    fn jpy() -> Currency {
        Currency::from_code("JPY").expect("JPY is in the table")
    }

    #[test]
    fn zeros_after_the_last_significant_decimal_never_overflow_a_decimal() {
        let long = format!("999999999999.99{}", "0".repeat(48));
        assert_eq!(long.len(), 63);
        assert_eq!(
            Money::parse(&long, cny()).unwrap().amount().to_string(),
            "999999999999.99"
        );
        let whole = format!("1000000000000.{}", "0".repeat(40));
        assert_eq!(
            Money::parse(&whole, jpy()).unwrap().amount().to_string(),
            "1000000000000"
        );
        assert!(Money::parse(&format!("1.001{}", "0".repeat(30)), cny()).is_err());
        assert!(parse_decimal(&"1".repeat(40)).is_err());
    }

    #[test]
    fn amounts_take_the_currency_scale() {
        assert_eq!(
            Money::parse("100", cny()).unwrap().amount().to_string(),
            "100.00"
        );
        assert_eq!(
            Money::parse("1.5", cny()).unwrap().amount().to_string(),
            "1.50"
        );
        assert_eq!(
            Money::parse("1.500", cny()).unwrap().amount().to_string(),
            "1.50"
        );
        assert_eq!(
            Money::parse("100", jpy()).unwrap().amount().to_string(),
            "100"
        );
        assert_eq!(
            Money::parse("1e2", cny()).unwrap().amount().to_string(),
            "100.00"
        );
    }

    #[test]
    fn more_decimals_than_the_currency_allows_is_refused_not_rounded() {
        assert!(Money::parse("1.005", cny()).is_err());
        assert!(Money::parse("1.5", jpy()).is_err());
        assert!(Money::parse("0.001", cny()).is_err());
    }

    #[test]
    fn zero_negative_huge_and_garbage_amounts_are_refused() {
        for bad in [
            "0",
            "-1",
            "0.00",
            "1000000000000.01",
            "abc",
            "",
            "1,00",
            "NaN",
            "inf",
            "0x10",
        ] {
            assert!(Money::parse(bad, cny()).is_err(), "{bad} should be refused");
        }
        assert!(Money::parse("1000000000000", cny()).is_ok());
    }

    #[test]
    fn money_round_trips_through_serde_as_exact_strings() {
        let m = Money::parse("12.30", cny()).unwrap();
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"amount":"12.30","currency":"CNY"}"#);
        assert_eq!(serde_json::from_str::<Money>(&json).unwrap(), m);
    }
}
