//! The replay phase: fills a fresh database with realistic payment streams through the real
//! append path (`store::Writer`, hash chain included), then times `ledger::replay::replay`
//! rebuilding every read table from them. Optionally breaks the rebuild's time down by stage.

use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use serde::Serialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use ledger_domain::payment::Notification;
use ledger_domain::{decide, evolve, Command, Currency, Money, NotifyOutcome, PaymentMethod};
use ledger_projections::{self as projections, Decoded, ProjectionContext, Tables};
use ledger_store::{
    self as store, event::truncate_to_micros, AppendRequest, NewEvent, Writer, WriterConfig,
};

/// Events per generated payment: created, callback_received, paid, refund_requested, refunded.
pub const EVENTS_PER_FLOW: u64 = 5;
/// Appends in flight while generating: enough to fill the writer's batches.
const GENERATE_IN_FLIGHT: usize = 2048;

/// The whole life of one payment, decided by the real domain: create, pay, refund 30 %,
/// confirm the refund.
pub fn flow(i: u64) -> anyhow::Result<AppendRequest> {
    let id = Uuid::now_v7();
    let payment_no = format!("P{}", id.simple()).to_uppercase();
    let currency = Currency::from_code("CNY").expect("CNY is ISO 4217");
    let refund_id = Uuid::now_v7();
    let commands = [
        Command::Create {
            payment_id: id,
            payment_url: format!("http://127.0.0.1:8080/sandbox/pay/{payment_no}"),
            payment_no,
            order_id: format!("REPLAY-{i}"),
            user_id: format!("replay-user-{}", i % 10_000),
            amount: Money::parse("100.00", currency)?,
            method: PaymentMethod::Alipay,
            return_url: None,
            merchant: None,
            payer: None,
        },
        Command::Notify(Notification {
            callback_id: Uuid::now_v7(),
            callback_no: format!("CB-REPLAY-{i}"),
            gateway: PaymentMethod::Alipay,
            outcome: NotifyOutcome::Success,
            amount: "100.00".parse()?,
            gateway_trade_no: format!("T-REPLAY-{i}"),
            refund_no: None,
            paid_at: truncate_to_micros(Utc::now()),
        }),
        Command::RequestRefund {
            refund_id,
            refund_no: format!("R{}", refund_id.simple()).to_uppercase(),
            amount: "30.00".parse()?,
            reason: "bench refund".into(),
        },
        Command::ConfirmRefund { refund_id },
    ];
    let metadata = serde_json::json!({ "actor_key_id": "bench-replay", "request_id": Uuid::now_v7().to_string() });
    let mut state = None;
    let mut events = Vec::new();
    for command in &commands {
        for event in decide(&state, command)? {
            state = evolve(state, &event);
            events.push(NewEvent {
                event_id: Uuid::now_v7(),
                event_type: event.event_type(),
                data: event.data(),
                metadata: metadata.clone(),
            });
        }
    }
    Ok(AppendRequest::events(id, 0, events))
}

/// Appends at least `events` events (whole flows); returns how many and how long it took.
pub async fn generate(pool: &PgPool, events: u64) -> anyhow::Result<(i64, Duration)> {
    let started = Instant::now();
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let head = store::head_position(pool).await?;
    let writer = Writer::spawn(
        pool.clone(),
        WriterConfig::default(),
        head,
        cancel.clone(),
        &tracker,
    );
    let flows = events.div_ceil(EVENTS_PER_FLOW);
    let mut results = futures::stream::iter(0..flows)
        .map(|i| {
            let writer = writer.clone();
            async move { writer.append(flow(i)?).await.map_err(anyhow::Error::from) }
        })
        .buffer_unordered(GENERATE_IN_FLIGHT);
    let mut outcome = Ok(());
    while let Some(r) = results.next().await {
        if let Err(e) = r {
            outcome = Err(e);
            break;
        }
    }
    drop(results);
    drop(writer);
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
    outcome?;
    Ok((store::head_position(pool).await?, started.elapsed()))
}

/// Where a rebuild's time goes, stage by stage, over the same batches `replay` uses.
#[derive(Debug, Default, Serialize)]
pub struct Breakdown {
    pub events: i64,
    /// `SELECT … FROM events` including jsonb → `serde_json::Value`.
    pub read_s: f64,
    /// `serde_json::Value` → `PaymentEvent`.
    pub decode_s: f64,
    /// Reading the current rows of the touched payments and folding the batch onto them.
    pub fold_s: f64,
    pub payments_s: f64,
    pub callbacks_s: f64,
    pub refunds_s: f64,
    pub ledger_entries_s: f64,
    pub commit_s: f64,
    /// Building the secondary indexes after the load (0 when they existed from the start).
    pub index_s: f64,
}

impl Breakdown {
    pub fn total_s(&self) -> f64 {
        self.read_s
            + self.decode_s
            + self.fold_s
            + self.payments_s
            + self.callbacks_s
            + self.refunds_s
            + self.ledger_entries_s
            + self.commit_s
            + self.index_s
    }

    pub fn events_per_s(&self) -> f64 {
        self.events as f64 / self.total_s().max(1e-9)
    }
}

/// Rebuilds into scratch tables stage by stage, timing each. Uses the same public pieces as
/// `replay` (read_range, decode, each projection's apply) in the same batch size. With
/// `indexes_after`, the scratch tables start with their primary keys only (what the
/// projections' `ON CONFLICT` needs) and get their other indexes after the load — the
/// classic bulk-load order, measured here as a candidate for `ledger replay`.
pub async fn breakdown(
    pool: &PgPool,
    ctx: &ProjectionContext,
    upto: i64,
    indexes_after: bool,
) -> anyhow::Result<Breakdown> {
    let live = Tables::live();
    let scratch = Tables::with_suffix("_bench_breakdown");
    let mut deferred: Vec<String> = Vec::new();
    for (l, f) in live.all().iter().zip(scratch.all()) {
        sqlx::query(&format!("DROP TABLE IF EXISTS {f}"))
            .execute(pool)
            .await?;
        if !indexes_after {
            sqlx::query(&format!(
                "CREATE UNLOGGED TABLE {f} (LIKE {l} INCLUDING ALL)"
            ))
            .execute(pool)
            .await?;
            continue;
        }
        sqlx::query(&format!(
            "CREATE UNLOGGED TABLE {f} (LIKE {l} INCLUDING DEFAULTS)"
        ))
        .execute(pool)
        .await?;
        let pk: String = sqlx::query_scalar(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = $1::regclass AND contype = 'p'",
        )
        .bind(*l)
        .fetch_one(pool)
        .await?;
        sqlx::query(&format!("ALTER TABLE {f} ADD {pk}"))
            .execute(pool)
            .await?;
        let indexes: Vec<(String, String)> = sqlx::query_as(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.tablename = $1 \
             AND i.indexname NOT IN (SELECT conname FROM pg_constraint WHERE conrelid = $1::regclass AND contype = 'p')",
        )
        .bind(*l)
        .fetch_all(pool)
        .await?;
        for (name, def) in indexes {
            deferred.push(
                def.replacen(&format!("INDEX {name} "), &format!("INDEX {name}_bd "), 1)
                    .replacen(&format!(" ON public.{l} "), &format!(" ON public.{f} "), 1)
                    .replacen(&format!(" ON {l} "), &format!(" ON {f} "), 1),
            );
        }
    }
    let mut b = Breakdown::default();
    let mut at = 0;
    while at < upto {
        let end = (at + ledger_projections::replay::REPLAY_BATCH).min(upto);
        let t = Instant::now();
        let events = store::read_range(pool, at, end).await?;
        b.read_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let decoded: Vec<Decoded> = events
            .iter()
            .map(|e| store::decode(e).map(|event| Decoded { stored: e, event }))
            .collect::<Result<_, _>>()?;
        b.decode_s += t.elapsed().as_secs_f64();
        let mut tx = pool.begin().await?;
        let t = Instant::now();
        let changes = projections::fold_batch(&mut tx, ctx, &decoded, &scratch).await?;
        b.fold_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        projections::payments::upsert(&mut tx, &scratch.payments, changes.payments.iter()).await?;
        b.payments_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let callbacks: Vec<_> = changes.callbacks.iter().map(|(p, c)| (*p, c)).collect();
        projections::callbacks::insert(&mut tx, &scratch.callbacks, &callbacks).await?;
        b.callbacks_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        projections::refunds::upsert(&mut tx, &scratch.refunds, &changes.refunds).await?;
        b.refunds_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        projections::ledger_entries::insert(&mut tx, &scratch.ledger_entries, &changes.entries)
            .await?;
        b.ledger_entries_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        tx.commit().await?;
        b.commit_s += t.elapsed().as_secs_f64();
        b.events += events.len() as i64;
        at = end;
    }
    let t = Instant::now();
    for ddl in &deferred {
        sqlx::query(ddl).execute(pool).await?;
    }
    b.index_s = t.elapsed().as_secs_f64();
    for f in scratch.all() {
        sqlx::query(&format!("DROP TABLE IF EXISTS {f}"))
            .execute(pool)
            .await?;
    }
    Ok(b)
}
