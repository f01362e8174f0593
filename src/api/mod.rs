//! The HTTP API (SPEC §5): one router per resource merged at the root, signed-request
//! authentication, the envelope, and the shared state handlers use.

pub mod audit;
pub mod auth;
pub mod envelope;
pub mod error;
pub mod gateways;
pub mod idempotency;
pub mod openapi;
pub mod ops;
pub mod params;
pub mod payments;
pub mod sandbox;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use sqlx::PgPool;
use tokio::sync::watch;

use crate::bus::NatsBus;
use crate::clock::Clock;
use crate::config::Settings;
use crate::gateway::Gateways;
use crate::keyring::Keyring;
use crate::projections::cache::ReadCache;
use crate::service::CommandService;
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
    let api = Router::new()
        .merge(payments::routes())
        .merge(gateways::routes())
        .merge(audit::routes())
        .merge(ops::routes())
        .merge(sandbox::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    api.layer(middleware::from_fn_with_state(
        state.clone(),
        auth::authenticate,
    ))
    .layer(middleware::from_fn(observe))
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

/// Sets the request language, and records request counts and latency by route and status.
async fn observe(req: Request, next: Next) -> Response {
    let lang = envelope::parse_accept_language(req.headers());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().as_str().to_owned();
    let started = Instant::now();
    let response = envelope::with_lang(lang, next.run(req)).await;
    let status = response.status().as_u16().to_string();
    let elapsed = started.elapsed().as_secs_f64();
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
        .layer(middleware::from_fn(observe))
        .with_state(state)
}
