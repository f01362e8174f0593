//! The log against an attacker with superuser rights: the immutability triggers are switched
//! off (`session_replication_role = replica`) and the log is edited, cut, forged, reordered or
//! stripped of a whole payment. Every attack must be detected and located by `verify_log`, by
//! `GET /api/v1/audit/verify`, and by `ledger verify --digest` against a digest signed before
//! the attack.

use std::process::Command;

use crate::common::{Options, TestApp};
use ledger::store::verify::verify_log;
use serde_json::Value;
use sqlx::{Connection, PgConnection};

type Row = (i64, uuid::Uuid, String);

/// A few payments with paid, refunded and failed histories; returns the events in order as
/// (position, stream_id, event_type).
async fn history(app: &TestApp) -> Vec<Row> {
    for (i, amount) in ["10.00", "20.00", "30.00"].iter().enumerate() {
        let id = app.paid_payment(amount).await;
        if i == 1 {
            let a = app
                .client("operator")
                .send(
                    "POST",
                    &format!("/api/v1/payments/{id}/refund"),
                    Some(r#"{"amount":"5.00","reason":"r"}"#),
                    &[],
                )
                .await
                .expect("refund");
            assert_eq!(a.status, 201, "{}", a.body);
        }
    }
    let (_, no) = app
        .create_payment("7.00", "CNY", "wechat", "ORD-T-FAIL")
        .await;
    let body = serde_json::json!({
        "payment_no": no, "callback_no": "CB-T-FAIL", "status": "failed",
        "amount": "7.00", "gateway_trade_no": "T-FAIL"
    });
    app.gateway("wechat")
        .send(
            "POST",
            "/api/v1/gateways/wechat/notify",
            Some(&body.to_string()),
            &[],
        )
        .await
        .expect("notify");
    // Let the refund settle so the log is quiet while we attack it.
    for _ in 0..200 {
        app.settle().await;
        let rows = events(app).await;
        if rows.iter().any(|e| e.2 == "refunded") {
            return rows;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the refund did not settle");
}

async fn events(app: &TestApp) -> Vec<Row> {
    sqlx::query_as("SELECT position, stream_id, event_type FROM events ORDER BY position")
        .fetch_all(&app.pool().await)
        .await
        .expect("read events")
}

/// Runs statements as a superuser with every trigger off, in one transaction.
async fn attack(app: &TestApp, statements: &[String]) {
    let mut conn = PgConnection::connect(&app.db.url).await.expect("connect");
    let mut tx = conn.begin().await.expect("begin");
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .expect("switch triggers off");
    for s in statements {
        sqlx::query(s).execute(&mut *tx).await.expect(s);
    }
    tx.commit().await.expect("commit");
}

/// Saves a signed digest of the log as an auditor would, outside the system.
async fn save_digest(app: &TestApp) -> std::path::PathBuf {
    let a = app
        .client("auditor")
        .send("GET", "/api/v1/audit/digest", None, &[])
        .await
        .expect("digest");
    assert_eq!(a.status, 200, "{}", a.body);
    let dir = std::env::temp_dir().join(format!("ledger-tamper-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("digest.json");
    std::fs::write(&path, a.body.to_string()).unwrap();
    path
}

/// `ledger verify --digest FILE` against the test database: (exit code, stdout).
fn verify_cli(app: &TestApp, digest: &std::path::Path) -> (Option<i32>, String) {
    let data_dir = digest.parent().unwrap().join("data");
    let out = Command::new(crate::common::ledger_bin())
        .args(["verify", "--digest", digest.to_str().unwrap()])
        .env("DATABASE_URL", &app.db.url)
        .env("NATS_URL", "none")
        .env("LEDGER_DATA_DIR", &data_dir)
        .output()
        .expect("run ledger verify");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Checks that all three verifiers see the attack and locate it at `position`.
async fn assert_detected(app: &TestApp, digest: &std::path::Path, position: i64, what: &str) {
    let report = verify_log(&app.pool().await, None, |_| {})
        .await
        .expect("verify");
    assert!(!report.ok, "{what}: verify_log passed a tampered log");
    assert_eq!(
        report.first_broken_position,
        Some(position),
        "{what}: {:?}",
        report.problem
    );

    let a = app
        .client("auditor")
        .send("GET", "/api/v1/audit/verify", None, &[])
        .await
        .expect("audit verify");
    assert_eq!(a.status, 200, "{}", a.body);
    let data: &Value = &a.body["data"];
    assert_eq!(data["ok"], false, "{what}: {data}");
    assert_eq!(data["first_broken_position"], position, "{what}: {data}");

    let (code, out) = verify_cli(app, digest);
    assert_ne!(
        code,
        Some(0),
        "{what}: ledger verify --digest passed:\n{out}"
    );
    assert!(
        out.contains(&format!("\"first_broken_position\": {position}")),
        "{what}: {out}"
    );

    // The service no longer signs a digest of a log that fails verification.
    let d = app
        .client("auditor")
        .send("GET", "/api/v1/audit/digest", None, &[])
        .await
        .expect("digest");
    assert_ne!(
        d.status, 200,
        "{what}: a tampered log was signed: {}",
        d.body
    );
}

async fn spawn() -> TestApp {
    TestApp::spawn_with(Options {
        nats_url: None,
        ..Default::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_log_verifies_and_extends_its_digest_even_when_its_json_is_rewritten() {
    let app = spawn().await;
    history(&app).await;
    let digest = save_digest(&app).await;
    // More history after the digest: the log still extends it unchanged.
    app.paid_payment("1.00").await;
    app.settle().await;
    let (code, out) = verify_cli(&app, &digest);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("extends the digest"), "{out}");
    // Re-serialising every event's JSON (as a dump and restore might) changes no hash: the
    // hashes cover the canonical bytes stored verbatim.
    attack(
        &app,
        &[
            "UPDATE events SET data = (data::text)::jsonb, metadata = (metadata::text)::jsonb"
                .to_owned(),
        ],
    )
    .await;
    let report = verify_log(&app.pool().await, None, |_| {}).await.unwrap();
    assert!(report.ok, "{report:?}");
    let (code, out) = verify_cli(&app, &digest);
    assert_eq!(code, Some(0), "{out}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_amount_is_detected_at_its_position() {
    let app = spawn().await;
    let log = history(&app).await;
    let digest = save_digest(&app).await;
    let target = log.iter().find(|e| e.2 == "created").unwrap().0;
    attack(
        &app,
        &[format!(
            "UPDATE events SET data = jsonb_set(data, '{{amount}}', '\"1.00\"') WHERE position = {target}"
        )],
    )
    .await;
    assert_detected(&app, &digest, target, "edited amount").await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_event_is_detected_at_its_position() {
    let app = spawn().await;
    let log = history(&app).await;
    let digest = save_digest(&app).await;
    let target = log.iter().find(|e| e.2 == "paid").unwrap().0;
    attack(
        &app,
        &[format!("DELETE FROM events WHERE position = {target}")],
    )
    .await;
    assert_detected(&app, &digest, target, "deleted event").await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_event_is_detected_at_its_position() {
    let app = spawn().await;
    let log = history(&app).await;
    let digest = save_digest(&app).await;
    // A copy of a refund, appended after the head as if it had happened again.
    let head = log.last().unwrap().0;
    let refunded = log.iter().find(|e| e.2 == "refunded").unwrap().0;
    let forged = head + 1;
    attack(
        &app,
        &[format!(
            "INSERT INTO events (position, event_id, stream_id, version, event_type, data, \
             metadata, recorded_at, prev_hash, hash, canonical) \
             SELECT {forged}, gen_random_uuid(), stream_id, version + 100, event_type, data, \
             metadata, recorded_at, hash, hash, canonical FROM events WHERE position = {refunded}"
        )],
    )
    .await;
    assert_detected(&app, &digest, forged, "forged event").await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_swapped_events_are_detected_at_the_first() {
    let app = spawn().await;
    let log = history(&app).await;
    let digest = save_digest(&app).await;
    let a = log.iter().find(|e| e.2 == "paid").unwrap().0;
    let b = log.iter().rev().find(|e| e.2 == "created").unwrap().0;
    let (a, b) = (a.min(b), a.max(b));
    attack(
        &app,
        &[
            format!("UPDATE events SET position = 1000000 WHERE position = {a}"),
            format!("UPDATE events SET position = {a} WHERE position = {b}"),
            format!("UPDATE events SET position = {b} WHERE position = 1000000"),
        ],
    )
    .await;
    assert_detected(&app, &digest, a, "swapped events").await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_payment_stream_is_detected_at_its_first_event() {
    let app = spawn().await;
    let log = history(&app).await;
    let digest = save_digest(&app).await;
    // The refunded payment's whole stream disappears.
    let stream = log.iter().find(|e| e.2 == "refunded").unwrap().1;
    let first = log.iter().find(|e| e.1 == stream).unwrap().0;
    attack(
        &app,
        &[format!("DELETE FROM events WHERE stream_id = '{stream}'")],
    )
    .await;
    assert_detected(&app, &digest, first, "deleted stream").await;
    app.stop().await;
}
