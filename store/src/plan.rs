//! The pure half of the group-commit writer: given a batch of append requests and what the
//! executor read under the append lock, decide per request whether it commits, and build
//! every row the transaction writes. No I/O, no clock (the database's time is read under the
//! lock and passed in), so every rule of appending is tested without a database.
//!
//! Checked per request, in this order, each refusing only its own request:
//! 1. the anti-replay nonce is unused (`NonceUsed`);
//! 2. the idempotency key has no answer yet (`IdempotencyTaken`): answers are written only
//!    here, inside the append transaction, so a key is owned by whoever commits it first and
//!    no running request can be taken over;
//! 3. the stream is at the expected version (`Conflict`);
//! 4. every claim is free or already the stream's own (`ClaimTaken`);
//! 5. a request made by a background duty carries the duty's fencing token, and it is still
//!    the duty's (`Fenced`): a paused old leader cannot write after another took over.
//!
//! A committed request's events get dense positions after the head, the next versions of
//! their stream, one `recorded_at` (never before the last event's), and hash-chain links; its
//! nonce and idempotency answer are written with them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::event::{canonical_bytes, sha256_hex, truncate_to_micros, NewEvent, StoredEvent};
use crate::GENESIS_HASH;

/// A cross-stream unique key owned by a stream, e.g. ("order", order_id).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Claim {
    pub scope: &'static str,
    pub key: String,
}

/// Builds a request's answer from the events it appended (they carry positions and time).
pub type Respond = Arc<dyn Fn(&[StoredEvent]) -> (u16, Value) + Send + Sync>;

/// An anti-replay nonce to record with the request (SPEC §6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonceUse {
    pub key_id: String,
    pub nonce: String,
    pub expires_at: DateTime<Utc>,
}

/// The idempotency key the request's answer is stored under (SPEC §11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub key_id: String,
    pub route: String,
    pub idem_key: String,
    /// SHA-256 of the request body: the same key with another body is refused before this.
    pub request_hash: String,
}

impl IdempotencyKey {
    fn id(&self) -> (String, String, String) {
        (
            self.key_id.clone(),
            self.route.clone(),
            self.idem_key.clone(),
        )
    }
}

/// The lease a background duty's request was decided under (see `crate::leases`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub duty: &'static str,
    pub token: i64,
}

/// One request to the writer. `events` may be empty: the request then only records its
/// nonce and its answer (a refusal, a duplicate notification) in one commit.
pub struct AppendRequest {
    pub stream_id: Uuid,
    /// The version the caller's decision was based on (0 for a new stream). Ignored when
    /// `events` is empty.
    pub expected_version: u32,
    pub events: Vec<NewEvent>,
    pub claims: Vec<Claim>,
    pub releases: Vec<Claim>,
    pub nonce: Option<NonceUse>,
    pub idempotency: Option<IdempotencyKey>,
    /// Builds the answer inside the transaction; stored when `idempotency` is set.
    pub respond: Option<Respond>,
    /// Set when a background duty makes the request.
    pub fence: Option<Fence>,
}

impl AppendRequest {
    /// A request that appends `events` to `stream_id` after `expected_version`.
    pub fn events(stream_id: Uuid, expected_version: u32, events: Vec<NewEvent>) -> Self {
        Self {
            stream_id,
            expected_version,
            events,
            claims: Vec::new(),
            releases: Vec::new(),
            nonce: None,
            idempotency: None,
            respond: None,
            fence: None,
        }
    }
}

/// Why one request of a batch was not committed (the others are unaffected).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Conflict {
        expected: u32,
        actual: u32,
    },
    ClaimTaken {
        scope: String,
        key: String,
        owner: Uuid,
    },
    NonceUsed,
    IdempotencyTaken,
    /// The duty's lease moved to another node since the request was decided.
    Fenced,
}

/// What a committed request appended, and its answer exactly as stored.
#[derive(Debug, Clone)]
pub struct Appended {
    pub events: Vec<StoredEvent>,
    pub response: Option<(u16, Value)>,
}

impl Appended {
    pub fn last_position(&self) -> Option<i64> {
        self.events.last().map(|e| e.position)
    }
}

/// The last event of a stream, as read under the lock.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamHead {
    pub version: u32,
    pub hash: String,
}

/// What the executor read under the append lock, for the streams, claims, nonces and keys of
/// one batch.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The highest committed position (0 for an empty log).
    pub head: i64,
    /// `recorded_at` of the event at `head`.
    pub last_recorded_at: Option<DateTime<Utc>>,
    /// The database's clock, read under the lock.
    pub now: DateTime<Utc>,
    pub streams: HashMap<Uuid, StreamHead>,
    /// Current owner of each claimed key the batch names.
    pub claims: HashMap<(String, String), Uuid>,
    pub used_nonces: HashSet<(String, String)>,
    pub answered_keys: HashSet<(String, String, String)>,
    /// The current fencing token of each duty the batch names.
    pub duty_tokens: HashMap<String, i64>,
}

/// An event row to insert, with its canonical bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub event: StoredEvent,
    pub canonical: String,
}

/// An idempotency answer to insert.
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerRow {
    pub key: IdempotencyKey,
    pub status: u16,
    pub response: String,
}

/// Everything one transaction writes, and each request's result in batch order.
#[derive(Debug, Default)]
pub struct Plan {
    pub results: Vec<Result<Appended, Refusal>>,
    pub events: Vec<EventRow>,
    /// Claims whose owner is set (inserted or moved).
    pub claims_set: Vec<(String, String, Uuid)>,
    /// Claims released (deleted).
    pub claims_cleared: Vec<(String, String)>,
    pub nonces: Vec<NonceUse>,
    pub answers: Vec<AnswerRow>,
    /// The head after the batch.
    pub head: i64,
}

/// The keys a batch needs read under the lock.
#[derive(Debug, Default, PartialEq)]
pub struct Reads {
    pub streams: Vec<Uuid>,
    pub claims: Vec<(String, String)>,
    pub nonces: Vec<(String, String)>,
    pub keys: Vec<(String, String, String)>,
    pub duties: Vec<String>,
}

/// What the executor must read for `batch` (deduplicated).
pub fn reads(batch: &[AppendRequest]) -> Reads {
    let mut r = Reads::default();
    let mut streams = HashSet::new();
    let mut claims = HashSet::new();
    let mut nonces = HashSet::new();
    let mut keys = HashSet::new();
    for req in batch {
        if !req.events.is_empty() && streams.insert(req.stream_id) {
            r.streams.push(req.stream_id);
        }
        for c in req.claims.iter().chain(&req.releases) {
            let k = (c.scope.to_owned(), c.key.clone());
            if claims.insert(k.clone()) {
                r.claims.push(k);
            }
        }
        if let Some(n) = &req.nonce {
            let k = (n.key_id.clone(), n.nonce.clone());
            if nonces.insert(k.clone()) {
                r.nonces.push(k);
            }
        }
        if let Some(i) = &req.idempotency {
            if keys.insert(i.id()) {
                r.keys.push(i.id());
            }
        }
        if let Some(f) = &req.fence {
            if !r.duties.iter().any(|d| d == f.duty) {
                r.duties.push(f.duty.to_owned());
            }
        }
    }
    r
}

/// Decides the batch against `snapshot`. Takes the requests' events (and answer builders).
pub fn plan(batch: &mut [AppendRequest], snapshot: &Snapshot) -> Plan {
    let mut plan = Plan {
        head: snapshot.head,
        ..Plan::default()
    };
    let recorded_at = truncate_to_micros(match snapshot.last_recorded_at {
        // Time never goes backwards along positions, whatever any node's clock says.
        Some(last) if last > snapshot.now => last,
        _ => snapshot.now,
    });
    let mut streams = snapshot.streams.clone();
    let mut owners: HashMap<(String, String), Option<Uuid>> = snapshot
        .claims
        .iter()
        .map(|(k, v)| (k.clone(), Some(*v)))
        .collect();
    let mut touched: Vec<(String, String)> = Vec::new();
    let mut nonces = snapshot.used_nonces.clone();
    let mut keys = snapshot.answered_keys.clone();

    for req in batch.iter_mut() {
        if let Some(f) = &req.fence {
            if snapshot.duty_tokens.get(f.duty) != Some(&f.token) {
                plan.results.push(Err(Refusal::Fenced));
                continue;
            }
        }
        let result = plan_one(
            req,
            recorded_at,
            &mut plan,
            &mut streams,
            &mut owners,
            &mut touched,
            &mut nonces,
            &mut keys,
        );
        plan.results.push(result);
    }
    for key in touched {
        match owners.get(&key).copied().flatten() {
            Some(owner) => plan.claims_set.push((key.0, key.1, owner)),
            None => plan.claims_cleared.push(key),
        }
    }
    plan
}

#[allow(clippy::too_many_arguments)]
fn plan_one(
    req: &mut AppendRequest,
    recorded_at: DateTime<Utc>,
    plan: &mut Plan,
    streams: &mut HashMap<Uuid, StreamHead>,
    owners: &mut HashMap<(String, String), Option<Uuid>>,
    touched: &mut Vec<(String, String)>,
    nonces: &mut HashSet<(String, String)>,
    keys: &mut HashSet<(String, String, String)>,
) -> Result<Appended, Refusal> {
    if let Some(n) = &req.nonce {
        if nonces.contains(&(n.key_id.clone(), n.nonce.clone())) {
            return Err(Refusal::NonceUsed);
        }
    }
    if let Some(k) = &req.idempotency {
        if keys.contains(&k.id()) {
            return Err(Refusal::IdempotencyTaken);
        }
    }
    let head = streams.get(&req.stream_id).cloned();
    if !req.events.is_empty() {
        let actual = head.as_ref().map(|h| h.version).unwrap_or(0);
        if actual != req.expected_version {
            return Err(Refusal::Conflict {
                expected: req.expected_version,
                actual,
            });
        }
        for c in &req.claims {
            let owner = owners
                .get(&(c.scope.to_owned(), c.key.clone()))
                .copied()
                .flatten();
            if let Some(owner) = owner.filter(|o| *o != req.stream_id) {
                return Err(Refusal::ClaimTaken {
                    scope: c.scope.to_owned(),
                    key: c.key.clone(),
                    owner,
                });
            }
        }
    }

    // Accepted: everything below is written.
    if let Some(n) = req.nonce.take() {
        nonces.insert((n.key_id.clone(), n.nonce.clone()));
        plan.nonces.push(n);
    }
    for c in &req.claims {
        let key = (c.scope.to_owned(), c.key.clone());
        owners.insert(key.clone(), Some(req.stream_id));
        if !touched.contains(&key) {
            touched.push(key);
        }
    }
    for c in &req.releases {
        let key = (c.scope.to_owned(), c.key.clone());
        if owners.get(&key).copied().flatten() == Some(req.stream_id) {
            owners.insert(key.clone(), None);
            if !touched.contains(&key) {
                touched.push(key);
            }
        }
    }
    let mut stored = Vec::with_capacity(req.events.len());
    let mut prev_hash = head
        .as_ref()
        .map(|h| h.hash.clone())
        .unwrap_or_else(|| GENESIS_HASH.to_owned());
    let mut version = head.as_ref().map(|h| h.version).unwrap_or(0) as i32;
    for e in req.events.drain(..) {
        plan.head += 1;
        version += 1;
        let canonical = canonical_bytes(
            plan.head,
            e.event_id,
            req.stream_id,
            version,
            e.event_type,
            &e.data,
            &e.metadata,
            recorded_at,
            &prev_hash,
        );
        let hash = sha256_hex(canonical.as_bytes());
        let event = StoredEvent {
            position: plan.head,
            event_id: e.event_id,
            stream_id: req.stream_id,
            version,
            event_type: e.event_type.to_owned(),
            data: e.data,
            metadata: e.metadata,
            recorded_at,
            prev_hash: std::mem::replace(&mut prev_hash, hash.clone()),
            hash,
        };
        plan.events.push(EventRow {
            event: event.clone(),
            canonical,
        });
        stored.push(event);
    }
    if let Some(last) = stored.last() {
        streams.insert(
            req.stream_id,
            StreamHead {
                version: last.version as u32,
                hash: last.hash.clone(),
            },
        );
    }
    let response = req.respond.take().map(|respond| respond(&stored));
    if let Some(key) = req.idempotency.take() {
        keys.insert(key.id());
        if let Some((status, body)) = &response {
            plan.answers.push(AnswerRow {
                key,
                status: *status,
                response: body.to_string(),
            });
        }
    }
    Ok(Appended {
        events: stored,
        response,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;
    use serde_json::json;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
    }

    fn new_event(n: u128) -> NewEvent {
        NewEvent {
            event_id: Uuid::from_u128(n),
            event_type: "created",
            data: json!({ "n": n as u64 }),
            metadata: json!({}),
        }
    }

    fn stream(n: u128) -> Uuid {
        Uuid::from_u128(0xABC0_0000 + n)
    }

    fn append(s: u128, expected: u32, events: u128) -> AppendRequest {
        AppendRequest::events(
            stream(s),
            expected,
            (0..events).map(|i| new_event(s * 1000 + i)).collect(),
        )
    }

    fn snapshot() -> Snapshot {
        Snapshot {
            now: t(0),
            ..Snapshot::default()
        }
    }

    #[test]
    fn accepted_requests_get_dense_positions_after_the_head_in_batch_order() {
        let mut batch = vec![append(1, 0, 2), append(2, 0, 1), append(3, 0, 3)];
        let snap = Snapshot {
            head: 41,
            ..snapshot()
        };
        let plan = plan(&mut batch, &snap);
        let positions: Vec<i64> = plan.events.iter().map(|e| e.event.position).collect();
        assert_eq!(positions, (42..=47).collect::<Vec<_>>());
        assert_eq!(plan.head, 47);
        assert!(plan.results.iter().all(|r| r.is_ok()));
    }

    #[test]
    fn a_stale_expected_version_refuses_only_that_request() {
        let mut snap = snapshot();
        snap.streams.insert(
            stream(1),
            StreamHead {
                version: 3,
                hash: "h".into(),
            },
        );
        let mut batch = vec![append(1, 2, 1), append(2, 0, 1)];
        let plan = plan(&mut batch, &snap);
        assert_eq!(
            plan.results[0].as_ref().unwrap_err(),
            &Refusal::Conflict {
                expected: 2,
                actual: 3
            }
        );
        assert!(plan.results[1].is_ok());
        assert_eq!(plan.events.len(), 1);
        assert_eq!(plan.events[0].event.position, 1);
    }

    #[test]
    fn two_appends_to_one_stream_in_a_batch_chain_versions_and_hashes() {
        let mut batch = vec![append(1, 0, 1), append(1, 1, 2), append(1, 1, 1)];
        let plan = plan(&mut batch, &snapshot());
        assert!(plan.results[0].is_ok());
        assert!(plan.results[1].is_ok());
        assert_eq!(
            plan.results[2].as_ref().unwrap_err(),
            &Refusal::Conflict {
                expected: 1,
                actual: 3
            }
        );
        let e = &plan.events;
        assert_eq!(
            e.iter().map(|r| r.event.version).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(e[0].event.prev_hash, GENESIS_HASH);
        assert_eq!(e[1].event.prev_hash, e[0].event.hash);
        assert_eq!(e[2].event.prev_hash, e[1].event.hash);
        for r in e {
            assert_eq!(r.event.hash, sha256_hex(r.canonical.as_bytes()));
            assert_eq!(r.canonical, r.event.canonical());
        }
    }

    #[test]
    fn a_stream_continues_from_the_head_read_under_the_lock() {
        let mut snap = snapshot();
        snap.head = 10;
        snap.streams.insert(
            stream(1),
            StreamHead {
                version: 4,
                hash: "abc".into(),
            },
        );
        let mut batch = vec![append(1, 4, 1)];
        let plan = plan(&mut batch, &snap);
        let e = &plan.events[0].event;
        assert_eq!((e.position, e.version), (11, 5));
        assert_eq!(e.prev_hash, "abc");
    }

    #[test]
    fn recorded_at_never_goes_before_the_last_event() {
        let mut snap = snapshot();
        snap.now = t(0);
        snap.last_recorded_at = Some(t(5));
        let plan = plan(&mut [append(1, 0, 1)], &snap);
        assert_eq!(plan.events[0].event.recorded_at, t(5));
        snap.last_recorded_at = Some(t(-5));
        let plan2 = super::plan(&mut [append(1, 0, 1)], &snap);
        assert_eq!(plan2.events[0].event.recorded_at, t(0));
    }

    fn claim(key: &str) -> Claim {
        Claim {
            scope: "order",
            key: key.into(),
        }
    }

    #[test]
    fn a_claim_owned_by_another_stream_refuses_the_request() {
        let mut snap = snapshot();
        snap.claims
            .insert(("order".into(), "O-1".into()), stream(9));
        let mut req = append(1, 0, 1);
        req.claims.push(claim("O-1"));
        let plan = plan(&mut [req], &snap);
        assert_eq!(
            plan.results[0].as_ref().unwrap_err(),
            &Refusal::ClaimTaken {
                scope: "order".into(),
                key: "O-1".into(),
                owner: stream(9)
            }
        );
        assert!(plan.events.is_empty());
        assert!(plan.claims_set.is_empty());
    }

    #[test]
    fn two_requests_claiming_one_key_in_a_batch_let_only_the_first_commit() {
        let mut a = append(1, 0, 1);
        a.claims.push(claim("O-1"));
        let mut b = append(2, 0, 1);
        b.claims.push(claim("O-1"));
        let plan = plan(&mut [a, b], &snapshot());
        assert!(plan.results[0].is_ok());
        assert!(matches!(
            plan.results[1],
            Err(Refusal::ClaimTaken { owner, .. }) if owner == stream(1)
        ));
        assert_eq!(
            plan.claims_set,
            vec![("order".into(), "O-1".into(), stream(1))]
        );
    }

    #[test]
    fn a_release_and_a_new_claim_of_one_key_in_a_batch_end_with_the_new_owner() {
        let mut snap = snapshot();
        snap.claims
            .insert(("order".into(), "O-1".into()), stream(1));
        snap.streams.insert(
            stream(1),
            StreamHead {
                version: 1,
                hash: "h".into(),
            },
        );
        let mut fail = append(1, 1, 1);
        fail.releases.push(claim("O-1"));
        let mut create = append(2, 0, 1);
        create.claims.push(claim("O-1"));
        let plan = plan(&mut [fail, create], &snap);
        assert!(plan.results.iter().all(|r| r.is_ok()));
        assert_eq!(
            plan.claims_set,
            vec![("order".into(), "O-1".into(), stream(2))]
        );
        assert!(plan.claims_cleared.is_empty());
    }

    #[test]
    fn a_release_of_a_key_owned_by_another_stream_changes_nothing() {
        let mut snap = snapshot();
        snap.claims
            .insert(("order".into(), "O-1".into()), stream(7));
        let mut req = append(1, 0, 1);
        req.releases.push(claim("O-1"));
        let plan = plan(&mut [req], &snap);
        assert!(plan.results[0].is_ok());
        assert!(plan.claims_set.is_empty() && plan.claims_cleared.is_empty());
    }

    fn nonce(n: &str) -> NonceUse {
        NonceUse {
            key_id: "k".into(),
            nonce: n.into(),
            expires_at: t(600),
        }
    }

    #[test]
    fn a_used_nonce_refuses_the_request_and_a_nonce_is_used_once_per_batch() {
        let mut snap = snapshot();
        snap.used_nonces.insert(("k".into(), "old".into()));
        let mut a = append(1, 0, 1);
        a.nonce = Some(nonce("old"));
        let mut b = append(2, 0, 1);
        b.nonce = Some(nonce("new"));
        let mut c = append(3, 0, 1);
        c.nonce = Some(nonce("new"));
        let plan = plan(&mut [a, b, c], &snap);
        assert_eq!(plan.results[0].as_ref().unwrap_err(), &Refusal::NonceUsed);
        assert!(plan.results[1].is_ok());
        assert_eq!(plan.results[2].as_ref().unwrap_err(), &Refusal::NonceUsed);
        assert_eq!(plan.nonces, vec![nonce("new")]);
    }

    #[test]
    fn a_refused_request_does_not_use_its_nonce_so_its_retry_can() {
        let mut snap = snapshot();
        snap.streams.insert(
            stream(1),
            StreamHead {
                version: 1,
                hash: "h".into(),
            },
        );
        let mut stale = append(1, 0, 1);
        stale.nonce = Some(nonce("n1"));
        let plan = plan(&mut [stale], &snap);
        assert!(matches!(plan.results[0], Err(Refusal::Conflict { .. })));
        assert!(plan.nonces.is_empty());
    }

    fn key(k: &str) -> IdempotencyKey {
        IdempotencyKey {
            key_id: "k".into(),
            route: "POST /x".into(),
            idem_key: k.into(),
            request_hash: "h".into(),
        }
    }

    fn answering(mut req: AppendRequest, k: &str) -> AppendRequest {
        req.idempotency = Some(key(k));
        req.respond = Some(Arc::new(|events: &[StoredEvent]| {
            (
                201,
                json!({ "positions": events.iter().map(|e| e.position).collect::<Vec<_>>() }),
            )
        }));
        req
    }

    #[test]
    fn an_answer_is_stored_with_the_events_it_describes() {
        let plan = plan(&mut [answering(append(1, 0, 2), "a")], &snapshot());
        let appended = plan.results[0].as_ref().unwrap();
        assert_eq!(
            appended.response,
            Some((201, json!({ "positions": [1, 2] })))
        );
        assert_eq!(plan.answers.len(), 1);
        assert_eq!(plan.answers[0].response, r#"{"positions":[1,2]}"#);
        assert_eq!(plan.answers[0].status, 201);
    }

    #[test]
    fn a_key_already_answered_refuses_the_request_and_writes_nothing_of_it() {
        let mut snap = snapshot();
        snap.answered_keys
            .insert(("k".into(), "POST /x".into(), "a".into()));
        let mut req = answering(append(1, 0, 1), "a");
        req.nonce = Some(nonce("n"));
        let plan = plan(&mut [req], &snap);
        assert_eq!(
            plan.results[0].as_ref().unwrap_err(),
            &Refusal::IdempotencyTaken
        );
        assert!(plan.events.is_empty() && plan.answers.is_empty() && plan.nonces.is_empty());
    }

    #[test]
    fn two_requests_with_one_key_in_a_batch_commit_only_the_first() {
        let plan = plan(
            &mut [
                answering(append(1, 0, 1), "a"),
                answering(append(2, 0, 1), "a"),
            ],
            &snapshot(),
        );
        assert!(plan.results[0].is_ok());
        assert_eq!(
            plan.results[1].as_ref().unwrap_err(),
            &Refusal::IdempotencyTaken
        );
        assert_eq!(plan.events.len(), 1);
    }

    #[test]
    fn a_request_without_events_records_its_nonce_and_answer_only() {
        let mut req = answering(AppendRequest::events(stream(1), 99, vec![]), "a");
        req.nonce = Some(nonce("n"));
        let plan = plan(&mut [req], &snapshot());
        let appended = plan.results[0].as_ref().unwrap();
        assert!(appended.events.is_empty());
        assert_eq!(plan.nonces.len(), 1);
        assert_eq!(plan.answers.len(), 1);
        assert_eq!(plan.head, 0);
    }

    #[test]
    fn a_request_of_a_duty_whose_lease_moved_on_is_fenced_off() {
        let mut snap = snapshot();
        snap.duty_tokens.insert("refunds".into(), 7);
        let mut stale = append(1, 0, 1);
        stale.fence = Some(Fence {
            duty: "refunds",
            token: 6,
        });
        let mut current = append(2, 0, 1);
        current.fence = Some(Fence {
            duty: "refunds",
            token: 7,
        });
        let mut unknown = append(3, 0, 1);
        unknown.fence = Some(Fence {
            duty: "expiry",
            token: 1,
        });
        let plan = plan(&mut [stale, current, unknown], &snap);
        assert_eq!(plan.results[0].as_ref().unwrap_err(), &Refusal::Fenced);
        assert!(plan.results[1].is_ok());
        assert_eq!(plan.results[2].as_ref().unwrap_err(), &Refusal::Fenced);
        assert_eq!(plan.events.len(), 1);
        assert_eq!(plan.events[0].event.stream_id, stream(2));
    }

    #[test]
    fn reads_name_each_stream_claim_nonce_and_key_once() {
        let mut a = answering(append(1, 0, 1), "a");
        a.claims.push(claim("O"));
        a.nonce = Some(nonce("n"));
        let mut b = answering(append(1, 1, 1), "a");
        b.releases.push(claim("O"));
        b.nonce = Some(nonce("n"));
        let empty = AppendRequest::events(stream(2), 0, vec![]);
        let r = reads(&[a, b, empty]);
        assert_eq!(r.streams, vec![stream(1)]);
        assert_eq!(r.claims, vec![("order".to_owned(), "O".to_owned())]);
        assert_eq!(r.nonces.len(), 1);
        assert_eq!(r.keys.len(), 1);
    }

    proptest! {
        /// Whatever the mix of streams and expected versions, committed events have dense
        /// positions from the head, each stream's versions continue without gaps, and every
        /// link points at the previous event of its stream.
        #[test]
        fn committed_events_are_dense_and_chained(
            requests in proptest::collection::vec((0u128..5, 0u32..4, 0u128..4), 1..40),
            head in 0i64..1000,
        ) {
            let mut batch: Vec<AppendRequest> = requests
                .iter()
                .enumerate()
                .map(|(i, (s, expected, n))| AppendRequest::events(
                    stream(*s),
                    *expected,
                    (0..*n).map(|j| new_event((i as u128) * 10 + j)).collect(),
                ))
                .collect();
            let snap = Snapshot { head, ..snapshot() };
            let plan = plan(&mut batch, &snap);
            let mut expected_position = head;
            let mut last: HashMap<Uuid, (i32, String)> = HashMap::new();
            for row in &plan.events {
                expected_position += 1;
                prop_assert_eq!(row.event.position, expected_position);
                let (v, h) = last
                    .get(&row.event.stream_id)
                    .cloned()
                    .unwrap_or((0, GENESIS_HASH.to_owned()));
                prop_assert_eq!(row.event.version, v + 1);
                prop_assert_eq!(&row.event.prev_hash, &h);
                last.insert(row.event.stream_id, (row.event.version, row.event.hash.clone()));
            }
            prop_assert_eq!(plan.head, expected_position);
            let committed: usize = plan
                .results
                .iter()
                .filter_map(|r| r.as_ref().ok())
                .map(|a| a.events.len())
                .sum();
            prop_assert_eq!(committed, plan.events.len());
        }
    }
}
