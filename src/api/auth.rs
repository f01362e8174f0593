//! Authentication of the JSON API, three ways, each ending in a `Caller`:
//!
//! - **Signed requests** (SPEC §6, §11): key lookup, HMAC signature over the request as sent,
//!   timestamp window, per-key nonces on POSTs (kept in PostgreSQL so every node shares them).
//! - **Console sessions** (issue 12): no `X-Key-Id` but the `ledger_console` cookie of a live
//!   session (`super::console`) → the session's key and role. A state-changing request must
//!   also carry the session's `X-CSRF-Token` and, if it has an `Origin`, this service's own:
//!   that is what refuses a cross-site POST carrying the cookie. It has no nonce; the CSRF
//!   token and SameSite=Strict stand in for it.
//! - **Portal links** (issue 12): `Authorization: Bearer <token>` (`super::portal`) →
//!   `Caller::Portal`, for GETs of the portal routes only.
//!
//! Every way reads the body whole within the route's limit and records its hash, so
//! idempotency works alike. Every refusal is logged with the key id and the reason; secrets
//! and tokens never are.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::console;
use super::error::ApiError;
use super::portal;
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

/// Who is calling, attached to the request once its credentials checked out.
#[derive(Debug, Clone)]
pub enum Caller {
    Key {
        key_id: String,
        role: Role,
    },
    Gateway(PaymentMethod),
    /// A member's portal link: one user's payments, read-only, until `expires_at`. No role
    /// admits it: only the portal routes let it in, explicitly.
    Portal {
        user_id: String,
        merchant: Option<String>,
        expires_at: chrono::DateTime<chrono::Utc>,
    },
}

impl Caller {
    pub fn key_id(&self) -> &str {
        match self {
            Caller::Key { key_id, .. } => key_id,
            Caller::Gateway(m) => m.name(),
            Caller::Portal { .. } => "portal",
        }
    }

    /// The member a portal link shows, when the caller is one.
    pub fn portal_user(&self) -> Option<&str> {
        match self {
            Caller::Portal { user_id, .. } => Some(user_id),
            _ => None,
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

/// Paths reachable without a signature (scrapers and browsers; the member checkout; the
/// console's sign-in, whose body carries the credential; the real gateways' notifications,
/// which their RSA signatures authenticate).
pub fn is_unsigned(path: &str) -> bool {
    !path.starts_with("/api/")
        || path == "/api/v1/openapi.json"
        || path.starts_with(super::checkout::PATH_PREFIX)
        || path == console::SIGN_IN_PATH
        || super::real_gateways::is_notify_path(path)
}

/// The largest body a route accepts: settlement uploads get `upload_bytes_max`, every other
/// route `body_bytes_max`.
pub fn body_limit(state: &AppState, req: &Request) -> usize {
    let limits = &state.settings.limits;
    match req.extensions().get::<MatchedPath>() {
        Some(m) if m.as_str() == super::finance::RECONCILE_PATH => limits.upload_bytes_max,
        _ => limits.body_bytes_max,
    }
}

/// Reads a body whole, refusing one over `limit` (by its declared length first).
pub async fn read_limited(
    body: Body,
    content_length: Option<&axum::http::HeaderValue>,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let declared = content_length
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::TooLarge(limit));
    }
    match axum::body::to_bytes(body, limit).await {
        Ok(b) => Ok(b),
        Err(e) => {
            let too_large = std::error::Error::source(&e)
                .map(|s| s.is::<http_body_util::LengthLimitError>())
                .unwrap_or(false)
                || e.to_string().contains("length limit");
            Err(if too_large {
                ApiError::TooLarge(limit)
            } else {
                ApiError::BadRequest("could not read the request body".into())
            })
        }
    }
}

/// The origin this service is reached at: `LEDGER_PUBLIC_URL`'s scheme and authority.
fn own_origin(public_url: &str) -> Option<String> {
    let uri: axum::http::Uri = public_url.parse().ok()?;
    Some(format!("{}://{}", uri.scheme_str()?, uri.authority()?).to_ascii_lowercase())
}

/// Whether a request's `Origin`, if it has one, is this service's own (its public URL, or the
/// `Host` it was sent to). A request without `Origin` passes: browsers send it on every
/// cross-site POST, and the CSRF token is checked besides.
pub fn same_origin(state: &AppState, headers: &axum::http::HeaderMap) -> bool {
    let Some(origin) = headers.get(axum::http::header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin = origin.trim().to_ascii_lowercase();
    if own_origin(&state.settings.public_url).is_some_and(|o| o == origin) {
        return true;
    }
    let scheme = if state.settings.tls.is_some() {
        "https"
    } else {
        "http"
    };
    headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|host| format!("{scheme}://{}", host.trim().to_ascii_lowercase()) == origin)
}

/// The token of `Authorization: Bearer <token>`, if the request has one.
fn bearer(req: &Request) -> Option<String> {
    let value = header(req, "authorization")?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
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
    let verified = if req.headers().contains_key("x-key-id") {
        verify(&state, req).await
    } else if let Some(token) = bearer(&req) {
        portal_request(&state, req, &token).await
    } else if let Some(token) = console::cookie_token(req.headers()) {
        console_request(&state, req, &token).await
    } else {
        verify(&state, req).await
    };
    match verified {
        Ok(req) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// A request carrying a console session's cookie (and no signature).
async fn console_request(state: &AppState, req: Request, token: &str) -> Result<Request, ApiError> {
    let session = console::live_session(state, token).await?;
    let key_id = session.session.key_id.clone();
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        if !same_origin(state, req.headers()) {
            tracing::warn!(key_id = %key_id, path = %req.uri().path(), "cross-site request with a console session refused");
            return Err(ApiError::Forbidden("cross-site request refused".into()));
        }
        let csrf_ok = header(&req, "x-csrf-token")
            .is_some_and(|sent| console::same_secret(sent, &session.session.csrf_token));
        if !csrf_ok {
            tracing::warn!(key_id = %key_id, path = %req.uri().path(), "console request without its CSRF token refused");
            return Err(ApiError::Forbidden(
                "missing or wrong X-CSRF-Token for this session".into(),
            ));
        }
    }
    let limit = body_limit(state, &req);
    let (parts, body) = req.into_parts();
    let bytes = read_limited(
        body,
        parts.headers.get(axum::http::header::CONTENT_LENGTH),
        limit,
    )
    .await?;
    let mut req = Request::from_parts(parts, Body::from(bytes.clone()));
    req.extensions_mut().insert(Caller::Key {
        key_id,
        role: console::role_of(&session),
    });
    req.extensions_mut()
        .insert(BodyHash(signing::body_sha256_hex(&bytes)));
    req.extensions_mut().insert(session);
    Ok(req)
}

/// A request carrying a member portal token: GETs of the portal routes only.
async fn portal_request(state: &AppState, req: Request, token: &str) -> Result<Request, ApiError> {
    let claims = portal::verify(state, token, state.clock.now())?;
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let allowed = matches!(*req.method(), Method::GET | Method::HEAD)
        && route
            .as_deref()
            .is_some_and(|r| portal::PORTAL_ROUTES.contains(&r));
    if !allowed {
        tracing::warn!(key_id = %claims.key_id, path = %req.uri().path(), "portal link used outside the portal");
        return Err(ApiError::Forbidden(
            "a member portal link may only read its member's payments".into(),
        ));
    }
    let mut req = req;
    req.extensions_mut().insert(Caller::Portal {
        user_id: claims.user_id,
        merchant: claims.merchant,
        expires_at: chrono::DateTime::from_timestamp(claims.exp, 0).unwrap_or_default(),
    });
    req.extensions_mut()
        .insert(BodyHash(signing::body_sha256_hex(b"")));
    Ok(req)
}

async fn verify(state: &AppState, req: Request) -> Result<Request, ApiError> {
    let limit = body_limit(state, &req);
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

    // A gateway signs with its own secret; while the sandbox runs, it signs the
    // notifications of its pay page with the sandbox's own secret, never a real gateway's.
    let (caller, secrets) = if let Some(k) = state.settings.api_keys.get(&key_id) {
        (
            Caller::Key {
                key_id: key_id.clone(),
                role: k.role,
            },
            vec![k.secret.clone()],
        )
    } else if let Some(m) = PaymentMethod::parse(&key_id).filter(|m| {
        state.settings.gateway_secrets.contains_key(m) || state.settings.sandbox_secret.is_some()
    }) {
        let secrets = state
            .settings
            .gateway_secrets
            .get(&m)
            .into_iter()
            .chain(state.settings.sandbox_secret.as_ref())
            .cloned()
            .collect();
        (Caller::Gateway(m), secrets)
    } else {
        tracing::warn!(key_id = %key_id, "unknown key id");
        return Err(ApiError::Unauthorized("unknown credentials".into()));
    };

    let (parts, body) = req.into_parts();
    let bytes: Bytes = read_limited(body, None, limit).await?;
    let signed = secrets.iter().any(|secret| {
        signing::verify(
            secret,
            &timestamp,
            &nonce,
            method.as_str(),
            &target,
            &bytes,
            &signature,
        )
    });
    if !signed {
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
