//! Authentication, anti-replay and access control (SPEC §5 error table, §6, §11 "Signing",
//! "Nonces") over real HTTP. Requests that must be malformed are built by hand with reqwest
//! and `ledger::signing::sign`, with a chosen timestamp and nonce.

use std::time::Duration;

use crate::common::{data, Options, TestApp};
use ledger::client::Answer;
use ledger::signing;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

const CLIENT: (&str, &str) = ("t-client", "client-secret-1");
const OPERATOR: (&str, &str) = ("t-operator", "operator-secret-1");
const AUDITOR: (&str, &str) = ("t-auditor", "auditor-secret-1");
const BODY_LIMIT: usize = 64 * 1024;

fn new_order() -> String {
    format!("ORD-{}", Uuid::new_v4().simple())
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn nonce() -> String {
    signing::new_nonce()
}

fn create_body() -> String {
    json!({
        "amount": "10.00", "currency": "CNY", "payment_method": "alipay",
        "order_id": new_order(), "user_id": "user-1",
    })
    .to_string()
}

/// A request as it goes on the wire, and what its signature covers (they differ only when a
/// test tampers with one of them).
struct Raw<'a> {
    key: (&'a str, &'a str),
    method: &'a str,
    /// Request target sent.
    target: String,
    /// Request target signed.
    signed_target: Option<String>,
    body: Vec<u8>,
    signed_body: Option<Vec<u8>>,
    timestamp: String,
    nonce: String,
    /// Headers to leave out.
    omit: &'a [&'a str],
    extra: Vec<(&'a str, String)>,
}

impl<'a> Raw<'a> {
    fn new(key: (&'a str, &'a str), method: &'a str, target: &str, body: &str) -> Self {
        Raw {
            key,
            method,
            target: target.to_owned(),
            signed_target: None,
            body: body.as_bytes().to_vec(),
            signed_body: None,
            timestamp: now().to_string(),
            nonce: nonce(),
            omit: &[],
            extra: Vec::new(),
        }
    }

    fn at(mut self, timestamp: i64) -> Self {
        self.timestamp = timestamp.to_string();
        self
    }

    fn nonce(mut self, nonce: &str) -> Self {
        self.nonce = nonce.to_owned();
        self
    }

    fn signature(&self) -> String {
        signing::sign(
            self.key.1,
            &self.timestamp,
            &self.nonce,
            self.method,
            self.signed_target.as_deref().unwrap_or(&self.target),
            self.signed_body.as_deref().unwrap_or(&self.body),
        )
    }

    async fn send(&self, app: &TestApp) -> Answer {
        let http = reqwest::Client::new();
        let method = reqwest::Method::from_bytes(self.method.as_bytes()).unwrap();
        let mut req = http.request(method, format!("{}{}", app.base, self.target));
        let headers = [
            ("x-key-id", self.key.0.to_owned()),
            ("x-timestamp", self.timestamp.clone()),
            ("x-nonce", self.nonce.clone()),
            ("x-signature", self.signature()),
        ];
        for (k, v) in headers {
            if !self.omit.contains(&k) {
                req = req.header(k, v);
            }
        }
        for (k, v) in &self.extra {
            req = req.header(*k, v);
        }
        if !self.body.is_empty() {
            req = req
                .header("content-type", "application/json")
                .body(self.body.clone());
        }
        let resp = req.send().await.expect("request reaches the service");
        let status = resp.status().as_u16();
        let position = resp
            .headers()
            .get("x-ledger-position")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer {
            status,
            body,
            position,
        }
    }
}

fn assert_error(a: &Answer, status: u16, code: u64) {
    assert_eq!(a.status, status, "unexpected status, body {}", a.body);
    assert_eq!(
        a.body["code"].as_u64(),
        Some(code),
        "unexpected code, body {}",
        a.body
    );
    assert!(
        a.body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{}",
        a.body
    );
    assert!(
        a.body.get("data").is_some_and(Value::is_null),
        "error data must be null: {}",
        a.body
    );
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
            started.elapsed() < Duration::from_secs(30),
            "refunds never settled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.settle().await;
}

async fn event_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM events")
        .fetch_one(&app.pool().await)
        .await
        .expect("count events")
}

// ---------------------------------------------------------------------------------------
// credentials and signature
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_credentials_are_401_40101() {
    let app = TestApp::spawn().await;
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{}/api/v1/payments", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], 40101);
    assert!(body["data"].is_null());
    let r = http
        .post(format!("{}/api/v1/payments/create", app.base))
        .body(create_body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let before = event_count(&app).await;
    for header in ["x-key-id", "x-timestamp", "x-nonce", "x-signature"] {
        let omit = [header];
        let mut raw = Raw::new(CLIENT, "POST", "/api/v1/payments/create", &create_body());
        raw.omit = &omit;
        assert_error(&raw.send(&app).await, 401, 40101);
    }
    assert_eq!(event_count(&app).await, before);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_keys_and_wrong_secrets_are_401_40101() {
    let app = TestApp::spawn().await;
    let a = Raw::new(("t-nobody", "whatever"), "GET", "/api/v1/payments", "")
        .send(&app)
        .await;
    assert_error(&a, 401, 40101);
    let a = Raw::new(
        ("t-operator", "not-the-secret"),
        "GET",
        "/api/v1/payments",
        "",
    )
    .send(&app)
    .await;
    assert_error(&a, 401, 40101);
    let a = Raw::new(
        ("alipay", "not-the-secret"),
        "POST",
        "/api/v1/gateways/alipay/notify",
        "{}",
    )
    .send(&app)
    .await;
    assert_error(&a, 401, 40101);
    // A signature that is not hex, or is empty.
    let mut raw = Raw::new(OPERATOR, "GET", "/api/v1/payments", "");
    raw.omit = &["x-signature"];
    raw.extra.push(("x-signature", "zz".repeat(32)));
    assert_error(&raw.send(&app).await, 401, 40101);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_body_path_or_query_is_401_40101() {
    let app = TestApp::spawn().await;
    let (id, _) = app
        .create_payment("10.00", "CNY", "alipay", &new_order())
        .await;
    let before = event_count(&app).await;

    let mut raw = Raw::new(CLIENT, "POST", "/api/v1/payments/create", &create_body());
    raw.signed_body = Some(create_body().into_bytes());
    assert_error(&raw.send(&app).await, 401, 40101);

    let mut raw = Raw::new(AUDITOR, "GET", &format!("/api/v1/payments/{id}"), "");
    raw.signed_target = Some(format!("/api/v1/payments/{}", Uuid::now_v7()));
    assert_error(&raw.send(&app).await, 401, 40101);

    let mut raw = Raw::new(AUDITOR, "GET", "/api/v1/payments?page=2", "");
    raw.signed_target = Some("/api/v1/payments?page=1".into());
    assert_error(&raw.send(&app).await, 401, 40101);

    let mut raw = Raw::new(AUDITOR, "GET", "/api/v1/payments?page=1", "");
    raw.signed_target = Some("/api/v1/payments".into());
    assert_error(&raw.send(&app).await, 401, 40101);

    // The method is signed too.
    let mut raw = Raw::new(
        OPERATOR,
        "POST",
        &format!("/api/v1/payments/{id}/refund"),
        "",
    );
    let sig = signing::sign(
        OPERATOR.1,
        &raw.timestamp,
        &raw.nonce,
        "GET",
        &raw.target,
        b"",
    );
    raw.omit = &["x-signature"];
    raw.extra.push(("x-signature", sig));
    assert_error(&raw.send(&app).await, 401, 40101);
    assert_eq!(event_count(&app).await, before);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signature_covers_the_target_exactly_as_sent() {
    let app = TestApp::spawn().await;
    let order = format!("ORD-{}", Uuid::new_v4().simple());
    app.create_payment("10.00", "CNY", "alipay", &order).await;
    // Percent-encoding as sent: "%2D" is "-".
    let encoded = format!("/api/v1/payments?order_no={}", order.replace('-', "%2D"));
    let a = Raw::new(AUDITOR, "GET", &encoded, "").send(&app).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(data(&a)["total"], 1, "{}", a.body);
    // Signing the decoded form of an encoded target is a different request.
    let mut raw = Raw::new(AUDITOR, "GET", &encoded, "");
    raw.signed_target = Some(format!("/api/v1/payments?order_no={order}"));
    assert_error(&raw.send(&app).await, 401, 40101);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_nonces_are_refused_and_16_to_64_characters_are_accepted() {
    let app = TestApp::spawn().await;
    for bad in [
        "a".repeat(15),
        "a".repeat(65),
        "abcdefghijklmnop!".into(),
        "abcdefgh ijklmnop".into(),
    ] {
        let a = Raw::new(CLIENT, "POST", "/api/v1/payments/create", &create_body())
            .nonce(&bad)
            .send(&app)
            .await;
        assert_eq!(a.status, 401, "nonce {bad:?}: {}", a.body);
        assert!(
            matches!(a.body["code"].as_u64(), Some(40101 | 40102)),
            "{}",
            a.body
        );
        assert!(a.body["data"].is_null());
    }
    for good in [format!("{:0<16}", "a_-"), "Z9".repeat(32)] {
        let a = Raw::new(CLIENT, "POST", "/api/v1/payments/create", &create_body())
            .nonce(&good)
            .send(&app)
            .await;
        assert_eq!(a.status, 201, "nonce {good:?}: {}", a.body);
    }
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// timestamp window
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_more_than_300_seconds_off_are_401_40102() {
    let app = TestApp::spawn().await;
    let (id, _) = app
        .create_payment("10.00", "CNY", "alipay", &new_order())
        .await;
    let status = format!("/api/v1/payments/{id}/status");
    let before = event_count(&app).await;

    for skew in [-301, -3600, 302, 3600] {
        let a = Raw::new(CLIENT, "GET", &status, "")
            .at(now() + skew)
            .send(&app)
            .await;
        assert_error(&a, 401, 40102);
        let a = Raw::new(CLIENT, "POST", "/api/v1/payments/create", &create_body())
            .at(now() + skew)
            .send(&app)
            .await;
        assert_error(&a, 401, 40102);
    }
    assert_eq!(event_count(&app).await, before);

    // Inside the window at its edges. (The server's clock only moves forward between the
    // client's reading and its own, so -299 stays within 300 s and -301 stays beyond.)
    for skew in [-299, 299] {
        let a = Raw::new(CLIENT, "GET", &status, "")
            .at(now() + skew)
            .send(&app)
            .await;
        assert_eq!(a.status, 200, "skew {skew}: {}", a.body);
        let a = Raw::new(CLIENT, "POST", "/api/v1/payments/create", &create_body())
            .at(now() + skew)
            .send(&app)
            .await;
        assert_eq!(a.status, 201, "skew {skew}: {}", a.body);
    }

    // A timestamp that is not unix seconds.
    let mut raw = Raw::new(CLIENT, "GET", &status, "");
    raw.timestamp = chrono::Utc::now().to_rfc3339();
    let a = raw.send(&app).await;
    assert_eq!(a.status, 401, "{}", a.body);
    assert!(a.body["data"].is_null());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_window_follows_the_server_clock() {
    let app = TestApp::spawn().await;
    let (id, _) = app
        .create_payment("10.00", "CNY", "alipay", &new_order())
        .await;
    let status = format!("/api/v1/payments/{id}/status");
    app.state.clock.set_offset(chrono::Duration::seconds(301));
    let a = Raw::new(CLIENT, "GET", &status, "").send(&app).await;
    assert_error(&a, 401, 40102);
    app.state.clock.set_offset(chrono::Duration::seconds(299));
    let a = Raw::new(CLIENT, "GET", &status, "").send(&app).await;
    assert_eq!(a.status, 200, "{}", a.body);
    app.state.clock.set_offset(chrono::Duration::seconds(-302));
    let a = Raw::new(CLIENT, "GET", &status, "").send(&app).await;
    assert_error(&a, 401, 40102);
    app.state.clock.set_offset(chrono::Duration::zero());
    let a = Raw::new(CLIENT, "GET", &status, "").send(&app).await;
    assert_eq!(a.status, 200, "{}", a.body);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// nonces
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_nonce_on_a_post_is_401_40102_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let n = nonce();
    let first = Raw::new(CLIENT, "POST", "/api/v1/payments/create", &create_body()).nonce(&n);
    let a = first.send(&app).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let before = event_count(&app).await;
    // The exact same request again (a replay).
    assert_error(&first.send(&app).await, 401, 40102);
    // A new, correctly signed request that reuses the nonce.
    let again = Raw::new(CLIENT, "POST", "/api/v1/payments/create", &create_body()).nonce(&n);
    assert_error(&again.send(&app).await, 401, 40102);
    assert_eq!(event_count(&app).await, before, "a replay appends nothing");

    // Nonces are scoped per key: another key may use the same one.
    let other = Raw::new(OPERATOR, "POST", "/api/v1/payments/create", &create_body()).nonce(&n);
    assert_eq!(other.send(&app).await.status, 201);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nonce_used_on_one_node_is_refused_by_another_node_sharing_the_database() {
    let app = TestApp::spawn().await;
    let other = TestApp::spawn_on(app.db.clone(), Options::default()).await;
    let n = nonce();
    let a = Raw::new(CLIENT, "POST", "/api/v1/payments/create", &create_body())
        .nonce(&n)
        .send(&app)
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let before = event_count(&app).await;
    let b = Raw::new(CLIENT, "POST", "/api/v1/payments/create", &create_body())
        .nonce(&n)
        .send(&other)
        .await;
    assert_error(&b, 401, 40102);
    // And the other way round.
    let n = nonce();
    let b = Raw::new(CLIENT, "POST", "/api/v1/payments/create", &create_body())
        .nonce(&n)
        .send(&other)
        .await;
    assert_eq!(b.status, 201, "{}", b.body);
    let a = Raw::new(CLIENT, "POST", "/api/v1/payments/create", &create_body())
        .nonce(&n)
        .send(&app)
        .await;
    assert_error(&a, 401, 40102);
    assert_eq!(event_count(&app).await, before + 1);
    other.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nonce_survives_a_restart() {
    let app = TestApp::spawn().await;
    let db = app.db.clone();
    let n = nonce();
    let a = Raw::new(CLIENT, "POST", "/api/v1/payments/create", &create_body())
        .nonce(&n)
        .send(&app)
        .await;
    assert_eq!(a.status, 201);
    app.stop().await;
    let restarted = TestApp::spawn_on(db, Options::default()).await;
    let b = Raw::new(CLIENT, "POST", "/api/v1/payments/create", &create_body())
        .nonce(&n)
        .send(&restarted)
        .await;
    assert_error(&b, 401, 40102);
    restarted.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_may_reuse_a_nonce() {
    let app = TestApp::spawn().await;
    let (id, _) = app
        .create_payment("10.00", "CNY", "alipay", &new_order())
        .await;
    let n = nonce();
    for _ in 0..3 {
        let a = Raw::new(CLIENT, "GET", &format!("/api/v1/payments/{id}/status"), "")
            .nonce(&n)
            .send(&app)
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
    }
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// roles
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_reaches_exactly_its_routes() {
    let app = TestApp::spawn().await;
    let id = app.paid_payment("100.00").await;
    let refund_body = r#"{"amount":"1.00","reason":"role check"}"#;
    let create = "/api/v1/payments/create".to_owned();
    let refund = format!("/api/v1/payments/{id}/refund");
    let routes: Vec<(&str, String)> = vec![
        ("POST", create.clone()),
        ("GET", format!("/api/v1/payments/{id}/status")),
        ("GET", "/api/v1/payments/history?user_id=user-1".into()),
        ("GET", "/api/v1/payments".into()),
        ("GET", format!("/api/v1/payments/{id}")),
        ("POST", refund.clone()),
        ("GET", format!("/api/v1/payments/{id}/events")),
        ("GET", "/api/v1/events".into()),
        ("GET", "/api/v1/audit/verify".into()),
        ("GET", "/api/v1/audit/digest".into()),
        ("GET", "/api/v1/ledger/totals".into()),
    ];
    // Allowed routes per role, in the order above (SPEC §5).
    let matrix: [(&str, [bool; 11]); 5] = [
        (
            "client",
            [
                true, true, true, false, false, false, false, false, false, false, false,
            ],
        ),
        (
            "operator",
            [
                true, true, true, true, true, true, true, false, false, false, false,
            ],
        ),
        (
            "auditor",
            [
                false, true, true, true, true, false, true, true, true, true, false,
            ],
        ),
        (
            "finance",
            [
                false, true, true, true, true, false, false, false, false, false, true,
            ],
        ),
        ("admin", [true; 11]),
    ];
    let mut wrong = Vec::new();
    for (role, allowed) in matrix {
        for ((method, path), allowed) in routes.iter().zip(allowed) {
            let body = if *path == create {
                Some(create_body())
            } else if *path == refund {
                Some(refund_body.to_owned())
            } else {
                None
            };
            // Refunds let through earlier are confirmed in the background; let that finish so
            // that its event is not counted here.
            quiesce(&app).await;
            let before = event_count(&app).await;
            let a = app
                .client(role)
                .send(method, path, body.as_deref(), &[])
                .await
                .unwrap();
            let ok = a.status < 300;
            if ok != allowed {
                wrong.push(format!("{role} {method} {path}: {} {}", a.status, a.body));
            }
            if !allowed {
                assert_error(&a, 403, 40301);
                assert_eq!(
                    event_count(&app).await,
                    before,
                    "{role} {method} {path} appended events"
                );
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "role checks disagree with SPEC §5: {wrong:#?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_keys_reach_only_their_own_notify_route() {
    let app = TestApp::spawn().await;
    let (id, no) = app
        .create_payment("10.00", "CNY", "wechat", &new_order())
        .await;
    let alipay = app.gateway("alipay");
    for (method, path, body) in [
        ("GET", "/api/v1/payments".to_owned(), None),
        ("GET", format!("/api/v1/payments/{id}"), None),
        ("GET", format!("/api/v1/payments/{id}/status"), None),
        (
            "POST",
            "/api/v1/payments/create".to_owned(),
            Some(create_body()),
        ),
        (
            "POST",
            format!("/api/v1/payments/{id}/refund"),
            Some(r#"{"amount":"1.00","reason":"x"}"#.to_owned()),
        ),
        ("GET", "/api/v1/events".to_owned(), None),
        ("GET", "/api/v1/ledger/totals".to_owned(), None),
    ] {
        let a = alipay
            .send(method, &path, body.as_deref(), &[])
            .await
            .unwrap();
        assert_error(&a, 403, 40301);
    }
    let before = event_count(&app).await;
    let notice = json!({
        "payment_no": no, "callback_no": "CB-role-1", "status": "success",
        "amount": "10.00", "gateway_trade_no": "T1",
    })
    .to_string();
    // alipay's key on wechat's route.
    let a = alipay
        .send("POST", "/api/v1/gateways/wechat/notify", Some(&notice), &[])
        .await
        .unwrap();
    assert_error(&a, 403, 40301);
    // API keys cannot notify.
    for role in ["client", "operator", "auditor", "finance"] {
        let a = app
            .client(role)
            .send("POST", "/api/v1/gateways/wechat/notify", Some(&notice), &[])
            .await
            .unwrap();
        assert_error(&a, 403, 40301);
    }
    assert_eq!(event_count(&app).await, before);
    let a = app
        .gateway("wechat")
        .send("POST", "/api/v1/gateways/wechat/notify", Some(&notice), &[])
        .await
        .unwrap();
    assert_eq!(a.status, 200, "{}", a.body);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// body limit
// ---------------------------------------------------------------------------------------

/// A valid create body padded with spaces to exactly `len` bytes.
fn padded_create_body(len: usize) -> String {
    let body = create_body();
    let pad = len - body.len();
    format!("{}{}", &body[..body.len() - 1], " ".repeat(pad)) + "}"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_64_kib_is_413_41301() {
    let app = TestApp::spawn().await;
    let at_limit = padded_create_body(BODY_LIMIT);
    assert_eq!(at_limit.len(), BODY_LIMIT);
    let a = Raw::new(CLIENT, "POST", "/api/v1/payments/create", &at_limit)
        .send(&app)
        .await;
    assert_eq!(
        a.status, 201,
        "a body of exactly 64 KiB is accepted: {}",
        a.body
    );

    let before = event_count(&app).await;
    let over = padded_create_body(BODY_LIMIT + 1);
    let a = Raw::new(CLIENT, "POST", "/api/v1/payments/create", &over)
        .send(&app)
        .await;
    assert_error(&a, 413, 41301);
    let huge = padded_create_body(4 * BODY_LIMIT);
    let a = Raw::new(CLIENT, "POST", "/api/v1/payments/create", &huge)
        .send(&app)
        .await;
    assert_error(&a, 413, 41301);
    // Even unsigned, the limit answers first (the body must be read to be verified).
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/payments/create", app.base))
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(event_count(&app).await, before);
    app.stop().await;
}

/// Sends a POST with a chunked body (no Content-Length) over a raw connection; returns the
/// status code and the response text.
async fn post_chunked(app: &TestApp, target: &str, body: &[u8]) -> (u16, String) {
    let ts = now().to_string();
    let n = nonce();
    let sig = signing::sign(CLIENT.1, &ts, &n, "POST", target, body);
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST {target} HTTP/1.1\r\nHost: {}\r\nX-Key-Id: {}\r\nX-Timestamp: {ts}\r\nX-Nonce: {n}\r\n\
         X-Signature: {sig}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n",
        app.addr, CLIENT.0
    );
    let _ = stream.write_all(head.as_bytes()).await;
    for chunk in body.chunks(8192) {
        // The server may answer and close before the whole body is sent.
        if stream
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await
            .is_err()
            || stream.write_all(chunk).await.is_err()
            || stream.write_all(b"\r\n").await.is_err()
        {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_over_64_kib_without_content_length_is_413() {
    let app = TestApp::spawn().await;
    let before = event_count(&app).await;
    let (status, text) = post_chunked(
        &app,
        "/api/v1/payments/create",
        padded_create_body(2 * BODY_LIMIT).as_bytes(),
    )
    .await;
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("41301"), "{text}");
    assert_eq!(event_count(&app).await, before);
    let (status, text) =
        post_chunked(&app, "/api/v1/payments/create", create_body().as_bytes()).await;
    assert_eq!(status, 201, "a small chunked body is fine: {text}");
    app.stop().await;
}
