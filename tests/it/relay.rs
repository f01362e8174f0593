//! The relay from the committed log to NATS JetStream (SPEC §3 outbox, §4, §11 "Events as
//! served and published"): every event arrives once, with its envelope and `Nats-Msg-Id`,
//! also across a NATS outage, and re-publishing is de-duplicated by JetStream. Real
//! PostgreSQL and real nats-server (the shared one, or a private child process).

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::common::nats::PrivateNats;
use crate::common::{data, Options, TestApp, NATS_URL};
use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use async_nats::jetstream::{self, Context};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use ledger::bus::RELAY_CHECKPOINT;
use ledger::client::Answer;
use ledger::store::event::{canonical_bytes, sha256_hex};
use ledger::store::{self, StoredEvent};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

const WAIT_MAX: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);

/// The keys of a published envelope, no more and no fewer.
const ENVELOPE_KEYS: [&str; 10] = [
    "data",
    "event_id",
    "hash",
    "metadata",
    "payment_id",
    "position",
    "prev_hash",
    "recorded_at",
    "type",
    "version",
];

/// One message read back from the stream.
#[derive(Debug)]
struct Published {
    stream_sequence: u64,
    subject: String,
    msg_id: Option<String>,
    payload: Value,
}

async fn jetstream_at(url: &str) -> Context {
    let client = tokio::time::timeout(WAIT_MAX, async_nats::connect(url))
        .await
        .expect("NATS answers in time")
        .expect("connect to NATS");
    jetstream::new(client)
}

/// Messages in the stream now (None while the stream or the server is not there).
async fn stream_messages(js: &Context, stream: &str) -> Option<u64> {
    let stream = js.get_stream(stream).await.ok()?;
    stream.get_info().await.ok().map(|i| i.state.messages)
}

/// Reads every message of `stream` from the start with an ordered pull consumer.
async fn read_back(js: &Context, stream: &str, count: usize) -> Vec<Published> {
    let stream = js.get_stream(stream).await.expect("the stream exists");
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .expect("ordered consumer");
    let mut messages = consumer.messages().await.expect("consume");
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let m = tokio::time::timeout(WAIT_MAX, messages.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} messages arrived", out.len()))
            .expect("the consumer stays open")
            .expect("a message");
        let info = m.info().expect("JetStream metadata");
        out.push(Published {
            stream_sequence: info.stream_sequence,
            subject: m.subject.to_string(),
            msg_id: m
                .headers
                .as_ref()
                .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                .map(|v| v.as_str().to_owned()),
            payload: serde_json::from_slice(&m.payload).expect("the payload is JSON"),
        });
    }
    out
}

async fn all_events(pool: &PgPool) -> Vec<StoredEvent> {
    store::read_after(pool, 0, 100_000)
        .await
        .expect("read the log")
}

/// Waits (bounded) until the relay has published the whole log and the stream holds at least
/// as many messages as the log has events; returns the log.
async fn wait_relayed(pool: &PgPool, js_url: &str, stream: &str) -> Vec<StoredEvent> {
    let deadline = tokio::time::Instant::now() + WAIT_MAX;
    let mut js: Option<Context> = None;
    loop {
        let head = store::head_position(pool).await.expect("head");
        let relayed = store::checkpoint(pool, RELAY_CHECKPOINT)
            .await
            .expect("relay checkpoint");
        if js.is_none() {
            // The server may be restarting: connect lazily and bounded.
            if let Ok(Ok(c)) =
                tokio::time::timeout(Duration::from_secs(2), async_nats::connect(js_url)).await
            {
                js = Some(jetstream::new(c));
            }
        }
        let in_stream = match &js {
            Some(js) => stream_messages(js, stream).await,
            None => None,
        };
        if relayed == head && in_stream.is_some_and(|n| n >= head as u64) {
            return all_events(pool).await;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "relay did not catch up: head {head}, relayed {relayed}, stream {in_stream:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string in {v}"))
}

/// The published envelope says exactly what the log says, and a consumer can check its hash
/// from the envelope alone.
fn assert_envelope_matches(p: &Published, e: &StoredEvent, prefix: &str) {
    assert_eq!(
        p.subject,
        format!("{prefix}.payment.{}", e.event_type),
        "subject of position {}",
        e.position
    );
    assert_eq!(
        p.msg_id.as_deref(),
        Some(e.event_id.to_string().as_str()),
        "Nats-Msg-Id of position {}",
        e.position
    );
    let v = &p.payload;
    let keys: BTreeSet<&str> = v
        .as_object()
        .expect("the envelope is an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ENVELOPE_KEYS.into_iter().collect::<BTreeSet<_>>());
    assert_eq!(str_of(v, "event_id"), e.event_id.to_string());
    assert_eq!(v["position"], e.position);
    assert_eq!(str_of(v, "payment_id"), e.stream_id.to_string());
    assert_eq!(v["version"], e.version);
    assert_eq!(str_of(v, "type"), e.event_type);
    assert_eq!(v["data"], e.data);
    assert_eq!(v["metadata"], e.metadata);
    assert_eq!(str_of(v, "prev_hash"), e.prev_hash);
    assert_eq!(str_of(v, "hash"), e.hash);
    let recorded_at = str_of(v, "recorded_at");
    assert!(recorded_at.ends_with('Z'), "UTC: {recorded_at}");
    let parsed: DateTime<Utc> = recorded_at.parse().expect("RFC 3339");
    assert_eq!(parsed, e.recorded_at);

    let canonical = canonical_bytes(
        v["position"].as_i64().expect("position"),
        str_of(v, "event_id").parse().expect("uuid"),
        str_of(v, "payment_id").parse().expect("uuid"),
        v["version"].as_i64().expect("version") as i32,
        str_of(v, "type"),
        &v["data"],
        &v["metadata"],
        parsed,
        str_of(v, "prev_hash"),
    );
    assert_eq!(
        sha256_hex(canonical.as_bytes()),
        str_of(v, "hash"),
        "the envelope's hash verifies from the envelope"
    );
}

/// Every logged event is in `published` exactly once (in whatever order a retry left them),
/// and nothing else is.
fn assert_each_event_published_once(published: &[Published], events: &[StoredEvent], prefix: &str) {
    let ids: HashSet<&str> = published
        .iter()
        .map(|p| p.msg_id.as_deref().expect("Nats-Msg-Id"))
        .collect();
    assert_eq!(ids.len(), published.len(), "distinct event ids");
    let logged: HashSet<String> = events.iter().map(|e| e.event_id.to_string()).collect();
    assert_eq!(
        ids.iter().map(|s| s.to_string()).collect::<HashSet<_>>(),
        logged,
        "the stream holds exactly the logged events"
    );
    for p in published {
        let e = events
            .iter()
            .find(|e| Some(e.event_id.to_string().as_str()) == p.msg_id.as_deref())
            .expect("a logged event");
        assert_envelope_matches(p, e, prefix);
    }
}

async fn refund(app: &TestApp, id: &str, amount: &str) -> Answer {
    let body = json!({"amount": amount, "reason": "relay test"}).to_string();
    let a = app
        .client("operator")
        .send(
            "POST",
            &format!("/api/v1/payments/{id}/refund"),
            Some(&body),
            &[],
        )
        .await
        .expect("refund reaches the service");
    assert_eq!(a.status, 201, "refund: {}", a.body);
    a
}

/// Waits (bounded) until no refund is processing, so the log is quiet.
async fn refunds_settled(app: &TestApp) {
    let pool = app.pool().await;
    let deadline = tokio::time::Instant::now() + WAIT_MAX;
    loop {
        app.settle().await;
        let (requested, done): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM events WHERE event_type = 'refund_requested'), \
             (SELECT COUNT(*) FROM events WHERE event_type IN ('refunded', 'refund_failed'))",
        )
        .fetch_one(&pool)
        .await
        .expect("count refunds");
        if requested == done {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "refunds did not settle: {done} of {requested}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Payments created, paid, refunded, failed and left pending: every event type but one.
async fn some_traffic(app: &TestApp, payments: usize) {
    for i in 0..payments {
        let id = app.paid_payment(&format!("{}.50", 10 + i)).await;
        if i % 2 == 0 {
            refund(app, &id, "1.00").await;
        }
    }
    let order = format!("ORD-{}", Uuid::new_v4().simple());
    let (_, no) = app.create_payment("3.00", "CNY", "wechat", &order).await;
    let failed = app
        .gateway("wechat")
        .send(
            "POST",
            "/api/v1/gateways/wechat/notify",
            Some(
                &json!({
                    "payment_no": no,
                    "callback_no": format!("CB{}", Uuid::new_v4().simple()),
                    "status": "failed",
                    "amount": "3.00",
                    "gateway_trade_no": format!("T{}", Uuid::new_v4().simple()),
                })
                .to_string(),
            ),
            &[],
        )
        .await
        .expect("notify");
    assert_eq!(failed.status, 200, "{}", failed.body);
    let order = format!("ORD-{}", Uuid::new_v4().simple());
    app.create_payment("4.00", "CNY", "bank", &order).await;
    refunds_settled(app).await;
}

// ---------------------------------------------------------------------------------------
// Every event, with its envelope
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_committed_event_reaches_jetstream_once_with_its_envelope_and_message_id() {
    let app = TestApp::spawn().await;
    some_traffic(&app, 4).await;
    let pool = app.pool().await;
    let events = wait_relayed(&pool, NATS_URL, &app.stream).await;
    let types: HashSet<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    for t in [
        "created",
        "callback_received",
        "paid",
        "failed",
        "refund_requested",
        "refunded",
    ] {
        assert!(types.contains(t), "no {t} event in the history");
    }

    let js = jetstream_at(NATS_URL).await;
    let published = read_back(&js, &app.stream, events.len()).await;
    assert_eq!(
        stream_messages(&js, &app.stream).await,
        Some(events.len() as u64),
        "no message beyond the log's events"
    );
    // Published in log order, one message per event.
    for (p, e) in published.iter().zip(&events) {
        assert_eq!(p.stream_sequence, e.position as u64);
        assert_envelope_matches(p, e, &app.prefix);
    }
    // Another deployment's subjects on the same server received nothing of ours.
    let info = js
        .get_stream(&app.stream)
        .await
        .expect("stream")
        .get_info()
        .await
        .expect("info");
    assert_eq!(
        info.config.subjects,
        vec![format!("{}.payment.>", app.prefix)]
    );
    assert!(info.config.duplicate_window >= Duration::from_secs(120));
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// NATS outage
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_outage_loses_and_duplicates_nothing_and_never_blocks_writes() {
    let mut nats = PrivateNats::start().await;
    let app = TestApp::spawn_with(Options {
        nats_url: Some(nats.url()),
        ..Default::default()
    })
    .await;
    let pool = app.pool().await;
    let bus = app.state.bus.clone().expect("the app runs with NATS");

    // Before the outage: published as usual.
    for i in 0..3 {
        app.paid_payment(&format!("{}.00", 20 + i)).await;
    }
    let before = wait_relayed(&pool, &nats.url(), &app.stream).await;

    // The server crashes; the service notices.
    nats.kill();
    let deadline = tokio::time::Instant::now() + WAIT_MAX;
    while bus.is_connected() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the client never noticed the outage"
        );
        tokio::time::sleep(POLL).await;
    }

    // Writes keep being accepted (201 / 200) while NATS is down.
    let mut during = Vec::new();
    for i in 0..3 {
        let order = format!("ORD-{}", Uuid::new_v4().simple());
        let amount = format!("{}.00", 30 + i);
        let (id, no) = app.create_payment(&amount, "CNY", "alipay", &order).await;
        let paid = app.pay("alipay", &no, &amount).await;
        assert_eq!(paid.status, 200, "{}", paid.body);
        during.push(id);
    }
    refund(&app, &during[0], "5.00").await;
    refunds_settled(&app).await;
    let head = store::head_position(&pool).await.expect("head");
    assert!(head > before.len() as i64);
    let relayed = store::checkpoint(&pool, RELAY_CHECKPOINT)
        .await
        .expect("relay checkpoint");
    assert!(
        relayed <= before.len() as i64,
        "nothing written during the outage can have been acknowledged ({relayed})"
    );

    // The server comes back on the same port and store: the backlog drains, exactly once.
    nats.launch().await;
    let events = wait_relayed(&pool, &nats.url(), &app.stream).await;
    assert_eq!(events.len() as i64, head);
    let js = jetstream_at(&nats.url()).await;
    let published = read_back(&js, &app.stream, events.len()).await;
    assert_eq!(
        stream_messages(&js, &app.stream).await,
        Some(events.len() as u64),
        "no duplicate in the stream"
    );
    assert_each_event_published_once(&published, &events, &app.prefix);

    // The service answers reads and writes after the outage as before.
    let after = app.paid_payment("9.99").await;
    let a = app
        .client("auditor")
        .send("GET", &format!("/api/v1/payments/{after}"), None, &[])
        .await
        .expect("detail");
    assert_eq!(data(&a)["status"], "success");
    wait_relayed(&pool, &nats.url(), &app.stream).await;
    app.stop().await;
    drop(nats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_crash_while_the_relay_is_publishing_loses_and_duplicates_nothing() {
    let mut nats = PrivateNats::start().await;
    let app = TestApp::spawn_with(Options {
        nats_url: Some(nats.url()),
        ..Default::default()
    })
    .await;
    let pool = app.pool().await;
    let bus = app.state.bus.clone().expect("the app runs with NATS");
    let stop = AtomicBool::new(false);
    let head = || async { store::head_position(&pool).await.expect("head") };
    let grows_by = |n: i64, what: &'static str| {
        let head = &head;
        async move {
            let target = head().await + n;
            let deadline = tokio::time::Instant::now() + WAIT_MAX;
            while head().await < target {
                assert!(tokio::time::Instant::now() < deadline, "no writes {what}");
                tokio::time::sleep(POLL).await;
            }
        }
    };

    // Writes flow without pause while the server is killed and restarted, so the crash
    // lands while the relay has publishes in flight (stored but not acknowledged, or not
    // stored at all). Whatever it hit, the stream must end up with each event once.
    let writes = async {
        let mut n = 0;
        while !stop.load(Ordering::Acquire) {
            app.paid_payment(&format!("{}.00", 50 + n % 50)).await;
            n += 1;
            assert!(n < 1_000, "the writer never stopped");
        }
        n
    };
    let outage = async {
        grows_by(9, "before the crash").await;
        nats.kill();
        let deadline = tokio::time::Instant::now() + WAIT_MAX;
        while bus.is_connected() {
            assert!(tokio::time::Instant::now() < deadline, "outage not noticed");
            tokio::time::sleep(POLL).await;
        }
        grows_by(9, "during the outage").await;
        nats.launch().await;
        grows_by(9, "after the restart").await;
        stop.store(true, Ordering::Release);
    };
    let (written, ()) = tokio::time::timeout(WAIT_MAX * 3, async { tokio::join!(writes, outage) })
        .await
        .expect("the scenario finishes in time");
    assert!(written >= 9);

    let events = wait_relayed(&pool, &nats.url(), &app.stream).await;
    let js = jetstream_at(&nats.url()).await;
    let published = read_back(&js, &app.stream, events.len()).await;
    assert_eq!(
        stream_messages(&js, &app.stream).await,
        Some(events.len() as u64),
        "no duplicate in the stream"
    );
    // Acks lost mid-batch never let a later event into the stream before an earlier one.
    assert_in_log_order(&published, &events);
    assert_each_event_published_once(&published, &events, &app.prefix);
    app.stop().await;
    drop(nats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_started_while_nats_is_down_accepts_writes_and_publishes_them_later() {
    let mut nats = PrivateNats::reserve();
    let app = TestApp::spawn_with(Options {
        nats_url: Some(nats.url()),
        ..Default::default()
    })
    .await;
    let pool = app.pool().await;
    for i in 0..3 {
        app.paid_payment(&format!("{}.00", 40 + i)).await;
    }
    assert_eq!(
        store::checkpoint(&pool, RELAY_CHECKPOINT)
            .await
            .expect("relay checkpoint"),
        0,
        "nothing can have been published yet"
    );

    nats.launch().await;
    let events = wait_relayed(&pool, &nats.url(), &app.stream).await;
    let js = jetstream_at(&nats.url()).await;
    let published = read_back(&js, &app.stream, events.len()).await;
    assert_eq!(
        stream_messages(&js, &app.stream).await,
        Some(events.len() as u64)
    );
    assert_each_event_published_once(&published, &events, &app.prefix);
    app.stop().await;
    drop(nats);
}

// ---------------------------------------------------------------------------------------
// De-duplication
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_the_same_events_again_does_not_grow_the_stream() {
    let app = TestApp::spawn().await;
    some_traffic(&app, 2).await;
    let pool = app.pool().await;
    let events = wait_relayed(&pool, NATS_URL, &app.stream).await;
    let count = events.len() as u64;
    let js = jetstream_at(NATS_URL).await;
    assert_eq!(stream_messages(&js, &app.stream).await, Some(count));
    let bus = app.state.bus.clone().expect("the app runs with NATS");

    // The bus publishes the whole log again (a relay that crashed after publishing and
    // before moving its checkpoint would): every ack comes back, nothing is stored twice.
    let acked = bus.publish(&events, None).await.expect("republish");
    assert_eq!(acked, events.last().map(|e| e.position).unwrap_or(0));
    assert_eq!(stream_messages(&js, &app.stream).await, Some(count));

    // JetStream itself says so for a single message with the same Nats-Msg-Id.
    let first = &events[0];
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        async_nats::header::NATS_MESSAGE_ID,
        first.event_id.to_string().as_str(),
    );
    let ack = js
        .publish_with_headers(
            bus.subject(&first.event_type),
            headers,
            Bytes::from(serde_json::to_vec(&first.envelope()).expect("serialize")),
        )
        .await
        .expect("publish")
        .await
        .expect("ack");
    assert!(ack.duplicate, "JetStream reports the duplicate");
    assert_eq!(ack.sequence, first.position as u64);

    // The relay itself republishing from an older checkpoint changes nothing either.
    sqlx::query("UPDATE checkpoints SET position = 0 WHERE name = $1")
        .bind(RELAY_CHECKPOINT)
        .execute(&pool)
        .await
        .expect("rewind the relay");
    // Wake it with one more event and wait until it has gone over everything again.
    app.paid_payment("1.23").await;
    let events = wait_relayed(&pool, NATS_URL, &app.stream).await;
    assert_eq!(
        stream_messages(&js, &app.stream).await,
        Some(events.len() as u64),
        "only the new events were added"
    );
    let published = read_back(&js, &app.stream, events.len()).await;
    for (p, e) in published.iter().zip(&events) {
        assert_envelope_matches(p, e, &app.prefix);
    }
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// The stream is a gap-free, ordered prefix of the log, whatever happens to it
// ---------------------------------------------------------------------------------------

/// The stream holds exactly the log, each event once, in position order.
fn assert_in_log_order(published: &[Published], events: &[StoredEvent]) {
    let positions: Vec<i64> = published
        .iter()
        .map(|p| p.payload["position"].as_i64().expect("position"))
        .collect();
    let logged: Vec<i64> = events.iter().map(|e| e.position).collect();
    assert_eq!(positions, logged, "the stream is the log, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_stream_is_refilled_from_the_log_in_order() {
    let app = TestApp::spawn().await;
    some_traffic(&app, 2).await;
    let pool = app.pool().await;
    let before = wait_relayed(&pool, NATS_URL, &app.stream).await;
    let js = jetstream_at(NATS_URL).await;
    js.delete_stream(&app.stream)
        .await
        .expect("delete the stream");
    // More writes: the relay finds the stream gone, recreates it and publishes everything.
    some_traffic(&app, 1).await;
    let deadline = tokio::time::Instant::now() + WAIT_MAX;
    let head = store::head_position(&pool).await.unwrap();
    assert!(head as usize > before.len());
    while stream_messages(&js, &app.stream).await != Some(head as u64) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stream not refilled: {:?} of {head}",
            stream_messages(&js, &app.stream).await
        );
        tokio::time::sleep(POLL).await;
    }
    let events = all_events(&pool).await;
    let published = read_back(&js, &app.stream, events.len()).await;
    assert_in_log_order(&published, &events);
    assert_each_event_published_once(&published, &events, &app.prefix);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_that_name_with_other_subjects_stops_start_up_naming_the_setting() {
    let js = jetstream_at(NATS_URL).await;
    let id = Uuid::new_v4().simple().to_string();
    let name = format!("T{}", &id[..12]);
    js.create_stream(jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![format!("someone-else-{}.>", &id[..8])],
        ..Default::default()
    })
    .await
    .expect("create a foreign stream");
    let db = std::sync::Arc::new(crate::common::TestDb::new().await);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let settings = crate::common::raw_config(
        &db.url,
        Some(NATS_URL),
        &format!("t{}", &id[..12]),
        &name,
        addr,
    )
    .resolve()
    .unwrap();
    let started = ledger::app::build(
        settings,
        ledger::app::ServeRole::All,
        ledger::gateway::sandbox::Faults::default(),
    )
    .await;
    let error = match started {
        Ok(_) => panic!("start-up must refuse a stream it can never publish to"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("LEDGER_NATS_STREAM"), "{error}");
    let _ = js.delete_stream(&name).await;
}
