//! Request bookkeeping shared by every node through PostgreSQL: anti-replay nonces and
//! idempotency answers (SPEC §6, §11).
//!
//! Both are written by the append writer in the same transaction as the events of the
//! request they belong to (`crate::plan`). This module reads answers back for replays,
//! records the nonce of a request that appends nothing through another path, and purges what
//! has expired.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::writer::IDEMPOTENCY_TTL_HOURS;
use super::StoreError;

/// An answer stored under an idempotency key.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAnswer {
    pub request_hash: String,
    pub status: u16,
    pub response: String,
}

/// The answer stored under a key, if it was answered within the last 24 h.
pub async fn idempotency_answer(
    pool: &PgPool,
    key_id: &str,
    route: &str,
    idem_key: &str,
) -> Result<Option<StoredAnswer>, StoreError> {
    let row: Option<(String, i16, String)> = sqlx::query_as(
        "SELECT request_hash, status, response FROM idempotency \
         WHERE key_id = $1 AND route = $2 AND idem_key = $3 \
         AND created_at >= now() - make_interval(hours => $4)",
    )
    .bind(key_id)
    .bind(route)
    .bind(idem_key)
    .bind(IDEMPOTENCY_TTL_HOURS)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(request_hash, status, response)| StoredAnswer {
        request_hash,
        status: status as u16,
        response,
    }))
}

/// Records a nonce for a key id outside the writer (for POSTs that append nothing, such as a
/// sign-in). Returns false when it was already used (a replay).
pub async fn use_nonce(
    pool: &PgPool,
    key_id: &str,
    nonce: &str,
    expires_at: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO nonces (key_id, nonce, expires_at) VALUES ($1, $2, $3) \
         ON CONFLICT DO NOTHING",
    )
    .bind(key_id)
    .bind(nonce)
    .bind(expires_at)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Forgets expired nonces and idempotency answers. Returns how many rows went.
pub async fn purge_expired(pool: &PgPool) -> Result<u64, StoreError> {
    let nonces = sqlx::query("DELETE FROM nonces WHERE expires_at < now()")
        .execute(pool)
        .await?
        .rows_affected();
    let keys = sqlx::query(
        "DELETE FROM idempotency WHERE created_at < now() - make_interval(hours => $1)",
    )
    .bind(IDEMPOTENCY_TTL_HOURS)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(nonces + keys)
}
