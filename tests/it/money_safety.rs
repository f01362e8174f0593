//! The paths that could lose, double, strand or forge money, or let one caller exhaust the
//! service (issue "Money safety"), each driven through the real service on real PostgreSQL.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{json, Value};
use sqlx::Row;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use crate::common::{data, Options, TestApp};
use ledger::app::ServeRole;
use ledger::client::Answer;

fn new_order() -> String {
    format!("ORD-{}", Uuid::new_v4().simple())
}

async fn notify(
    app: &TestApp,
    method: &str,
    payment_no: &str,
    callback_no: &str,
    status: &str,
    amount: &str,
    trade_no: &str,
) -> Answer {
    let body = json!({
        "payment_no": payment_no, "callback_no": callback_no, "status": status,
        "amount": amount, "gateway_trade_no": trade_no,
    });
    app.gateway(method)
        .send(
            "POST",
            &format!("/api/v1/gateways/{method}/notify"),
            Some(&body.to_string()),
            &[],
        )
        .await
        .expect("notify answers")
}

async fn get(app: &TestApp, role: &str, path: &str) -> Answer {
    app.client(role)
        .send("GET", path, None, &[])
        .await
        .expect("GET answers")
}

async fn detail(app: &TestApp, id: &str) -> Value {
    let a = get(app, "operator", &format!("/api/v1/payments/{id}")).await;
    assert_eq!(a.status, 200, "{}", a.body);
    data(&a).clone()
}

async fn refund(app: &TestApp, id: &str, amount: &str, key: Option<&str>) -> Answer {
    let body = json!({ "amount": amount, "reason": "money safety" }).to_string();
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
        .expect("refund answers")
}

async fn event_types(app: &TestApp, id: &str) -> Vec<String> {
    let a = get(app, "auditor", &format!("/api/v1/payments/{id}/events")).await;
    data(&a)["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["type"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn wait_detail(app: &TestApp, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..200 {
        let d = detail(app, id).await;
        if done(&d) {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not happen: {:#}", detail(app, id).await);
}

// ---------------------------------------------------------------------------------------
// 1. An idempotency key cannot be taken over: a stalled append and a retry make one refund
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_while_the_first_append_is_stalled_appends_one_refund_and_replays_its_answer() {
    let a = TestApp::spawn().await;
    let b = TestApp::spawn_on(a.db.clone(), Options::default()).await;
    let id = a.paid_payment("100.00").await;
    // Stall every append: another session holds the append lock.
    let blocker = a.db.pool().await;
    let mut holder = blocker.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(ledger::store::writer::APPEND_LOCK_ID)
        .execute(&mut *holder)
        .await
        .unwrap();
    let key = format!("K-{}", Uuid::new_v4());
    let first = {
        let (app, id, key) = (a.client("operator"), id.clone(), key.clone());
        tokio::spawn(async move {
            let body = json!({ "amount": "40.00", "reason": "money safety" }).to_string();
            app.send(
                "POST",
                &format!("/api/v1/payments/{id}/refund"),
                Some(&body),
                &[("idempotency-key", &key)],
            )
            .await
            .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    // The client gives up and retries on another node, with the same key and body.
    let retry = {
        let (app, id, key) = (b.client("operator"), id.clone(), key.clone());
        tokio::spawn(async move {
            let body = json!({ "amount": "40.00", "reason": "money safety" }).to_string();
            app.send(
                "POST",
                &format!("/api/v1/payments/{id}/refund"),
                Some(&body),
                &[("idempotency-key", &key)],
            )
            .await
            .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(ledger::store::writer::APPEND_LOCK_ID)
        .execute(&mut *holder)
        .await
        .unwrap();
    let (first, retry) = (first.await.unwrap(), retry.await.unwrap());
    assert_eq!(first.status, 201, "{}", first.body);
    assert_eq!(retry.status, 201, "{}", retry.body);
    assert_eq!(
        first.body, retry.body,
        "the loser replays the winner's answer"
    );
    let types = event_types(&a, &id).await;
    assert_eq!(
        types.iter().filter(|t| *t == "refund_requested").count(),
        1,
        "{types:?}"
    );
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_minted_under_an_idempotency_key_are_derived_from_it() {
    let app = TestApp::spawn().await;
    let order = new_order();
    let body = json!({
        "amount": "10.00", "currency": "CNY", "payment_method": "bank",
        "order_id": order, "user_id": "user-1"
    })
    .to_string();
    let key = format!("create-{}", Uuid::new_v4());
    let send = || async {
        app.client("client")
            .send(
                "POST",
                "/api/v1/payments/create",
                Some(&body),
                &[("idempotency-key", &key)],
            )
            .await
            .unwrap()
    };
    let first = send().await;
    assert_eq!(first.status, 201, "{}", first.body);
    // Forget the stored answer (as 24 h would): the rerun is the same command, and the
    // domain refuses a second payment with the same id instead of creating one.
    sqlx::query("DELETE FROM idempotency")
        .execute(&app.pool().await)
        .await
        .unwrap();
    let rerun = send().await;
    assert_eq!(rerun.status, 409, "{}", rerun.body);
    let id = data(&first)["payment_id"].as_str().unwrap();
    assert_eq!(event_types(&app, id).await, ["created"]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_refused_by_validation_is_not_stored_under_its_key() {
    let app = TestApp::spawn().await;
    let id = app.paid_payment("100.00").await;
    let key = format!("K-{}", Uuid::new_v4());
    let bad = app
        .client("operator")
        .send(
            "POST",
            &format!("/api/v1/payments/{id}/refund"),
            Some(r#"{"amount":"oops","reason":"x"}"#),
            &[("idempotency-key", &key)],
        )
        .await
        .unwrap();
    assert_eq!(bad.status, 400, "{}", bad.body);
    // The client fixes its body and retries with the same key: it runs.
    let fixed = refund(&app, &id, "10.00", Some(&key)).await;
    assert_eq!(fixed.status, 201, "{}", fixed.body);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// 2. callback_no is unique per gateway
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_may_use_the_same_callback_no_for_different_payments() {
    let app = TestApp::spawn().await;
    let (a_id, a_no) = app
        .create_payment("10.00", "CNY", "alipay", &new_order())
        .await;
    let (w_id, w_no) = app
        .create_payment("20.00", "CNY", "wechat", &new_order())
        .await;
    let same = format!("CB-{}", Uuid::new_v4().simple());
    let a = notify(&app, "alipay", &a_no, &same, "success", "10.00", "TA").await;
    assert_eq!(a.status, 200, "{}", a.body);
    let w = notify(&app, "wechat", &w_no, &same, "success", "20.00", "TW").await;
    assert_eq!(w.status, 200, "{}", w.body);
    assert_eq!(data(&w)["duplicate"], false, "{}", w.body);
    assert_eq!(data(&w)["status"], "success", "{}", w.body);
    assert_eq!(detail(&app, &a_id).await["status"], "success");
    assert_eq!(detail(&app, &w_id).await["status"], "success");
    // The same gateway reusing it on another payment is still a duplicate.
    let (_, b_no) = app
        .create_payment("10.00", "CNY", "alipay", &new_order())
        .await;
    let dup = notify(&app, "alipay", &b_no, &same, "success", "10.00", "TB").await;
    assert_eq!(data(&dup)["duplicate"], true, "{}", dup.body);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// 3 and 4. Double charges and late money are flagged, listed, refundable, in suspense
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_charge_is_flagged_listed_and_refundable_from_suspense() {
    let app = TestApp::spawn().await;
    let (id, no) = app
        .create_payment("100.00", "CNY", "alipay", &new_order())
        .await;
    let paid = notify(&app, "alipay", &no, "CB-1", "success", "100.00", "T-1").await;
    assert_eq!(data(&paid)["status"], "success");
    // The same trade reported again is just applied.
    let again = notify(&app, "alipay", &no, "CB-2", "success", "100.00", "T-1").await;
    assert_eq!(data(&again)["status"], "success", "{}", again.body);
    assert_eq!(detail(&app, &id).await["flagged_for_refund"], false);
    // Another trade: the member paid twice.
    let second = notify(&app, "alipay", &no, "CB-3", "success", "100.00", "T-2").await;
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(data(&second)["status"], "failed", "recorded, not applied");
    let d = detail(&app, &id).await;
    assert_eq!(d["flagged_for_refund"], true, "{d:#}");
    assert_eq!(d["flag_reason"], "duplicate_charge");
    assert_eq!(d["flagged_amount"], "100.00");
    assert_eq!(d["refundable_amount"], "200.00");
    assert_eq!(d["status"], "success");

    let flagged = get(
        &app,
        "operator",
        &format!("/api/v1/payments?flagged=true&payment_no={no}"),
    )
    .await;
    assert_eq!(data(&flagged)["total"], 1, "{}", flagged.body);
    let not_flagged = get(
        &app,
        "operator",
        &format!("/api/v1/payments?flagged=false&payment_no={no}"),
    )
    .await;
    assert_eq!(data(&not_flagged)["total"], 0, "{}", not_flagged.body);
    let bad = get(&app, "operator", "/api/v1/payments?flagged=maybe").await;
    assert_eq!(bad.status, 400);

    // Refund the second charge: it comes out of suspense, and the payment stays paid.
    let r = refund(&app, &id, "100.00", None).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let d = wait_detail(&app, &id, "the refund settles", |d| {
        d["refunds"][0]["status"] == "success"
    })
    .await;
    assert_eq!(d["status"], "success", "{d:#}");
    assert_eq!(d["refunds"][0]["from_suspense"], "100.00");
    assert_eq!(d["refundable_amount"], "100.00");
    assert_balanced_with_suspense(&app, &id, "0").await;
    app.stop().await;
}

/// The trial balance of the payment nets to zero and `suspense` holds `expected`.
async fn assert_balanced_with_suspense(app: &TestApp, id: &str, expected: &str) {
    let pool = app.pool().await;
    let id = Uuid::parse_str(id).unwrap();
    let rows = sqlx::query(
        "SELECT account, SUM(amount)::text AS sum FROM ledger_entries WHERE payment_id = $1 \
         GROUP BY account",
    )
    .bind(id)
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut total = rust_decimal::Decimal::ZERO;
    let mut suspense = rust_decimal::Decimal::ZERO;
    for r in rows {
        let account: String = r.get("account");
        let sum: rust_decimal::Decimal = r.get::<String, _>("sum").parse().unwrap();
        total += sum;
        if account == "suspense" {
            suspense = sum;
        }
    }
    assert_eq!(total, rust_decimal::Decimal::ZERO, "trial balance");
    assert_eq!(
        suspense,
        expected.parse::<rust_decimal::Decimal>().unwrap(),
        "suspense"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn money_reported_after_failure_posts_to_suspense_and_can_be_refunded_up_to_what_was_reported(
) {
    let app = TestApp::spawn().await;
    let (id, no) = app
        .create_payment("80.00", "CNY", "bank", &new_order())
        .await;
    let failed = notify(&app, "bank", &no, "CB-F", "failed", "80.00", "T-F").await;
    assert_eq!(data(&failed)["status"], "success", "the failure is applied");
    let late = notify(&app, "bank", &no, "CB-L", "success", "80.00", "T-L").await;
    assert_eq!(data(&late)["status"], "failed", "{}", late.body);
    let d = detail(&app, &id).await;
    assert_eq!(d["status"], "failed");
    assert_eq!(d["flagged_for_refund"], true);
    assert_eq!(d["flag_reason"], "success_after_failure");
    assert_eq!(d["refundable_amount"], "80.00");
    assert_balanced_with_suspense(&app, &id, "-80.00").await;

    let too_much = refund(&app, &id, "80.01", None).await;
    assert_eq!(too_much.status, 409, "{}", too_much.body);
    assert_eq!(too_much.body["code"], 40902);
    let r = refund(&app, &id, "80.00", None).await;
    assert_eq!(r.status, 201, "{}", r.body);
    wait_detail(&app, &id, "the refund settles", |d| {
        d["refunds"][0]["status"] == "success"
    })
    .await;
    assert_balanced_with_suspense(&app, &id, "0").await;
    let more = refund(&app, &id, "0.01", None).await;
    assert_eq!(more.status, 409, "{}", more.body);

    // Totals report the flagged money, from the log and from the read tables alike.
    let t = get(&app, "finance", "/api/v1/ledger/totals?currency=CNY").await;
    let cny = &data(&t)["currencies"][0];
    assert_eq!(cny["flagged_amount"], "80.00", "{}", t.body);
    assert_eq!(cny["matches"], true, "{}", t.body);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// 5. A refund confirmed after it was recorded as failed is flagged, never refundable again
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_the_gateway_confirms_after_it_failed_is_flagged_and_not_refundable_again() {
    let app = TestApp::spawn().await;
    let id = app.paid_payment("50.00").await;
    app.state
        .gateways
        .sandbox
        .faults
        .reject_refunds
        .store(1, Ordering::Release);
    let r = refund(&app, &id, "20.00", None).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let refund_no = data(&r)["refund_no"].as_str().unwrap().to_owned();
    let d = wait_detail(&app, &id, "the refund fails", |d| {
        d["refunds"][0]["status"] == "failed"
    })
    .await;
    assert_eq!(d["refundable_amount"], "50.00");
    // The gateway's notice says the money went out after all.
    let no = d["payment_no"].as_str().unwrap().to_owned();
    let body = json!({
        "payment_no": no, "callback_no": "CB-R-LATE", "status": "success",
        "amount": "20.00", "gateway_trade_no": "T-R", "refund_no": refund_no,
    });
    let late = app
        .gateway("alipay")
        .send(
            "POST",
            "/api/v1/gateways/alipay/notify",
            Some(&body.to_string()),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(late.status, 200, "{}", late.body);
    let d = detail(&app, &id).await;
    assert_eq!(d["refunds"][0]["status"], "success", "{d:#}");
    assert_eq!(d["refunds"][0]["flagged"], true);
    assert_eq!(d["flagged_for_refund"], true);
    assert_eq!(d["flag_reason"], "refund_confirmed_after_failure");
    assert_eq!(d["refunded_amount"], "20.00");
    assert_eq!(d["refundable_amount"], "30.00");
    let over = refund(&app, &id, "30.01", None).await;
    assert_eq!(over.status, 409, "{}", over.body);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// 6. Pending payments expire
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_payment_expires_its_gateway_order_is_closed_and_its_order_is_released() {
    let app = TestApp::spawn_with(Options::tuned(|c| c.payment_ttl_secs = 1)).await;
    let order = new_order();
    let (id, no) = app.create_payment("10.00", "CNY", "alipay", &order).await;
    let d = wait_detail(&app, &id, "the payment expires", |d| {
        d["status"] == "failed"
    })
    .await;
    assert_eq!(d["failure_reason"], "expired", "{d:#}");
    assert_eq!(
        app.state.gateways.sandbox.order_state(&no),
        Some(ledger::gateway::sandbox::OrderState::Closed)
    );
    // The order is free for a new payment.
    let (again, _) = app.create_payment("10.00", "CNY", "alipay", &order).await;
    assert_ne!(again, id);
    // A success notice after expiry is money the ledger did not accept: flagged.
    let late = notify(&app, "alipay", &no, "CB-LATE", "success", "10.00", "T-LATE").await;
    assert_eq!(data(&late)["status"], "failed");
    assert_eq!(detail(&app, &id).await["flagged_for_refund"], true);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// 7. Time never goes backwards along the log; as_of is a prefix
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_at_never_decreases_along_positions_even_after_a_node_with_a_fast_clock() {
    let app = TestApp::spawn().await;
    let (first, _) = app
        .create_payment("1.00", "CNY", "bank", &new_order())
        .await;
    // Another node whose clock ran an hour fast appended an event (as a writer trusting its
    // own clock would have).
    let pool = app.pool().await;
    let first_id = Uuid::parse_str(&first).unwrap();
    let mut data: Value = sqlx::query_scalar("SELECT data FROM events WHERE stream_id = $1")
        .bind(first_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    let other = Uuid::now_v7();
    data["payment_id"] = json!(other);
    data["payment_no"] = json!(format!("P{}", other.simple()).to_uppercase());
    data["order_id"] = json!(new_order());
    let fast: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "INSERT INTO events (position, event_id, stream_id, version, event_type, data, metadata, \
         recorded_at, prev_hash, hash, canonical) \
         SELECT MAX(position) + 1, $1, $2, 1, 'created', $3, '{}', \
                date_trunc('milliseconds', now()) + interval '1 hour', $4, $4, '{}' \
         FROM events RETURNING recorded_at",
    )
    .bind(Uuid::now_v7())
    .bind(other)
    .bind(&data)
    .bind(ledger::store::GENESIS_HASH)
    .fetch_one(&pool)
    .await
    .unwrap();
    let (next, _) = app
        .create_payment("1.00", "CNY", "bank", &new_order())
        .await;
    let after: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT recorded_at FROM events WHERE stream_id = $1")
            .bind(Uuid::parse_str(&next).unwrap())
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(
        after >= fast,
        "{after} is before the event before it ({fast})"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_of_shows_the_stream_as_it_stood_at_that_time() {
    let app = TestApp::spawn().await;
    let (id, no) = app
        .create_payment("10.00", "CNY", "alipay", &new_order())
        .await;
    let created = detail(&app, &id).await["created_at"]
        .as_str()
        .unwrap()
        .to_owned();
    tokio::time::sleep(Duration::from_millis(20)).await;
    notify(&app, "alipay", &no, "CB-1", "success", "10.00", "T-1").await;
    let then = get(
        &app,
        "auditor",
        &format!("/api/v1/payments/{id}?as_of={created}"),
    )
    .await;
    assert_eq!(data(&then)["status"], "pending", "{}", then.body);
    assert_eq!(data(&then)["callbacks"].as_array().unwrap().len(), 0);
    let now = get(
        &app,
        "auditor",
        &format!("/api/v1/payments/{id}?as_of=2999-01-01T00:00:00Z"),
    )
    .await;
    assert_eq!(data(&now)["status"], "success");
    let before = get(
        &app,
        "auditor",
        &format!("/api/v1/payments/{id}?as_of=2000-01-01T00:00:00Z"),
    )
    .await;
    assert_eq!(before.status, 404);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// 9. Headers that enter the immutable log are validated
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_validated_and_the_client_address_comes_from_the_socket() {
    let app = TestApp::spawn().await;
    let create = |request_id: String, forwarded: &'static str| {
        let client = app.client("client");
        async move {
            let body = json!({
                "amount": "1.00", "currency": "CNY", "payment_method": "bank",
                "order_id": new_order(), "user_id": "user-1"
            })
            .to_string();
            client
                .send(
                    "POST",
                    "/api/v1/payments/create",
                    Some(&body),
                    &[
                        ("x-request-id", &request_id),
                        ("x-forwarded-for", forwarded),
                    ],
                )
                .await
                .unwrap()
        }
    };
    let good = create("req-1.ok_ID".into(), "203.0.113.9").await;
    let bad = create("x".repeat(65), "203.0.113.9").await;
    let spaced = create("has space".into(), "203.0.113.9").await;
    for (a, expect) in [(&good, Some("req-1.ok_ID")), (&bad, None), (&spaced, None)] {
        let id = data(a)["payment_id"].as_str().unwrap();
        let ev = get(&app, "auditor", &format!("/api/v1/payments/{id}/events")).await;
        let meta = &data(&ev)["events"][0]["metadata"];
        match expect {
            Some(v) => assert_eq!(meta["request_id"], v),
            None => {
                let rid = meta["request_id"].as_str().unwrap();
                assert!(Uuid::parse_str(rid).is_ok(), "a generated id, got {rid}");
            }
        }
        // Not behind a trusted proxy: the forwarded header is not believed.
        assert_eq!(meta["client_ip"], "127.0.0.1", "{meta}");
    }
    app.stop().await;

    let proxied = TestApp::spawn_with(Options::tuned(|c| {
        c.trusted_proxies = ledger::config::TrustedProxies(vec!["127.0.0.1/32".parse().unwrap()])
    }))
    .await;
    let body = json!({
        "amount": "1.00", "currency": "CNY", "payment_method": "bank",
        "order_id": new_order(), "user_id": "user-1"
    })
    .to_string();
    let a = proxied
        .client("client")
        .send(
            "POST",
            "/api/v1/payments/create",
            Some(&body),
            &[("x-forwarded-for", "203.0.113.9, 10.0.0.1")],
        )
        .await
        .unwrap();
    let id = data(&a)["payment_id"].as_str().unwrap();
    let ev = get(
        &proxied,
        "auditor",
        &format!("/api/v1/payments/{id}/events"),
    )
    .await;
    assert_eq!(
        data(&ev)["events"][0]["metadata"]["client_ip"],
        "203.0.113.9"
    );
    proxied.stop().await;
}

// ---------------------------------------------------------------------------------------
// 11. A wild timestamp is a replay refusal, not an overflow
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_at_the_ends_of_i64_are_refused_as_stale() {
    let app = TestApp::spawn().await;
    let http = reqwest::Client::new();
    for ts in [i64::MAX, i64::MIN, -1] {
        let ts = ts.to_string();
        let nonce = ledger::signing::new_nonce();
        let path = "/api/v1/payments?page=1";
        let sig = ledger::signing::sign("admin-secret-1", &ts, &nonce, "GET", path, b"");
        let r = http
            .get(format!("{}{path}", app.base))
            .header("x-key-id", "t-admin")
            .header("x-timestamp", &ts)
            .header("x-nonce", &nonce)
            .header("x-signature", sig)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "timestamp {ts}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], 40102, "{body}");
    }
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// 12. Slow and greedy clients
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let app = TestApp::spawn_with(Options::tuned(|c| c.limits.header_read_timeout_ms = 300)).await;
    let mut tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the server closes the connection instead of waiting forever"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_body_gets_an_answer_within_the_request_timeout() {
    let app = TestApp::spawn_with(Options::tuned(|c| {
        c.limits.body_read_timeout_ms = 300;
        c.limits.request_timeout_ms = 1_000;
    }))
    .await;
    let mut tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    tcp.write_all(
        b"POST /api/v1/payments/create HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\
          x-key-id: t-client\r\nx-timestamp: 0\r\nx-nonce: aaaaaaaaaaaaaaaaaaaa\r\nx-signature: 00\r\n\r\n{",
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("answered before the client gave up")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(
        text.starts_with("HTTP/1.1 4") || text.starts_with("HTTP/1.1 503"),
        "{text}"
    );
    assert!(
        text.contains("\"code\""),
        "answered in the envelope: {text}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_hold_more_than_its_connections() {
    let app = TestApp::spawn_with(Options::tuned(|c| c.limits.connections_per_peer_max = 3)).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 1024];
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(tcp);
    }
    let mut fourth = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let _ = fourth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), fourth.read(&mut buf))
        .await
        .expect("closed at once")
        .unwrap_or(0);
    assert_eq!(n, 0, "the fourth connection is closed unanswered");
    drop(held);
    // Slots are given back when connections close.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ok = reqwest::get(format!("{}/healthz", app.base)).await.unwrap();
    assert_eq!(ok.status(), 200);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// 15. The refund queue does not block at its head
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_whose_gateway_is_down_waits_its_turn_without_blocking_newer_ones() {
    let app = TestApp::spawn().await;
    let first = app.paid_payment("10.00").await;
    let second = app.paid_payment("10.00").await;
    let faults = &app.state.gateways.sandbox.faults;
    // The gateway is down for the first refund's attempts and its status query.
    faults.fail_next.store(8, Ordering::Release);
    let r1 = refund(&app, &first, "10.00", None).await;
    assert_eq!(r1.status, 201);
    // Wait until the first refund was tried and put back with its backoff.
    for _ in 0..100 {
        if faults.fail_next.load(Ordering::Acquire) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r2 = refund(&app, &second, "10.00", None).await;
    assert_eq!(r2.status, 201);
    let d2 = wait_detail(&app, &second, "the newer refund settles", |d| {
        d["refunds"][0]["status"] == "success"
    })
    .await;
    assert_eq!(d2["status"], "refunded");
    // The first one is never failed for an unknown outcome, and settles on a later attempt.
    let d1 = wait_detail(&app, &first, "the first refund settles", |d| {
        d["refunds"][0]["status"] != "processing"
    })
    .await;
    assert_eq!(d1["refunds"][0]["status"], "success", "{d1:#}");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// 16. Bounded work: one verification at a time, keyset paging, a bound on page numbers
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_verifications_beyond_the_limit_get_429_with_retry_after() {
    let app = TestApp::spawn_with(Options::tuned(|c| c.limits.verify_wait_ms = 0)).await;
    for _ in 0..20 {
        app.create_payment("1.00", "CNY", "bank", &new_order())
            .await;
    }
    // Hold the only turn while requests arrive.
    let turn = app.state.verify_turns.acquire().await.unwrap();
    let a = get(&app, "auditor", "/api/v1/audit/verify").await;
    assert_eq!(a.status, 429, "{}", a.body);
    assert_eq!(a.body["code"], 42901);
    drop(turn);
    let ok = get(&app, "auditor", "/api/v1/audit/verify").await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(data(&ok)["ok"], true);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_page_by_cursor_and_refuse_page_numbers_deeper_than_the_bound() {
    let app = TestApp::spawn_with(Options::tuned(|c| c.limits.page_offset_max = 20)).await;
    let user = format!("U-{}", Uuid::new_v4().simple());
    let mut created = Vec::new();
    for _ in 0..7 {
        let body = json!({
            "amount": "1.00", "currency": "CNY", "payment_method": "bank",
            "order_id": new_order(), "user_id": user
        })
        .to_string();
        let a = app
            .client("client")
            .send("POST", "/api/v1/payments/create", Some(&body), &[])
            .await
            .unwrap();
        created.push(data(&a)["payment_id"].as_str().unwrap().to_owned());
    }
    created.reverse(); // newest first
    let mut seen = Vec::new();
    let mut path = format!("/api/v1/payments/history?user_id={user}&size=3");
    loop {
        let page = get(&app, "client", &path).await;
        assert_eq!(page.status, 200, "{}", page.body);
        assert_eq!(data(&page)["total"], 7);
        for p in data(&page)["payments"].as_array().unwrap() {
            seen.push(p["payment_id"].as_str().unwrap().to_owned());
        }
        match data(&page)["next_after"].as_str() {
            Some(next) => {
                path = format!("/api/v1/payments/history?user_id={user}&size=3&after={next}")
            }
            None => break,
        }
    }
    assert_eq!(seen, created);
    let deep = get(&app, "operator", "/api/v1/payments?page=8&size=3").await;
    assert_eq!(deep.status, 400, "{}", deep.body);
    let both = get(&app, "operator", "/api/v1/payments?page=2&after=1_0").await;
    assert_eq!(both.status, 400);
    let garbage = get(&app, "operator", "/api/v1/payments?after=zzz").await;
    assert_eq!(garbage.status, 400);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_to_one_payment_keeps_the_cached_pages_of_other_users() {
    let app = TestApp::spawn().await;
    let (mine, yours) = (
        format!("U-{}", Uuid::new_v4().simple()),
        format!("U-{}", Uuid::new_v4().simple()),
    );
    for user in [&mine, &yours] {
        let body = json!({
            "amount": "1.00", "currency": "CNY", "payment_method": "bank",
            "order_id": new_order(), "user_id": user
        })
        .to_string();
        app.client("client")
            .send("POST", "/api/v1/payments/create", Some(&body), &[])
            .await
            .unwrap();
    }
    let history = |u: &str| format!("/api/v1/payments/history?user_id={u}");
    get(&app, "client", &history(&mine)).await;
    get(&app, "client", &history(&yours)).await;
    let key = |u: &str| {
        ledger::projections::read::ListFilter {
            user_id: Some(u.to_owned()),
            page: 1,
            size: 10,
            ..Default::default()
        }
        .cache_key()
    };
    assert!(app.state.cache.list(&key(&mine)).is_some());
    // Another payment of `yours` changes only `yours`'s pages.
    let body = json!({
        "amount": "2.00", "currency": "CNY", "payment_method": "bank",
        "order_id": new_order(), "user_id": yours
    })
    .to_string();
    app.client("client")
        .send("POST", "/api/v1/payments/create", Some(&body), &[])
        .await
        .unwrap();
    assert!(
        app.state.cache.list(&key(&mine)).is_some(),
        "untouched list kept"
    );
    assert!(
        app.state.cache.list(&key(&yours)).is_none(),
        "touched list dropped"
    );
    let yours_now = get(&app, "client", &history(&yours)).await;
    assert_eq!(data(&yours_now)["total"], 2);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// 18. A notification for a payment the projection has not seen yet
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_resolves_its_payment_from_the_log_before_it_is_projected() {
    // An API node with no projector anywhere: the read tables never see the payment.
    let app = TestApp::spawn_with(Options {
        role: ServeRole::Api,
        nats_url: None,
        ..Options::tuned(|c| c.limits.read_your_writes_wait_ms = 100)
    })
    .await;
    let (id, no) = app
        .create_payment("5.00", "CNY", "alipay", &new_order())
        .await;
    let a = notify(
        &app, "alipay", &no, "CB-EARLY", "success", "5.00", "T-EARLY",
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(data(&a)["status"], "success");
    assert_eq!(data(&a)["payment_id"], id.as_str());
    let unknown = notify(&app, "alipay", "P0123", "CB-X", "success", "5.00", "T-X").await;
    assert_eq!(unknown.status, 404);
    app.stop().await;
}
