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

use crate::{apply_batch, Decoded, ProjectionContext, Tables, PROJECTIONS};
use ledger_store::decode;
use ledger_store::{self as store, StoreError};

/// Checkpoint row whose position counts completed replays (nodes clear caches on change).
pub const REPLAY_GENERATION: &str = "replay:generation";
/// Events folded per rebuild transaction.
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
    let live = Tables::live();
    let fresh = Tables::with_suffix(SUFFIX);
    let mut conn = pool.acquire().await?;
    for (l, f) in live.all().iter().zip(fresh.all()) {
        sqlx::query(&format!("DROP TABLE IF EXISTS {f}"))
            .execute(&mut *conn)
            .await?;
        sqlx::query(&format!(
            "CREATE UNLOGGED TABLE {f} (LIKE {l} INCLUDING ALL)"
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
    let mut at = rebuild_range(pool, ctx, &fresh, 0, head, &bar).await?;
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
    // Bring the rebuild to exactly what the live tables include, so the comparison is fair.
    if live_checkpoint > at {
        let events = store::read_range(pool, at, live_checkpoint).await?;
        apply_events(&mut tx, ctx, &fresh, &events).await?;
        at = live_checkpoint;
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

async fn rebuild_range(
    pool: &PgPool,
    ctx: &ProjectionContext,
    tables: &Tables,
    from: i64,
    upto: i64,
    bar: &ProgressBar,
) -> Result<i64, StoreError> {
    let mut at = from;
    while at < upto {
        let end = (at + REPLAY_BATCH).min(upto);
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
