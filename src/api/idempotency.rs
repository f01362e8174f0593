//! `Idempotency-Key` on POSTs (SPEC §5, §11): the same key and body answer the first answer
//! again with no new event; a different body is 409/40903; a duplicate that arrives while the
//! first is still running waits (bounded) for its answer.
//!
//! A command that appends events stores its answer in the same transaction (see
//! `store::writer`); one that appends nothing (an error, a duplicate notification) stores its
//! answer right after. Errors that mean "try again" (503) release the key instead.

use std::future::Future;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::Value;

use super::auth::{BodyHash, Caller};
use super::envelope::{self, json_response};
use super::error::ApiError;
use super::AppState;
use crate::store::requests::{self, IdempotencyBegin};
use crate::store::IdempotencyCompletion;

pub const HEADER: &str = "idempotency-key";
/// Longest accepted key.
pub const KEY_CHARS_MAX: usize = 255;

/// The key a request carries, if any.
pub fn key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get(HEADER) {
        None => Ok(None),
        Some(v) => {
            let k = v.to_str().map_err(|_| {
                ApiError::BadRequest("Idempotency-Key must be visible ASCII".into())
            })?;
            if k.is_empty() || k.len() > KEY_CHARS_MAX {
                return Err(ApiError::BadRequest(format!(
                    "Idempotency-Key must be 1 to {KEY_CHARS_MAX} characters"
                )));
            }
            Ok(Some(k.to_owned()))
        }
    }
}

/// What a POST handler's body returns: the status and the full envelope it answered, and
/// whether that answer was already stored with the events.
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    pub stored: bool,
}

/// Runs `work` at most once per idempotency key. `work` gets the completion to hand to the
/// command service (None without a key).
pub async fn run<F, Fut>(
    state: &AppState,
    caller: &Caller,
    route: String,
    headers: &HeaderMap,
    body_hash: &BodyHash,
    work: F,
) -> Response
where
    F: FnOnce(Option<IdempotencyCompletion>) -> Fut,
    Fut: Future<Output = Result<Answer, ApiError>>,
{
    let key = match key(headers) {
        Ok(k) => k,
        Err(e) => return axum::response::IntoResponse::into_response(e),
    };
    let Some(key) = key else {
        return match work(None).await {
            Ok(a) => json_response(a.status, &a.body),
            Err(e) => axum::response::IntoResponse::into_response(e),
        };
    };
    let key_id = caller.key_id().to_owned();
    let limits = &state.settings.limits;
    let deadline = Instant::now() + limits.idempotency_wait;
    loop {
        let begin = requests::idempotency_begin(
            &state.pool,
            &key_id,
            &route,
            &key,
            &body_hash.0,
            limits.idempotency_lease,
        )
        .await;
        match begin {
            Err(e) => return axum::response::IntoResponse::into_response(ApiError::from(e)),
            Ok(IdempotencyBegin::Mismatch) => {
                return axum::response::IntoResponse::into_response(ApiError::IdempotencyMismatch)
            }
            Ok(IdempotencyBegin::Replay { status, response }) => {
                metrics::counter!("ledger_idempotent_replays_total").increment(1);
                let body: Value = serde_json::from_str(&response).unwrap_or(Value::Null);
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                let mut r = json_response(status, &body);
                r.headers_mut().insert(
                    "idempotent-replayed",
                    axum::http::HeaderValue::from_static("true"),
                );
                return r;
            }
            Ok(IdempotencyBegin::InProgress) => {
                if Instant::now() >= deadline {
                    return axum::response::IntoResponse::into_response(ApiError::Unavailable(
                        "a request with this Idempotency-Key is still running".into(),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            Ok(IdempotencyBegin::Started) => break,
        }
    }
    let completion = IdempotencyCompletion {
        key_id: key_id.clone(),
        route: route.clone(),
        idem_key: key.clone(),
    };
    let (status, body, stored) = match work(Some(completion)).await {
        Ok(a) => (a.status, a.body, a.stored),
        // Failures of ours are not answers: release the key so that a retry runs again.
        Err(e @ (ApiError::Unavailable(_) | ApiError::Internal(_))) => {
            let _ = requests::idempotency_abandon(&state.pool, &key_id, &route, &key).await;
            return axum::response::IntoResponse::into_response(e);
        }
        Err(e) => (e.status(), e.body(envelope::lang()), false),
    };
    if !stored {
        if let Err(e) = requests::idempotency_complete(
            &state.pool,
            &key_id,
            &route,
            &key,
            status.as_u16(),
            &body.to_string(),
        )
        .await
        {
            tracing::warn!(error = %e, "could not store the idempotent answer");
        }
    }
    json_response(status, &body)
}
