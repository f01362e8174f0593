//! Leases on the background duties (relay, projector, refund driver, expiry driver) shared by
//! every node through PostgreSQL: at most one node holds a duty at a time, and each takeover
//! raises the duty's fencing token. Writes of a duty carry the token they were decided under;
//! the append writer (`crate::plan`, `Fence`) and the projector refuse a write whose token is
//! no longer the duty's, so a paused old holder cannot write after a new one took over.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use crate::StoreError;

/// A lease a node holds: the duty, its fencing token, and when it runs out unless renewed.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    pub duty: String,
    pub token: i64,
    pub expires_at: DateTime<Utc>,
}

/// Takes the duty if it is free or expired for at least `grace` (a standby waits that much
/// longer than a preferred node), or renews it if `holder` has it. The token stays while the
/// same holder renews in time, and goes up on every takeover. `None` when another node holds
/// a live lease.
pub async fn acquire(
    pool: &PgPool,
    duty: &str,
    holder: &str,
    ttl: Duration,
    grace: Duration,
) -> Result<Option<Held>, StoreError> {
    let row: Option<(i64, DateTime<Utc>)> = sqlx::query_as(
        "INSERT INTO duty_leases (duty, holder, token, expires_at) \
         VALUES ($1, $2, 1, now() + make_interval(secs => $3)) \
         ON CONFLICT (duty) DO UPDATE SET holder = EXCLUDED.holder, \
           token = CASE WHEN duty_leases.holder = EXCLUDED.holder \
                         AND duty_leases.expires_at > now() \
                        THEN duty_leases.token ELSE duty_leases.token + 1 END, \
           expires_at = EXCLUDED.expires_at \
         WHERE duty_leases.holder = EXCLUDED.holder \
            OR duty_leases.expires_at <= now() - make_interval(secs => $4) \
         RETURNING token, expires_at",
    )
    .bind(duty)
    .bind(holder)
    .bind(ttl.as_secs_f64())
    .bind(grace.as_secs_f64())
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(token, expires_at)| Held {
        duty: duty.to_owned(),
        token,
        expires_at,
    }))
}

/// Gives a duty up (on shutdown), so another node takes it at once instead of after expiry.
pub async fn release(pool: &PgPool, duty: &str, holder: &str) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE duty_leases SET expires_at = now() - interval '1 second' \
         WHERE duty = $1 AND holder = $2",
    )
    .bind(duty)
    .bind(holder)
    .execute(pool)
    .await?;
    Ok(())
}

/// Whether `token` is still the duty's, checked inside the caller's transaction; the row is
/// locked (`FOR SHARE`) so that no takeover can commit until the caller's transaction ends.
pub async fn still_held(
    conn: &mut PgConnection,
    duty: &str,
    token: i64,
) -> Result<bool, StoreError> {
    let current: Option<i64> =
        sqlx::query_scalar("SELECT token FROM duty_leases WHERE duty = $1 FOR SHARE")
            .bind(duty)
            .fetch_optional(conn)
            .await?;
    Ok(current == Some(token))
}

/// Every lease, for `/readyz` and operators: (duty, holder, token, expires_at).
pub async fn all(pool: &PgPool) -> Result<Vec<(String, String, i64, DateTime<Utc>)>, StoreError> {
    Ok(
        sqlx::query_as("SELECT duty, holder, token, expires_at FROM duty_leases ORDER BY duty")
            .fetch_all(pool)
            .await?,
    )
}
