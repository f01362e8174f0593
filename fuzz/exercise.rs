//! The parser workout shared by the fuzz target (`fuzz_targets/parsers.rs`) and the
//! property test (`tests/parsers_props.rs`): feeds one input to every request parser and
//! checks what each promises. It must never panic on any input; every `assert!` here is an
//! invariant of the parser, not a statement about the input.

use ledger::api::params::{parse_time, AmountText, Query};
use ledger::domain::money::{format_amount, parse_decimal};
use ledger::domain::{Currency, Money, PaymentMethod, PaymentStatus};
use ledger::signing;
use ledger::store::sealing as payer;

/// Currencies with 0, 2 and 3 decimal places.
const CURRENCIES: [&str; 4] = ["JPY", "CNY", "USD", "BHD"];

#[derive(serde::Deserialize)]
struct AmountBody {
    #[allow(dead_code)]
    amount: AmountText,
}

pub fn parsers(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let text = text.as_ref();

    // Amounts: exact, positive, within the currency's scale, and rendering round-trips.
    if parse_decimal(text).is_ok() {
        for code in CURRENCIES {
            let currency = Currency::from_code(code).expect("a listed currency");
            if let Ok(money) = Money::parse(text, currency) {
                assert!(money.amount() > rust_decimal::Decimal::ZERO);
                let shown = format_amount(money.amount(), currency);
                let again = Money::parse(&shown, currency).expect("a rendered amount parses");
                assert_eq!(again, money, "{text:?} rendered as {shown:?}");
            }
        }
    }
    // An amount field as a JSON number or string: never a panic, whatever the text.
    let _ = serde_json::from_str::<AmountBody>(&format!("{{\"amount\": {text}}}"));
    let _ = serde_json::from_slice::<AmountBody>(data);

    // Codes and names: whatever parses renders back to itself.
    if let Some(c) = Currency::from_code(text) {
        assert_eq!(Currency::from_code(c.code()), Some(c));
    }
    if let Some(m) = PaymentMethod::parse(text) {
        assert_eq!(PaymentMethod::parse(m.name()), Some(m));
    }
    if let Some(s) = PaymentStatus::parse(text) {
        assert_eq!(PaymentStatus::parse(s.name()), Some(s));
    }

    // Query strings: accepted values are within their bounds.
    if let Ok(q) = Query::parse(
        Some(text),
        &[
            "page",
            "size",
            "status",
            "start_time",
            "end_time",
            "min_position",
        ],
    ) {
        if let Ok(page) = q.int("page", 1, 1, i64::MAX) {
            assert!(page >= 1);
        }
        if let Ok(size) = q.int("size", 10, 1, 100) {
            assert!((1..=100).contains(&size));
        }
        if let Ok(Some(p)) = q.min_position() {
            assert!(p >= 0);
        }
        let _ = q.time("start_time");
        let _ = q.filter("status");
    }
    let _ = parse_time(text);

    // Signature headers: the fields are split from the input; only the right signature
    // verifies, and a malformed one is simply false.
    let mut parts = text.splitn(6, '\n');
    let timestamp = parts.next().unwrap_or("");
    let nonce = parts.next().unwrap_or("");
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("");
    let signature = parts.next().unwrap_or("");
    let body = parts.next().unwrap_or("").as_bytes();
    let right = signing::sign("fuzz-secret", timestamp, nonce, method, target, body);
    assert!(signing::verify(
        "fuzz-secret",
        timestamp,
        nonce,
        method,
        target,
        body,
        &right
    ));
    let verified = signing::verify(
        "fuzz-secret",
        timestamp,
        nonce,
        method,
        target,
        body,
        signature,
    );
    assert_eq!(verified, signature.eq_ignore_ascii_case(&right));
    if signing::valid_nonce(nonce) {
        assert!((16..=64).contains(&nonce.len()));
    }

    // Accept-Language, from raw header bytes.
    if let Ok(value) = http::HeaderValue::from_bytes(data) {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::ACCEPT_LANGUAGE, value);
        let _ = ledger::api::envelope::parse_accept_language(&headers);
    }

    // Payer data: a card number passes Luhn only if it looks like one, and masks never show
    // more than the last four characters of an account.
    if payer::luhn_valid(text) {
        assert!(payer::looks_like_card_number(text));
    }
    let masked = payer::mask_account(text);
    let shown: String = masked.chars().filter(|c| *c != '*').collect();
    assert!(shown.chars().count() <= 4, "{text:?} masked as {masked:?}");
    let _ = payer::mask_name(text);
}
