//! The read side (SPEC §3 "Projections are idempotent … resumes without loss or double
//! counting", §5 read-your-writes and the detail cache): re-applying events, crashing
//! mid-batch, rebuilding from the PostgreSQL log alone, and the cache never trailing the
//! projection. Real PostgreSQL (and NATS where the bus matters), a fresh database per test.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::{data, Options, TestApp};
use futures::future::join_all;
use ledger::client::Answer;
use ledger::gateway::sandbox::Faults;
use ledger::projections::cache::ReadCache;
use ledger::projections::runner::Projector;
use ledger::projections::{apply_batch, Decoded, ProjectionContext, Tables, PROJECTIONS};
use ledger::store::decode;
use ledger::store::{self, StoredEvent};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

const WAIT_MAX: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);

fn no_nats() -> Options {
    Options {
        nats_url: None,
        ..Default::default()
    }
}

fn context(app: &TestApp) -> ProjectionContext {
    ProjectionContext {
        master_key: app.state.settings.master_key.clone(),
    }
}

/// Every row of the four read tables as PostgreSQL renders it (exact numeric scale and
/// microsecond times), sorted, keyed by the live table name.
async fn dump(pool: &PgPool, tables: &Tables) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for (live, table) in Tables::live().all().into_iter().zip(tables.all()) {
        let rows: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT to_jsonb(t)::text AS r FROM {table} t ORDER BY r"
        ))
        .fetch_all(pool)
        .await
        .unwrap_or_else(|e| panic!("dump {table}: {e}"));
        out.insert(live.to_owned(), rows);
    }
    out
}

async fn all_events(pool: &PgPool) -> Vec<StoredEvent> {
    store::read_after(pool, 0, 100_000)
        .await
        .expect("read the log")
}

fn decoded(events: &[StoredEvent]) -> Vec<Decoded<'_>> {
    events
        .iter()
        .map(|e| Decoded {
            stored: e,
            event: decode(e).expect("every logged event decodes"),
        })
        .collect()
}

/// Applies `events` to `tables` in one committed transaction.
async fn apply(pool: &PgPool, ctx: &ProjectionContext, events: &[StoredEvent], tables: &Tables) {
    let batch = decoded(events);
    let mut tx = pool.begin().await.expect("begin");
    apply_batch(&mut tx, ctx, &batch, tables)
        .await
        .expect("apply batch");
    tx.commit().await.expect("commit");
}

/// Builds the read tables from the whole log into fresh `{table}_clean` tables in one batch:
/// what a projector that never crashed and never saw anything twice produces.
async fn clean_rebuild(pool: &PgPool, ctx: &ProjectionContext) -> BTreeMap<String, Vec<String>> {
    let clean = Tables::with_suffix("_clean");
    for (live, fresh) in Tables::live().all().into_iter().zip(clean.all()) {
        sqlx::query(&format!("DROP TABLE IF EXISTS {fresh}"))
            .execute(pool)
            .await
            .expect("drop clean table");
        sqlx::query(&format!("CREATE TABLE {fresh} (LIKE {live} INCLUDING ALL)"))
            .execute(pool)
            .await
            .expect("create clean table");
    }
    let events = all_events(pool).await;
    apply(pool, ctx, &events, &clean).await;
    let rows = dump(pool, &clean).await;
    for fresh in clean.all() {
        sqlx::query(&format!("DROP TABLE {fresh}"))
            .execute(pool)
            .await
            .expect("drop clean table");
    }
    rows
}

/// Sum of ledger postings per (currency): zero for every currency when the books balance.
async fn trial_balance(pool: &PgPool) -> Vec<(String, Decimal)> {
    sqlx::query_as(
        "SELECT currency, SUM(amount) FROM ledger_entries GROUP BY currency ORDER BY currency",
    )
    .fetch_all(pool)
    .await
    .expect("trial balance")
}

/// `refunded_amount` of every payment in the read table, and the same computed from the log.
async fn refunded_amounts(pool: &PgPool) -> (HashMap<Uuid, Decimal>, HashMap<Uuid, Decimal>) {
    let table: HashMap<Uuid, Decimal> =
        sqlx::query_as::<_, (Uuid, Decimal)>("SELECT id, refunded_amount FROM payments")
            .fetch_all(pool)
            .await
            .expect("refunded amounts")
            .into_iter()
            .collect();
    let mut log: HashMap<Uuid, Decimal> = table.keys().map(|id| (*id, Decimal::ZERO)).collect();
    for e in all_events(pool).await {
        if e.event_type == "refunded" {
            let amount: Decimal = e.data["amount"]
                .as_str()
                .expect("amount string")
                .parse()
                .expect("decimal");
            *log.entry(e.stream_id).or_default() += amount;
        }
    }
    (table, log)
}

async fn assert_books_balance(pool: &PgPool) {
    let balance = trial_balance(pool).await;
    assert!(!balance.is_empty(), "there are postings");
    for (currency, sum) in &balance {
        assert_eq!(*sum, Decimal::ZERO, "trial balance of {currency}");
    }
    let (table, log) = refunded_amounts(pool).await;
    assert_eq!(
        table, log,
        "refunded_amount equals the refunds the log confirmed"
    );
}

async fn post(app: &TestApp, role: &str, path: &str, body: Value) -> Answer {
    app.client(role)
        .send("POST", path, Some(&body.to_string()), &[])
        .await
        .expect("the service answers")
}

async fn get(app: &TestApp, path: &str) -> Answer {
    let a = app
        .client("auditor")
        .send("GET", path, None, &[])
        .await
        .expect("the service answers");
    assert_eq!(a.status, 200, "GET {path}: {}", a.body);
    a
}

async fn refund(app: &TestApp, id: &str, amount: &str) -> Answer {
    let a = post(
        app,
        "operator",
        &format!("/api/v1/payments/{id}/refund"),
        json!({"amount": amount, "reason": "projection test"}),
    )
    .await;
    assert_eq!(a.status, 201, "refund {amount} of {id}: {}", a.body);
    a
}

async fn notify(app: &TestApp, method: &str, body: Value) -> Answer {
    let a = app
        .gateway(method)
        .send(
            "POST",
            &format!("/api/v1/gateways/{method}/notify"),
            Some(&body.to_string()),
            &[],
        )
        .await
        .expect("the service answers");
    assert_eq!(a.status, 200, "notify: {}", a.body);
    a
}

fn callback(payment_no: &str, status: &str, amount: &str) -> Value {
    json!({
        "payment_no": payment_no,
        "callback_no": format!("CB{}", Uuid::new_v4().simple()),
        "status": status,
        "amount": amount,
        "gateway_trade_no": format!("T{}", Uuid::new_v4().simple()),
    })
}

fn order() -> String {
    format!("ORD-{}", Uuid::new_v4().simple())
}

/// Waits (bounded) until every refund in the log is projected and none is still processing,
/// so that the refund process appends nothing more.
async fn refunds_settled(app: &TestApp) {
    let pool = app.pool().await;
    let deadline = tokio::time::Instant::now() + WAIT_MAX;
    loop {
        app.settle().await;
        let (requested, total, processing): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM events WHERE event_type = 'refund_requested'), \
             COUNT(*), COUNT(*) FILTER (WHERE status = 0) FROM payment_refunds",
        )
        .fetch_one(&pool)
        .await
        .expect("count refunds");
        if total == requested && processing == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "refunds did not settle: {total} of {requested}, {processing} processing"
        );
        tokio::time::sleep(POLL).await;
    }
    app.settle().await;
}

/// A history touching every read table and every event type: full and partial refunds, a
/// refund the gateway rejects (the app must be started with `reject_refunds: 1`), a failed
/// payment, a success after failure, duplicate and mismatched callbacks, two currencies and
/// payer data. Returns the payment ids.
async fn traffic(app: &TestApp) -> Vec<String> {
    let mut ids = Vec::new();

    // The first refund the sandbox sees is rejected: issue it alone and wait for it.
    let rejected = app.paid_payment("88.88").await;
    refund(app, &rejected, "10.00").await;
    refunds_settled(app).await;
    refund(app, &rejected, "8.88").await;
    ids.push(rejected);

    let full = app.paid_payment("100.00").await;
    refund(app, &full, "30.00").await;
    refund(app, &full, "70.00").await;
    ids.push(full);

    let (jpy, jpy_no) = app.create_payment("1500", "JPY", "wechat", &order()).await;
    let dup = callback(&jpy_no, "success", "1500");
    notify(app, "wechat", callback(&jpy_no, "success", "1499")).await;
    notify(app, "wechat", dup.clone()).await;
    let again = notify(app, "wechat", dup).await;
    assert_eq!(data(&again)["duplicate"], true);
    refund(app, &jpy, "100").await;
    ids.push(jpy);

    let (failed, failed_no) = app.create_payment("12.34", "CNY", "bank", &order()).await;
    notify(app, "bank", callback(&failed_no, "failed", "12.34")).await;
    notify(app, "bank", callback(&failed_no, "success", "12.34")).await;
    ids.push(failed);

    let (pending, _) = app
        .create_payment("5.00", "CNY", "credit_card", &order())
        .await;
    ids.push(pending);

    let with_payer = post(
        app,
        "client",
        "/api/v1/payments/create",
        json!({
            "amount": "42.00", "currency": "CNY", "payment_method": "alipay",
            "order_id": order(), "user_id": "user-payer",
            "payer": {"name": "张三", "account": "4111111111111111"},
        }),
    )
    .await;
    assert_eq!(with_payer.status, 201, "{}", with_payer.body);
    ids.push(
        data(&with_payer)["payment_id"]
            .as_str()
            .expect("payment_id")
            .to_owned(),
    );

    refunds_settled(app).await;
    ids
}

/// Makes sure the history reached every table and every event type.
async fn assert_history_is_rich(pool: &PgPool) {
    let types: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT event_type FROM events ORDER BY 1")
            .fetch_all(pool)
            .await
            .expect("event types");
    assert_eq!(
        types,
        [
            "callback_received",
            "created",
            "failed",
            "paid",
            "refund_failed",
            "refund_requested",
            "refunded"
        ]
    );
    for table in Tables::live().all() {
        let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(pool)
            .await
            .expect("count");
        assert!(n > 0, "{table} is empty");
    }
}

// ---------------------------------------------------------------------------------------
// Idempotence
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applying_events_a_second_time_changes_no_read_table() {
    let app = TestApp::spawn_with(Options {
        faults: Faults {
            reject_refunds: AtomicU32::new(1),
            ..Faults::default()
        },
        ..no_nats()
    })
    .await;
    traffic(&app).await;
    let pool = app.pool().await;
    assert_history_is_rich(&pool).await;
    let ctx = context(&app);
    let before = dump(&pool, &Tables::live()).await;
    let events = all_events(&pool).await;

    // The whole log again in one batch, then each event alone, then overlapping windows
    // (a redelivery that straddles a batch boundary): nothing may change.
    apply(&pool, &ctx, &events, &Tables::live()).await;
    assert_eq!(
        dump(&pool, &Tables::live()).await,
        before,
        "whole log again"
    );
    for e in &events {
        apply(&pool, &ctx, std::slice::from_ref(e), &Tables::live()).await;
    }
    assert_eq!(
        dump(&pool, &Tables::live()).await,
        before,
        "each event again"
    );
    for start in (0..events.len()).step_by(3) {
        let end = (start + 5).min(events.len());
        apply(&pool, &ctx, &events[start..end], &Tables::live()).await;
    }
    assert_eq!(
        dump(&pool, &Tables::live()).await,
        before,
        "overlapping windows"
    );
    // The same event twice within one batch.
    let doubled: Vec<StoredEvent> = events.iter().flat_map(|e| [e.clone(), e.clone()]).collect();
    apply(&pool, &ctx, &doubled, &Tables::live()).await;
    assert_eq!(dump(&pool, &Tables::live()).await, before, "doubled batch");

    assert_eq!(
        before,
        clean_rebuild(&pool, &ctx).await,
        "live equals a clean build"
    );
    assert_books_balance(&pool).await;
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// Crash mid-batch
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_projector_failing_batches_before_commit_recovers_without_loss_or_double_count() {
    let app = TestApp::spawn_with(no_nats()).await;
    // Crash the next batches after they wrote to the tables and before they committed,
    // while a burst of concurrent writes lands (so the failing batches hold many events).
    app.projector
        .faults
        .fail_batches
        .store(4, Ordering::Release);
    let burst = join_all((0..8).map(|i| {
        let app = &app;
        async move {
            let id = app.paid_payment(&format!("{}.{:02}", 10 + i, i)).await;
            refund(app, &id, "1.00").await;
            id
        }
    }));
    tokio::time::timeout(WAIT_MAX, burst)
        .await
        .expect("the burst is answered in time");
    assert_eq!(
        app.projector.faults.fail_batches.load(Ordering::Acquire),
        0,
        "every injected crash happened"
    );
    // And more crashes on ordinary traffic.
    app.projector
        .faults
        .fail_batches
        .store(3, Ordering::Release);
    traffic(&app).await;
    refunds_settled(&app).await;
    assert_eq!(app.projector.faults.fail_batches.load(Ordering::Acquire), 0);

    let pool = app.pool().await;
    let live = dump(&pool, &Tables::live()).await;
    assert_eq!(live, clean_rebuild(&pool, &context(&app)).await);
    assert_books_balance(&pool).await;
    let head = store::head_position(&pool).await.expect("head");
    for name in PROJECTIONS {
        assert_eq!(
            store::checkpoint(&pool, name).await.expect("checkpoint"),
            head
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_crashing_mid_batch_resumes_from_its_checkpoint_exactly() {
    let app = TestApp::spawn_with(Options {
        faults: Faults {
            reject_refunds: AtomicU32::new(1),
            ..Faults::default()
        },
        ..no_nats()
    })
    .await;
    traffic(&app).await;
    let ctx = context(&app);
    let pool = app.pool().await;
    let expected = dump(&pool, &Tables::live()).await;
    let db = app.db.clone();
    app.stop().await;

    // A projector of our own, driven by hand on the stopped service's database: wipe the
    // read tables and checkpoints, then project in small batches, crashing every other one.
    let pool = db.pool().await;
    sqlx::query("TRUNCATE payments, payment_callbacks, payment_refunds, ledger_entries")
        .execute(&pool)
        .await
        .expect("truncate read tables");
    sqlx::query("DELETE FROM checkpoints WHERE name = ANY($1)")
        .bind(PROJECTIONS.as_slice())
        .execute(&pool)
        .await
        .expect("reset checkpoints");
    let head = store::head_position(&pool).await.expect("head");
    let batch = 4_i64;
    let projector = Projector::new(
        pool.clone(),
        ctx,
        ReadCache::new(100, Duration::from_secs(60)),
        batch,
    );
    let mut crashes = 0_i64;
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(rounds < 1_000, "the projector does not finish");
        let from = projector.checkpoint().await.expect("checkpoint");
        let before = dump(&pool, &Tables::live()).await;
        let crash = rounds % 2 == 0;
        projector
            .faults
            .fail_batches
            .store(u32::from(crash), Ordering::Release);
        match projector.run_once().await {
            Ok(0) => {
                assert!(!crash || from == head);
                break;
            }
            Ok(n) => {
                assert!(!crash, "an armed crash must fail the batch");
                assert_eq!(
                    projector.checkpoint().await.expect("checkpoint"),
                    (from + n as i64).min(head)
                );
            }
            Err(_) => {
                assert!(crash, "only injected crashes fail");
                crashes += 1;
                // Nothing of the failed batch is visible: tables and checkpoint as before.
                assert_eq!(dump(&pool, &Tables::live()).await, before);
                assert_eq!(projector.checkpoint().await.expect("checkpoint"), from);
            }
        }
    }
    let batches = (head + batch - 1) / batch;
    assert_eq!(
        crashes,
        batches - 1,
        "every batch but the last crashed once"
    );
    assert_eq!(projector.checkpoint().await.expect("checkpoint"), head);
    assert_eq!(dump(&pool, &Tables::live()).await, expected);
    assert_books_balance(&pool).await;
    pool.close().await;
}

// ---------------------------------------------------------------------------------------
// Catch-up from the log
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_rebuilds_every_read_table_from_the_postgres_log_alone() {
    let first = TestApp::spawn_with(Options {
        faults: Faults {
            reject_refunds: AtomicU32::new(1),
            ..Faults::default()
        },
        ..Options::default()
    })
    .await;
    let ids = traffic(&first).await;
    let pool = first.pool().await;
    assert_history_is_rich(&pool).await;
    let expected = dump(&pool, &Tables::live()).await;
    let mut details = Vec::new();
    for id in &ids {
        details.push(data(&get(&first, &format!("/api/v1/payments/{id}")).await).clone());
    }
    let db = first.db.clone();
    first.stop().await;

    // Wipe the read side; the log stays.
    let admin = db.pool().await;
    sqlx::query("TRUNCATE payments, payment_callbacks, payment_refunds, ledger_entries")
        .execute(&admin)
        .await
        .expect("truncate read tables");
    sqlx::query("DELETE FROM checkpoints WHERE name = ANY($1)")
        .bind(PROJECTIONS.as_slice())
        .execute(&admin)
        .await
        .expect("reset checkpoints");
    assert!(dump(&admin, &Tables::live())
        .await
        .values()
        .all(Vec::is_empty));

    // A new node with its own, empty NATS stream and prefix: nothing arrives on the bus for
    // the old events, so everything must come from PostgreSQL.
    let second = TestApp::spawn_on(db.clone(), Options::default()).await;
    second.settle().await;
    assert_eq!(dump(&admin, &Tables::live()).await, expected);
    assert_books_balance(&admin).await;
    let head = store::head_position(&admin).await.expect("head");
    for name in PROJECTIONS {
        assert_eq!(
            store::checkpoint(&admin, name).await.expect("checkpoint"),
            head
        );
    }
    for (id, before) in ids.iter().zip(&details) {
        let a = get(&second, &format!("/api/v1/payments/{id}")).await;
        assert_eq!(data(&a), before, "detail of {id} after the rebuild");
        assert!(a.position.is_some_and(|p| p >= head));
    }
    admin.close().await;
    second.stop().await;
}

// ---------------------------------------------------------------------------------------
// Cache
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_detail_and_list_are_never_older_than_the_projection() {
    let app = TestApp::spawn_with(Options {
        // The refund stays pending at the gateway until its notification confirms it, so
        // the confirmation happens at a moment this test chooses.
        faults: Faults {
            pending_refunds: AtomicU32::new(1),
            ..Faults::default()
        },
        ..no_nats()
    })
    .await;
    let id = app.paid_payment("50.00").await;
    let uuid: Uuid = id.parse().expect("uuid");
    let detail_path = format!("/api/v1/payments/{id}");
    let list_path = "/api/v1/payments?page=1&size=10";

    let d = get(&app, &detail_path).await;
    assert_eq!(data(&d)["refunded_amount"], "0.00");
    assert!(
        app.state.cache.detail(&uuid).is_some(),
        "the detail is cached"
    );
    let l = get(&app, list_path).await;
    assert_eq!(data(&l)["list"][0]["status"], "success");

    let requested = refund(&app, &id, "50.00").await;
    let refund_no = data(&requested)["refund_no"]
        .as_str()
        .expect("refund_no")
        .to_owned();
    let d = get(&app, &detail_path).await;
    assert_eq!(data(&d)["refunds"][0]["status"], "processing");
    assert_eq!(data(&d)["refunded_amount"], "0.00");
    assert!(app.state.cache.detail(&uuid).is_some(), "cached again");
    let _ = get(&app, list_path).await;

    let pool = app.pool().await;

    // The gateway confirms by notification.
    let confirm = notify(
        &app,
        "alipay",
        json!({
            "payment_no": data(&d)["payment_no"],
            "callback_no": format!("CB{}", Uuid::new_v4().simple()),
            "status": "success",
            "amount": "50.00",
            "gateway_trade_no": format!("T{}", Uuid::new_v4().simple()),
            "refund_no": refund_no,
        }),
    )
    .await;
    assert_eq!(data(&confirm)["status"], "success", "{}", confirm.body);
    let refunded_at: i64 = sqlx::query_scalar(
        "SELECT position FROM events WHERE stream_id = $1 AND event_type = 'refunded'",
    )
    .bind(uuid)
    .fetch_one(&pool)
    .await
    .expect("the refunded event");

    // No min_position: a plain read right after the confirmation must not be the cached one.
    let d = get(&app, &detail_path).await;
    assert!(
        d.position.is_some_and(|p| p >= refunded_at),
        "{:?}",
        d.position
    );
    assert_eq!(data(&d)["refunded_amount"], "50.00");
    assert_eq!(data(&d)["status"], "refunded");
    assert_eq!(data(&d)["refunds"][0]["status"], "success");
    assert!(data(&d)["refund_time"].is_string());
    let l = get(&app, list_path).await;
    assert_eq!(data(&l)["list"][0]["id"], id.as_str());
    assert_eq!(data(&l)["list"][0]["status"], "refunded");
    let s = app
        .client("client")
        .send("GET", &format!("/api/v1/payments/{id}/status"), None, &[])
        .await
        .expect("status");
    assert_eq!(data(&s)["status"], "refunded");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_racing_the_projector_never_cache_a_stale_detail() {
    let app = TestApp::spawn_with(no_nats()).await;
    let id = app.paid_payment("100.00").await;
    let detail_path = format!("/api/v1/payments/{id}");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));

    // Readers keep missing and filling the cache while refunds are projected.
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let client = app.client("auditor");
            let path = detail_path.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut reads = 0_u32;
                while !stop.load(Ordering::Acquire) && reads < 10_000 {
                    let a = client.send("GET", &path, None, &[]).await.expect("read");
                    assert_eq!(a.status, 200);
                    reads += 1;
                }
            })
        })
        .collect();
    for _ in 0..10 {
        let r = refund(&app, &id, "1.00").await;
        let position = data(&r)["position"].as_i64().expect("position");
        // Read-your-writes: the answer to a read after the POST includes the refund.
        let d = get(&app, &detail_path).await;
        assert!(d.position.is_some_and(|p| p >= position));
        let ids: Vec<&Value> = data(&d)["refunds"]
            .as_array()
            .expect("refunds")
            .iter()
            .map(|r| &r["id"])
            .collect();
        assert!(ids.contains(&&data(&r)["id"]), "refund missing from {d:?}");
    }
    refunds_settled(&app).await;
    stop.store(true, Ordering::Release);
    for r in readers {
        tokio::time::timeout(WAIT_MAX, r)
            .await
            .expect("readers stop")
            .expect("reader did not panic");
    }
    // After everything was projected, the (possibly cached) detail equals the table.
    let d = get(&app, &detail_path).await;
    assert_eq!(data(&d)["refunded_amount"], "10.00");
    let statuses: Vec<&Value> = data(&d)["refunds"]
        .as_array()
        .expect("refunds")
        .iter()
        .map(|r| &r["status"])
        .collect();
    assert_eq!(statuses.len(), 10);
    assert!(statuses.iter().all(|s| *s == "success"), "{statuses:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_projector_lost_the_race_never_serves_a_stale_cached_detail() {
    // Two full nodes on one database (README: "every node sharing the database"). Node B
    // takes the writes and projects them; node A's projector fails every batch it tries, so
    // A only ever sees the checkpoints move past it, exactly as when B simply wins the race
    // to project (B is woken by its own writer, A only by its idle poll).
    let b = TestApp::spawn().await;
    let a = TestApp::spawn_on(b.db.clone(), Options::default()).await;
    a.projector
        .faults
        .fail_batches
        .store(u32::MAX, Ordering::Release);

    let id = b.paid_payment("60.00").await;
    let uuid: Uuid = id.parse().expect("uuid");
    b.settle().await;
    let p1 = store::head_position(&b.pool().await).await.expect("head");
    let d = get(&a, &format!("/api/v1/payments/{id}?min_position={p1}")).await;
    assert!(d.position.is_some_and(|p| p >= p1));
    assert_eq!(data(&d)["status"], "success");
    assert_eq!(data(&d)["refunds"], json!([]));
    assert!(a.state.cache.detail(&uuid).is_some(), "A cached the detail");
    let l = get(
        &a,
        &format!("/api/v1/payments?page=1&size=10&min_position={p1}"),
    )
    .await;
    assert_eq!(data(&l)["list"][0]["status"], "success");

    // A refund through B; B's answer carries the position that includes it.
    let r = refund(&b, &id, "60.00").await;
    let p2 = data(&r)["position"].as_i64().expect("position");
    let refund_id = data(&r)["id"].clone();

    // A read on A that asks for that position must include the refund: the answer claims
    // X-Ledger-Position >= p2, so a cached detail from before p2 must not be served.
    let d = get(&a, &format!("/api/v1/payments/{id}?min_position={p2}")).await;
    assert!(d.position.is_some_and(|p| p >= p2), "{:?}", d.position);
    let refunds: Vec<&Value> = data(&d)["refunds"]
        .as_array()
        .expect("refunds")
        .iter()
        .map(|r| &r["id"])
        .collect();
    assert_eq!(
        refunds,
        vec![&refund_id],
        "node A served a detail older than the position it claims (X-Ledger-Position {:?} >= {p2}): {}",
        d.position,
        data(&d)
    );
    a.stop().await;
    b.stop().await;
}

/// (A unit test of `ledger_projections::read` once; here so that crate builds no test target
/// for one test.)
#[test]
fn a_cursor_round_trips_and_far_times_are_clamped_to_years_1_to_9999() {
    use ledger::projections::read::Cursor;
    let c = Cursor {
        created_at: chrono::DateTime::from_timestamp_micros(1_796_030_532_123_456).unwrap(),
        id: uuid::Uuid::from_u128(7),
    };
    assert_eq!(Cursor::decode(&c.encode()), Some(c));
    let id = "7efdc5da85bf6e5bb96a0ed8d3100abd";
    let early = Cursor::decode(&format!("-600095923697145994_{id}")).unwrap();
    assert_eq!(early.created_at.to_rfc3339(), "0001-01-01T00:00:00+00:00");
    let late = Cursor::decode(&format!("999999999999999999_{id}")).unwrap();
    assert_eq!(late.created_at.timestamp_micros(), 253_402_300_799_999_999);
    assert_eq!(Cursor::decode("12_not-an-id"), None);
    assert_eq!(Cursor::decode(&format!("1e5_{id}")), None);
}
