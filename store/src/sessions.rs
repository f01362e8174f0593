//! Staff console sessions and the sign-in throttle, shared by every node through PostgreSQL
//! (issue 12).
//!
//! A session is found by the SHA-256 of its cookie token (the token itself is never stored),
//! and every use slides its idle timeout forward in the same statement that checks it, so a
//! session that has ended on one node has ended on all of them. Times come from the caller
//! (the service's clock), so tests can move them. This module knows no HTTP and no roles: the
//! role is the caller's text.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::StoreError;

/// A session as the service creates it.
#[derive(Debug, Clone)]
pub struct NewSession<'a> {
    pub token_hash: &'a str,
    pub key_id: &'a str,
    pub role: &'a str,
    pub csrf_token: &'a str,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A live session.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Session {
    pub key_id: String,
    pub role: String,
    pub csrf_token: String,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Stores a new session and forgets the key's oldest ones beyond `per_key_max`, in one
/// transaction, so one key cannot pile up sessions without bound.
pub async fn create(
    pool: &PgPool,
    session: &NewSession<'_>,
    per_key_max: i64,
) -> Result<(), StoreError> {
    assert!(per_key_max > 0, "a key may hold at least one session");
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO console_sessions \
         (token_hash, key_id, role, csrf_token, created_at, last_seen_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $5, $6)",
    )
    .bind(session.token_hash)
    .bind(session.key_id)
    .bind(session.role)
    .bind(session.csrf_token)
    .bind(session.created_at)
    .bind(session.expires_at)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "DELETE FROM console_sessions WHERE token_hash IN (\
         SELECT token_hash FROM console_sessions WHERE key_id = $1 \
         ORDER BY created_at DESC, token_hash OFFSET $2)",
    )
    .bind(session.key_id)
    .bind(per_key_max)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The session named by `token_hash` if it is live at `now` (before its absolute end and used
/// within `idle`); using it moves its last use to `now`.
pub async fn touch(
    pool: &PgPool,
    token_hash: &str,
    now: DateTime<Utc>,
    idle: Duration,
) -> Result<Option<Session>, StoreError> {
    let row = sqlx::query_as::<_, Session>(
        "UPDATE console_sessions SET last_seen_at = GREATEST(last_seen_at, $2) \
         WHERE token_hash = $1 AND expires_at > $2 \
         AND last_seen_at + make_interval(secs => $3) > $2 \
         RETURNING key_id, role, csrf_token, created_at, last_seen_at, expires_at",
    )
    .bind(token_hash)
    .bind(now)
    .bind(idle.as_secs_f64())
    .fetch_optional(pool)
    .await?;
    Ok(row)
}

/// Ends a session. Returns whether there was one.
pub async fn delete(pool: &PgPool, token_hash: &str) -> Result<bool, StoreError> {
    let n = sqlx::query("DELETE FROM console_sessions WHERE token_hash = $1")
        .bind(token_hash)
        .execute(pool)
        .await?
        .rows_affected();
    Ok(n == 1)
}

/// Forgets sessions that ended by `now` and failures older than `window`. Returns how many
/// rows went.
pub async fn purge(
    pool: &PgPool,
    now: DateTime<Utc>,
    idle: Duration,
    window: Duration,
) -> Result<u64, StoreError> {
    let sessions = sqlx::query(
        "DELETE FROM console_sessions \
         WHERE expires_at <= $1 OR last_seen_at + make_interval(secs => $2) <= $1",
    )
    .bind(now)
    .bind(idle.as_secs_f64())
    .execute(pool)
    .await?
    .rows_affected();
    let failures = sqlx::query(
        "DELETE FROM console_signin_failures WHERE failed_at <= $1 - make_interval(secs => $2)",
    )
    .bind(now)
    .bind(window.as_secs_f64())
    .execute(pool)
    .await?
    .rows_affected();
    Ok(sessions + failures)
}

/// Records a failed sign-in for a key id from an address.
pub async fn record_failure(
    pool: &PgPool,
    key_id: &str,
    client_ip: Option<&str>,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO console_signin_failures (key_id, client_ip, failed_at) VALUES ($1, $2, $3)",
    )
    .bind(key_id)
    .bind(client_ip)
    .bind(at)
    .execute(pool)
    .await?;
    Ok(())
}

/// Forgets a key's failures (after it signed in).
pub async fn clear_failures(pool: &PgPool, key_id: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM console_signin_failures WHERE key_id = $1")
        .bind(key_id)
        .execute(pool)
        .await?;
    Ok(())
}

/// When sign-ins for `key_id` from `client_ip` may be tried again, if `max` failures of the
/// key, or of the address, fall within the `window` before `now`: the moment the oldest of the
/// newest `max` leaves the window.
pub async fn blocked_until(
    pool: &PgPool,
    key_id: &str,
    client_ip: Option<&str>,
    now: DateTime<Utc>,
    window: Duration,
    max: u32,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    assert!(max > 0, "the throttle allows at least one failure");
    let since = now - chrono::Duration::milliseconds(window.as_millis() as i64);
    let offset = i64::from(max) - 1;
    let by_key: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT failed_at FROM console_signin_failures WHERE key_id = $1 AND failed_at > $2 \
         ORDER BY failed_at DESC OFFSET $3 LIMIT 1",
    )
    .bind(key_id)
    .bind(since)
    .bind(offset)
    .fetch_optional(pool)
    .await?;
    let by_address: Option<DateTime<Utc>> = match client_ip {
        Some(ip) => {
            sqlx::query_scalar(
                "SELECT failed_at FROM console_signin_failures \
                 WHERE client_ip = $1 AND failed_at > $2 \
                 ORDER BY failed_at DESC OFFSET $3 LIMIT 1",
            )
            .bind(ip)
            .bind(since)
            .bind(offset)
            .fetch_optional(pool)
            .await?
        }
        None => None,
    };
    let lifts = |t: DateTime<Utc>| t + chrono::Duration::milliseconds(window.as_millis() as i64);
    Ok(by_key.max(by_address).map(lifts))
}
