//! The command service: load a payment, decide, append with its expected version, and on a
//! version conflict decide again against fresh state (never lost, never doubled).
//!
//! These are the functions the HTTP API's POST pipeline and the gateway drivers call. Each
//! returns the events it appended (with their positions) or tells that nothing needed to
//! change. The request's bookkeeping — its anti-replay nonce and its idempotency answer — is
//! handed to the writer with the events, so one durable commit carries all of it.

use std::sync::Arc;

use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::events::PaymentEvent;
use crate::domain::{decide, evolve, fold, Command, DomainError, Payment};
use crate::store::{
    self, decode_all, AppendRequest, Claim, Fence, IdempotencyKey, NewEvent, NonceUse, Respond,
    StoreError, StoredEvent, Writer,
};

/// Who asked, for the event metadata (SPEC §3).
#[derive(Debug, Clone, Default)]
pub struct Meta {
    pub actor: String,
    pub request_id: String,
    pub idempotency_key: Option<String>,
    pub client_ip: Option<String>,
    pub causation_id: Option<Uuid>,
    pub correlation_id: Option<Uuid>,
}

impl Meta {
    pub fn system(actor: &str) -> Meta {
        Meta {
            actor: actor.to_owned(),
            request_id: Uuid::now_v7().to_string(),
            ..Meta::default()
        }
    }

    fn to_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("actor_key_id".into(), json!(self.actor));
        m.insert("request_id".into(), json!(self.request_id));
        if let Some(k) = &self.idempotency_key {
            m.insert("idempotency_key".into(), json!(k));
        }
        if let Some(ip) = &self.client_ip {
            m.insert("client_ip".into(), json!(ip));
        }
        if let Some(c) = self.causation_id {
            m.insert("causation_id".into(), json!(c));
        }
        if let Some(c) = self.correlation_id {
            m.insert("correlation_id".into(), json!(c));
        }
        Value::Object(m)
    }
}

#[derive(Debug)]
pub enum Outcome {
    /// Events were appended; `payment` is the state after them.
    Appended {
        payment: Arc<Payment>,
        events: Vec<StoredEvent>,
        response: Option<(u16, Value)>,
    },
    /// Nothing needed to change (a duplicate); `payment` is the current state.
    Unchanged { payment: Arc<Payment> },
    /// A gateway callback_no already recorded on another payment: a duplicate.
    CallbackElsewhere { owner: Uuid },
}

impl Outcome {
    pub fn last_position(&self) -> Option<i64> {
        match self {
            Outcome::Appended { events, .. } => events.last().map(|e| e.position),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("gave up after {0} version conflicts")]
    TooManyConflicts(u32),
}

/// What a request records with its events in the same commit: its nonce, and its answer
/// under its idempotency key (built by `respond` from the appended events).
#[derive(Clone, Default)]
pub struct Bookkeeping {
    pub nonce: Option<NonceUse>,
    pub idempotency: Option<IdempotencyKey>,
    pub respond: Option<Respond>,
    /// The lease of the background duty making the request (refund and expiry drivers).
    pub fence: Option<Fence>,
}

impl Bookkeeping {
    fn is_empty(&self) -> bool {
        self.nonce.is_none() && self.idempotency.is_none()
    }
}

#[derive(Clone)]
pub struct CommandService {
    pool: PgPool,
    writer: Writer,
    /// Recently used aggregates, so a command does not re-read its stream. A stale entry is
    /// harmless: the append's expected version catches it and we reload.
    states: LatestStates,
    attempts_max: u32,
    /// Commands on one stream run one at a time in this process (striped by stream id).
    /// Without this, N concurrent commands on one hot payment retry in rounds in which only
    /// one of them wins each group commit, and the last of a hundred racing refunds runs out
    /// of `attempts_max` (a 503 instead of its answer). Other nodes still race through the
    /// expected version; a tokio mutex because it is held across the append, and fair, so
    /// no command waits forever.
    stream_turns: Arc<[tokio::sync::Mutex<()>]>,
}

/// The aggregate cache: for each payment the newest state this process has seen. A reload
/// that read the log before a concurrent append (the refund driver reloads while a command
/// appends) finishes after it; keeping the higher version means its older state never
/// replaces the newer one, so the cache trails the log only by what other nodes wrote.
#[derive(Clone)]
struct LatestStates(moka::sync::Cache<Uuid, Arc<Payment>>);

impl LatestStates {
    fn new(capacity: u64) -> Self {
        Self(moka::sync::Cache::new(capacity))
    }

    fn get(&self, id: &Uuid) -> Option<Arc<Payment>> {
        self.0.get(id)
    }

    /// Keeps `payment` unless the cache already holds this payment at a later version
    /// (atomic per key: moka runs one compute at a time for a key).
    fn remember(&self, id: Uuid, payment: Arc<Payment>) {
        self.0.entry(id).and_compute_with(|cached| match cached {
            Some(c) if c.value().version >= payment.version => moka::ops::compute::Op::Nop,
            _ => moka::ops::compute::Op::Put(payment),
        });
    }
}

/// Stripes of `stream_turns`: unrelated payments rarely share one.
const STREAM_TURN_STRIPES: usize = 1024;

pub const ORDER_SCOPE: &str = "order";
/// Keys are `{method}:{callback_no}`: a callback number is unique per gateway.
pub const CALLBACK_SCOPE: &str = "callback";

impl CommandService {
    pub fn new(pool: PgPool, writer: Writer, attempts_max: u32, capacity: u64) -> Self {
        Self {
            pool,
            writer,
            states: LatestStates::new(capacity),
            attempts_max,
            stream_turns: (0..STREAM_TURN_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }

    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    /// The current state of a payment from the log (None when it does not exist).
    pub async fn load(&self, id: Uuid) -> Result<Option<Arc<Payment>>, StoreError> {
        if let Some(p) = self.states.get(&id) {
            return Ok(Some(p));
        }
        self.reload(id).await
    }

    /// The state of a payment read from the log now, never from the cache (which may trail
    /// what another node appended).
    pub async fn reload(&self, id: Uuid) -> Result<Option<Arc<Payment>>, StoreError> {
        let events = store::read_stream(&self.pool, id).await?;
        let decoded = decode_all(&events)?;
        Ok(fold(decoded.iter()).map(|p| {
            let p = Arc::new(p);
            self.states.remember(id, p.clone());
            p
        }))
    }

    /// Runs commands against a stream as one decision (their events are appended together),
    /// retrying on version conflicts. `book` goes into the same commit as the events.
    #[tracing::instrument(name = "command", skip_all, fields(payment_id = %stream_id, request_id = %meta.request_id, key_id = %meta.actor))]
    pub async fn execute(
        &self,
        stream_id: Uuid,
        commands: &[Command],
        meta: &Meta,
        book: &Bookkeeping,
    ) -> Result<Outcome, CommandError> {
        let stripe = (stream_id.as_u128() % STREAM_TURN_STRIPES as u128) as usize;
        let _turn = self.stream_turns[stripe].lock().await;
        let metadata = meta.to_json();
        let mut fresh = false;
        for _attempt in 0..self.attempts_max {
            let state = if fresh {
                self.reload(stream_id).await?
            } else {
                self.load(stream_id).await?
            };
            let state: Option<Payment> = state.map(|p| (*p).clone());
            // A refusal or a no-op decided on cached state is confirmed against the log
            // before it is answered: the cache may trail a write another node made.
            let events = match decide_all(&state, commands) {
                Ok(events) if events.is_empty() && !fresh => {
                    fresh = true;
                    continue;
                }
                Err(_) if !fresh => {
                    fresh = true;
                    continue;
                }
                decided => decided?,
            };
            let Some(before) = state.as_ref().filter(|_| events.is_empty()) else {
                let after = events
                    .iter()
                    .fold(state.clone(), evolve)
                    .expect("decided events always fold onto the state");
                let (claims, releases) = claims_for(&state, &after, &events);
                let request = AppendRequest {
                    stream_id,
                    expected_version: state.as_ref().map(|p| p.version).unwrap_or(0),
                    events: events
                        .iter()
                        .map(|e| NewEvent {
                            event_id: Uuid::now_v7(),
                            event_type: e.event_type(),
                            data: e.data(),
                            metadata: metadata.clone(),
                        })
                        .collect(),
                    claims,
                    releases,
                    nonce: book.nonce.clone(),
                    idempotency: book.idempotency.clone(),
                    respond: book.respond.clone(),
                    fence: book.fence.clone(),
                };
                match self.writer.append(request).await {
                    Ok(appended) => {
                        let payment = Arc::new(after);
                        self.states.remember(stream_id, payment.clone());
                        metrics::counter!("ledger_events_appended_total")
                            .increment(appended.events.len() as u64);
                        return Ok(Outcome::Appended {
                            payment,
                            events: appended.events,
                            response: appended.response,
                        });
                    }
                    Err(StoreError::Conflict { .. }) => {
                        metrics::counter!("ledger_append_conflicts_total").increment(1);
                        fresh = true;
                        continue;
                    }
                    Err(StoreError::ClaimTaken { scope, owner, .. }) if scope == ORDER_SCOPE => {
                        return Err(DomainError::OrderHasLivePayment { existing: owner }.into());
                    }
                    Err(StoreError::ClaimTaken { scope, owner, .. }) if scope == CALLBACK_SCOPE => {
                        return Ok(Outcome::CallbackElsewhere { owner });
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            return Ok(Outcome::Unchanged {
                payment: Arc::new(before.clone()),
            });
        }
        Err(CommandError::TooManyConflicts(self.attempts_max))
    }

    /// Records a request's bookkeeping without events (a refusal, a duplicate): its nonce and
    /// its answer, in one commit. `Ok` with the answer as stored.
    pub async fn record(
        &self,
        stream_id: Uuid,
        book: &Bookkeeping,
    ) -> Result<Option<(u16, Value)>, StoreError> {
        if book.is_empty() {
            return Ok(book.respond.as_ref().map(|r| r(&[])));
        }
        let mut request = AppendRequest::events(stream_id, 0, Vec::new());
        request.nonce = book.nonce.clone();
        request.idempotency = book.idempotency.clone();
        request.respond = book.respond.clone();
        Ok(self.writer.append(request).await?.response)
    }
}

/// Decides each command on the state the previous ones left, so that several commands (a
/// create and the failure its gateway reported) become one append.
fn decide_all(
    state: &Option<Payment>,
    commands: &[Command],
) -> Result<Vec<PaymentEvent>, DomainError> {
    let mut state = state.clone();
    let mut all = Vec::new();
    for command in commands {
        let events = decide(&state, command)?;
        state = events.iter().fold(state, evolve);
        all.extend(events);
    }
    Ok(all)
}

/// The claim key of a gateway's callback number.
pub fn callback_claim_key(gateway: crate::domain::PaymentMethod, callback_no: &str) -> String {
    format!("{}:{callback_no}", gateway.name())
}

/// Cross-stream uniqueness implied by a decision: a created payment holds its order while it
/// is live; a gateway's callback_no is recorded once across all payments of that gateway.
fn claims_for(
    before: &Option<Payment>,
    after: &Payment,
    events: &[PaymentEvent],
) -> (Vec<Claim>, Vec<Claim>) {
    let mut claims = Vec::new();
    let mut releases = Vec::new();
    for e in events {
        match e {
            // A payment created and failed in one append never holds its order.
            PaymentEvent::Created(c) if after.is_live() => claims.push(Claim {
                scope: ORDER_SCOPE,
                key: c.order_id.clone(),
            }),
            PaymentEvent::CallbackReceived(c) => claims.push(Claim {
                scope: CALLBACK_SCOPE,
                key: callback_claim_key(c.gateway, &c.callback_no),
            }),
            _ => {}
        }
    }
    let was_live = before.as_ref().map(Payment::is_live).unwrap_or(false);
    if was_live && !after.is_live() {
        releases.push(Claim {
            scope: ORDER_SCOPE,
            key: after.order_id.clone(),
        });
    }
    (claims, releases)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Currency, Money, PaymentMethod};
    use rust_decimal::Decimal;

    /// A payment as created (version 1).
    fn created(id: Uuid) -> Payment {
        let cny = Currency::from_code("CNY").expect("CNY");
        let create = Command::Create {
            payment_id: id,
            payment_no: "P1".into(),
            order_id: "order-1".into(),
            user_id: "user-1".into(),
            amount: Money::new(Decimal::new(1000, 2), cny).expect("10.00 CNY"),
            method: PaymentMethod::Alipay,
            payment_url: "https://pay.example/P1".into(),
            return_url: None,
            merchant: None,
            payer: None,
        };
        decide(&None, &create)
            .expect("a create is accepted")
            .iter()
            .fold(None, evolve)
            .expect("created")
    }

    /// The same payment as the cache would hold it at `version`.
    fn at_version(p: &Payment, version: u32) -> Arc<Payment> {
        let mut p = p.clone();
        p.version = version;
        Arc::new(p)
    }

    #[test]
    fn an_older_state_remembered_after_a_newer_one_does_not_replace_it() {
        let id = Uuid::now_v7();
        let p = created(id);
        let states = LatestStates::new(16);
        assert!(states.get(&id).is_none());
        states.remember(id, at_version(&p, 1));
        assert_eq!(states.get(&id).map(|s| s.version), Some(1));
        // The command's append (version 10) lands first; a reload that read the log at
        // version 9 finishes after it.
        states.remember(id, at_version(&p, 10));
        states.remember(id, at_version(&p, 9));
        assert_eq!(states.get(&id).map(|s| s.version), Some(10));
        states.remember(id, at_version(&p, 11));
        assert_eq!(states.get(&id).map(|s| s.version), Some(11));
    }
}
