//! Reconciliation against the real service: a settlement file of a few thousand lines with
//! every kind of difference, read by the library and by the `ledger reconcile` binary; and
//! `ledger demo` end to end.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::common::TestApp;
use chrono::Utc;
use futures::StreamExt;
use ledger::demo::Demo;
use ledger::domain::PaymentMethod;
use ledger::reconcile::{self, FileRow, Format, Kind};
use rust_decimal::Decimal;
use serde_json::{json, Value};

const PAYMENTS: usize = 2_000;

fn temp_file(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ledger-recon-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

struct Made {
    payment_id: String,
    payment_no: String,
    amount: Decimal,
    /// "paid", "failed" or "pending".
    state: &'static str,
}

async fn make(app: &TestApp, i: usize) -> Made {
    let amount = Decimal::new(100 + (i as i64 * 7919) % 99_900, 2);
    let (payment_id, payment_no) = app
        .create_payment(&amount.to_string(), "CNY", "alipay", &format!("RECON-{i}"))
        .await;
    let state = match i % 100 {
        0 => "pending",
        1 => "failed",
        _ => "paid",
    };
    if state != "pending" {
        let body = json!({
            "payment_no": payment_no,
            "callback_no": format!("CB-{i}"),
            "status": if state == "paid" { "success" } else { "failed" },
            "amount": amount.to_string(),
            "gateway_trade_no": format!("T-{i}"),
        });
        let a = app
            .gateway("alipay")
            .send(
                "POST",
                "/api/v1/gateways/alipay/notify",
                Some(&body.to_string()),
                &[],
            )
            .await
            .expect("notify");
        assert_eq!(a.status, 200, "{}", a.body);
    }
    Made {
        payment_id,
        payment_no,
        amount,
        state,
    }
}

fn line(payment_no: &str, reference: &str, kind: Kind, amount: Decimal) -> FileRow {
    FileRow {
        line: 0,
        payment_no: payment_no.to_owned(),
        gateway_trade_no: reference.to_owned(),
        kind,
        amount,
        fee: (amount * Decimal::new(6, 3)).round_dp(2),
        settled_at: Utc::now(),
    }
}

/// Waits until the refund process settled every refund (none processing).
async fn refunds_settled(app: &TestApp) {
    let pool = app.pool().await;
    for _ in 0..600 {
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM payment_refunds WHERE status = 0")
            .fetch_one(&pool)
            .await
            .expect("count");
        if n == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("refunds still processing after 60 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settlement_file_of_thousands_of_lines_reports_every_kind_of_difference() {
    let app = TestApp::spawn().await;
    let made: Vec<Made> = futures::stream::iter(0..PAYMENTS)
        .map(|i| make(&app, i))
        .buffer_unordered(24)
        .collect()
        .await;
    // Refund 30 % of every fifth paid payment.
    let mut refund_of: HashMap<String, (String, Decimal)> = HashMap::new();
    let paid: Vec<&Made> = made.iter().filter(|m| m.state == "paid").collect();
    for m in paid.iter().step_by(5) {
        let amount = (m.amount * Decimal::new(3, 1)).round_dp(2);
        let a = app
            .client("operator")
            .send(
                "POST",
                &format!("/api/v1/payments/{}/refund", m.payment_id),
                Some(&json!({ "amount": amount.to_string(), "reason": "r" }).to_string()),
                &[],
            )
            .await
            .expect("refund");
        assert_eq!(a.status, 201, "{}", a.body);
        let refund_no = a.body["data"]["refund_no"].as_str().unwrap().to_owned();
        refund_of.insert(m.payment_no.clone(), (refund_no, amount));
    }
    refunds_settled(&app).await;
    app.settle().await;

    // The gateway's file: everything settled, then the differences.
    let mut file: Vec<FileRow> = Vec::new();
    let mut expected_missing_in_file = 0;
    let mut expected_amount = 0;
    for (k, m) in paid.iter().enumerate() {
        if k % 97 == 3 {
            expected_missing_in_file += 1; // the gateway forgot it
            continue;
        }
        let mut amount = m.amount;
        if k % 89 == 5 {
            amount += Decimal::new(1, 2); // one fen more
            expected_amount += 1;
        }
        file.push(line(
            &m.payment_no,
            &format!("T-{k}"),
            Kind::Payment,
            amount,
        ));
    }
    let mut refunds: Vec<(&String, &(String, Decimal))> = refund_of.iter().collect();
    refunds.sort();
    for (k, (payment_no, (refund_no, amount))) in refunds.iter().enumerate() {
        match k % 50 {
            7 => expected_missing_in_file += 1,
            9 => {
                file.push(line(
                    payment_no,
                    refund_no,
                    Kind::Refund,
                    *amount - Decimal::new(1, 2),
                ));
                expected_amount += 1;
            }
            _ => file.push(line(payment_no, refund_no, Kind::Refund, *amount)),
        }
    }
    // The gateway says it settled what the ledger holds as failed or pending.
    let unsettled: Vec<&Made> = made.iter().filter(|m| m.state != "paid").collect();
    for m in &unsettled {
        file.push(line(&m.payment_no, "T-x", Kind::Payment, m.amount));
    }
    // Lines the ledger never saw: a payment, and a refund of a real payment.
    for i in 0..5 {
        file.push(line(
            &format!("PNOPE{i}"),
            "T-nope",
            Kind::Payment,
            Decimal::ONE,
        ));
    }
    file.push(line(
        &paid[0].payment_no,
        "RNOPE",
        Kind::Refund,
        Decimal::ONE,
    ));
    // The same settlement twice.
    let dup = file[10].clone();
    file.push(dup);
    file.push(file[20].clone());
    assert!(
        file.len() > PAYMENTS,
        "a file of a few thousand lines: {}",
        file.len()
    );

    let path = temp_file("settlement.csv");
    reconcile::write_file(&path, &file).expect("write the file");
    let pool = app.pool().await;
    let mut out = Vec::new();
    let status = reconcile::run(&pool, &path, 100_000, Format::Json, None, None, &mut out)
        .await
        .expect("reconcile");
    assert_eq!(status, reconcile::EXIT_MISMATCH);
    let report: Value = serde_json::from_slice(&out).expect("json report");
    let counts = &report["counts"];
    let problems = expected_missing_in_file + expected_amount + unsettled.len() + 6 + 2;
    assert_eq!(
        counts["missing_in_file"], expected_missing_in_file,
        "{counts}"
    );
    assert_eq!(counts["amount_mismatch"], expected_amount, "{counts}");
    assert_eq!(counts["status_mismatch"], unsettled.len(), "{counts}");
    assert_eq!(counts["missing_in_ledger"], 6, "{counts}");
    assert_eq!(counts["duplicate_in_file"], 2, "{counts}");
    assert_eq!(
        counts["matched"],
        file.len() - (problems - expected_missing_in_file),
        "{counts}"
    );
    assert_eq!(report["problems"].as_array().unwrap().len(), problems);
    assert_eq!(report["ok"], false);
    let status_mismatched: Vec<&str> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["category"] == "status_mismatch")
        .map(|p| p["ledger_status"].as_str().unwrap())
        .collect();
    assert!(status_mismatched
        .iter()
        .all(|s| *s == "pending" || *s == "failed"));

    // The binary: csv output (a header and one line per problem), exit status 1.
    let bin = crate::common::ledger_bin();
    let run = |args: &[&str]| {
        Command::new(bin)
            .args(args)
            .env("DATABASE_URL", &app.db.url)
            .env("NATS_URL", "none")
            .output()
            .expect("run ledger reconcile")
    };
    let csv_out = run(&[
        "reconcile",
        "--settlement",
        path.to_str().unwrap(),
        "--format",
        "csv",
    ]);
    assert_eq!(csv_out.status.code(), Some(1), "{csv_out:?}");
    let text = String::from_utf8(csv_out.stdout).unwrap();
    assert_eq!(text.lines().count(), problems + 1, "{text}");
    assert!(text.starts_with("category,type,line,payment_no"));

    // A file with exactly what the ledger settled matches: exit 0.
    let mut clean: Vec<FileRow> = paid
        .iter()
        .map(|m| line(&m.payment_no, "T", Kind::Payment, m.amount))
        .collect();
    clean.extend(
        refunds
            .iter()
            .map(|(p, (r, a))| line(p, r, Kind::Refund, *a)),
    );
    let clean_path = temp_file("clean.csv");
    reconcile::write_file(&clean_path, &clean).unwrap();
    let table = run(&["reconcile", "--settlement", clean_path.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert_eq!(table.status.code(), Some(0), "{text}");
    assert!(text.contains("everything matches"), "{text}");

    // A malformed file: exit 2 and the line named.
    let bad_path = temp_file("bad.csv");
    std::fs::write(
        &bad_path,
        "payment_no,gateway_trade_no,type,amount,fee,settled_at\nP1,T1,payment,12.5x,0,2026-11-01T00:00:00Z\n",
    )
    .unwrap();
    let bad = run(&["reconcile", "--settlement", bad_path.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("line 2"),
        "{bad:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_drives_every_path_and_then_verifies_and_reconciles_cleanly() {
    let app = TestApp::spawn().await;
    let settlement = temp_file("demo.csv");
    let demo = Demo {
        client: app.client("admin"),
        gateways: PaymentMethod::ALL
            .iter()
            .map(|m| (*m, app.gateway(m.name())))
            .collect(),
        pool: app.pool().await,
        payments: 60,
        settlement: settlement.clone(),
        progress: false,
    };
    let mut out = Vec::new();
    let summary = ledger::demo::run(&demo, &mut out).await.expect("demo runs");
    let text = String::from_utf8_lossy(&out);
    assert!(summary.errors.is_empty(), "{:?}\n{text}", summary.errors);
    assert_eq!(summary.created, 60);
    assert_eq!(summary.paid, 48, "{text}");
    assert_eq!(summary.failed, 6);
    assert_eq!(summary.pending, 6);
    assert_eq!(summary.duplicates, 6);
    assert_eq!(summary.refunds, 12);
    assert!(summary.chain_ok, "{text}");
    assert!(summary.totals_match, "{text}");
    assert!(summary.reconciled, "{text}");
    assert_eq!(summary.exit_code(), 0);
    assert!(text.contains("everything matches"), "{text}");
    // The settlement file holds every paid payment and every confirmed refund.
    let rows = reconcile::read_file(&settlement, 1_000_000).expect("the demo's file parses");
    assert_eq!(rows.iter().filter(|r| r.kind == Kind::Payment).count(), 48);
    assert_eq!(rows.iter().filter(|r| r.kind == Kind::Refund).count(), 12);
    // The log agrees: six failed, six pending, twelve refunds, duplicates appended nothing.
    let pool = app.pool().await;
    let (dupes,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM (SELECT data->>'callback_no' FROM events \
         WHERE event_type = 'callback_received' GROUP BY 1 HAVING count(*) > 1) d",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(dupes, 0);
    app.stop().await;
}
