//! The HTTP API (SPEC §5): one router per resource merged at the root, signed-request
//! authentication, the envelope, and the shared state handlers use.

pub mod audit;
pub mod auth;
pub mod checkout;
pub mod console;
pub mod docs;
pub mod envelope;
pub mod error;
pub mod finance;
pub mod gateways;
pub mod openapi;
pub mod ops;
pub mod pages;
pub mod params;
pub mod payments;
pub mod pipeline;
pub mod portal;
pub mod real_gateways;
pub mod sandbox;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use sqlx::PgPool;
use tokio::sync::watch;

use crate::bus::NatsBus;
use crate::clock::Clock;
use crate::config::Settings;
use crate::gateway::Gateways;
use crate::projections::cache::ReadCache;
use crate::service::CommandService;
use crate::store::keyring::Keyring;
use error::ApiError;

/// Everything a handler needs. Built once at start-up and shared.
pub struct AppState {
    pub settings: Arc<Settings>,
    pub pool: PgPool,
    pub commands: CommandService,
    pub cache: ReadCache,
    /// The position every read table includes.
    pub applied: watch::Receiver<i64>,
    pub bus: Option<NatsBus>,
    pub clock: Arc<Clock>,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    pub gateways: Arc<Gateways>,
    pub keyring: Keyring,
    /// In-process turns per idempotency key (see `pipeline`).
    pub key_turns: pipeline::KeyTurns,
    /// The secret ids are derived under (from the master key): a payment_no derived from an
    /// idempotency key cannot be guessed from the key.
    pub id_secret: [u8; 32],
    /// Turns for whole-log verifications (`/audit/verify`, `/audit/digest`): bounded, so
    /// callers cannot make the service scan the log many times at once.
    pub verify_turns: tokio::sync::Semaphore,
    /// This process's name in the duty leases, and the duties it holds now.
    pub node: String,
    /// `all`, `api` or `projector` (`ledger serve --role`).
    pub role: &'static str,
    pub duties: Arc<crate::duties::HeldDuties>,
}

/// Who sent a request and under which id, validated once by `observe` (SPEC §12): the
/// request id is the client's `X-Request-Id` when it is at most 64 of `[A-Za-z0-9._-]`,
/// otherwise a generated one; the client address is the socket's, or the first address of
/// `X-Forwarded-For` when the socket's peer is a trusted proxy.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub request_id: String,
    pub client_ip: Option<std::net::IpAddr>,
}

/// Longest request id accepted from a client.
pub const REQUEST_ID_CHARS_MAX: usize = 64;

impl RequestContext {
    pub fn of(req: &Request, trusted: &crate::config::TrustedProxies) -> RequestContext {
        let request_id = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| valid_request_id(v))
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let peer = req
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        let forwarded = || {
            req.headers()
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.trim().parse::<std::net::IpAddr>().ok())
        };
        let client_ip = match peer {
            Some(p) if trusted.contains(p) => forwarded().or(Some(p)),
            other => other,
        };
        RequestContext {
            request_id,
            client_ip,
        }
    }
}

/// At most 64 of `[A-Za-z0-9._-]`.
pub fn valid_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= REQUEST_ID_CHARS_MAX
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl AppState {
    /// The position the read models include now.
    pub fn position(&self) -> i64 {
        *self.applied.borrow()
    }

    /// Waits (bounded) until the read models include `position`; returns what they include.
    pub async fn wait_for(&self, position: i64, limit: Duration) -> i64 {
        let mut rx = self.applied.clone();
        let reached = tokio::time::timeout(limit, rx.wait_for(|p| *p >= position)).await;
        match reached {
            Ok(Ok(p)) => *p,
            _ => {
                tracing::warn!(position, "read models did not reach the position in time");
                self.position()
            }
        }
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    // The sandbox's pay page exists only while the sandbox runs (never in production).
    let sandbox = if state.settings.sandbox_secret.is_some() {
        sandbox::routes()
    } else {
        Router::new()
    };
    let api = Router::new()
        .merge(sandbox)
        .merge(payments::routes())
        .merge(gateways::routes())
        .merge(real_gateways::routes())
        .merge(audit::routes())
        .merge(ops::routes())
        .merge(pages::routes())
        .merge(checkout::routes())
        .merge(console::routes())
        .merge(portal::routes())
        .merge(finance::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    api.layer(middleware::from_fn_with_state(
        state.clone(),
        auth::authenticate,
    ))
    .layer(middleware::from_fn_with_state(state.clone(), bounded))
    .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
        Duration::from_millis(state.settings.limits.body_read_timeout_ms),
    ))
    .layer(middleware::from_fn_with_state(state.clone(), observe))
    .layer(tower_http::catch_panic::CatchPanicLayer::custom(
        panic_response,
    ))
    .layer(tower::limit::ConcurrencyLimitLayer::new(
        state.settings.limits.concurrent_requests_max,
    ))
    .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed("method not allowed on this route".into())
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("handler panicked");
    envelope::json_response(
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        &ApiError::Internal("panic".into()).body(envelope::Lang::En),
    )
}

/// Bounds a whole request (reading it, executing it, waiting for read-your-writes) by
/// `request_timeout_ms`, answered 503 in the envelope: a client that sends its body a byte
/// at a time cannot hold a concurrency slot for longer.
async fn bounded(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(state.settings.limits.request_timeout(), next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            metrics::counter!("ledger_request_timeouts_total").increment(1);
            axum::response::IntoResponse::into_response(ApiError::Unavailable(
                "request timed out".into(),
            ))
        }
    }
}

/// Sets the request language and context, logs one line per request (request id, route,
/// status, latency, key id; never a secret or payer data), and records request counts and
/// latency by route and status.
async fn observe(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let lang = envelope::parse_accept_language(req.headers());
    let ctx = RequestContext::of(&req, &state.settings.trusted_proxies);
    let request_id = ctx.request_id.clone();
    req.extensions_mut().insert(ctx);
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().as_str().to_owned();
    let key_id = req
        .headers()
        .get("x-key-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 64)
        .map(str::to_owned);
    let started = Instant::now();
    let read = matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    let mut response = envelope::with_lang(lang, next.run(req)).await;
    // Every GET answer says the position the read models include (SPEC §5, §12), errors and
    // answers of routes that do not read the models too: a handler's own value stands.
    if read && !response.headers().contains_key(envelope::POSITION_HEADER) {
        response.headers_mut().insert(
            envelope::POSITION_HEADER,
            axum::http::HeaderValue::from(state.position()),
        );
    }
    if let Ok(v) = axum::http::HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", v);
    }
    let status = response.status().as_u16().to_string();
    let elapsed = started.elapsed().as_secs_f64();
    tracing::info!(
        request_id = %request_id,
        method = %method,
        route = %route,
        status = %status,
        latency_ms = elapsed * 1000.0,
        key_id = key_id.as_deref().unwrap_or("-"),
        "request"
    );
    metrics::counter!("ledger_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status.clone()).increment(1);
    metrics::histogram!("ledger_http_request_duration_seconds", "method" => method, "route" => route, "status" => status).record(elapsed);
    response
}

/// Parses a payment id from a path; anything that is not a UUID names no payment.
pub fn payment_id(text: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(text).map_err(|_| ApiError::not_found())
}

/// The operational routes alone (for `--role projector`).
pub fn ops_router(state: Arc<AppState>) -> Router {
    ops::routes()
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}
