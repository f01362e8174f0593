//! Every endpoint of the HTTP API (SPEC §5, §11) over real HTTP against the real service,
//! PostgreSQL and NATS: the happy path of each route with the exact shapes clients are
//! written from, the amount and currency rules, the conflicts, and the error envelope.
//! Every wait is bounded.

use std::time::{Duration, Instant};

use crate::common::{data, TestApp};
use ledger::client::Answer;
use serde_json::{json, Value};
use uuid::Uuid;

/// The longest any single wait in this file may take before the test fails.
const WAIT_MAX: Duration = Duration::from_secs(30);
/// How often a waiting test looks again.
const POLL: Duration = Duration::from_millis(50);
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn new_order() -> String {
    format!("ORD-{}", Uuid::new_v4().simple())
}

async fn get(app: &TestApp, role: &str, path: &str) -> Answer {
    app.client(role)
        .send("GET", path, None, &[])
        .await
        .expect("GET reaches the service")
}

async fn post(app: &TestApp, role: &str, path: &str, body: &str) -> Answer {
    app.client(role)
        .send("POST", path, Some(body), &[])
        .await
        .expect("POST reaches the service")
}

async fn create_raw(app: &TestApp, body: &str) -> Answer {
    post(app, "client", "/api/v1/payments/create", body).await
}

async fn create_for(
    app: &TestApp,
    amount: &str,
    currency: &str,
    method: &str,
    user: &str,
) -> Value {
    let body = json!({
        "amount": amount, "currency": currency, "payment_method": method,
        "order_id": new_order(), "user_id": user,
    });
    let a = create_raw(app, &body.to_string()).await;
    assert_eq!(a.status, 201, "create failed: {}", a.body);
    data(&a).clone()
}

async fn refund(app: &TestApp, id: &str, amount: &str, reason: &str) -> Answer {
    let body = json!({ "amount": amount, "reason": reason }).to_string();
    post(
        app,
        "operator",
        &format!("/api/v1/payments/{id}/refund"),
        &body,
    )
    .await
}

async fn notify(app: &TestApp, gateway: &str, path_method: &str, body: &Value) -> Answer {
    app.gateway(gateway)
        .send(
            "POST",
            &format!("/api/v1/gateways/{path_method}/notify"),
            Some(&body.to_string()),
            &[],
        )
        .await
        .expect("notify reaches the service")
}

fn notice(payment_no: &str, callback_no: &str, status: &str, amount: &str) -> Value {
    json!({
        "payment_no": payment_no,
        "callback_no": callback_no,
        "status": status,
        "amount": amount,
        "gateway_trade_no": format!("T{}", Uuid::new_v4().simple()),
    })
}

async fn detail(app: &TestApp, id: &str) -> Value {
    let a = get(app, "auditor", &format!("/api/v1/payments/{id}")).await;
    assert_eq!(a.status, 200, "detail failed: {}", a.body);
    data(&a).clone()
}

async fn event_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM events")
        .fetch_one(&app.pool().await)
        .await
        .expect("count events")
}

async fn callback_rows(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM payment_callbacks")
        .fetch_one(&app.pool().await)
        .await
        .expect("count callbacks")
}

/// Asserts an error answer: the HTTP status, the code, a message, and `data: null`.
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
        "no message: {}",
        a.body
    );
    assert!(
        a.body.get("data").is_some_and(Value::is_null),
        "error data must be null: {}",
        a.body
    );
}

/// Asserts a success envelope.
fn assert_ok(a: &Answer, status: u16) {
    assert_eq!(a.status, status, "unexpected status, body {}", a.body);
    assert_eq!(a.body["code"], 0, "{}", a.body);
    assert!(a.body["message"].as_str().is_some(), "{}", a.body);
}

fn is_rfc3339_utc(v: &Value) -> bool {
    v.as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .is_some_and(|t| t.offset().local_minus_utc() == 0)
}

fn is_hex64(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        s.len() == 64
            && s.chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    })
}

fn has_chinese(s: &str) -> bool {
    s.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c))
}

/// Waits (bounded) until every refund of the payment has left `processing`.
async fn refunds_settled(app: &TestApp, id: &str) -> Value {
    let start = Instant::now();
    loop {
        let d = detail(app, id).await;
        let refunds = d["refunds"].as_array().expect("refunds array");
        if !refunds.is_empty() && refunds.iter().all(|r| r["status"] != "processing") {
            return d;
        }
        assert!(start.elapsed() < WAIT_MAX, "refunds still processing: {d}");
        tokio::time::sleep(POLL).await;
    }
}

/// Creates and pays a CNY payment through alipay; returns (id, payment_no).
async fn paid(app: &TestApp, amount: &str) -> (String, String) {
    let order = new_order();
    let (id, no) = app.create_payment(amount, "CNY", "alipay", &order).await;
    let a = app.pay("alipay", &no, amount).await;
    assert_eq!(a.status, 200, "pay failed: {}", a.body);
    (id, no)
}

// ---------------------------------------------------------------------------------------
// create, status, history
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_answers_201_with_the_pending_payment_and_its_position() {
    let app = TestApp::spawn().await;
    let body = json!({
        "amount": "100.00", "currency": "CNY", "payment_method": "alipay",
        "order_id": new_order(), "user_id": "user-1",
    });
    let a = create_raw(&app, &body.to_string()).await;
    assert_ok(&a, 201);
    let d = data(&a);
    let id = d["payment_id"].as_str().expect("payment_id is a string");
    assert!(Uuid::parse_str(id).is_ok(), "payment_id is a UUID: {d}");
    assert!(
        d["payment_no"].as_str().is_some_and(|s| !s.is_empty()),
        "{d}"
    );
    // The sandbox gateway's pay page is the service's own, and is reachable unsigned.
    let url = d["payment_url"].as_str().expect("payment_url is a string");
    assert!(url.starts_with(&app.base), "{d}");
    let page = reqwest::get(url).await.unwrap();
    assert_eq!(page.status(), 200, "{url}");
    assert_eq!(d["status"], "pending");
    assert!(
        d["position"].as_i64().is_some_and(|p| p > 0),
        "position is a positive integer: {d}"
    );
    // Read your writes: the status is visible at once.
    let s = get(&app, "client", &format!("/api/v1/payments/{id}/status")).await;
    assert_ok(&s, 200);
    assert!(s.position.unwrap() >= d["position"].as_i64().unwrap());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_payment_id_status_paid_at_and_amount() {
    let app = TestApp::spawn().await;
    let (id, no) = app
        .create_payment("100.00", "CNY", "alipay", &new_order())
        .await;
    let a = get(&app, "client", &format!("/api/v1/payments/{id}/status")).await;
    assert_ok(&a, 200);
    let d = data(&a);
    assert_eq!(d["payment_id"], id.as_str());
    assert_eq!(d["status"], "pending");
    assert!(
        d.get("paid_at").is_some_and(Value::is_null),
        "paid_at null while pending: {d}"
    );
    assert_eq!(d["amount"], "100.00");

    assert_eq!(app.pay("alipay", &no, "100.00").await.status, 200);
    for role in ["client", "operator", "auditor", "finance"] {
        let a = get(&app, role, &format!("/api/v1/payments/{id}/status")).await;
        assert_ok(&a, 200);
        assert_eq!(data(&a)["status"], "success", "as {role}");
        assert!(
            is_rfc3339_utc(&data(&a)["paid_at"]),
            "paid_at is RFC 3339 UTC: {}",
            a.body
        );
    }
    let unknown = get(
        &app,
        "client",
        &format!("/api/v1/payments/{}/status", Uuid::now_v7()),
    )
    .await;
    assert_error(&unknown, 404, 40401);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_requires_user_id_and_pages_newest_first() {
    let app = TestApp::spawn().await;
    let mut ids = Vec::new();
    for amount in ["1.00", "2.00", "3.00"] {
        ids.push(
            create_for(&app, amount, "CNY", "alipay", "hist-user").await["payment_id"].clone(),
        );
    }
    create_for(&app, "9.00", "CNY", "alipay", "someone-else").await;

    assert_error(
        &get(&app, "client", "/api/v1/payments/history").await,
        400,
        40001,
    );
    assert_error(
        &get(&app, "client", "/api/v1/payments/history?user_id=").await,
        400,
        40001,
    );

    let a = get(
        &app,
        "client",
        "/api/v1/payments/history?user_id=hist-user&page=1&size=2",
    )
    .await;
    assert_ok(&a, 200);
    let d = data(&a);
    assert_eq!(d["total"], 3);
    assert_eq!(d["page"], 1);
    assert_eq!(d["size"], 2);
    let items = d["payments"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["payment_id"], ids[2], "newest first: {d}");
    assert_eq!(items[1]["payment_id"], ids[1]);
    assert_eq!(items[0]["amount"], "3.00");
    assert_eq!(items[0]["status"], "pending");
    assert!(is_rfc3339_utc(&items[0]["created_at"]));

    let a = get(
        &app,
        "client",
        "/api/v1/payments/history?user_id=hist-user&page=2&size=2",
    )
    .await;
    let d = data(&a);
    assert_eq!(d["total"], 3);
    assert_eq!(d["payments"].as_array().unwrap().len(), 1);
    assert_eq!(d["payments"][0]["payment_id"], ids[0]);

    // Default size is 10.
    let a = get(&app, "client", "/api/v1/payments/history?user_id=hist-user").await;
    assert_eq!(data(&a)["size"], 10);
    assert_eq!(data(&a)["page"], 1);
    assert_eq!(data(&a)["payments"].as_array().unwrap().len(), 3);

    // Cursors at times PostgreSQL cannot hold (schemathesis found the 500 this was): before
    // the year 1 nothing is older, after 9999 everything is.
    let id = "7efdc5da85bf6e5bb96a0ed8d3100abd";
    for (micros, expected) in [("-600095923697145994", 0), ("999999999999999999", 3)] {
        let a = get(
            &app,
            "client",
            &format!("/api/v1/payments/history?user_id=hist-user&after={micros}_{id}"),
        )
        .await;
        assert_ok(&a, 200);
        assert_eq!(
            data(&a)["payments"].as_array().unwrap().len(),
            expected,
            "after {micros}: {}",
            data(&a)
        );
    }
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// list
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_by_order_payment_no_status_and_time_newest_first() {
    let app = TestApp::spawn().await;
    let order1 = new_order();
    let (id1, no1) = app.create_payment("10.00", "CNY", "alipay", &order1).await;
    let (id2, no2) = app
        .create_payment("20.00", "CNY", "wechat", &new_order())
        .await;
    let (id3, _) = app
        .create_payment("30.00", "CNY", "bank", &new_order())
        .await;
    assert_eq!(app.pay("alipay", &no1, "10.00").await.status, 200);

    let a = get(&app, "operator", "/api/v1/payments").await;
    assert_ok(&a, 200);
    let d = data(&a);
    assert_eq!(d["total"], 3);
    let list = d["list"].as_array().unwrap();
    let ids: Vec<&str> = list.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [id3.as_str(), id2.as_str(), id1.as_str()],
        "newest first"
    );
    let item = &list[2];
    assert_eq!(item["order_no"], order1.as_str());
    assert_eq!(item["payment_no"], no1.as_str());
    assert_eq!(item["payment_method"], "alipay");
    assert_eq!(item["amount"], "10.00");
    assert_eq!(item["status"], "success");
    assert!(is_rfc3339_utc(&item["payment_time"]));
    assert!(is_rfc3339_utc(&item["created_at"]));
    assert!(list[0].get("payment_time").is_some_and(Value::is_null));

    let a = get(
        &app,
        "auditor",
        &format!("/api/v1/payments?order_no={order1}"),
    )
    .await;
    assert_eq!(data(&a)["total"], 1);
    assert_eq!(data(&a)["list"][0]["id"], id1.as_str());
    let a = get(
        &app,
        "finance",
        &format!("/api/v1/payments?payment_no={no2}"),
    )
    .await;
    assert_eq!(data(&a)["total"], 1);
    assert_eq!(data(&a)["list"][0]["id"], id2.as_str());
    // Exact match only.
    let partial = &no2[..no2.len() - 2];
    let a = get(
        &app,
        "finance",
        &format!("/api/v1/payments?payment_no={partial}"),
    )
    .await;
    assert_eq!(data(&a)["total"], 0);

    for status in ["success", "1"] {
        let a = get(
            &app,
            "operator",
            &format!("/api/v1/payments?status={status}"),
        )
        .await;
        assert_ok(&a, 200);
        assert_eq!(data(&a)["total"], 1, "status={status}");
        assert_eq!(data(&a)["list"][0]["id"], id1.as_str());
    }
    for status in ["pending", "0"] {
        let a = get(
            &app,
            "operator",
            &format!("/api/v1/payments?status={status}"),
        )
        .await;
        assert_eq!(data(&a)["total"], 2, "status={status}");
        assert_eq!(data(&a)["list"][0]["id"], id3.as_str());
        assert_eq!(data(&a)["list"][1]["id"], id2.as_str());
    }
    for status in ["failed", "2", "refunded", "3"] {
        let a = get(
            &app,
            "operator",
            &format!("/api/v1/payments?status={status}"),
        )
        .await;
        assert_ok(&a, 200);
        assert_eq!(data(&a)["total"], 0, "status={status}");
    }

    // start_time inclusive, end_time exclusive, on created_at.
    let created2 = list[1]["created_at"].as_str().unwrap().to_owned();
    let a = get(
        &app,
        "operator",
        &format!("/api/v1/payments?start_time={created2}"),
    )
    .await;
    let got: Vec<&str> = data(&a)["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, [id3.as_str(), id2.as_str()], "start_time is inclusive");
    let a = get(
        &app,
        "operator",
        &format!("/api/v1/payments?end_time={created2}"),
    )
    .await;
    let got: Vec<&str> = data(&a)["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, [id1.as_str()], "end_time is exclusive");
    let a = get(
        &app,
        "operator",
        &format!("/api/v1/payments?start_time={created2}&end_time={created2}"),
    )
    .await;
    assert_ok(&a, 200);
    assert_eq!(data(&a)["total"], 0, "an empty window is no error");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_with_default_size_10_and_refuses_bad_paging_and_filters() {
    let app = TestApp::spawn().await;
    for i in 0..12 {
        app.create_payment(&format!("{}.00", i + 1), "CNY", "alipay", &new_order())
            .await;
    }
    let a = get(&app, "operator", "/api/v1/payments").await;
    assert_ok(&a, 200);
    assert_eq!(data(&a)["total"], 12);
    assert_eq!(
        data(&a)["list"].as_array().unwrap().len(),
        10,
        "default size 10"
    );
    assert_eq!(data(&a)["list"][0]["amount"], "12.00");
    let a = get(&app, "operator", "/api/v1/payments?page=2").await;
    assert_eq!(data(&a)["list"].as_array().unwrap().len(), 2);
    assert_eq!(data(&a)["list"][1]["amount"], "1.00");
    let a = get(&app, "operator", "/api/v1/payments?page=1&size=100").await;
    assert_ok(&a, 200);
    assert_eq!(data(&a)["list"].as_array().unwrap().len(), 12);

    for bad in [
        "size=101",
        "size=0",
        "page=0",
        "page=-1",
        "page=abc",
        "status=paid",
        "status=7",
        "start_time=yesterday",
        "start_time=2030-01-02T00:00:00Z&end_time=2030-01-01T00:00:00Z",
    ] {
        let a = get(&app, "operator", &format!("/api/v1/payments?{bad}")).await;
        assert_error(&a, 400, 40001);
    }
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// detail, as_of
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detail_shows_callbacks_refunds_refunded_amount_and_masked_payer() {
    let app = TestApp::spawn().await;
    let order = new_order();
    let body = json!({
        "amount": "100.00", "currency": "CNY", "payment_method": "alipay",
        "order_id": order, "user_id": "user-payer",
        "payer": {"name": "张三", "account": "4111111111111111"},
    });
    let a = create_raw(&app, &body.to_string()).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let id = data(&a)["payment_id"].as_str().unwrap().to_owned();
    let no = data(&a)["payment_no"].as_str().unwrap().to_owned();
    let cb = format!("CB{}", Uuid::new_v4().simple());
    assert_eq!(
        notify(
            &app,
            "alipay",
            "alipay",
            &notice(&no, &cb, "success", "100.00")
        )
        .await
        .status,
        200
    );
    let r = refund(&app, &id, "30.00", "damaged").await;
    assert_eq!(r.status, 201, "{}", r.body);

    let d = refunds_settled(&app, &id).await;
    assert_eq!(d["id"], id.as_str());
    assert_eq!(d["order_no"], order.as_str());
    assert_eq!(d["payment_no"], no.as_str());
    assert_eq!(d["payment_method"], "alipay");
    assert_eq!(d["amount"], "100.00");
    assert_eq!(d["currency"], "CNY");
    assert_eq!(d["refunded_amount"], "30.00");
    assert_eq!(
        d["status"], "success",
        "a partly refunded payment stays success"
    );
    assert!(is_rfc3339_utc(&d["payment_time"]));
    assert!(
        d.get("refund_time").is_some_and(Value::is_null),
        "not fully refunded: {d}"
    );
    assert!(is_rfc3339_utc(&d["created_at"]));
    assert!(is_rfc3339_utc(&d["updated_at"]));
    assert_eq!(d["payer"], json!({"name": "张*", "account": "****1111"}));
    let text = d.to_string();
    assert!(
        !text.contains("4111111111111111") && !text.contains("张三"),
        "payer leaks: {text}"
    );

    let callbacks = d["callbacks"].as_array().unwrap();
    assert_eq!(callbacks.len(), 1);
    assert!(Uuid::parse_str(callbacks[0]["id"].as_str().unwrap()).is_ok());
    assert_eq!(callbacks[0]["callback_no"], cb.as_str());
    assert_eq!(callbacks[0]["status"], "success");
    assert!(is_rfc3339_utc(&callbacks[0]["created_at"]));

    let refunds = d["refunds"].as_array().unwrap();
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0]["id"], data(&r)["id"]);
    assert_eq!(refunds[0]["refund_no"], data(&r)["refund_no"]);
    assert_eq!(refunds[0]["amount"], "30.00");
    assert_eq!(refunds[0]["reason"], "damaged");
    assert_eq!(refunds[0]["status"], "success");
    assert!(is_rfc3339_utc(&refunds[0]["created_at"]));

    // Without payer data the payer is null; an unknown id is 404; a client may not read it.
    let (plain, _) = app
        .create_payment("5.00", "CNY", "alipay", &new_order())
        .await;
    assert!(detail(&app, &plain)
        .await
        .get("payer")
        .is_some_and(Value::is_null));
    assert_error(
        &get(
            &app,
            "auditor",
            &format!("/api/v1/payments/{}", Uuid::now_v7()),
        )
        .await,
        404,
        40401,
    );
    assert_error(
        &get(&app, "auditor", "/api/v1/payments/not-a-uuid").await,
        404,
        40401,
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detail_as_of_rebuilds_the_state_at_that_time() {
    let app = TestApp::spawn().await;
    let (id, no) = paid(&app, "100.00").await;
    let a = get(&app, "auditor", &format!("/api/v1/payments/{id}/events")).await;
    let events = data(&a)["events"].as_array().unwrap().clone();
    let created_at = events[0]["recorded_at"].as_str().unwrap().to_owned();
    let paid_event = events
        .iter()
        .find(|e| e["type"] == "paid")
        .expect("paid event");
    let paid_at =
        chrono::DateTime::parse_from_rfc3339(paid_event["recorded_at"].as_str().unwrap()).unwrap();
    let before_paid = (paid_at - chrono::Duration::microseconds(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let before_created = (chrono::DateTime::parse_from_rfc3339(&created_at).unwrap()
        - chrono::Duration::seconds(1))
    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);

    for as_of in [created_at.as_str(), before_paid.as_str()] {
        let a = get(
            &app,
            "auditor",
            &format!("/api/v1/payments/{id}?as_of={as_of}"),
        )
        .await;
        assert_ok(&a, 200);
        assert_eq!(data(&a)["status"], "pending", "as_of={as_of}: {}", a.body);
        assert_eq!(data(&a)["payment_no"], no.as_str());
        assert!(data(&a)["payment_time"].is_null());
        assert!(
            a.position.is_some(),
            "as_of answers carry the position header"
        );
    }
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let a = get(
        &app,
        "auditor",
        &format!("/api/v1/payments/{id}?as_of={now}"),
    )
    .await;
    assert_eq!(data(&a)["status"], "success");
    assert_eq!(data(&a)["callbacks"].as_array().unwrap().len(), 1);

    assert_error(
        &get(
            &app,
            "auditor",
            &format!("/api/v1/payments/{id}?as_of={before_created}"),
        )
        .await,
        404,
        40401,
    );
    assert_error(
        &get(
            &app,
            "auditor",
            &format!("/api/v1/payments/{id}?as_of=2000-01-01T00:00:00Z"),
        )
        .await,
        404,
        40401,
    );
    assert_error(
        &get(
            &app,
            "auditor",
            &format!("/api/v1/payments/{id}?as_of=last-week"),
        )
        .await,
        400,
        40001,
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// refund
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refund_answers_201_with_the_processing_refund() {
    let app = TestApp::spawn().await;
    let (id, _) = paid(&app, "100.00").await;
    let a = refund(&app, &id, "30.00", "customer asked").await;
    assert_ok(&a, 201);
    let d = data(&a);
    assert!(Uuid::parse_str(d["id"].as_str().unwrap()).is_ok(), "{d}");
    assert_eq!(d["payment_id"], id.as_str());
    assert!(d["refund_no"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(d["amount"], "30.00");
    assert_eq!(d["reason"], "customer asked");
    // SPEC §11: processing, or success when the gateway already confirmed it.
    assert!(
        d["status"] == "processing" || d["status"] == "success",
        "{d}"
    );
    assert!(is_rfc3339_utc(&d["created_at"]));
    assert!(d["position"].as_i64().is_some_and(|p| p > 0));
    // Read your writes: the detail shows the refund.
    let det = detail(&app, &id).await;
    assert_eq!(det["refunds"][0]["id"], d["id"]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refund_conflicts_unpaid_over_refundable_and_fully_refunded() {
    let app = TestApp::spawn().await;
    let (pending, _) = app
        .create_payment("100.00", "CNY", "alipay", &new_order())
        .await;
    assert_error(&refund(&app, &pending, "10.00", "nope").await, 409, 40901);

    let (id, _) = paid(&app, "100.00").await;
    assert_error(&refund(&app, &id, "100.01", "too much").await, 409, 40902);
    assert_eq!(refund(&app, &id, "60.00", "first").await.status, 201);
    assert_error(&refund(&app, &id, "40.01", "too much").await, 409, 40902);
    assert_eq!(refund(&app, &id, "40.00", "rest").await.status, 201);
    let d = refunds_settled(&app, &id).await;
    let start = Instant::now();
    let mut d = d;
    while d["status"] != "refunded" {
        assert!(
            start.elapsed() < WAIT_MAX,
            "payment never became refunded: {d}"
        );
        tokio::time::sleep(POLL).await;
        d = detail(&app, &id).await;
    }
    assert_eq!(d["refunded_amount"], "100.00");
    assert!(is_rfc3339_utc(&d["refund_time"]));
    assert_error(&refund(&app, &id, "1.00", "again").await, 409, 40901);

    // Bad refund input.
    assert_error(
        &refund(&app, &Uuid::now_v7().to_string(), "1.00", "x").await,
        404,
        40401,
    );
    let (id2, _) = paid(&app, "10.00").await;
    for body in [
        json!({"amount": "0", "reason": "x"}),
        json!({"amount": "-1.00", "reason": "x"}),
        json!({"amount": "1.005", "reason": "x"}),
        json!({"amount": "1.00", "reason": ""}),
        json!({"amount": "1.00", "reason": "r".repeat(256)}),
        json!({"amount": "1.00"}),
        json!({"amount": "1.00", "reason": "x", "extra": 1}),
    ] {
        let a = post(
            &app,
            "operator",
            &format!("/api/v1/payments/{id2}/refund"),
            &body.to_string(),
        )
        .await;
        assert_error(&a, 400, 40001);
    }
    let ok = post(
        &app,
        "operator",
        &format!("/api/v1/payments/{id2}/refund"),
        &json!({"amount": 1.5, "reason": "r".repeat(255)}).to_string(),
    )
    .await;
    assert_eq!(ok.status, 201, "{}", ok.body);
    assert_eq!(data(&ok)["amount"], "1.50");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// notify
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_records_the_callback_and_pays() {
    let app = TestApp::spawn().await;
    let (id, no) = app
        .create_payment("100.00", "CNY", "wechat", &new_order())
        .await;
    let cb = format!("CB{}", Uuid::new_v4().simple());
    let a = notify(
        &app,
        "wechat",
        "wechat",
        &notice(&no, &cb, "success", "100.00"),
    )
    .await;
    assert_ok(&a, 200);
    assert_eq!(data(&a)["status"], "success", "{}", a.body);
    let d = detail(&app, &id).await;
    assert_eq!(d["status"], "success");
    assert_eq!(d["callbacks"][0]["callback_no"], cb.as_str());
    assert_eq!(d["callbacks"][0]["status"], "success");

    // The same callback_no again: 200 and nothing appended.
    let before = event_count(&app).await;
    let callbacks_before = callback_rows(&app).await;
    let again = notify(
        &app,
        "wechat",
        "wechat",
        &notice(&no, &cb, "success", "100.00"),
    )
    .await;
    assert_ok(&again, 200);
    assert_eq!(
        event_count(&app).await,
        before,
        "a duplicate callback appends nothing"
    );
    assert_eq!(callback_rows(&app).await, callbacks_before);
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
async fn notify_with_a_different_amount_is_recorded_failed_and_does_not_pay() {
    let app = TestApp::spawn().await;
    let (id, no) = app
        .create_payment("100.00", "CNY", "alipay", &new_order())
        .await;
    let before = event_count(&app).await;
    let a = notify(
        &app,
        "alipay",
        "alipay",
        &notice(&no, "CB-mismatch-1", "success", "99.99"),
    )
    .await;
    assert_ok(&a, 200);
    assert_eq!(data(&a)["status"], "failed", "{}", a.body);
    assert!(event_count(&app).await > before, "the callback is recorded");
    let d = detail(&app, &id).await;
    assert_eq!(d["status"], "pending");
    assert_eq!(d["callbacks"].as_array().unwrap().len(), 1);
    assert_eq!(d["callbacks"][0]["status"], "failed");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_from_another_gateway_or_for_an_unknown_payment_is_refused_and_records_nothing() {
    let app = TestApp::spawn().await;
    let (id, no) = app
        .create_payment("100.00", "CNY", "alipay", &new_order())
        .await;
    let before = event_count(&app).await;
    let a = notify(
        &app,
        "wechat",
        "wechat",
        &notice(&no, "CB-other-gw", "success", "100.00"),
    )
    .await;
    assert_error(&a, 409, 40901);
    assert_eq!(event_count(&app).await, before, "nothing recorded");
    assert_eq!(callback_rows(&app).await, 0);
    assert_eq!(detail(&app, &id).await["status"], "pending");

    let a = notify(
        &app,
        "alipay",
        "alipay",
        &notice("PNOSUCHPAYMENT", "CB-unknown", "success", "1.00"),
    )
    .await;
    assert_error(&a, 404, 40401);
    assert_eq!(event_count(&app).await, before);

    let mut bad = notice(&no, "CB-bad-status", "paid", "100.00");
    let a = notify(&app, "alipay", "alipay", &bad).await;
    assert_error(&a, 400, 40001);
    bad["status"] = json!("success");
    bad["unexpected"] = json!(true);
    assert_error(&notify(&app, "alipay", "alipay", &bad).await, 400, 40001);
    assert_eq!(event_count(&app).await, before);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// events, feed, audit, totals
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_events_are_versioned_from_1_and_hash_chained() {
    let app = TestApp::spawn().await;
    let (id, _) = paid(&app, "100.00").await;
    for role in ["auditor", "operator"] {
        let a = get(&app, role, &format!("/api/v1/payments/{id}/events")).await;
        assert_ok(&a, 200);
        assert!(a.position.is_some());
        let events = data(&a)["events"].as_array().unwrap();
        let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["created", "callback_received", "paid"]);
        if role == "auditor" {
            // Read models take their times from the events (SPEC §11 "Read models").
            let d = detail(&app, &id).await;
            assert_eq!(d["created_at"], events[0]["recorded_at"], "{d}");
            assert_eq!(d["updated_at"], events[2]["recorded_at"], "{d}");
            assert!(d["payment_time"].is_string());
        }
        let mut prev = GENESIS.to_owned();
        let mut last_position = 0;
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e["version"], (i + 1) as i64, "1-based versions: {e}");
            assert_eq!(e["payment_id"], id.as_str());
            assert!(Uuid::parse_str(e["event_id"].as_str().unwrap()).is_ok());
            let p = e["position"].as_i64().unwrap();
            assert!(p > last_position, "positions increase");
            last_position = p;
            assert!(e["data"].is_object() && e["metadata"].is_object(), "{e}");
            assert!(is_rfc3339_utc(&e["recorded_at"]));
            assert!(is_hex64(&e["hash"]) && is_hex64(&e["prev_hash"]), "{e}");
            assert_eq!(
                e["prev_hash"],
                prev.as_str(),
                "chained to the previous event"
            );
            prev = e["hash"].as_str().unwrap().to_owned();
        }
        let metadata = events[0]["metadata"].as_object().unwrap();
        assert!(
            metadata.values().any(|v| v == "t-client"),
            "metadata names the actor key id: {metadata:?}"
        );
    }
    assert_error(
        &get(&app, "client", &format!("/api/v1/payments/{id}/events")).await,
        403,
        40301,
    );
    assert_error(
        &get(
            &app,
            "auditor",
            &format!("/api/v1/payments/{}/events", Uuid::now_v7()),
        )
        .await,
        404,
        40401,
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_feed_pages_in_position_order() {
    let app = TestApp::spawn().await;
    paid(&app, "1.00").await;
    paid(&app, "2.00").await;
    let total = event_count(&app).await;
    assert_eq!(total, 6);

    let mut after = 0;
    let mut seen = Vec::new();
    for _ in 0..10 {
        let a = get(
            &app,
            "auditor",
            &format!("/api/v1/events?after={after}&limit=4"),
        )
        .await;
        assert_ok(&a, 200);
        assert!(a.position.is_some());
        let events = data(&a)["events"].as_array().unwrap();
        assert!(events.len() <= 4);
        if events.is_empty() {
            assert_eq!(
                data(&a)["next_after"],
                after,
                "an empty page keeps next_after"
            );
            break;
        }
        for e in events {
            seen.push(e["position"].as_i64().unwrap());
            assert!(
                e["type"].is_string()
                    && is_hex64(&e["hash"])
                    && e["version"].as_i64().unwrap() >= 1
            );
        }
        assert_eq!(data(&a)["next_after"], *seen.last().unwrap());
        after = data(&a)["next_after"].as_i64().unwrap();
    }
    assert_eq!(
        seen,
        (1..=total).collect::<Vec<_>>(),
        "every event once, in position order"
    );

    let a = get(&app, "auditor", "/api/v1/events").await;
    assert_eq!(
        data(&a)["events"].as_array().unwrap().len() as i64,
        total,
        "default limit 100"
    );
    assert_ok(
        &get(&app, "auditor", "/api/v1/events?limit=1000").await,
        200,
    );
    assert_error(
        &get(&app, "auditor", "/api/v1/events?limit=1001").await,
        400,
        40001,
    );
    assert_error(
        &get(&app, "auditor", "/api/v1/events?limit=0").await,
        400,
        40001,
    );
    assert_error(
        &get(&app, "auditor", "/api/v1/events?after=-1").await,
        400,
        40001,
    );
    assert_error(&get(&app, "operator", "/api/v1/events").await, 403, 40301);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_and_digest_describe_the_whole_log() {
    let app = TestApp::spawn().await;
    paid(&app, "1.00").await;
    paid(&app, "2.00").await;
    let total = event_count(&app).await;
    let feed = get(&app, "auditor", "/api/v1/events?limit=1000").await;
    let last = data(&feed)["events"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();

    let a = get(&app, "auditor", "/api/v1/audit/verify").await;
    assert_ok(&a, 200);
    assert!(a.position.is_some());
    let v = data(&a);
    assert_eq!(v["ok"], true);
    assert_eq!(v["events_checked"], total);
    assert_eq!(v["head_position"], last["position"]);
    assert_eq!(v["head_hash"], last["hash"]);
    assert!(
        v.get("first_broken_position").is_some_and(Value::is_null),
        "{v}"
    );

    let a = get(&app, "auditor", "/api/v1/audit/digest").await;
    assert_ok(&a, 200);
    assert!(a.position.is_some());
    let digest: ledger::store::digest::SignedDigest = serde_json::from_value(data(&a).clone())
        .expect("digest has position, root_hash, signed_at, public_key, signature");
    assert_eq!(digest.position, total);
    assert!(is_hex64(&json!(digest.root_hash)));
    assert!(chrono::DateTime::parse_from_rfc3339(&digest.signed_at).is_ok());
    let trusted = ledger::store::digest::SigningKey::from_hex(&"5e".repeat(32))
        .unwrap()
        .public_key_hex();
    ledger::store::digest::verify_digest_with_key(&digest, &trusted)
        .expect("the digest is signed by LEDGER_SIGNING_KEY");

    for path in ["/api/v1/audit/verify", "/api/v1/audit/digest"] {
        assert_error(&get(&app, "finance", path).await, 403, 40301);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_totals_count_payments_and_refunds_by_the_time_of_their_events() {
    let app = TestApp::spawn().await;
    let (first, _) = paid(&app, "10.00").await;
    let (second, _) = paid(&app, "20.00").await;
    assert_eq!(refund(&app, &first, "4.00", "partial").await.status, 201);
    refunds_settled(&app, &first).await;
    app.settle().await;
    let time_of = |events: &Value, kind: &str| -> String {
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["type"] == kind)
            .unwrap_or_else(|| panic!("no {kind} event"))["recorded_at"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let ev1 =
        data(&get(&app, "auditor", &format!("/api/v1/payments/{first}/events")).await).clone();
    let ev2 = data(
        &get(
            &app,
            "auditor",
            &format!("/api/v1/payments/{second}/events"),
        )
        .await,
    )
    .clone();
    let second_paid = time_of(&ev2, "paid");
    let refunded = time_of(&ev1, "refunded");

    // [second paid, ∞): the second payment and the refund (made after it).
    let a = get(
        &app,
        "finance",
        &format!("/api/v1/ledger/totals?start_time={second_paid}"),
    )
    .await;
    let cny = &data(&a)["currencies"][0];
    assert_eq!(cny["paid_count"], 1, "{}", a.body);
    assert_eq!(cny["paid_amount"], "20.00");
    assert_eq!(cny["refunded_amount"], "4.00");
    assert_eq!(cny["net_amount"], "16.00");
    assert_eq!(data(&a)["matches"], true);
    // [-∞, second paid): the first payment only; the refund came later.
    let a = get(
        &app,
        "finance",
        &format!("/api/v1/ledger/totals?end_time={second_paid}"),
    )
    .await;
    let cny = &data(&a)["currencies"][0];
    assert_eq!(cny["paid_count"], 1, "{}", a.body);
    assert_eq!(cny["paid_amount"], "10.00");
    assert_eq!(cny["refunded_amount"], "0.00");
    // [refunded, ∞): only the refund, and paid_count counts no payment.
    let a = get(
        &app,
        "finance",
        &format!("/api/v1/ledger/totals?start_time={refunded}"),
    )
    .await;
    let cny = &data(&a)["currencies"][0];
    assert_eq!(cny["paid_count"], 0, "{}", a.body);
    assert_eq!(cny["paid_amount"], "0.00");
    assert_eq!(cny["refunded_amount"], "4.00");
    assert_eq!(cny["net_amount"], "-4.00");
    assert_eq!(data(&a)["matches"], true);
    assert_error(
        &get(
            &app,
            "finance",
            "/api/v1/ledger/totals?start_time=2030-01-02T00:00:00Z&end_time=2030-01-01T00:00:00Z",
        )
        .await,
        400,
        40001,
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_amounts_are_shown_with_the_currency_scale() {
    let app = TestApp::spawn().await;
    let (id, no) = app
        .create_payment("100.00", "CNY", "alipay", &new_order())
        .await;
    // "100" is the same amount as "100.00": it pays, and is shown with two places.
    let a = notify(
        &app,
        "alipay",
        "alipay",
        &notice(&no, "CB-scale-1", "success", "100"),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(data(&a)["status"], "success", "{}", a.body);
    let d = detail(&app, &id).await;
    assert_eq!(d["status"], "success");
    assert_eq!(d["callbacks"][0]["amount"], "100.00", "{}", d["callbacks"]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_totals_are_exact_per_currency_and_match_the_read_tables() {
    let app = TestApp::spawn().await;
    let (id, _) = paid(&app, "100.00").await;
    paid(&app, "50.10").await;
    app.create_payment("7.00", "CNY", "alipay", &new_order())
        .await; // never paid: not counted
    let (_, jpy_no) = app
        .create_payment("100", "JPY", "wechat", &new_order())
        .await;
    assert_eq!(app.pay("wechat", &jpy_no, "100").await.status, 200);
    assert_eq!(refund(&app, &id, "30.00", "partial").await.status, 201);
    refunds_settled(&app, &id).await;
    app.settle().await;

    let a = get(&app, "finance", "/api/v1/ledger/totals").await;
    assert_ok(&a, 200);
    assert!(a.position.is_some());
    let d = data(&a);
    assert_eq!(d["matches"], true, "{d}");
    let currencies = d["currencies"].as_array().unwrap();
    let cny = currencies
        .iter()
        .find(|c| c["currency"] == "CNY")
        .expect("CNY totals");
    assert_eq!(cny["paid_count"], 2);
    assert_eq!(cny["paid_amount"], "150.10");
    assert_eq!(cny["refunded_amount"], "30.00");
    assert_eq!(cny["net_amount"], "120.10");
    assert_eq!(cny["matches"], true);
    let jpy = currencies
        .iter()
        .find(|c| c["currency"] == "JPY")
        .expect("JPY totals");
    assert_eq!(jpy["paid_count"], 1);
    assert_eq!(jpy["paid_amount"], "100");
    assert_eq!(jpy["refunded_amount"], "0");
    assert_eq!(jpy["net_amount"], "100");
    assert_eq!(currencies.len(), 2);

    let a = get(&app, "finance", "/api/v1/ledger/totals?currency=JPY").await;
    let only = data(&a)["currencies"].as_array().unwrap();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0]["currency"], "JPY");
    assert_error(
        &get(&app, "finance", "/api/v1/ledger/totals?currency=XYZ").await,
        400,
        40001,
    );
    // A window before anything was paid is empty, and still matches.
    let a = get(
        &app,
        "finance",
        "/api/v1/ledger/totals?end_time=2000-01-01T00:00:00Z",
    )
    .await;
    assert_eq!(data(&a)["matches"], true);
    assert_eq!(
        data(&a)["currencies"].as_array().unwrap().len(),
        0,
        "{}",
        a.body
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// position header, min_position
// ---------------------------------------------------------------------------------------

fn every_get(id: &str) -> Vec<(&'static str, String)> {
    vec![
        ("client", format!("/api/v1/payments/{id}/status")),
        (
            "client",
            "/api/v1/payments/history?user_id=user-1".to_owned(),
        ),
        ("operator", "/api/v1/payments".to_owned()),
        ("operator", format!("/api/v1/payments/{id}")),
        ("auditor", format!("/api/v1/payments/{id}/events")),
        ("auditor", "/api/v1/events".to_owned()),
        ("auditor", "/api/v1/audit/verify".to_owned()),
        ("auditor", "/api/v1/audit/digest".to_owned()),
        ("finance", "/api/v1/ledger/totals".to_owned()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_get_carries_the_position_header() {
    let app = TestApp::spawn().await;
    let (id, no) = app
        .create_payment("100.00", "CNY", "alipay", &new_order())
        .await;
    let paid = app.pay("alipay", &no, "100.00").await;
    let position = data(&paid)["position"]
        .as_i64()
        .expect("notify answers carry data.position");
    for (role, path) in every_get(&id) {
        let a = get(&app, role, &path).await;
        assert_ok(&a, 200);
        let p = a
            .position
            .unwrap_or_else(|| panic!("GET {path} has no X-Ledger-Position"));
        assert!(
            p >= position,
            "GET {path}: position {p} is before the write at {position}"
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_position_waits_until_the_read_models_reach_it_on_every_get() {
    let app = TestApp::spawn().await;
    let (id, _) = app
        .create_payment("100.00", "CNY", "alipay", &new_order())
        .await;
    let mut late = Vec::new();
    for (role, path) in every_get(&id) {
        app.settle().await;
        let head = event_count(&app).await;
        let target = head + 1;
        let sep = if path.contains('?') { '&' } else { '?' };
        let waiting_path = format!("{path}{sep}min_position={target}");
        let client = app.client(role);
        let waiting =
            tokio::spawn(
                async move { client.send("GET", &waiting_path, None, &[]).await.unwrap() },
            );
        // The write that reaches the position comes after the read was sent.
        tokio::time::sleep(Duration::from_millis(200)).await;
        app.create_payment("1.00", "CNY", "alipay", &new_order())
            .await;
        let a = tokio::time::timeout(WAIT_MAX, waiting)
            .await
            .expect("bounded")
            .unwrap();
        assert_ok(&a, 200);
        match a.position {
            Some(p) if p >= target => {}
            Some(p) => late.push(format!("{path}: answered at {p} < min_position {target}")),
            None => late.push(format!("{path}: no X-Ledger-Position")),
        }
    }
    assert!(
        late.is_empty(),
        "GETs that did not wait for min_position: {late:#?}"
    );
    let a = get(&app, "operator", "/api/v1/payments?min_position=abc").await;
    assert_error(&a, 400, 40001);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_waiting_on_min_position_sees_the_new_payment() {
    let app = TestApp::spawn().await;
    app.settle().await;
    let target = event_count(&app).await + 1;
    let client = app.client("operator");
    let path = format!("/api/v1/payments?min_position={target}");
    let waiting = tokio::spawn(async move { client.send("GET", &path, None, &[]).await.unwrap() });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (id, _) = app
        .create_payment("1.00", "CNY", "alipay", &new_order())
        .await;
    let a = tokio::time::timeout(WAIT_MAX, waiting)
        .await
        .expect("bounded")
        .unwrap();
    assert_ok(&a, 200);
    assert_eq!(data(&a)["total"], 1, "{}", a.body);
    assert_eq!(data(&a)["list"][0]["id"], id.as_str());
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// operational routes
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operational_routes_answer_without_a_signature() {
    let app = TestApp::spawn().await;
    // Some traffic first so that the request counter exists.
    app.create_payment("1.00", "CNY", "alipay", &new_order())
        .await;
    let http = reqwest::Client::new();

    let r = http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], 0);

    let r = http
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], 0);
    assert_eq!(body["data"]["ready"], true, "{body}");

    let r = http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = r.text().await.unwrap();
    assert!(
        text.contains("ledger_http_requests_total"),
        "metrics lack the request counter:\n{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("# TYPE ")),
        "Prometheus text format"
    );

    let r = http.get(format!("{}/docs", app.base)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        text.to_ascii_lowercase().contains("<html"),
        "docs are HTML: {text:.200}"
    );

    let r = http
        .get(format!("{}/api/v1/openapi.json", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let doc: Value = r.json().await.unwrap();
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with('3')),
        "{doc:.200}"
    );
    assert!(doc["paths"]["/api/v1/payments/create"].is_object());
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// input rules: amounts, currencies, fields, conflicts
// ---------------------------------------------------------------------------------------

fn create_body(amount: Value, currency: &str) -> String {
    json!({
        "amount": amount, "currency": currency, "payment_method": "alipay",
        "order_id": new_order(), "user_id": "user-1",
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amounts_are_exact_decimals_with_the_currency_scale() {
    let app = TestApp::spawn().await;
    let order = new_order();
    let raw = format!(
        r#"{{"amount": 100.1, "currency": "CNY", "payment_method": "alipay", "order_id": "{order}", "user_id": "u"}}"#
    );
    let a = create_raw(&app, &raw).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let id = data(&a)["payment_id"].as_str().unwrap().to_owned();
    assert_eq!(detail(&app, &id).await["amount"], "100.10");

    let a = create_raw(&app, &create_body(json!("100"), "JPY")).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let id = data(&a)["payment_id"].as_str().unwrap().to_owned();
    assert_eq!(detail(&app, &id).await["amount"], "100");
    let s = get(&app, "client", &format!("/api/v1/payments/{id}/status")).await;
    assert_eq!(data(&s)["amount"], "100");

    let a = create_raw(&app, &create_body(json!("0.3"), "CNY")).await;
    assert_eq!(a.status, 201);
    let id = data(&a)["payment_id"].as_str().unwrap().to_owned();
    assert_eq!(detail(&app, &id).await["amount"], "0.30");
    let a = create_raw(&app, &create_body(json!("1000000000000"), "CNY")).await;
    assert_eq!(a.status, 201, "the largest amount is accepted: {}", a.body);

    let before = event_count(&app).await;
    for (amount, currency) in [
        (json!("1.005"), "CNY"),
        (json!(1.005), "CNY"),
        (json!("100.5"), "JPY"),
        (json!("0"), "CNY"),
        (json!("-1.00"), "CNY"),
        (json!("1000000000000.01"), "CNY"),
        (json!("abc"), "CNY"),
        (json!(""), "CNY"),
        (json!(null), "CNY"),
        (json!(true), "CNY"),
        (json!("100.00"), "XXX"),
        (json!("100.00"), "cny"),
        (json!("100.00"), "RMB"),
        (json!("100.00"), ""),
    ] {
        let a = create_raw(&app, &create_body(amount.clone(), currency)).await;
        assert_error(&a, 400, 40001);
    }
    assert_eq!(
        event_count(&app).await,
        before,
        "refused input appends nothing"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_or_unknown_fields_and_bad_values_are_400() {
    let app = TestApp::spawn().await;
    let valid = json!({
        "amount": "1.00", "currency": "CNY", "payment_method": "alipay",
        "order_id": "ORD-x", "user_id": "user-1",
    });
    let mut cases: Vec<String> = vec![
        String::new(),
        "not json".into(),
        "[]".into(),
        "{".into(),
        r#"{"amount":"1.00"}"#.into(),
    ];
    let mut with = |k: &str, v: Value| {
        let mut b = valid.clone();
        b[k] = v;
        cases.push(b.to_string());
    };
    with("extra", json!("unknown field"));
    with("payment_method", json!("paypal"));
    with("payment_method", json!("ALIPAY"));
    with("order_id", json!(""));
    with("order_id", json!("o".repeat(65)));
    with("order_id", json!("bad\u{7}order"));
    with("user_id", json!(""));
    with("user_id", json!("u".repeat(65)));
    with("user_id", json!(42));
    with("payer", json!({"name": "a", "phone": "1"}));
    with("payer", json!("张三"));
    for field in [
        "amount",
        "currency",
        "payment_method",
        "order_id",
        "user_id",
    ] {
        let mut b = valid.clone();
        b.as_object_mut().unwrap().remove(field);
        cases.push(b.to_string());
    }
    let before = event_count(&app).await;
    for body in &cases {
        let a = create_raw(&app, body).await;
        assert_error(&a, 400, 40001);
    }
    assert_eq!(event_count(&app).await, before);
    // The limits themselves are accepted.
    let mut b = valid.clone();
    b["order_id"] = json!("o".repeat(64));
    b["user_id"] = json!("u".repeat(64));
    assert_eq!(create_raw(&app, &b.to_string()).await.status, 201);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_live_payment_for_an_order_is_409_naming_the_existing_one() {
    let app = TestApp::spawn().await;
    let order = new_order();
    let (existing, no) = app.create_payment("10.00", "CNY", "alipay", &order).await;
    let body = json!({
        "amount": "20.00", "currency": "CNY", "payment_method": "wechat",
        "order_id": order, "user_id": "user-1",
    });
    let before = event_count(&app).await;
    let a = create_raw(&app, &body.to_string()).await;
    assert_eq!(a.status, 409, "{}", a.body);
    assert_eq!(a.body["code"], 40901);
    assert!(a.body["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert_eq!(a.body["data"], json!({"payment_id": existing}));
    assert_eq!(event_count(&app).await, before);
    // Still so once the first is paid (success is live too).
    assert_eq!(app.pay("alipay", &no, "10.00").await.status, 200);
    let a = create_raw(&app, &body.to_string()).await;
    assert_eq!(a.status, 409);
    assert_eq!(a.body["data"]["payment_id"], existing.as_str());
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// envelope, routing, language
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_wrong_methods_answer_the_envelope() {
    let app = TestApp::spawn().await;
    let a = get(&app, "admin", "/api/v1/nothing-here").await;
    assert_eq!(a.status, 404, "{}", a.body);
    assert!(
        a.body["code"].as_u64().is_some_and(|c| c != 0),
        "{}",
        a.body
    );
    assert!(
        a.body["data"].is_null() && a.body["message"].is_string(),
        "{}",
        a.body
    );

    let r = reqwest::get(format!("{}/no-such-page", app.base))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.expect("unknown routes answer JSON");
    assert!(
        body["code"].as_u64().is_some_and(|c| c != 0) && body["data"].is_null(),
        "{body}"
    );

    for (method, path) in [
        ("DELETE", "/api/v1/payments"),
        ("PUT", "/api/v1/payments/create"),
        ("GET", "/api/v1/gateways/alipay/notify"),
    ] {
        let a = app
            .client("admin")
            .send(method, path, None, &[])
            .await
            .unwrap();
        assert_eq!(a.status, 405, "{method} {path}: {}", a.body);
        assert!(
            a.body["code"].as_u64().is_some_and(|c| c != 0),
            "{}",
            a.body
        );
        assert!(
            a.body["data"].is_null() && a.body["message"].is_string(),
            "{}",
            a.body
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_language_zh_answers_in_chinese() {
    let app = TestApp::spawn().await;
    for lang in ["zh-CN,zh;q=0.9", "zh", "zh-TW"] {
        let a = app
            .client("auditor")
            .send(
                "GET",
                &format!("/api/v1/payments/{}", Uuid::now_v7()),
                None,
                &[("accept-language", lang)],
            )
            .await
            .unwrap();
        assert_error(&a, 404, 40401);
        assert!(
            has_chinese(a.body["message"].as_str().unwrap()),
            "{lang}: {}",
            a.body
        );
        let bad = app
            .client("client")
            .send(
                "POST",
                "/api/v1/payments/create",
                Some("{}"),
                &[("accept-language", lang)],
            )
            .await
            .unwrap();
        assert_error(&bad, 400, 40001);
        assert!(
            has_chinese(bad.body["message"].as_str().unwrap()),
            "{lang}: {}",
            bad.body
        );
    }
    let (id, _) = app
        .create_payment("1.00", "CNY", "alipay", &new_order())
        .await;
    let a = app
        .client("client")
        .send(
            "GET",
            &format!("/api/v1/payments/{id}/status"),
            None,
            &[("accept-language", "zh-CN,zh;q=0.9")],
        )
        .await
        .unwrap();
    assert_ok(&a, 200);
    assert!(
        has_chinese(a.body["message"].as_str().unwrap()),
        "{}",
        a.body
    );

    for lang in ["en-US,en;q=0.9", "en,zh;q=0.5", "fr"] {
        let a = app
            .client("auditor")
            .send(
                "GET",
                &format!("/api/v1/payments/{}", Uuid::now_v7()),
                None,
                &[("accept-language", lang)],
            )
            .await
            .unwrap();
        assert_error(&a, 404, 40401);
        assert!(
            !has_chinese(a.body["message"].as_str().unwrap()),
            "{lang}: {}",
            a.body
        );
    }
    app.stop().await;
}
