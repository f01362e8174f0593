//! The one POST pipeline every state-changing route goes through (create, refund, notify and
//! the ones that come later): authentication result in, idempotency, ids derived from the
//! idempotency key, execute, wait for read-your-writes, answer.
//!
//! - **Idempotency** (SPEC §11): an answer is stored under its key only by the append
//!   transaction that commits the request's events (or, for a request that changed nothing,
//!   its refusal or duplicate answer), together with its nonce: one durable commit. A key is
//!   owned by whoever commits first; a request that loses the race replays the winner's
//!   answer. There is no lease, so nothing can take over a running request. A request refused
//!   by validation (400) or authentication is not stored, so a client that fixes its body can
//!   retry with the same key (as Stripe does).
//! - **Ids**: with a key, every id the request mints (payment_id, refund_id, and the numbers
//!   derived from them) is derived from (key id, route, idempotency key) under a server
//!   secret, so a rerun is the same command and the domain refuses a second copy of it.
//! - **Answers** are built from every event the request appended, inside the transaction,
//!   so a replay is byte for byte the first answer.

use std::future::Future;
use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::auth::{BodyHash, Caller, PendingNonce};
use super::envelope::{self, json_response};
use super::error::ApiError;
use super::AppState;
use crate::domain::{Command, Payment};
use crate::service::{Bookkeeping, CommandError, Meta, Outcome};
use crate::store::requests::{self, StoredAnswer};
use crate::store::{IdempotencyKey, Respond, StoreError, StoredEvent};

pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// Longest accepted idempotency key.
pub const KEY_CHARS_MAX: usize = 255;
/// Stripes of the in-process turn per idempotency key: a duplicate that arrives while the
/// first is running here waits for it instead of racing it to the writer.
const KEY_TURN_STRIPES: usize = 256;

/// In-process turns per idempotency key (striped).
pub struct KeyTurns(Box<[tokio::sync::Mutex<()>]>);

impl Default for KeyTurns {
    fn default() -> Self {
        Self(
            (0..KEY_TURN_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        )
    }
}

/// The key a request carries, if any.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get(IDEMPOTENCY_HEADER) {
        None => Ok(None),
        Some(v) => {
            let k = v.to_str().map_err(|_| {
                ApiError::BadRequest("Idempotency-Key must be visible ASCII".into())
            })?;
            if k.is_empty() || k.len() > KEY_CHARS_MAX || !k.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ApiError::BadRequest(format!(
                    "Idempotency-Key must be 1 to {KEY_CHARS_MAX} visible ASCII characters"
                )));
            }
            Ok(Some(k.to_owned()))
        }
    }
}

/// A POST as the pipeline sees it.
pub struct Post {
    pub caller: Caller,
    /// `POST {path}` as requested: idempotency keys are scoped per key id and route.
    pub route: String,
    pub idempotency_key: Option<String>,
    pub body_hash: String,
    pub nonce: Option<PendingNonce>,
    pub meta: Meta,
}

/// Mints the ids of a request: derived from its idempotency key when it has one, fresh
/// otherwise.
pub struct Ids {
    seed: Option<[u8; 32]>,
}

impl Ids {
    fn new(secret: &[u8; 32], key_id: &str, route: &str, key: Option<&str>) -> Ids {
        Ids {
            seed: key.map(|k| {
                let mut h = Sha256::new();
                h.update(secret);
                for part in [key_id, route, k] {
                    h.update((part.len() as u64).to_be_bytes());
                    h.update(part.as_bytes());
                }
                h.finalize().into()
            }),
        }
    }

    /// The id of kind `kind` ("payment", "refund"): a UUID in the version 7 layout. Derived,
    /// its bits all come from the key (so it is not time-ordered); fresh, it is `now_v7`.
    pub fn uuid(&self, kind: &str) -> Uuid {
        match &self.seed {
            None => Uuid::now_v7(),
            Some(seed) => {
                let mut h = Sha256::new();
                h.update(seed);
                h.update(kind.as_bytes());
                let digest: [u8; 32] = h.finalize().into();
                let mut bytes = [0u8; 16];
                bytes.copy_from_slice(&digest[..16]);
                uuid::Builder::from_custom_bytes(bytes)
                    .with_version(uuid::Version::SortRand)
                    .into_uuid()
            }
        }
    }
}

/// What an answer to a request that changed nothing says, from the payment's state.
pub type Unchanged = Box<dyn FnOnce(&Outcome, i64) -> (StatusCode, Value) + Send>;

/// Runs after a request's events are committed.
pub type OnAppended = Box<dyn FnOnce(&Payment, &[StoredEvent]) + Send>;

/// What a route wants done, decided from its validated body.
pub struct Work {
    pub stream_id: Uuid,
    /// Decided together and appended as one (a create and its gateway's refusal).
    pub commands: Vec<Command>,
    /// Builds the answer from every event the request appended.
    pub respond: Respond,
    /// The answer when nothing changed (a duplicate notification).
    pub unchanged: Unchanged,
    /// Runs after the events are committed (wakes a driver).
    pub on_appended: Option<OnAppended>,
}

/// Runs one POST: replays a stored answer, or validates with `prepare`, executes and
/// answers, storing the answer with the events.
pub async fn run<F, Fut>(state: &AppState, post: Post, prepare: F) -> Response
where
    F: FnOnce(Ids) -> Fut,
    Fut: Future<Output = Result<Work, ApiError>>,
{
    let key_id = post.caller.key_id().to_owned();
    let _turn = match &post.idempotency_key {
        Some(k) => {
            let stripe = stripe(&key_id, &post.route, k);
            match tokio::time::timeout(
                state.settings.limits.idempotency_wait(),
                state.key_turns.0[stripe].lock(),
            )
            .await
            {
                Ok(turn) => Some(turn),
                Err(_) => {
                    return ApiError::Unavailable(
                        "a request with this Idempotency-Key is still running".into(),
                    )
                    .into_response()
                }
            }
        }
        None => None,
    };
    if let Some(k) = &post.idempotency_key {
        match requests::idempotency_answer(&state.pool, &key_id, &post.route, k).await {
            Ok(Some(answer)) => return replay(state, &post, answer).await,
            Ok(None) => {}
            Err(e) => return ApiError::from(e).into_response(),
        }
    }
    let ids = Ids::new(
        &state.id_secret,
        &key_id,
        &post.route,
        post.idempotency_key.as_deref(),
    );
    // Refused by validation: nothing is stored, so the client may fix the body and retry.
    let work = match prepare(ids).await {
        Ok(w) => w,
        Err(e) => return e.into_response(),
    };
    let book = Bookkeeping {
        nonce: post.nonce.as_ref().map(|n| n.0.clone()),
        idempotency: post.idempotency_key.as_ref().map(|k| IdempotencyKey {
            key_id: key_id.clone(),
            route: post.route.clone(),
            idem_key: k.clone(),
            request_hash: post.body_hash.clone(),
        }),
        respond: Some(work.respond.clone()),
        fence: None,
    };
    let outcome = state
        .commands
        .execute(work.stream_id, &work.commands, &post.meta, &book)
        .await;
    match outcome {
        Ok(Outcome::Appended {
            payment,
            events,
            response,
        }) => {
            if let Some(after) = work.on_appended {
                after(&payment, &events);
            }
            let position = events.last().map(|e| e.position).unwrap_or(0);
            state
                .wait_for(position, state.settings.limits.read_your_writes_wait())
                .await;
            let (status, body) = response.unwrap_or_else(|| (work.respond)(&events));
            json_response(status_code(status), &body)
        }
        Ok(other) => {
            let (status, body) = (work.unchanged)(&other, state.position());
            record(state, &post, work.stream_id, book, status, body).await
        }
        Err(e) => refused(state, &post, work.stream_id, book, e).await,
    }
}

/// Answers a request the domain or the store refused. Client errors are answers: they are
/// stored with the nonce, except a refusal by validation (400): like the ones `prepare`
/// refuses, it did not start executing, so the client may fix its body and retry with the
/// same key (SPEC §12). Errors of ours (503, 500) are not stored either, so a retry runs again.
async fn refused(
    state: &AppState,
    post: &Post,
    stream_id: Uuid,
    book: Bookkeeping,
    e: CommandError,
) -> Response {
    match e {
        CommandError::Store(StoreError::NonceUsed) => nonce_replayed(post),
        CommandError::Store(StoreError::IdempotencyTaken) => replay_stored(state, post).await,
        e => {
            let api = ApiError::from(e);
            if api.status().is_client_error() && api.status() != StatusCode::BAD_REQUEST {
                let body = api.body(envelope::lang());
                record(state, post, stream_id, book, api.status(), body).await
            } else {
                api.into_response()
            }
        }
    }
}

/// Stores an answer that appended nothing (with the request's nonce), then answers it.
async fn record(
    state: &AppState,
    post: &Post,
    stream_id: Uuid,
    mut book: Bookkeeping,
    status: StatusCode,
    body: Value,
) -> Response {
    let fixed = body.clone();
    let code = status.as_u16();
    book.respond = Some(Arc::new(move |_: &[StoredEvent]| (code, fixed.clone())));
    match state.commands.record(stream_id, &book).await {
        Ok(_) => json_response(status, &body),
        Err(StoreError::NonceUsed) => nonce_replayed(post),
        Err(StoreError::IdempotencyTaken) => replay_stored(state, post).await,
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn replay_stored(state: &AppState, post: &Post) -> Response {
    let Some(k) = &post.idempotency_key else {
        return ApiError::Internal("idempotency refusal without a key".into()).into_response();
    };
    match requests::idempotency_answer(&state.pool, post.caller.key_id(), &post.route, k).await {
        Ok(Some(answer)) => replay(state, post, answer).await,
        Ok(None) => {
            ApiError::Unavailable("the idempotent answer expired meanwhile".into()).into_response()
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Answers with a stored answer, after checking the body is the same and recording the
/// replay's nonce (a replayed signed request is still refused as a replay).
async fn replay(state: &AppState, post: &Post, answer: StoredAnswer) -> Response {
    if answer.request_hash != post.body_hash {
        return ApiError::IdempotencyMismatch.into_response();
    }
    if let Some(n) = &post.nonce {
        match requests::use_nonce(&state.pool, &n.0.key_id, &n.0.nonce, n.0.expires_at).await {
            Ok(true) => {}
            Ok(false) => return nonce_replayed(post),
            Err(e) => return ApiError::from(e).into_response(),
        }
    }
    metrics::counter!("ledger_idempotent_replays_total").increment(1);
    let body: Value = serde_json::from_str(&answer.response).unwrap_or(Value::Null);
    let mut r = json_response(status_code(answer.status), &body);
    r.headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    r
}

fn nonce_replayed(post: &Post) -> Response {
    tracing::warn!(key_id = post.caller.key_id(), "nonce replayed");
    metrics::counter!("ledger_auth_replays_total").increment(1);
    ApiError::Replay("nonce already used".into()).into_response()
}

fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::OK)
}

fn stripe(key_id: &str, route: &str, key: &str) -> usize {
    let mut h = Sha256::new();
    for part in [key_id, route, key] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let d = h.finalize();
    (u16::from_be_bytes([d[0], d[1]]) as usize) % KEY_TURN_STRIPES
}

/// The POST as the pipeline needs it, from the request's authentication and headers.
pub fn post(
    caller: &Caller,
    route: String,
    headers: &HeaderMap,
    hash: &BodyHash,
    nonce: Option<PendingNonce>,
    meta: Meta,
) -> Result<Post, ApiError> {
    Ok(Post {
        caller: caller.clone(),
        route,
        idempotency_key: idempotency_key(headers)?,
        body_hash: hash.0.clone(),
        nonce,
        meta,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_derived_from_one_key_are_the_same_and_differ_by_kind_key_and_route() {
        let secret = [7u8; 32];
        let a = Ids::new(&secret, "k", "POST /r", Some("idem-1"));
        let b = Ids::new(&secret, "k", "POST /r", Some("idem-1"));
        assert_eq!(a.uuid("refund"), b.uuid("refund"));
        assert_ne!(a.uuid("refund"), a.uuid("payment"));
        assert_ne!(
            a.uuid("refund"),
            Ids::new(&secret, "k", "POST /r", Some("idem-2")).uuid("refund")
        );
        assert_ne!(
            a.uuid("refund"),
            Ids::new(&secret, "k", "POST /s", Some("idem-1")).uuid("refund")
        );
        assert_ne!(
            a.uuid("refund"),
            Ids::new(&[8u8; 32], "k", "POST /r", Some("idem-1")).uuid("refund")
        );
        assert_eq!(a.uuid("refund").get_version_num(), 7);
    }

    #[test]
    fn ids_without_a_key_are_fresh() {
        let ids = Ids::new(&[0u8; 32], "k", "POST /r", None);
        assert_ne!(ids.uuid("refund"), ids.uuid("refund"));
    }
}
