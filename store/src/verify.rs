//! Verification of the hash chain from genesis (SPEC §3, `ledger verify`, `GET /audit/verify`).
//!
//! For every event, in position order, it checks that:
//! 1. positions are dense from 1 (a deleted event or stream leaves a hole);
//! 2. `hash` is the SHA-256 of the stored canonical bytes;
//! 3. the canonical bytes say what the columns say (an edit to `data` alone is caught);
//! 4. the event links to the previous event of its stream (`prev_hash`, version + 1);
//!
//! and it folds every hash into a running global root, which a signed digest pins down: the
//! log "still extends the digest" when the root at the digest's position is unchanged.

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::event::{canonical_bytes, sha256_hex, GENESIS_HASH};
use super::StoreError;
use crate::digest::chain_root;

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct VerifyReport {
    pub ok: bool,
    pub events_checked: i64,
    pub head_position: i64,
    pub head_hash: String,
    /// The global running root over every event hash up to `head_position`.
    pub root_hash: String,
    pub first_broken_position: Option<i64>,
    /// Why the first broken event is broken.
    pub problem: Option<String>,
    /// Root at `pinned_position`, when the caller asked for one (digest checks).
    #[serde(skip)]
    pub pinned_root: Option<String>,
}

#[derive(sqlx::FromRow)]
struct Row {
    position: i64,
    event_id: Uuid,
    stream_id: Uuid,
    version: i32,
    event_type: String,
    data: sqlx::types::Json<Value>,
    metadata: sqlx::types::Json<Value>,
    recorded_at: DateTime<Utc>,
    prev_hash: String,
    hash: String,
    canonical: String,
    /// The version and hash of the stream's previous event in position order (computed by
    /// the database, so verification holds no per-stream state: its memory is bounded
    /// whatever the size of the log).
    previous_version: Option<i32>,
    previous_hash: Option<String>,
}

/// Checks the whole log. `pinned_position`, if set, also records the global root there.
/// `progress` is called with the number of events checked so far (for progress bars).
pub async fn verify_log(
    pool: &PgPool,
    pinned_position: Option<i64>,
    mut progress: impl FnMut(i64),
) -> Result<VerifyReport, StoreError> {
    let mut rows = sqlx::query_as::<_, Row>(
        "SELECT position, event_id, stream_id, version, event_type, data, metadata, \
         recorded_at, prev_hash, hash, canonical, \
         LAG(version) OVER w AS previous_version, LAG(hash) OVER w AS previous_hash \
         FROM events WINDOW w AS (PARTITION BY stream_id ORDER BY position) ORDER BY position",
    )
    .fetch(pool);
    let mut checked: i64 = 0;
    let mut expected_position: i64 = 1;
    let mut root = GENESIS_HASH.to_owned();
    let mut head_hash = GENESIS_HASH.to_owned();
    let mut head_position = 0;
    let mut broken: Option<(i64, String)> = None;
    let mut pinned_root = None;
    if pinned_position == Some(0) {
        pinned_root = Some(root.clone());
    }
    while let Some(row) = rows.try_next().await? {
        checked += 1;
        if broken.is_none() {
            if let Some(problem) = check_row(&row, expected_position) {
                // A hole is located at the first missing position, not at the event after it.
                let at = if row.position > expected_position {
                    expected_position
                } else {
                    row.position
                };
                broken = Some((at, problem));
            }
        }
        expected_position = row.position + 1;
        root = chain_root(&root, &row.hash);
        head_hash = row.hash;
        head_position = row.position;
        if pinned_position == Some(row.position) {
            pinned_root = Some(root.clone());
        }
        if checked % 10_000 == 0 {
            progress(checked);
        }
    }
    progress(checked);
    Ok(VerifyReport {
        ok: broken.is_none(),
        events_checked: checked,
        head_position,
        head_hash,
        root_hash: root,
        first_broken_position: broken.as_ref().map(|b| b.0),
        problem: broken.map(|b| b.1),
        pinned_root,
    })
}

fn check_row(row: &Row, expected_position: i64) -> Option<String> {
    if row.position != expected_position {
        return Some(if row.position > expected_position {
            format!(
                "position {expected_position} is missing: the event after {} is at {}",
                expected_position - 1,
                row.position
            )
        } else {
            format!(
                "position {} follows {}: events are reordered",
                row.position,
                expected_position - 1
            )
        });
    }
    if sha256_hex(row.canonical.as_bytes()) != row.hash {
        return Some("hash does not match the event's canonical bytes".into());
    }
    let recomputed = canonical_bytes(
        row.position,
        row.event_id,
        row.stream_id,
        row.version,
        &row.event_type,
        &row.data.0,
        &row.metadata.0,
        row.recorded_at,
        &row.prev_hash,
    );
    if recomputed != row.canonical {
        return Some("stored columns differ from the hashed canonical bytes".into());
    }
    let prev_version = row.previous_version.unwrap_or(0);
    let prev_hash = row.previous_hash.as_deref().unwrap_or(GENESIS_HASH);
    if row.version != prev_version + 1 {
        return Some(format!(
            "version {} of its payment follows version {prev_version}",
            row.version
        ));
    }
    if row.prev_hash != prev_hash {
        return Some("prev_hash does not link to the payment's previous event".into());
    }
    None
}
