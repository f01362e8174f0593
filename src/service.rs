//! The command service: load a payment, decide, append with its expected version, and on a
//! version conflict decide again against fresh state (never lost, never doubled).
//!
//! These are the functions the HTTP API and the gateway processes call. Each returns the
//! events it appended (with their positions) or tells that nothing needed to change.

use std::sync::Arc;

use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::events::PaymentEvent;
use crate::domain::{decide, evolve, fold, Command, DomainError, Payment};
use crate::store::writer::Respond;
use crate::store::{
    self, AppendRequest, Claim, IdempotencyCompletion, NewEvent, StoreError, StoredEvent, Writer,
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

/// What an idempotent caller wants stored with the events.
pub struct Idempotent {
    pub completion: Option<IdempotencyCompletion>,
    pub respond: Respond,
}

#[derive(Clone)]
pub struct CommandService {
    pool: PgPool,
    writer: Writer,
    /// Recently used aggregates, so a command does not re-read its stream. A stale entry is
    /// harmless: the append's expected version catches it and we reload.
    states: moka::sync::Cache<Uuid, Arc<Payment>>,
    attempts_max: u32,
    /// Commands on one stream run one at a time in this process (striped by stream id).
    /// Without this, N concurrent commands on one hot payment retry in rounds in which only
    /// one of them wins each group commit, and the last of a hundred racing refunds runs out
    /// of `attempts_max` (a 503 instead of its answer). Other nodes still race through the
    /// expected version; a tokio mutex because it is held across the append, and fair, so
    /// no command waits forever.
    stream_turns: Arc<[tokio::sync::Mutex<()>]>,
}

/// Stripes of `stream_turns`: unrelated payments rarely share one.
const STREAM_TURN_STRIPES: usize = 1024;

pub const ORDER_SCOPE: &str = "order";
pub const CALLBACK_SCOPE: &str = "callback";

impl CommandService {
    pub fn new(pool: PgPool, writer: Writer, attempts_max: u32, capacity: u64) -> Self {
        Self {
            pool,
            writer,
            states: moka::sync::Cache::new(capacity),
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

    async fn reload(&self, id: Uuid) -> Result<Option<Arc<Payment>>, StoreError> {
        let events = store::read_stream(&self.pool, id).await?;
        let decoded = decode_all(&events)?;
        Ok(fold(decoded.iter()).map(|p| {
            let p = Arc::new(p);
            self.states.insert(id, p.clone());
            p
        }))
    }

    /// Runs a command against a stream, retrying on version conflicts.
    pub async fn execute(
        &self,
        stream_id: Uuid,
        command: &Command,
        meta: &Meta,
        idempotent: Option<&Idempotent>,
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
            let events = match decide(&state, command) {
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
                    idempotency: idempotent.and_then(|i| i.completion.clone()),
                    respond: idempotent.map(|i| i.respond.clone()),
                };
                match self.writer.append(request).await {
                    Ok(appended) => {
                        let payment = Arc::new(after);
                        self.states.insert(stream_id, payment.clone());
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
}

/// Cross-stream uniqueness implied by a decision: a created payment holds its order while it
/// is live; a gateway callback_no is recorded once across all payments.
fn claims_for(
    before: &Option<Payment>,
    after: &Payment,
    events: &[PaymentEvent],
) -> (Vec<Claim>, Vec<Claim>) {
    let mut claims = Vec::new();
    let mut releases = Vec::new();
    for e in events {
        match e {
            PaymentEvent::Created(c) => claims.push(Claim {
                scope: ORDER_SCOPE,
                key: c.order_id.clone(),
            }),
            PaymentEvent::CallbackReceived(c) => claims.push(Claim {
                scope: CALLBACK_SCOPE,
                key: c.callback_no.clone(),
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

/// Decodes stored events into domain events.
pub fn decode_all(events: &[StoredEvent]) -> Result<Vec<PaymentEvent>, StoreError> {
    events.iter().map(decode).collect()
}

pub fn decode(e: &StoredEvent) -> Result<PaymentEvent, StoreError> {
    PaymentEvent::from_parts(&e.event_type, e.data.clone())
        .map_err(|err| StoreError::Malformed(format!("event at position {}: {err}", e.position)))
}
