//! Crypto-shredding a user (SPEC §7), read side: the store destroys the user's data key and
//! this module erases the masked payer fields the read tables showed, in one transaction, then
//! bumps the replay generation so that every node drops its cached details.

use sqlx::PgPool;
use uuid::Uuid;

use ledger_store::keyring::Keyring;
use ledger_store::sealing::ERASED;
use ledger_store::StoreError;

use crate::replay::REPLAY_GENERATION;

/// Destroys the user's key and erases their payer data from the read table. Returns the ids
/// of the payments whose read rows changed.
pub async fn shred_user(pool: &PgPool, user_id: &str) -> Result<Vec<Uuid>, StoreError> {
    let mut tx = pool.begin().await?;
    Keyring::destroy_key(&mut tx, user_id).await?;
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE payments SET payer_name = $2, payer_account = $2 \
         WHERE user_id = $1 AND (payer_name IS NOT NULL OR payer_account IS NOT NULL) RETURNING id",
    )
    .bind(user_id)
    .bind(ERASED)
    .fetch_all(&mut *tx)
    .await?;
    // Every node's detail cache may still hold the masked payer; the nodes clear their
    // caches when this generation moves (as after a replay).
    sqlx::query(
        "INSERT INTO checkpoints (name, position) VALUES ($1, 1) ON CONFLICT (name) \
         DO UPDATE SET position = checkpoints.position + 1, updated_at = now()",
    )
    .bind(REPLAY_GENERATION)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(ids)
}
