//! The event store on PostgreSQL: the only place events are written.
//!
//! It owns appending with an expected stream version (through the group-commit writer in
//! `writer`), the hash chain over each event's canonical bytes (`event`), reading the log in
//! position order and by stream, verification of the chain (`verify`), and the small
//! write-side tables that must share the log's transactions or durability: claims, nonces and
//! idempotency keys (`requests`). It must not know HTTP, NATS or the read tables.

pub mod digest;
pub mod event;
pub mod keyring;
pub mod leases;
pub mod plan;
pub mod probe;
pub mod requests;
pub mod sealing;
pub mod sessions;
pub mod verify;
pub mod writer;

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use uuid::Uuid;

pub use event::{decode, decode_all, EventEnvelope, NewEvent, StoredEvent, GENESIS_HASH};
pub use writer::{
    AppendRequest, Appended, Claim, Fence, IdempotencyKey, NonceUse, Respond, Writer, WriterConfig,
};

/// Errors of the store layer. `Conflict` and `ClaimTaken` are expected outcomes of
/// optimistic concurrency; the others mean the database could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("stream version conflict: expected {expected}, actual {actual}")]
    Conflict { expected: u32, actual: u32 },
    #[error("{scope} {key:?} is already claimed by {owner}")]
    ClaimTaken {
        scope: String,
        key: String,
        owner: Uuid,
    },
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("stored event is malformed: {0}")]
    Malformed(String),
    #[error("the append writer has stopped")]
    WriterStopped,
    /// The request's anti-replay nonce was already used by its key.
    #[error("nonce already used")]
    NonceUsed,
    /// Another request committed an answer under this idempotency key first.
    #[error("idempotency key already answered")]
    IdempotencyTaken,
    /// A background duty's write whose lease another node has taken over.
    #[error("the duty's lease was taken over by another node")]
    Fenced,
}

impl StoreError {
    /// Errors that mean "the database is not reachable right now" rather than a bug.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Unavailable(_) | StoreError::WriterStopped => true,
            StoreError::Database(e) => is_connection_error(e),
            _ => false,
        }
    }
}

/// Connection-level failures (refused, reset, pool timeout, terminated backend).
pub fn is_connection_error(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => {
            // 57P01 admin_shutdown (pg_terminate_backend), 57P02/57P03 crash/cannot connect,
            // 08xxx connection exceptions.
            db.code()
                .map(|c| c.starts_with("57P") || c.starts_with("08"))
                .unwrap_or(false)
        }
        _ => false,
    }
}

/// Opens a pool; creates the database first when it does not exist (SPEC §9).
pub async fn connect(
    database_url: &str,
    max_connections: u32,
    create_if_missing: bool,
) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = database_url
        .parse()
        .map_err(|e| anyhow::anyhow!("DATABASE_URL is malformed: {e}"))?;
    let options = options.log_statements(tracing::log::LevelFilter::Trace);
    if create_if_missing {
        create_database_if_missing(&options).await?;
    }
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to DATABASE_URL: {e}"))?;
    Ok(pool)
}

async fn create_database_if_missing(options: &PgConnectOptions) -> anyhow::Result<()> {
    let name = options.get_database().unwrap_or("postgres").to_owned();
    let admin = options.clone().database("postgres");
    let mut conn = admin
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to DATABASE_URL's server: {e}"))?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        match sqlx::query(&format!("CREATE DATABASE {quoted}"))
            .execute(&mut conn)
            .await
        {
            Ok(_) => tracing::info!(database = %name, "created database"),
            // Another process created it between our check and our create.
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Applies the migrations in `migrations/` (embedded in the binary).
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::migrate!("../migrations")
        .run(pool)
        .await
        .map_err(|e| anyhow::anyhow!("migration failed: {e}"))
}

/// The highest committed position (0 for an empty log).
pub async fn head_position(pool: &PgPool) -> Result<i64, StoreError> {
    let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM events")
        .fetch_one(pool)
        .await?;
    Ok(head)
}

/// Events after `after` in position order. Positions are dense and assigned in commit order,
/// so this never skips an event that a later read could reveal.
pub async fn read_after(
    pool: &PgPool,
    after: i64,
    limit: i64,
) -> Result<Vec<StoredEvent>, StoreError> {
    let rows = sqlx::query_as::<_, event::EventRow>(
        "SELECT position, event_id, stream_id, version, event_type, data, metadata, \
         recorded_at, prev_hash, hash FROM events WHERE position > $1 ORDER BY position LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(StoredEvent::from).collect())
}

/// Events with `after < position <= upto`, in position order.
pub async fn read_range(
    pool: &PgPool,
    after: i64,
    upto: i64,
) -> Result<Vec<StoredEvent>, StoreError> {
    let rows = sqlx::query_as::<_, event::EventRow>(
        "SELECT position, event_id, stream_id, version, event_type, data, metadata, \
         recorded_at, prev_hash, hash FROM events WHERE position > $1 AND position <= $2 \
         ORDER BY position",
    )
    .bind(after)
    .bind(upto)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(StoredEvent::from).collect())
}

/// The streams with events in `after < position <= upto` (bounded by the caller's range).
pub async fn streams_between(
    pool: &PgPool,
    after: i64,
    upto: i64,
) -> Result<Vec<Uuid>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT stream_id FROM events WHERE position > $1 AND position <= $2",
    )
    .bind(after)
    .bind(upto)
    .fetch_all(pool)
    .await?)
}

/// Every event up to `upto`, stream by stream in version order, streamed from the server (a
/// rebuild folds one payment at a time, so its memory does not grow with the log).
pub fn by_stream(
    conn: &mut sqlx::PgConnection,
    upto: i64,
) -> futures::stream::BoxStream<'_, Result<StoredEvent, StoreError>> {
    use futures::StreamExt;
    sqlx::query_as::<_, event::EventRow>(
        "SELECT position, event_id, stream_id, version, event_type, data, metadata, \
         recorded_at, prev_hash, hash FROM events WHERE position <= $1 \
         ORDER BY stream_id, version",
    )
    .bind(upto)
    .fetch(conn)
    .map(|r| r.map(StoredEvent::from).map_err(StoreError::from))
    .boxed()
}

/// A whole stream in version order.
pub async fn read_stream(pool: &PgPool, stream_id: Uuid) -> Result<Vec<StoredEvent>, StoreError> {
    let rows = sqlx::query_as::<_, event::EventRow>(
        "SELECT position, event_id, stream_id, version, event_type, data, metadata, \
         recorded_at, prev_hash, hash FROM events WHERE stream_id = $1 ORDER BY version",
    )
    .bind(stream_id)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(StoredEvent::from).collect())
}

/// Sends a PostgreSQL notification inside the caller's transaction (delivered at commit).
pub async fn notify<'e, E>(executor: E, channel: &str, position: i64) -> Result<(), StoreError>
where
    E: sqlx::PgExecutor<'e>,
{
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(channel)
        .bind(position.to_string())
        .execute(executor)
        .await?;
    Ok(())
}

/// The PostgreSQL notification channel the append writer announces its head on.
pub const APPENDED_CHANNEL: &str = "ledger_appended";

/// Reads a checkpoint (0 when the follower never ran).
pub async fn checkpoint(pool: &PgPool, name: &str) -> Result<i64, StoreError> {
    let pos: Option<i64> = sqlx::query_scalar("SELECT position FROM checkpoints WHERE name = $1")
        .bind(name)
        .fetch_optional(pool)
        .await?;
    Ok(pos.unwrap_or(0))
}

/// Moves several checkpoints to `position` in one statement, never backwards: a late writer
/// cannot undo progress.
pub async fn advance_checkpoints<'e, E>(
    executor: E,
    names: &[&str],
    position: i64,
) -> Result<(), StoreError>
where
    E: sqlx::PgExecutor<'e>,
{
    sqlx::query(
        "INSERT INTO checkpoints (name, position, updated_at) \
         SELECT n, $2, now() FROM UNNEST($1::text[]) AS n \
         ON CONFLICT (name) DO UPDATE SET position = GREATEST(checkpoints.position, EXCLUDED.position), \
         updated_at = now()",
    )
    .bind(names)
    .bind(position)
    .execute(executor)
    .await?;
    Ok(())
}

/// Moves one checkpoint forward (never backwards).
pub async fn advance_checkpoint<'e, E>(
    executor: E,
    name: &str,
    position: i64,
) -> Result<(), StoreError>
where
    E: sqlx::PgExecutor<'e>,
{
    advance_checkpoints(executor, &[name], position).await
}
