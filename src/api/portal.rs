//! Member portal links (issue 12): a merchant's backend asks for a short-lived, read-only link
//! to one member's payment history, as hosted customer portals do.
//!
//! The link's token is stateless: base64url of its claims `{user_id, key_id, merchant, exp}`,
//! a dot, and base64url of HMAC-SHA256 over the encoded claims under a key derived from the
//! master key (`portal`). Nothing is stored, so every node accepts it and it cannot be
//! revoked before it expires (15 minutes by default); that is why it only reads. `auth`
//! turns a valid token into `Caller::Portal`, which only the portal routes accept.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::auth::Caller;
use super::envelope::{self, json_response, ok_read};
use super::error::ApiError;
use super::params;
use super::AppState;
use crate::config::Role;
use crate::domain::payment::{check_text, ID_TEXT_CHARS_MAX};
use crate::store::event::format_time;

type HmacSha256 = Hmac<Sha256>;

/// Longest token accepted (claims of at most 64-character ids fit well within it).
const TOKEN_CHARS_MAX: usize = 1024;

/// Routes a portal token may call (GET only); everything else refuses it.
pub const PORTAL_ROUTES: [&str; 4] = [
    "/api/v1/portal/session",
    "/api/v1/payments/history",
    "/api/v1/payments/{payment_id}",
    "/api/v1/payments/{payment_id}/status",
];

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/portal/sessions", post(create))
        .route("/api/v1/portal/session", get(current))
}

/// What a portal token says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    pub user_id: String,
    /// The key that asked for the link.
    pub key_id: String,
    /// The merchant that key is bound to, if any.
    pub merchant: Option<String>,
    /// Expiry, unix seconds.
    pub exp: i64,
}

fn mac(state: &AppState) -> HmacSha256 {
    HmacSha256::new_from_slice(&state.settings.master_key.derive("portal"))
        .expect("HMAC accepts keys of any length")
}

/// Signs claims into a token.
pub fn issue(state: &AppState, claims: &Claims) -> String {
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialize"));
    let mut m = mac(state);
    m.update(payload.as_bytes());
    let tag = URL_SAFE_NO_PAD.encode(m.finalize().into_bytes());
    format!("{payload}.{tag}")
}

fn invalid() -> ApiError {
    ApiError::Unauthorized("the portal link has expired or is not valid".into())
}

/// Checks a token's signature (in constant time) and expiry at `now`.
pub fn verify(state: &AppState, token: &str, now: DateTime<Utc>) -> Result<Claims, ApiError> {
    if token.len() > TOKEN_CHARS_MAX {
        return Err(invalid());
    }
    let (payload, tag) = token.split_once('.').ok_or_else(invalid)?;
    let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| invalid())?;
    let mut m = mac(state);
    m.update(payload.as_bytes());
    m.verify_slice(&tag).map_err(|_| {
        tracing::warn!("portal token with a bad signature");
        invalid()
    })?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).map_err(|_| invalid())?;
    let claims: Claims = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    if claims.exp <= now.timestamp() {
        tracing::info!(key_id = %claims.key_id, "expired portal token");
        return Err(invalid());
    }
    Ok(claims)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PortalLinkRequest)]
struct CreateRequest {
    user_id: String,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = PortalLink)]
struct Link {
    url: String,
    expires_at: String,
}

#[utoipa::path(post, path = "/api/v1/portal/sessions", tag = "pages", operation_id = "portal_link",
    summary = "A member portal link",
    description = "Role: client (admin). A read-only link to one member's payments for 15 minutes: `url` is `{LEDGER_PUBLIC_URL}/portal#token=<token>`; the page sends the token as `Authorization: Bearer`.",
    request_body = CreateRequest,
    responses((status = 201, description = "data {url, expires_at}", body = Link)))]
/// `POST /api/v1/portal/sessions {user_id}` (client; admin may too).
async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Client])?;
    let req: CreateRequest = params::json(&body)?;
    check_text("user_id", &req.user_id, ID_TEXT_CHARS_MAX)?;
    let key_id = caller.key_id().to_owned();
    let merchant = state
        .settings
        .api_keys
        .get(&key_id)
        .and_then(|k| k.merchant.clone());
    let expires_at =
        state.clock.now() + chrono::Duration::seconds(state.settings.limits.portal_ttl_secs as i64);
    // Whole seconds: the token carries unix seconds, and the answer says the same instant.
    let expires_at = DateTime::from_timestamp(expires_at.timestamp(), 0).unwrap_or(expires_at);
    let token = issue(
        &state,
        &Claims {
            user_id: req.user_id,
            key_id: key_id.clone(),
            merchant,
            exp: expires_at.timestamp(),
        },
    );
    tracing::info!(key_id = %key_id, "portal link issued");
    let data = Link {
        url: format!("{}/portal#token={token}", state.settings.public_url),
        expires_at: format_time(expires_at),
    };
    Ok(json_response(
        StatusCode::CREATED,
        &envelope::ok_body(&data),
    ))
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = PortalSession)]
struct Current<'a> {
    user_id: &'a str,
    expires_at: String,
}

#[utoipa::path(get, path = "/api/v1/portal/session", tag = "pages", operation_id = "portal_session",
    summary = "Whom a portal link shows",
    description = "With a portal link's bearer token only (any other caller is 403; an expired or altered token 401).",
    responses((status = 200, description = "data {user_id, expires_at}", body = Current)))]
/// `GET /api/v1/portal/session`: whom the link shows, and until when.
async fn current(State(state): State<Arc<AppState>>, caller: Caller) -> Result<Response, ApiError> {
    match &caller {
        Caller::Portal {
            user_id,
            expires_at,
            ..
        } => Ok(ok_read(
            state.position(),
            &Current {
                user_id,
                expires_at: format_time(*expires_at),
            },
        )),
        _ => Err(ApiError::Forbidden(
            "only a member portal link has a portal session".into(),
        )),
    }
}
