//! `ledger replay`: rebuilds every read table from the log into fresh tables while the
//! service keeps serving, compares them row by row with the live tables, and swaps the
//! rebuilt contents in atomically (or, with `--check`, only reports).
//!
//! The swap runs in one transaction that first locks the live tables against the projector,
//! brings the rebuilt tables up to the live checkpoint, compares, and replaces the live
//! contents; readers see the old tables until the commit and the new ones after it. It bumps
//! the `replay` generation so that every node drops its read cache.

use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use futures::TryStreamExt;

use crate::copy::BinaryCopy;
use crate::payments::{self, PaymentRow};
use crate::refunds::{self, RefundRow};
use crate::{
    apply_batch, callbacks, ledger_entries, step, Decoded, ProjectionContext, Tables, PROJECTIONS,
};
use ledger_store::decode;
use ledger_store::{self as store, StoreError};
use ledger_store::{keyring, sealing, StoredEvent};

/// Checkpoint row whose position counts completed replays (nodes clear caches on change).
pub const REPLAY_GENERATION: &str = "replay:generation";
/// Events read per catch-up step unless configured (`replay_with`;
/// LEDGER_REPLAY_CATCHUP_BATCH_MAX).
pub const REPLAY_BATCH: i64 = 5000;
const SUFFIX: &str = "_rebuild";

#[derive(Debug, Clone, Serialize)]
pub struct TableDrift {
    pub table: String,
    pub rebuilt_rows: i64,
    pub live_rows: i64,
    /// Rows present in one table and not identical in the other.
    pub differing_rows: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    pub events: i64,
    pub seconds: f64,
    pub events_per_second: f64,
    pub drift: Vec<TableDrift>,
    pub swapped: bool,
}

impl ReplayReport {
    pub fn has_drift(&self) -> bool {
        self.drift.iter().any(|d| d.differing_rows > 0)
    }
}

/// Rebuilds and compares; swaps in unless `check_only`.
pub async fn replay(
    pool: &PgPool,
    ctx: &ProjectionContext,
    check_only: bool,
    show_progress: bool,
) -> Result<ReplayReport, StoreError> {
    replay_with(pool, ctx, check_only, show_progress, REPLAY_BATCH).await
}

/// `replay`, catching up what the projector applied meanwhile `batch_max` events at a time
/// (the part under the tables' lock reads that many per step).
pub async fn replay_with(
    pool: &PgPool,
    ctx: &ProjectionContext,
    check_only: bool,
    show_progress: bool,
    batch_max: i64,
) -> Result<ReplayReport, StoreError> {
    let batch_max = batch_max.max(1);
    let live = Tables::live();
    let fresh = Tables::with_suffix(SUFFIX);
    // Fresh tables without their indexes: rows go in by COPY, indexes are built once after.
    let mut conn = pool.acquire().await?;
    for (l, f) in live.all().iter().zip(fresh.all()) {
        sqlx::query(&format!("DROP TABLE IF EXISTS {f}"))
            .execute(&mut *conn)
            .await?;
        sqlx::query(&format!(
            "CREATE UNLOGGED TABLE {f} (LIKE {l} INCLUDING DEFAULTS)"
        ))
        .execute(&mut *conn)
        .await?;
    }
    drop(conn);

    let head = store::head_position(pool).await?;
    let bar = if show_progress {
        ProgressBar::new(head.max(0) as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "replay {bar:40.cyan/blue} {pos}/{len} events {per_sec} eta {eta}",
        )
        .expect("the template is valid"),
    );
    let started = Instant::now();
    bulk_rebuild(pool, ctx, &fresh, head, &bar).await?;
    for (l, f) in live.all().iter().zip(fresh.all()) {
        copy_indexes(pool, l, f).await?;
    }
    let mut at = head;
    // Catch up with what the projector applied meanwhile before taking the lock, so that the
    // part done under the lock (which stops the projector) stays small.
    for _ in 0..CATCH_UP_ROUNDS_MAX {
        let live_now = live_checkpoint(pool).await?;
        if live_now - at <= batch_max {
            break;
        }
        at = rebuild_range(pool, ctx, &fresh, (at, live_now), batch_max, &bar).await?;
    }
    bar.finish_and_clear();

    let mut tx = pool.begin().await?;
    // Stop the projector (it writes these tables) until we commit.
    sqlx::query(&format!(
        "LOCK TABLE {} IN EXCLUSIVE MODE",
        live.all().join(", ")
    ))
    .execute(&mut *tx)
    .await?;
    let live_checkpoint: i64 = sqlx::query_scalar(
        "SELECT COALESCE(MIN(position), 0) FROM checkpoints WHERE name = ANY($1)",
    )
    .bind(PROJECTIONS.as_slice())
    .fetch_one(&mut *tx)
    .await?;
    // Bring the rebuild to exactly what the live tables include, so the comparison is fair;
    // in bounded batches, so memory stays bounded however far the projector got.
    while live_checkpoint > at {
        let upto = (at + batch_max).min(live_checkpoint);
        let events = store::read_range(pool, at, upto).await?;
        apply_events(&mut tx, ctx, &fresh, &events).await?;
        at = upto;
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut drift = Vec::new();
    for (l, f) in live.all().iter().zip(fresh.all()) {
        drift.push(compare(&mut tx, l, f).await?);
    }
    let swapped = !check_only && live_checkpoint <= at;
    if swapped {
        for (l, f) in live.all().iter().zip(fresh.all()) {
            sqlx::query(&format!("DELETE FROM {l}"))
                .execute(&mut *tx)
                .await?;
            sqlx::query(&format!("INSERT INTO {l} SELECT * FROM {f}"))
                .execute(&mut *tx)
                .await?;
        }
        for name in PROJECTIONS {
            sqlx::query("INSERT INTO checkpoints (name, position) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position, updated_at = now()")
                .bind(name)
                .bind(at)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("INSERT INTO checkpoints (name, position) VALUES ($1, 1) ON CONFLICT (name) DO UPDATE SET position = checkpoints.position + 1, updated_at = now()")
            .bind(REPLAY_GENERATION)
            .execute(&mut *tx)
            .await?;
    }
    for f in fresh.all() {
        sqlx::query(&format!("DROP TABLE IF EXISTS {f}"))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(ReplayReport {
        events: at,
        seconds,
        events_per_second: if seconds > 0.0 {
            at as f64 / seconds
        } else {
            0.0
        },
        drift,
        swapped,
    })
}

/// Rounds of catching up before the lock: each is bounded by what the projector applied
/// during the previous one, so a few rounds converge unless writes outrun the rebuild.
const CATCH_UP_ROUNDS_MAX: usize = 5;

/// The lowest checkpoint of all projections: what every live read table includes.
async fn live_checkpoint(pool: &PgPool) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT COALESCE(MIN(position), 0) FROM checkpoints WHERE name = ANY($1)",
    )
    .bind(PROJECTIONS.as_slice())
    .fetch_one(pool)
    .await?)
}

/// Rebuilds every read table up to `head` in one pass: the log is read stream by stream
/// (version order), each payment folded in memory with the one fold (`step`), and its rows
/// sent by binary COPY, one connection per table. Memory holds one payment at a time. Takes
/// five connections of the pool at once (the reader and one per table).
async fn bulk_rebuild(
    pool: &PgPool,
    ctx: &ProjectionContext,
    tables: &Tables,
    head: i64,
    bar: &ProgressBar,
) -> Result<(), StoreError> {
    let keys = keyring::all_wrapped_keys(pool).await?;
    let mut reader = pool.acquire().await?;
    let (mut c1, mut c2, mut c3, mut c4) = (
        pool.acquire().await?,
        pool.acquire().await?,
        pool.acquire().await?,
        pool.acquire().await?,
    );
    let mut pay = BinaryCopy::start(&mut c1, &tables.payments, payments::COLUMNS).await?;
    let mut cbs = BinaryCopy::start(&mut c2, &tables.callbacks, callbacks::COLUMNS).await?;
    let mut refs = BinaryCopy::start(&mut c3, &tables.refunds, refunds::COLUMNS).await?;
    let mut ents =
        BinaryCopy::start(&mut c4, &tables.ledger_entries, ledger_entries::COLUMNS).await?;
    let mut events = store::by_stream(&mut reader, head);
    let mut stream: Vec<StoredEvent> = Vec::new();
    let mut done = 0u64;
    loop {
        let next = events.try_next().await?;
        let ends = match (&next, stream.first()) {
            (_, None) => false,
            (Some(e), Some(first)) => e.stream_id != first.stream_id,
            (None, Some(_)) => true,
        };
        if ends {
            let count = stream.len() as u64;
            let rows = fold_stream(ctx, &keys, &stream)?;
            write_rows(&rows, &mut pay, &mut cbs, &mut refs, &mut ents).await?;
            stream.clear();
            done += count;
            bar.set_position(done);
        }
        match next {
            Some(e) => stream.push(e),
            None => break,
        }
    }
    drop(events);
    pay.finish().await?;
    cbs.finish().await?;
    refs.finish().await?;
    ents.finish().await?;
    Ok(())
}

/// One payment's rows, from its whole stream.
struct StreamRows {
    payment: Option<PaymentRow>,
    refunds: Vec<RefundRow>,
    callbacks: Vec<(uuid::Uuid, ledger_domain::view::CallbackView)>,
    entries: Vec<ledger_entries::Entry>,
}

fn fold_stream(
    ctx: &ProjectionContext,
    keys: &std::collections::HashMap<String, Option<Vec<u8>>>,
    events: &[StoredEvent],
) -> Result<StreamRows, StoreError> {
    let mut entries = Vec::new();
    let mut view = None;
    for e in events {
        let d = Decoded {
            stored: e,
            event: decode(e)?,
        };
        view = step(view, &d, &mut entries);
    }
    let Some(view) = view else {
        return Ok(StreamRows {
            payment: None,
            refunds: Vec::new(),
            callbacks: Vec::new(),
            entries,
        });
    };
    let masked = match &view.payer {
        None => (None, None),
        Some(sealed) => {
            let user = &view.payment.user_id;
            let opened = keys
                .get(user)
                .and_then(|k| k.as_deref())
                .and_then(|w| sealing::unwrap_key(&ctx.master_key, user, w).ok())
                .and_then(|k| sealing::open(&k, &view.id().to_string(), sealed).ok());
            payments::mask(opened)
        }
    };
    Ok(StreamRows {
        payment: Some(PaymentRow::from_view(&view, &masked)),
        refunds: RefundRow::from_view(&view).collect(),
        callbacks: view
            .callbacks
            .iter()
            .map(|c| (view.id(), c.clone()))
            .collect(),
        entries,
    })
}

async fn write_rows(
    rows: &StreamRows,
    pay: &mut BinaryCopy<'_>,
    cbs: &mut BinaryCopy<'_>,
    refs: &mut BinaryCopy<'_>,
    ents: &mut BinaryCopy<'_>,
) -> Result<(), sqlx::Error> {
    if let Some(p) = &rows.payment {
        p.copy(pay)?;
    }
    for (payment_id, c) in &rows.callbacks {
        callbacks::copy(cbs, *payment_id, c)?;
    }
    for r in &rows.refunds {
        r.copy(refs)?;
    }
    for e in &rows.entries {
        e.copy(ents)?;
    }
    pay.flush_if_full().await?;
    cbs.flush_if_full().await?;
    refs.flush_if_full().await?;
    ents.flush_if_full().await
}

/// Gives `fresh` the primary key and every index of `live` (built once, after the load).
async fn copy_indexes(pool: &PgPool, live: &str, fresh: &str) -> Result<(), StoreError> {
    let pk: String = sqlx::query_scalar(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint \
         WHERE conrelid = $1::regclass AND contype = 'p'",
    )
    .bind(live)
    .fetch_one(pool)
    .await?;
    sqlx::query(&format!("ALTER TABLE {fresh} ADD {pk}"))
        .execute(pool)
        .await?;
    let indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.tablename = $1 \
         AND i.indexname NOT IN (SELECT conname FROM pg_constraint \
                                 WHERE conrelid = $1::regclass AND contype = 'p')",
    )
    .bind(live)
    .fetch_all(pool)
    .await?;
    for (name, def) in indexes {
        let ddl = def
            .replacen(
                &format!("INDEX {name} "),
                &format!("INDEX {name}_rebuild "),
                1,
            )
            .replacen(
                &format!(" ON public.{live} "),
                &format!(" ON public.{fresh} "),
                1,
            )
            .replacen(&format!(" ON {live} "), &format!(" ON {fresh} "), 1);
        sqlx::query(&ddl).execute(pool).await?;
    }
    Ok(())
}

async fn rebuild_range(
    pool: &PgPool,
    ctx: &ProjectionContext,
    tables: &Tables,
    (from, upto): (i64, i64),
    batch_max: i64,
    bar: &ProgressBar,
) -> Result<i64, StoreError> {
    let mut at = from;
    while at < upto {
        let end = (at + batch_max).min(upto);
        let events = store::read_range(pool, at, end).await?;
        let mut tx = pool.begin().await?;
        apply_events(&mut tx, ctx, tables, &events).await?;
        tx.commit().await?;
        at = end;
        bar.set_position(at as u64);
    }
    Ok(at)
}

async fn apply_events(
    conn: &mut PgConnection,
    ctx: &ProjectionContext,
    tables: &Tables,
    events: &[store::StoredEvent],
) -> Result<(), StoreError> {
    let decoded: Vec<Decoded> = events
        .iter()
        .map(|e| decode(e).map(|event| Decoded { stored: e, event }))
        .collect::<Result<_, _>>()?;
    apply_batch(conn, ctx, &decoded, tables).await?;
    Ok(())
}

async fn compare(
    conn: &mut PgConnection,
    live: &str,
    fresh: &str,
) -> Result<TableDrift, StoreError> {
    let (rebuilt_rows, live_rows, differing_rows): (i64, i64, i64) = sqlx::query_as(&format!(
        "SELECT (SELECT COUNT(*) FROM {fresh}), (SELECT COUNT(*) FROM {live}), \
         (SELECT COUNT(*) FROM ((SELECT * FROM {live} EXCEPT ALL SELECT * FROM {fresh}) \
          UNION ALL (SELECT * FROM {fresh} EXCEPT ALL SELECT * FROM {live})) d)"
    ))
    .fetch_one(conn)
    .await?;
    Ok(TableDrift {
        table: live.to_owned(),
        rebuilt_rows,
        live_rows,
        differing_rows,
    })
}
