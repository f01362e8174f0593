//! Hostile input (SPEC §5 "Errors", §11 "Limits"): property tests that throw arbitrary JSON
//! bodies, query strings and header values at the POST endpoints (create, refund, notify) and
//! at the list and history GETs. Every request is correctly signed, so it reaches the parser,
//! and every invalid one must be answered 4xx (never 5xx, never a signature failure) with the
//! error envelope (non-zero code, data null) and leave the event log unchanged.
//!
//! How many inputs are tried: each property runs `CASES` = 64 generated cases against one
//! service shared by its cases (a failing case is then shrunk, which tries more). There are
//! seven properties, so a passing run sends 7 × 64 = 448 generated requests, plus the
//! deterministic cases of the tests at the end. Every test asserts that its property really
//! ran at least `CASES` cases.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::common::{data, TestApp};
use ledger::signing;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};
use uuid::Uuid;

/// Generated cases per property.
const CASES: u32 = 64;

// ---------------------------------------------------------------------------------------
// running properties against a live service
// ---------------------------------------------------------------------------------------

/// Runs `test` over `CASES` inputs of `strategy` on the current (multi-thread) runtime and
/// returns how many inputs were tried (including shrinking, if a case failed).
fn run_property<S, F, Fut>(strategy: S, test: F) -> usize
where
    S: Strategy,
    S::Value: Clone,
    F: Fn(S::Value) -> Fut,
    Fut: std::future::Future<Output = Result<(), TestCaseError>>,
{
    let handle = tokio::runtime::Handle::current();
    let tried = AtomicUsize::new(0);
    let config = Config {
        cases: CASES,
        failure_persistence: None,
        max_shrink_iters: 256,
        max_global_rejects: 4096,
        ..Config::default()
    };
    let result = tokio::task::block_in_place(|| {
        TestRunner::new(config).run(&strategy, |input| {
            tried.fetch_add(1, Ordering::SeqCst);
            handle.block_on(test(input))
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    tried.into_inner()
}

/// Bytes that print as (lossy) text when a case fails.
#[derive(Clone)]
struct Body(Vec<u8>);

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

/// Header values as raw bytes.
#[derive(Clone)]
struct Header(&'static str, Vec<u8>);

impl fmt::Debug for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {:?}", self.0, String::from_utf8_lossy(&self.1))
    }
}

struct Reply {
    status: u16,
    body: Value,
}

/// Sends a correctly signed request. The request target is signed exactly as the HTTP client
/// puts it on the request line.
async fn send_signed(
    app: &TestApp,
    key: (&str, &str),
    method: &str,
    target: &str,
    body: &[u8],
    headers: &[Header],
) -> Result<Reply, TestCaseError> {
    let url = reqwest::Url::parse(&format!("{}{}", app.base, target))
        .map_err(|e| TestCaseError::fail(format!("test built a bad URL {target:?}: {e}")))?;
    let sent = match url.query() {
        Some(q) => format!("{}?{}", url.path(), q),
        None => url.path().to_owned(),
    };
    let ts = chrono::Utc::now().timestamp().to_string();
    let nonce = signing::new_nonce();
    let sig = signing::sign(key.1, &ts, &nonce, method, &sent, body);
    let mut req = reqwest::Client::new()
        .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url)
        .header("x-key-id", key.0)
        .header("x-timestamp", ts)
        .header("x-nonce", nonce)
        .header("x-signature", sig);
    for Header(name, value) in headers {
        let value = reqwest::header::HeaderValue::from_bytes(value)
            .map_err(|e| TestCaseError::fail(format!("test built a bad header value: {e}")))?;
        req = req.header(*name, value);
    }
    if !body.is_empty() {
        req = req.body(body.to_vec());
    }
    let resp = req
        .send()
        .await
        .map_err(|e| TestCaseError::fail(format!("request failed: {e}")))?;
    let status = resp.status().as_u16();
    let text = resp
        .text()
        .await
        .map_err(|e| TestCaseError::fail(format!("body unreadable: {e}")))?;
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok(Reply { status, body })
}

/// An error envelope: `{code: non-zero, message: text, data: null}`.
fn check_error_envelope(r: &Reply) -> Result<(), TestCaseError> {
    prop_assert!(
        r.body["code"].as_u64().is_some_and(|c| c != 0),
        "error without a non-zero code: {} {}",
        r.status,
        r.body
    );
    prop_assert!(
        r.body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "no message: {}",
        r.body
    );
    prop_assert!(
        r.body.get("data").is_some_and(Value::is_null),
        "error data must be null: {}",
        r.body
    );
    Ok(())
}

/// A refused input: 4xx that is not a signature failure, the envelope, and nothing appended.
fn check_refused(r: &Reply, events_before: i64, events_after: i64) -> Result<(), TestCaseError> {
    prop_assert!(
        (400..500).contains(&r.status) && r.status != 401,
        "expected a 4xx refusal from the parser, got {} {}",
        r.status,
        r.body
    );
    check_error_envelope(r)?;
    prop_assert_eq!(
        events_before,
        events_after,
        "a refused request appended events"
    );
    Ok(())
}

/// Waits (bounded) until no refund is still being processed in the background.
async fn quiesce(app: &TestApp) {
    let started = std::time::Instant::now();
    loop {
        let processing: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM payment_refunds WHERE status = 0")
                .fetch_one(&app.pool().await)
                .await
                .expect("count processing refunds");
        if processing == 0 {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "refunds never settled"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    app.settle().await;
}

async fn event_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM events")
        .fetch_one(&app.pool().await)
        .await
        .expect("count events")
}

const CLIENT: (&str, &str) = ("t-client", "client-secret-1");
const OPERATOR: (&str, &str) = ("t-operator", "operator-secret-1");
const AUDITOR: (&str, &str) = ("t-auditor", "auditor-secret-1");
const ALIPAY: (&str, &str) = ("alipay", "alipay-secret-1");

// ---------------------------------------------------------------------------------------
// strategies
// ---------------------------------------------------------------------------------------

/// Arbitrary text: any unicode, control characters, NUL, emoji, very long, SQL-ish.
fn junk_string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => ".{0,40}",
        1 => "\\PC{100,400}",
        1 => "[\\x00-\\x1f\\x7f]{1,8}",
        2 => ".{0,8}\\x00.{0,8}",
        1 => Just("\u{0}".to_owned()),
        1 => Just("💸".repeat(70)),
        1 => Just("\u{202e}\u{2028}\u{feff}\u{fffd}".to_owned()),
        1 => Just("'; DROP TABLE events; --".to_owned()),
        1 => Just("{\"nested\": true}".to_owned()),
    ]
}

/// Arbitrary JSON: scalars, strings of junk, nested arrays and objects with junk keys.
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        junk_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(junk_string(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// JSON number literals no amount may be: huge, negative, zero, over-scaled, out of range.
fn bad_number_literal() -> impl Strategy<Value = String> {
    prop_oneof![
        "[1-9][0-9]{13,400}",
        "-[1-9][0-9]{0,400}(\\.[0-9]{1,5})?",
        "[1-9]e[1-9][0-9]{4,8}",
        "[1-9]e-[1-9][0-9]{4,8}",
        "[1-9]E\\+(1[3-9]|[2-9][0-9]|[1-9][0-9]{2,5})",
        "0\\.0[0-9]{1,60}[1-9]",
        "[1-9][0-9]{0,5}\\.[0-9]{2}[1-9]",
        Just("0".to_owned()),
        Just("-0".to_owned()),
        Just("0.00".to_owned()),
        Just("0e10".to_owned()),
        Just("1000000000000.01".to_owned()),
    ]
}

/// Whether text might be a valid amount (a positive number in range); such text is left out
/// of the "bad amount" strategies rather than guessed at.
fn plausible_amount(s: &str) -> bool {
    s.trim()
        .parse::<f64>()
        .is_ok_and(|f| f.is_finite() && f > 0.0 && f <= 1e12)
}

/// Raw JSON text of a value that is never a valid amount.
fn bad_amount() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => bad_number_literal(),
        2 => bad_number_literal().prop_map(|n| Value::String(n).to_string()),
        2 => junk_string().prop_filter("not a plausible amount", |s| !plausible_amount(s)).prop_map(|s| Value::String(s).to_string()),
        2 => not_string_or_number(),
    ]
}

/// Raw JSON text of values that are neither strings nor numbers.
fn not_string_or_number() -> impl Strategy<Value = String> {
    arb_json()
        .prop_filter("neither string nor number", |v| {
            !v.is_string() && !v.is_number()
        })
        .prop_map(|v| v.to_string())
}

/// Raw JSON text of a value of the wrong type for a string field (including huge numbers).
fn not_a_string() -> impl Strategy<Value = String> {
    prop_oneof![
        arb_json()
            .prop_filter("not a string", |v| !v.is_string())
            .prop_map(|v| v.to_string()),
        bad_number_literal(),
        "[1-9][0-9]{20,60}",
    ]
}

/// Raw JSON text for an `order_id` / `user_id` that breaks the limits (1–64 printable).
fn bad_id_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\"\"".to_owned()),
        "[a-zA-Z0-9]{65,200}".prop_map(|s| Value::String(s).to_string()),
        ("[a-z]{0,10}", "[\\x00-\\x1f\\x7f]", "[a-z]{0,10}")
            .prop_map(|(a, c, b)| Value::String(format!("{a}{c}{b}")).to_string()),
        not_a_string(),
    ]
}

fn bad_currency() -> impl Strategy<Value = String> {
    prop_oneof![
        junk_string()
            .prop_filter("not an upper-case three-letter code", |s| !(s.len() == 3
                && s.bytes().all(|b| b.is_ascii_uppercase())))
            .prop_map(|s| Value::String(s).to_string()),
        prop::sample::select(vec!["cny", "Cny", "usd", "XXX", "XTS", "ZZZ", "RMB", "CNH"])
            .prop_map(|s| format!("\"{s}\"")),
        not_a_string(),
    ]
}

fn bad_method() -> impl Strategy<Value = String> {
    prop_oneof![
        junk_string()
            .prop_filter("not a method", |s| ![
                "alipay",
                "wechat",
                "bank",
                "credit_card"
            ]
            .contains(&s.as_str()))
            .prop_map(|s| Value::String(s).to_string()),
        prop::sample::select(vec![
            "ALIPAY",
            "Alipay",
            " alipay",
            "paypal",
            "card",
            "credit-card"
        ])
        .prop_map(|s| format!("\"{s}\"")),
        not_a_string(),
    ]
}

fn bad_payer() -> impl Strategy<Value = String> {
    prop_oneof![
        arb_json()
            .prop_filter("not an object or null", |v| !v.is_object() && !v.is_null())
            .prop_map(|v| v.to_string()),
        (
            junk_string().prop_filter("unknown key", |k| k != "name" && k != "account"),
            arb_json()
        )
            .prop_map(|(k, v)| json!({ k: v }).to_string()),
        not_a_string().prop_map(|v| format!("{{\"name\": {v}}}")),
        not_a_string().prop_map(|v| format!("{{\"account\": {v}}}")),
        Just(json!({"name": ""}).to_string()),
        "\\PC{101,200}".prop_map(|s| json!({ "name": s }).to_string()),
        "[0-9]{65,100}".prop_map(|s| json!({ "account": s }).to_string()),
        ("[a-z]{0,5}", "[\\x00-\\x1f]")
            .prop_map(|(a, c)| json!({ "name": format!("{a}{c}") }).to_string()),
    ]
}

/// A JSON object body from (name, raw JSON value text) fields.
fn object_text(fields: &[(String, String)]) -> String {
    let inner: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}: {v}", Value::String(k.clone())))
        .collect();
    format!("{{{}}}", inner.join(", "))
}

fn valid_create_fields() -> Vec<(String, String)> {
    let order = format!("ORD-{}", Uuid::new_v4().simple());
    vec![
        ("amount".into(), "\"10.00\"".into()),
        ("currency".into(), "\"CNY\"".into()),
        ("payment_method".into(), "\"alipay\"".into()),
        ("order_id".into(), Value::String(order).to_string()),
        ("user_id".into(), "\"user-1\"".into()),
    ]
}

/// Bodies that are not JSON objects at all, or not JSON: random bytes, deep nesting, junk.
fn not_an_object_body() -> impl Strategy<Value = Body> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512).prop_map(Body),
        arb_json()
            .prop_filter("not an object", |v| !v.is_object())
            .prop_map(|v| Body(v.to_string().into_bytes())),
        (129usize..5000)
            .prop_map(|n| Body(format!("{}{}", "[".repeat(n), "]".repeat(n)).into_bytes())),
        (129usize..5000)
            .prop_map(|n| Body(format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n)).into_bytes())),
        junk_string().prop_map(|s| Body(s.into_bytes())),
        Just(Body(b"{\"amount\": \"10.00\",".to_vec())),
        Just(Body(b"\xef\xbb\xbf{}".to_vec())),
    ]
}

/// Generic ways to break an object body made of `fields`, given bad values per field.
fn broken_object(
    fields: Vec<(String, String)>,
    required: &'static [&'static str],
    allowed: &'static [&'static str],
    bad_value: BoxedStrategy<(usize, String)>,
) -> impl Strategy<Value = Body> {
    let n = fields.len();
    let f1 = fields.clone();
    let f2 = fields.clone();
    let f3 = fields.clone();
    let f4 = fields;
    prop_oneof![
        // one field with a value invalid for it
        4 => bad_value.prop_map(move |(i, v)| {
            let mut f = f1.clone();
            f[i].1 = v;
            Body(object_text(&f).into_bytes())
        }),
        // an unknown field
        2 => (junk_string().prop_filter("unknown", move |k| !allowed.contains(&k.as_str())), arb_json(), 0..=n)
            .prop_map(move |(k, v, at)| {
                let mut f = f2.clone();
                f.insert(at, (k, v.to_string()));
                Body(object_text(&f).into_bytes())
            }),
        // a required field missing
        2 => prop::sample::select(required.to_vec()).prop_map(move |missing| {
            let f: Vec<_> = f3.iter().filter(|(k, _)| k != missing).cloned().collect();
            Body(object_text(&f).into_bytes())
        }),
        // random keys and values only
        1 => prop::collection::btree_map(junk_string(), arb_json(), 0..8)
            .prop_filter("lacks a required field", move |m| required.iter().any(|r| !m.contains_key(*r)))
            .prop_map(|m| Body(Value::Object(m.into_iter().collect()).to_string().into_bytes())),
        // a truncated body
        1 => (1usize..64).prop_map(move |cut| {
            let text = object_text(&f4);
            Body(text.as_bytes()[..text.len().saturating_sub(cut).max(1)].to_vec())
        }),
        2 => not_an_object_body(),
    ]
}

const CREATE_REQUIRED: &[&str] = &[
    "amount",
    "currency",
    "payment_method",
    "order_id",
    "user_id",
];
const CREATE_ALLOWED: &[&str] = &[
    "amount",
    "currency",
    "payment_method",
    "order_id",
    "user_id",
    "payer",
];

fn invalid_create_body() -> impl Strategy<Value = Body> {
    let mut fields = valid_create_fields();
    fields.push((
        "payer".into(),
        json!({"name": "张三", "account": "4111111111111111"}).to_string(),
    ));
    let bad = prop_oneof![
        bad_amount().prop_map(|v| (0usize, v)),
        bad_currency().prop_map(|v| (1usize, v)),
        bad_method().prop_map(|v| (2usize, v)),
        bad_id_text().prop_map(|v| (3usize, v)),
        bad_id_text().prop_map(|v| (4usize, v)),
        bad_payer().prop_map(|v| (5usize, v)),
    ]
    .boxed();
    broken_object(fields, CREATE_REQUIRED, CREATE_ALLOWED, bad)
}

const REFUND_FIELDS: &[&str] = &["amount", "reason"];

fn invalid_refund_body() -> impl Strategy<Value = Body> {
    let fields = vec![
        ("amount".to_owned(), "\"1.00\"".to_owned()),
        ("reason".to_owned(), "\"hostile\"".to_owned()),
    ];
    let bad = prop_oneof![
        bad_amount().prop_map(|v| (0usize, v)),
        // more than was paid (100.00): a 409, still nothing appended
        "(10[0-9]\\.[0-9][1-9]|[2-9][0-9]{2,8})".prop_map(|v| (0usize, format!("\"{v}\""))),
        Just((1usize, "\"\"".to_owned())),
        "\\PC{256,300}".prop_map(|s| (1usize, Value::String(s).to_string())),
        ("[a-z]{0,10}", "[\\x00-\\x1f\\x7f]", "[a-z]{0,10}")
            .prop_map(|(a, c, b)| (1usize, Value::String(format!("{a}{c}{b}")).to_string())),
        not_a_string().prop_map(|v| (1usize, v)),
    ]
    .boxed();
    broken_object(fields, REFUND_FIELDS, REFUND_FIELDS, bad)
}

const NOTIFY_REQUIRED: &[&str] = &[
    "payment_no",
    "callback_no",
    "status",
    "amount",
    "gateway_trade_no",
];
const NOTIFY_ALLOWED: &[&str] = &[
    "payment_no",
    "callback_no",
    "status",
    "amount",
    "gateway_trade_no",
    "paid_at",
    "refund_no",
];

fn notify_fields(payment_no: &str) -> Vec<(String, String)> {
    vec![
        (
            "payment_no".into(),
            Value::String(payment_no.to_owned()).to_string(),
        ),
        (
            "callback_no".into(),
            Value::String(format!("CB{}", Uuid::new_v4().simple())).to_string(),
        ),
        ("status".into(), "\"success\"".into()),
        ("amount".into(), "\"77.00\"".into()),
        ("gateway_trade_no".into(), "\"T-hostile\"".into()),
        ("paid_at".into(), "\"2024-01-01T00:00:00Z\"".into()),
    ]
}

/// Junk amounts that are not decimal numbers at all (out-of-range decimals are covered by
/// `notification_amounts_that_no_payment_can_have_are_400`).
fn undecimal_amount() -> impl Strategy<Value = String> {
    prop_oneof![
        junk_string()
            .prop_filter("not a number", |s| s.trim().parse::<f64>().is_err())
            .prop_map(|s| Value::String(s).to_string()),
        not_string_or_number(),
        "[1-9][0-9]{70,400}",
    ]
}

fn invalid_notify_body(payment_no: String) -> impl Strategy<Value = Body> {
    let bad = prop_oneof![
        not_a_string().prop_map(|v| (0usize, v)),
        Just((1usize, "\"\"".to_owned())),
        ("[a-z]{0,10}", "[\\x00-\\x1f\\x7f]", "[a-z]{0,10}")
            .prop_map(|(a, c, b)| (1usize, Value::String(format!("{a}{c}{b}")).to_string())),
        not_a_string().prop_map(|v| (1usize, v)),
        junk_string()
            .prop_filter("not a status", |s| s != "success" && s != "failed")
            .prop_map(|s| (2usize, Value::String(s).to_string())),
        not_a_string().prop_map(|v| (2usize, v)),
        undecimal_amount().prop_map(|v| (3usize, v)),
        not_a_string().prop_map(|v| (4usize, v)),
        Just((4usize, "\"\"".to_owned())),
        junk_string()
            .prop_filter("not a time", |s| chrono::DateTime::parse_from_rfc3339(s)
                .is_err())
            .prop_map(|s| (5usize, Value::String(s).to_string())),
        not_a_string()
            .prop_filter("not null", |v| v != "null")
            .prop_map(|v| (5usize, v)),
    ]
    .boxed();
    // An unknown payment_no: junk behind a prefix no issued payment_no has ("P" + 32 hex).
    let junk_payment_no = junk_string()
        .prop_map(|s| (0usize, Value::String(format!("~{s}")).to_string()))
        .boxed();
    let bad = prop_oneof![3 => bad, 2 => junk_payment_no].boxed();
    broken_object(
        notify_fields(&payment_no),
        NOTIFY_REQUIRED,
        NOTIFY_ALLOWED,
        bad,
    )
}

/// Percent-encodes everything but the unreserved characters, so that the HTTP client sends
/// the text as is.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn query_text(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn not_a_time() -> impl Strategy<Value = String> {
    prop_oneof![
        junk_string(),
        "[0-9:T+Z-]{1,30}",
        Just("2024-13-01T00:00:00Z".to_owned()),
        Just("2024-02-30T00:00:00Z".to_owned())
    ]
    .prop_filter("not a time", |s| {
        !s.is_empty()
            && chrono::DateTime::parse_from_rfc3339(s).is_err()
            && chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").is_err()
    })
}

fn not_a_status() -> impl Strategy<Value = String> {
    junk_string().prop_filter("not a status", |s| {
        !s.is_empty()
            && !["pending", "success", "failed", "refunded"].contains(&s.as_str())
            && s.parse::<i16>().map_or(true, |n| !(0..=3).contains(&n))
    })
}

/// One list parameter with a value SPEC §5/§11 says is a 400.
fn bad_list_param() -> impl Strategy<Value = (String, String)> {
    let p = |k: &'static str| move |v: String| (k.to_owned(), v);
    prop_oneof![
        prop_oneof![
            Just("0".to_owned()),
            "-[1-9][0-9]{0,5}",
            "[a-z]{1,5}",
            "[1-9]\\.[0-9]"
        ]
        .prop_map(p("page")),
        prop_oneof![
            Just("0".to_owned()),
            "10[1-9]",
            "[2-9][0-9]{2,5}",
            "-[1-9]",
            "[a-z]{1,5}",
            "[1-9]\\.5"
        ]
        .prop_map(p("size")),
        not_a_status().prop_map(p("status")),
        not_a_time().prop_map(p("start_time")),
        not_a_time().prop_map(p("end_time")),
        prop_oneof![Just("-1".to_owned()), "[a-z]{1,5}"].prop_map(p("min_position")),
    ]
}

/// Parameters with values that are fine.
fn good_list_param() -> impl Strategy<Value = (String, String)> {
    let p = |k: &'static str| move |v: String| (k.to_owned(), v);
    prop_oneof![
        "[1-9]".prop_map(p("page")),
        "[1-9][0-9]?".prop_map(p("size")),
        prop::sample::select(vec![
            "pending", "success", "failed", "refunded", "0", "1", "2", "3"
        ])
        .prop_map(|s| ("status".to_owned(), s.to_owned())),
        "[A-Za-z0-9-]{1,20}".prop_map(p("order_no")),
        "[A-Za-z0-9]{1,20}".prop_map(p("payment_no")),
    ]
}

fn invalid_list_query() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (prop::collection::vec(good_list_param(), 0..3), bad_list_param()).prop_map(|(mut good, bad)| {
            // A parameter given twice is ambiguous; keep the bad one alone.
            good.retain(|(k, _)| *k != bad.0);
            good.sort();
            good.dedup_by(|a, b| a.0 == b.0);
            good.push(bad);
            query_text(&good)
        }),
        1 => (2020i32..2030, 1u32..12).prop_map(|(y, m)| {
            query_text(&[
                ("start_time".into(), format!("{}-{:02}-01T00:00:00Z", y + 1, m)),
                ("end_time".into(), format!("{y}-{m:02}-01T00:00:00Z")),
            ])
        }),
    ]
}

/// A value for a list or history parameter: mostly one that makes sense for it, otherwise
/// junk (NUL, unicode, long text).
fn query_value(name: &'static str) -> BoxedStrategy<String> {
    let sensible: BoxedStrategy<String> = match name {
        "page" | "size" => "[0-9]{1,3}".boxed(),
        "status" => prop::sample::select(vec![
            "pending", "success", "failed", "refunded", "0", "1", "2", "3", "9", "paid", "",
        ])
        .prop_map(str::to_owned)
        .boxed(),
        "start_time" | "end_time" => (1970i32..9999, 1u32..=12, 1u32..=28, 0u32..24)
            .prop_map(|(y, m, d, h)| format!("{y:04}-{m:02}-{d:02}T{h:02}:00:00Z"))
            .boxed(),
        // At most the head of the log, so that no request waits for the bound.
        "min_position" => "[01]".boxed(),
        _ => "[A-Za-z0-9-]{0,20}".boxed(),
    };
    prop_oneof![3 => sensible, 1 => junk_string()].boxed()
}

/// Query strings of any shape for `path`: its own parameters with sensible or junk values
/// (each name at most once), sometimes an unknown name, a piece without `=`, stray `%`.
fn arbitrary_query(history: bool) -> impl Strategy<Value = String> {
    let names: &'static [&'static str] = if history {
        &["user_id", "page", "size", "min_position"]
    } else {
        &[
            "page",
            "size",
            "order_no",
            "payment_no",
            "status",
            "start_time",
            "end_time",
            "min_position",
        ]
    };
    // History requires user_id: always give it, so that the other parameters are reached.
    let known = prop::sample::subsequence(names.to_vec(), usize::from(history)..=names.len())
        .prop_map(move |mut chosen| {
            if history && !chosen.contains(&"user_id") {
                chosen[0] = "user_id";
            }
            chosen
        })
        .prop_flat_map(|chosen| {
            chosen
                .into_iter()
                .map(|n| query_value(n).prop_map(move |v| (n.to_owned(), v)))
                .collect::<Vec<_>>()
        });
    let extra = prop_oneof![
        8 => Just(String::new()),
        1 => (junk_string(), junk_string()).prop_map(|(k, v)| format!("{}={}", encode(&k), encode(&v))),
        1 => junk_string().prop_map(|s| encode(&s)),
        1 => Just("=".to_owned()),
        1 => "(%[0-9A-F]{2}){1,10}",
        1 => "%[G-Z]{2}|%[0-9]",
    ];
    (known, extra).prop_map(|(pairs, extra)| {
        let mut q = query_text(&pairs);
        if !extra.is_empty() {
            q = if q.is_empty() {
                extra
            } else {
                format!("{q}&{extra}")
            };
        }
        q
    })
}

fn header_value() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![8 => 0x20u8..0x7f, 2 => 0x80u8..=0xff, 1 => Just(b'\t')];
    prop_oneof![
        prop::collection::vec(byte, 0..300),
        "[ -~]{0,64}".prop_map(String::into_bytes),
        Just(Vec::new()),
        Just("zh-CN,zh;q=0.9".as_bytes().to_vec()),
        Just("application/x-www-form-urlencoded".as_bytes().to_vec()),
        Just(
            "1.2.3.4, ::1, not-an-ip, 999.999.999.999"
                .as_bytes()
                .to_vec()
        ),
        Just(Uuid::nil().to_string().into_bytes()),
    ]
}

fn hostile_headers() -> impl Strategy<Value = Vec<Header>> {
    let name = prop::sample::select(vec![
        "idempotency-key",
        "accept-language",
        "x-request-id",
        "x-correlation-id",
        "x-forwarded-for",
        "content-type",
        "user-agent",
        "x-real-ip",
        "accept",
    ]);
    prop::collection::vec((name, header_value()).prop_map(|(n, v)| Header(n, v)), 1..6)
}

// ---------------------------------------------------------------------------------------
// properties
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_create_bodies_are_refused_with_4xx_and_change_nothing() {
    let app = TestApp::spawn().await;
    let tried = run_property(invalid_create_body(), |body: Body| {
        let app = &app;
        async move {
            let before = event_count(app).await;
            let r =
                send_signed(app, CLIENT, "POST", "/api/v1/payments/create", &body.0, &[]).await?;
            check_refused(&r, before, event_count(app).await)
        }
    });
    assert!(tried >= CASES as usize, "only {tried} inputs tried");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_refund_bodies_are_refused_with_4xx_and_change_nothing() {
    let app = TestApp::spawn().await;
    let id = app.paid_payment("100.00").await;
    app.settle().await;
    let strategy = (
        invalid_refund_body(),
        prop_oneof![8 => Just(None), 1 => junk_string().prop_map(Some)],
    );
    let tried = run_property(strategy, |(body, path_id): (Body, Option<String>)| {
        let (app, id) = (&app, &id);
        async move {
            // Sometimes the payment id in the path is junk as well (then 404).
            let target = match &path_id {
                Some(junk) => format!("/api/v1/payments/x{}/refund", encode(junk)),
                None => format!("/api/v1/payments/{id}/refund"),
            };
            let before = event_count(app).await;
            let r = send_signed(app, OPERATOR, "POST", &target, &body.0, &[]).await?;
            check_refused(&r, before, event_count(app).await)
        }
    });
    assert!(tried >= CASES as usize, "only {tried} inputs tried");
    // Nothing got through: the payment has no refunds.
    let d = app
        .client("operator")
        .send("GET", &format!("/api/v1/payments/{id}"), None, &[])
        .await
        .unwrap();
    assert_eq!(data(&d)["refunds"], json!([]));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_notifications_are_refused_with_4xx_and_change_nothing() {
    let app = TestApp::spawn().await;
    let (id, no) = app
        .create_payment(
            "77.00",
            "CNY",
            "alipay",
            &format!("ORD-{}", Uuid::new_v4().simple()),
        )
        .await;
    let tried = run_property(invalid_notify_body(no), |body: Body| {
        let app = &app;
        async move {
            let before = event_count(app).await;
            let r = send_signed(
                app,
                ALIPAY,
                "POST",
                "/api/v1/gateways/alipay/notify",
                &body.0,
                &[],
            )
            .await?;
            check_refused(&r, before, event_count(app).await)
        }
    });
    assert!(tried >= CASES as usize, "only {tried} inputs tried");
    let d = app
        .client("operator")
        .send("GET", &format!("/api/v1/payments/{id}"), None, &[])
        .await
        .unwrap();
    assert_eq!(data(&d)["status"], "pending");
    assert_eq!(data(&d)["callbacks"], json!([]));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_list_queries_are_400() {
    let app = TestApp::spawn().await;
    app.create_payment("1.00", "CNY", "alipay", "ORD-list-1")
        .await;
    let tried = run_property(invalid_list_query(), |query: String| {
        let app = &app;
        async move {
            let before = event_count(app).await;
            let r = send_signed(
                app,
                AUDITOR,
                "GET",
                &format!("/api/v1/payments?{query}"),
                b"",
                &[],
            )
            .await?;
            prop_assert_eq!(r.status, 400, "query {:?}: {}", query, r.body);
            prop_assert_eq!(r.body["code"].as_u64(), Some(40001));
            check_refused(&r, before, event_count(app).await)
        }
    });
    assert!(tried >= CASES as usize, "only {tried} inputs tried");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_list_and_history_queries_never_fail_the_server() {
    let app = TestApp::spawn().await;
    app.create_payment("1.00", "CNY", "alipay", "ORD-list-1")
        .await;
    let strategy = any::<bool>().prop_flat_map(|history| (arbitrary_query(history), Just(history)));
    let tried = run_property(strategy, |(query, history): (String, bool)| {
        let app = &app;
        async move {
            let path = if history {
                "/api/v1/payments/history"
            } else {
                "/api/v1/payments"
            };
            let before = event_count(app).await;
            let r = send_signed(app, AUDITOR, "GET", &format!("{path}?{query}"), b"", &[]).await?;
            prop_assert!(
                r.status == 200 || ((400..500).contains(&r.status) && r.status != 401),
                "GET {}?{}: {} {}",
                path,
                query,
                r.status,
                r.body
            );
            if r.status == 200 {
                prop_assert_eq!(&r.body["code"], &json!(0));
                let items = if history {
                    &r.body["data"]["payments"]
                } else {
                    &r.body["data"]["list"]
                };
                prop_assert!(items.is_array(), "{}", r.body);
            } else {
                check_error_envelope(&r)?;
            }
            prop_assert_eq!(before, event_count(app).await);
            Ok(())
        }
    });
    assert!(tried >= CASES as usize, "only {tried} inputs tried");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_headers_on_valid_posts_never_fail_the_server() {
    let app = TestApp::spawn().await;
    let paid = app.paid_payment("1000000.00").await;
    let (_, pending_no) = app
        .create_payment("5.00", "CNY", "alipay", "ORD-headers-1")
        .await;
    let strategy = (hostile_headers(), 0usize..3);
    let tried = run_property(strategy, |(headers, endpoint): (Vec<Header>, usize)| {
        let (app, paid, pending_no) = (&app, &paid, &pending_no);
        async move {
            let (key, target, body) = match endpoint {
                0 => (
                    CLIENT,
                    "/api/v1/payments/create".to_owned(),
                    object_text(&valid_create_fields()),
                ),
                1 => (
                    OPERATOR,
                    format!("/api/v1/payments/{paid}/refund"),
                    json!({"amount": "0.01", "reason": format!("headers {}", Uuid::new_v4())})
                        .to_string(),
                ),
                // A well-formed notice with another amount: recorded as a failed callback.
                _ => (ALIPAY, "/api/v1/gateways/alipay/notify".to_owned(), {
                    let mut f = notify_fields(pending_no);
                    f.retain(|(k, _)| k != "paid_at");
                    object_text(&f)
                }),
            };
            // A refund let through by an earlier case is confirmed in the background: wait for
            // that, so that its event is not counted against this case.
            quiesce(app).await;
            let before = event_count(app).await;
            let r = send_signed(app, key, "POST", &target, body.as_bytes(), &headers).await?;
            let after = event_count(app).await;
            prop_assert!(
                r.status < 500 && r.status != 401,
                "POST {} with {:?}: {} {}",
                target,
                headers,
                r.status,
                r.body
            );
            if r.status < 300 {
                prop_assert_eq!(&r.body["code"], &json!(0));
                prop_assert!(after > before, "a successful POST appended nothing");
            } else {
                check_refused(&r, before, after)?;
            }
            Ok(())
        }
    });
    assert!(tried >= CASES as usize, "only {tried} inputs tried");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_headers_on_invalid_posts_still_answer_4xx() {
    let app = TestApp::spawn().await;
    let paid = app.paid_payment("100.00").await;
    let strategy = (hostile_headers(), invalid_refund_body());
    let tried = run_property(strategy, |(headers, body): (Vec<Header>, Body)| {
        let (app, paid) = (&app, &paid);
        async move {
            let before = event_count(app).await;
            let r = send_signed(
                app,
                OPERATOR,
                "POST",
                &format!("/api/v1/payments/{paid}/refund"),
                &body.0,
                &headers,
            )
            .await?;
            check_refused(&r, before, event_count(app).await)
        }
    });
    assert!(tried >= CASES as usize, "only {tried} inputs tried");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// deterministic cases the properties found or that need a specific setup
// ---------------------------------------------------------------------------------------

/// Sends one request that must be refused; returns what went wrong, if anything.
async fn refused(
    app: &TestApp,
    key: (&str, &str),
    method: &str,
    target: &str,
    body: &str,
) -> Option<String> {
    let before = event_count(app).await;
    let r = send_signed(app, key, method, target, body.as_bytes(), &[])
        .await
        .unwrap();
    let after = event_count(app).await;
    check_refused(&r, before, after)
        .err()
        .map(|e| format!("{method} {target} {body:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_characters_in_text_input_are_refused_not_500() {
    let app = TestApp::spawn().await;
    let (_, no) = app
        .create_payment("77.00", "CNY", "alipay", "ORD-nul-1")
        .await;
    let paid = app.paid_payment("10.00").await;
    let nul = "a\u{0}b";
    let mut failures = Vec::new();
    for field in ["order_id", "user_id", "currency", "payment_method"] {
        let mut b = json!({"amount": "1.00", "currency": "CNY", "payment_method": "alipay", "order_id": "ORD-nul-2", "user_id": "u"});
        b[field] = json!(nul);
        failures.extend(
            refused(
                &app,
                CLIENT,
                "POST",
                "/api/v1/payments/create",
                &b.to_string(),
            )
            .await,
        );
    }
    let refund = json!({"amount": "1.00", "reason": nul}).to_string();
    failures.extend(
        refused(
            &app,
            OPERATOR,
            "POST",
            &format!("/api/v1/payments/{paid}/refund"),
            &refund,
        )
        .await,
    );
    for field in [
        "callback_no",
        "gateway_trade_no",
        "status",
        "refund_no",
        "paid_at",
        "payment_no",
    ] {
        let mut b = json!({"payment_no": no, "callback_no": "CB-nul", "status": "success", "amount": "77.00", "gateway_trade_no": "T"});
        b[field] = json!(nul);
        failures.extend(
            refused(
                &app,
                ALIPAY,
                "POST",
                "/api/v1/gateways/alipay/notify",
                &b.to_string(),
            )
            .await,
        );
    }
    // A NUL in a text filter matches nothing (200) or is refused (400); never a 500.
    for target in [
        "/api/v1/payments?order_no=a%00b",
        "/api/v1/payments?payment_no=a%00b",
        "/api/v1/payments/history?user_id=a%00b",
    ] {
        let r = send_signed(&app, AUDITOR, "GET", target, b"", &[])
            .await
            .unwrap();
        if !(r.status == 200 || ((400..500).contains(&r.status) && r.status != 401)) {
            failures.push(format!("GET {target}: {} {}", r.status, r.body));
        }
    }
    assert!(
        failures.is_empty(),
        "NUL characters are not refused cleanly: {failures:#?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notification_amounts_that_no_payment_can_have_are_400() {
    let app = TestApp::spawn().await;
    let (id, no) = app
        .create_payment("77.00", "CNY", "alipay", "ORD-amount-1")
        .await;
    let mut failures = Vec::new();
    for amount in [
        "-77.00",
        "0",
        "0.00",
        "77.001",
        "1e30",
        "99999999999999999999999999999",
    ] {
        let body = json!({
            "payment_no": no, "callback_no": format!("CB{}", Uuid::new_v4().simple()),
            "status": "success", "amount": amount, "gateway_trade_no": "T",
        });
        failures.extend(
            refused(
                &app,
                ALIPAY,
                "POST",
                "/api/v1/gateways/alipay/notify",
                &body.to_string(),
            )
            .await,
        );
    }
    let d = app
        .client("operator")
        .send("GET", &format!("/api/v1/payments/{id}"), None, &[])
        .await
        .unwrap();
    assert!(
        failures.is_empty(),
        "bad notification amounts were recorded: {failures:#?}\ncallbacks: {}",
        data(&d)["callbacks"]
    );
    app.stop().await;
}
