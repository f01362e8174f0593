//! The projector commits without waiting for its fsync (`synchronous_commit = off`): the read
//! tables are derived, and their checkpoints commit in the same transaction, so a commit lost
//! in a database crash loses tables and checkpoints together and the batch is applied again
//! from the log. This test crashes a private PostgreSQL (an immediate stop: no shutdown
//! checkpoint) under load and checks the claim: every answered command is in the log, and the
//! read tables, once caught up, equal a rebuild from the log.

use std::sync::Arc;

use futures::future::join_all;
use uuid::Uuid;

use crate::common::postgres::PrivatePostgres;
use crate::common::{data, Options, TestApp, TestDb};
use ledger::projections::replay::replay;
use ledger::projections::ProjectionContext;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_tables_are_whole_after_a_database_crash_under_load() {
    let pg = PrivatePostgres::start().await;
    let name = format!("ledger_crash_{}", Uuid::new_v4().simple());
    // A database on the private server (TestDb's own clean-up targets the shared server,
    // where this name does not exist; the private server's directory is removed instead).
    let db = Arc::new(TestDb {
        url: pg.url(&name),
        name,
    });
    let options = || Options {
        nats_url: None,
        ..Options::default()
    };
    let app = TestApp::spawn_on(db.clone(), options()).await;
    let mut answered = Vec::new();
    for round in 0..3 {
        let creates = (0..12).map(|i| {
            let app = &app;
            async move {
                let order = format!("ORD-{round}-{i}-{}", Uuid::new_v4().simple());
                let (id, no) = app.create_payment("10.00", "CNY", "alipay", &order).await;
                let paid = app.pay("alipay", &no, "10.00").await;
                assert_eq!(paid.status, 200);
                id
            }
        });
        answered.extend(join_all(creates).await);
    }
    // Refunds in flight when the database goes down.
    let refunds = answered.iter().take(10).map(|id| {
        let client = app.client("operator");
        let id = id.clone();
        async move {
            client
                .send(
                    "POST",
                    &format!("/api/v1/payments/{id}/refund"),
                    Some(r#"{"amount":"4.00","reason":"crash test"}"#),
                    &[],
                )
                .await
                .ok()
                .filter(|a| a.status == 201)
                .map(|a| data(&a)["id"].as_str().unwrap_or_default().to_owned())
        }
    });
    let crash = async {
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        pg.crash();
    };
    let (accepted_refunds, ()) = tokio::join!(join_all(refunds), crash);
    let accepted_refunds: Vec<String> = accepted_refunds.into_iter().flatten().collect();
    app.stop().await;

    pg.launch().await;
    let app = TestApp::spawn_on(db.clone(), options()).await;
    app.settle().await;
    let pool = app.pool().await;
    // Nothing answered is lost: every payment and every accepted refund is in the log.
    for id in &answered {
        let events = ledger::store::read_stream(&pool, Uuid::parse_str(id).unwrap())
            .await
            .unwrap();
        assert!(events.len() >= 3, "payment {id} has its events: {events:?}");
    }
    let log = ledger::store::read_after(&pool, 0, 100_000).await.unwrap();
    for refund in &accepted_refunds {
        assert!(
            log.iter().any(|e| e.data["refund_id"] == refund.as_str()),
            "accepted refund {refund} is in the log"
        );
    }
    // The read tables equal a rebuild from the log: nothing lost, nothing applied twice.
    let ctx = ProjectionContext {
        master_key: app.state.settings.master_key.clone(),
    };
    let report = replay(&pool, &ctx, true, false).await.unwrap();
    assert!(
        !report.has_drift(),
        "drift after the crash: {:?}",
        report.drift
    );
    // The rebuild covered the whole log as read above; the refund driver may have appended
    // a confirmation since (a refund requested before the crash is executed after it).
    let log_after = ledger::store::read_after(&pool, 0, 100_000).await.unwrap();
    assert!(
        (log.len() as i64..=log_after.len() as i64).contains(&report.events),
        "the rebuild read {} events; the log had {} before and {} after",
        report.events,
        log.len(),
        log_after.len()
    );
    app.stop().await;
}
