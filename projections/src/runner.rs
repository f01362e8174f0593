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

use std::collections::VecDeque;

use sqlx::PgPool;
use tokio::sync::{broadcast, watch, Notify};
use tokio_util::sync::CancellationToken;

use super::cache::ReadCache;
use super::{apply_batch, Decoded, ProjectionContext, Tables, PROJECTIONS};
use ledger_store::decode;
use ledger_store::{self as store, leases, Fence, StoreError, StoredEvent};

/// The PostgreSQL notification channel the projector announces its position on.
pub const PROJECTED_CHANNEL: &str = "ledger_projected";
/// How often the runner looks at the log when nothing woke it, unless configured
/// (`Projector::idle_poll`; LEDGER_PROJECTOR_IDLE_POLL_MS).
pub const IDLE_POLL_DEFAULT: Duration = Duration::from_millis(200);

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
    /// How often the runner looks at the log when nothing woke it (writes from other nodes
    /// are announced; this covers a missed announcement).
    idle_poll: Duration,
    pub faults: Arc<Faults>,
    /// Last replay generation seen; a change means the tables were swapped under the cache.
    replay_generation: Arc<std::sync::atomic::AtomicI64>,
    /// Highest position whose streams this process's cache has dropped (-1: not started; the
    /// cache starts empty, so the first checkpoint seen needs nothing dropped).
    invalidated: Arc<std::sync::atomic::AtomicI64>,
    /// The projector duty's lease this runner writes under (checked in every batch's
    /// transaction); `None` for a runner that owns the tables by construction (tools, tests).
    fence: Option<Fence>,
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
            idle_poll: IDLE_POLL_DEFAULT,
            faults: Arc::default(),
            replay_generation: Arc::new(std::sync::atomic::AtomicI64::new(-1)),
            invalidated: Arc::new(std::sync::atomic::AtomicI64::new(-1)),
            fence: None,
        }
    }

    /// This runner, looking at the log every `idle_poll` when nothing woke it.
    pub fn idle_poll(self, idle_poll: Duration) -> Projector {
        Projector { idle_poll, ..self }
    }

    /// This runner, writing only while `fence` is still the projector duty's lease.
    pub fn fenced(&self, fence: Fence) -> Projector {
        Projector {
            fence: Some(fence),
            ..self.clone()
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
            self.cache
                .invalidate(store::streams_between(&self.pool, seen, from).await?);
        }
        self.invalidated.fetch_max(from, Ordering::AcqRel);
        Ok(())
    }

    /// Applies at most one batch, reading it from the log. Returns how many events it applied.
    pub async fn run_once(&self) -> Result<usize, StoreError> {
        self.run_batch(&mut Handoff::default()).await
    }

    /// Applies at most one batch: the events the local writer handed over when they follow
    /// the checkpoint without a gap, otherwise read from the log (a restart, another node's
    /// appends, a handoff that lagged). Returns how many events it applied.
    #[tracing::instrument(name = "projection_batch", skip_all)]
    async fn run_batch(&self, handoff: &mut Handoff) -> Result<usize, StoreError> {
        let from = self.checkpoint().await?;
        self.forget_foreign(from).await?;
        self.applied.send_if_modified(|p| {
            let changed = *p < from;
            *p = (*p).max(from);
            changed
        });
        let events = match handoff.take(from, self.batch_max as usize) {
            Some(events) => {
                metrics::counter!("ledger_projection_handoff_events_total")
                    .increment(events.len() as u64);
                events
            }
            None => store::read_after(&self.pool, from, self.batch_max).await?,
        };
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
        // The read tables are derived and their checkpoint commits with them: a commit lost
        // in a database crash loses both together, and the batch is applied again from the
        // log (see ARCHITECTURE.md). So this transaction need not wait for its fsync.
        sqlx::query("SELECT set_config('synchronous_commit', 'off', true)")
            .execute(&mut *tx)
            .await?;
        if let Some(f) = &self.fence {
            // Locks the lease row until commit: no takeover can land in between.
            if !leases::still_held(&mut tx, f.duty, f.token).await? {
                return Err(StoreError::Fenced);
            }
        }
        let changes = apply_batch(&mut tx, &self.ctx, &decoded, &Tables::live()).await?;
        if self
            .faults
            .fail_batches
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StoreError::Unavailable("injected projector crash".into()));
        }
        store::advance_checkpoints(&mut *tx, &PROJECTIONS, last).await?;
        // Delivered at commit: API nodes learn the new position without polling.
        store::notify(&mut *tx, PROJECTED_CHANNEL, last).await?;
        tx.commit().await?;
        self.cache.invalidate_changes(&changes.list_changes);
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
            metrics::histogram!("ledger_projection_delay_seconds").record(lag.max(0.0));
        }
        Ok(events.len())
    }

    /// Runs until cancelled: applies batches while there is work, then sleeps until the
    /// writer's head moves, another node's append is announced (`wake`), or `idle_poll`
    /// passes. `committed` is the local writer's handoff of committed batches.
    pub async fn run(
        self,
        mut head: Option<watch::Receiver<i64>>,
        committed: Option<broadcast::Receiver<Arc<[StoredEvent]>>>,
        wake: Arc<Notify>,
        cancel: CancellationToken,
    ) {
        let mut backoff = Duration::from_millis(50);
        let mut handoff = Handoff {
            rx: committed,
            queue: VecDeque::new(),
        };
        loop {
            if cancel.is_cancelled() {
                break;
            }
            match self.run_batch(&mut handoff).await {
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
                        _ = tokio::time::sleep(self.idle_poll) => {}
                    }
                }
                Err(StoreError::Fenced) => {
                    tracing::warn!("the projector duty moved to another node: stopping");
                    break;
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

/// Batches of committed events handed over by the local writer, kept until the projector's
/// checkpoint reaches them. Bounded: the writer's channel keeps `WriterConfig::handoff_batches_max`
/// batches, and a projector that lags beyond them reads the log instead.
#[derive(Default)]
struct Handoff {
    rx: Option<broadcast::Receiver<Arc<[StoredEvent]>>>,
    queue: VecDeque<StoredEvent>,
}

impl Handoff {
    /// Up to `max` events that follow `after` without a gap, if the handoff has them.
    fn take(&mut self, after: i64, max: usize) -> Option<Vec<StoredEvent>> {
        if let Some(rx) = &mut self.rx {
            loop {
                match rx.try_recv() {
                    Ok(batch) => self.queue.extend(batch.iter().cloned()),
                    Err(broadcast::error::TryRecvError::Empty) => break,
                    Err(broadcast::error::TryRecvError::Lagged(_)) => {
                        // Some batches were dropped: what is queued may have a hole before it.
                        self.queue.clear();
                    }
                    Err(broadcast::error::TryRecvError::Closed) => {
                        self.rx = None;
                        break;
                    }
                }
            }
        }
        while self.queue.front().is_some_and(|e| e.position <= after) {
            self.queue.pop_front();
        }
        if self.queue.front().map(|e| e.position) != Some(after + 1) {
            return None;
        }
        let mut out = Vec::with_capacity(max.min(self.queue.len()));
        let mut next = after + 1;
        while out.len() < max && self.queue.front().is_some_and(|e| e.position == next) {
            if let Some(e) = self.queue.pop_front() {
                out.push(e);
                next += 1;
            }
        }
        Some(out)
    }
}

/// For nodes that serve the API without running the projector (`--role api`, or a node whose
/// projector duty another node holds): follows the projection checkpoints — told of each new
/// one by the projector's notification (`projected`), re-read every `poll` in case one
/// was missed — drops the local cache's entries for what the other node projected, and only
/// then announces the position, so a read that waited for it never sees a stale entry.
pub async fn follow_remote(
    pool: PgPool,
    cache: ReadCache,
    applied: Arc<watch::Sender<i64>>,
    mut projected: watch::Receiver<i64>,
    poll: Duration,
    cancel: CancellationToken,
) {
    // The cache starts empty: nothing before the first checkpoint seen needs dropping, so a
    // node starts at the current checkpoint instead of reading the log from position 0.
    let mut seen: Option<i64> = None;
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
            match seen {
                None => {
                    seen = Some(pos);
                    applied.send_replace(pos);
                }
                Some(before) if pos > before => {
                    if pos - before > JUMP_CLEAR_ALL {
                        cache.clear();
                    } else {
                        cache.invalidate(store::streams_between(&pool, before, pos).await?);
                    }
                    seen = Some(pos);
                    applied.send_replace(pos);
                }
                Some(_) => {}
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "following projections failed");
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            changed = projected.changed() => {
                if changed.is_err() {
                    // No listener (it stopped): keep following by polling.
                    tokio::time::sleep(poll).await;
                }
            }
            _ = tokio::time::sleep(poll) => {}
        }
    }
}
