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
//! The writer is split in two: the pure planner (`crate::plan`) decides every row and every
//! per-request result from what was read under the lock, and this module is the thin SQL
//! executor around it — take the lock (with `lock_timeout` and `statement_timeout`, so a
//! stalled holder cannot block every node for long), read once, plan, write once, commit.
//! Claims (cross-stream uniqueness), anti-replay nonces and idempotency answers are written in
//! the same transaction as the events they belong to: one durable commit per command.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::event::StoredEvent;
use crate::plan::{self, Plan, Reads, Refusal, Snapshot, StreamHead};
pub use crate::plan::{AppendRequest, Appended, Claim, Fence, IdempotencyKey, NonceUse, Respond};
use crate::{is_connection_error, StoreError};

/// Key of the transaction advisory lock that serialises appends (any constant works; this
/// one spells "LEDGER" in ASCII).
pub const APPEND_LOCK_ID: i64 = 0x4c45_4447_4552;

/// How long an idempotency answer is kept (SPEC §11: 24 h).
pub const IDEMPOTENCY_TTL_HOURS: i32 = 24;

#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Most appends committed in one transaction.
    pub batch_max: usize,
    /// Most appends waiting for the writer; senders wait beyond it (back-pressure).
    pub queue_max: usize,
    /// Longest an append transaction waits for the append lock (`lock_timeout`).
    pub lock_timeout: Duration,
    /// Longest any statement of an append transaction runs (`statement_timeout`).
    pub statement_timeout: Duration,
    /// Committed batches kept for slow subscribers (the local projector); one that falls
    /// further behind is told it lagged and reads the log instead.
    pub handoff_batches_max: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            batch_max: 512,
            queue_max: 8192,
            lock_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(10),
            handoff_batches_max: 1024,
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
    committed: broadcast::Sender<Arc<[StoredEvent]>>,
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
        let (committed, _) = broadcast::channel(config.handoff_batches_max.max(1));
        tracker.spawn(run(pool, config, rx, head_tx, committed.clone(), cancel));
        Writer {
            queue,
            head,
            committed,
        }
    }

    /// Every batch of events this writer commits, in position order, right after its commit:
    /// the local projector applies them without reading them back from the database.
    pub fn committed(&self) -> broadcast::Receiver<Arc<[StoredEvent]>> {
        self.committed.subscribe()
    }

    /// Appends atomically, or refuses (`Conflict`, `ClaimTaken`, `NonceUsed`,
    /// `IdempotencyTaken`) and writes nothing of this request.
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

impl From<Refusal> for StoreError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Conflict { expected, actual } => StoreError::Conflict { expected, actual },
            Refusal::ClaimTaken { scope, key, owner } => {
                StoreError::ClaimTaken { scope, key, owner }
            }
            Refusal::NonceUsed => StoreError::NonceUsed,
            Refusal::IdempotencyTaken => StoreError::IdempotencyTaken,
            Refusal::Fenced => StoreError::Fenced,
        }
    }
}

async fn run(
    pool: PgPool,
    config: WriterConfig,
    mut rx: mpsc::Receiver<Pending>,
    head_tx: watch::Sender<i64>,
    committed: broadcast::Sender<Arc<[StoredEvent]>>,
    cancel: CancellationToken,
) {
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
        let mut requests: Vec<AppendRequest> = Vec::with_capacity(size);
        let mut replies = Vec::with_capacity(size);
        for p in batch.drain(..) {
            requests.push(p.request);
            replies.push(p.reply);
        }
        match commit_batch(&pool, &config, &mut requests).await {
            Ok(plan) => {
                let head = plan.head;
                if !plan.events.is_empty() {
                    // Nobody listening (an API-only process) is fine.
                    let _ = committed.send(plan.events.iter().map(|r| r.event.clone()).collect());
                }
                for (reply, result) in replies.into_iter().zip(plan.results) {
                    let _ = reply.send(result.map_err(StoreError::from));
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
                let unavailable = is_connection_error(&e) || is_timeout(&e);
                tracing::warn!(error = %e, batch = size, "append batch failed");
                metrics::counter!("ledger_append_batch_failures_total").increment(1);
                for reply in replies {
                    let err = if unavailable {
                        StoreError::Unavailable(e.to_string())
                    } else {
                        StoreError::Database(sqlx::Error::Protocol(e.to_string()))
                    };
                    let _ = reply.send(Err(err));
                }
                if unavailable {
                    // Do not spin against a database that is down.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// `lock_timeout` (55P03) and `statement_timeout` (57014): the database is not available to
/// us right now, which the caller may retry.
fn is_timeout(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => matches!(db.code().as_deref(), Some("55P03" | "57014")),
        _ => false,
    }
}

/// Commits one batch: lock, read, plan, write, commit.
#[tracing::instrument(name = "append_batch", skip_all, fields(appends = batch.len()))]
async fn commit_batch(
    pool: &PgPool,
    config: &WriterConfig,
    batch: &mut [AppendRequest],
) -> Result<Plan, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "SELECT set_config('lock_timeout', $1, true), set_config('statement_timeout', $2, true), \
         pg_advisory_xact_lock($3)",
    )
    .bind(format!("{}ms", config.lock_timeout.as_millis()))
    .bind(format!("{}ms", config.statement_timeout.as_millis()))
    .bind(APPEND_LOCK_ID)
    .execute(&mut *tx)
    .await?;
    let snapshot = read_snapshot(&mut tx, &plan::reads(batch)).await?;
    let plan = plan::plan(batch, &snapshot);
    write_plan(&mut tx, &plan).await?;
    if plan.head > snapshot.head {
        // Delivered at commit: the leader's projector and relay on another node wake at once.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(crate::APPENDED_CHANNEL)
            .bind(plan.head.to_string())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(plan)
}

/// One row of the snapshot read.
type SnapshotRow = (
    i64,
    Option<DateTime<Utc>>,
    DateTime<Utc>,
    sqlx::types::Json<Vec<(Uuid, i32, String)>>,
    sqlx::types::Json<Vec<(String, String, Uuid)>>,
    sqlx::types::Json<Vec<(String, String)>>,
    sqlx::types::Json<Vec<(String, String, String)>>,
    sqlx::types::Json<Vec<(String, i64)>>,
);

/// Everything the planner needs, in one statement (one round trip under the lock).
async fn read_snapshot(conn: &mut PgConnection, reads: &Reads) -> Result<Snapshot, sqlx::Error> {
    let (claim_scopes, claim_keys): (Vec<String>, Vec<String>) =
        reads.claims.iter().cloned().unzip();
    let (nonce_keys, nonces): (Vec<String>, Vec<String>) = reads.nonces.iter().cloned().unzip();
    let key_ids: Vec<String> = reads.keys.iter().map(|k| k.0.clone()).collect();
    let routes: Vec<String> = reads.keys.iter().map(|k| k.1.clone()).collect();
    let idem_keys: Vec<String> = reads.keys.iter().map(|k| k.2.clone()).collect();
    let row: SnapshotRow = sqlx::query_as(
        "SELECT COALESCE(l.position, 0), l.recorded_at, clock_timestamp(), \
         (SELECT COALESCE(json_agg(json_build_array(h.stream_id, h.version, h.hash)), '[]') \
            FROM (SELECT DISTINCT ON (stream_id) stream_id, version, hash FROM events \
                  WHERE stream_id = ANY($1) ORDER BY stream_id, version DESC) h), \
         (SELECT COALESCE(json_agg(json_build_array(c.scope, c.key, c.owner)), '[]') \
            FROM claims c JOIN UNNEST($2::text[], $3::text[]) AS k(scope, key) \
              ON c.scope = k.scope AND c.key = k.key), \
         (SELECT COALESCE(json_agg(json_build_array(n.key_id, n.nonce)), '[]') \
            FROM nonces n JOIN UNNEST($4::text[], $5::text[]) AS k(key_id, nonce) \
              ON n.key_id = k.key_id AND n.nonce = k.nonce), \
         (SELECT COALESCE(json_agg(json_build_array(i.key_id, i.route, i.idem_key)), '[]') \
            FROM idempotency i JOIN UNNEST($6::text[], $7::text[], $8::text[]) AS k(a, b, c) \
              ON i.key_id = k.a AND i.route = k.b AND i.idem_key = k.c \
            WHERE i.created_at >= now() - make_interval(hours => $9)), \
         (SELECT COALESCE(json_agg(json_build_array(d.duty, d.token)), '[]') \
            FROM (SELECT duty, token FROM duty_leases WHERE duty = ANY($10) FOR SHARE) d) \
         FROM (SELECT 1) AS one \
         LEFT JOIN LATERAL (SELECT position, recorded_at FROM events \
                            ORDER BY position DESC LIMIT 1) l ON true",
    )
    .bind(&reads.streams)
    .bind(&claim_scopes)
    .bind(&claim_keys)
    .bind(&nonce_keys)
    .bind(&nonces)
    .bind(&key_ids)
    .bind(&routes)
    .bind(&idem_keys)
    .bind(IDEMPOTENCY_TTL_HOURS)
    .bind(&reads.duties)
    .fetch_one(&mut *conn)
    .await?;
    let (head, last_recorded_at, now, streams, claims, used_nonces, keys, duties) = row;
    Ok(Snapshot {
        head,
        last_recorded_at,
        now,
        streams: streams
            .0
            .into_iter()
            .map(|(s, v, hash)| {
                (
                    s,
                    StreamHead {
                        version: v as u32,
                        hash,
                    },
                )
            })
            .collect(),
        claims: claims
            .0
            .into_iter()
            .map(|(scope, key, owner)| ((scope, key), owner))
            .collect(),
        used_nonces: used_nonces.0.into_iter().collect::<HashSet<_>>(),
        answered_keys: keys.0.into_iter().collect::<HashSet<_>>(),
        duty_tokens: duties.0.into_iter().collect(),
    })
}

/// Writes every row of the plan in one statement. The answers are counted back: a plan whose
/// rows the database did not take in full is a broken invariant, and fails the batch.
async fn write_plan(conn: &mut PgConnection, plan: &Plan) -> Result<(), sqlx::Error> {
    if plan.events.is_empty()
        && plan.claims_set.is_empty()
        && plan.claims_cleared.is_empty()
        && plan.nonces.is_empty()
        && plan.answers.is_empty()
    {
        return Ok(());
    }
    let e = &plan.events;
    let (answered,): (i64,) = sqlx::query_as(
        "WITH ev AS (INSERT INTO events (position, event_id, stream_id, version, event_type, \
            data, metadata, recorded_at, prev_hash, hash, canonical) \
            SELECT p, e, s, v, t, d::jsonb, m::jsonb, r, ph, h, c FROM UNNEST(\
            $1::bigint[], $2::uuid[], $3::uuid[], $4::int[], $5::text[], $6::text[], \
            $7::text[], $8::timestamptz[], $9::text[], $10::text[], $11::text[]) \
            AS x(p, e, s, v, t, d, m, r, ph, h, c)), \
         cd AS (DELETE FROM claims c USING UNNEST($12::text[], $13::text[]) AS k(scope, key) \
            WHERE c.scope = k.scope AND c.key = k.key), \
         cs AS (INSERT INTO claims (scope, key, owner) \
            SELECT * FROM UNNEST($14::text[], $15::text[], $16::uuid[]) \
            ON CONFLICT (scope, key) DO UPDATE SET owner = EXCLUDED.owner), \
         nn AS (INSERT INTO nonces (key_id, nonce, expires_at) \
            SELECT * FROM UNNEST($17::text[], $18::text[], $19::timestamptz[])), \
         ik AS (INSERT INTO idempotency (key_id, route, idem_key, request_hash, status, \
                response, created_at) \
            SELECT k, r, i, h, s, resp, now() FROM UNNEST($20::text[], $21::text[], \
                $22::text[], $23::text[], $24::smallint[], $25::text[]) \
                AS x(k, r, i, h, s, resp) \
            ON CONFLICT (key_id, route, idem_key) DO UPDATE SET \
                request_hash = EXCLUDED.request_hash, status = EXCLUDED.status, \
                response = EXCLUDED.response, created_at = EXCLUDED.created_at \
            WHERE idempotency.created_at < now() - make_interval(hours => $26) \
            RETURNING 1) \
         SELECT COUNT(*) FROM ik",
    )
    .bind(e.iter().map(|r| r.event.position).collect::<Vec<_>>())
    .bind(e.iter().map(|r| r.event.event_id).collect::<Vec<_>>())
    .bind(e.iter().map(|r| r.event.stream_id).collect::<Vec<_>>())
    .bind(e.iter().map(|r| r.event.version).collect::<Vec<_>>())
    .bind(
        e.iter()
            .map(|r| r.event.event_type.clone())
            .collect::<Vec<_>>(),
    )
    .bind(
        e.iter()
            .map(|r| r.event.data.to_string())
            .collect::<Vec<_>>(),
    )
    .bind(
        e.iter()
            .map(|r| r.event.metadata.to_string())
            .collect::<Vec<_>>(),
    )
    .bind(e.iter().map(|r| r.event.recorded_at).collect::<Vec<_>>())
    .bind(
        e.iter()
            .map(|r| r.event.prev_hash.clone())
            .collect::<Vec<_>>(),
    )
    .bind(e.iter().map(|r| r.event.hash.clone()).collect::<Vec<_>>())
    .bind(e.iter().map(|r| r.canonical.clone()).collect::<Vec<_>>())
    .bind(
        plan.claims_cleared
            .iter()
            .map(|c| c.0.clone())
            .collect::<Vec<_>>(),
    )
    .bind(
        plan.claims_cleared
            .iter()
            .map(|c| c.1.clone())
            .collect::<Vec<_>>(),
    )
    .bind(
        plan.claims_set
            .iter()
            .map(|c| c.0.clone())
            .collect::<Vec<_>>(),
    )
    .bind(
        plan.claims_set
            .iter()
            .map(|c| c.1.clone())
            .collect::<Vec<_>>(),
    )
    .bind(plan.claims_set.iter().map(|c| c.2).collect::<Vec<_>>())
    .bind(
        plan.nonces
            .iter()
            .map(|n| n.key_id.clone())
            .collect::<Vec<_>>(),
    )
    .bind(
        plan.nonces
            .iter()
            .map(|n| n.nonce.clone())
            .collect::<Vec<_>>(),
    )
    .bind(plan.nonces.iter().map(|n| n.expires_at).collect::<Vec<_>>())
    .bind(
        plan.answers
            .iter()
            .map(|a| a.key.key_id.clone())
            .collect::<Vec<_>>(),
    )
    .bind(
        plan.answers
            .iter()
            .map(|a| a.key.route.clone())
            .collect::<Vec<_>>(),
    )
    .bind(
        plan.answers
            .iter()
            .map(|a| a.key.idem_key.clone())
            .collect::<Vec<_>>(),
    )
    .bind(
        plan.answers
            .iter()
            .map(|a| a.key.request_hash.clone())
            .collect::<Vec<_>>(),
    )
    .bind(
        plan.answers
            .iter()
            .map(|a| a.status as i16)
            .collect::<Vec<_>>(),
    )
    .bind(
        plan.answers
            .iter()
            .map(|a| a.response.clone())
            .collect::<Vec<_>>(),
    )
    .bind(IDEMPOTENCY_TTL_HOURS)
    .fetch_one(&mut *conn)
    .await?;
    if answered as usize != plan.answers.len() {
        return Err(sqlx::Error::Protocol(format!(
            "the plan stored {} idempotency answers but the database took {answered}",
            plan.answers.len()
        )));
    }
    Ok(())
}
