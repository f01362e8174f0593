//! Staff console sessions (issue 12): a staff member exchanges a key id and its secret, once,
//! for a session cookie (HttpOnly, SameSite=Strict, Secure under TLS) and a CSRF token; the
//! JSON API then accepts the cookie as that key (`auth`), with the key's role.
//!
//! Sessions live in PostgreSQL (`store::sessions`, only the token's SHA-256), so they work on
//! every node and signing out ends them everywhere. A session ends after `console_idle_secs`
//! without a request and `console_session_max_secs` after sign-in, and as soon as its key is
//! removed from the configuration or changes role. Failed sign-ins are throttled per key id
//! and per client address. Secrets are compared in constant time and never logged.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::auth::{self, Caller};
use super::envelope::{self, json_response};
use super::error::ApiError;
use super::params;
use super::{AppState, RequestContext};
use crate::config::Role;
use crate::domain::PaymentMethod;
use crate::store::event::format_time;
use crate::store::sessions::{self, NewSession, Session};

/// The cookie that carries the session token.
pub const COOKIE: &str = "ledger_console";
/// Where staff sign in (unsigned: the secret in the body is the credential).
pub const SIGN_IN_PATH: &str = "/api/v1/console/sessions";
/// Random bytes of a session token and of a CSRF token (256 bits).
const TOKEN_BYTES: usize = 32;
/// Length of a token as base64url without padding.
const TOKEN_CHARS: usize = 43;
/// Longest key id accepted at sign-in (longer ones cannot be configured keys).
const KEY_ID_CHARS_MAX: usize = 64;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route(SIGN_IN_PATH, post(sign_in)).route(
        "/api/v1/console/sessions/current",
        get(current).delete(sign_out),
    )
}

/// A request authenticated by a console session (attached by `auth` with its `Caller`).
#[derive(Debug, Clone)]
pub struct ConsoleSession {
    pub token_hash: String,
    pub session: Session,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ConsoleSignIn)]
struct SignIn {
    key_id: String,
    secret: String,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ConsoleSession)]
struct Created<'a> {
    key_id: &'a str,
    role: &'a str,
    csrf_token: &'a str,
    expires_at: String,
    idle_timeout_secs: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ConsoleCurrent)]
struct Current<'a> {
    key_id: &'a str,
    role: &'a str,
    csrf_token: &'a str,
    expires_at: String,
}

fn new_token() -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The session token in a request's `Cookie` headers, if it has the shape of one.
pub fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().trim_matches('"').to_owned())
}

fn well_formed(token: &str) -> bool {
    token.len() == TOKEN_CHARS
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Equal in constant time (for tokens of public length).
pub fn same_secret(a: &str, b: &str) -> bool {
    // Hashing first makes the comparison take the same time whatever the lengths.
    let a = Sha256::digest(a.as_bytes());
    let b = Sha256::digest(b.as_bytes());
    a.ct_eq(&b).into()
}

fn unauthorized_session() -> ApiError {
    ApiError::Unauthorized("no live console session (expired or signed out); sign in again".into())
}

/// The live session a cookie token names, used now (its idle timeout slides). Refused when
/// it ended, or when its key no longer exists with the role it signed in with.
pub async fn live_session(state: &AppState, token: &str) -> Result<ConsoleSession, ApiError> {
    if !well_formed(token) {
        return Err(unauthorized_session());
    }
    let hash = token_hash(token);
    let limits = &state.settings.limits;
    let Some(session) = sessions::touch(
        &state.pool,
        &hash,
        state.clock.now(),
        Duration::from_secs(limits.console_idle_secs),
    )
    .await?
    else {
        return Err(unauthorized_session());
    };
    let role = Role::parse(&session.role);
    let still_valid = state
        .settings
        .api_keys
        .get(&session.key_id)
        .is_some_and(|k| Some(k.role) == role && k.role != Role::Client);
    if !still_valid {
        tracing::warn!(key_id = %session.key_id, "console session of a removed or changed key refused");
        sessions::delete(&state.pool, &hash).await?;
        return Err(unauthorized_session());
    }
    Ok(ConsoleSession {
        token_hash: hash,
        session,
    })
}

/// The role of a live session (checked against the configuration by `live_session`).
pub fn role_of(session: &ConsoleSession) -> Role {
    Role::parse(&session.session.role).expect("live_session checked the role")
}

fn cookie(state: &AppState, value: &str, clear: bool) -> HeaderValue {
    let mut text = format!("{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/");
    if clear {
        text.push_str("; Max-Age=0");
    }
    if state.settings.tls.is_some() {
        text.push_str("; Secure");
    }
    HeaderValue::from_str(&text).expect("a cookie of base64url characters is a header value")
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

#[utoipa::path(post, path = "/api/v1/console/sessions", tag = "pages", operation_id = "console_sign_in",
    summary = "Sign in to the staff console",
    description = "Unsigned: the secret in the body is the credential (Content-Type application/json, same origin). Answers the session's CSRF token and sets the `ledger_console` cookie (HttpOnly, SameSite=Strict). Client and gateway keys may not sign in (403); failed sign-ins are throttled per key id and address (429).",
    request_body = SignIn,
    responses((status = 201, description = "signed in: data {key_id, role, csrf_token, expires_at, idle_timeout_secs}", body = Created,
        headers(("Set-Cookie" = String, description = "ledger_console=<token>; HttpOnly; SameSite=Strict; Path=/")))))]
/// `POST /api/v1/console/sessions {key_id, secret}`.
async fn sign_in(
    State(state): State<Arc<AppState>>,
    Extension(ctx): Extension<RequestContext>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // A cross-site page can post a form, but not with this content type and not with our
    // origin: signing a victim into the attacker's session is refused too.
    if !auth::same_origin(&state, &headers) {
        tracing::warn!("cross-site console sign-in refused");
        return Err(ApiError::Forbidden("cross-site request refused".into()));
    }
    if !is_json(&headers) {
        return Err(ApiError::BadRequest(
            "Content-Type must be application/json".into(),
        ));
    }
    let limit = state.settings.limits.body_bytes_max;
    let bytes = auth::read_limited(body, headers.get(header::CONTENT_LENGTH), limit).await?;
    let req: SignIn = params::json(&bytes)?;
    if req.key_id.is_empty()
        || req.key_id.chars().count() > KEY_ID_CHARS_MAX
        || req.key_id.chars().any(char::is_control)
    {
        return Err(ApiError::BadRequest(format!(
            "key_id must be 1 to {KEY_ID_CHARS_MAX} printable characters"
        )));
    }
    let now = state.clock.now();
    let limits = &state.settings.limits;
    let address = ctx.client_ip.map(|ip| ip.to_string());
    if let Some(until) = sessions::blocked_until(
        &state.pool,
        &req.key_id,
        address.as_deref(),
        now,
        limits.signin_window(),
        limits.signin_failures_max.max(1),
    )
    .await?
    {
        if until > now {
            let secs = (until - now).num_seconds().max(0) as u64 + 1;
            tracing::warn!(key_id = %req.key_id, client_ip = address.as_deref().unwrap_or("-"), retry_after_secs = secs, "console sign-in throttled");
            return Err(ApiError::TooMany {
                message: "too many failed sign-ins; try again later".into(),
                retry_after_secs: secs,
            });
        }
    }
    if PaymentMethod::parse(&req.key_id).is_some() {
        tracing::warn!(key_id = %req.key_id, "a gateway may not sign in to the console");
        return Err(ApiError::Forbidden(
            "gateway keys cannot sign in to the console".into(),
        ));
    }
    let key = state.settings.api_keys.get(&req.key_id);
    // An unknown key is compared with a stand-in, so it takes as long as a wrong secret.
    let expected = key.map(|k| k.secret.as_str()).unwrap_or("\0unknown-key\0");
    if !(same_secret(&req.secret, expected) && key.is_some()) {
        sessions::record_failure(&state.pool, &req.key_id, address.as_deref(), now).await?;
        metrics::counter!("ledger_console_signin_failures_total").increment(1);
        tracing::warn!(key_id = %req.key_id, client_ip = address.as_deref().unwrap_or("-"), "console sign-in failed: wrong key id or secret");
        return Err(ApiError::Unauthorized("wrong key id or secret".into()));
    }
    let key = key.expect("checked above");
    if key.role == Role::Client {
        tracing::warn!(key_id = %req.key_id, "a client key may not sign in to the console");
        return Err(ApiError::Forbidden(
            "client keys cannot sign in to the console".into(),
        ));
    }
    sessions::clear_failures(&state.pool, &key.key_id).await?;
    let idle = Duration::from_secs(limits.console_idle_secs);
    sessions::purge(&state.pool, now, idle, limits.signin_window()).await?;
    // Signing in again from a browser that holds a session replaces it.
    if let Some(old) = cookie_token(&headers).filter(|t| well_formed(t)) {
        sessions::delete(&state.pool, &token_hash(&old)).await?;
    }
    let token = new_token();
    let csrf_token = new_token();
    let expires_at = now + chrono::Duration::seconds(limits.console_session_max_secs as i64);
    sessions::create(
        &state.pool,
        &NewSession {
            token_hash: &token_hash(&token),
            key_id: &key.key_id,
            role: key.role.name(),
            csrf_token: &csrf_token,
            created_at: now,
            expires_at,
        },
        limits.console_sessions_per_key_max.max(1),
    )
    .await?;
    tracing::info!(key_id = %key.key_id, role = key.role.name(), client_ip = address.as_deref().unwrap_or("-"), "console sign-in");
    let data = Created {
        key_id: &key.key_id,
        role: key.role.name(),
        csrf_token: &csrf_token,
        expires_at: format_time(expires_at),
        idle_timeout_secs: limits.console_idle_secs,
    };
    let mut response = json_response(StatusCode::CREATED, &envelope::ok_body(&data));
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie(&state, &token, false));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

fn session_of(
    caller: &Caller,
    session: Option<Extension<ConsoleSession>>,
) -> Result<ConsoleSession, ApiError> {
    match (caller, session) {
        (Caller::Key { .. }, Some(Extension(s))) => Ok(s),
        _ => Err(unauthorized_session()),
    }
}

#[utoipa::path(get, path = "/api/v1/console/sessions/current", tag = "pages", operation_id = "console_session",
    summary = "The console session",
    description = "With the session's cookie: who is signed in, its CSRF token and when it ends (401 when there is no live session).",
    responses((status = 200, description = "data {key_id, role, csrf_token, expires_at}", body = Current)))]
/// `GET /api/v1/console/sessions/current`.
async fn current(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    session: Option<Extension<ConsoleSession>>,
) -> Result<Response, ApiError> {
    let s = session_of(&caller, session)?;
    let mut response = envelope::ok_read(
        state.position(),
        &Current {
            key_id: &s.session.key_id,
            role: &s.session.role,
            csrf_token: &s.session.csrf_token,
            expires_at: format_time(s.session.expires_at),
        },
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[utoipa::path(delete, path = "/api/v1/console/sessions/current", tag = "pages", operation_id = "console_sign_out",
    summary = "Sign out of the console",
    description = "With the session's cookie and its X-CSRF-Token: ends the session everywhere and clears the cookie.",
    responses((status = 200, description = "signed out: data null")))]
/// `DELETE /api/v1/console/sessions/current` (with the CSRF header, checked by `auth`).
async fn sign_out(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    session: Option<Extension<ConsoleSession>>,
) -> Result<Response, ApiError> {
    let s = session_of(&caller, session)?;
    sessions::delete(&state.pool, &s.token_hash).await?;
    tracing::info!(key_id = %s.session.key_id, "console sign-out");
    let mut response = json_response(StatusCode::OK, &envelope::ok_body(&()));
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie(&state, "", true));
    Ok(response.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others_and_tokens_have_one_shape() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; ledger_console=abc; b=2"),
        );
        assert_eq!(cookie_token(&h).as_deref(), Some("abc"));
        assert!(!well_formed("abc"));
        let t = new_token();
        assert!(well_formed(&t), "{t}");
        assert_ne!(t, new_token());
        assert!(cookie_token(&HeaderMap::new()).is_none());
    }

    #[test]
    fn secrets_compare_equal_only_when_equal() {
        assert!(same_secret("operator-secret-1", "operator-secret-1"));
        assert!(!same_secret("operator-secret-1", "operator-secret-2"));
        assert!(!same_secret("", "x"));
    }
}
