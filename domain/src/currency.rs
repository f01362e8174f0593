//! ISO 4217 currencies: the closed set of codes a payment may be denominated in, and how many
//! decimal places (the "minor unit") each one allows.
//!
//! The table is ISO 4217 List One as maintained by SIX for the ISO 4217 Maintenance Agency,
//! current through 2025 (amendments up to 180). It keeps every active code whose minor unit is
//! a number, fund codes included (BOV, CHE, CHW, CLF, COU, MXV, USN, UYI, UYW, XAD), and drops
//! the entries whose minor unit is "N.A." (the precious metals XAU, XAG, XPT and XPD, the
//! accounting units XDR, XSU, XUA and XBA to XBD, the test code XTS and the no-currency code
//! XXX), because an amount cannot be expressed in them. Withdrawn codes (CUC, HRK, SLL, VEF,
//! ZWL, ...) are absent. ANG is kept next to its successor XCG (Caribbean guilder, active from
//! 31 March 2025) because ANG amounts may still arrive during the changeover. BGN is gone:
//! Bulgaria moved to the euro on 1 January 2026.
//!
//! Money validation relies on the minor unit being right, so the table is the one source of
//! truth: it is a sorted static slice looked up by binary search, and its tests check the order.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A validated ISO 4217 code: three uppercase ASCII letters known to the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    code: &'static str,
    minor_unit: u32,
}

impl Currency {
    /// Exact, case-sensitive lookup ("CNY" ok, "cny" not). Returns None for unknown codes.
    pub fn from_code(code: &str) -> Option<Currency> {
        TABLE
            .binary_search_by(|&(known, _)| known.cmp(code))
            .ok()
            .map(|index| {
                let (code, minor_unit) = TABLE[index];
                Currency { code, minor_unit }
            })
    }

    /// The three-letter alphabetic code, e.g. "CNY".
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The number of decimal places of the currency's minor unit (CNY 2, JPY 0, KWD 3).
    pub fn minor_unit(&self) -> u32 {
        self.minor_unit
    }

    /// Every known currency, in ascending order of code.
    pub fn all() -> impl Iterator<Item = Currency> {
        TABLE
            .iter()
            .map(|&(code, minor_unit)| Currency { code, minor_unit })
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code)
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(CurrencyVisitor)
    }
}

struct CurrencyVisitor;

impl Visitor<'_> for CurrencyVisitor {
    type Value = Currency;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an ISO 4217 currency code")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Currency, E> {
        Currency::from_code(value)
            .ok_or_else(|| E::custom(format_args!("unknown currency {value:?}")))
    }
}

/// ISO 4217 List One, active codes with a numeric minor unit, sorted by code.
static TABLE: &[(&str, u32)] = &[
    ("AED", 2), // UAE Dirham
    ("AFN", 2), // Afghani
    ("ALL", 2), // Lek
    ("AMD", 2), // Armenian Dram
    ("ANG", 2), // Netherlands Antillean Guilder (replaced by XCG in 2025)
    ("AOA", 2), // Kwanza
    ("ARS", 2), // Argentine Peso
    ("AUD", 2), // Australian Dollar
    ("AWG", 2), // Aruban Florin
    ("AZN", 2), // Azerbaijan Manat
    ("BAM", 2), // Convertible Mark
    ("BBD", 2), // Barbados Dollar
    ("BDT", 2), // Taka
    ("BHD", 3), // Bahraini Dinar
    ("BIF", 0), // Burundi Franc
    ("BMD", 2), // Bermudian Dollar
    ("BND", 2), // Brunei Dollar
    ("BOB", 2), // Boliviano
    ("BOV", 2), // Mvdol (fund)
    ("BRL", 2), // Brazilian Real
    ("BSD", 2), // Bahamian Dollar
    ("BTN", 2), // Ngultrum
    ("BWP", 2), // Pula
    ("BYN", 2), // Belarusian Ruble
    ("BZD", 2), // Belize Dollar
    ("CAD", 2), // Canadian Dollar
    ("CDF", 2), // Congolese Franc
    ("CHE", 2), // WIR Euro (fund)
    ("CHF", 2), // Swiss Franc
    ("CHW", 2), // WIR Franc (fund)
    ("CLF", 4), // Unidad de Fomento (fund)
    ("CLP", 0), // Chilean Peso
    ("CNY", 2), // Yuan Renminbi
    ("COP", 2), // Colombian Peso
    ("COU", 2), // Unidad de Valor Real (fund)
    ("CRC", 2), // Costa Rican Colon
    ("CUP", 2), // Cuban Peso
    ("CVE", 2), // Cabo Verde Escudo
    ("CZK", 2), // Czech Koruna
    ("DJF", 0), // Djibouti Franc
    ("DKK", 2), // Danish Krone
    ("DOP", 2), // Dominican Peso
    ("DZD", 2), // Algerian Dinar
    ("EGP", 2), // Egyptian Pound
    ("ERN", 2), // Nakfa
    ("ETB", 2), // Ethiopian Birr
    ("EUR", 2), // Euro
    ("FJD", 2), // Fiji Dollar
    ("FKP", 2), // Falkland Islands Pound
    ("GBP", 2), // Pound Sterling
    ("GEL", 2), // Lari
    ("GHS", 2), // Ghana Cedi
    ("GIP", 2), // Gibraltar Pound
    ("GMD", 2), // Dalasi
    ("GNF", 0), // Guinean Franc
    ("GTQ", 2), // Quetzal
    ("GYD", 2), // Guyana Dollar
    ("HKD", 2), // Hong Kong Dollar
    ("HNL", 2), // Lempira
    ("HTG", 2), // Gourde
    ("HUF", 2), // Forint
    ("IDR", 2), // Rupiah
    ("ILS", 2), // New Israeli Sheqel
    ("INR", 2), // Indian Rupee
    ("IQD", 3), // Iraqi Dinar
    ("IRR", 2), // Iranian Rial
    ("ISK", 0), // Iceland Krona
    ("JMD", 2), // Jamaican Dollar
    ("JOD", 3), // Jordanian Dinar
    ("JPY", 0), // Yen
    ("KES", 2), // Kenyan Shilling
    ("KGS", 2), // Som
    ("KHR", 2), // Riel
    ("KMF", 0), // Comorian Franc
    ("KPW", 2), // North Korean Won
    ("KRW", 0), // Won
    ("KWD", 3), // Kuwaiti Dinar
    ("KYD", 2), // Cayman Islands Dollar
    ("KZT", 2), // Tenge
    ("LAK", 2), // Lao Kip
    ("LBP", 2), // Lebanese Pound
    ("LKR", 2), // Sri Lanka Rupee
    ("LRD", 2), // Liberian Dollar
    ("LSL", 2), // Loti
    ("LYD", 3), // Libyan Dinar
    ("MAD", 2), // Moroccan Dirham
    ("MDL", 2), // Moldovan Leu
    ("MGA", 2), // Malagasy Ariary
    ("MKD", 2), // Denar
    ("MMK", 2), // Kyat
    ("MNT", 2), // Tugrik
    ("MOP", 2), // Pataca
    ("MRU", 2), // Ouguiya
    ("MUR", 2), // Mauritius Rupee
    ("MVR", 2), // Rufiyaa
    ("MWK", 2), // Malawi Kwacha
    ("MXN", 2), // Mexican Peso
    ("MXV", 2), // Mexican Unidad de Inversion (fund)
    ("MYR", 2), // Malaysian Ringgit
    ("MZN", 2), // Mozambique Metical
    ("NAD", 2), // Namibia Dollar
    ("NGN", 2), // Naira
    ("NIO", 2), // Cordoba Oro
    ("NOK", 2), // Norwegian Krone
    ("NPR", 2), // Nepalese Rupee
    ("NZD", 2), // New Zealand Dollar
    ("OMR", 3), // Rial Omani
    ("PAB", 2), // Balboa
    ("PEN", 2), // Sol
    ("PGK", 2), // Kina
    ("PHP", 2), // Philippine Peso
    ("PKR", 2), // Pakistan Rupee
    ("PLN", 2), // Zloty
    ("PYG", 0), // Guarani
    ("QAR", 2), // Qatari Rial
    ("RON", 2), // Romanian Leu
    ("RSD", 2), // Serbian Dinar
    ("RUB", 2), // Russian Ruble
    ("RWF", 0), // Rwanda Franc
    ("SAR", 2), // Saudi Riyal
    ("SBD", 2), // Solomon Islands Dollar
    ("SCR", 2), // Seychelles Rupee
    ("SDG", 2), // Sudanese Pound
    ("SEK", 2), // Swedish Krona
    ("SGD", 2), // Singapore Dollar
    ("SHP", 2), // Saint Helena Pound
    ("SLE", 2), // Leone (replaced SLL)
    ("SOS", 2), // Somali Shilling
    ("SRD", 2), // Surinam Dollar
    ("SSP", 2), // South Sudanese Pound
    ("STN", 2), // Dobra
    ("SVC", 2), // El Salvador Colon
    ("SYP", 2), // Syrian Pound
    ("SZL", 2), // Lilangeni
    ("THB", 2), // Baht
    ("TJS", 2), // Somoni
    ("TMT", 2), // Turkmenistan New Manat
    ("TND", 3), // Tunisian Dinar
    ("TOP", 2), // Pa'anga
    ("TRY", 2), // Turkish Lira
    ("TTD", 2), // Trinidad and Tobago Dollar
    ("TWD", 2), // New Taiwan Dollar
    ("TZS", 2), // Tanzanian Shilling
    ("UAH", 2), // Hryvnia
    ("UGX", 0), // Uganda Shilling
    ("USD", 2), // US Dollar
    ("USN", 2), // US Dollar (Next day) (fund)
    ("UYI", 0), // Uruguay Peso en Unidades Indexadas (fund)
    ("UYU", 2), // Peso Uruguayo
    ("UYW", 4), // Unidad Previsional
    ("UZS", 2), // Uzbekistan Sum
    ("VED", 2), // Bolivar Soberano (digital)
    ("VES", 2), // Bolivar Soberano
    ("VND", 0), // Dong
    ("VUV", 0), // Vatu
    ("WST", 2), // Tala
    ("XAD", 2), // Arab Accounting Dinar (fund, from May 2025)
    ("XAF", 0), // CFA Franc BEAC
    ("XCD", 2), // East Caribbean Dollar
    ("XCG", 2), // Caribbean Guilder (from 31 March 2025)
    ("XOF", 0), // CFA Franc BCEAO
    ("XPF", 0), // CFP Franc
    ("YER", 2), // Yemeni Rial
    ("ZAR", 2), // Rand
    ("ZMW", 2), // Zambian Kwacha
    ("ZWG", 2), // Zimbabwe Gold (replaced ZWL)
];

#[cfg(test)]
mod tests {
    use super::*;

    fn minor_unit_of(code: &str) -> u32 {
        Currency::from_code(code)
            .unwrap_or_else(|| panic!("{code} should be known"))
            .minor_unit()
    }

    #[test]
    fn the_table_is_strictly_sorted_so_it_has_no_duplicates() {
        for pair in TABLE.windows(2) {
            assert!(
                pair[0].0 < pair[1].0,
                "{} must sort strictly before {}",
                pair[0].0,
                pair[1].0
            );
        }
    }

    #[test]
    fn every_code_is_three_uppercase_ascii_letters() {
        for &(code, _) in TABLE {
            assert_eq!(code.len(), 3, "{code:?}");
            assert!(code.bytes().all(|b| b.is_ascii_uppercase()), "{code:?}");
        }
    }

    #[test]
    fn every_minor_unit_is_between_zero_and_four() {
        for &(code, minor_unit) in TABLE {
            assert!(minor_unit <= 4, "{code} has minor unit {minor_unit}");
        }
    }

    #[test]
    fn well_known_currencies_have_their_iso_minor_units() {
        let expected = [
            ("CNY", 2),
            ("JPY", 0),
            ("KRW", 0),
            ("BHD", 3),
            ("KWD", 3),
            ("CLF", 4),
            ("USD", 2),
            ("EUR", 2),
            ("VND", 0),
            ("ISK", 0),
            ("UYW", 4),
            ("UYI", 0),
            ("XOF", 0),
            ("TND", 3),
        ];
        for (code, minor_unit) in expected {
            assert_eq!(minor_unit_of(code), minor_unit, "{code}");
        }
    }

    #[test]
    fn recent_replacements_and_fund_codes_are_known() {
        for code in [
            "VES", "VED", "SLE", "ZWG", "MRU", "STN", "XCG", "ANG", "BOV", "CHE", "CHW", "COU",
            "MXV", "USN",
        ] {
            assert!(
                Currency::from_code(code).is_some(),
                "{code} should be known"
            );
        }
    }

    #[test]
    fn withdrawn_codes_are_rejected() {
        for code in [
            "HRK", "SLL", "ZWL", "CUC", "VEF", "MRO", "STD", "LTL", "BYR", "BGN",
        ] {
            assert_eq!(Currency::from_code(code), None, "{code} is withdrawn");
        }
    }

    #[test]
    fn codes_without_a_minor_unit_are_rejected() {
        for code in [
            "XAU", "XAG", "XPT", "XPD", "XDR", "XSU", "XUA", "XTS", "XXX", "XBA", "XBB", "XBC",
            "XBD",
        ] {
            assert_eq!(Currency::from_code(code), None, "{code} has no minor unit");
        }
    }

    #[test]
    fn lookup_is_case_sensitive_so_lowercase_is_rejected() {
        assert!(Currency::from_code("CNY").is_some());
        assert_eq!(Currency::from_code("cny"), None);
        assert_eq!(Currency::from_code("Cny"), None);
    }

    #[test]
    fn unknown_and_malformed_codes_are_rejected() {
        for code in [
            "",
            "US",
            "USDD",
            "ABC",
            "QQQ",
            " USD",
            "USD ",
            "U$D",
            "ＵＳＤ",
        ] {
            assert_eq!(Currency::from_code(code), None, "{code:?}");
        }
    }

    #[test]
    fn all_yields_the_whole_table_in_order_and_each_entry_looks_itself_up() {
        let all: Vec<Currency> = Currency::all().collect();
        assert_eq!(all.len(), TABLE.len());
        assert!(all.windows(2).all(|pair| pair[0] < pair[1]));
        for currency in all {
            assert_eq!(Currency::from_code(currency.code()), Some(currency));
        }
    }

    #[test]
    fn display_writes_the_code() {
        let cny = Currency::from_code("CNY").unwrap();
        assert_eq!(cny.to_string(), "CNY");
        assert_eq!(format!("{cny}"), "CNY");
    }

    #[test]
    fn serde_round_trips_through_the_code_string() {
        for currency in Currency::all() {
            let json = serde_json::to_string(&currency).unwrap();
            assert_eq!(json, format!("\"{}\"", currency.code()));
            let back: Currency = serde_json::from_str(&json).unwrap();
            assert_eq!(back, currency);
        }
        let owned: Currency = serde_json::from_value(serde_json::json!("KWD")).unwrap();
        assert_eq!(owned.minor_unit(), 3);
    }

    #[test]
    fn serde_rejects_unknown_codes_with_unknown_currency() {
        for json in ["\"XYZ\"", "\"usd\"", "\"XAU\"", "\"\""] {
            let err = serde_json::from_str::<Currency>(json).unwrap_err();
            assert!(
                err.to_string().contains("unknown currency"),
                "{json}: {err}"
            );
        }
    }

    #[test]
    fn serde_rejects_values_that_are_not_strings() {
        assert!(serde_json::from_str::<Currency>("840").is_err());
        assert!(serde_json::from_str::<Currency>("null").is_err());
        assert!(serde_json::from_str::<Currency>("{\"code\":\"USD\"}").is_err());
    }
}
