//! Idempotency keys, concurrent submissions and the read cache (SPEC §2 invariants, §3
//! optimistic concurrency, §5 "Idempotency", §11 "Idempotency-Key", detail cache invalidated
//! on refund), over real HTTP against the real service, PostgreSQL and NATS.

use std::time::{Duration, Instant};

use crate::common::{data, Options, TestApp};
use futures::future::join_all;
use ledger::client::Answer;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use uuid::Uuid;

const WAIT_MAX: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);

fn new_order() -> String {
    format!("ORD-{}", Uuid::new_v4().simple())
}

fn create_body(order: &str, amount: &str) -> String {
    json!({
        "amount": amount, "currency": "CNY", "payment_method": "alipay",
        "order_id": order, "user_id": "user-1",
    })
    .to_string()
}

async fn create_with_key(app: &TestApp, role: &str, key: &str, body: &str) -> Answer {
    app.client(role)
        .send(
            "POST",
            "/api/v1/payments/create",
            Some(body),
            &[("idempotency-key", key)],
        )
        .await
        .expect("create reaches the service")
}

async fn refund_with_key(app: &TestApp, id: &str, key: Option<&str>, amount: &str) -> Answer {
    let body = json!({ "amount": amount, "reason": "test refund" }).to_string();
    let headers: Vec<(&str, &str)> = key
        .map(|k| vec![("idempotency-key", k)])
        .unwrap_or_default();
    app.client("operator")
        .send(
            "POST",
            &format!("/api/v1/payments/{id}/refund"),
            Some(&body),
            &headers,
        )
        .await
        .expect("refund reaches the service")
}

async fn event_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM events")
        .fetch_one(&app.pool().await)
        .await
        .expect("count events")
}

async fn count_where(app: &TestApp, sql: &str, bind: &str) -> i64 {
    sqlx::query_scalar(sql)
        .bind(bind)
        .fetch_one(&app.pool().await)
        .await
        .expect("count")
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
        a.body.get("data").is_some_and(Value::is_null),
        "error data must be null: {}",
        a.body
    );
}

async fn detail(app: &TestApp, id: &str) -> Value {
    let a = app
        .client("operator")
        .send("GET", &format!("/api/v1/payments/{id}"), None, &[])
        .await
        .unwrap();
    assert_eq!(a.status, 200, "{}", a.body);
    data(&a).clone()
}

fn dec(v: &Value) -> Decimal {
    v.as_str()
        .expect("amount string")
        .parse()
        .expect("decimal amount")
}

// ---------------------------------------------------------------------------------------
// replays and mismatches
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_and_body_return_the_first_answer_and_append_nothing() {
    let app = TestApp::spawn().await;
    let key = format!("idem-{}", Uuid::new_v4());
    let order = new_order();
    let body = create_body(&order, "10.00");
    let first = create_with_key(&app, "client", &key, &body).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let events = event_count(&app).await;
    for _ in 0..3 {
        let again = create_with_key(&app, "client", &key, &body).await;
        assert_eq!(again.status, 201);
        assert_eq!(
            again.body, first.body,
            "a replay is the first answer, byte for byte in JSON"
        );
    }
    assert_eq!(event_count(&app).await, events, "a replay appends nothing");
    assert_eq!(
        count_where(
            &app,
            "SELECT COUNT(*) FROM payments WHERE order_id = $1",
            &order
        )
        .await,
        1
    );

    // The same key with a different body is a conflict and appends nothing either.
    let other = create_with_key(&app, "client", &key, &create_body(&new_order(), "10.00")).await;
    assert_error(&other, 409, 40903);
    let other = create_with_key(&app, "client", &key, &create_body(&order, "11.00")).await;
    assert_error(&other, 409, 40903);
    assert_eq!(event_count(&app).await, events);
    // And the key still replays the first answer afterwards.
    assert_eq!(
        create_with_key(&app, "client", &key, &body).await.body,
        first.body
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_answer_is_replayed_as_it_was() {
    let app = TestApp::spawn().await;
    let order = new_order();
    let (existing, _) = app.create_payment("10.00", "CNY", "alipay", &order).await;
    let key = format!("idem-{}", Uuid::new_v4());
    let body = create_body(&order, "10.00");
    let first = create_with_key(&app, "client", &key, &body).await;
    assert_eq!(first.status, 409);
    assert_eq!(first.body["data"]["payment_id"], existing.as_str());
    let again = create_with_key(&app, "client", &key, &body).await;
    assert_eq!(again.status, 409);
    assert_eq!(again.body, first.body);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_scoped_per_key_id_and_route() {
    let app = TestApp::spawn().await;
    let key = format!("idem-{}", Uuid::new_v4());
    let a = create_with_key(&app, "client", &key, &create_body(&new_order(), "1.00")).await;
    let b = create_with_key(&app, "operator", &key, &create_body(&new_order(), "2.00")).await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(
        b.status, 201,
        "another key id may use the same Idempotency-Key: {}",
        b.body
    );
    assert_ne!(data(&a)["payment_id"], data(&b)["payment_id"]);
    // The same key on another route is another request.
    let id = app.paid_payment("100.00").await;
    let r = refund_with_key(&app, &id, Some(&key), "1.00").await;
    assert_eq!(r.status, 201, "{}", r.body);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_replayed_with_its_key_is_refunded_once() {
    let app = TestApp::spawn().await;
    let id = app.paid_payment("100.00").await;
    let key = format!("idem-{}", Uuid::new_v4());
    let first = refund_with_key(&app, &id, Some(&key), "30.00").await;
    assert_eq!(first.status, 201, "{}", first.body);
    let events = event_count(&app).await;
    let again = refund_with_key(&app, &id, Some(&key), "30.00").await;
    assert_eq!(again.status, 201);
    assert_eq!(again.body, first.body);
    assert_eq!(
        count_where(
            &app,
            "SELECT COUNT(*) FROM payment_refunds WHERE payment_id::text = $1",
            &id
        )
        .await,
        1
    );
    assert!(
        event_count(&app).await <= events + 1,
        "at most the refund's own confirmation was appended since"
    );
    let mismatch = refund_with_key(&app, &id, Some(&key), "31.00").await;
    assert_error(&mismatch, 409, 40903);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_replayed_with_its_key_is_answered_the_same() {
    let app = TestApp::spawn().await;
    let (id, no) = app
        .create_payment("10.00", "CNY", "alipay", &new_order())
        .await;
    let body = json!({
        "payment_no": no, "callback_no": "CB-idem-1", "status": "success",
        "amount": "10.00", "gateway_trade_no": "T-idem-1",
    })
    .to_string();
    let key = format!("idem-{}", Uuid::new_v4());
    let send = || async {
        app.gateway("alipay")
            .send(
                "POST",
                "/api/v1/gateways/alipay/notify",
                Some(&body),
                &[("idempotency-key", &key)],
            )
            .await
            .unwrap()
    };
    let first = send().await;
    assert_eq!(first.status, 200, "{}", first.body);
    let events = event_count(&app).await;
    let again = send().await;
    assert_eq!(again.body, first.body);
    assert_eq!(event_count(&app).await, events);
    assert_eq!(
        detail(&app, &id).await["callbacks"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overlong_idempotency_key_is_400() {
    let app = TestApp::spawn().await;
    let before = event_count(&app).await;
    let a = create_with_key(
        &app,
        "client",
        &"k".repeat(256),
        &create_body(&new_order(), "1.00"),
    )
    .await;
    assert_error(&a, 400, 40001);
    assert_eq!(event_count(&app).await, before);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// races
// ---------------------------------------------------------------------------------------

async fn race_one_key(nodes: &[&TestApp], n: usize) {
    let app = nodes[0];
    let key = format!("idem-{}", Uuid::new_v4());
    let order = new_order();
    let body = create_body(&order, "10.00");
    let before = event_count(app).await;
    let answers = join_all((0..n).map(|i| {
        let node = nodes[i % nodes.len()];
        let client = node.client("client");
        let (key, body) = (key.clone(), body.clone());
        async move {
            client
                .send(
                    "POST",
                    "/api/v1/payments/create",
                    Some(&body),
                    &[("idempotency-key", &key)],
                )
                .await
                .unwrap()
        }
    }))
    .await;
    let mut ids = Vec::new();
    for a in &answers {
        assert_eq!(
            a.status, 201,
            "every racer gets the first answer: {}",
            a.body
        );
        ids.push(data(a)["payment_id"].as_str().unwrap().to_owned());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "all racers name the same payment: {ids:?}");
    assert_eq!(
        event_count(app).await,
        before + 1,
        "exactly one created event"
    );
    assert_eq!(
        count_where(
            app,
            "SELECT COUNT(*) FROM events WHERE event_type = 'created' AND data->>'order_id' = $1",
            &order
        )
        .await,
        1
    );
    assert_eq!(
        count_where(
            app,
            "SELECT COUNT(*) FROM payments WHERE order_id = $1",
            &order
        )
        .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_racing_requests_with_one_key_create_exactly_one_payment() {
    let app = TestApp::spawn().await;
    race_one_key(&[&app], 10).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_racing_requests_with_one_key_across_two_nodes_create_exactly_one_payment() {
    let app = TestApp::spawn().await;
    let other = TestApp::spawn_on(app.db.clone(), Options::default()).await;
    race_one_key(&[&app, &other], 10).await;
    other.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_racing_creates_for_one_order_without_a_key_leave_one_live_payment() {
    let app = TestApp::spawn().await;
    let order = new_order();
    let answers = join_all((0..10).map(|i| {
        let client = app.client("client");
        let body = create_body(&order, &format!("{}.00", i + 1));
        async move {
            client
                .send("POST", "/api/v1/payments/create", Some(&body), &[])
                .await
                .unwrap()
        }
    }))
    .await;
    let created: Vec<&Answer> = answers.iter().filter(|a| a.status == 201).collect();
    assert_eq!(
        created.len(),
        1,
        "{:?}",
        answers
            .iter()
            .map(|a| (a.status, &a.body))
            .collect::<Vec<_>>()
    );
    let winner = data(created[0])["payment_id"].clone();
    for a in answers.iter().filter(|a| a.status != 201) {
        assert_eq!(a.status, 409, "{}", a.body);
        assert_eq!(a.body["code"], 40901);
        assert_eq!(
            a.body["data"]["payment_id"], winner,
            "the conflict names the live payment"
        );
    }
    assert_eq!(
        count_where(
            &app,
            "SELECT COUNT(*) FROM payments WHERE order_id = $1",
            &order
        )
        .await,
        1
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_racing_refunds_of_ten_on_a_hundred_let_exactly_ten_through() {
    let app = TestApp::spawn().await;
    let id = app.paid_payment("100.00").await;
    let answers = join_all((0..30).map(|_| {
        let client = app.client("operator");
        let path = format!("/api/v1/payments/{id}/refund");
        async move {
            client
                .send(
                    "POST",
                    &path,
                    Some(r#"{"amount":"10.00","reason":"race"}"#),
                    &[],
                )
                .await
                .unwrap()
        }
    }))
    .await;
    let ok = answers.iter().filter(|a| a.status == 201).count();
    let refused: Vec<&Answer> = answers.iter().filter(|a| a.status != 201).collect();
    for a in &refused {
        assert_error(a, 409, 40902);
    }
    assert_eq!(ok, 10, "exactly the refundable amount goes through");

    // Refunds requested (processing or succeeded) never exceed what was paid, at any point
    // of the log.
    let a = app
        .client("auditor")
        .send("GET", &format!("/api/v1/payments/{id}/events"), None, &[])
        .await
        .unwrap();
    let mut outstanding = Decimal::ZERO;
    let mut requested = 0;
    for e in data(&a)["events"].as_array().unwrap() {
        match e["type"].as_str().unwrap() {
            "refund_requested" => {
                requested += 1;
                outstanding += dec(&e["data"]["amount"]);
            }
            "refund_failed" => outstanding -= dec(&e["data"]["amount"]),
            _ => {}
        }
        assert!(
            outstanding <= Decimal::new(10000, 2),
            "refunds exceed the paid amount at {e}"
        );
    }
    assert_eq!(requested, 10);

    // The read model agrees, now and once every refund has settled.
    let start = Instant::now();
    loop {
        let d = detail(&app, &id).await;
        let refunds = d["refunds"].as_array().unwrap();
        assert_eq!(refunds.len(), 10);
        let live: Decimal = refunds
            .iter()
            .filter(|r| r["status"] != "failed")
            .map(|r| dec(&r["amount"]))
            .sum();
        assert!(live <= Decimal::new(10000, 2), "{d}");
        if d["status"] == "refunded" {
            assert_eq!(d["refunded_amount"], "100.00");
            break;
        }
        assert!(start.elapsed() < WAIT_MAX, "refunds never settled: {d}");
        tokio::time::sleep(POLL).await;
    }
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// cache invalidation
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_detail_shows_a_refund_right_after_it() {
    let app = TestApp::spawn().await;
    let id = app.paid_payment("100.00").await;
    // Fill the caches.
    for _ in 0..2 {
        let d = detail(&app, &id).await;
        assert!(d["refunds"].as_array().unwrap().is_empty());
    }
    let list = app
        .client("operator")
        .send("GET", "/api/v1/payments?status=success", None, &[])
        .await
        .unwrap();
    assert_eq!(data(&list)["total"], 1);

    let r = refund_with_key(&app, &id, None, "100.00").await;
    assert_eq!(r.status, 201, "{}", r.body);
    let d = detail(&app, &id).await;
    let refunds = d["refunds"].as_array().unwrap();
    assert_eq!(
        refunds.len(),
        1,
        "the cached detail was not invalidated: {d}"
    );
    assert_eq!(refunds[0]["id"], data(&r)["id"]);

    // Once the gateway confirms, detail, status and list all show the refunded payment.
    let start = Instant::now();
    while detail(&app, &id).await["status"] != "refunded" {
        assert!(start.elapsed() < WAIT_MAX, "never refunded");
        tokio::time::sleep(POLL).await;
    }
    let s = app
        .client("client")
        .send("GET", &format!("/api/v1/payments/{id}/status"), None, &[])
        .await
        .unwrap();
    assert_eq!(data(&s)["status"], "refunded");
    let list = app
        .client("operator")
        .send("GET", "/api/v1/payments?status=success", None, &[])
        .await
        .unwrap();
    assert_eq!(
        data(&list)["total"],
        0,
        "the cached list was not invalidated: {}",
        list.body
    );
    let list = app
        .client("operator")
        .send("GET", "/api/v1/payments?status=refunded", None, &[])
        .await
        .unwrap();
    assert_eq!(data(&list)["total"], 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detail_cached_on_one_node_shows_a_refund_made_on_another() {
    let app = TestApp::spawn().await;
    let other = TestApp::spawn_on(app.db.clone(), Options::default()).await;
    // Which node's projector applies the refund first varies; a few rounds cover both.
    let mut stale = Vec::new();
    for round in 0..8 {
        let id = app.paid_payment("100.00").await;
        app.settle().await;
        other.settle().await;
        // Fill node one's caches.
        assert!(detail(&app, &id).await["refunds"]
            .as_array()
            .unwrap()
            .is_empty());
        let s = app
            .client("client")
            .send("GET", &format!("/api/v1/payments/{id}/status"), None, &[])
            .await
            .unwrap();
        assert_eq!(data(&s)["status"], "success");

        let r = refund_with_key(&other, &id, None, "40.00").await;
        assert_eq!(r.status, 201, "{}", r.body);
        let position = data(&r)["position"].as_i64().unwrap();
        let a = app
            .client("operator")
            .send(
                "GET",
                &format!("/api/v1/payments/{id}?min_position={position}"),
                None,
                &[],
            )
            .await
            .unwrap();
        assert_eq!(a.status, 200);
        assert!(a.position.unwrap() >= position, "{:?}", a.position);
        if data(&a)["refunds"].as_array().unwrap().len() != 1 {
            stale.push(format!(
                "round {round}: X-Ledger-Position {:?} >= {position} but the detail has no refund",
                a.position
            ));
        }
    }
    assert!(
        stale.is_empty(),
        "stale cached detail on the node that did not take the refund: {stale:#?}"
    );
    other.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_and_refunds_racing_through_two_nodes_are_counted_exactly_once() {
    let app = TestApp::spawn().await;
    let other = TestApp::spawn_on(app.db.clone(), Options::default()).await;
    let nodes = [&app, &other];
    // 12 payments of 10.00, created and paid through alternating nodes at the same time.
    let ids = join_all((0..12).map(|i| {
        let node = nodes[i % 2];
        async move {
            let (id, no) = node
                .create_payment("10.00", "CNY", "alipay", &new_order())
                .await;
            let a = nodes[(i + 1) % 2].pay("alipay", &no, "10.00").await;
            assert_eq!(a.status, 200, "{}", a.body);
            id
        }
    }))
    .await;
    // A refund of 3.00 on each, through the node that took the payment's notification
    // (a refund through the creating node is `a_command_on_one_node_sees_what_another_node_appended`).
    let refunds = join_all(
        ids.iter()
            .enumerate()
            .map(|(i, id)| refund_with_key(nodes[(i + 1) % 2], id, None, "3.00")),
    )
    .await;
    for r in &refunds {
        assert_eq!(r.status, 201, "{}", r.body);
    }
    for id in &ids {
        let start = Instant::now();
        while detail(&app, id).await["refunds"][0]["status"] == "processing" {
            assert!(start.elapsed() < WAIT_MAX, "refund never settled");
            tokio::time::sleep(POLL).await;
        }
    }
    app.settle().await;
    other.settle().await;
    for node in nodes {
        let a = node
            .client("finance")
            .send("GET", "/api/v1/ledger/totals?currency=CNY", None, &[])
            .await
            .unwrap();
        assert_eq!(a.status, 200, "{}", a.body);
        let d = data(&a);
        assert_eq!(d["matches"], true, "{d}");
        let cny = &d["currencies"][0];
        assert_eq!(cny["paid_count"], 12, "{d}");
        assert_eq!(cny["paid_amount"], "120.00", "{d}");
        assert_eq!(cny["refunded_amount"], "36.00", "{d}");
        assert_eq!(cny["net_amount"], "84.00", "{d}");
    }
    let sums: (i64, Decimal) = sqlx::query_as(
        "SELECT COUNT(*), COALESCE(SUM(refunded_amount), 0) FROM payments WHERE status = 1",
    )
    .fetch_one(&app.pool().await)
    .await
    .unwrap();
    assert_eq!(
        sums,
        (12, Decimal::new(3600, 2)),
        "read table payments counts each refund once"
    );
    other.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_on_one_node_sees_what_another_node_appended() {
    let app = TestApp::spawn().await;
    let other = TestApp::spawn_on(app.db.clone(), Options::default()).await;
    let mut wrong = Vec::new();
    for round in 0..3 {
        // Created through the first node, paid through the second...
        let (id, no) = app
            .create_payment("10.00", "CNY", "alipay", &new_order())
            .await;
        let paid = other.pay("alipay", &no, "10.00").await;
        assert_eq!(paid.status, 200, "{}", paid.body);
        assert_eq!(data(&paid)["status"], "success", "{}", paid.body);
        app.settle().await;
        assert_eq!(detail(&app, &id).await["status"], "success");
        // ...then refunded through the first node: the payment is paid, so this is a 201.
        let r = refund_with_key(&app, &id, None, "4.00").await;
        if r.status != 201 {
            wrong.push(format!(
                "round {round}: refund of a paid payment answered {} {}",
                r.status, r.body
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "a node decided against a stale state: {wrong:#?}"
    );
    other.stop().await;
    app.stop().await;
}
