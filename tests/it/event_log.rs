//! The event log itself (SPEC §3): gap-free positions under concurrent writers on two nodes,
//! immutability enforced by the database, optimistic concurrency on a stream, refunds racing
//! through the command handler, and the hash chain. Everything runs against the real
//! PostgreSQL (and, through `TestApp`, NATS), each test in its own fresh database.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use crate::common::{data, TestApp, TestDb};
use futures::future::join_all;
use ledger::client::Answer;
use ledger::store::event::sha256_hex;
use ledger::store::verify::verify_log;
use ledger::store::{
    self, AppendRequest, NewEvent, StoreError, StoredEvent, Writer, WriterConfig, GENESIS_HASH,
};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

/// Upper bound of every wait in this file.
const WAIT_MAX: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);
/// Attempts of one append against a hot stream; each conflict means another append on the
/// same stream won, so this bounds a livelock, not a normal run.
const APPEND_ATTEMPTS_MAX: usize = 2_000;

/// A fresh, migrated database with one or more writer tasks ("nodes") on it.
struct Log {
    pool: PgPool,
    cancel: CancellationToken,
    tracker: TaskTracker,
    // Dropped last: the database goes away after the pool and the writers.
    db: TestDb,
}

impl Log {
    async fn new() -> Log {
        let db = TestDb::new().await;
        let pool = db.pool().await;
        store::migrate(&pool).await.expect("migrations apply");
        Log {
            pool,
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
            db,
        }
    }

    /// Starts another writer task on the same database, as a second node would.
    async fn writer(&self, config: WriterConfig) -> Writer {
        let head = store::head_position(&self.pool).await.expect("head");
        Writer::spawn(
            self.pool.clone(),
            config,
            head,
            self.cancel.clone(),
            &self.tracker,
        )
    }

    async fn close(self) {
        self.cancel.cancel();
        self.tracker.close();
        tokio::time::timeout(WAIT_MAX, self.tracker.wait())
            .await
            .expect("writers stop");
        self.pool.close().await;
    }
}

fn new_event(event_type: &'static str, data: Value) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type,
        data,
        metadata: json!({
            "actor_key_id": "event-log-test",
            "request_id": Uuid::new_v4().to_string(),
        }),
    }
}

fn request(stream_id: Uuid, expected_version: u32, events: Vec<NewEvent>) -> AppendRequest {
    AppendRequest {
        stream_id,
        expected_version,
        events,
        claims: vec![],
        releases: vec![],
        nonce: None,
        idempotency: None,
        respond: None,
        fence: None,
    }
}

/// Appends `events` to `stream_id`, retrying on version conflicts with the version the
/// conflict reported (the events are re-sent unchanged: a refused append wrote nothing, so
/// the same event ids must still be free). Returns the committed events and how many
/// conflicts it took.
async fn append_retrying(
    writer: &Writer,
    stream_id: Uuid,
    known_version: &mut u32,
    events: Vec<NewEvent>,
) -> (Vec<StoredEvent>, usize) {
    for conflicts in 0..APPEND_ATTEMPTS_MAX {
        match writer
            .append(request(stream_id, *known_version, events.clone()))
            .await
        {
            Ok(appended) => {
                let last = appended
                    .events
                    .last()
                    .expect("an append returns its events");
                *known_version = last.version as u32;
                return (appended.events, conflicts);
            }
            Err(StoreError::Conflict { expected, actual }) => {
                assert_eq!(expected, *known_version);
                assert!(
                    actual > expected,
                    "a conflict reports a newer version ({actual} after {expected})"
                );
                *known_version = actual;
            }
            Err(e) => panic!("append failed: {e}"),
        }
    }
    panic!("{APPEND_ATTEMPTS_MAX} conflicts in a row on stream {stream_id}");
}

/// Every row of `events` as PostgreSQL renders it, in position order.
async fn dump_events(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT to_jsonb(e)::text FROM events e ORDER BY position")
        .fetch_all(pool)
        .await
        .expect("dump events")
}

async fn all_events(pool: &PgPool) -> Vec<StoredEvent> {
    store::read_after(pool, 0, 100_000)
        .await
        .expect("read the log")
}

// ---------------------------------------------------------------------------------------
// Positions under concurrency
// ---------------------------------------------------------------------------------------

const TASKS: usize = 8;
const APPENDS_PER_TASK: usize = 50;
/// Tasks `HOT_FROM..TASKS` all append to one shared stream; the others to their own streams.
const HOT_FROM: usize = 4;
const STREAMS_PER_COLD_TASK: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_following_positions_sees_every_event_of_concurrent_writers_exactly_once() {
    let log = Log::new().await;
    // Two writer tasks on one database, as two nodes would run them, with different batch
    // sizes so that their transactions interleave in many ways.
    let writers = [
        log.writer(WriterConfig::default()).await,
        log.writer(WriterConfig {
            batch_max: 3,
            queue_max: 64,
            ..WriterConfig::default()
        })
        .await,
    ];
    let hot_stream = Uuid::now_v7();

    // The reader follows the log from position 0 while the writers run, exactly as a
    // projector or the relay does: read after the checkpoint, move the checkpoint to the last
    // position seen. It stops once it has reached the head the writers report at the end.
    let (target_tx, mut target_rx) = watch::channel::<Option<i64>>(None);
    let reader_pool = log.pool.clone();
    let reader = tokio::spawn(async move {
        let mut checkpoint = 0_i64;
        let mut seen: Vec<StoredEvent> = Vec::new();
        loop {
            let batch = store::read_after(&reader_pool, checkpoint, 100)
                .await
                .expect("the reader reads the log");
            if batch.is_empty() {
                if target_rx.borrow().is_some_and(|t| checkpoint >= t) {
                    break;
                }
                tokio::select! {
                    _ = target_rx.changed() => {}
                    _ = tokio::time::sleep(Duration::from_millis(1)) => {}
                }
                continue;
            }
            for e in batch {
                assert!(
                    e.position > checkpoint,
                    "position {} read after checkpoint {checkpoint}",
                    e.position
                );
                checkpoint = e.position;
                seen.push(e);
            }
        }
        seen
    });

    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let writer = writers[task % writers.len()].clone();
        tasks.push(tokio::spawn(async move {
            let streams: Vec<Uuid> = if task >= HOT_FROM {
                vec![hot_stream]
            } else {
                (0..STREAMS_PER_COLD_TASK).map(|_| Uuid::now_v7()).collect()
            };
            let mut versions: HashMap<Uuid, u32> = streams.iter().map(|s| (*s, 0)).collect();
            let mut committed: Vec<StoredEvent> = Vec::new();
            let mut conflicts = 0;
            for seq in 0..APPENDS_PER_TASK {
                let stream = streams[seq % streams.len()];
                // Every third append carries two events: they must get adjacent positions.
                let count = if seq % 3 == 0 { 2 } else { 1 };
                let events = (0..count)
                    .map(|n| {
                        new_event(
                            "callback_received",
                            json!({"task": task, "seq": seq, "n": n}),
                        )
                    })
                    .collect();
                let version = versions.get_mut(&stream).expect("known stream");
                let (stored, c) = append_retrying(&writer, stream, version, events).await;
                conflicts += c;
                assert_eq!(stored.len(), count);
                for pair in stored.windows(2) {
                    assert_eq!(
                        pair[1].position,
                        pair[0].position + 1,
                        "one append's events are adjacent"
                    );
                    assert_eq!(pair[1].version, pair[0].version + 1);
                }
                committed.extend(stored);
            }
            (committed, conflicts)
        }));
    }

    let results = tokio::time::timeout(WAIT_MAX, join_all(tasks))
        .await
        .expect("the writers finish in time");
    let mut committed: Vec<StoredEvent> = Vec::new();
    let mut hot_conflicts = 0;
    for (task, r) in results.into_iter().enumerate() {
        let (events, conflicts) = r.expect("writer task did not panic");
        if task >= HOT_FROM {
            hot_conflicts += conflicts;
        }
        committed.extend(events);
    }
    let expected_events: usize = (0..APPENDS_PER_TASK)
        .map(|seq| if seq % 3 == 0 { 2 } else { 1 })
        .sum::<usize>()
        * TASKS;
    assert_eq!(
        committed.len(),
        expected_events,
        "every append was eventually committed"
    );
    let head = committed.iter().map(|e| e.position).max().unwrap_or(0);
    target_tx.send_replace(Some(head));

    let seen = tokio::time::timeout(WAIT_MAX, reader)
        .await
        .expect("the reader catches up in time")
        .expect("reader task did not panic");

    // Dense 1..=N in the order the reader saw them: nothing skipped, nothing repeated.
    let positions: Vec<i64> = seen.iter().map(|e| e.position).collect();
    let dense: Vec<i64> = (1..=expected_events as i64).collect();
    assert_eq!(
        positions, dense,
        "positions are dense and strictly increasing"
    );

    // What the reader saw is exactly what the writers were told was committed.
    let committed_by_id: HashMap<Uuid, &StoredEvent> =
        committed.iter().map(|e| (e.event_id, e)).collect();
    assert_eq!(
        committed_by_id.len(),
        committed.len(),
        "event ids are unique"
    );
    let seen_ids: HashSet<Uuid> = seen.iter().map(|e| e.event_id).collect();
    assert_eq!(seen_ids.len(), seen.len(), "the reader saw no event twice");
    assert_eq!(
        seen_ids,
        committed_by_id.keys().copied().collect::<HashSet<_>>(),
        "the reader saw exactly the committed events"
    );
    for e in &seen {
        assert_eq!(
            Some(&e),
            committed_by_id.get(&e.event_id),
            "the reader saw the event as its writer was told it was committed"
        );
    }

    // Times are taken under the append lock, so they never go back in position order,
    // whichever writer committed.
    for pair in seen.windows(2) {
        assert!(
            pair[1].recorded_at >= pair[0].recorded_at,
            "recorded_at goes back from position {} to {}",
            pair[0].position,
            pair[1].position
        );
    }

    // Per stream, versions are dense from 1, and the hot stream holds every task's appends.
    let mut by_stream: BTreeMap<Uuid, Vec<i32>> = BTreeMap::new();
    for e in &seen {
        by_stream.entry(e.stream_id).or_default().push(e.version);
    }
    for (stream, versions) in &by_stream {
        let dense: Vec<i32> = (1..=versions.len() as i32).collect();
        assert_eq!(
            versions, &dense,
            "versions of stream {stream} are dense in position order"
        );
    }
    assert_eq!(
        by_stream.len(),
        HOT_FROM * STREAMS_PER_COLD_TASK + 1,
        "one stream per cold slot plus the hot stream"
    );
    assert_eq!(
        by_stream[&hot_stream].len(),
        expected_events / TASKS * (TASKS - HOT_FROM)
    );
    // Every hot task starts from version 0 and only learns of the others through conflicts,
    // so at most one first append creates the stream and the others must have conflicted.
    assert!(
        hot_conflicts >= TASKS - HOT_FROM - 1,
        "the hot stream was contended ({hot_conflicts} conflicts)"
    );

    // Two writers interleaving did not break a single hash link.
    let report = verify_log(&log.pool, None, |_| {}).await.expect("verify");
    assert!(report.ok, "verify: {:?}", report.problem);
    assert_eq!(report.events_checked, expected_events as i64);
    log.close().await;
}

// ---------------------------------------------------------------------------------------
// Immutability
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_delete_and_truncate_on_events_are_refused_by_the_database() {
    let log = Log::new().await;
    let writer = log.writer(WriterConfig::default()).await;
    let stream = Uuid::now_v7();
    writer
        .append(request(
            stream,
            0,
            vec![
                new_event("created", json!({"amount": "10.00"})),
                new_event("paid", json!({"gateway_trade_no": "T1"})),
            ],
        ))
        .await
        .expect("append");
    let before = dump_events(&log.pool).await;
    assert_eq!(before.len(), 2);

    let attacks = [
        "UPDATE events SET data = '{\"amount\": \"0.01\"}'::jsonb WHERE position = 1",
        "UPDATE events SET event_type = 'failed' WHERE position = 2",
        "UPDATE events SET recorded_at = recorded_at - interval '1 day'",
        "DELETE FROM events WHERE position = 2",
        "DELETE FROM events",
        "TRUNCATE events",
        "TRUNCATE events CASCADE",
    ];
    for sql in attacks {
        let err = sqlx::query(sql)
            .execute(&log.pool)
            .await
            .expect_err(&format!("{sql:?} must be refused"));
        let db = err
            .as_database_error()
            .unwrap_or_else(|| panic!("{sql:?}: not a database error: {err}"));
        assert_eq!(
            db.code().as_deref(),
            Some("42501"),
            "{sql:?}: refused as insufficient_privilege, got {db}"
        );
        assert!(
            db.message().contains("events are immutable"),
            "{sql:?}: {}",
            db.message()
        );
        assert_eq!(
            dump_events(&log.pool).await,
            before,
            "{sql:?} changed nothing"
        );
    }

    // Inside a transaction the refusal aborts the whole transaction, and nothing commits.
    let mut tx = log.pool.begin().await.expect("begin");
    let refused = sqlx::query("DELETE FROM events WHERE position = 1")
        .execute(&mut *tx)
        .await;
    assert!(refused.is_err());
    let _ = tx.commit().await;
    assert_eq!(dump_events(&log.pool).await, before);

    // The log still accepts appends after the refusals.
    writer
        .append(request(
            stream,
            2,
            vec![new_event("refund_requested", json!({}))],
        ))
        .await
        .expect("append after refusals");
    let report = verify_log(&log.pool, None, |_| {}).await.expect("verify");
    assert!(report.ok, "verify: {:?}", report.problem);
    assert_eq!(report.events_checked, 3);
    log.close().await;
}

// ---------------------------------------------------------------------------------------
// Optimistic concurrency
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_appends_with_the_same_expected_version_one_wins_and_the_other_conflicts() {
    let log = Log::new().await;
    let node_a = log.writer(WriterConfig::default()).await;
    let node_b = log.writer(WriterConfig::default()).await;

    // Same writer (likely the same group-commit batch) and two writers (two transactions
    // serialised by the append lock): both must let exactly one through.
    let pairs: [(&Writer, &Writer); 2] = [(&node_a, &node_a), (&node_a, &node_b)];
    for (round, (first, second)) in pairs.into_iter().enumerate() {
        let stream = Uuid::now_v7();
        first
            .append(request(stream, 0, vec![new_event("created", json!({}))]))
            .await
            .expect("create the stream");
        let left = new_event("paid", json!({"by": "left", "round": round}));
        let right = new_event("failed", json!({"by": "right", "round": round}));
        let (left_id, right_id) = (left.event_id, right.event_id);
        let (a, b) = tokio::join!(
            first.append(request(stream, 1, vec![left])),
            second.append(request(stream, 1, vec![right])),
        );
        let (winner, loser_id) = match (a, b) {
            (Ok(w), Err(StoreError::Conflict { expected, actual })) => {
                assert_eq!((expected, actual), (1, 2));
                (w, right_id)
            }
            (Err(StoreError::Conflict { expected, actual }), Ok(w)) => {
                assert_eq!((expected, actual), (1, 2));
                (w, left_id)
            }
            (a, b) => panic!(
                "round {round}: exactly one append must win: {:?} / {:?}",
                a.map(|x| x.events.len()),
                b.map(|x| x.events.len())
            ),
        };
        assert_eq!(winner.events.len(), 1);
        assert_eq!(winner.events[0].version, 2);
        let stream_events = store::read_stream(&log.pool, stream).await.expect("read");
        assert_eq!(stream_events.len(), 2, "the loser wrote nothing");
        assert_eq!(stream_events[1], winner.events[0]);
        assert!(stream_events.iter().all(|e| e.event_id != loser_id));

        // A stale expected version keeps failing; the current one succeeds.
        let stale = node_b
            .append(request(stream, 1, vec![new_event("failed", json!({}))]))
            .await;
        assert!(
            matches!(
                stale,
                Err(StoreError::Conflict {
                    expected: 1,
                    actual: 2
                })
            ),
            "{stale:?}"
        );
        let ahead = node_b
            .append(request(stream, 5, vec![new_event("failed", json!({}))]))
            .await;
        assert!(
            matches!(
                ahead,
                Err(StoreError::Conflict {
                    expected: 5,
                    actual: 2
                })
            ),
            "an expected version beyond the head is a conflict too: {ahead:?}"
        );
        let fresh = node_b
            .append(request(
                stream,
                2,
                vec![new_event("refund_requested", json!({}))],
            ))
            .await
            .expect("append at the current version");
        assert_eq!(fresh.events[0].version, 3);
    }
    let report = verify_log(&log.pool, None, |_| {}).await.expect("verify");
    assert!(report.ok, "verify: {:?}", report.problem);
    log.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_stream_can_be_started_only_once_even_by_racing_nodes() {
    let log = Log::new().await;
    let node_a = log.writer(WriterConfig::default()).await;
    let node_b = log.writer(WriterConfig::default()).await;
    let stream = Uuid::now_v7();
    let attempts = (0..10).map(|i| {
        let writer = if i % 2 == 0 { &node_a } else { &node_b };
        writer.append(request(
            stream,
            0,
            vec![new_event("created", json!({"i": i}))],
        ))
    });
    let results = tokio::time::timeout(WAIT_MAX, join_all(attempts))
        .await
        .expect("appends answer in time");
    let won = results.iter().filter(|r| r.is_ok()).count();
    let conflicts = results
        .iter()
        .filter(|r| {
            matches!(
                r,
                Err(StoreError::Conflict {
                    expected: 0,
                    actual: 1
                })
            )
        })
        .count();
    assert_eq!((won, conflicts), (1, 9), "{results:?}");
    assert_eq!(all_events(&log.pool).await.len(), 1);
    log.close().await;
}

// ---------------------------------------------------------------------------------------
// Command-level race
// ---------------------------------------------------------------------------------------

fn dec(v: &Value) -> Decimal {
    v.as_str()
        .unwrap_or_else(|| panic!("{v} is not an amount string"))
        .parse()
        .expect("decimal amount")
}

async fn refund(app: &TestApp, id: &str, amount: &str) -> Answer {
    let body = json!({"amount": amount, "reason": "race"}).to_string();
    app.client("operator")
        .send(
            "POST",
            &format!("/api/v1/payments/{id}/refund"),
            Some(&body),
            &[],
        )
        .await
        .expect("refund reaches the service")
}

async fn detail(app: &TestApp, id: &str) -> Value {
    let a = app
        .client("auditor")
        .send("GET", &format!("/api/v1/payments/{id}"), None, &[])
        .await
        .expect("detail");
    assert_eq!(a.status, 200, "{}", a.body);
    data(&a).clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_refunds_never_refund_more_than_was_paid() {
    let app = TestApp::spawn().await;
    let id = app.paid_payment("100.00").await;
    let payment_id: Uuid = id.parse().expect("uuid");

    // 20 × 7.00 = 140.00 asked on 100.00 paid: exactly 14 fit (98.00).
    let answers = tokio::time::timeout(
        WAIT_MAX,
        join_all((0..20).map(|_| refund(&app, &id, "7.00"))),
    )
    .await
    .expect("all refunds answer in time");
    let accepted: Vec<&Answer> = answers.iter().filter(|a| a.status == 201).collect();
    for a in answers.iter().filter(|a| a.status != 201) {
        assert_eq!(a.status, 409, "a refused refund is a conflict: {}", a.body);
        assert_eq!(a.body["code"], 40902, "{}", a.body);
        assert!(a.body["data"].is_null());
    }
    let accepted_sum: Decimal = accepted.iter().map(|a| dec(&data(a)["amount"])).sum();
    assert!(
        accepted_sum <= Decimal::new(10000, 2),
        "over-refunded: {accepted_sum}"
    );
    assert_eq!(
        accepted.len(),
        14,
        "no refund that fit was lost to a conflict"
    );

    // The log agrees with what the callers were told, one event per accepted refund.
    let stream = store::read_stream(&app.pool().await, payment_id)
        .await
        .expect("read stream");
    let requested: Vec<&StoredEvent> = stream
        .iter()
        .filter(|e| e.event_type == "refund_requested")
        .collect();
    assert_eq!(requested.len(), accepted.len());
    let logged_ids: HashSet<String> = requested
        .iter()
        .map(|e| e.data["refund_id"].as_str().expect("refund_id").to_owned())
        .collect();
    let told_ids: HashSet<String> = accepted
        .iter()
        .map(|a| data(a)["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(logged_ids, told_ids);
    let logged_sum: Decimal = requested.iter().map(|e| dec(&e.data["amount"])).sum();
    assert_eq!(logged_sum, Decimal::new(9800, 2));

    // The refund process confirms them all; the remaining 2.00 is still refundable, and
    // nothing beyond it.
    let deadline = tokio::time::Instant::now() + WAIT_MAX;
    loop {
        let d = detail(&app, &id).await;
        if d["refunded_amount"] == "98.00" {
            assert_eq!(d["status"], "success");
            assert_eq!(d["refunds"].as_array().map(Vec::len), Some(14));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "refunds not confirmed in time: {d}"
        );
        tokio::time::sleep(POLL).await;
    }
    let too_much = refund(&app, &id, "2.01").await;
    assert_eq!(too_much.status, 409, "{}", too_much.body);
    assert_eq!(too_much.body["code"], 40902);
    let rest = refund(&app, &id, "2.00").await;
    assert_eq!(rest.status, 201, "{}", rest.body);
    let report = verify_log(&app.pool().await, None, |_| {})
        .await
        .expect("verify");
    assert!(report.ok, "verify: {:?}", report.problem);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_decides_against_the_log_not_against_its_stale_copy_of_a_payment() {
    // Two nodes on one database (README: "every node sharing the database"). The payment is
    // created through node A (which keeps its state in memory), paid by a notification that
    // the load balancer sends to node B, then refunded through node A again.
    let a = TestApp::spawn().await;
    let b = TestApp::spawn_on(a.db.clone(), crate::common::Options::default()).await;
    let order = format!("ORD-{}", Uuid::new_v4().simple());
    let (id, no) = a.create_payment("80.00", "CNY", "alipay", &order).await;
    let paid = b.pay("alipay", &no, "80.00").await;
    assert_eq!(paid.status, 200, "{}", paid.body);
    assert_eq!(data(&paid)["status"], "success");
    let stream = store::read_stream(&a.pool().await, id.parse().expect("uuid"))
        .await
        .expect("read stream");
    assert_eq!(
        stream.last().map(|e| e.event_type.as_str()),
        Some("paid"),
        "the log says the payment is paid"
    );

    // The log says "paid", so the refund is allowed, whichever node takes it.
    let through_a = refund(&a, &id, "10.00").await;
    assert_eq!(
        through_a.status, 201,
        "node A refused a refund of a paid payment from its stale state: {}",
        through_a.body
    );
    let through_b = refund(&b, &id, "10.00").await;
    assert_eq!(through_b.status, 201, "{}", through_b.body);
    a.stop().await;
    b.stop().await;
}

// ---------------------------------------------------------------------------------------
// Hash chain
// ---------------------------------------------------------------------------------------

/// A few payments with callbacks, refunds and a failure, through the real API.
async fn some_history(app: &TestApp) -> Vec<String> {
    let mut ids = Vec::new();
    for amount in ["10.00", "25.50", "99.99"] {
        ids.push(app.paid_payment(amount).await);
    }
    let r = refund(app, &ids[0], "4.00").await;
    assert_eq!(r.status, 201, "{}", r.body);
    // Wait for the refund process to confirm it, so that the log is quiet afterwards.
    let deadline = tokio::time::Instant::now() + WAIT_MAX;
    while detail(app, &ids[0]).await["refunds"][0]["status"] != "success" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "refund not confirmed in time"
        );
        tokio::time::sleep(POLL).await;
    }
    let order = format!("ORD-{}", Uuid::new_v4().simple());
    let (pending, _) = app.create_payment("5.00", "CNY", "wechat", &order).await;
    ids.push(pending);
    ids
}

fn is_lower_hex_64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_log_verifies_and_hashes_link_within_each_payment() {
    let app = TestApp::spawn().await;
    let ids = some_history(&app).await;
    let pool = app.pool().await;
    let events = all_events(&pool).await;
    assert!(events.len() >= 12, "history too short: {}", events.len());

    let report = verify_log(&pool, None, |_| {}).await.expect("verify");
    assert!(report.ok, "verify: {:?}", report.problem);
    assert_eq!(report.events_checked, events.len() as i64);
    assert_eq!(report.head_position, events.len() as i64);
    assert_eq!(report.first_broken_position, None);
    assert_eq!(
        Some(report.head_hash.as_str()),
        events.last().map(|e| e.hash.as_str())
    );

    // Checked independently of `verify_log`: each hash covers the event's canonical bytes,
    // and links to the previous event of the same payment (64 zeros for version 1).
    let canonical: HashMap<i64, String> =
        sqlx::query_as::<_, (i64, String)>("SELECT position, canonical FROM events")
            .fetch_all(&pool)
            .await
            .expect("canonical bytes")
            .into_iter()
            .collect();
    let mut last_of_stream: HashMap<Uuid, (i32, String)> = HashMap::new();
    for e in &events {
        assert!(is_lower_hex_64(&e.hash), "hash {}", e.hash);
        assert_eq!(sha256_hex(canonical[&e.position].as_bytes()), e.hash);
        assert_eq!(
            e.canonical(),
            canonical[&e.position],
            "columns say what the bytes say"
        );
        match last_of_stream.get(&e.stream_id) {
            None => {
                assert_eq!(e.version, 1);
                assert_eq!(e.prev_hash, GENESIS_HASH);
                assert_eq!(e.prev_hash, "0".repeat(64));
            }
            Some((version, hash)) => {
                assert_eq!(e.version, version + 1);
                assert_eq!(
                    &e.prev_hash, hash,
                    "position {} links to its payment",
                    e.position
                );
            }
        }
        last_of_stream.insert(e.stream_id, (e.version, e.hash.clone()));
    }
    assert_eq!(last_of_stream.len(), ids.len());

    // The auditor's endpoint says the same.
    let a = app
        .client("auditor")
        .send("GET", "/api/v1/audit/verify", None, &[])
        .await
        .expect("audit verify");
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(data(&a)["ok"], true);
    assert_eq!(data(&a)["events_checked"], events.len() as i64);
    assert!(data(&a)["first_broken_position"].is_null());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_edited_behind_the_triggers_is_caught_by_verify() {
    let app = TestApp::spawn_with(crate::common::Options {
        nats_url: None,
        ..Default::default()
    })
    .await;
    some_history(&app).await;
    let pool = app.pool().await;
    let events = all_events(&pool).await;
    let paid = events
        .iter()
        .find(|e| e.event_type == "paid")
        .expect("a paid event");

    // Only a superuser can do this (it is our own throw-away database): disable the guard,
    // edit one event's data, and put the guard back.
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query("ALTER TABLE events DISABLE TRIGGER events_no_update_delete")
        .execute(&mut *tx)
        .await
        .expect("disable trigger");
    sqlx::query(
        "UPDATE events SET data = jsonb_set(data, '{gateway_trade_no}', '\"FORGED\"') \
         WHERE position = $1",
    )
    .bind(paid.position)
    .execute(&mut *tx)
    .await
    .expect("tamper");
    sqlx::query("ALTER TABLE events ENABLE TRIGGER events_no_update_delete")
        .execute(&mut *tx)
        .await
        .expect("enable trigger");
    tx.commit().await.expect("commit");

    let report = verify_log(&pool, None, |_| {}).await.expect("verify");
    assert!(!report.ok);
    assert_eq!(report.first_broken_position, Some(paid.position));
    assert_eq!(report.events_checked, events.len() as i64);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_with_their_own_pools_keep_positions_dense_and_the_chain_intact() {
    // Two pools (two processes' worth of connections) append through their own writers to
    // the same streams; the append lock serialises them and the chain stays intact.
    let log = Log::new().await;
    let other_pool = log.db.pool().await;
    let node_a = log.writer(WriterConfig::default()).await;
    let head = store::head_position(&other_pool).await.expect("head");
    let node_b = Writer::spawn(
        other_pool.clone(),
        WriterConfig::default(),
        head,
        log.cancel.clone(),
        &log.tracker,
    );
    let streams: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
    let jobs = (0..4).map(|i| {
        let writer = if i % 2 == 0 {
            node_a.clone()
        } else {
            node_b.clone()
        };
        let streams = streams.clone();
        async move {
            let mut versions: HashMap<Uuid, u32> = streams.iter().map(|s| (*s, 0)).collect();
            let mut n = 0;
            for seq in 0..40 {
                let stream = streams[(seq + i) % streams.len()];
                let v = versions.get_mut(&stream).expect("known");
                let (stored, _) = append_retrying(
                    &writer,
                    stream,
                    v,
                    vec![new_event("callback_received", json!({"i": i, "seq": seq}))],
                )
                .await;
                n += stored.len();
            }
            n
        }
    });
    let counts = tokio::time::timeout(WAIT_MAX, join_all(jobs))
        .await
        .expect("appends finish in time");
    let total: usize = counts.iter().sum();
    let events = all_events(&log.pool).await;
    assert_eq!(events.len(), total);
    let positions: Vec<i64> = events.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=total as i64).collect::<Vec<_>>());
    let report = verify_log(&log.pool, None, |_| {}).await.expect("verify");
    assert!(report.ok, "verify: {:?}", report.problem);
    other_pool.close().await;
    log.close().await;
}
