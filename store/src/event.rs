//! Events as stored and served, and the canonical bytes their hashes cover.
//!
//! The canonical form is JSON with object keys sorted at every level and no whitespace,
//! written by `canonical_json` here rather than by serde's map ordering, so that no feature
//! flag of a dependency can change what a hash covers. The bytes are stored verbatim next to
//! the columns, and verification checks both that the hash matches the bytes and that the
//! columns say what the bytes say.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use ledger_domain::events::PaymentEvent;

use crate::StoreError;

/// `prev_hash` of a stream's first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An event not yet appended; ids are chosen by the caller so that a retry is the same event.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub event_type: &'static str,
    pub data: Value,
    pub metadata: Value,
}

/// An event as committed to the log.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub position: i64,
    pub event_id: Uuid,
    pub stream_id: Uuid,
    pub version: i32,
    pub event_type: String,
    pub data: Value,
    pub metadata: Value,
    pub recorded_at: DateTime<Utc>,
    pub prev_hash: String,
    pub hash: String,
}

/// The envelope served by the API and published on NATS (SPEC §4, §11).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, utoipa::ToSchema)]
pub struct EventEnvelope {
    pub event_id: Uuid,
    pub position: i64,
    pub payment_id: Uuid,
    pub version: i32,
    #[serde(rename = "type")]
    pub event_type: String,
    #[schema(value_type = Object)]
    pub data: Value,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub recorded_at: String,
    pub prev_hash: String,
    pub hash: String,
}

impl StoredEvent {
    pub fn envelope(&self) -> EventEnvelope {
        EventEnvelope {
            event_id: self.event_id,
            position: self.position,
            payment_id: self.stream_id,
            version: self.version,
            event_type: self.event_type.clone(),
            data: self.data.clone(),
            metadata: self.metadata.clone(),
            recorded_at: format_time(self.recorded_at),
            prev_hash: self.prev_hash.clone(),
            hash: self.hash.clone(),
        }
    }

    /// The canonical bytes of this event (what `hash` covers).
    pub fn canonical(&self) -> String {
        canonical_bytes(
            self.position,
            self.event_id,
            self.stream_id,
            self.version,
            &self.event_type,
            &self.data,
            &self.metadata,
            self.recorded_at,
            &self.prev_hash,
        )
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct EventRow {
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
}

impl From<EventRow> for StoredEvent {
    fn from(r: EventRow) -> Self {
        StoredEvent {
            position: r.position,
            event_id: r.event_id,
            stream_id: r.stream_id,
            version: r.version,
            event_type: r.event_type,
            data: r.data.0,
            metadata: r.metadata.0,
            recorded_at: r.recorded_at,
            prev_hash: r.prev_hash,
            hash: r.hash,
        }
    }
}

/// RFC 3339 UTC with microseconds: the precision PostgreSQL keeps, so a time survives a
/// round trip through the database unchanged.
pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Truncates a time to the microsecond precision of `timestamptz`.
pub fn truncate_to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).expect("a valid time stays valid")
}

#[allow(clippy::too_many_arguments)]
pub fn canonical_bytes(
    position: i64,
    event_id: Uuid,
    stream_id: Uuid,
    version: i32,
    event_type: &str,
    data: &Value,
    metadata: &Value,
    recorded_at: DateTime<Utc>,
    prev_hash: &str,
) -> String {
    let doc = serde_json::json!({
        "position": position,
        "event_id": event_id.to_string(),
        "payment_id": stream_id.to_string(),
        "version": version,
        "type": event_type,
        "data": data,
        "metadata": metadata,
        "recorded_at": format_time(recorded_at),
        "prev_hash": prev_hash,
    });
    let mut out = String::with_capacity(512);
    canonical_json(&doc, &mut out);
    out
}

/// Writes JSON with sorted keys and no insignificant whitespace.
pub fn canonical_json(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k).expect("strings serialize"));
                out.push(':');
                canonical_json(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(v, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&serde_json::to_string(scalar).expect("scalars serialize")),
    }
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Decodes stored events into domain events.
pub fn decode_all(events: &[StoredEvent]) -> Result<Vec<PaymentEvent>, StoreError> {
    events.iter().map(decode).collect()
}

/// Decodes one stored event; a row that does not decode is a malformed log, never a panic.
pub fn decode(e: &StoredEvent) -> Result<PaymentEvent, StoreError> {
    PaymentEvent::from_parts(&e.event_type, e.data.clone())
        .map_err(|err| StoreError::Malformed(format!("event at position {}: {err}", e.position)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let v: Value =
            serde_json::from_str(r#"{"b":1,"a":{"z":[{"y":1,"x":2}],"c":"é"}}"#).unwrap();
        let mut out = String::new();
        canonical_json(&v, &mut out);
        assert_eq!(out, r#"{"a":{"c":"é","z":[{"x":2,"y":1}]},"b":1}"#);
    }

    #[test]
    fn canonical_bytes_change_when_any_field_changes() {
        let id = Uuid::nil();
        let t = truncate_to_micros(Utc::now());
        let d = serde_json::json!({"amount": "1.00"});
        let m = serde_json::json!({});
        let base = canonical_bytes(1, id, id, 1, "created", &d, &m, t, GENESIS_HASH);
        assert_ne!(
            base,
            canonical_bytes(2, id, id, 1, "created", &d, &m, t, GENESIS_HASH)
        );
        assert_ne!(
            base,
            canonical_bytes(1, id, id, 2, "created", &d, &m, t, GENESIS_HASH)
        );
        assert_ne!(
            base,
            canonical_bytes(1, id, id, 1, "paid", &d, &m, t, GENESIS_HASH)
        );
        let d2 = serde_json::json!({"amount": "1.01"});
        assert_ne!(
            base,
            canonical_bytes(1, id, id, 1, "created", &d2, &m, t, GENESIS_HASH)
        );
        assert_eq!(
            base,
            canonical_bytes(1, id, id, 1, "created", &d, &m, t, GENESIS_HASH)
        );
    }
}
