//! Gateways end to end (SPEC §8, §11 "Notifications" and "Refund lifecycle"): the sandbox pay
//! page, gateway failures and timeouts on create and on refund, the refund process across a
//! restart, and gateway notifications, all against the real service, PostgreSQL and NATS.
//! Faults are armed on the sandbox gateway of the running service; every wait is bounded.

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::common::{data, Options, TestApp};
use ledger::app::ServeRole;
use ledger::client::Answer;
use ledger::gateway::sandbox::Faults;
use ledger::gateway::{GatewayError, RetryPolicy};
use serde_json::{json, Value};
use uuid::Uuid;

/// The longest any single wait in this file may take before the test fails. Generous: the
/// refund process rechecks a pending refund only every 5 s.
const WAIT_MAX: Duration = Duration::from_secs(30);
/// How often a waiting test looks again.
const POLL: Duration = Duration::from_millis(50);

fn new_order() -> String {
    format!("ORD-{}", Uuid::new_v4().simple())
}

async fn spawn_with_faults(faults: &str) -> TestApp {
    TestApp::spawn_with(Options {
        faults: Faults::parse(faults).expect("the fault list parses"),
        ..Options::default()
    })
    .await
}

fn arm(counter: &AtomicU32, n: u32) {
    counter.store(n, Ordering::SeqCst);
}

/// Gateway calls the sandbox of `app` has received so far.
fn gateway_calls(app: &TestApp) -> u32 {
    app.state.gateways.sandbox.calls.load(Ordering::SeqCst)
}

/// Waits (bounded) until the sandbox has received more than `seen` calls.
async fn wait_for_gateway_call(app: &TestApp, seen: u32) {
    let start = Instant::now();
    while gateway_calls(app) <= seen {
        assert!(
            start.elapsed() < WAIT_MAX,
            "the gateway was never called after {seen} calls"
        );
        tokio::time::sleep(POLL).await;
    }
}

async fn get_data(app: &TestApp, role: &str, path: &str) -> Value {
    let a = app
        .client(role)
        .send("GET", path, None, &[])
        .await
        .expect("GET answers");
    assert_eq!(a.status, 200, "GET {path}: {}", a.body);
    data(&a).clone()
}

async fn detail(app: &TestApp, id: &str) -> Value {
    get_data(app, "auditor", &format!("/api/v1/payments/{id}")).await
}

async fn status_of(app: &TestApp, id: &str) -> String {
    let d = get_data(app, "client", &format!("/api/v1/payments/{id}/status")).await;
    d["status"].as_str().expect("status is a string").to_owned()
}

/// The types of the payment's events, in order.
async fn event_types(app: &TestApp, id: &str) -> Vec<String> {
    let d = get_data(app, "auditor", &format!("/api/v1/payments/{id}/events")).await;
    d["events"]
        .as_array()
        .expect("events is an array")
        .iter()
        .map(|e| e["type"].as_str().expect("type is a string").to_owned())
        .collect()
}

fn count(types: &[String], event_type: &str) -> usize {
    types.iter().filter(|t| *t == event_type).count()
}

/// Polls the payment's detail until `done` holds; fails the test after `WAIT_MAX`.
async fn wait_detail(app: &TestApp, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let d = detail(app, id).await;
        if done(&d) {
            return d;
        }
        assert!(
            start.elapsed() < WAIT_MAX,
            "gave up waiting for {what}; last detail: {d:#}"
        );
        tokio::time::sleep(POLL).await;
    }
}

fn find_refund<'a>(detail: &'a Value, refund_no: &str) -> Option<&'a Value> {
    detail["refunds"]
        .as_array()
        .expect("refunds is an array")
        .iter()
        .find(|r| r["refund_no"] == refund_no)
}

fn refund_in<'a>(detail: &'a Value, refund_no: &str) -> &'a Value {
    find_refund(detail, refund_no)
        .unwrap_or_else(|| panic!("refund {refund_no} is not in the detail: {detail:#}"))
}

/// Waits until the refund is in the read model and has left `processing`; returns the
/// payment's detail then. (A node that just started may not have projected it yet.)
async fn wait_refund_settled(app: &TestApp, id: &str, refund_no: &str) -> Value {
    wait_detail(app, id, &format!("refund {refund_no} to settle"), |d| {
        find_refund(d, refund_no).is_some_and(|r| r["status"] != "processing")
    })
    .await
}

async fn create(app: &TestApp, amount: &str, method: &str, order: &str) -> Answer {
    let body = json!({
        "amount": amount, "currency": "CNY", "payment_method": method,
        "order_id": order, "user_id": "user-1"
    });
    app.client("client")
        .send(
            "POST",
            "/api/v1/payments/create",
            Some(&body.to_string()),
            &[],
        )
        .await
        .expect("create answers")
}

/// Requests a refund and checks that it was accepted; returns its refund_no.
async fn refund(app: &TestApp, id: &str, amount: &str) -> String {
    let a = request_refund(app, id, amount).await;
    assert_eq!(a.status, 201, "refund of {amount}: {}", a.body);
    assert_eq!(data(&a)["amount"], amount);
    let status = data(&a)["status"].as_str().expect("refund status");
    assert!(
        status == "processing" || status == "success",
        "a new refund is {status}"
    );
    data(&a)["refund_no"]
        .as_str()
        .expect("refund_no")
        .to_owned()
}

async fn request_refund(app: &TestApp, id: &str, amount: &str) -> Answer {
    let body = json!({ "amount": amount, "reason": "customer asked" }).to_string();
    app.client("operator")
        .send(
            "POST",
            &format!("/api/v1/payments/{id}/refund"),
            Some(&body),
            &[],
        )
        .await
        .expect("refund answers")
}

fn notice(payment_no: &str, status: &str, amount: &str) -> Value {
    json!({
        "payment_no": payment_no,
        "callback_no": format!("CB{}", Uuid::new_v4().simple()),
        "status": status,
        "amount": amount,
        "gateway_trade_no": format!("T{}", Uuid::new_v4().simple()),
    })
}

async fn notify(app: &TestApp, method: &str, body: &Value) -> Answer {
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

/// A created, unpaid payment: (payment_id, payment_no).
async fn pending_payment(app: &TestApp, amount: &str, method: &str) -> (String, String) {
    app.create_payment(amount, "CNY", method, &new_order())
        .await
}

/// GET of the sandbox pay page: (status, content type, body).
async fn pay_page(app: &TestApp, payment_no: &str) -> (u16, String, String) {
    let r = reqwest::get(format!("{}/sandbox/pay/{payment_no}", app.base))
        .await
        .expect("page answers");
    let status = r.status().as_u16();
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, content_type, r.text().await.expect("page body"))
}

/// The one-time token of a freshly rendered pay page (empty when the page has no form).
async fn page_token(app: &TestApp, payment_no: &str) -> String {
    let (_, _, html) = pay_page(app, payment_no).await;
    html.split("name=\"token\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_default()
        .to_owned()
}

/// Clicks a button of the sandbox pay page (a plain HTML form post, with the token of a
/// page just rendered): (status, body after the redirect).
async fn click(app: &TestApp, payment_no: &str, outcome: &str) -> (u16, String) {
    let token = page_token(app, payment_no).await;
    submit(
        app,
        payment_no,
        &format!("outcome={outcome}&token={token}"),
        &[],
    )
    .await
}

/// Posts the pay page's form as given: (status, body after the redirect).
async fn submit(
    app: &TestApp,
    payment_no: &str,
    form: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/sandbox/pay/{payment_no}", app.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.to_owned());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("page answers");
    (r.status().as_u16(), r.text().await.expect("page body"))
}

// ---------------------------------------------------------------------------------------
// The sandbox pay page
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pay_page_shows_the_amount_and_pay_and_fail_buttons() {
    let app = TestApp::spawn().await;
    let (_, no) = pending_payment(&app, "123.45", "alipay").await;
    let (status, content_type, html) = pay_page(&app, &no).await;
    assert_eq!(status, 200, "{html}");
    assert!(
        content_type.starts_with("text/html"),
        "content type {content_type}"
    );
    assert!(html.contains(&no), "the page names the payment: {html}");
    assert!(
        html.contains("123.45") && html.contains("CNY"),
        "the page shows the amount: {html}"
    );
    assert!(
        html.contains("<form method=\"post\""),
        "the page has a form: {html}"
    );
    assert!(
        html.contains("name=\"outcome\" value=\"success\""),
        "the page has Pay: {html}"
    );
    assert!(
        html.contains("name=\"outcome\" value=\"failed\""),
        "the page has Fail: {html}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paying_on_the_pay_page_sends_a_signed_notification_that_pays_the_payment() {
    let app = TestApp::spawn().await;
    let (id, no) = pending_payment(&app, "88.00", "alipay").await;
    let (status, html) = click(&app, &no, "success").await;
    assert_eq!(status, 200, "the page's notification was accepted: {html}");
    assert_eq!(status_of(&app, &id).await, "success");

    let d = detail(&app, &id).await;
    assert!(d["payment_time"].is_string(), "{d:#}");
    let callbacks = d["callbacks"].as_array().expect("callbacks");
    assert_eq!(callbacks.len(), 1, "{d:#}");
    assert_eq!(callbacks[0]["status"], "success");
    assert_eq!(callbacks[0]["outcome"], "success");
    assert_eq!(callbacks[0]["amount"], "88.00");
    assert!(callbacks[0]["callback_no"]
        .as_str()
        .expect("callback_no")
        .starts_with("SBX"));

    // The notification went through the signed gateway endpoint as the gateway itself.
    let events = get_data(&app, "auditor", &format!("/api/v1/payments/{id}/events")).await;
    let callback = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["type"] == "callback_received")
        .expect("a callback_received event");
    assert_eq!(
        callback["metadata"]["actor_key_id"], "alipay",
        "{callback:#}"
    );
    assert_eq!(count(&event_types(&app, &id).await, "paid"), 1);

    // A settled payment's page offers nothing more to click.
    let (status, _, html) = pay_page(&app, &no).await;
    assert_eq!(status, 200);
    assert!(html.contains("success"), "{html}");
    assert!(
        !html.contains("value=\"success\""),
        "no Pay button once paid: {html}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_on_the_pay_page_marks_the_payment_failed() {
    let app = TestApp::spawn().await;
    let (id, no) = pending_payment(&app, "10.00", "wechat").await;
    let (status, html) = click(&app, &no, "failed").await;
    assert_eq!(status, 200, "{html}");
    assert_eq!(status_of(&app, &id).await, "failed");
    let d = detail(&app, &id).await;
    assert_eq!(
        d["callbacks"][0]["status"], "success",
        "the failure notice was applied: {d:#}"
    );
    assert_eq!(d["callbacks"][0]["outcome"], "failed");
    assert!(d["payment_time"].is_null());
    let types = event_types(&app, &id).await;
    assert_eq!(count(&types, "failed"), 1, "{types:?}");
    assert_eq!(count(&types, "paid"), 0, "{types:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pay_page_of_an_unknown_payment_is_404_and_an_unknown_button_is_400() {
    let app = TestApp::spawn().await;
    let (status, _, _) = pay_page(&app, "PNOSUCHPAYMENT").await;
    assert_eq!(status, 404);
    let (status, _) = click(&app, "PNOSUCHPAYMENT", "success").await;
    assert_eq!(status, 404);

    let (id, no) = pending_payment(&app, "10.00", "alipay").await;
    let (status, _) = click(&app, &no, "refund-me").await;
    assert_eq!(status, 400);
    assert_eq!(status_of(&app, &id).await, "pending");
    assert_eq!(event_types(&app, &id).await, ["created"]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resubmitted_pay_page_is_the_same_callback_not_a_second_one() {
    let app = TestApp::spawn().await;
    let (id, no) = pending_payment(&app, "10.00", "alipay").await;
    let token = page_token(&app, &no).await;
    let form = format!("outcome=success&token={token}");
    let (first, html) = submit(&app, &no, &form, &[]).await;
    assert_eq!(first, 200, "{html}");
    assert!(
        html.contains("id=\"result\""),
        "a result page after the redirect: {html}"
    );
    assert!(
        html.contains(&format!("/checkout/{no}")),
        "a way back: {html}"
    );
    // A reload of the form, and a stale tab that says "failed" with the same page's token.
    submit(&app, &no, &form, &[]).await;
    submit(&app, &no, &format!("outcome=failed&token={token}"), &[]).await;
    assert_eq!(status_of(&app, &id).await, "success");
    let types = event_types(&app, &id).await;
    assert_eq!(count(&types, "callback_received"), 1, "{types:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pay_page_refuses_forms_without_its_token_or_from_another_site() {
    let app = TestApp::spawn().await;
    let (id, no) = pending_payment(&app, "10.00", "alipay").await;
    let (status, _) = submit(&app, &no, "outcome=success", &[]).await;
    assert_eq!(status, 403);
    let (status, _) = submit(&app, &no, "outcome=success&token=1.abc.def", &[]).await;
    assert_eq!(status, 403);
    // Another payment's token does not fit this one.
    let (_, other) = pending_payment(&app, "10.00", "alipay").await;
    let foreign_token = page_token(&app, &other).await;
    let (status, _) = submit(
        &app,
        &no,
        &format!("outcome=success&token={foreign_token}"),
        &[],
    )
    .await;
    assert_eq!(status, 403);
    let token = page_token(&app, &no).await;
    let form = format!("outcome=success&token={token}");
    let (status, _) = submit(&app, &no, &form, &[("origin", "https://evil.example")]).await;
    assert_eq!(status, 403);
    let (status, _) = submit(&app, &no, &form, &[("sec-fetch-site", "cross-site")]).await;
    assert_eq!(status, 403);
    assert_eq!(event_types(&app, &id).await, ["created"]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pay_page_of_a_settled_payment_sends_nothing() {
    let app = TestApp::spawn().await;
    let (id, no) = pending_payment(&app, "10.00", "alipay").await;
    let token = page_token(&app, &no).await;
    app.pay("alipay", &no, "10.00").await;
    let (status, _) = submit(&app, &no, &format!("outcome=failed&token={token}"), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(status_of(&app, &id).await, "success");
    assert_eq!(count(&event_types(&app, &id).await, "callback_received"), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_sandbox_there_is_no_pay_page_and_its_secret_signs_nothing() {
    let app = TestApp::spawn_with(crate::common::Options::tuned(|c| {
        c.sandbox = Some(ledger::config::SandboxMode::Off)
    }))
    .await;
    let (_, no) = pending_payment(&app, "10.00", "alipay").await;
    let (status, _, _) = pay_page(&app, &no).await;
    assert_eq!(status, 404);
    // A notification signed with the sandbox secret is not a gateway's.
    let forged = ledger::client::Client::new(&app.base, "alipay", crate::common::SANDBOX_SECRET)
        .send(
            "POST",
            "/api/v1/gateways/alipay/notify",
            Some(
                &json!({"payment_no": no, "callback_no": "X", "status": "success",
                "amount": "10.00", "gateway_trade_no": "T"})
                .to_string(),
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(forged.status, 401);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// Create with a failing gateway
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_is_answered_failed_when_every_gateway_attempt_fails() {
    let app = spawn_with_faults("fail_next=4").await;
    let order = new_order();
    let a = create(&app, "50.00", "alipay", &order).await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(data(&a)["status"], "failed", "{}", a.body);
    assert_eq!(gateway_calls(&app), 4, "one attempt and three retries");
    let id = data(&a)["payment_id"]
        .as_str()
        .expect("payment_id")
        .to_owned();

    assert_eq!(status_of(&app, &id).await, "failed");
    let d = detail(&app, &id).await;
    let reason = d["failure_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("gateway"),
        "the failure reason is visible: {d:#}"
    );
    assert_eq!(event_types(&app, &id).await, ["created", "failed"]);

    // The failure is also in the global feed.
    let feed = get_data(&app, "auditor", "/api/v1/events?limit=1000").await;
    let failed_in_feed = feed["events"]
        .as_array()
        .expect("feed events")
        .iter()
        .any(|e| e["payment_id"] == id.as_str() && e["type"] == "failed");
    assert!(failed_in_feed, "{feed:#}");

    // A failed payment does not hold the order: the payer may try again.
    let again = create(&app, "50.00", "alipay", &order).await;
    assert_eq!(again.status, 201, "{}", again.body);
    assert_eq!(data(&again)["status"], "pending");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_succeeds_when_the_gateway_recovers_within_the_retries() {
    let app = spawn_with_faults("fail_next=2").await;
    let a = create(&app, "50.00", "alipay", &new_order()).await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(data(&a)["status"], "pending");
    assert_eq!(gateway_calls(&app), 3, "two failures, then success");
    let no = data(&a)["payment_no"].as_str().expect("payment_no");
    let url = data(&a)["payment_url"].as_str().expect("payment_url");
    assert!(url.ends_with(&format!("/checkout/{no}")), "{url}");
    let id = data(&a)["payment_id"].as_str().expect("payment_id");
    assert_eq!(status_of(&app, id).await, "pending");
    assert_eq!(detail(&app, id).await["payment_url"], url);
    assert_eq!(event_types(&app, id).await, ["created"]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_whose_gateway_call_times_out_once_stays_pending_with_a_url() {
    let app = spawn_with_faults("timeout_next=1").await;
    let a = create(&app, "50.00", "bank", &new_order()).await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(data(&a)["status"], "pending");
    let no = data(&a)["payment_no"].as_str().expect("payment_no");
    assert!(data(&a)["payment_url"]
        .as_str()
        .expect("url")
        .ends_with(&format!("/checkout/{no}")));
    let id = data(&a)["payment_id"].as_str().expect("payment_id");
    assert_eq!(status_of(&app, id).await, "pending");
    assert_eq!(event_types(&app, id).await, ["created"]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_whose_every_attempt_times_out_is_settled_by_query_order() {
    let app = spawn_with_faults("timeout_next=4").await;
    let a = create(&app, "50.00", "alipay", &new_order()).await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(
        data(&a)["status"],
        "pending",
        "the query found the order: {}",
        a.body
    );
    assert_eq!(
        gateway_calls(&app),
        5,
        "four timed-out creates, then one query"
    );
    let no = data(&a)["payment_no"].as_str().expect("payment_no");
    assert!(data(&a)["payment_url"]
        .as_str()
        .expect("url")
        .ends_with(&format!("/checkout/{no}")));
    let id = data(&a)["payment_id"].as_str().expect("payment_id");
    assert_eq!(status_of(&app, id).await, "pending");
    assert_eq!(event_types(&app, id).await, ["created"]);
    // The order the gateway took is payable.
    let (status, html) = click(&app, no, "success").await;
    assert_eq!(status, 200, "{html}");
    assert_eq!(status_of(&app, id).await, "success");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// Refunds through the gateway
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_through_the_gateway_succeed_and_the_last_one_fully_refunds_the_payment() {
    let app = TestApp::spawn().await;
    let id = app.paid_payment("100.00").await;

    let first = refund(&app, &id, "30.00").await;
    let d = wait_refund_settled(&app, &id, &first).await;
    assert_eq!(refund_in(&d, &first)["status"], "success", "{d:#}");
    assert_eq!(
        d["status"], "success",
        "a partly refunded payment stays success"
    );
    assert_eq!(d["refunded_amount"], "30.00");
    assert!(d["refund_time"].is_null(), "{d:#}");

    let second = refund(&app, &id, "70.00").await;
    let d = wait_refund_settled(&app, &id, &second).await;
    assert_eq!(refund_in(&d, &second)["status"], "success", "{d:#}");
    assert_eq!(d["status"], "refunded");
    assert_eq!(d["refunded_amount"], "100.00");
    assert!(d["refund_time"].is_string(), "{d:#}");
    assert_eq!(status_of(&app, &id).await, "refunded");

    assert_eq!(app.state.gateways.sandbox.refunds_done(), 2);
    assert_eq!(count(&event_types(&app, &id).await, "refunded"), 2);
    let third = request_refund(&app, &id, "1.00").await;
    assert_eq!(third.status, 409, "{}", third.body);
    assert_eq!(third.body["code"], 40901);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_the_gateway_rejects_is_failed_with_a_reason_and_refundable_again() {
    let app = spawn_with_faults("reject_refunds=1").await;
    let id = app.paid_payment("100.00").await;

    let rejected = refund(&app, &id, "100.00").await;
    let d = wait_refund_settled(&app, &id, &rejected).await;
    let r = refund_in(&d, &rejected);
    assert_eq!(r["status"], "failed", "{d:#}");
    assert!(
        !r["failure_reason"].as_str().unwrap_or_default().is_empty(),
        "{d:#}"
    );
    assert_eq!(d["status"], "success");
    assert_eq!(d["refunded_amount"], "0.00");
    assert_eq!(count(&event_types(&app, &id).await, "refund_failed"), 1);

    // The rejected amount is refundable again.
    let accepted = refund(&app, &id, "100.00").await;
    let d = wait_refund_settled(&app, &id, &accepted).await;
    assert_eq!(refund_in(&d, &accepted)["status"], "success", "{d:#}");
    assert_eq!(refund_in(&d, &rejected)["status"], "failed", "{d:#}");
    assert_eq!(d["status"], "refunded");
    assert_eq!(d["refunded_amount"], "100.00");
    assert_eq!(app.state.gateways.sandbox.refunds_done(), 1);
    let types = event_types(&app, &id).await;
    assert_eq!(count(&types, "refunded"), 1, "{types:?}");
    assert_eq!(count(&types, "refund_failed"), 1, "{types:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_the_gateway_never_received_stays_processing_and_is_sent_again_later() {
    let app = TestApp::spawn().await;
    let id = app.paid_payment("100.00").await;
    // Every refund attempt is unavailable (nothing happened); the query then answers that
    // the gateway has no such refund. "Not found" is not a definite answer: the refund stays
    // processing (never failed, so its amount is never refundable twice) and is sent again
    // after its backoff, when the gateway is back.
    arm(&app.state.gateways.sandbox.faults.fail_next, 4);
    let before = gateway_calls(&app);

    let lost = refund(&app, &id, "100.00").await;
    let d = wait_refund_settled(&app, &id, &lost).await;
    let r = refund_in(&d, &lost);
    assert_eq!(r["status"], "success", "{d:#}");
    assert!(
        gateway_calls(&app) - before >= 6,
        "four refund attempts and a query, then the refund sent again"
    );
    assert_eq!(app.state.gateways.sandbox.refunds_done(), 1);
    assert_eq!(d["refunded_amount"], "100.00");
    let types = event_types(&app, &id).await;
    assert_eq!(count(&types, "refund_failed"), 0, "{types:?}");
    assert_eq!(count(&types, "refunded"), 1, "{types:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_while_the_gateway_and_its_query_are_down_settles_as_the_gateway_says() {
    let app = TestApp::spawn().await;
    let id = app.paid_payment("100.00").await;
    // Four refund attempts and the four query attempts are all unavailable.
    arm(&app.state.gateways.sandbox.faults.fail_next, 8);
    let before = gateway_calls(&app);

    let refund_no = refund(&app, &id, "100.00").await;
    let d = wait_refund_settled(&app, &id, &refund_no).await;
    assert!(
        gateway_calls(&app) - before >= 8,
        "the refund and its query were both tried"
    );
    let types = event_types(&app, &id).await;
    // Whatever the outcome, the ledger agrees with the gateway: it never claims a refund the
    // gateway did not make, nor forgets one it made.
    match refund_in(&d, &refund_no)["status"].as_str() {
        Some("success") => {
            assert_eq!(app.state.gateways.sandbox.refunds_done(), 1);
            assert_eq!(count(&types, "refunded"), 1, "{types:?}");
            assert_eq!(d["refunded_amount"], "100.00");
        }
        Some("failed") => {
            assert_eq!(app.state.gateways.sandbox.refunds_done(), 0);
            assert_eq!(count(&types, "refunded"), 0, "{types:?}");
            assert_eq!(d["refunded_amount"], "0.00");
            let reason = refund_in(&d, &refund_no)["failure_reason"]
                .as_str()
                .unwrap_or_default();
            assert!(!reason.is_empty(), "{d:#}");
            let again = refund(&app, &id, "100.00").await;
            let d = wait_refund_settled(&app, &id, &again).await;
            assert_eq!(refund_in(&d, &again)["status"], "success", "{d:#}");
            assert_eq!(app.state.gateways.sandbox.refunds_done(), 1);
        }
        other => panic!("unexpected refund status {other:?}: {d:#}"),
    }
    app.stop().await;
}

/// Arms `timeout_next` (each timed-out call still takes effect at the gateway), refunds the
/// whole payment and checks that it is confirmed exactly once.
async fn refund_confirmed_once_after_timeouts(timeouts: u32) -> (TestApp, u32) {
    let app = TestApp::spawn().await;
    let id = app.paid_payment("100.00").await;
    arm(&app.state.gateways.sandbox.faults.timeout_next, timeouts);
    let before = gateway_calls(&app);

    let refund_no = refund(&app, &id, "100.00").await;
    let d = wait_refund_settled(&app, &id, &refund_no).await;
    assert_eq!(refund_in(&d, &refund_no)["status"], "success", "{d:#}");
    assert_eq!(d["status"], "refunded");
    assert_eq!(d["refunded_amount"], "100.00");
    app.settle().await;
    assert_eq!(
        app.state.gateways.sandbox.refunds_done(),
        1,
        "the gateway refunded once"
    );
    let types = event_types(&app, &id).await;
    assert_eq!(count(&types, "refunded"), 1, "{types:?}");
    assert_eq!(count(&types, "refund_failed"), 0, "{types:?}");
    let calls = gateway_calls(&app) - before;
    (app, calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_call_that_times_out_once_is_confirmed_exactly_once() {
    let (app, calls) = refund_confirmed_once_after_timeouts(1).await;
    assert!(
        calls >= 2,
        "the timed-out call was asked about again ({calls} calls)"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_whose_every_attempt_times_out_is_confirmed_by_query_exactly_once() {
    let (app, calls) = refund_confirmed_once_after_timeouts(4).await;
    assert!(
        calls >= 5,
        "four timed-out refund calls, then the query ({calls} calls)"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_the_query_reports_pending_stays_processing_and_is_confirmed_once() {
    let app = TestApp::spawn().await;
    let id = app.paid_payment("100.00").await;
    let faults = &app.state.gateways.sandbox.faults;
    // The refund takes effect but every call times out; the query then answers "unknown".
    arm(&faults.timeout_next, 4);
    arm(&faults.unknown_next, 1);

    let refund_no = refund(&app, &id, "100.00").await;
    let d = wait_refund_settled(&app, &id, &refund_no).await;
    assert_eq!(
        faults.unknown_next.load(Ordering::SeqCst),
        0,
        "the outcome was queried"
    );
    assert_eq!(refund_in(&d, &refund_no)["status"], "success", "{d:#}");
    assert_eq!(d["status"], "refunded");
    app.settle().await;
    assert_eq!(app.state.gateways.sandbox.refunds_done(), 1);
    let types = event_types(&app, &id).await;
    assert_eq!(count(&types, "refunded"), 1, "{types:?}");
    assert_eq!(count(&types, "refund_failed"), 0, "{types:?}");
    app.stop().await;
}

/// SPEC §2: `refund_failed` means the gateway *rejected* the refund; §8: an unknown outcome is
/// settled by asking the gateway before anything is declared failed. When every refund call
/// and every query times out, the gateway may well have refunded: the ledger must not call it
/// failed (which would make the amount refundable, and refundable twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_whose_outcome_stays_unknown_is_never_declared_failed() {
    let app = TestApp::spawn().await;
    let id = app.paid_payment("100.00").await;
    // Four refund calls time out after taking effect, then the four queries time out too.
    arm(&app.state.gateways.sandbox.faults.timeout_next, 8);

    let refund_no = refund(&app, &id, "100.00").await;
    let d = wait_refund_settled(&app, &id, &refund_no).await;
    assert_eq!(
        app.state.gateways.sandbox.refunds_done(),
        1,
        "the gateway did refund"
    );
    assert_eq!(
        refund_in(&d, &refund_no)["status"],
        "success",
        "the gateway refunded, yet the ledger says: {:#}",
        refund_in(&d, &refund_no)
    );
    assert_eq!(d["refunded_amount"], "100.00");
    let types = event_types(&app, &id).await;
    assert_eq!(count(&types, "refund_failed"), 0, "{types:?}");
    assert_eq!(count(&types, "refunded"), 1, "{types:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_the_gateway_leaves_pending_is_confirmed_by_a_refund_notification() {
    let app = spawn_with_faults("pending_refunds=1").await;
    let (id, no) = pending_payment(&app, "100.00", "alipay").await;
    assert_eq!(app.pay("alipay", &no, "100.00").await.status, 200);
    let before = gateway_calls(&app);

    let refund_no = refund(&app, &id, "100.00").await;
    wait_for_gateway_call(&app, before).await;
    app.settle().await;
    let d = detail(&app, &id).await;
    assert_eq!(refund_in(&d, &refund_no)["status"], "processing", "{d:#}");
    assert_eq!(d["status"], "success");
    assert_eq!(d["refunded_amount"], "0.00");
    // A processing refund holds its amount.
    let more = request_refund(&app, &id, "0.01").await;
    assert_eq!(more.status, 409, "{}", more.body);
    assert_eq!(more.body["code"], 40902);

    let mut body = notice(&no, "success", "100.00");
    body["refund_no"] = json!(refund_no);
    let a = notify(&app, "alipay", &body).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(data(&a)["status"], "success", "{}", a.body);

    let d = detail(&app, &id).await;
    assert_eq!(refund_in(&d, &refund_no)["status"], "success", "{d:#}");
    assert_eq!(d["status"], "refunded");
    assert_eq!(d["refunded_amount"], "100.00");
    let refund_callback = d["callbacks"]
        .as_array()
        .expect("callbacks")
        .iter()
        .find(|c| c["refund_no"] == refund_no.as_str())
        .unwrap_or_else(|| panic!("the refund notification is recorded: {d:#}"));
    assert_eq!(refund_callback["status"], "success");

    // The same notification again changes nothing.
    let again = notify(&app, "alipay", &body).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(data(&again)["duplicate"], true, "{}", again.body);
    app.settle().await;
    let types = event_types(&app, &id).await;
    assert_eq!(count(&types, "refunded"), 1, "{types:?}");
    assert_eq!(count(&types, "refund_failed"), 0, "{types:?}");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// A crash between the append and the gateway call
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_accepted_by_a_node_that_stops_before_calling_the_gateway_completes_once() {
    let first = TestApp::spawn().await;
    let id = first.paid_payment("100.00").await;
    let db = first.db.clone();
    first.stop().await;

    // An API-only node appends `refund_requested` but runs no refund process: it stops with
    // the refund committed and the gateway never called.
    let api = TestApp::spawn_on(
        db.clone(),
        Options {
            role: ServeRole::Api,
            ..Options::default()
        },
    )
    .await;
    let refund_no = refund(&api, &id, "100.00").await;
    assert_eq!(
        gateway_calls(&api),
        0,
        "the gateway was not called before the stop"
    );
    assert_eq!(count(&event_types(&api, &id).await, "refund_requested"), 1);
    api.stop().await;

    let restarted = TestApp::spawn_on(db, Options::default()).await;
    let d = wait_refund_settled(&restarted, &id, &refund_no).await;
    assert_eq!(refund_in(&d, &refund_no)["status"], "success", "{d:#}");
    assert_eq!(d["status"], "refunded");
    assert_eq!(d["refunded_amount"], "100.00");
    restarted.settle().await;
    assert_eq!(restarted.state.gateways.sandbox.refunds_done(), 1);
    let types = event_types(&restarted, &id).await;
    assert_eq!(count(&types, "refunded"), 1, "{types:?}");
    assert_eq!(count(&types, "refund_failed"), 0, "{types:?}");
    restarted.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_still_processing_when_the_service_stops_completes_once_after_restart() {
    let first = spawn_with_faults("pending_refunds=1").await;
    let id = first.paid_payment("100.00").await;
    let before = gateway_calls(&first);
    let refund_no = refund(&first, &id, "60.00").await;
    // The gateway answered "pending"; the service stops with the refund processing.
    wait_for_gateway_call(&first, before).await;
    first.settle().await;
    assert_eq!(
        refund_in(&detail(&first, &id).await, &refund_no)["status"],
        "processing"
    );
    let db = first.db.clone();
    first.stop().await;

    let restarted = TestApp::spawn_on(db, Options::default()).await;
    let d = wait_refund_settled(&restarted, &id, &refund_no).await;
    assert_eq!(refund_in(&d, &refund_no)["status"], "success", "{d:#}");
    assert_eq!(
        d["status"], "success",
        "a partly refunded payment stays success"
    );
    assert_eq!(d["refunded_amount"], "60.00");
    restarted.settle().await;
    let types = event_types(&restarted, &id).await;
    assert_eq!(count(&types, "refunded"), 1, "{types:?}");
    assert_eq!(count(&types, "refund_requested"), 1, "{types:?}");
    // Exactly the rest is refundable.
    let over = request_refund(&restarted, &id, "40.01").await;
    assert_eq!(over.status, 409, "{}", over.body);
    assert_eq!(over.body["code"], 40902);
    restarted.stop().await;
}

// ---------------------------------------------------------------------------------------
// Notifications
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_notification_is_answered_ok_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let (id, no) = pending_payment(&app, "20.00", "alipay").await;
    let body = notice(&no, "success", "20.00");
    let first = notify(&app, "alipay", &body).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(data(&first)["status"], "success");
    assert_eq!(data(&first)["duplicate"], false);
    let types = event_types(&app, &id).await;

    let again = notify(&app, "alipay", &body).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["code"], 0);
    assert_eq!(data(&again)["duplicate"], true, "{}", again.body);
    assert_eq!(data(&again)["status"], "success");
    // Even with a different outcome, the same callback_no is the same notification.
    let mut contradicting = body.clone();
    contradicting["status"] = json!("failed");
    let third = notify(&app, "alipay", &contradicting).await;
    assert_eq!(third.status, 200, "{}", third.body);
    assert_eq!(data(&third)["duplicate"], true, "{}", third.body);

    app.settle().await;
    assert_eq!(event_types(&app, &id).await, types, "no new event");
    assert_eq!(
        detail(&app, &id).await["callbacks"]
            .as_array()
            .expect("callbacks")
            .len(),
        1
    );
    assert_eq!(status_of(&app, &id).await, "success");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_with_the_wrong_amount_is_recorded_as_failed_and_does_not_pay() {
    let app = TestApp::spawn().await;
    let (id, no) = pending_payment(&app, "20.00", "alipay").await;
    let a = notify(&app, "alipay", &notice(&no, "success", "19.99")).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(data(&a)["status"], "failed", "{}", a.body);
    assert_eq!(status_of(&app, &id).await, "pending");
    let d = detail(&app, &id).await;
    assert_eq!(d["callbacks"][0]["status"], "failed", "{d:#}");
    assert_eq!(d["callbacks"][0]["amount"], "19.99");
    assert!(d["payment_time"].is_null());
    assert_eq!(count(&event_types(&app, &id).await, "paid"), 0);

    // The pay page's wrong-amount fault takes the same path.
    arm(&app.state.gateways.sandbox.faults.notify_wrong_amount, 1);
    let (status, html) = click(&app, &no, "success").await;
    assert_eq!(status, 200, "{html}");
    assert_eq!(status_of(&app, &id).await, "pending");

    // The right amount still pays it.
    assert_eq!(app.pay("alipay", &no, "20.00").await.status, 200);
    assert_eq!(status_of(&app, &id).await, "success");
    let types = event_types(&app, &id).await;
    assert_eq!(count(&types, "paid"), 1, "{types:?}");
    assert_eq!(count(&types, "callback_received"), 3, "{types:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_success_notice_after_the_payment_failed_is_recorded_and_flagged_for_refund() {
    let app = TestApp::spawn().await;
    let (id, no) = pending_payment(&app, "20.00", "credit_card").await;
    let failed = notify(&app, "credit_card", &notice(&no, "failed", "20.00")).await;
    assert_eq!(failed.status, 200, "{}", failed.body);
    assert_eq!(status_of(&app, &id).await, "failed");

    let late = notice(&no, "success", "20.00");
    let a = notify(&app, "credit_card", &late).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(data(&a)["status"], "failed", "{}", a.body);

    assert_eq!(status_of(&app, &id).await, "failed");
    let d = detail(&app, &id).await;
    assert_eq!(d["flagged_for_refund"], true, "{d:#}");
    let callback = d["callbacks"]
        .as_array()
        .expect("callbacks")
        .iter()
        .find(|c| c["callback_no"] == late["callback_no"])
        .unwrap_or_else(|| panic!("the late success notice is recorded: {d:#}"));
    assert_eq!(callback["status"], "failed");
    assert_eq!(callback["outcome"], "success");
    assert_eq!(callback["flagged_for_refund"], true);
    assert_eq!(count(&event_types(&app, &id).await, "paid"), 0);

    let metrics = reqwest::get(format!("{}/metrics", app.base))
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("metrics body");
    assert!(
        metrics.contains("ledger_flagged_for_refund_total"),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pay_page_notification_delivered_twice_pays_once() {
    let app = spawn_with_faults("notify_twice=1").await;
    let (id, no) = pending_payment(&app, "33.30", "alipay").await;
    let (status, html) = click(&app, &no, "success").await;
    assert_eq!(status, 200, "{html}");
    assert_eq!(
        app.state
            .gateways
            .sandbox
            .faults
            .notify_twice
            .load(Ordering::SeqCst),
        0
    );
    assert_eq!(status_of(&app, &id).await, "success");
    app.settle().await;
    let types = event_types(&app, &id).await;
    assert_eq!(count(&types, "paid"), 1, "{types:?}");
    assert_eq!(count(&types, "callback_received"), 1, "{types:?}");
    assert_eq!(
        detail(&app, &id).await["callbacks"]
            .as_array()
            .expect("callbacks")
            .len(),
        1
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_notice_on_a_paid_payment_is_refused_and_the_payment_stays_success() {
    let app = TestApp::spawn().await;
    let (id, no) = pending_payment(&app, "20.00", "wechat").await;
    assert_eq!(app.pay("wechat", &no, "20.00").await.status, 200);
    let contradicting = notice(&no, "failed", "20.00");
    let a = notify(&app, "wechat", &contradicting).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(data(&a)["status"], "failed", "{}", a.body);

    assert_eq!(status_of(&app, &id).await, "success");
    let d = detail(&app, &id).await;
    let callback = d["callbacks"]
        .as_array()
        .expect("callbacks")
        .iter()
        .find(|c| c["callback_no"] == contradicting["callback_no"])
        .unwrap_or_else(|| panic!("the failure notice is recorded: {d:#}"));
    assert_eq!(callback["status"], "failed");
    assert_eq!(callback["flagged_for_refund"], false);
    let types = event_types(&app, &id).await;
    assert_eq!(count(&types, "failed"), 0, "{types:?}");
    assert_eq!(count(&types, "paid"), 1, "{types:?}");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// RetryPolicy
// ---------------------------------------------------------------------------------------

/// The default policy with its backoff removed. Tokio's `test-util` feature (needed for
/// `tokio::time::pause`) is not enabled for this crate, so the backoff is configured away
/// instead of being skipped by a paused clock; the attempt counting is the same code.
fn no_backoff() -> RetryPolicy {
    RetryPolicy {
        backoff_base: Duration::ZERO,
        backoff_max: Duration::ZERO,
        ..RetryPolicy::default()
    }
}

#[tokio::test]
async fn the_default_retry_policy_makes_one_attempt_and_three_retries() {
    let policy = RetryPolicy::default();
    assert_eq!(policy.retries, 3);
    let attempts = Cell::new(0);
    let r: Result<(), _> = policy
        .run("test", || {
            attempts.set(attempts.get() + 1);
            async { Err(GatewayError::Unavailable("down".into())) }
        })
        .await;
    assert_eq!(attempts.get(), 4);
    assert_eq!(r, Err(GatewayError::Unavailable("down".into())));
}

#[tokio::test]
async fn a_refusal_is_not_retried() {
    let attempts = Cell::new(0);
    let r: Result<(), _> = no_backoff()
        .run("test", || {
            attempts.set(attempts.get() + 1);
            async { Err(GatewayError::Refused("no".into())) }
        })
        .await;
    assert_eq!(attempts.get(), 1);
    assert_eq!(r, Err(GatewayError::Refused("no".into())));
}

#[tokio::test]
async fn a_call_that_recovers_within_the_retries_returns_its_value() {
    let attempts = Cell::new(0);
    let r = no_backoff()
        .run("test", || {
            attempts.set(attempts.get() + 1);
            let n = attempts.get();
            async move {
                if n < 3 {
                    Err(GatewayError::Unavailable("down".into()))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
    assert_eq!(r, Ok(3));
    assert_eq!(attempts.get(), 3);
}

#[tokio::test]
async fn a_timeout_in_any_attempt_makes_the_outcome_unknown() {
    let attempts = Cell::new(0);
    let r: Result<(), _> = no_backoff()
        .run("test", || {
            attempts.set(attempts.get() + 1);
            let first = attempts.get() == 1;
            async move {
                if first {
                    Err(GatewayError::Timeout)
                } else {
                    Err(GatewayError::Unavailable("down".into()))
                }
            }
        })
        .await;
    assert_eq!(attempts.get(), 4);
    assert_eq!(r, Err(GatewayError::Timeout));
}

/// Shutdown with refunds still due: the refund driver gives up its duty's lease, so it may not
/// send them; it must stop, not ask again and again until the shutdown deadline runs out
/// (it used to spin on the database for the whole deadline, 25 s by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_with_refunds_still_due_does_not_wait_out_the_shutdown_deadline() {
    const DEADLINE_SECS: u64 = 120;
    let app = TestApp::spawn_with(Options::tuned(|raw| {
        raw.limits.shutdown_deadline_secs = DEADLINE_SECS;
    }))
    .await;
    let id = app.paid_payment("100.00").await;
    for _ in 0..4 {
        refund(&app, &id, "1.00").await;
    }
    let stopping = Instant::now();
    app.stop().await;
    let took = stopping.elapsed();
    // Not a speed figure: a stop that waited for its deadline takes all 120 s; one that
    // did not is done in well under a second. Half the deadline tells them apart on any
    // machine.
    assert!(
        took < Duration::from_secs(DEADLINE_SECS / 2),
        "stopping took {took:?}: a background task waited out the shutdown deadline"
    );
}
