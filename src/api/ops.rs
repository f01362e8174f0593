//! Operational routes, unsigned so that probes, scrapers and browsers reach them: `/healthz`,
//! `/readyz`, `/metrics`, `/docs` and `/api/v1/openapi.json`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;

use super::envelope::{self, json_response};
use super::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .merge(super::docs::routes())
}

#[utoipa::path(get, path = "/healthz", tag = "operations", operation_id = "healthz",
    summary = "Liveness", description = "Answers while the process serves requests; touches nothing else.",
    responses((status = 200, description = "alive")))]
async fn healthz() -> Response {
    json_response(
        StatusCode::OK,
        &envelope::ok_body(&json!({ "status": "ok" })),
    )
}

#[utoipa::path(get, path = "/readyz", tag = "operations", operation_id = "readyz",
    summary = "Readiness",
    description = "Ready when the database and the bus are reachable and the projections lag at most 10,000 events.",
    responses((status = 200, description = "ready: database and bus reachable, projections caught up")))]
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let db = crate::store::head_position(&state.pool).await;
    let bus_ok = state.bus.as_ref().map(|b| b.is_connected());
    let applied = state.position();
    let (db_ok, head) = match db {
        Ok(h) => (true, h),
        Err(e) => {
            tracing::warn!(error = %e, "readiness: database unreachable");
            (false, applied)
        }
    };
    let lag = (head - applied).max(0);
    metrics::gauge!("ledger_projection_lag_events").set(lag as f64);
    // How far the bus trails the log (what the relay has yet to publish).
    let relay_backlog = match &state.bus {
        Some(_) if db_ok => crate::store::checkpoint(&state.pool, crate::bus::RELAY_CHECKPOINT)
            .await
            .ok()
            .map(|published| (head - published).max(0)),
        _ => None,
    };
    let ready =
        db_ok && bus_ok.unwrap_or(true) && lag <= state.settings.limits.ready_lag_events_max;
    let data = json!({
        "ready": ready,
        "database": db_ok,
        "bus": match bus_ok { None => "in-process", Some(true) => "connected", Some(false) => "disconnected" },
        "head_position": head,
        "projected_position": applied,
        "projection_lag": lag,
        "relay_backlog": relay_backlog,
        "node": state.node,
        "role": state.role,
        "duties": state.duties.snapshot(),
    });
    if ready {
        json_response(StatusCode::OK, &envelope::ok_body(&data))
    } else {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({ "code": 50301, "message": "not ready", "data": data }),
        )
    }
}

#[utoipa::path(get, path = "/metrics", tag = "operations", operation_id = "metrics",
    summary = "Prometheus metrics",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4", content_type = "text/plain", body = String)))]
async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    crate::telemetry::sample_pool(&state.pool);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}
