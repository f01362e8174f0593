//! What `ledger doctor` asks PostgreSQL: is it there, which version, what time it thinks it
//! is, and which of the embedded migrations are applied.
//!
//! Read-only and bounded: nothing here creates a database, a table or a row, and every
//! connection attempt gives up after the caller's timeout, so a check never hangs.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::migrate::{Migrate, Migrator};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::Connection;

/// The migrations embedded in the binary (the same ones `crate::migrate` applies).
static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// A connection made for checks.
pub struct Probe {
    pub conn: PgConnection,
    /// False when the server answered but the database does not exist yet (`serve` and
    /// `migrate` create it); `conn` is then connected to the server's `postgres` database.
    pub database_exists: bool,
}

/// Connects once to `database_url` (no retries, so a refused connection says so), giving up
/// after `timeout`. When the database itself is missing (SQLSTATE 3D000) it connects to the
/// server's `postgres` database instead, so the caller can still tell that the server is
/// reachable.
pub async fn connect(database_url: &str, timeout: Duration) -> Result<Probe, sqlx::Error> {
    let options: PgConnectOptions = database_url.parse()?;
    match connect_once(&options, timeout).await {
        Ok(conn) => Ok(Probe {
            conn,
            database_exists: true,
        }),
        Err(e) if is_missing_database(&e) => Ok(Probe {
            conn: connect_once(&options.clone().database("postgres"), timeout).await?,
            database_exists: false,
        }),
        Err(e) => Err(e),
    }
}

async fn connect_once(
    options: &PgConnectOptions,
    timeout: Duration,
) -> Result<PgConnection, sqlx::Error> {
    tokio::time::timeout(timeout, PgConnection::connect_with(options))
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)?
}

/// SQLSTATE 3D000 `invalid_catalog_name`: the database does not exist.
pub fn is_missing_database(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("3D000"))
}

/// The server's version string (`SHOW server_version`), e.g. `16.4 (Debian 16.4-1)`.
pub async fn server_version(conn: &mut PgConnection) -> Result<String, sqlx::Error> {
    sqlx::query_scalar("SHOW server_version")
        .fetch_one(conn)
        .await
}

/// The database server's clock (`SELECT now()`).
pub async fn server_now(conn: &mut PgConnection) -> Result<DateTime<Utc>, sqlx::Error> {
    sqlx::query_scalar("SELECT now()").fetch_one(conn).await
}

/// Where the database stands against the embedded migrations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationState {
    /// Embedded migrations already applied, unchanged.
    pub applied: usize,
    /// Embedded migrations not applied yet (version, description): `migrate` applies them.
    pub pending: Vec<(i64, String)>,
    /// Applied migrations whose file changed since (version, description): `migrate` refuses
    /// to run until the file is restored.
    pub modified: Vec<(i64, String)>,
    /// A migration that failed half-way, if any: `migrate` refuses to run.
    pub dirty: Option<i64>,
    /// Versions the database has applied that this binary does not know (a newer binary
    /// migrated it).
    pub unknown: Vec<i64>,
}

impl MigrationState {
    /// True when `migrate` (or `serve`) can bring the database up to date by itself.
    pub fn migratable(&self) -> bool {
        self.modified.is_empty() && self.dirty.is_none() && self.unknown.is_empty()
    }
}

/// Every embedded migration as if none were applied (for a database that does not exist).
pub fn embedded_migrations() -> Vec<(i64, String)> {
    MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .map(|m| (m.version, m.description.to_string()))
        .collect()
}

/// Compares the database's `_sqlx_migrations` with the embedded migrations, without creating
/// the table when it is missing.
pub async fn migration_state(conn: &mut PgConnection) -> Result<MigrationState, sqlx::Error> {
    let exists: bool =
        sqlx::query_scalar("SELECT to_regclass('public._sqlx_migrations') IS NOT NULL")
            .fetch_one(&mut *conn)
            .await?;
    if !exists {
        return Ok(MigrationState {
            pending: embedded_migrations(),
            ..MigrationState::default()
        });
    }
    let dirty = conn.dirty_version().await.map_err(migrate_error)?;
    let applied = conn
        .list_applied_migrations()
        .await
        .map_err(migrate_error)?;
    let mut state = MigrationState {
        dirty,
        ..MigrationState::default()
    };
    for m in MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
    {
        match applied.iter().find(|a| a.version == m.version) {
            None => state.pending.push((m.version, m.description.to_string())),
            Some(a) if a.checksum != m.checksum => {
                state.modified.push((m.version, m.description.to_string()))
            }
            Some(_) => state.applied += 1,
        }
    }
    state.unknown = applied
        .iter()
        .map(|a| a.version)
        .filter(|v| !MIGRATOR.iter().any(|m| m.version == *v))
        .collect();
    Ok(state)
}

fn migrate_error(e: sqlx::migrate::MigrateError) -> sqlx::Error {
    match e {
        sqlx::migrate::MigrateError::Execute(e) => e,
        other => sqlx::Error::Protocol(other.to_string()),
    }
}
