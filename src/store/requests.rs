//! Request bookkeeping shared by every node through PostgreSQL: anti-replay nonces and
//! idempotency keys (SPEC §6, §11).

use std::time::Duration;

use sqlx::PgPool;

use super::StoreError;

/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_TTL_HOURS: i64 = 24;

/// Records a nonce for a key id. Returns false when it was already used (a replay).
pub async fn use_nonce(
    pool: &PgPool,
    key_id: &str,
    nonce: &str,
    keep: Duration,
) -> Result<bool, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO nonces (key_id, nonce, expires_at) \
         VALUES ($1, $2, now() + make_interval(secs => $3)) ON CONFLICT DO NOTHING",
    )
    .bind(key_id)
    .bind(nonce)
    .bind(keep.as_secs_f64())
    .execute(pool)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// What to do with a request carrying an `Idempotency-Key`.
#[derive(Debug, PartialEq)]
pub enum IdempotencyBegin {
    /// This request owns the key: run it, then complete the key.
    Started,
    /// The key was used before with the same body: answer this again.
    Replay { status: u16, response: String },
    /// The key was used before with a different body.
    Mismatch,
    /// The first request with this key is still running.
    InProgress,
}

/// (request_hash, status, response, lease expired, key expired) of a stored request.
type StoredRequest = (String, Option<i16>, Option<String>, bool, bool);

/// Claims an idempotency key, or tells what happened to it before. `lease` bounds how long a
/// crashed owner can block the key: after it, another request may take over (nothing was
/// committed, because completion is written in the same transaction as the events).
pub async fn idempotency_begin(
    pool: &PgPool,
    key_id: &str,
    route: &str,
    idem_key: &str,
    request_hash: &str,
    lease: Duration,
) -> Result<IdempotencyBegin, StoreError> {
    let lease_secs = lease.as_secs_f64();
    let inserted = sqlx::query(
        "INSERT INTO idempotency (key_id, route, idem_key, request_hash, lease_until) \
         VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5)) ON CONFLICT DO NOTHING",
    )
    .bind(key_id)
    .bind(route)
    .bind(idem_key)
    .bind(request_hash)
    .bind(lease_secs)
    .execute(pool)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(IdempotencyBegin::Started);
    }
    let row: Option<StoredRequest> = sqlx::query_as(
        "SELECT request_hash, status, response, lease_until < now(), \
         created_at < now() - make_interval(hours => $4) \
         FROM idempotency WHERE key_id = $1 AND route = $2 AND idem_key = $3",
    )
    .bind(key_id)
    .bind(route)
    .bind(idem_key)
    .bind(IDEMPOTENCY_TTL_HOURS as i32)
    .fetch_optional(pool)
    .await?;
    let Some((hash, status, response, lease_expired, key_expired)) = row else {
        // Deleted between our insert and our read (abandoned): try once more from the top.
        return Box::pin(idempotency_begin(
            pool,
            key_id,
            route,
            idem_key,
            request_hash,
            lease,
        ))
        .await;
    };
    if key_expired {
        sqlx::query(
            "DELETE FROM idempotency WHERE key_id = $1 AND route = $2 AND idem_key = $3 \
             AND created_at < now() - make_interval(hours => $4)",
        )
        .bind(key_id)
        .bind(route)
        .bind(idem_key)
        .bind(IDEMPOTENCY_TTL_HOURS as i32)
        .execute(pool)
        .await?;
        return Box::pin(idempotency_begin(
            pool,
            key_id,
            route,
            idem_key,
            request_hash,
            lease,
        ))
        .await;
    }
    if hash != request_hash {
        return Ok(IdempotencyBegin::Mismatch);
    }
    if let (Some(status), Some(response)) = (status, response) {
        return Ok(IdempotencyBegin::Replay {
            status: status as u16,
            response,
        });
    }
    if lease_expired {
        let taken = sqlx::query(
            "UPDATE idempotency SET lease_until = now() + make_interval(secs => $4) \
             WHERE key_id = $1 AND route = $2 AND idem_key = $3 AND status IS NULL \
             AND lease_until < now()",
        )
        .bind(key_id)
        .bind(route)
        .bind(idem_key)
        .bind(lease_secs)
        .execute(pool)
        .await?
        .rows_affected();
        if taken == 1 {
            return Ok(IdempotencyBegin::Started);
        }
    }
    Ok(IdempotencyBegin::InProgress)
}

/// Stores the answer of a request that appended nothing (an error, a duplicate notification).
pub async fn idempotency_complete(
    pool: &PgPool,
    key_id: &str,
    route: &str,
    idem_key: &str,
    status: u16,
    response: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE idempotency SET status = $4, response = $5 \
         WHERE key_id = $1 AND route = $2 AND idem_key = $3 AND status IS NULL",
    )
    .bind(key_id)
    .bind(route)
    .bind(idem_key)
    .bind(status as i16)
    .bind(response)
    .execute(pool)
    .await?;
    Ok(())
}

/// Releases a key whose request failed for a reason worth retrying (the database was down).
pub async fn idempotency_abandon(
    pool: &PgPool,
    key_id: &str,
    route: &str,
    idem_key: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "DELETE FROM idempotency WHERE key_id = $1 AND route = $2 AND idem_key = $3 \
         AND status IS NULL",
    )
    .bind(key_id)
    .bind(route)
    .bind(idem_key)
    .execute(pool)
    .await?;
    Ok(())
}

/// Forgets expired nonces and idempotency keys. Returns how many rows went.
pub async fn purge_expired(pool: &PgPool) -> Result<u64, StoreError> {
    let nonces = sqlx::query("DELETE FROM nonces WHERE expires_at < now()")
        .execute(pool)
        .await?
        .rows_affected();
    let keys = sqlx::query(
        "DELETE FROM idempotency WHERE created_at < now() - make_interval(hours => $1)",
    )
    .bind(IDEMPOTENCY_TTL_HOURS as i32)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(nonces + keys)
}
