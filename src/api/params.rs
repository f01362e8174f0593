//! Parsing of request input: JSON bodies (unknown fields refused, amounts exact) and query
//! strings (bad paging or times refused, never clamped).

use std::collections::HashMap;

use axum::body::Bytes;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use super::error::ApiError;

/// Parses a JSON body into a request type that denies unknown fields.
pub fn json<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::BadRequest(
            "request body is empty; expected a JSON object".into(),
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::BadRequest(format!(
            "invalid JSON body: {}",
            without_values(&e.to_string())
        ))
    })
}

/// serde's "invalid type" and "invalid value" messages quote the value the client sent
/// (`string "4111 1111 1111 1111"`, ``integer `4111111111111111` ``), which may be a card
/// number or a name sent in the wrong place; error bodies (and the idempotent replays stored
/// from them) must never carry payer data (SPEC §7). Keep the kind, drop the value.
fn without_values(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: "] {
        let Some(rest) = message.strip_prefix(prefix) else {
            continue;
        };
        // The last ", expected" is serde's own: a quoted value comes before it.
        let Some(at) = rest.rfind(", expected") else {
            return format!("{prefix}value");
        };
        let kind = rest[..at].split(['`', '"']).next().unwrap_or("").trim();
        let kind = if kind.is_empty() { "value" } else { kind };
        return format!("{prefix}{kind}{}", &rest[at..]);
    }
    message.to_owned()
}

/// An amount as the client sent it: a JSON number or a string, kept as exact text (a JSON
/// number never passes through a float).
#[derive(Debug, Clone, PartialEq)]
pub struct AmountText(pub String);

impl<'de> Deserialize<'de> for AmountText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw: Box<serde_json::value::RawValue> = Deserialize::deserialize(d)?;
        let text = raw.get();
        if text.starts_with('"') {
            let s: String = serde_json::from_str(text).map_err(serde::de::Error::custom)?;
            // An exact decimal string (SPEC §5), as the OpenAPI document states it: digits
            // and an optional fraction, no sign, exponent, spaces or leading zeros.
            if !plain_decimal(&s) {
                return Err(serde::de::Error::custom(
                    "amount must be a decimal string such as \"100.00\"",
                ));
            }
            Ok(AmountText(s))
        } else if text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
            Ok(AmountText(text.to_owned()))
        } else {
            Err(serde::de::Error::custom(
                "amount must be a number or a decimal string",
            ))
        }
    }
}

/// `^(0|[1-9][0-9]*)(\.[0-9]+)?$`: how an amount is written as a string.
fn plain_decimal(s: &str) -> bool {
    let (int, fraction) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    digits(int) && (int == "0" || !int.starts_with('0')) && fraction.is_none_or(digits)
}

/// A query string as name → value; a repeated name is refused.
pub struct Query(HashMap<String, String>);

impl Query {
    pub fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Query, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
            .map_err(|_| ApiError::BadRequest("malformed query string".into()))?;
        let mut map = HashMap::new();
        for (k, v) in pairs {
            if !allowed.contains(&k.as_str()) {
                return Err(ApiError::BadRequest(format!(
                    "unknown query parameter {k:?}"
                )));
            }
            if v.chars().any(char::is_control) {
                return Err(ApiError::BadRequest(format!(
                    "query parameter {k:?} must not contain control characters"
                )));
            }
            if map.insert(k.clone(), v).is_some() {
                return Err(ApiError::BadRequest(format!(
                    "query parameter {k:?} given twice"
                )));
            }
        }
        Ok(Query(map))
    }

    pub fn text(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// A non-empty text filter; an empty value counts as absent.
    pub fn filter(&self, name: &str) -> Option<String> {
        self.text(name).filter(|v| !v.is_empty()).map(str::to_owned)
    }

    pub fn int(&self, name: &str, default: i64, min: i64, max: i64) -> Result<i64, ApiError> {
        match self.text(name) {
            None => Ok(default),
            Some(v) => match v.parse::<i64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::BadRequest(format!(
                    "{name} must be an integer from {min} to {max}"
                ))),
            },
        }
    }

    pub fn time(&self, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
        match self.text(name) {
            None | Some("") => Ok(None),
            Some(v) => parse_time(v)
                .map(Some)
                .ok_or_else(|| ApiError::BadRequest(format!("{name} must be an RFC 3339 time"))),
        }
    }

    /// `min_position` on any GET.
    pub fn min_position(&self) -> Result<Option<i64>, ApiError> {
        match self.text("min_position") {
            None => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .map(Some)
                .ok_or_else(|| {
                    ApiError::BadRequest("min_position must be a non-negative integer".into())
                }),
        }
    }
}

/// RFC 3339 (with offset), or a date-time without offset taken as UTC.
pub fn parse_time(v: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Some(t.with_timezone(&Utc));
    }
    chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|n| n.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct A {
        amount: AmountText,
    }

    #[test]
    fn amounts_keep_their_exact_text_from_numbers_and_strings() {
        let a: A = serde_json::from_str(r#"{"amount": 100.10}"#).unwrap();
        assert_eq!(a.amount.0, "100.10");
        let a: A = serde_json::from_str(r#"{"amount": "0.30"}"#).unwrap();
        assert_eq!(a.amount.0, "0.30");
        let a: A = serde_json::from_str(r#"{"amount": 1e2}"#).unwrap();
        assert_eq!(a.amount.0, "1e2");
        for spelled in [
            r#""1e2""#,
            r#"" 1.00""#,
            r#""+1""#,
            r#""01.00""#,
            r#""1.""#,
            r#"".5""#,
        ] {
            assert!(
                serde_json::from_str::<A>(&format!(r#"{{"amount": {spelled}}}"#)).is_err(),
                "{spelled}"
            );
        }
        assert!(serde_json::from_str::<A>(r#"{"amount": true}"#).is_err());
        assert!(serde_json::from_str::<A>(r#"{"amount": null}"#).is_err());
    }

    #[test]
    fn body_errors_name_the_kind_of_a_wrong_value_never_the_value() {
        #[derive(Deserialize)]
        #[allow(dead_code)]
        struct P {
            payer: Option<A>,
        }
        for (body, kind) in [
            (r#"{"payer": "4111 1111 1111 1111"}"#, "string"),
            (r#"{"payer": 4111111111111111}"#, "integer"),
            (r#"{"payer": "a, expected x"}"#, "string"),
        ] {
            let Err(ApiError::BadRequest(m)) = json::<P>(&Bytes::from(body)) else {
                panic!("{body} must be refused");
            };
            assert!(!m.contains("4111") && !m.contains("a, expected"), "{m}");
            assert!(
                m.contains(&format!("invalid type: {kind}, expected")),
                "{m}"
            );
        }
    }

    #[test]
    fn repeated_and_unknown_query_parameters_are_refused() {
        assert!(Query::parse(Some("page=1&page=2"), &["page"]).is_err());
        assert!(Query::parse(Some("pgae=1"), &["page"]).is_err());
        let q = Query::parse(Some("page=2"), &["page", "size"]).unwrap();
        assert_eq!(q.int("page", 1, 1, 100).unwrap(), 2);
        assert_eq!(q.int("size", 10, 1, 100).unwrap(), 10);
        let q = Query::parse(Some("size=0"), &["size"]).unwrap();
        assert!(q.int("size", 10, 1, 100).is_err());
    }
}
