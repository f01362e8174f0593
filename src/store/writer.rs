//! The group-commit append writer.
//!
//! # How positions stay gap-free
//! Readers follow the global `position`. With a plain sequence, two transactions can take
//! positions 7 and 8 and commit 8 first: a reader that sees 8 and moves its checkpoint past 7
//! loses 7 forever (the well-known sequence-gap problem). We use the **append lock**
//! solution, made cheap by batching: every append transaction first takes the transaction
//! advisory lock `APPEND_LOCK_ID`, then reads `max(position)` and numbers its rows from there.
//! The lock is released only after the commit is visible, so positions are dense and commit
//! in increasing order on every node that shares the database. What would make a global lock
//! slow — one commit at a time — is answered by group commit: one writer task per process
//! gathers all appends waiting in its queue (up to `batch_max`) into one transaction, checks
//! each one's expected version against the stream heads read under the lock, and commits
//! them together, so N concurrent commands cost one fsync instead of N.
//!
//! Claims (cross-stream uniqueness) and idempotency completions are written in the same
//! transaction as the events they belong to.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::event::{canonical_bytes, sha256_hex, truncate_to_micros, NewEvent, StoredEvent};
use super::{is_connection_error, StoreError, GENESIS_HASH};

/// Key of the transaction advisory lock that serialises appends (any constant works; this
/// one spells "LEDGER" in ASCII).
pub const APPEND_LOCK_ID: i64 = 0x4c45_4447_4552;

/// A cross-stream unique key owned by a stream, e.g. ("order", order_id).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Claim {
    pub scope: &'static str,
    pub key: String,
}

/// Builds a request's answer from the events it appended (they carry position and time).
pub type Respond = std::sync::Arc<dyn Fn(&[StoredEvent]) -> (u16, Value) + Send + Sync>;

/// The answer to an idempotent request, stored in the same transaction as the events it
/// produced, so that a retry can never see the effect without the answer or the reverse.
#[derive(Debug, Clone)]
pub struct IdempotencyCompletion {
    pub key_id: String,
    pub route: String,
    pub idem_key: String,
}

pub struct AppendRequest {
    pub stream_id: Uuid,
    /// The version the caller's decision was based on (0 for a new stream).
    pub expected_version: u32,
    pub events: Vec<NewEvent>,
    pub claims: Vec<Claim>,
    pub releases: Vec<Claim>,
    pub idempotency: Option<IdempotencyCompletion>,
    /// Builds the answer inside the transaction (stored when `idempotency` is set).
    pub respond: Option<Respond>,
}

#[derive(Debug, Clone)]
pub struct Appended {
    pub events: Vec<StoredEvent>,
    /// The answer built by `respond`, exactly as stored for idempotent replays.
    pub response: Option<(u16, Value)>,
}

impl Appended {
    pub fn last_position(&self) -> i64 {
        self.events.last().map(|e| e.position).unwrap_or(0)
    }
}

#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Most appends committed in one transaction.
    pub batch_max: usize,
    /// Most appends waiting for the writer; senders wait beyond it (back-pressure).
    pub queue_max: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            batch_max: 512,
            queue_max: 8192,
        }
    }
}

struct Pending {
    request: AppendRequest,
    reply: oneshot::Sender<Result<Appended, StoreError>>,
}

/// Handle to the writer task. Cloning is cheap; all clones feed the same queue.
#[derive(Clone)]
pub struct Writer {
    queue: mpsc::Sender<Pending>,
    head: watch::Receiver<i64>,
}

impl Writer {
    /// Starts the writer task. It runs until `cancel` fires and the queue is drained.
    pub fn spawn(
        pool: PgPool,
        config: WriterConfig,
        initial_head: i64,
        cancel: CancellationToken,
        tracker: &tokio_util::task::TaskTracker,
    ) -> Writer {
        let (queue, rx) = mpsc::channel(config.queue_max);
        let (head_tx, head) = watch::channel(initial_head);
        tracker.spawn(run(pool, config, rx, head_tx, cancel));
        Writer { queue, head }
    }

    /// Appends atomically, or refuses with `Conflict` / `ClaimTaken` and writes nothing.
    pub async fn append(&self, request: AppendRequest) -> Result<Appended, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending { request, reply })
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// The highest position this process has committed (followers wake on its changes).
    pub fn head(&self) -> watch::Receiver<i64> {
        self.head.clone()
    }
}

async fn run(
    pool: PgPool,
    config: WriterConfig,
    mut rx: mpsc::Receiver<Pending>,
    head_tx: watch::Sender<i64>,
    cancel: CancellationToken,
) {
    let mut last_recorded_at: Option<DateTime<Utc>> = None;
    let mut batch: Vec<Pending> = Vec::with_capacity(config.batch_max);
    loop {
        // Runs until cancelled; on cancel, drains what is already queued so that no accepted
        // request is dropped.
        let first = tokio::select! {
            biased;
            item = rx.recv() => match item { Some(p) => p, None => break },
            _ = cancel.cancelled() => {
                rx.close();
                match rx.recv().await { Some(p) => p, None => break }
            }
        };
        batch.push(first);
        while batch.len() < config.batch_max {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let size = batch.len();
        let started = std::time::Instant::now();
        match commit_batch(&pool, &mut batch, &mut last_recorded_at).await {
            Ok(results) => {
                let mut head = *head_tx.borrow();
                for (pending, result) in batch.drain(..).zip(results) {
                    if let Ok(a) = &result {
                        head = head.max(a.last_position());
                    }
                    let _ = pending.reply.send(result);
                }
                head_tx.send_if_modified(|h| {
                    let changed = *h < head;
                    *h = (*h).max(head);
                    changed
                });
                metrics::histogram!("ledger_append_batch_size").record(size as f64);
                metrics::histogram!("ledger_append_batch_seconds")
                    .record(started.elapsed().as_secs_f64());
            }
            Err(e) => {
                let unavailable = is_connection_error(&e);
                tracing::warn!(error = %e, batch = size, "append batch failed");
                for pending in batch.drain(..) {
                    let err = if unavailable {
                        StoreError::Unavailable(e.to_string())
                    } else {
                        StoreError::Database(sqlx::Error::Protocol(e.to_string()))
                    };
                    let _ = pending.reply.send(Err(err));
                }
                if unavailable {
                    // Do not spin against a database that is down.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

struct Head {
    version: u32,
    hash: String,
}

type ClaimKey = (&'static str, String);

/// Commits one batch; returns one result per pending append, in order.
async fn commit_batch(
    pool: &PgPool,
    batch: &mut [Pending],
    last_recorded_at: &mut Option<DateTime<Utc>>,
) -> Result<Vec<Result<Appended, StoreError>>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(APPEND_LOCK_ID)
        .execute(&mut *tx)
        .await?;
    let mut position: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM events")
        .fetch_one(&mut *tx)
        .await?;

    let streams: Vec<Uuid> = batch
        .iter()
        .map(|p| p.request.stream_id)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let rows: Vec<(Uuid, i32, String)> = sqlx::query_as(
        "SELECT DISTINCT ON (stream_id) stream_id, version, hash FROM events \
         WHERE stream_id = ANY($1) ORDER BY stream_id, version DESC",
    )
    .bind(&streams)
    .fetch_all(&mut *tx)
    .await?;
    let mut heads: HashMap<Uuid, Head> = rows
        .into_iter()
        .map(|(s, v, h)| {
            (
                s,
                Head {
                    version: v as u32,
                    hash: h,
                },
            )
        })
        .collect();

    // Current owners of every key this batch claims or releases; `None` = free.
    let keys: HashSet<ClaimKey> = batch
        .iter()
        .flat_map(|p| p.request.claims.iter().chain(&p.request.releases))
        .map(|c| (c.scope, c.key.clone()))
        .collect();
    let mut owners: HashMap<ClaimKey, Option<Uuid>> = HashMap::new();
    if !keys.is_empty() {
        let (scopes, names): (Vec<&str>, Vec<String>) = keys.iter().cloned().unzip();
        let found: Vec<(String, String, Uuid)> = sqlx::query_as(
            "SELECT c.scope, c.key, c.owner FROM claims c \
             JOIN UNNEST($1::text[], $2::text[]) AS k(scope, key) \
               ON c.scope = k.scope AND c.key = k.key",
        )
        .bind(&scopes)
        .bind(&names)
        .fetch_all(&mut *tx)
        .await?;
        for key in &keys {
            owners.insert(key.clone(), None);
        }
        for (scope, key, owner) in found {
            if let Some(k) = keys.iter().find(|k| k.0 == scope && k.1 == key) {
                owners.insert(k.clone(), Some(owner));
            }
        }
    }
    let mut touched: HashSet<ClaimKey> = HashSet::new();

    let now = truncate_to_micros(Utc::now());
    let recorded_at = match *last_recorded_at {
        // Keep recorded_at non-decreasing in position order even if the clock steps back.
        Some(last) if last > now => last,
        _ => now,
    };
    *last_recorded_at = Some(recorded_at);

    let mut results: Vec<Result<Appended, StoreError>> = Vec::with_capacity(batch.len());
    let mut cols = Columns::default();
    let mut completions: Vec<(IdempotencyCompletion, u16, String)> = Vec::new();
    for pending in batch.iter_mut() {
        let req = &mut pending.request;
        let head = heads.get(&req.stream_id);
        let actual = head.map(|h| h.version).unwrap_or(0);
        if actual != req.expected_version {
            results.push(Err(StoreError::Conflict {
                expected: req.expected_version,
                actual,
            }));
            continue;
        }
        let taken = req.claims.iter().find_map(|c| {
            match owners.get(&(c.scope, c.key.clone())).copied().flatten() {
                Some(owner) if owner != req.stream_id => Some((c, owner)),
                _ => None,
            }
        });
        if let Some((claim, owner)) = taken {
            results.push(Err(StoreError::ClaimTaken {
                scope: claim.scope.to_owned(),
                key: claim.key.clone(),
                owner,
            }));
            continue;
        }
        for c in &req.claims {
            owners.insert((c.scope, c.key.clone()), Some(req.stream_id));
            touched.insert((c.scope, c.key.clone()));
        }
        for c in &req.releases {
            let key = (c.scope, c.key.clone());
            if owners.get(&key).copied().flatten() == Some(req.stream_id) {
                owners.insert(key.clone(), None);
                touched.insert(key);
            }
        }

        let mut prev_hash = head
            .map(|h| h.hash.clone())
            .unwrap_or_else(|| GENESIS_HASH.to_owned());
        let mut version = actual as i32;
        let mut stored = Vec::with_capacity(req.events.len());
        for e in req.events.drain(..) {
            position += 1;
            version += 1;
            let canonical = canonical_bytes(
                position,
                e.event_id,
                req.stream_id,
                version,
                e.event_type,
                &e.data,
                &e.metadata,
                recorded_at,
                &prev_hash,
            );
            let hash = sha256_hex(canonical.as_bytes());
            cols.push(
                position,
                &e,
                req.stream_id,
                version,
                recorded_at,
                &prev_hash,
                &hash,
                canonical,
            );
            prev_hash = hash.clone();
            stored.push(StoredEvent {
                position,
                event_id: e.event_id,
                stream_id: req.stream_id,
                version,
                event_type: e.event_type.to_owned(),
                data: e.data,
                metadata: e.metadata,
                recorded_at,
                prev_hash: String::new(),
                hash,
            });
        }
        // Fill prev_hash links now that the loop no longer borrows them.
        let mut link = head
            .map(|h| h.hash.clone())
            .unwrap_or_else(|| GENESIS_HASH.to_owned());
        for s in &mut stored {
            s.prev_hash = std::mem::replace(&mut link, s.hash.clone());
        }
        if let Some(last) = stored.last() {
            heads.insert(
                req.stream_id,
                Head {
                    version: last.version as u32,
                    hash: last.hash.clone(),
                },
            );
        }
        let response = req.respond.take().map(|respond| respond(&stored));
        if let (Some(c), Some((status, body))) = (req.idempotency.take(), &response) {
            completions.push((c, *status, body.to_string()));
        }
        results.push(Ok(Appended {
            events: stored,
            response,
        }));
    }

    if !cols.position.is_empty() {
        sqlx::query(
            "INSERT INTO events (position, event_id, stream_id, version, event_type, data, \
             metadata, recorded_at, prev_hash, hash, canonical) \
             SELECT p, e, s, v, t, d::jsonb, m::jsonb, r, ph, h, c FROM UNNEST(\
             $1::bigint[], $2::uuid[], $3::uuid[], $4::int[], $5::text[], $6::text[], \
             $7::text[], $8::timestamptz[], $9::text[], $10::text[], $11::text[]) \
             AS x(p, e, s, v, t, d, m, r, ph, h, c)",
        )
        .bind(&cols.position)
        .bind(&cols.event_id)
        .bind(&cols.stream_id)
        .bind(&cols.version)
        .bind(&cols.event_type)
        .bind(&cols.data)
        .bind(&cols.metadata)
        .bind(&cols.recorded_at)
        .bind(&cols.prev_hash)
        .bind(&cols.hash)
        .bind(&cols.canonical)
        .execute(&mut *tx)
        .await?;
    }
    if !touched.is_empty() {
        let (scopes, names): (Vec<&str>, Vec<String>) = touched.iter().cloned().unzip();
        sqlx::query(
            "DELETE FROM claims c USING UNNEST($1::text[], $2::text[]) AS k(scope, key) \
             WHERE c.scope = k.scope AND c.key = k.key",
        )
        .bind(&scopes)
        .bind(&names)
        .execute(&mut *tx)
        .await?;
        let mut s = Vec::new();
        let mut k = Vec::new();
        let mut o = Vec::new();
        for key in &touched {
            if let Some(Some(owner)) = owners.get(key) {
                s.push(key.0);
                k.push(key.1.clone());
                o.push(*owner);
            }
        }
        if !s.is_empty() {
            sqlx::query(
                "INSERT INTO claims (scope, key, owner) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::uuid[])",
            )
            .bind(&s)
            .bind(&k)
            .bind(&o)
            .execute(&mut *tx)
            .await?;
        }
    }
    if !completions.is_empty() {
        // The key was claimed (status NULL) before the command ran; fill in its answer.
        let mut key_ids = Vec::new();
        let mut routes = Vec::new();
        let mut idem_keys = Vec::new();
        let mut statuses = Vec::new();
        let mut responses = Vec::new();
        for (c, status, body) in completions {
            key_ids.push(c.key_id);
            routes.push(c.route);
            idem_keys.push(c.idem_key);
            statuses.push(status as i16);
            responses.push(body);
        }
        sqlx::query(
            "UPDATE idempotency i SET status = x.st, response = x.resp \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::smallint[], $5::text[]) \
               AS x(k, r, ik, st, resp) \
             WHERE i.key_id = x.k AND i.route = x.r AND i.idem_key = x.ik",
        )
        .bind(&key_ids)
        .bind(&routes)
        .bind(&idem_keys)
        .bind(&statuses)
        .bind(&responses)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(results)
}

#[derive(Default)]
struct Columns {
    position: Vec<i64>,
    event_id: Vec<Uuid>,
    stream_id: Vec<Uuid>,
    version: Vec<i32>,
    event_type: Vec<&'static str>,
    data: Vec<String>,
    metadata: Vec<String>,
    recorded_at: Vec<DateTime<Utc>>,
    prev_hash: Vec<String>,
    hash: Vec<String>,
    canonical: Vec<String>,
}

impl Columns {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        position: i64,
        e: &NewEvent,
        stream_id: Uuid,
        version: i32,
        recorded_at: DateTime<Utc>,
        prev_hash: &str,
        hash: &str,
        canonical: String,
    ) {
        self.position.push(position);
        self.event_id.push(e.event_id);
        self.stream_id.push(stream_id);
        self.version.push(version);
        self.event_type.push(e.event_type);
        self.data.push(e.data.to_string());
        self.metadata.push(e.metadata.to_string());
        self.recorded_at.push(recorded_at);
        self.prev_hash.push(prev_hash.to_owned());
        self.hash.push(hash.to_owned());
        self.canonical.push(canonical);
    }
}
