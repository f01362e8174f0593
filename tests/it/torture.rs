//! The torture suite (issue 7, SPEC §3, §6): the ledger's promises under concurrency and
//! failure, each scenario asserting zero loss and printing its figures.
//!
//! - appenders on several streams and one hot stream, through two writer "nodes", while
//!   other connections hold slow transactions and insert rows they roll back; a reader
//!   following positions sees every event exactly once;
//! - 100 concurrent refunds on one payment over HTTP;
//! - NATS down (a private nats-server, never the shared one) at start and killed mid-burst,
//!   with the projector crashing mid-batch at the same time;
//! - PostgreSQL backends terminated repeatedly while requests flow;
//! - signed timestamps at the window's edges on two nodes with skewed clocks, and one signed
//!   request replayed concurrently at two nodes sharing a database.
//!
//! Sizes are bounded for `cargo test`; `LEDGER_SOAK=1` multiplies them (and the
//! storm durations) for a soak run. Smaller, deterministic versions of several scenarios live
//! in event_log.rs, relay.rs, projections.rs and api_auth.rs; this file pushes volume and
//! mixes the faults.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::nats::PrivateNats;
use crate::common::{data, Options, TestApp, TestDb, ADMIN_URL};
use futures::future::join_all;
use futures::StreamExt;
use ledger::bus::RELAY_CHECKPOINT;
use ledger::projections::PROJECTIONS;
use ledger::signing;
use ledger::store::{self, AppendRequest, NewEvent, StoreError, Writer, WriterConfig};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

/// Upper bound of every wait in this file (generous: these are not timing assertions).
const WAIT_MAX: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(20);

/// Soak mode: `LEDGER_SOAK=1` (or `true`).
fn soak() -> bool {
    std::env::var("LEDGER_SOAK").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// `normal` in an ordinary run, `soaked` in soak mode.
fn size(normal: usize, soaked: usize) -> usize {
    if soak() {
        soaked
    } else {
        normal
    }
}

fn mode() -> &'static str {
    if soak() {
        "soak"
    } else {
        "bounded"
    }
}

fn no_nats() -> Options {
    Options {
        nats_url: None,
        ..Default::default()
    }
}

fn dec(v: &Value) -> Decimal {
    v.as_str()
        .unwrap_or_else(|| panic!("not a decimal string: {v}"))
        .parse()
        .expect("a decimal")
}

/// An error answer in the spec's envelope: the given status, a code of that status' family,
/// a message, and `data: null`.
fn is_clean_error(status: u16, body: &Value, expected_status: u16) -> bool {
    let code = body["code"].as_u64().unwrap_or(0);
    status == expected_status
        && code / 100 == u64::from(expected_status)
        && body["message"].as_str().is_some_and(|m| !m.is_empty())
        && body.get("data").is_some_and(Value::is_null)
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Waits (bounded) until every requested refund has an outcome and the projections include
/// the whole log.
async fn quiesce(app: &TestApp) {
    let pool = app.pool().await;
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        app.settle().await;
        let open = count(
            &pool,
            "SELECT (SELECT COUNT(*) FROM events WHERE event_type = 'refund_requested') - \
             (SELECT COUNT(*) FROM events WHERE event_type IN ('refunded', 'refund_failed'))",
        )
        .await;
        if open == 0 {
            app.settle().await;
            return;
        }
        assert!(Instant::now() < deadline, "{open} refunds never settled");
        tokio::time::sleep(POLL).await;
    }
}

/// Read tables against the log: one row per event that creates one (so nothing doubled or
/// missing), checkpoints at the head, and the finance totals matching. Returns the row counts.
async fn assert_read_tables_match_the_log(app: &TestApp) -> (i64, i64, i64) {
    let pool = app.pool().await;
    let pairs = [
        ("payments", "created"),
        ("payment_callbacks", "callback_received"),
        ("payment_refunds", "refund_requested"),
    ];
    let mut rows = Vec::new();
    for (table, event) in pairs {
        let in_table = count(&pool, &format!("SELECT COUNT(*) FROM {table}")).await;
        let in_log = count(
            &pool,
            &format!("SELECT COUNT(*) FROM events WHERE event_type = '{event}'"),
        )
        .await;
        assert_eq!(in_table, in_log, "{table} rows against {event} events");
        rows.push(in_table);
    }
    let paid_rows = count(
        &pool,
        "SELECT COUNT(*) FROM payments WHERE status IN (1, 3)",
    )
    .await;
    let paid_events = count(
        &pool,
        "SELECT COUNT(DISTINCT stream_id) FROM events WHERE event_type = 'paid'",
    )
    .await;
    assert_eq!(paid_rows, paid_events, "paid payments against paid streams");
    let head = store::head_position(&pool).await.expect("head");
    for name in PROJECTIONS {
        assert_eq!(
            store::checkpoint(&pool, name).await.expect("checkpoint"),
            head,
            "checkpoint {name}"
        );
    }
    let totals = app
        .client("finance")
        .send("GET", "/api/v1/ledger/totals", None, &[])
        .await
        .expect("totals");
    assert_eq!(totals.status, 200, "{}", totals.body);
    assert_eq!(
        data(&totals)["matches"],
        true,
        "log and read tables agree: {}",
        totals.body
    );
    let verify = app
        .client("auditor")
        .send("GET", "/api/v1/audit/verify", None, &[])
        .await
        .expect("verify");
    assert_eq!(data(&verify)["ok"], true, "{}", verify.body);
    (rows[0], rows[1], rows[2])
}

// ---------------------------------------------------------------------------------------
// 1. Appenders, slow and rolled-back transactions, and a reader following positions
// ---------------------------------------------------------------------------------------

fn new_event(task: usize, seq: usize) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "torture",
        data: json!({ "task": task, "seq": seq }),
        metadata: json!({ "actor_key_id": "torture", "request_id": Uuid::new_v4().to_string() }),
    }
}

/// Appends to `stream`, re-deciding on a version conflict (as the command handler does).
/// Returns the committed event ids and how many conflicts it took.
async fn append_retrying(
    writer: &Writer,
    stream: Uuid,
    version: &mut u32,
    events: Vec<NewEvent>,
) -> (Vec<Uuid>, u64) {
    let mut conflicts = 0;
    loop {
        let request = AppendRequest {
            stream_id: stream,
            expected_version: *version,
            events: events.clone(),
            claims: vec![],
            releases: vec![],
            nonce: None,
            idempotency: None,
            respond: None,
            fence: None,
        };
        match writer.append(request).await {
            Ok(a) => {
                *version = a.events.last().expect("events").version as u32;
                return (a.events.iter().map(|e| e.event_id).collect(), conflicts);
            }
            Err(StoreError::Conflict { actual, .. }) => {
                conflicts += 1;
                assert!(conflicts < 10_000, "livelock on stream {stream}");
                *version = actual;
            }
            Err(e) => panic!("append failed: {e}"),
        }
    }
}

/// What the saboteur connections did.
#[derive(Default)]
struct Sabotage {
    /// Transactions that inserted an event row and rolled it back.
    rolled_back: AtomicU64,
    /// Of those, inserts the database refused because a real append took the position.
    collided: AtomicU64,
    /// Transactions that held the append lock for a while and committed nothing.
    slow: AtomicU64,
}

/// Inserts a well-formed event row at the next position and rolls it back, either under the
/// append lock (a writer that dies before commit) or without it (a rogue insert racing real
/// appends for the same position); or holds the lock idle (a slow transaction).
async fn saboteur(url: String, kind: usize, stop: Arc<AtomicBool>, tally: Arc<Sabotage>) {
    let mut conn = PgConnection::connect(&url)
        .await
        .expect("saboteur connects");
    let mut round = 0u64;
    while !stop.load(Ordering::Acquire) {
        round += 1;
        let pause = Duration::from_millis(2 + (round * 7 % 25));
        let mut tx = conn.begin().await.expect("begin");
        match kind {
            0 | 1 => {
                if kind == 0 {
                    sqlx::query("SELECT pg_advisory_xact_lock($1)")
                        .bind(ledger::store::writer::APPEND_LOCK_ID)
                        .execute(&mut *tx)
                        .await
                        .expect("lock");
                }
                let next: i64 =
                    sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) + 1 FROM events")
                        .fetch_one(&mut *tx)
                        .await
                        .expect("max");
                let inserted = sqlx::query(
                    "INSERT INTO events (position, event_id, stream_id, version, event_type, \
                     data, metadata, recorded_at, prev_hash, hash, canonical) \
                     VALUES ($1, $2, $3, 1, 'sabotage', '{}', '{}', now(), $4, $4, 'x')",
                )
                .bind(next)
                .bind(Uuid::new_v4())
                .bind(Uuid::new_v4())
                .bind("0".repeat(64))
                .execute(&mut *tx)
                .await;
                if inserted.is_err() {
                    tally.collided.fetch_add(1, Ordering::Relaxed);
                } else {
                    tokio::time::sleep(pause).await;
                }
                tx.rollback().await.expect("rollback");
                tally.rolled_back.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(ledger::store::writer::APPEND_LOCK_ID)
                    .execute(&mut *tx)
                    .await
                    .expect("lock");
                tokio::time::sleep(pause).await;
                tx.commit().await.expect("commit");
                tally.slow.fetch_add(1, Ordering::Relaxed);
            }
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
}

/// What the reader saw following positions.
#[derive(Default)]
struct Followed {
    ids: Vec<Uuid>,
    skipped: i64,
    reads: u64,
}

async fn follow(pool: PgPool, done: Arc<AtomicBool>, final_head: Arc<AtomicU64>) -> Followed {
    let mut seen = Followed::default();
    let mut after = 0i64;
    loop {
        let batch = store::read_after(&pool, after, 64).await.expect("read");
        seen.reads += 1;
        if batch.is_empty() {
            if done.load(Ordering::Acquire) && after >= final_head.load(Ordering::Acquire) as i64 {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        for e in batch {
            // A hole in what the reader sees is an event it will never read again.
            seen.skipped += e.position - after - 1;
            after = e.position;
            seen.ids.push(e.event_id);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torture_appenders_with_slow_and_rolled_back_transactions_skip_and_duplicate_nothing() {
    let tasks = size(16, 40);
    let appends = size(25, 100);
    let hot_from = tasks / 2;
    let db = TestDb::new().await;
    let pool = db.pool().await;
    store::migrate(&pool).await.expect("migrate");
    let node_b_pool = db.pool().await;
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    // Two nodes: one with the default group commit, one committing small batches.
    let node_a = Writer::spawn(
        pool.clone(),
        WriterConfig::default(),
        0,
        cancel.clone(),
        &tracker,
    );
    let node_b = Writer::spawn(
        node_b_pool.clone(),
        WriterConfig {
            batch_max: 4,
            queue_max: 64,
            ..WriterConfig::default()
        },
        0,
        cancel.clone(),
        &tracker,
    );

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Sabotage::default());
    let saboteurs: Vec<_> = (0..3)
        .map(|kind| tokio::spawn(saboteur(db.url.clone(), kind, stop.clone(), tally.clone())))
        .collect();
    let done = Arc::new(AtomicBool::new(false));
    let final_head = Arc::new(AtomicU64::new(u64::MAX));
    let reader = tokio::spawn(follow(pool.clone(), done.clone(), final_head.clone()));

    let hot = Uuid::now_v7();
    let started = Instant::now();
    let results = join_all((0..tasks).map(|t| {
        let writer = if t % 2 == 0 {
            node_a.clone()
        } else {
            node_b.clone()
        };
        async move {
            let stream = if t >= hot_from { hot } else { Uuid::now_v7() };
            let mut version = 0u32;
            let mut ids = Vec::new();
            let mut conflicts = 0;
            for seq in 0..appends {
                let events = (0..=(seq % 3)).map(|k| new_event(t, seq * 3 + k)).collect();
                let (mut committed, c) =
                    append_retrying(&writer, stream, &mut version, events).await;
                ids.append(&mut committed);
                conflicts += c;
            }
            (ids, conflicts)
        }
    }));
    let results = tokio::time::timeout(Duration::from_secs(300), results)
        .await
        .expect("appenders finish");
    stop.store(true, Ordering::Release);
    for s in saboteurs {
        s.await.expect("saboteur");
    }
    let head = store::head_position(&pool).await.expect("head");
    final_head.store(head as u64, Ordering::Release);
    done.store(true, Ordering::Release);
    let seen = tokio::time::timeout(WAIT_MAX, reader)
        .await
        .expect("reader catches up")
        .expect("reader");
    let elapsed = started.elapsed();

    let committed: Vec<Uuid> = results.iter().flat_map(|r| r.0.clone()).collect();
    let conflicts: u64 = results.iter().map(|r| r.1).sum();
    let committed_set: HashSet<Uuid> = committed.iter().copied().collect();
    let seen_set: HashSet<Uuid> = seen.ids.iter().copied().collect();
    let duplicated = seen.ids.len() - seen_set.len();
    let missing = committed_set.difference(&seen_set).count();
    let foreign = seen_set.difference(&committed_set).count();
    let hot_events = count(
        &pool,
        &format!("SELECT COUNT(*) FROM events WHERE stream_id = '{hot}'"),
    )
    .await;
    println!(
        "torture appenders ({}): {tasks} writers on 2 nodes ({} on one hot stream), {} events \
         ({hot_events} on the hot stream) in {:.1} s, {conflicts} version conflicts retried, \
         {} rolled back ({} of them refused by a real append), {} slow lock holders; reader: \
         {} reads, {} skipped, {duplicated} duplicated, {missing} missing, {foreign} foreign",
        mode(),
        tasks - hot_from,
        committed.len(),
        elapsed.as_secs_f64(),
        tally.rolled_back.load(Ordering::Relaxed),
        tally.collided.load(Ordering::Relaxed),
        tally.slow.load(Ordering::Relaxed),
        seen.reads,
        seen.skipped,
    );
    assert_eq!(seen.skipped, 0, "the reader skipped positions");
    assert_eq!(duplicated, 0, "the reader saw an event twice");
    assert_eq!(missing, 0, "committed events the reader never saw");
    assert_eq!(foreign, 0, "rolled-back rows became visible");
    assert_eq!(committed.len(), committed_set.len());
    assert_eq!(head, committed.len() as i64, "positions are dense");
    assert!(
        tally.rolled_back.load(Ordering::Relaxed) > 0 && tally.slow.load(Ordering::Relaxed) > 0
    );
    // The hot stream's versions are dense and its chain intact.
    let versions: Vec<i32> =
        sqlx::query_scalar("SELECT version FROM events WHERE stream_id = $1 ORDER BY position")
            .bind(hot)
            .fetch_all(&pool)
            .await
            .expect("hot versions");
    assert_eq!(versions, (1..=versions.len() as i32).collect::<Vec<_>>());
    let report = store::verify::verify_log(&pool, None, |_| {})
        .await
        .expect("verify");
    assert!(report.ok, "{report:?}");

    cancel.cancel();
    tracker.close();
    tracker.wait().await;
    pool.close().await;
    node_b_pool.close().await;
}

// ---------------------------------------------------------------------------------------
// 2. A hundred concurrent refunds on one payment
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torture_a_hundred_concurrent_refunds_never_refund_more_than_was_paid() {
    let app = TestApp::spawn_with(no_nats()).await;
    let rounds = size(1, 5);
    let refunds = 100;
    for round in 0..rounds {
        let paid = Decimal::new(10000, 2);
        let id = app.paid_payment("100.00").await;
        let operator = app.client("operator");
        let target = format!("/api/v1/payments/{id}/refund");
        // 0.50 to 3.49: about twice what was paid in all.
        let amounts: Vec<Decimal> = (0..refunds)
            .map(|i| Decimal::new(50 + (i as i64 * 37) % 300, 2))
            .collect();
        let answers = join_all(amounts.iter().map(|amount| {
            let operator = operator.clone();
            let target = target.clone();
            let body = json!({"amount": amount.to_string(), "reason": "torture"}).to_string();
            async move {
                operator
                    .send("POST", &target, Some(&body), &[])
                    .await
                    .expect("refund reaches the service")
            }
        }))
        .await;
        let mut accepted = Decimal::ZERO;
        let mut accepted_n = 0;
        let mut codes: BTreeMap<u64, usize> = BTreeMap::new();
        let mut unclean = Vec::new();
        for (a, amount) in answers.iter().zip(&amounts) {
            match a.status {
                201 => {
                    accepted += *amount;
                    accepted_n += 1;
                    assert_eq!(dec(&data(a)["amount"]), *amount);
                }
                409 if is_clean_error(a.status, &a.body, 409) => {
                    *codes.entry(a.body["code"].as_u64().unwrap()).or_default() += 1;
                }
                _ => unclean.push(format!("{} {}", a.status, a.body)),
            }
        }
        quiesce(&app).await;
        let detail = app
            .client("auditor")
            .send("GET", &format!("/api/v1/payments/{id}"), None, &[])
            .await
            .expect("detail");
        let d = data(&detail);
        let refunded = dec(&d["refunded_amount"]);
        let rows = d["refunds"].as_array().expect("refunds");
        let row_sum: Decimal = rows.iter().map(|r| dec(&r["amount"])).sum();
        let fivexx = answers.iter().filter(|a| a.status >= 500).count();
        println!(
            "torture refunds ({}) round {}: {refunds} concurrent on {paid} paid: {accepted_n} \
             accepted ({accepted}), {} rejected 409 {codes:?}, {fivexx} 5xx, {} other; \
             refunded {refunded}, status {}",
            mode(),
            round + 1,
            codes.values().sum::<usize>(),
            unclean.len(),
            d["status"],
        );
        assert!(unclean.is_empty(), "unclean answers: {unclean:#?}");
        assert!(accepted <= paid, "accepted {accepted} of {paid}");
        assert!(refunded <= paid);
        assert_eq!(rows.len(), accepted_n, "one refund row per accepted refund");
        assert_eq!(row_sum, accepted);
        assert_eq!(refunded, accepted, "the sandbox confirms every refund");
        assert!(codes.keys().all(|c| *c == 40901 || *c == 40902));
    }
    assert_read_tables_match_the_log(&app).await;
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// 3. NATS down and killed mid-burst; projector crashing mid-batch
// ---------------------------------------------------------------------------------------

/// One payment's worth of traffic: created, paid, and every third one partly refunded.
async fn payment_traffic(app: &TestApp, i: usize) {
    let amount = format!("{}.{:02}", 10 + i % 50, i % 100);
    let id = app.paid_payment(&amount).await;
    if i.is_multiple_of(3) {
        let a = app
            .client("operator")
            .send(
                "POST",
                &format!("/api/v1/payments/{id}/refund"),
                Some(&json!({"amount": "1.00", "reason": "torture"}).to_string()),
                &[],
            )
            .await
            .expect("refund");
        assert_eq!(a.status, 201, "{}", a.body);
    }
}

/// Waits (bounded) until the relay's checkpoint is at the head and the stream holds at least
/// that many messages; returns the number of messages in the stream.
async fn wait_relayed(pool: &PgPool, url: &str, stream: &str) -> u64 {
    let client = tokio::time::timeout(WAIT_MAX, async_nats::connect(url))
        .await
        .expect("NATS answers")
        .expect("connect");
    let js = async_nats::jetstream::new(client);
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let head = store::head_position(pool).await.expect("head");
        let relayed = store::checkpoint(pool, RELAY_CHECKPOINT)
            .await
            .expect("checkpoint");
        let messages = match js.get_stream(stream).await {
            Ok(s) => s.get_info().await.map(|i| i.state.messages).unwrap_or(0),
            Err(_) => 0,
        };
        if relayed == head && messages >= head as u64 {
            return messages;
        }
        assert!(
            Instant::now() < deadline,
            "relay stuck: head {head}, relayed {relayed}, stream {messages}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every `Nats-Msg-Id` in the stream, read back from the start.
async fn published_ids(url: &str, stream: &str, expected: usize) -> Vec<String> {
    use async_nats::jetstream::consumer::{pull, DeliverPolicy};
    let client = async_nats::connect(url).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream(stream).await.expect("stream");
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .expect("consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let mut ids = Vec::with_capacity(expected);
    while ids.len() < expected {
        let m = tokio::time::timeout(WAIT_MAX, messages.next())
            .await
            .expect("messages arrive")
            .expect("open")
            .expect("message");
        let id = m
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|v| v.as_str().to_owned())
            .expect("every message carries Nats-Msg-Id");
        ids.push(id);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torture_nats_outages_and_projector_crashes_lose_and_double_nothing() {
    let rounds = size(3, 10);
    let per_round = size(12, 40);
    // NATS is down when the service starts: the URL points at a port nobody listens on yet.
    let mut nats = PrivateNats::reserve();
    let app = TestApp::spawn_with(Options {
        nats_url: Some(nats.url()),
        ..Default::default()
    })
    .await;
    let pool = app.pool().await;
    let mut crashes_armed = 0u32;
    let mut outages = 0;
    let mut next = 0usize;
    for round in 0..rounds {
        // Projector crashes mid-batch during the burst.
        let crashes = 2 + round as u32 % 3;
        app.projector
            .faults
            .fail_batches
            .fetch_add(crashes, Ordering::AcqRel);
        crashes_armed += crashes;
        let burst = join_all((next..next + per_round).map(|i| payment_traffic(&app, i)));
        next += per_round;
        let chaos = async {
            if round == 0 {
                // Down from the start; comes up mid-burst.
                tokio::time::sleep(Duration::from_millis(300)).await;
                nats.launch().await;
            } else {
                // Killed mid-burst, back a little later.
                tokio::time::sleep(Duration::from_millis(150)).await;
                nats.kill();
                outages += 1;
                tokio::time::sleep(Duration::from_millis(400)).await;
                nats.launch().await;
            }
        };
        let (_, ()) = tokio::time::timeout(Duration::from_secs(120), async {
            tokio::join!(burst, chaos)
        })
        .await
        .expect("the burst is answered while NATS is down");
    }
    quiesce(&app).await;
    let head = store::head_position(&pool).await.expect("head");
    let in_stream = wait_relayed(&pool, &nats.url(), &app.stream).await;
    let ids = published_ids(&nats.url(), &app.stream, in_stream as usize).await;
    let unique: HashSet<&String> = ids.iter().collect();
    let logged: HashSet<String> = store::read_after(&pool, 0, 1_000_000)
        .await
        .expect("log")
        .iter()
        .map(|e| e.event_id.to_string())
        .collect();
    let lost = logged.iter().filter(|id| !unique.contains(id)).count();
    let doubled = ids.len() - unique.len();
    let (payments, callbacks, refunds) = assert_read_tables_match_the_log(&app).await;
    let crashes_left = app.projector.faults.fail_batches.load(Ordering::Acquire);
    println!(
        "torture nats ({}): {rounds} bursts of {per_round} payments, NATS down at start + \
         {outages} kills mid-burst, {} projector crashes mid-batch; {head} events, {in_stream} \
         in JetStream, {lost} lost from the bus, {doubled} doubled on the bus; read tables: \
         {payments} payments, {callbacks} callbacks, {refunds} refunds, 0 doubled",
        mode(),
        crashes_armed - crashes_left,
    );
    assert_eq!(lost, 0, "events missing from the bus");
    assert_eq!(doubled, 0, "events published twice");
    assert_eq!(in_stream, head as u64);
    assert_eq!(payments as usize, rounds * per_round);
    app.stop().await;
    drop(nats);
}

// ---------------------------------------------------------------------------------------
// 4. PostgreSQL connection loss
// ---------------------------------------------------------------------------------------

/// One request's outcome during the storm.
#[derive(Default)]
struct Storm {
    ok: u64,
    unavailable: u64,
    /// Anything else: 500s, wrong envelopes, transport errors.
    bad: Vec<String>,
    created: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torture_terminated_database_connections_fail_cleanly_and_the_service_recovers() {
    let app = TestApp::spawn_with(no_nats()).await;
    let storm_for = Duration::from_millis(size(3_000, 30_000) as u64);
    let workers = 4;
    let seed = app.paid_payment("50.00").await;
    let stop = Arc::new(AtomicBool::new(false));

    let runs =
        (0..workers).map(|w| {
            let stop = stop.clone();
            let client = app.client("admin");
            let seed = seed.clone();
            async move {
                let mut storm = Storm::default();
                let mut i = 0;
                while !stop.load(Ordering::Acquire) {
                    i += 1;
                    let (method, target, body) = match i % 3 {
                    0 => ("GET", format!("/api/v1/payments/{seed}"), None),
                    1 => ("GET", format!("/api/v1/payments?size=5&page={}", 1 + i % 3), None),
                    _ => (
                        "POST",
                        "/api/v1/payments/create".to_owned(),
                        Some(
                            json!({
                                "amount": "12.34", "currency": "CNY",
                                "payment_method": "bank",
                                "order_id": format!("STORM-{w}-{i}-{}", Uuid::new_v4().simple()),
                                "user_id": "storm-user",
                            })
                            .to_string(),
                        ),
                    ),
                };
                    match client.send(method, &target, body.as_deref(), &[]).await {
                        Ok(a) if (200..300).contains(&a.status) => {
                            storm.ok += 1;
                            if method == "POST" {
                                storm
                                    .created
                                    .push(data(&a)["payment_id"].as_str().unwrap().to_owned());
                            }
                        }
                        Ok(a) if is_clean_error(a.status, &a.body, 503) => storm.unavailable += 1,
                        Ok(a) => storm
                            .bad
                            .push(format!("{method} {target}: {} {}", a.status, a.body)),
                        Err(e) => storm.bad.push(format!("{method} {target}: transport {e}")),
                    }
                }
                storm
            }
        });
    let killer = {
        let stop = stop.clone();
        let name = app.db.name.clone();
        async move {
            let mut admin = PgConnection::connect(ADMIN_URL).await.expect("admin");
            let started = Instant::now();
            let (mut rounds, mut terminated) = (0u64, 0u64);
            while started.elapsed() < storm_for {
                let killed: Vec<bool> = sqlx::query_scalar(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = $1 AND pid <> pg_backend_pid()",
                )
                .bind(&name)
                .fetch_all(&mut admin)
                .await
                .expect("terminate backends");
                rounds += 1;
                terminated += killed.iter().filter(|k| **k).count() as u64;
                tokio::time::sleep(Duration::from_millis(40 + rounds % 5 * 30)).await;
            }
            stop.store(true, Ordering::Release);
            (rounds, terminated)
        }
    };
    let (storms, (rounds, terminated)) = tokio::join!(join_all(runs), killer);

    // Recovery, by itself: the next requests succeed (bounded wait for the first one).
    let recovered_after = Instant::now();
    loop {
        let a = app
            .client("client")
            .send("GET", &format!("/api/v1/payments/{seed}/status"), None, &[])
            .await
            .expect("the server stays up");
        if a.status == 200 {
            break;
        }
        assert!(
            is_clean_error(a.status, &a.body, 503),
            "{} {}",
            a.status,
            a.body
        );
        assert!(recovered_after.elapsed() < WAIT_MAX, "never recovered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recovery = recovered_after.elapsed();
    let mut after_ok = 0;
    for i in 0..20 {
        let order = format!("AFTER-{i}-{}", Uuid::new_v4().simple());
        app.create_payment("5.00", "CNY", "wechat", &order).await;
        after_ok += 1;
    }
    quiesce(&app).await;

    let ok: u64 = storms.iter().map(|s| s.ok).sum();
    let unavailable: u64 = storms.iter().map(|s| s.unavailable).sum();
    let bad: Vec<&String> = storms.iter().flat_map(|s| &s.bad).collect();
    let created: Vec<&String> = storms.iter().flat_map(|s| &s.created).collect();
    // Every 201 is in the log and the read table.
    let pool = app.pool().await;
    let mut lost = 0;
    for id in &created {
        let id = Uuid::parse_str(id).expect("uuid");
        let logged: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM events WHERE stream_id = $1 AND event_type = 'created'",
        )
        .bind(id)
        .fetch_one(&pool)
        .await
        .expect("count");
        let projected: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM payments WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .expect("count");
        if logged != 1 || projected != 1 {
            lost += 1;
        }
    }
    println!(
        "torture pg ({}): {:.1} s storm, {rounds} kill rounds, {terminated} backends \
         terminated; {} requests: {ok} ok ({} creates), {unavailable} clean 503, {} bad; \
         recovered by itself {:.2} s after the storm, then {after_ok}/20 creates ok; {lost} of \
         the accepted creates lost",
        mode(),
        storm_for.as_secs_f64(),
        ok + unavailable + bad.len() as u64,
        created.len(),
        bad.len(),
        recovery.as_secs_f64(),
    );
    assert!(bad.is_empty(), "unclean answers during the storm: {bad:#?}");
    assert!(terminated > 0, "the storm terminated nothing");
    assert_eq!(
        lost, 0,
        "accepted creates missing from the log or read table"
    );
    assert_read_tables_match_the_log(&app).await;
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// 5. Clock skew at the window's edges; one nonce replayed at two nodes
// ---------------------------------------------------------------------------------------

const CLIENT: (&str, &str) = ("t-client", "client-secret-1");

fn create_body() -> String {
    json!({
        "amount": "10.00", "currency": "CNY", "payment_method": "alipay",
        "order_id": format!("SKEW-{}", Uuid::new_v4().simple()), "user_id": "skew-user",
    })
    .to_string()
}

/// Sends a request signed with a chosen timestamp and nonce.
async fn signed(
    http: &reqwest::Client,
    app: &TestApp,
    method: &str,
    target: &str,
    body: &str,
    timestamp: i64,
    nonce: &str,
) -> (u16, Value) {
    let ts = timestamp.to_string();
    let sig = signing::sign(CLIENT.1, &ts, nonce, method, target, body.as_bytes());
    let mut req = http
        .request(
            reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
            format!("{}{}", app.base, target),
        )
        .header("x-key-id", CLIENT.0)
        .header("x-timestamp", ts)
        .header("x-nonce", nonce)
        .header("x-signature", sig);
    if !body.is_empty() {
        req = req
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    let resp = req.send().await.expect("request reaches the service");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torture_skewed_clocks_and_nonces_replayed_across_two_nodes() {
    let a = TestApp::spawn_with(no_nats()).await;
    let b = TestApp::spawn_on(a.db.clone(), no_nats()).await;
    let http = reqwest::Client::new();
    let (id, _) = a
        .create_payment(
            "10.00",
            "CNY",
            "alipay",
            &format!("SKEW-{}", Uuid::new_v4()),
        )
        .await;
    let status_target = format!("/api/v1/payments/{id}/status");

    // Edges, relative to each node's own clock (b runs 250 s ahead). The server reads its
    // clock after the client does, so +300 stays at most 300 s away and -299 at most 300 s,
    // while -301 and +302 stay beyond 300 s.
    let mut edge_checks = 0;
    b.state.clock.set_offset(chrono::Duration::seconds(250));
    for (node, offset) in [(&a, 0i64), (&b, 250)] {
        for (skew, accepted) in [(300, true), (-299, true), (-301, false), (302, false)] {
            let now = chrono::Utc::now().timestamp() + offset;
            for method in ["GET", "POST"] {
                let (target, body) = if method == "GET" {
                    (status_target.clone(), String::new())
                } else {
                    ("/api/v1/payments/create".to_owned(), create_body())
                };
                let (status, answer) = signed(
                    &http,
                    node,
                    method,
                    &target,
                    &body,
                    now + skew,
                    &signing::new_nonce(),
                )
                .await;
                if accepted {
                    assert!(
                        status == 200 || status == 201,
                        "{method} at {skew:+} s (node offset {offset}): {status} {answer}"
                    );
                } else {
                    assert!(
                        is_clean_error(status, &answer, 401) && answer["code"] == 40102,
                        "{method} at {skew:+} s (node offset {offset}): {status} {answer}"
                    );
                }
                edge_checks += 1;
            }
        }
    }
    // A timestamp inside a's window is outside b's: the nodes judge by their own clocks.
    let now = chrono::Utc::now().timestamp();
    let (status, _) = signed(
        &http,
        &b,
        "GET",
        &status_target,
        "",
        now - 60,
        &signing::new_nonce(),
    )
    .await;
    assert_eq!(status, 401, "b's clock is 250 s ahead: 310 s off");
    b.state.clock.set_offset(chrono::Duration::zero());

    // One signed POST fired concurrently at both nodes, many times: exactly one is accepted.
    let rounds = size(5, 50);
    let copies = size(20, 60);
    let pool = a.pool().await;
    let events_before = count(&pool, "SELECT COUNT(*) FROM events").await;
    let mut accepted_total = 0;
    let mut refused_total = 0;
    for _ in 0..rounds {
        let nonce = signing::new_nonce();
        let body = create_body();
        let ts = chrono::Utc::now().timestamp();
        let answers = join_all((0..copies).map(|i| {
            let node = if i % 2 == 0 { &a } else { &b };
            let http = http.clone();
            let body = body.clone();
            let nonce = nonce.clone();
            async move {
                signed(
                    &http,
                    node,
                    "POST",
                    "/api/v1/payments/create",
                    &body,
                    ts,
                    &nonce,
                )
                .await
            }
        }))
        .await;
        let accepted = answers.iter().filter(|(s, _)| *s == 201).count();
        let refused = answers
            .iter()
            .filter(|(s, b)| is_clean_error(*s, b, 401) && b["code"] == 40102)
            .count();
        assert_eq!(accepted, 1, "exactly one copy is accepted: {answers:?}");
        assert_eq!(
            refused,
            copies - 1,
            "every other copy is a replay: {answers:?}"
        );
        // Replayed later at either node: still refused.
        for node in [&a, &b] {
            let (s, v) = signed(
                &http,
                node,
                "POST",
                "/api/v1/payments/create",
                &body,
                ts,
                &nonce,
            )
            .await;
            assert!(is_clean_error(s, &v, 401) && v["code"] == 40102, "{s} {v}");
            refused_total += 1;
        }
        accepted_total += accepted;
        refused_total += refused;
    }
    a.settle().await;
    let created = count(&pool, "SELECT COUNT(*) FROM events").await - events_before;
    println!(
        "torture auth ({}): {edge_checks} signed requests at the window's edges on 2 nodes \
         (one 250 s ahead): all as expected; {rounds} nonces each fired {copies} times \
         concurrently at 2 nodes and replayed once more at each: {accepted_total} accepted, \
         {refused_total} refused 40102, {created} payments created",
        mode(),
    );
    assert_eq!(created as usize, rounds, "one payment per nonce");
    let by_order: HashMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
        "SELECT data->>'order_id', COUNT(*) FROM events WHERE event_type = 'created' \
         GROUP BY 1",
    )
    .fetch_all(&pool)
    .await
    .expect("orders")
    .into_iter()
    .collect();
    assert!(by_order.values().all(|n| *n == 1), "{by_order:?}");
    b.stop().await;
    a.stop().await;
}
