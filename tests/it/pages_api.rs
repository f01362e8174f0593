//! The API behind the pages (issue 12, docs/pages-api.md) over real HTTP: the member checkout,
//! console sessions (sign-in, throttle, CSRF, idle and absolute expiry, sign-out), the
//! cookie-authenticated JSON API, member portal links, and the finance routes (daily figures,
//! settlement upload). Requests are built by hand with reqwest, as a browser would send them.

use crate::common::{data, TestApp};
use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

const OPERATOR: (&str, &str) = ("t-operator", "operator-secret-1");
const AUDITOR: (&str, &str) = ("t-auditor", "auditor-secret-1");
const FINANCE: (&str, &str) = ("t-finance", "finance-secret-1");
const CLIENT: (&str, &str) = ("t-client", "client-secret-1");

/// An answer as the tests read it.
struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Reply {
    fn data(&self) -> &Value {
        &self.body["data"]
    }

    fn code(&self) -> i64 {
        self.body["code"].as_i64().unwrap_or(-1)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client builds")
}

async fn send(
    app: &TestApp,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Reply {
    let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = http().request(m, format!("{}{path}", app.base));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Reply {
        status,
        headers,
        body,
    }
}

async fn sign_in_raw(app: &TestApp, key_id: &str, secret: &str) -> Reply {
    let body = json!({ "key_id": key_id, "secret": secret }).to_string();
    send(
        app,
        "POST",
        "/api/v1/console/sessions",
        &[("content-type", "application/json")],
        Some(body.into_bytes()),
    )
    .await
}

/// A browser's console session: its cookie and CSRF token.
struct Session {
    cookie: String,
    csrf: String,
}

impl Session {
    fn cookie_header(&self) -> String {
        format!("ledger_console={}", self.cookie)
    }
}

fn cookie_value(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .and_then(|kv| kv.split_once('='))
        .map(|(_, v)| v.to_owned())
        .expect("cookie has a value")
}

async fn sign_in(app: &TestApp, key: (&str, &str)) -> Session {
    let r = sign_in_raw(app, key.0, key.1).await;
    assert_eq!(r.status, 201, "sign-in failed: {}", r.body);
    Session {
        cookie: cookie_value(r.header("set-cookie").expect("set-cookie")),
        csrf: r.data()["csrf_token"].as_str().expect("csrf").to_owned(),
    }
}

/// A GET with the session's cookie.
async fn get_as(app: &TestApp, s: &Session, path: &str) -> Reply {
    send(app, "GET", path, &[("cookie", &s.cookie_header())], None).await
}

fn new_order() -> String {
    format!("ORD-{}", Uuid::new_v4().simple())
}

/// Creates a payment for `user_id` with the client key (`extra` adds fields to the body);
/// returns (payment_id, payment_no).
pub(crate) async fn create_for(
    app: &TestApp,
    user_id: &str,
    amount: &str,
    extra: Value,
) -> (String, String) {
    let mut body = json!({
        "amount": amount, "currency": "CNY", "payment_method": "alipay",
        "order_id": new_order(), "user_id": user_id,
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let a = app
        .client("client")
        .send(
            "POST",
            "/api/v1/payments/create",
            Some(&body.to_string()),
            &[],
        )
        .await
        .expect("create");
    assert_eq!(a.status, 201, "create failed: {}", a.body);
    (
        data(&a)["payment_id"].as_str().unwrap().to_owned(),
        data(&a)["payment_no"].as_str().unwrap().to_owned(),
    )
}

pub(crate) async fn paid_for(app: &TestApp, user_id: &str, amount: &str) -> (String, String) {
    let (id, no) = create_for(app, user_id, amount, json!({})).await;
    let a = app.pay("alipay", &no, amount).await;
    assert_eq!(a.status, 200, "pay failed: {}", a.body);
    (id, no)
}

// ---------------------------------------------------------------------------------------
// checkout

#[tokio::test]
async fn checkout_shows_what_the_member_pays_for_and_nothing_about_the_payer() {
    let app = TestApp::spawn().await;
    let (id, no) = create_for(
        &app,
        "member-7",
        "88.80",
        json!({
            "return_url": "https://shop.example/cart",
            "payer": { "name": "张三", "account": "acct-55667788" },
        }),
    )
    .await;
    let r = send(&app, "GET", &format!("/api/v1/checkout/{no}"), &[], None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.header("x-ledger-position").is_some());
    let d = r.data();
    assert_eq!(d["payment_no"], no.as_str());
    assert_eq!(d["amount"], "88.80");
    assert_eq!(d["currency"], "CNY");
    assert_eq!(d["payment_method"], "alipay");
    assert_eq!(d["status"], "pending");
    assert_eq!(d["failure_reason"], Value::Null);
    assert_eq!(d["return_url"], "https://shop.example/cart");
    assert_eq!(d["paid_at"], Value::Null);
    assert_eq!(
        d["pay_url"].as_str().unwrap(),
        format!("{}/sandbox/pay/{no}", app.base)
    );
    assert!(d["order_id"].as_str().unwrap().starts_with("ORD-"));
    let created = chrono::DateTime::parse_from_rfc3339(d["created_at"].as_str().unwrap()).unwrap();
    let expires = chrono::DateTime::parse_from_rfc3339(d["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!((expires - created).num_seconds(), 1800);
    let text = r.body.to_string();
    for secret in [
        "user_id",
        "payment_id",
        "payer",
        "member-7",
        "张",
        "2233",
        id.as_str(),
    ] {
        assert!(!text.contains(secret), "checkout leaks {secret}: {text}");
    }
    let fields: Vec<&String> = d.as_object().unwrap().keys().collect();
    assert_eq!(fields.len(), 12, "{fields:?}");

    // Paid: the status follows, and the paid time appears.
    assert_eq!(app.pay("alipay", &no, "88.80").await.status, 200);
    let r = send(&app, "GET", &format!("/api/v1/checkout/{no}"), &[], None).await;
    assert_eq!(r.data()["status"], "success");
    assert!(r.data()["paid_at"].is_string());
}

#[tokio::test]
async fn checkout_of_an_unknown_or_malformed_number_is_not_found() {
    let app = TestApp::spawn().await;
    let (_, no) = create_for(&app, "member-1", "1.00", json!({})).await;
    let unknown = format!("P{}", "0".repeat(32));
    let lower = format!("p{}", &no[1..].to_lowercase());
    for n in [unknown.as_str(), "nonsense", lower.as_str(), "P123"] {
        let r = send(&app, "GET", &format!("/api/v1/checkout/{n}"), &[], None).await;
        assert_eq!(r.status, 404, "{n}: {}", r.body);
        assert_eq!(r.code(), 40401);
        assert_eq!(r.data(), &Value::Null);
    }
    let r = send(
        &app,
        "GET",
        &format!("/api/v1/checkout/{no}?user_id=x"),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 400, "unknown query parameters are refused");
}

// ---------------------------------------------------------------------------------------
// console sign-in

#[tokio::test]
async fn console_sign_in_sets_a_strict_httponly_cookie_and_answers_the_session() {
    let app = TestApp::spawn().await;
    let r = sign_in_raw(&app, OPERATOR.0, OPERATOR.1).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let cookie = r.header("set-cookie").expect("cookie").to_owned();
    assert!(cookie.starts_with("ledger_console="), "{cookie}");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie} lacks {attr}");
    }
    assert!(!cookie.contains("Secure"), "no TLS in tests: {cookie}");
    let token = cookie_value(&cookie);
    assert_eq!(token.len(), 43, "256 random bits, base64url");
    let d = r.data();
    assert_eq!(d["key_id"], OPERATOR.0);
    assert_eq!(d["role"], "operator");
    assert_eq!(d["idle_timeout_secs"], 1800);
    let csrf = d["csrf_token"].as_str().unwrap().to_owned();
    assert_eq!(csrf.len(), 43);
    assert_ne!(csrf, token);
    assert!(
        !r.body.to_string().contains(OPERATOR.1),
        "the secret is never echoed"
    );

    // Only the token's hash is stored.
    let stored: Vec<(String,)> = sqlx::query_as("SELECT token_hash FROM console_sessions")
        .fetch_all(&app.pool().await)
        .await
        .unwrap();
    assert_eq!(
        stored,
        vec![(hex::encode(Sha256::digest(token.as_bytes())),)]
    );

    let s = Session {
        cookie: token,
        csrf,
    };
    let r = get_as(&app, &s, "/api/v1/console/sessions/current").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.data()["key_id"], OPERATOR.0);
    assert_eq!(r.data()["role"], "operator");
    assert_eq!(r.data()["csrf_token"], s.csrf.as_str());
    assert_eq!(r.data()["expires_at"], d["expires_at"]);
    assert!(r.header("x-ledger-position").is_some());

    // Without a cookie there is no session.
    let r = send(&app, "GET", "/api/v1/console/sessions/current", &[], None).await;
    assert_eq!((r.status, r.code()), (401, 40101));
    // A made-up cookie is no session either.
    let fake = format!("ledger_console={}", "A".repeat(43));
    let r = send(
        &app,
        "GET",
        "/api/v1/console/sessions/current",
        &[("cookie", &fake)],
        None,
    )
    .await;
    assert_eq!((r.status, r.code()), (401, 40101));
}

#[tokio::test]
async fn a_wrong_secret_and_an_unknown_key_get_the_same_refusal() {
    let app = TestApp::spawn().await;
    let wrong = sign_in_raw(&app, OPERATOR.0, "not-the-secret").await;
    let unknown = sign_in_raw(&app, "t-nobody", "not-the-secret").await;
    for r in [&wrong, &unknown] {
        assert_eq!((r.status, r.code()), (401, 40101), "{}", r.body);
        assert!(r.header("set-cookie").is_none());
    }
    assert_eq!(
        wrong.body, unknown.body,
        "the two refusals are indistinguishable"
    );
    let metrics = send(&app, "GET", "/metrics", &[], None).await;
    assert!(
        metrics
            .body
            .as_str()
            .unwrap_or_default()
            .contains("ledger_console_signin_failures_total"),
        "failed sign-ins are counted"
    );
    // Malformed requests are 400, not counted.
    let r = send(
        &app,
        "POST",
        "/api/v1/console/sessions",
        &[("content-type", "application/json")],
        Some(br#"{"key_id":"t-operator","secret":"x","remember":true}"#.to_vec()),
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (400, 40001),
        "unknown fields are refused"
    );
    let r = send(
        &app,
        "POST",
        "/api/v1/console/sessions",
        &[("content-type", "text/plain")],
        Some(br#"{"key_id":"t-operator","secret":"operator-secret-1"}"#.to_vec()),
    )
    .await;
    assert_eq!(
        r.status, 400,
        "only JSON signs in (a cross-site form cannot send it)"
    );
    let r = send(
        &app,
        "POST",
        "/api/v1/console/sessions",
        &[
            ("content-type", "application/json"),
            ("origin", "http://evil.example"),
        ],
        Some(br#"{"key_id":"t-operator","secret":"operator-secret-1"}"#.to_vec()),
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (403, 40301),
        "cross-site sign-in is refused"
    );
}

#[tokio::test]
async fn client_and_gateway_keys_cannot_sign_in_to_the_console() {
    let app = TestApp::spawn().await;
    let r = sign_in_raw(&app, CLIENT.0, CLIENT.1).await;
    assert_eq!((r.status, r.code()), (403, 40301), "{}", r.body);
    assert!(r.header("set-cookie").is_none());
    let r = sign_in_raw(&app, "alipay", "alipay-secret-1").await;
    assert_eq!((r.status, r.code()), (403, 40301), "{}", r.body);
    // A client key's wrong secret is a plain 401: the 403 reveals nothing to a guesser.
    let r = sign_in_raw(&app, CLIENT.0, "wrong-secret").await;
    assert_eq!((r.status, r.code()), (401, 40101));
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM console_sessions")
        .fetch_one(&app.pool().await)
        .await
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn failed_sign_ins_are_throttled_per_key_and_per_address_with_retry_after() {
    let app = TestApp::spawn().await;
    for i in 0..5 {
        let r = sign_in_raw(&app, OPERATOR.0, &format!("guess-{i}")).await;
        assert_eq!(r.status, 401, "attempt {i}: {}", r.body);
    }
    // Even the right secret waits now.
    let r = sign_in_raw(&app, OPERATOR.0, OPERATOR.1).await;
    assert_eq!((r.status, r.code()), (429, 42901), "{}", r.body);
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=15 * 60 + 1).contains(&retry), "{retry}");
    // The same address is throttled for another key too.
    let r = sign_in_raw(&app, AUDITOR.0, AUDITOR.1).await;
    assert_eq!((r.status, r.code()), (429, 42901), "{}", r.body);
    // Chinese message too.
    let r = send(
        &app,
        "POST",
        "/api/v1/console/sessions",
        &[
            ("content-type", "application/json"),
            ("accept-language", "zh-CN"),
        ],
        Some(
            json!({"key_id": OPERATOR.0, "secret": OPERATOR.1})
                .to_string()
                .into_bytes(),
        ),
    )
    .await;
    assert_eq!(r.status, 429);
    assert!(
        r.body["message"].as_str().unwrap().contains("频繁"),
        "{}",
        r.body
    );

    // After the window, the key may sign in again.
    app.state
        .clock
        .set_offset(chrono::Duration::seconds(15 * 60 + 5));
    let r = sign_in_raw(&app, OPERATOR.0, OPERATOR.1).await;
    assert_eq!(r.status, 201, "{}", r.body);
}

// ---------------------------------------------------------------------------------------
// sessions: expiry, sign-out, removed keys

#[tokio::test]
async fn signing_out_ends_the_session_everywhere_and_clears_the_cookie() {
    let app = TestApp::spawn().await;
    let s = sign_in(&app, OPERATOR).await;
    let cookie = s.cookie_header();
    // Without the CSRF token the sign-out is refused (a cross-site page cannot end it).
    let r = send(
        &app,
        "DELETE",
        "/api/v1/console/sessions/current",
        &[("cookie", &cookie)],
        None,
    )
    .await;
    assert_eq!((r.status, r.code()), (403, 40301));
    let r = send(
        &app,
        "DELETE",
        "/api/v1/console/sessions/current",
        &[("cookie", &cookie), ("x-csrf-token", &s.csrf)],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let cleared = r.header("set-cookie").expect("cookie cleared");
    assert!(
        cleared.starts_with("ledger_console=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    let r = get_as(&app, &s, "/api/v1/console/sessions/current").await;
    assert_eq!((r.status, r.code()), (401, 40101));
    let r = get_as(&app, &s, "/api/v1/payments").await;
    assert_eq!(
        (r.status, r.code()),
        (401, 40101),
        "the old cookie no longer works"
    );
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM console_sessions")
        .fetch_one(&app.pool().await)
        .await
        .unwrap();
    assert_eq!(n, 0, "the row is gone");
}

#[tokio::test]
async fn an_idle_or_expired_session_is_refused_and_use_slides_the_idle_timeout() {
    let app = TestApp::spawn().await;
    let s = sign_in(&app, OPERATOR).await;
    let at = |mins: i64| app.state.clock.set_offset(chrono::Duration::minutes(mins));
    // Each use within 30 minutes of the last keeps it alive.
    at(20);
    assert_eq!(get_as(&app, &s, "/api/v1/payments").await.status, 200);
    at(45);
    assert_eq!(get_as(&app, &s, "/api/v1/payments").await.status, 200);
    // 31 idle minutes end it.
    at(76);
    let r = get_as(&app, &s, "/api/v1/payments").await;
    assert_eq!((r.status, r.code()), (401, 40101), "{}", r.body);
    at(77);
    assert_eq!(get_as(&app, &s, "/api/v1/payments").await.status, 401);

    // The absolute end holds however active the session is.
    at(0);
    let s = sign_in(&app, AUDITOR).await;
    assert_eq!(get_as(&app, &s, "/api/v1/events").await.status, 200);
    sqlx::query("UPDATE console_sessions SET expires_at = created_at + interval '1 minute'")
        .execute(&app.pool().await)
        .await
        .unwrap();
    at(2);
    let r = get_as(&app, &s, "/api/v1/events").await;
    assert_eq!((r.status, r.code()), (401, 40101), "{}", r.body);
}

#[tokio::test]
async fn a_session_whose_key_was_removed_or_changed_role_stops_working() {
    let app = TestApp::spawn().await;
    let pool = app.pool().await;
    // As if the configuration had changed since these sessions signed in.
    let insert = |token: &str, key_id: &str, role: &str| {
        let hash = hex::encode(Sha256::digest(token.as_bytes()));
        let (key_id, role, pool) = (key_id.to_owned(), role.to_owned(), pool.clone());
        async move {
            sqlx::query(
                "INSERT INTO console_sessions VALUES ($1, $2, $3, 'csrf', now(), now(), now() + interval '1 hour')",
            )
            .bind(hash)
            .bind(key_id)
            .bind(role)
            .execute(&pool)
            .await
            .unwrap();
        }
    };
    let gone = "G".repeat(43);
    let demoted = "D".repeat(43);
    insert(&gone, "t-removed", "admin").await;
    insert(&demoted, "t-operator", "admin").await;
    for token in [gone, demoted] {
        let cookie = format!("ledger_console={token}");
        let r = send(
            &app,
            "GET",
            "/api/v1/payments",
            &[("cookie", &cookie)],
            None,
        )
        .await;
        assert_eq!((r.status, r.code()), (401, 40101), "{}", r.body);
    }
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM console_sessions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 0, "such sessions are deleted when seen");
}

// ---------------------------------------------------------------------------------------
// the JSON API by session

#[tokio::test]
async fn a_session_reads_with_its_keys_role_and_no_other() {
    let app = TestApp::spawn().await;
    app.paid_payment("12.00").await;
    let s = sign_in(&app, OPERATOR).await;
    let r = get_as(&app, &s, "/api/v1/payments?size=5").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.data()["total"], 1);
    assert!(r.header("x-ledger-position").is_some());
    let r = get_as(&app, &s, "/api/v1/audit/verify").await;
    assert_eq!(
        (r.status, r.code()),
        (403, 40301),
        "an operator is no auditor"
    );
    let r = get_as(&app, &s, "/api/v1/ledger/totals").await;
    assert_eq!((r.status, r.code()), (403, 40301));

    let a = sign_in(&app, AUDITOR).await;
    let r = get_as(&app, &a, "/api/v1/audit/verify").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.data()["ok"], true);
}

#[tokio::test]
async fn a_cookie_post_needs_the_csrf_token_and_our_origin_then_refunds_through_the_pipeline() {
    let app = TestApp::spawn().await;
    let id = app.paid_payment("100.00").await;
    let s = sign_in(&app, OPERATOR).await;
    let path = format!("/api/v1/payments/{id}/refund");
    let body = br#"{"amount":"30.00","reason":"damaged"}"#.to_vec();
    let cookie = s.cookie_header();
    let origin = app.base.clone();
    let wrong_csrf = "x".repeat(43);
    let refused: [Vec<(&str, &str)>; 4] = [
        // No CSRF token: what a cross-site form carrying the cookie looks like.
        vec![("cookie", &cookie), ("content-type", "application/json")],
        // A wrong one.
        vec![
            ("cookie", &cookie),
            ("content-type", "application/json"),
            ("x-csrf-token", &wrong_csrf),
        ],
        // The right token from a foreign origin.
        vec![
            ("cookie", &cookie),
            ("content-type", "application/json"),
            ("x-csrf-token", &s.csrf),
            ("origin", "http://evil.example"),
        ],
        // A foreign origin and no token.
        vec![
            ("cookie", &cookie),
            ("content-type", "application/x-www-form-urlencoded"),
            ("origin", "http://127.0.0.1:1"),
        ],
    ];
    for headers in &refused {
        let r = send(&app, "POST", &path, headers, Some(body.clone())).await;
        assert_eq!(
            (r.status, r.code()),
            (403, 40301),
            "{headers:?}: {}",
            r.body
        );
    }
    let d = app
        .client("operator")
        .send("GET", &format!("/api/v1/payments/{id}"), None, &[])
        .await
        .unwrap();
    assert_eq!(
        data(&d)["refunds"].as_array().unwrap().len(),
        0,
        "nothing was refunded"
    );

    let ok_headers = [
        ("cookie", cookie.as_str()),
        ("content-type", "application/json"),
        ("x-csrf-token", s.csrf.as_str()),
        ("origin", origin.as_str()),
        ("idempotency-key", "console-refund-1"),
    ];
    let r = send(&app, "POST", &path, &ok_headers, Some(body.clone())).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.data()["amount"], "30.00");
    assert!(r.data()["position"].as_i64().unwrap() > 0);
    // The same submission retried replays the first answer (idempotency works by session too).
    let again = send(&app, "POST", &path, &ok_headers, Some(body.clone())).await;
    assert_eq!(again.status, 201);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.data()["id"], r.data()["id"]);
    // A different body under the key is a conflict.
    let other = send(
        &app,
        "POST",
        &path,
        &ok_headers,
        Some(br#"{"amount":"31.00","reason":"damaged"}"#.to_vec()),
    )
    .await;
    assert_eq!((other.status, other.code()), (409, 40903));
    // Read your writes: the detail shows the refund at once.
    let r = get_as(&app, &s, &format!("/api/v1/payments/{id}")).await;
    assert_eq!(
        r.data()["refunds"].as_array().unwrap().len(),
        1,
        "{}",
        r.body
    );
    // The event records who asked.
    let events = app
        .client("auditor")
        .send("GET", &format!("/api/v1/payments/{id}/events"), None, &[])
        .await
        .unwrap();
    let last = data(&events)["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "refund_requested")
        .cloned()
        .unwrap();
    assert_eq!(last["metadata"]["actor_key_id"], OPERATOR.0, "{last}");
}

#[tokio::test]
async fn a_cookie_body_over_the_limit_is_refused_like_a_signed_one() {
    let app = TestApp::spawn().await;
    let s = sign_in(&app, OPERATOR).await;
    let id = app.paid_payment("10.00").await;
    let big = format!(
        r#"{{"amount":"1.00","reason":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    let r = send(
        &app,
        "POST",
        &format!("/api/v1/payments/{id}/refund"),
        &[
            ("cookie", &s.cookie_header()),
            ("content-type", "application/json"),
            ("x-csrf-token", &s.csrf),
        ],
        Some(big.into_bytes()),
    )
    .await;
    assert_eq!((r.status, r.code()), (413, 41301), "{}", r.body);
}

// ---------------------------------------------------------------------------------------
// member portal

async fn portal_link(app: &TestApp, user_id: &str) -> (String, Value) {
    let a = app
        .client("client")
        .send(
            "POST",
            "/api/v1/portal/sessions",
            Some(&json!({ "user_id": user_id }).to_string()),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(a.status, 201, "{}", a.body);
    let url = data(&a)["url"].as_str().unwrap().to_owned();
    let token = url
        .split_once("#token=")
        .map(|(_, t)| t.to_owned())
        .expect("token in the fragment");
    assert_eq!(url, format!("{}/portal#token={token}", app.base));
    (token, data(&a).clone())
}

async fn portal_get(app: &TestApp, token: &str, path: &str) -> Reply {
    let auth = format!("Bearer {token}");
    send(app, "GET", path, &[("authorization", &auth)], None).await
}

#[tokio::test]
async fn a_portal_link_reads_its_members_payments_and_nothing_else() {
    let app = TestApp::spawn().await;
    let (mine, _) = paid_for(&app, "member-a", "20.00").await;
    let (pending, _) = create_for(&app, "member-a", "5.00", json!({})).await;
    let (theirs, _) = paid_for(&app, "member-b", "30.00").await;
    let (token, link) = portal_link(&app, "member-a").await;
    let expires =
        chrono::DateTime::parse_from_rfc3339(link["expires_at"].as_str().unwrap()).unwrap();
    let ttl = expires
        .signed_duration_since(chrono::Utc::now())
        .num_seconds();
    assert!((890..=901).contains(&ttl), "15 minutes: {ttl}");

    let r = portal_get(&app, &token, "/api/v1/portal/session").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.data()["user_id"], "member-a");
    assert_eq!(r.data()["expires_at"], link["expires_at"]);

    let r = portal_get(
        &app,
        &token,
        "/api/v1/payments/history?user_id=member-a&size=10",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.data()["total"], 2);
    let items = r.data()["payments"].as_array().unwrap();
    assert_eq!(items[0]["payment_id"], pending.as_str(), "newest first");
    let paid = &items[1];
    assert_eq!(paid["payment_id"], mine.as_str());
    assert_eq!(paid["amount"], "20.00");
    assert_eq!(paid["currency"], "CNY");
    assert_eq!(paid["status"], "success");
    assert_eq!(paid["payment_method"], "alipay");
    assert!(paid["order_id"].as_str().unwrap().starts_with("ORD-"));
    assert_eq!(paid["refunded_amount"], "0.00");

    let r = portal_get(&app, &token, &format!("/api/v1/payments/{mine}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.data()["id"], mine.as_str());
    assert_eq!(
        r.data()["callbacks"],
        json!([]),
        "gateway callbacks stay in the back office"
    );
    let r = portal_get(&app, &token, &format!("/api/v1/payments/{mine}/status")).await;
    assert_eq!(
        (r.status, r.data()["status"].clone()),
        (200, json!("success"))
    );

    // Another member's payment does not exist for this link; their history is forbidden.
    for path in [
        format!("/api/v1/payments/{theirs}"),
        format!("/api/v1/payments/{theirs}/status"),
        format!("/api/v1/payments/{}", Uuid::new_v4()),
    ] {
        let r = portal_get(&app, &token, &path).await;
        assert_eq!((r.status, r.code()), (404, 40401), "{path}: {}", r.body);
    }
    let r = portal_get(&app, &token, "/api/v1/payments/history?user_id=member-b").await;
    assert_eq!((r.status, r.code()), (403, 40301));
    // Read-only, and only the portal's routes.
    for path in [
        "/api/v1/payments".to_owned(),
        format!("/api/v1/payments/{mine}/events"),
        format!("/api/v1/payments/{mine}?as_of=2030-01-01T00:00:00Z"),
        "/api/v1/events".to_owned(),
        "/api/v1/console/sessions/current".to_owned(),
    ] {
        let r = portal_get(&app, &token, &path).await;
        assert_eq!((r.status, r.code()), (403, 40301), "{path}: {}", r.body);
    }
    let r = send(
        &app,
        "POST",
        &format!("/api/v1/payments/{mine}/refund"),
        &[
            ("authorization", &format!("Bearer {token}")),
            ("content-type", "application/json"),
        ],
        Some(br#"{"amount":"1.00","reason":"mine"}"#.to_vec()),
    )
    .await;
    assert_eq!((r.status, r.code()), (403, 40301), "{}", r.body);
}

#[tokio::test]
async fn an_altered_malformed_or_expired_portal_link_is_refused() {
    let app = TestApp::spawn().await;
    paid_for(&app, "member-a", "20.00").await;
    let (token, _) = portal_link(&app, "member-a").await;
    let (payload, tag) = token.split_once('.').unwrap();
    // Claims rewritten for another member, signature kept.
    let forged_claims = base64_url(
        &json!({"user_id": "member-b", "key_id": "t-client", "merchant": null, "exp": 4_000_000_000i64})
            .to_string(),
    );
    let mut flipped = tag.to_owned().into_bytes();
    flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
    let altered = [
        format!("{forged_claims}.{tag}"),
        format!("{payload}.{}", String::from_utf8(flipped).unwrap()),
        format!("{payload}x.{tag}"),
        payload.to_owned(),
        "not-a-token".to_owned(),
        String::new(),
        "a".repeat(5000),
    ];
    for t in &altered {
        let r = portal_get(&app, t, "/api/v1/portal/session").await;
        assert_eq!((r.status, r.code()), (401, 40101), "{t}: {}", r.body);
    }
    assert_eq!(
        portal_get(&app, &token, "/api/v1/portal/session")
            .await
            .status,
        200
    );
    app.state.clock.set_offset(chrono::Duration::seconds(901));
    let r = portal_get(&app, &token, "/api/v1/portal/session").await;
    assert_eq!((r.status, r.code()), (401, 40101), "{}", r.body);
    let r = portal_get(&app, &token, "/api/v1/payments/history?user_id=member-a").await;
    assert_eq!((r.status, r.code()), (401, 40101));
}

fn base64_url(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

#[tokio::test]
async fn only_client_and_admin_keys_issue_portal_links_with_a_valid_user() {
    let app = TestApp::spawn().await;
    let body = json!({ "user_id": "member-a" }).to_string();
    let a = app
        .client("operator")
        .send("POST", "/api/v1/portal/sessions", Some(&body), &[])
        .await
        .unwrap();
    assert_eq!(a.status, 403, "{}", a.body);
    let a = app
        .client("admin")
        .send("POST", "/api/v1/portal/sessions", Some(&body), &[])
        .await
        .unwrap();
    assert_eq!(a.status, 201, "{}", a.body);
    for bad in [
        json!({}),
        json!({"user_id": ""}),
        json!({"user_id": "a", "x": 1}),
        json!({"user_id": "x".repeat(65)}),
    ] {
        let a = app
            .client("client")
            .send(
                "POST",
                "/api/v1/portal/sessions",
                Some(&bad.to_string()),
                &[],
            )
            .await
            .unwrap();
        assert_eq!(a.status, 400, "{bad}: {}", a.body);
    }
    // A signed key asking for the portal session has none.
    let a = app
        .client("client")
        .send("GET", "/api/v1/portal/session", None, &[])
        .await
        .unwrap();
    assert_eq!(a.status, 403);
}

// ---------------------------------------------------------------------------------------
// finance

#[tokio::test]
async fn daily_figures_per_utc_day_agree_with_the_totals() {
    let app = TestApp::spawn().await;
    paid_for(&app, "m", "10.00").await;
    paid_for(&app, "m", "5.50").await;
    app.settle().await;
    let f = sign_in(&app, FINANCE).await;
    let r = get_as(&app, &f, "/api/v1/ledger/daily?currency=CNY").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.header("x-ledger-position").is_some());
    let days = r.data()["days"].as_array().unwrap();
    assert_eq!(days.len(), 1, "{days:?}");
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert_eq!(
        days[0],
        json!({"day": today, "currency": "CNY", "paid_amount": "15.50", "refunded_amount": "0.00"})
    );
    let totals = get_as(&app, &f, "/api/v1/ledger/totals?currency=CNY").await;
    assert_eq!(
        totals.data()["currencies"][0]["paid_amount"],
        days[0]["paid_amount"]
    );
    // A period before everything is empty.
    let r = get_as(
        &app,
        &f,
        "/api/v1/ledger/daily?end_time=2000-01-01T00:00:00Z",
    )
    .await;
    assert_eq!(r.data()["days"], json!([]));
    for bad in [
        "currency=XXX",
        "start_time=yesterday",
        "start_time=2030-01-02T00:00:00Z&end_time=2030-01-01T00:00:00Z",
        "day=1",
    ] {
        let r = get_as(&app, &f, &format!("/api/v1/ledger/daily?{bad}")).await;
        assert_eq!((r.status, r.code()), (400, 40001), "{bad}");
    }
    let o = sign_in(&app, OPERATOR).await;
    assert_eq!(get_as(&app, &o, "/api/v1/ledger/daily").await.status, 403);
}

async fn upload(
    app: &TestApp,
    s: &Session,
    query: &str,
    csv: Vec<u8>,
    content_type: &str,
) -> Reply {
    send(
        app,
        "POST",
        &format!("/api/v1/reconcile{query}"),
        &[
            ("cookie", &s.cookie_header()),
            ("x-csrf-token", &s.csrf),
            ("content-type", content_type),
        ],
        Some(csv),
    )
    .await
}

#[tokio::test]
async fn a_settlement_upload_reports_matched_missing_and_mismatched_rows() {
    let app = TestApp::spawn().await;
    let (_, a) = paid_for(&app, "m", "10.00").await;
    let (_, b) = paid_for(&app, "m", "20.00").await;
    let (_, c) = paid_for(&app, "m", "7.00").await;
    let (_, pending) = create_for(&app, "m", "3.00", json!({})).await;
    app.settle().await;
    let f = sign_in(&app, FINANCE).await;
    let unknown = format!("P{}", "f".repeat(32));
    let csv = format!(
        "payment_no,gateway_trade_no,type,amount,fee,settled_at\n\
         {a},T1,payment,10.00,0.06,2030-01-01T00:00:00Z\n\
         {b},T2,payment,21.00,0.12,2030-01-01T00:00:00Z\n\
         {unknown},T3,payment,5.00,0,2030-01-01T00:00:00Z\n\
         {pending},T4,payment,3.00,0,2030-01-01T00:00:00Z\n\
         {a},T1,payment,10.00,0.06,2030-01-01T00:00:00Z\n"
    );
    let r = upload(&app, &f, "", csv.into_bytes(), "text/csv").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let d = r.data();
    assert_eq!(d["all_match"], false);
    assert_eq!(
        d["counts"],
        json!({"matched": 1, "missing_in_ledger": 1, "missing_in_file": 1,
               "amount_mismatch": 1, "status_mismatch": 1, "duplicate_in_file": 1})
    );
    let items = d["items"].as_array().unwrap();
    let find = |cat: &str| {
        items
            .iter()
            .find(|i| i["category"] == cat)
            .cloned()
            .unwrap()
    };
    assert_eq!(
        find("amount_mismatch"),
        json!({"category": "amount_mismatch", "line": 3, "payment_no": b, "reference": "T2",
               "kind": "payment", "file_amount": "21", "ledger_amount": "20",
               "ledger_status": "success", "detail": "+1"})
    );
    assert_eq!(find("missing_in_ledger")["line"], 4);
    assert_eq!(find("status_mismatch")["ledger_status"], "pending");
    assert_eq!(find("duplicate_in_file")["line"], 6);
    let missing = find("missing_in_file");
    assert_eq!(
        (missing["line"].clone(), missing["payment_no"].clone()),
        (Value::Null, json!(c))
    );

    // A file that matches everything.
    let ok = format!(
        "payment_no,gateway_trade_no,type,amount,fee,settled_at\n\
         {a},T1,payment,10.00,0,2030-01-01T00:00:00Z\n\
         {b},T2,payment,20.00,0,2030-01-01T00:00:00Z\n\
         {c},T3,payment,7.00,0,2030-01-01T00:00:00Z\n"
    );
    let r = upload(&app, &f, "", ok.into_bytes(), "text/csv; charset=utf-8").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.data()["all_match"], true);
    assert_eq!(r.data()["items"], json!([]));
}

#[tokio::test]
async fn a_malformed_settlement_file_is_refused_naming_its_line() {
    let app = TestApp::spawn().await;
    let f = sign_in(&app, FINANCE).await;
    let csv = "payment_no,gateway_trade_no,type,amount,fee,settled_at\n\
               P1,T1,payment,10.00,0,2030-01-01T00:00:00Z\n\
               P2,T2,payment,ten,0,2030-01-01T00:00:00Z\n";
    let r = upload(&app, &f, "", csv.as_bytes().to_vec(), "text/csv").await;
    assert_eq!((r.status, r.code()), (400, 40001), "{}", r.body);
    assert!(
        r.body["message"].as_str().unwrap().contains("line 3"),
        "{}",
        r.body
    );
    let r = upload(&app, &f, "", b"a,b\n1,2\n".to_vec(), "text/csv").await;
    assert_eq!(
        (r.status, r.code()),
        (400, 40001),
        "a wrong header: {}",
        r.body
    );
    let r = upload(&app, &f, "", csv.as_bytes().to_vec(), "application/json").await;
    assert_eq!(r.status, 400, "the body must be declared CSV");
    let r = upload(
        &app,
        &f,
        "?start_time=soon",
        csv.as_bytes().to_vec(),
        "text/csv",
    )
    .await;
    assert_eq!(r.status, 400);
    let o = sign_in(&app, OPERATOR).await;
    let r = upload(&app, &o, "", csv.as_bytes().to_vec(), "text/csv").await;
    assert_eq!((r.status, r.code()), (403, 40301));
    // No CSRF token: refused before anything is read.
    let r = send(
        &app,
        "POST",
        "/api/v1/reconcile",
        &[("cookie", &f.cookie_header()), ("content-type", "text/csv")],
        Some(csv.as_bytes().to_vec()),
    )
    .await;
    assert_eq!((r.status, r.code()), (403, 40301));
}

#[tokio::test]
async fn settlement_files_have_their_own_larger_body_limit() {
    let app = TestApp::spawn().await;
    let f = sign_in(&app, FINANCE).await;
    // About 600 KiB: far over the 64 KiB of other routes, well under 8 MiB.
    let mut csv = String::from("payment_no,gateway_trade_no,type,amount,fee,settled_at\n");
    for i in 0..10_000 {
        csv.push_str(&format!(
            "P{i:032x},T{i},payment,1.00,0,2030-01-01T00:00:00Z\n"
        ));
    }
    assert!(csv.len() > 500 * 1024);
    let r = upload(&app, &f, "", csv.into_bytes(), "text/csv").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.data()["counts"]["missing_in_ledger"], 10_000);
    // Over 8 MiB is refused.
    let huge = vec![b'x'; 8 * 1024 * 1024 + 1];
    let r = upload(&app, &f, "", huge, "text/csv").await;
    assert_eq!((r.status, r.code()), (413, 41301), "{}", r.body);
}
