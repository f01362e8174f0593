//! Money on the WeChat Pay wire: integer fen (1/100 yuan) in JSON, `Decimal` yuan in the
//! ledger. Conversions are exact or refused — never rounded.

use rust_decimal::Decimal;

/// Why a yuan amount cannot be written as fen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("{0} yuan has more than two decimals")]
    TooManyDecimals(Decimal),
    #[error("{0} yuan is negative")]
    Negative(Decimal),
    #[error("{0} yuan does not fit in 64-bit fen")]
    OutOfRange(Decimal),
}

/// Yuan to fen: `12.30` → `1230`. Refuses a third decimal (even `0.001`), negatives, and
/// anything beyond `i64` fen.
pub fn yuan_to_fen(yuan: Decimal) -> Result<i64, AmountError> {
    if yuan.is_sign_negative() && !yuan.is_zero() {
        return Err(AmountError::Negative(yuan));
    }
    let mut exact = yuan.normalize();
    if exact.scale() > 2 {
        return Err(AmountError::TooManyDecimals(yuan));
    }
    // `rescale` silently settles for a smaller scale when the wider mantissa would not fit
    // in 96 bits, so the result is checked rather than assumed.
    exact.rescale(2);
    if exact.scale() != 2 {
        return Err(AmountError::OutOfRange(yuan));
    }
    i64::try_from(exact.mantissa()).map_err(|_| AmountError::OutOfRange(yuan))
}

/// Fen to yuan: `1230` → `12.30`. Always exact.
pub fn fen_to_yuan(fen: i64) -> Decimal {
    Decimal::new(fen, 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn whole_and_fractional_yuan_convert_exactly() {
        assert_eq!(yuan_to_fen(d("12.30")), Ok(1230));
        assert_eq!(yuan_to_fen(d("12.3")), Ok(1230));
        assert_eq!(yuan_to_fen(d("0.01")), Ok(1));
        assert_eq!(yuan_to_fen(d("1")), Ok(100));
        assert_eq!(yuan_to_fen(d("0")), Ok(0));
        assert_eq!(yuan_to_fen(d("-0.00")), Ok(0));
        assert_eq!(yuan_to_fen(d("5.000")), Ok(500));
    }

    #[test]
    fn a_third_decimal_is_refused_not_rounded() {
        assert_eq!(
            yuan_to_fen(d("0.001")),
            Err(AmountError::TooManyDecimals(d("0.001")))
        );
        assert_eq!(
            yuan_to_fen(d("1.005")),
            Err(AmountError::TooManyDecimals(d("1.005")))
        );
    }

    #[test]
    fn negative_and_huge_amounts_are_refused() {
        assert_eq!(yuan_to_fen(d("-1")), Err(AmountError::Negative(d("-1"))));
        assert_eq!(yuan_to_fen(d("92233720368547758.07")), Ok(i64::MAX));
        assert!(matches!(
            yuan_to_fen(d("92233720368547758.08")),
            Err(AmountError::OutOfRange(_))
        ));
        assert!(matches!(
            yuan_to_fen(Decimal::MAX),
            Err(AmountError::OutOfRange(_))
        ));
    }

    #[test]
    fn fen_to_yuan_has_two_places() {
        assert_eq!(fen_to_yuan(1230).to_string(), "12.30");
        assert_eq!(fen_to_yuan(1).to_string(), "0.01");
        assert_eq!(fen_to_yuan(i64::MAX).to_string(), "92233720368547758.07");
    }
}
