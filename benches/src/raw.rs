//! The physical limit: plain INSERTs of one event-sized row per transaction (autocommit), at
//! many concurrent connections, into a copy of the `events` table (same columns, constraints
//! and indexes; no triggers, no append lock, no hash chain, no HTTP).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use sqlx::PgPool;
use uuid::Uuid;

use super::load::{Recorder, Step, Worker};
use ledger_store::event::{canonical_bytes, sha256_hex, truncate_to_micros, GENESIS_HASH};

pub const TABLE: &str = "bench_raw_events";
const INSERT: &str =
    "INSERT INTO bench_raw_events (position, event_id, stream_id, version, event_type, \
    data, metadata, recorded_at, prev_hash, hash, canonical) \
    VALUES ($1, $2, $3, 1, 'created', $4, $5, $6, $7, $8, $9)";

/// Creates the table (a structural copy of `events`).
pub async fn prepare(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query(&format!("CREATE TABLE {TABLE} (LIKE events INCLUDING ALL)"))
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn cleanup(pool: &PgPool) {
    let _ = sqlx::query(&format!("DROP TABLE IF EXISTS {TABLE}"))
        .execute(pool)
        .await;
}

/// A realistic `created` event's data and metadata, as the service writes them.
pub fn sample_payload() -> (serde_json::Value, serde_json::Value) {
    let id = Uuid::now_v7();
    let payment_no = format!("P{}", id.simple()).to_uppercase();
    let data = serde_json::json!({
        "payment_id": id,
        "payment_no": payment_no,
        "order_id": format!("BENCH-{}", Uuid::now_v7().simple()),
        "user_id": "bench-user-1",
        "amount": "100.00",
        "currency": "CNY",
        "payment_method": "alipay",
        "payment_url": format!("http://127.0.0.1:8080/sandbox/pay/{payment_no}"),
    });
    let metadata = serde_json::json!({
        "actor_key_id": "bench-admin",
        "request_id": Uuid::now_v7().to_string(),
    });
    (data, metadata)
}

pub struct RawWorker {
    pool: PgPool,
    position: Arc<AtomicI64>,
    data: Arc<serde_json::Value>,
    metadata: Arc<serde_json::Value>,
}

impl RawWorker {
    pub fn new(
        pool: PgPool,
        position: Arc<AtomicI64>,
        payload: &(serde_json::Value, serde_json::Value),
    ) -> Self {
        Self {
            pool,
            position,
            data: Arc::new(payload.0.clone()),
            metadata: Arc::new(payload.1.clone()),
        }
    }
}

impl Worker for RawWorker {
    async fn step(&mut self, rec: &mut Recorder) -> Step {
        let position = self.position.fetch_add(1, Ordering::Relaxed) + 1;
        let (event_id, stream_id) = (Uuid::now_v7(), Uuid::now_v7());
        let at = truncate_to_micros(Utc::now());
        // The same bytes the writer stores, so the row has the size of a real event.
        let canonical = canonical_bytes(
            position,
            event_id,
            stream_id,
            1,
            "created",
            &self.data,
            &self.metadata,
            at,
            GENESIS_HASH,
        );
        let hash = sha256_hex(canonical.as_bytes());
        let started = Instant::now();
        let outcome = sqlx::query(INSERT)
            .bind(position)
            .bind(event_id)
            .bind(stream_id)
            .bind(sqlx::types::Json(&*self.data))
            .bind(sqlx::types::Json(&*self.metadata))
            .bind(at)
            .bind(GENESIS_HASH)
            .bind(&hash)
            .bind(&canonical)
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        rec.record(started, outcome);
        Step::Continue
    }
}
