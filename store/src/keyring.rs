//! Per-user data keys for payer data (SPEC §7): created on first use, stored wrapped by the
//! master key, and destroyed by `ledger shred` (crypto-shredding). Destroying a key makes that
//! user's sealed payer data unreadable while the immutable log and its hashes stay intact.

use sqlx::PgPool;
use uuid::Uuid;

use crate::sealing::{self as payer, DataKey, MasterKey, SealedPayer, ERASED};
use crate::StoreError;

#[derive(Clone)]
pub struct Keyring {
    pool: PgPool,
    master: MasterKey,
}

/// Masked payer fields as the read side shows them.
pub type Masked = (Option<String>, Option<String>);

impl Keyring {
    pub fn new(pool: PgPool, master: MasterKey) -> Self {
        Self { pool, master }
    }

    /// The user's data key, created if the user has none (or had theirs shredded).
    pub async fn data_key(&self, user_id: &str) -> Result<DataKey, StoreError> {
        for _ in 0..3 {
            let wrapped: Option<Option<Vec<u8>>> =
                sqlx::query_scalar("SELECT wrapped_key FROM user_keys WHERE user_id = $1")
                    .bind(user_id)
                    .fetch_optional(&self.pool)
                    .await?;
            if let Some(Some(w)) = wrapped {
                return payer::unwrap_key(&self.master, user_id, &w).map_err(|e| {
                    StoreError::Malformed(format!("data key of a user cannot be unwrapped: {e}"))
                });
            }
            let key = DataKey::generate();
            let w = payer::wrap_key(&self.master, user_id, &key);
            let stored = sqlx::query(
                "INSERT INTO user_keys (user_id, wrapped_key) VALUES ($1, $2) \
                 ON CONFLICT (user_id) DO UPDATE SET wrapped_key = EXCLUDED.wrapped_key, \
                 shredded_at = NULL, created_at = now() WHERE user_keys.wrapped_key IS NULL",
            )
            .bind(user_id)
            .bind(&w)
            .execute(&self.pool)
            .await?
            .rows_affected();
            if stored == 1 {
                return Ok(key);
            }
            // Another request created the key first: read theirs.
        }
        Err(StoreError::Unavailable(
            "could not settle the user's data key".into(),
        ))
    }

    /// Opens and masks sealed payer data; `[erased]` when the key is gone.
    pub async fn masked(
        &self,
        user_id: &str,
        payment_id: Uuid,
        sealed: &SealedPayer,
    ) -> Result<Masked, StoreError> {
        let wrapped: Option<Option<Vec<u8>>> =
            sqlx::query_scalar("SELECT wrapped_key FROM user_keys WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?;
        let opened = wrapped
            .flatten()
            .and_then(|w| payer::unwrap_key(&self.master, user_id, &w).ok())
            .and_then(|k| payer::open(&k, &payment_id.to_string(), sealed).ok());
        Ok(match opened {
            Some(p) => (
                p.name.as_deref().map(payer::mask_name),
                p.account.as_deref().map(payer::mask_account),
            ),
            None => (Some(ERASED.to_owned()), Some(ERASED.to_owned())),
        })
    }

    /// Destroys the user's data key inside the caller's transaction (crypto-shredding): the
    /// sealed payer data in the log can never be opened again. The read side erases what it
    /// showed in the same transaction (`ledger_projections::shred`).
    pub async fn destroy_key(
        conn: &mut sqlx::PgConnection,
        user_id: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO user_keys (user_id, wrapped_key, shredded_at) VALUES ($1, NULL, now()) \
             ON CONFLICT (user_id) DO UPDATE SET wrapped_key = NULL, shredded_at = now()",
        )
        .bind(user_id)
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// The wrapped data keys of the given users (`None` for a shredded key), for the read side to
/// open payer data inside its own transaction.
pub async fn wrapped_keys(
    conn: &mut sqlx::PgConnection,
    users: &[&str],
) -> Result<std::collections::HashMap<String, Option<Vec<u8>>>, sqlx::Error> {
    let keys: Vec<(String, Option<Vec<u8>>)> =
        sqlx::query_as("SELECT user_id, wrapped_key FROM user_keys WHERE user_id = ANY($1)")
            .bind(users)
            .fetch_all(conn)
            .await?;
    Ok(keys.into_iter().collect())
}

/// Every user's wrapped data key (`None` once shredded), for a rebuild that opens the payer
/// data of every payment.
pub async fn all_wrapped_keys(
    pool: &sqlx::PgPool,
) -> Result<std::collections::HashMap<String, Option<Vec<u8>>>, sqlx::Error> {
    let keys: Vec<(String, Option<Vec<u8>>)> =
        sqlx::query_as("SELECT user_id, wrapped_key FROM user_keys")
            .fetch_all(pool)
            .await?;
    Ok(keys.into_iter().collect())
}
