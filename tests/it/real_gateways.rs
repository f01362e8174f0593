//! The real gateways end to end (issue 15): the ledger configured with LEDGER_ALIPAY_* and
//! LEDGER_WECHAT_* pointing at in-process simulators (`ledger::simulate`) that speak Alipay's
//! and WeChat Pay's exact formats with keys of their own, on port 0, against the real
//! PostgreSQL and NATS of every integration test.
//!
//! Each flow goes through the parts a merchant's money would: create → checkout (the
//! gateway's pay URL) → the simulator's pay page → its real-format notification (retried until
//! answered right) → paid; refunds through each gateway's refund API, settled by its answer or
//! its refund notification; a create whose every call times out, settled by the query; an
//! expired payment closed at the gateway. Refusals (tampered, stale, another merchant's) and
//! the wrong amount are checked to be refused or recorded as SPEC §12 says. The keys are the
//! throwaway test keys in `tests/fixtures/gateways/`. Every wait is bounded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ledger::config::RawConfig;
use ledger::simulate::alipay::{AlipaySim, AlipaySimConfig};
use ledger::simulate::wechat::{WechatSim, WechatSimConfig};
use ledger::simulate::{DeliveryRecord, NotifySchedule, Running};
use ledger_wire::keys::{PrivateKey, PublicKey};
use ledger_wire::wechat::ApiV3Key;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use uuid::Uuid;

use crate::common::{data, Options, TestApp};

/// The longest any wait here may take before the test fails.
const WAIT_MAX: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);
const APIV3_KEY: &str = "0123456789abcdefghijklmnopqrstuv";
const PLATFORM_SERIAL: &str = "PUB_KEY_ID_0114232183192025032400111111";
const MERCHANT_SERIAL: &str = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1";

fn fixture(name: &str) -> String {
    crate::common::repo()
        .join("tests/fixtures/gateways")
        .join(name)
        .display()
        .to_string()
}

fn private_key(name: &str) -> PrivateKey {
    PrivateKey::parse(&std::fs::read_to_string(fixture(name)).expect("fixture key"))
        .expect("fixture private key parses")
}

fn public_key(name: &str) -> PublicKey {
    PublicKey::parse(&std::fs::read_to_string(fixture(name)).expect("fixture key"))
        .expect("fixture public key parses")
}

/// Fast retries, so that a refused first delivery is retried within the test.
fn schedule() -> NotifySchedule {
    NotifySchedule {
        backoff_base: Duration::from_millis(100),
        backoff_max: Duration::from_millis(400),
        attempts_max: 6,
        timeout: Duration::from_secs(5),
    }
}

async fn listener() -> (tokio::net::TcpListener, String) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind port 0");
    let base = format!("http://{}", l.local_addr().expect("addr"));
    (l, base)
}

async fn alipay_sim(tune: impl FnOnce(&mut AlipaySimConfig)) -> (Arc<AlipaySim>, Running) {
    let mut config = AlipaySimConfig::new(
        private_key("alipay-platform-private.pem"),
        public_key("alipay-merchant-public.pem"),
    );
    config.notify = schedule();
    config.slow_answer = Duration::from_secs(3);
    config.refund_settle = Duration::from_millis(700);
    tune(&mut config);
    let (l, base) = listener().await;
    ledger::simulate::alipay::spawn(config, l, base).expect("alipay simulator starts")
}

async fn wechat_sim(tune: impl FnOnce(&mut WechatSimConfig)) -> (Arc<WechatSim>, Running) {
    let mut config = WechatSimConfig::new(
        private_key("wechat-platform-private.pem"),
        public_key("wechat-merchant-public.pem"),
    );
    config.apiv3_key_text = APIV3_KEY.into();
    config.apiv3_key = ApiV3Key::new(APIV3_KEY).expect("32 characters");
    config.platform.serial = PLATFORM_SERIAL.into();
    config.merchant_serial = MERCHANT_SERIAL.into();
    config.notify = schedule();
    config.slow_answer = Duration::from_secs(3);
    config.refund_settle = Duration::from_millis(700);
    tune(&mut config);
    let (l, base) = listener().await;
    ledger::simulate::wechat::spawn(config, l, base).expect("wechat simulator starts")
}

/// The ledger's settings for the Alipay simulator at `base`.
fn alipay_settings(raw: &mut RawConfig, app_id: &str, base: &str) {
    raw.alipay.alipay_app_id = Some(app_id.to_owned());
    raw.alipay.alipay_private_key_file = Some(fixture("alipay-merchant-private.pem").into());
    raw.alipay.alipay_public_key_file = Some(fixture("alipay-platform-public.pem").into());
    raw.alipay.alipay_gateway_url = format!("{base}/gateway.do");
}

/// The ledger's settings for the WeChat Pay simulator at `base`.
fn wechat_settings(raw: &mut RawConfig, mchid: &str, appid: &str, base: &str) {
    raw.wechat.wechat_mchid = Some(mchid.to_owned());
    raw.wechat.wechat_appid = Some(appid.to_owned());
    raw.wechat.wechat_apiv3_key = Some(APIV3_KEY.to_owned());
    raw.wechat.wechat_private_key_file = Some(fixture("wechat-merchant-private.pem").into());
    raw.wechat.wechat_cert_serial = Some(MERCHANT_SERIAL.to_owned());
    raw.wechat.wechat_platform_keys = Some(format!(
        "{PLATFORM_SERIAL}:{}",
        fixture("wechat-platform-public.pem")
    ));
    raw.wechat.wechat_base_url = base.to_owned();
}

/// The ledger with Alipay pointed at `sim`, plus `more` settings.
async fn with_alipay(
    sim: &AlipaySim,
    running: &Running,
    more: impl Fn(&mut RawConfig) + Send + Sync + 'static,
) -> TestApp {
    let (app_id, base) = (sim.config.app_id.clone(), running.base_url.clone());
    TestApp::spawn_with(Options::tuned(move |raw| {
        alipay_settings(raw, &app_id, &base);
        more(raw);
    }))
    .await
}

/// The ledger with WeChat Pay pointed at `sim`, plus `more` settings.
async fn with_wechat(
    sim: &WechatSim,
    running: &Running,
    more: impl Fn(&mut RawConfig) + Send + Sync + 'static,
) -> TestApp {
    let (mchid, appid, base) = (
        sim.config.mchid.clone(),
        sim.config.appid.clone(),
        running.base_url.clone(),
    );
    TestApp::spawn_with(Options::tuned(move |raw| {
        wechat_settings(raw, &mchid, &appid, &base);
        more(raw);
    }))
    .await
}

fn no_more(_: &mut RawConfig) {}

fn order() -> String {
    format!("ORD-{}", Uuid::new_v4().simple())
}

async fn get_data(app: &TestApp, path: &str) -> Value {
    let a = app
        .client("auditor")
        .send("GET", path, None, &[])
        .await
        .expect("GET answers");
    assert_eq!(a.status, 200, "GET {path}: {}", a.body);
    data(&a).clone()
}

async fn detail(app: &TestApp, id: &str) -> Value {
    get_data(app, &format!("/api/v1/payments/{id}")).await
}

/// Polls `check` until it holds; fails the test after `WAIT_MAX`.
async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < WAIT_MAX, "gave up waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// Waits for the payment's detail to satisfy `done`; returns it.
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

/// The unsigned checkout read of a payment.
async fn checkout(app: &TestApp, payment_no: &str) -> Value {
    let r = reqwest::get(format!("{}/api/v1/checkout/{payment_no}", app.base))
        .await
        .expect("checkout answers");
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.expect("checkout JSON")["data"].clone()
}

/// GET of a page: (status, body).
async fn open(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.expect("page answers");
    (r.status().as_u16(), r.text().await.expect("page body"))
}

/// Clicks a simulator button (a plain HTML form post).
async fn click(base: &str, button: &str, out_trade_no: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(format!("{base}/sim/{button}"))
        .form(&[("out_trade_no", out_trade_no)])
        .send()
        .await
        .expect("button answers");
    (r.status().as_u16(), r.text().await.expect("page body"))
}

fn deliveries_of(all: Vec<DeliveryRecord>, out_trade_no: &str) -> Vec<DeliveryRecord> {
    all.into_iter()
        .filter(|d| d.out_trade_no == out_trade_no)
        .collect()
}

/// Requests a refund as an operator; returns its refund_no.
async fn refund(app: &TestApp, id: &str, amount: &str) -> String {
    let body = json!({ "amount": amount, "reason": "customer asked" }).to_string();
    let a = app
        .client("operator")
        .send(
            "POST",
            &format!("/api/v1/payments/{id}/refund"),
            Some(&body),
            &[],
        )
        .await
        .expect("refund answers");
    assert_eq!(a.status, 201, "refund: {}", a.body);
    data(&a)["refund_no"]
        .as_str()
        .expect("refund_no")
        .to_owned()
}

fn refund_status(d: &Value, refund_no: &str) -> String {
    d["refunds"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["refund_no"] == refund_no))
        .map(|r| r["status"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_default()
}

/// Pays an Alipay payment on the simulator's page, from the checkout's pay URL.
async fn pay_with_alipay(app: &TestApp, running: &Running, no: &str, amount: &str) {
    let c = checkout(app, no).await;
    let url = c["pay_url"].as_str().expect("a pay URL").to_owned();
    assert!(
        url.starts_with(&format!("{}/gateway.do?", running.base_url)),
        "{url}"
    );
    let (status, html) = open(&url).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains(&format!("¥{amount}")), "{html}");
    let (status, html) = click(&running.base_url, "pay", no).await;
    assert_eq!(status, 200, "{html}");
}

/// Pays a WeChat Pay payment on the simulator's code page, from the checkout's pay URL.
async fn pay_with_wechat(app: &TestApp, running: &Running, no: &str, amount: &str) {
    let c = checkout(app, no).await;
    let url = c["pay_url"].as_str().expect("a code URL").to_owned();
    assert!(
        url.starts_with(&format!("{}/pay/", running.base_url)),
        "{url}"
    );
    let (status, html) = open(&url).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains(&format!("¥{amount}")), "{html}");
    let out_trade_no = no.strip_prefix('P').expect("P + hex");
    let (status, html) = click(&running.base_url, "pay", out_trade_no).await;
    assert_eq!(status, 200, "{html}");
}

// ---------------------------------------------------------------------------------------
// Paying through the simulators
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alipay_payment_goes_from_checkout_through_the_simulators_pay_page_to_paid() {
    let (sim, running) = alipay_sim(|_| {}).await;
    let app = with_alipay(&sim, &running, no_more).await;
    let (id, no) = app.create_payment("88.80", "CNY", "alipay", &order()).await;
    pay_with_alipay(&app, &running, &no, "88.80").await;

    let d = wait_detail(&app, &id, "the payment to be paid", |d| {
        d["status"] == "success"
    })
    .await;
    let trade = sim.trade(&no).expect("the simulator has the trade");
    assert_eq!(trade.status, "TRADE_SUCCESS");
    let callbacks = d["callbacks"].as_array().expect("callbacks");
    assert_eq!(callbacks[0]["gateway_trade_no"], trade.trade_no, "{d:#}");
    assert_eq!(callbacks.len(), 1, "{d:#}");
    // Alipay's notify_id is the callback number: its retries would be duplicates.
    let sent = deliveries_of(sim.deliveries(), &no);
    assert_eq!(callbacks[0]["callback_no"], sent[0].message_id);
    assert_eq!(callbacks[0]["gateway"], "alipay");
    // The simulator saw `success` at once and stopped retrying.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let sent = deliveries_of(sim.deliveries(), &no);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(sent[0].accepted && sent[0].answer == "success", "{sent:?}");
    // A paid payment offers no pay URL any more.
    assert!(checkout(&app, &no).await["pay_url"].is_null());
    running.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wechat_payment_goes_from_checkout_through_the_code_page_to_paid() {
    let (sim, running) = wechat_sim(|_| {}).await;
    let app = with_wechat(&sim, &running, no_more).await;
    let (id, no) = app.create_payment("12.34", "CNY", "wechat", &order()).await;
    let out_trade_no = no.strip_prefix('P').expect("P + hex").to_owned();
    let placed = sim
        .order(&out_trade_no)
        .expect("the Native order was placed");
    assert_eq!(placed.total_fen, 1234, "amounts travel as exact fen");
    assert_eq!(placed.state, "NOTPAY");
    pay_with_wechat(&app, &running, &no, "12.34").await;

    let d = wait_detail(&app, &id, "the payment to be paid", |d| {
        d["status"] == "success"
    })
    .await;
    let paid = sim.order(&out_trade_no).expect("order");
    assert_eq!(
        d["callbacks"][0]["gateway_trade_no"],
        json!(paid.transaction_id),
        "{d:#}"
    );
    assert_eq!(d["amount"], "12.34");
    let sent = deliveries_of(sim.deliveries(), &out_trade_no);
    assert_eq!(d["callbacks"][0]["callback_no"], sent[0].message_id);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let sent = deliveries_of(sim.deliveries(), &out_trade_no);
    assert_eq!(sent.len(), 1, "answered 204 once, not retried: {sent:?}");
    assert_eq!(sent[0].status, Some(204));
    running.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payer_who_closes_the_alipay_page_fails_the_payment_by_trade_closed() {
    let (sim, running) = alipay_sim(|_| {}).await;
    let app = with_alipay(&sim, &running, no_more).await;
    let (id, no) = app.create_payment("5.00", "CNY", "alipay", &order()).await;
    let url = checkout(&app, &no).await["pay_url"]
        .as_str()
        .expect("pay URL")
        .to_owned();
    assert_eq!(open(&url).await.0, 200);
    let (status, html) = click(&running.base_url, "close", &no).await;
    assert_eq!(status, 200, "{html}");
    let d = wait_detail(&app, &id, "the payment to fail", |d| {
        d["status"] == "failed"
    })
    .await;
    assert_eq!(d["failure_reason"], "gateway_reported_failure", "{d:#}");
    running.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_delivered_twice_pays_once_and_the_repeat_is_acknowledged() {
    let (sim, running) = alipay_sim(|_| {}).await;
    sim.faults.notify_twice.store(1, Ordering::SeqCst);
    let app = with_alipay(&sim, &running, no_more).await;
    let (id, no) = app.create_payment("20.00", "CNY", "alipay", &order()).await;
    pay_with_alipay(&app, &running, &no, "20.00").await;
    wait_for("two acknowledged deliveries", || async {
        deliveries_of(sim.deliveries(), &no)
            .iter()
            .filter(|d| d.accepted)
            .count()
            == 2
    })
    .await;
    let d = detail(&app, &id).await;
    assert_eq!(d["status"], "success");
    assert_eq!(d["callbacks"].as_array().map(Vec::len), Some(1), "{d:#}");
    running.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_held_back_arrive_out_of_order_and_both_payments_are_paid() {
    let (sim, running) = wechat_sim(|_| {}).await;
    sim.faults.notify_out_of_order.store(1, Ordering::SeqCst);
    let app = with_wechat(&sim, &running, no_more).await;
    let (first_id, first) = app.create_payment("1.00", "CNY", "wechat", &order()).await;
    let (second_id, second) = app.create_payment("2.00", "CNY", "wechat", &order()).await;
    pay_with_wechat(&app, &running, &first, "1.00").await;
    pay_with_wechat(&app, &running, &second, "2.00").await;
    for id in [&first_id, &second_id] {
        wait_detail(&app, id, "both payments to be paid", |d| {
            d["status"] == "success"
        })
        .await;
    }
    let all = sim.deliveries();
    let at = |no: &str| {
        all.iter()
            .find(|d| d.out_trade_no == no.strip_prefix('P').expect("hex"))
            .map(|d| d.at)
            .expect("delivered")
    };
    assert!(
        at(&second) < at(&first),
        "the first payment's notice came second"
    );
    running.stop().await;
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// Refused or recorded as the spec says
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_alipay_notification_is_refused_and_its_retry_is_recorded_once() {
    let (sim, running) = alipay_sim(|_| {}).await;
    sim.faults.notify_tampered.store(1, Ordering::SeqCst);
    let app = with_alipay(&sim, &running, no_more).await;
    let (id, no) = app.create_payment("30.00", "CNY", "alipay", &order()).await;
    pay_with_alipay(&app, &running, &no, "30.00").await;
    let d = wait_detail(&app, &id, "the retry to pay it", |d| {
        d["status"] == "success"
    })
    .await;
    let sent = deliveries_of(sim.deliveries(), &no);
    // The body changed after signing: refused with `fail`, so Alipay sent it again.
    assert_eq!(sent[0].answer, "fail", "{sent:?}");
    assert_eq!(sent[0].status, Some(401));
    assert!(!sent[0].accepted);
    assert!(sent[1].accepted && sent[1].answer == "success", "{sent:?}");
    assert_eq!(sent[0].message_id, sent[1].message_id);
    assert_eq!(d["callbacks"].as_array().map(Vec::len), Some(1), "{d:#}");
    assert_eq!(d["amount"], "30.00", "the tampered amount was never taken");
    running.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_wechat_notification_is_refused_and_its_retry_is_recorded_once() {
    let (sim, running) = wechat_sim(|_| {}).await;
    sim.faults.notify_tampered.store(1, Ordering::SeqCst);
    let app = with_wechat(&sim, &running, no_more).await;
    let (id, no) = app.create_payment("31.00", "CNY", "wechat", &order()).await;
    pay_with_wechat(&app, &running, &no, "31.00").await;
    let d = wait_detail(&app, &id, "the retry to pay it", |d| {
        d["status"] == "success"
    })
    .await;
    let sent = deliveries_of(sim.deliveries(), no.strip_prefix('P').expect("hex"));
    assert_eq!(sent[0].status, Some(401), "{sent:?}");
    assert!(sent[0].answer.contains("\"code\":\"FAIL\""), "{sent:?}");
    assert_eq!(sent[1].status, Some(204), "{sent:?}");
    let callbacks = d["callbacks"].as_array().expect("callbacks");
    assert_eq!(callbacks.len(), 1, "{d:#}");
    assert_eq!(callbacks[0]["callback_no"], sent[1].message_id);
    running.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_wechat_notification_is_refused_and_its_fresh_retry_is_recorded_once() {
    let (sim, running) = wechat_sim(|_| {}).await;
    sim.faults.notify_stale.store(1, Ordering::SeqCst);
    let app = with_wechat(&sim, &running, no_more).await;
    let (id, no) = app.create_payment("40.00", "CNY", "wechat", &order()).await;
    pay_with_wechat(&app, &running, &no, "40.00").await;
    let d = wait_detail(&app, &id, "the retry to pay it", |d| {
        d["status"] == "success"
    })
    .await;
    let sent = deliveries_of(sim.deliveries(), no.strip_prefix('P').expect("hex"));
    assert_eq!(sent[0].status, Some(401), "ten minutes old: {sent:?}");
    assert!(sent[0].answer.contains("five minutes"), "{sent:?}");
    assert_eq!(sent[1].status, Some(204), "{sent:?}");
    assert_eq!(d["callbacks"].as_array().map(Vec::len), Some(1), "{d:#}");
    running.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_for_another_alipay_app_are_refused_every_time_and_never_recorded() {
    let (sim, running) = alipay_sim(|c| c.notify.attempts_max = 3).await;
    sim.faults.notify_other_merchant.store(1, Ordering::SeqCst);
    let app = with_alipay(&sim, &running, no_more).await;
    let (id, no) = app.create_payment("50.00", "CNY", "alipay", &order()).await;
    pay_with_alipay(&app, &running, &no, "50.00").await;
    wait_for("the simulator to give up", || async {
        deliveries_of(sim.deliveries(), &no).len() == 3
    })
    .await;
    let sent = deliveries_of(sim.deliveries(), &no);
    assert!(
        sent.iter()
            .all(|d| d.status == Some(403) && d.answer == "fail"),
        "{sent:?}"
    );
    let d = detail(&app, &id).await;
    assert_eq!(d["status"], "pending");
    assert_eq!(d["callbacks"], json!([]), "{d:#}");
    running.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_for_another_wechat_merchant_are_refused_every_time_and_never_recorded() {
    let (sim, running) = wechat_sim(|c| c.notify.attempts_max = 3).await;
    sim.faults.notify_other_merchant.store(1, Ordering::SeqCst);
    let app = with_wechat(&sim, &running, no_more).await;
    let (id, no) = app.create_payment("50.00", "CNY", "wechat", &order()).await;
    pay_with_wechat(&app, &running, &no, "50.00").await;
    let out_trade_no = no.strip_prefix('P').expect("hex").to_owned();
    wait_for("the simulator to give up", || async {
        deliveries_of(sim.deliveries(), &out_trade_no).len() == 3
    })
    .await;
    let sent = deliveries_of(sim.deliveries(), &out_trade_no);
    assert!(sent.iter().all(|d| d.status == Some(403)), "{sent:?}");
    let d = detail(&app, &id).await;
    assert_eq!(d["status"], "pending");
    assert_eq!(d["callbacks"], json!([]), "{d:#}");
    running.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_with_the_wrong_amount_is_a_failed_callback_and_never_pays() {
    let (alipay, alipay_running) = alipay_sim(|_| {}).await;
    let (wechat, wechat_running) = wechat_sim(|_| {}).await;
    alipay.faults.notify_wrong_amount.store(1, Ordering::SeqCst);
    wechat.faults.notify_wrong_amount.store(1, Ordering::SeqCst);
    let (app_id, alipay_base) = (
        alipay.config.app_id.clone(),
        alipay_running.base_url.clone(),
    );
    let (mchid, appid, wechat_base) = (
        wechat.config.mchid.clone(),
        wechat.config.appid.clone(),
        wechat_running.base_url.clone(),
    );
    let app = TestApp::spawn_with(Options::tuned(move |raw| {
        alipay_settings(raw, &app_id, &alipay_base);
        wechat_settings(raw, &mchid, &appid, &wechat_base);
    }))
    .await;

    let (alipay_id, alipay_no) = app.create_payment("10.00", "CNY", "alipay", &order()).await;
    pay_with_alipay(&app, &alipay_running, &alipay_no, "10.00").await;
    let (wechat_id, wechat_no) = app.create_payment("10.00", "CNY", "wechat", &order()).await;
    pay_with_wechat(&app, &wechat_running, &wechat_no, "10.00").await;

    for id in [&alipay_id, &wechat_id] {
        let d = wait_detail(&app, id, "the callback to be recorded", |d| {
            d["callbacks"].as_array().is_some_and(|c| !c.is_empty())
        })
        .await;
        assert_eq!(d["status"], "pending", "{d:#}");
        assert_eq!(d["callbacks"][0]["status"], "failed", "{d:#}");
        assert_eq!(d["callbacks"][0]["amount"], "9.99", "{d:#}");
        assert_eq!(d["callbacks"][0]["reason"], "amount_mismatch", "{d:#}");
        assert!(d["payment_time"].is_null());
    }
    // Recorded, so acknowledged: the gateways stop sending it.
    let a = deliveries_of(alipay.deliveries(), &alipay_no);
    assert!(a.len() == 1 && a[0].accepted, "{a:?}");
    let w = deliveries_of(
        wechat.deliveries(),
        wechat_no.strip_prefix('P').expect("hex"),
    );
    assert!(w.len() == 1 && w[0].status == Some(204), "{w:?}");
    alipay_running.stop().await;
    wechat_running.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_unconfigured_notifications_are_answered_so_the_gateway_retries() {
    let (sim, running) = alipay_sim(|_| {}).await;
    let app = with_alipay(&sim, &running, no_more).await;
    let (_, no) = app.create_payment("10.00", "CNY", "alipay", &order()).await;
    let client = reqwest::Client::new();
    // Unsigned form: refused with `fail`, never reaching the payment.
    let r = client
        .post(format!("{}/api/v1/gateways/alipay/notify/rsa2", app.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "notify_id=N1&app_id={}&out_trade_no={no}&trade_no=T1&trade_status=TRADE_SUCCESS&total_amount=10.00",
            sim.config.app_id
        ))
        .send()
        .await
        .expect("answers");
    assert_eq!(r.status(), 401);
    assert_eq!(r.text().await.expect("body"), "fail");
    // WeChat Pay is not configured here: its route refuses in its own format.
    let r = client
        .post(format!("{}/api/v1/gateways/wechat/notify/v3", app.base))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("answers");
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.expect("JSON");
    assert_eq!(body["code"], "FAIL");
    running.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_gateways_method_is_never_paid_by_signed_json_or_the_sandbox_page() {
    let (sim, running) = alipay_sim(|_| {}).await;
    let app = with_alipay(&sim, &running, no_more).await;
    let (id, no) = app.create_payment("10.00", "CNY", "alipay", &order()).await;
    // Whoever holds the signed-JSON secret of `alipay` cannot pay what Alipay serves.
    let a = app.pay("alipay", &no, "10.00").await;
    assert_eq!(a.status, 403, "{}", a.body);
    assert_eq!(a.body["code"], 40301, "{}", a.body);
    assert!(
        a.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("/api/v1/gateways/alipay/notify/rsa2")),
        "{}",
        a.body
    );
    // Nor the sandbox page: it knows no such payment.
    let (status, _) = open(&format!("{}/sandbox/pay/{no}", app.base)).await;
    assert_eq!(status, 404);
    // The sandbox still serves the methods no real gateway serves.
    let (_, bank_no) = app.create_payment("10.00", "CNY", "bank", &order()).await;
    let a = app.pay("bank", &bank_no, "10.00").await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(detail(&app, &id).await["status"], "pending");
    running.stop().await;
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// Refunds through each gateway's refund API
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alipay_refunds_are_settled_by_the_refund_answer_or_by_the_refund_notification() {
    let (sim, running) = alipay_sim(|_| {}).await;
    let app = with_alipay(&sim, &running, no_more).await;
    let (id, no) = app
        .create_payment("100.00", "CNY", "alipay", &order())
        .await;
    pay_with_alipay(&app, &running, &no, "100.00").await;
    wait_detail(&app, &id, "paid", |d| d["status"] == "success").await;

    // Settled by alipay.trade.refund's answer.
    let first = refund(&app, &id, "30.00").await;
    let d = wait_detail(&app, &id, "the refund to succeed", |d| {
        refund_status(d, &first) == "success"
    })
    .await;
    assert_eq!(d["refunded_amount"], "30.00", "{d:#}");
    let trade = sim.trade(&no).expect("trade");
    assert_eq!(trade.refunds, vec![(first.clone(), "30.00".into(), true)]);

    // Pending at Alipay (answered "unknown"), then settled and notified with refund_fee,
    // the trade's cumulative total.
    sim.faults.refund_pending.store(1, Ordering::SeqCst);
    let second = refund(&app, &id, "70.00").await;
    let d = wait_detail(&app, &id, "the pending refund to succeed", |d| {
        refund_status(d, &second) == "success"
    })
    .await;
    assert_eq!(d["status"], "refunded", "{d:#}");
    wait_for("the refund notification to be acknowledged", || async {
        deliveries_of(sim.deliveries(), &no)
            .iter()
            .any(|d| d.kind == format!("REFUND {second}") && d.accepted)
    })
    .await;
    let d = wait_detail(&app, &id, "the refund notice to be recorded", |d| {
        d["callbacks"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["refund_no"] == second))
    })
    .await;
    let notice = d["callbacks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["refund_no"] == second))
        .expect("the refund notice");
    assert_eq!(notice["status"], "success", "{d:#}");
    assert_eq!(
        notice["amount"], "70.00",
        "this refund's amount, not refund_fee"
    );
    assert_eq!(sim.trade(&no).expect("trade").status, "TRADE_CLOSED");
    running.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wechat_refunds_are_settled_by_the_refund_answer_or_by_refund_success() {
    let (sim, running) = wechat_sim(|_| {}).await;
    let app = with_wechat(&sim, &running, no_more).await;
    let (id, no) = app
        .create_payment("100.00", "CNY", "wechat", &order())
        .await;
    pay_with_wechat(&app, &running, &no, "100.00").await;
    wait_detail(&app, &id, "paid", |d| d["status"] == "success").await;
    let out_trade_no = no.strip_prefix('P').expect("hex").to_owned();

    let first = refund(&app, &id, "0.01").await;
    wait_detail(&app, &id, "the refund to succeed", |d| {
        refund_status(d, &first) == "success"
    })
    .await;
    assert_eq!(sim.order(&out_trade_no).expect("order").refunded_fen, 1);

    // PROCESSING, then REFUND.SUCCESS.
    sim.faults.refund_pending.store(1, Ordering::SeqCst);
    let second = refund(&app, &id, "99.99").await;
    let d = wait_detail(&app, &id, "the refund notice to settle it", |d| {
        refund_status(d, &second) == "success"
            && d["callbacks"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["refund_no"] == second))
    })
    .await;
    assert_eq!(d["status"], "refunded", "{d:#}");
    let sent = deliveries_of(sim.deliveries(), &out_trade_no);
    assert!(
        sent.iter()
            .any(|d| d.kind == "REFUND.SUCCESS" && d.status == Some(204)),
        "{sent:?}"
    );
    assert_eq!(
        sim.order(&out_trade_no).expect("order").refunded_fen,
        10_000
    );
    running.stop().await;
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// Unknown outcomes, currencies and expiry
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wechat_create_whose_every_call_times_out_is_settled_by_the_query_and_payable() {
    let (sim, running) = wechat_sim(|c| c.slow_answer = Duration::from_secs(2)).await;
    let app = with_wechat(&sim, &running, |raw| {
        raw.limits.gateway_call_timeout_ms = 400;
    })
    .await;
    // Every attempt of the create takes effect at WeChat Pay, but answers too late.
    sim.faults.timeout_next.store(4, Ordering::SeqCst);
    let (id, no) = app.create_payment("66.00", "CNY", "wechat", &order()).await;
    let d = detail(&app, &id).await;
    assert_eq!(d["status"], "pending", "the query found the order: {d:#}");
    // The checkout places the order again and gets the same order's code.
    pay_with_wechat(&app, &running, &no, "66.00").await;
    wait_detail(&app, &id, "paid", |d| d["status"] == "success").await;
    running.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wechat_create_the_gateway_never_took_fails_after_the_query_finds_nothing() {
    let (sim, running) = wechat_sim(|_| {}).await;
    let app = with_wechat(&sim, &running, no_more).await;
    sim.faults.fail_next.store(4, Ordering::SeqCst);
    let body = json!({
        "amount": "8.00", "currency": "CNY", "payment_method": "wechat",
        "order_id": order(), "user_id": "user-1"
    });
    let a = app
        .client("client")
        .send(
            "POST",
            "/api/v1/payments/create",
            Some(&body.to_string()),
            &[],
        )
        .await
        .expect("create answers");
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(data(&a)["status"], "failed", "{}", a.body);
    running.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_currency_other_than_cny_is_refused_by_both_real_gateways_at_create() {
    let (alipay, alipay_running) = alipay_sim(|_| {}).await;
    let (wechat, wechat_running) = wechat_sim(|_| {}).await;
    let (app_id, alipay_base) = (
        alipay.config.app_id.clone(),
        alipay_running.base_url.clone(),
    );
    let (mchid, appid, wechat_base) = (
        wechat.config.mchid.clone(),
        wechat.config.appid.clone(),
        wechat_running.base_url.clone(),
    );
    let app = TestApp::spawn_with(Options::tuned(move |raw| {
        alipay_settings(raw, &app_id, &alipay_base);
        wechat_settings(raw, &mchid, &appid, &wechat_base);
    }))
    .await;
    for method in ["alipay", "wechat"] {
        let body = json!({
            "amount": "8.00", "currency": "USD", "payment_method": method,
            "order_id": order(), "user_id": "user-1"
        });
        let a = app
            .client("client")
            .send(
                "POST",
                "/api/v1/payments/create",
                Some(&body.to_string()),
                &[],
            )
            .await
            .expect("create answers");
        assert_eq!(a.status, 201, "{}", a.body);
        assert_eq!(data(&a)["status"], "failed", "{}", a.body);
        let reason = data(&a)["failure_reason"].as_str().unwrap_or_default();
        assert!(reason.contains("CNY only, not USD"), "{method}: {reason}");
    }
    // Bank and card payments keep the sandbox.
    let (_, no) = app.create_payment("8.00", "USD", "bank", &order()).await;
    assert!(checkout(&app, &no).await["pay_url"]
        .as_str()
        .is_some_and(|u| u.contains("/sandbox/pay/")));
    alipay_running.stop().await;
    wechat_running.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_payment_is_closed_at_each_gateway_then_failed_as_expired() {
    let (alipay, alipay_running) = alipay_sim(|_| {}).await;
    let (wechat, wechat_running) = wechat_sim(|_| {}).await;
    let (app_id, alipay_base) = (
        alipay.config.app_id.clone(),
        alipay_running.base_url.clone(),
    );
    let (mchid, appid, wechat_base) = (
        wechat.config.mchid.clone(),
        wechat.config.appid.clone(),
        wechat_running.base_url.clone(),
    );
    let app = TestApp::spawn_with(Options::tuned(move |raw| {
        alipay_settings(raw, &app_id, &alipay_base);
        wechat_settings(raw, &mchid, &appid, &wechat_base);
        raw.payment_ttl_secs = 3;
    }))
    .await;
    let (alipay_id, alipay_no) = app.create_payment("9.00", "CNY", "alipay", &order()).await;
    let (wechat_id, wechat_no) = app.create_payment("9.00", "CNY", "wechat", &order()).await;
    // The payer opens Alipay's page (Alipay creates the trade only then) but does not pay.
    let c = checkout(&app, &alipay_no).await;
    assert!(c["expires_at"].is_string(), "{c:#}");
    let url = c["pay_url"].as_str().expect("pay URL").to_owned();
    assert!(
        url.contains("time_expire"),
        "Alipay is told when to stop: {url}"
    );
    assert_eq!(open(&url).await.0, 200);

    for id in [&alipay_id, &wechat_id] {
        let d = wait_detail(&app, id, "the payment to expire", |d| {
            d["status"] == "failed"
        })
        .await;
        assert_eq!(d["failure_reason"], "expired", "{d:#}");
    }
    assert_eq!(
        alipay.closes(),
        vec![(alipay_no.clone(), "closed".to_owned())]
    );
    assert_eq!(
        alipay.trade(&alipay_no).expect("trade").status,
        "TRADE_CLOSED"
    );
    let wechat_out = wechat_no.strip_prefix('P').expect("hex").to_owned();
    assert_eq!(
        wechat.closes(),
        vec![(wechat_out.clone(), "closed".to_owned())]
    );
    assert_eq!(wechat.order(&wechat_out).expect("order").state, "CLOSED");
    // Closed: the pages can no longer take money.
    assert_eq!(
        click(&alipay_running.base_url, "pay", &alipay_no).await.0,
        409
    );
    assert_eq!(
        click(&wechat_running.base_url, "pay", &wechat_out).await.0,
        409
    );
    alipay_running.stop().await;
    wechat_running.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_paid_at_the_gateway_before_its_notice_arrives_is_not_expired_but_paid() {
    let (alipay, alipay_running) = alipay_sim(|_| {}).await;
    let (wechat, wechat_running) = wechat_sim(|_| {}).await;
    let (app_id, alipay_base) = (
        alipay.config.app_id.clone(),
        alipay_running.base_url.clone(),
    );
    let (mchid, appid, wechat_base) = (
        wechat.config.mchid.clone(),
        wechat.config.appid.clone(),
        wechat_running.base_url.clone(),
    );
    let app = TestApp::spawn_with(Options::tuned(move |raw| {
        alipay_settings(raw, &app_id, &alipay_base);
        wechat_settings(raw, &mchid, &appid, &wechat_base);
        raw.payment_ttl_secs = 2;
    }))
    .await;
    // Each notice is held back (until the simulator gives up waiting for another one), so
    // the ledger's expiry reaches the gateway first and finds the order paid.
    alipay.faults.notify_out_of_order.store(1, Ordering::SeqCst);
    wechat.faults.notify_out_of_order.store(1, Ordering::SeqCst);
    let (alipay_id, alipay_no) = app.create_payment("7.00", "CNY", "alipay", &order()).await;
    let (wechat_id, wechat_no) = app.create_payment("7.00", "CNY", "wechat", &order()).await;
    pay_with_alipay(&app, &alipay_running, &alipay_no, "7.00").await;
    pay_with_wechat(&app, &wechat_running, &wechat_no, "7.00").await;
    for id in [&alipay_id, &wechat_id] {
        let d = wait_detail(&app, id, "the held notice to pay it", |d| {
            d["status"] == "success"
        })
        .await;
        assert!(d["failure_reason"].is_null(), "{d:#}");
    }
    let wechat_out = wechat_no.strip_prefix('P').expect("hex").to_owned();
    assert!(
        alipay
            .closes()
            .iter()
            .any(|(no, answer)| *no == alipay_no && answer == "ACQ.TRADE_STATUS_ERROR"),
        "the expiry tried to close the paid trade: {:?}",
        alipay.closes()
    );
    assert!(
        wechat
            .closes()
            .iter()
            .any(|(no, answer)| *no == wechat_out && answer == "ORDERPAID"),
        "{:?}",
        wechat.closes()
    );
    assert_eq!(
        alipay.trade(&alipay_no).expect("trade").status,
        "TRADE_SUCCESS"
    );
    alipay_running.stop().await;
    wechat_running.stop().await;
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------

fn configured() -> RawConfig {
    let mut raw = crate::common::raw_config(
        "postgres://postgres@127.0.0.1:5432/unused",
        None,
        "p",
        "S",
        "127.0.0.1:1".parse().expect("addr"),
    );
    alipay_settings(&mut raw, "2021000000000001", "http://127.0.0.1:9");
    wechat_settings(
        &mut raw,
        "1900000001",
        "wx0000000000000001",
        "http://127.0.0.1:9",
    );
    raw
}

fn refusal(raw: &RawConfig) -> String {
    match raw.resolve() {
        Ok(_) => panic!("the settings were accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn both_real_gateways_resolve_and_keys_never_show_in_debug() {
    let settings = configured().resolve().expect("valid settings");
    let alipay = settings.alipay.expect("alipay is real");
    let wechat = settings.wechat.expect("wechat is real");
    let shown = format!("{alipay:?} {wechat:?} {:?}", configured());
    let pem = std::fs::read_to_string(fixture("alipay-merchant-private.pem")).expect("key");
    let line = pem.lines().nth(1).expect("a base64 line");
    assert!(!shown.contains(line), "{shown}");
    assert!(!shown.contains(APIV3_KEY), "{shown}");
    assert!(shown.contains("bits"), "{shown}");
}

#[test]
fn a_half_configured_gateway_stops_start_up_naming_the_missing_setting() {
    let mut raw = configured();
    raw.alipay.alipay_public_key_file = None;
    assert!(refusal(&raw).starts_with("LEDGER_ALIPAY_PUBLIC_KEY_FILE:"));
    let mut raw = configured();
    raw.alipay.alipay_app_id = None;
    assert!(refusal(&raw).starts_with("LEDGER_ALIPAY_APP_ID:"));
    let mut raw = configured();
    raw.wechat.wechat_apiv3_key = None;
    assert!(refusal(&raw).starts_with("LEDGER_WECHAT_APIV3_KEY:"));
    let mut raw = configured();
    raw.wechat.wechat_mchid = None;
    assert!(refusal(&raw).starts_with("LEDGER_WECHAT_MCHID:"));
    let mut raw = configured();
    raw.wechat.wechat_platform_keys = None;
    assert!(refusal(&raw).starts_with("LEDGER_WECHAT_PLATFORM_KEYS:"));
}

#[test]
fn unreadable_or_malformed_keys_name_their_setting_and_never_echo_a_secret() {
    let mut raw = configured();
    raw.alipay.alipay_private_key_file = Some("/nonexistent/key.pem".into());
    let e = refusal(&raw);
    assert!(
        e.starts_with("LEDGER_ALIPAY_PRIVATE_KEY_FILE: cannot read /nonexistent/key.pem"),
        "{e}"
    );
    let mut raw = configured();
    raw.alipay.alipay_public_key_file = Some(fixture("README.md").into());
    assert!(refusal(&raw).starts_with("LEDGER_ALIPAY_PUBLIC_KEY_FILE:"));
    let mut raw = configured();
    raw.wechat.wechat_private_key_file = Some(fixture("wechat-merchant-public.pem").into());
    assert!(refusal(&raw).starts_with("LEDGER_WECHAT_PRIVATE_KEY_FILE:"));
    let mut raw = configured();
    raw.wechat.wechat_apiv3_key = Some("too-short-secret".into());
    let e = refusal(&raw);
    assert!(e.starts_with("LEDGER_WECHAT_APIV3_KEY:"), "{e}");
    assert!(!e.contains("too-short-secret"), "{e}");
    let mut raw = configured();
    raw.wechat.wechat_platform_keys = Some("no-file-here".into());
    assert!(refusal(&raw).starts_with("LEDGER_WECHAT_PLATFORM_KEYS:"));
}

#[test]
fn without_their_settings_both_methods_keep_the_sandbox() {
    let raw = crate::common::raw_config(
        "postgres://postgres@127.0.0.1:5432/unused",
        None,
        "p",
        "S",
        "127.0.0.1:1".parse().expect("addr"),
    );
    let settings = raw.resolve().expect("valid settings");
    assert!(settings.alipay.is_none() && settings.wechat.is_none());
}
