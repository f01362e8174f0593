//! Signed requests (SPEC §6, §11): key lookup, HMAC signature over the request as sent,
//! timestamp window, per-key nonces on POSTs (kept in PostgreSQL so every node shares them),
//! and the body limit (the body must be read whole to be verified).
//!
//! Every refusal is logged with the key id and the reason; secrets never are.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::AppState;
use crate::config::Role;
use crate::domain::PaymentMethod;
use crate::signing;
use crate::store::requests::use_nonce;
use crate::store::NonceUse;

/// The nonce of a POST that the pipeline records together with the request's events, in the
/// same commit (routes outside the pipeline record it here, before the handler runs).
#[derive(Debug, Clone)]
pub struct PendingNonce(pub NonceUse);

/// Routes whose POSTs go through the pipeline (`super::pipeline`), which records the nonce.
pub const PIPELINE_ROUTES: [&str; 3] = [
    "/api/v1/payments/create",
    "/api/v1/payments/{payment_id}/refund",
    "/api/v1/gateways/{method}/notify",
];

/// Who is calling, attached to the request once its signature checked out.
#[derive(Debug, Clone)]
pub enum Caller {
    Key { key_id: String, role: Role },
    Gateway(PaymentMethod),
}

impl Caller {
    pub fn key_id(&self) -> &str {
        match self {
            Caller::Key { key_id, .. } => key_id,
            Caller::Gateway(m) => m.name(),
        }
    }

    /// Allows the request when the caller's role is one of `roles` (admin always is).
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        match self {
            Caller::Key {
                role: Role::Admin, ..
            } => Ok(()),
            Caller::Key { role, key_id } if roles.contains(role) => {
                let _ = key_id;
                Ok(())
            }
            other => {
                tracing::warn!(key_id = other.key_id(), "role may not do this");
                Err(ApiError::Forbidden(format!(
                    "the key's role may not do this (needs {})",
                    roles
                        .iter()
                        .map(|r| r.name())
                        .collect::<Vec<_>>()
                        .join(" or ")
                )))
            }
        }
    }
}

/// The SHA-256 of the body as received, for idempotency keys.
#[derive(Debug, Clone)]
pub struct BodyHash(pub String);

/// Paths reachable without a signature (scrapers and browsers).
pub fn is_unsigned(path: &str) -> bool {
    !path.starts_with("/api/") || path == "/api/v1/openapi.json"
}

fn header<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

pub async fn authenticate(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    if is_unsigned(req.uri().path()) {
        return next.run(req).await;
    }
    match verify(&state, req).await {
        Ok(req) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

async fn verify(state: &AppState, req: Request) -> Result<Request, ApiError> {
    let limit = state.settings.limits.body_bytes_max;
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::TooLarge(limit));
    }
    let key_id = header(&req, "x-key-id").map(str::to_owned);
    let timestamp = header(&req, "x-timestamp").map(str::to_owned);
    let nonce = header(&req, "x-nonce").map(str::to_owned);
    let signature = header(&req, "x-signature").map(str::to_owned);
    let (Some(key_id), Some(timestamp), Some(nonce), Some(signature)) =
        (key_id, timestamp, nonce, signature)
    else {
        tracing::warn!(path = %req.uri().path(), "missing credentials");
        return Err(ApiError::Unauthorized(
            "missing credentials: X-Key-Id, X-Timestamp, X-Nonce and X-Signature are required"
                .into(),
        ));
    };
    let path = req.uri().path().to_owned();
    let deferred_nonce = req
        .extensions()
        .get::<MatchedPath>()
        .is_some_and(|m| PIPELINE_ROUTES.contains(&m.as_str()));
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| path.clone());
    let method = req.method().clone();

    let (caller, secret) = if let Some(k) = state.settings.api_keys.get(&key_id) {
        (
            Caller::Key {
                key_id: key_id.clone(),
                role: k.role,
            },
            k.secret.clone(),
        )
    } else if let Some((m, s)) = PaymentMethod::parse(&key_id)
        .and_then(|m| state.settings.gateway_secrets.get(&m).map(|s| (m, s)))
    {
        (Caller::Gateway(m), s.clone())
    } else {
        tracing::warn!(key_id = %key_id, "unknown key id");
        return Err(ApiError::Unauthorized("unknown credentials".into()));
    };

    let (parts, body) = req.into_parts();
    let bytes: Bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(e) => {
            let too_large = std::error::Error::source(&e)
                .map(|s| s.is::<http_body_util::LengthLimitError>())
                .unwrap_or(false)
                || e.to_string().contains("length limit");
            return Err(if too_large {
                ApiError::TooLarge(limit)
            } else {
                ApiError::BadRequest("could not read the request body".into())
            });
        }
    };
    if !signing::verify(
        &secret,
        &timestamp,
        &nonce,
        method.as_str(),
        &target,
        &bytes,
        &signature,
    ) {
        tracing::warn!(key_id = %key_id, "bad signature");
        return Err(ApiError::Unauthorized("bad signature".into()));
    }
    if !signing::valid_nonce(&nonce) {
        tracing::warn!(key_id = %key_id, "malformed nonce");
        return Err(ApiError::Unauthorized(
            "X-Nonce must be 16 to 64 characters of [A-Za-z0-9_-]".into(),
        ));
    }
    let window = state.settings.limits.timestamp_window();
    let ts: i64 = timestamp.trim().parse().map_err(|_| {
        tracing::warn!(key_id = %key_id, "malformed timestamp");
        ApiError::Replay("X-Timestamp must be unix seconds".into())
    })?;
    let now = state.clock.now();
    // i128: no timestamp a client can send overflows the difference.
    let skew = now.timestamp() as i128 - ts as i128;
    if skew.unsigned_abs() > window.as_secs() as u128 {
        tracing::warn!(key_id = %key_id, skew_secs = %skew, "timestamp outside the window");
        return Err(ApiError::Replay(format!(
            "timestamp is more than {} s from the server clock",
            window.as_secs()
        )));
    }
    let mut pending = None;
    if method == Method::POST {
        let nonce = NonceUse {
            key_id: key_id.clone(),
            nonce: nonce.clone(),
            expires_at: nonce_expiry(now, ts, state),
        };
        if deferred_nonce {
            pending = Some(PendingNonce(nonce));
        } else if !use_nonce(&state.pool, &key_id, &nonce.nonce, nonce.expires_at).await? {
            tracing::warn!(key_id = %key_id, "nonce replayed");
            metrics::counter!("ledger_auth_replays_total").increment(1);
            return Err(ApiError::Replay("nonce already used".into()));
        }
    }
    let mut req = Request::from_parts(parts, Body::from(bytes.clone()));
    if let Some(p) = pending {
        req.extensions_mut().insert(p);
    }
    req.extensions_mut().insert(caller);
    req.extensions_mut()
        .insert(BodyHash(signing::body_sha256_hex(&bytes)));
    Ok(req)
}

/// How long a nonce is kept: until its request's own timestamp has left the window on every
/// node's clock (plus the skew margin between nodes), and at least twice the window (SPEC
/// §11). `ts` is already within the window, so the arithmetic cannot overflow.
fn nonce_expiry(
    now: chrono::DateTime<chrono::Utc>,
    ts: i64,
    state: &AppState,
) -> chrono::DateTime<chrono::Utc> {
    let limits = &state.settings.limits;
    let window = chrono::Duration::seconds(limits.timestamp_window_secs as i64);
    let margin = chrono::Duration::seconds(limits.clock_skew_margin_secs as i64);
    let signed = chrono::DateTime::from_timestamp(ts, 0).unwrap_or(now);
    (signed + window + margin).max(now + window * 2)
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::Unauthorized("missing credentials".into()))
    }
}
