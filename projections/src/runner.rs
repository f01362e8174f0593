//! The projection runner: follows the log by position and applies bounded batches to every
//! read table in one transaction together with the checkpoints, then invalidates the cache
//! and announces the new position (what read-your-writes waits on).
//!
//! It reads the events from PostgreSQL, never from the bus: the bus only wakes it. So a fresh
//! start, a rebuild or a missed message all catch up the same way, and a crash mid-batch rolls
//! the whole batch back (tables and checkpoints together): no loss, no double count.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use super::cache::ReadCache;
use super::{apply_batch, Decoded, ProjectionContext, Tables, PROJECTIONS};
use ledger_store::decode;
use ledger_store::{self as store, StoreError};

/// How often the runner looks at the log when nothing woke it (writes from other nodes).
pub const IDLE_POLL: Duration = Duration::from_millis(200);

/// Test hook: makes the next N batches fail after writing to the tables and before commit,
/// as a crash mid-batch would.
#[derive(Default)]
pub struct Faults {
    pub fail_batches: AtomicU32,
}

#[derive(Clone)]
pub struct Projector {
    pool: PgPool,
    ctx: ProjectionContext,
    cache: ReadCache,
    applied: Arc<watch::Sender<i64>>,
    batch_max: i64,
    pub faults: Arc<Faults>,
    /// Last replay generation seen; a change means the tables were swapped under the cache.
    replay_generation: Arc<std::sync::atomic::AtomicI64>,
    /// Highest position whose streams this process's cache has dropped (-1: not started; the
    /// cache starts empty, so the first checkpoint seen needs nothing dropped).
    invalidated: Arc<std::sync::atomic::AtomicI64>,
}

/// A checkpoint jump wider than this clears the whole cache instead of naming streams.
const JUMP_CLEAR_ALL: i64 = 10_000;

impl Projector {
    pub fn new(pool: PgPool, ctx: ProjectionContext, cache: ReadCache, batch_max: i64) -> Self {
        let (applied, _) = watch::channel(0);
        Self {
            pool,
            ctx,
            cache,
            applied: Arc::new(applied),
            batch_max,
            faults: Arc::default(),
            replay_generation: Arc::new(std::sync::atomic::AtomicI64::new(-1)),
            invalidated: Arc::new(std::sync::atomic::AtomicI64::new(-1)),
        }
    }

    /// The position every read table includes (what `X-Ledger-Position` reports).
    pub fn applied(&self) -> watch::Receiver<i64> {
        self.applied.subscribe()
    }

    pub fn applied_sender(&self) -> Arc<watch::Sender<i64>> {
        self.applied.clone()
    }

    /// The lowest checkpoint of all projections.
    pub async fn checkpoint(&self) -> Result<i64, StoreError> {
        let mut names: Vec<&str> = PROJECTIONS.to_vec();
        names.push(crate::replay::REPLAY_GENERATION);
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT name, position FROM checkpoints WHERE name = ANY($1)")
                .bind(&names)
                .fetch_all(&self.pool)
                .await?;
        let generation = rows
            .iter()
            .find(|r| r.0 == crate::replay::REPLAY_GENERATION)
            .map(|r| r.1)
            .unwrap_or(0);
        if self.replay_generation.swap(generation, Ordering::AcqRel) != generation {
            self.cache.clear();
        }
        let positions: Vec<i64> = rows
            .iter()
            .filter(|r| PROJECTIONS.contains(&r.0.as_str()))
            .map(|r| r.1)
            .collect();
        if positions.len() < PROJECTIONS.len() {
            return Ok(0);
        }
        Ok(positions.into_iter().min().unwrap_or(0))
    }

    /// When another node moved the checkpoint past what this process applied, the streams in
    /// between may be cached here with older state: drop them before announcing the position,
    /// so a read that waited for it never sees the cache's stale copy.
    async fn forget_foreign(&self, from: i64) -> Result<(), StoreError> {
        let seen = self.invalidated.load(Ordering::Acquire);
        if seen < 0 {
            self.invalidated.fetch_max(from, Ordering::AcqRel);
            return Ok(());
        }
        if from <= seen {
            return Ok(());
        }
        if from - seen > JUMP_CLEAR_ALL {
            self.cache.clear();
        } else {
            let streams: Vec<(uuid::Uuid,)> = sqlx::query_as(
                "SELECT DISTINCT stream_id FROM events WHERE position > $1 AND position <= $2",
            )
            .bind(seen)
            .bind(from)
            .fetch_all(&self.pool)
            .await?;
            self.cache.invalidate(streams.into_iter().map(|s| s.0));
        }
        self.invalidated.fetch_max(from, Ordering::AcqRel);
        Ok(())
    }

    /// Applies at most one batch. Returns how many events it applied.
    pub async fn run_once(&self) -> Result<usize, StoreError> {
        let from = self.checkpoint().await?;
        self.forget_foreign(from).await?;
        self.applied.send_if_modified(|p| {
            let changed = *p < from;
            *p = (*p).max(from);
            changed
        });
        let events = store::read_after(&self.pool, from, self.batch_max).await?;
        if events.is_empty() {
            return Ok(0);
        }
        let decoded: Vec<Decoded> = events
            .iter()
            .map(|e| decode(e).map(|event| Decoded { stored: e, event }))
            .collect::<Result<_, _>>()?;
        let last = events.last().map(|e| e.position).unwrap_or(from);
        let started = std::time::Instant::now();
        let mut tx = self.pool.begin().await?;
        apply_batch(&mut tx, &self.ctx, &decoded, &Tables::live()).await?;
        if self
            .faults
            .fail_batches
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StoreError::Unavailable("injected projector crash".into()));
        }
        store::advance_checkpoints(&mut *tx, &PROJECTIONS, last).await?;
        tx.commit().await?;
        self.cache.invalidate(events.iter().map(|e| e.stream_id));
        self.invalidated.fetch_max(last, Ordering::AcqRel);
        self.applied.send_if_modified(|p| {
            let changed = *p < last;
            *p = (*p).max(last);
            changed
        });
        metrics::counter!("ledger_projected_events_total").increment(events.len() as u64);
        metrics::histogram!("ledger_projection_batch_seconds")
            .record(started.elapsed().as_secs_f64());
        let now = chrono::Utc::now();
        if let Some(e) = events.last() {
            let lag = (now - e.recorded_at).num_microseconds().unwrap_or(0) as f64 / 1e6;
            metrics::histogram!("ledger_projection_lag_seconds").record(lag.max(0.0));
        }
        Ok(events.len())
    }

    /// Runs until cancelled: applies batches while there is work, then sleeps until the
    /// writer's head moves, the bus wakes it, or `IDLE_POLL` passes.
    pub async fn run(
        self,
        mut head: Option<watch::Receiver<i64>>,
        wake: Arc<Notify>,
        cancel: CancellationToken,
    ) {
        let mut backoff = Duration::from_millis(50);
        loop {
            if cancel.is_cancelled() {
                break;
            }
            match self.run_once().await {
                Ok(n) if n > 0 => {
                    backoff = Duration::from_millis(50);
                    continue;
                }
                Ok(_) => {
                    backoff = Duration::from_millis(50);
                    let head_changed = async {
                        match head.as_mut() {
                            Some(h) => {
                                if h.changed().await.is_err() {
                                    std::future::pending::<()>().await
                                }
                            }
                            None => std::future::pending::<()>().await,
                        }
                    };
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = head_changed => {}
                        _ = wake.notified() => {}
                        _ = tokio::time::sleep(IDLE_POLL) => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "projection batch failed; retrying");
                    metrics::counter!("ledger_projection_errors_total").increment(1);
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
        tracing::info!("projector stopped");
    }
}

/// For nodes that serve the API without running the projector (`--role api`): follows the
/// projection checkpoints and invalidates the local cache for what other nodes projected.
pub async fn follow_remote(
    pool: PgPool,
    cache: ReadCache,
    applied: Arc<watch::Sender<i64>>,
    wake: Arc<Notify>,
    cancel: CancellationToken,
) {
    let mut seen = *applied.borrow();
    let mut replay_generation = -1;
    loop {
        let result: Result<(), StoreError> = async {
            let rows: Vec<i64> =
                sqlx::query_scalar("SELECT position FROM checkpoints WHERE name = ANY($1)")
                    .bind(PROJECTIONS.as_slice())
                    .fetch_all(&pool)
                    .await?;
            let pos = if rows.len() == PROJECTIONS.len() {
                rows.into_iter().min().unwrap_or(0)
            } else {
                0
            };
            let generation = store::checkpoint(&pool, crate::replay::REPLAY_GENERATION).await?;
            if generation != replay_generation {
                cache.clear();
                replay_generation = generation;
            }
            if pos > seen {
                let events = store::read_range(&pool, seen, pos).await?;
                cache.invalidate(events.iter().map(|e| e.stream_id));
                seen = pos;
                applied.send_replace(pos);
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "following projections failed");
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
}
