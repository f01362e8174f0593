//! Auditor and finance routes: the global event feed, chain verification, the signed digest,
//! and ledger totals computed both from the log and from the read tables.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::json;

use super::auth::Caller;
use super::envelope::ok_read;
use super::error::ApiError;
use super::openapi::{Envelope, ErrorBody};
use super::params::Query;
use super::payments::read_position;
use super::AppState;
use crate::config::Role;
use crate::domain::money::format_amount;
use crate::domain::Currency;
use crate::store::{self, event::format_time, verify};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/events", get(feed))
        .route("/api/v1/audit/verify", get(verify_chain))
        .route("/api/v1/audit/digest", get(digest))
        .route("/api/v1/ledger/totals", get(totals))
}

#[utoipa::path(get, path = "/api/v1/events", tag = "audit",
    params(("after" = Option<i64>, Query), ("limit" = Option<i64>, Query, description = "default 100, max 1000")),
    responses((status = 200, description = "data {events, next_after}", body = [crate::store::EventEnvelope]), (status = 400, description = "bad input (40001)", body = ErrorBody), (status = 401, description = "bad credentials (40101) or stale timestamp / replayed nonce (40102)", body = ErrorBody), (status = 403, description = "role may not do this (40301)", body = ErrorBody)), security(("key_id" = [], "timestamp" = [], "nonce" = [], "signature" = [])))]
async fn feed(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Auditor])?;
    let q = Query::parse(raw.as_deref(), &["after", "limit", "min_position"])?;
    let position = read_position(&state, &q).await?;
    let after = q.int("after", 0, 0, i64::MAX)?;
    let limit = q.int("limit", 100, 1, state.settings.limits.events_limit_max)?;
    let events = store::read_after(&state.pool, after, limit).await?;
    let next_after = events.last().map(|e| e.position).unwrap_or(after);
    let envelopes: Vec<_> = events.iter().map(|e| e.envelope()).collect();
    Ok(ok_read(
        position,
        &json!({ "events": envelopes, "next_after": next_after }),
    ))
}

#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit",
    responses((status = 200, description = "chain check from genesis", body = crate::store::verify::VerifyReport), (status = 400, description = "bad input (40001)", body = ErrorBody), (status = 401, description = "bad credentials (40101) or stale timestamp / replayed nonce (40102)", body = ErrorBody), (status = 403, description = "role may not do this (40301)", body = ErrorBody)), security(("key_id" = [], "timestamp" = [], "nonce" = [], "signature" = [])))]
async fn verify_chain(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Auditor])?;
    let q = Query::parse(raw.as_deref(), &["min_position"])?;
    let position = read_position(&state, &q).await?;
    let report = verify::verify_log(&state.pool, None, |_| {}).await?;
    if !report.ok {
        metrics::counter!("ledger_verify_failures_total").increment(1);
        tracing::error!(position = ?report.first_broken_position, problem = ?report.problem, "event log failed verification");
    }
    Ok(ok_read(position, &report))
}

#[utoipa::path(get, path = "/api/v1/audit/digest", tag = "audit",
    responses((status = 200, description = "data {position, root_hash, signed_at, public_key, signature}", body = Envelope), (status = 400, description = "bad input (40001)", body = ErrorBody), (status = 401, description = "bad credentials (40101) or stale timestamp / replayed nonce (40102)", body = ErrorBody), (status = 403, description = "role may not do this (40301)", body = ErrorBody)), security(("key_id" = [], "timestamp" = [], "nonce" = [], "signature" = [])))]
async fn digest(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Auditor])?;
    let q = Query::parse(raw.as_deref(), &["min_position"])?;
    let position = read_position(&state, &q).await?;
    let report = verify::verify_log(&state.pool, None, |_| {}).await?;
    if !report.ok {
        return Err(ApiError::NotAllowed(format!(
            "the log fails verification at position {}: refusing to sign it",
            report.first_broken_position.unwrap_or(0)
        )));
    }
    let signed_at = format_time(state.clock.now());
    let d =
        state
            .settings
            .signing_key
            .sign_digest(report.head_position, &report.root_hash, &signed_at);
    Ok(ok_read(position, &d))
}

#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct Side {
    pub paid_count: i64,
    pub paid_amount: Decimal,
    pub refunded_amount: Decimal,
}

#[derive(Serialize)]
struct CurrencyTotals {
    currency: String,
    paid_count: i64,
    paid_amount: String,
    refunded_amount: String,
    net_amount: String,
    matches: bool,
    /// The same figures from the read tables (ledger_entries).
    read_model: serde_json::Value,
}

#[utoipa::path(get, path = "/api/v1/ledger/totals", tag = "finance",
    params(("currency" = Option<String>, Query), ("start_time" = Option<String>, Query), ("end_time" = Option<String>, Query)),
    responses((status = 200, description = "data {matches, currencies: [{currency, paid_count, paid_amount, refunded_amount, net_amount, matches}]}", body = Envelope), (status = 400, description = "bad input (40001)", body = ErrorBody), (status = 401, description = "bad credentials (40101) or stale timestamp / replayed nonce (40102)", body = ErrorBody), (status = 403, description = "role may not do this (40301)", body = ErrorBody)), security(("key_id" = [], "timestamp" = [], "nonce" = [], "signature" = [])))]
async fn totals(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Finance])?;
    let q = Query::parse(
        raw.as_deref(),
        &["currency", "start_time", "end_time", "min_position"],
    )?;
    let currency = match q.filter("currency") {
        Some(c) => Some(
            Currency::from_code(&c)
                .ok_or_else(|| ApiError::BadRequest(format!("unknown currency {c:?}")))?,
        ),
        None => None,
    };
    let start = q.time("start_time")?;
    let end = q.time("end_time")?;
    if let (Some(s), Some(e)) = (start, end) {
        if s > e {
            return Err(ApiError::BadRequest("start_time is after end_time".into()));
        }
    }
    let position = read_position(&state, &q).await?;
    let code = currency.map(|c| c.code().to_owned());
    let (from_log, from_read) =
        compute_totals(&state.pool, code.as_deref(), start, end, position).await?;
    let mut all = true;
    let mut list = Vec::new();
    let codes: std::collections::BTreeSet<&String> =
        from_log.keys().chain(from_read.keys()).collect();
    for c in codes {
        let log = from_log.get(c).cloned().unwrap_or_default();
        let read = from_read.get(c).cloned().unwrap_or_default();
        let matches = log == read;
        if !matches {
            all = false;
            metrics::counter!("ledger_totals_mismatch_total", "currency" => c.clone()).increment(1);
            tracing::error!(currency = %c, ?log, ?read, "ledger totals differ between the log and the read tables");
        }
        let fmt = |d: Decimal| match Currency::from_code(c) {
            Some(cur) => format_amount(d, cur),
            None => d.to_string(),
        };
        list.push(CurrencyTotals {
            currency: c.clone(),
            paid_count: log.paid_count,
            paid_amount: fmt(log.paid_amount),
            refunded_amount: fmt(log.refunded_amount),
            net_amount: fmt(log.paid_amount - log.refunded_amount),
            matches,
            read_model: json!({
                "paid_count": read.paid_count,
                "paid_amount": fmt(read.paid_amount),
                "refunded_amount": fmt(read.refunded_amount),
            }),
        });
    }
    Ok(ok_read(
        position,
        &json!({ "matches": all, "position": position, "currencies": list }),
    ))
}

pub type Totals = BTreeMap<String, Side>;

/// Totals per currency from the log (up to `position`) and from `ledger_entries`.
pub async fn compute_totals(
    pool: &sqlx::PgPool,
    currency: Option<&str>,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
    position: i64,
) -> Result<(Totals, Totals), sqlx::Error> {
    let log_paid: Vec<(String, i64, Decimal)> = sqlx::query_as(
        "SELECT c.data->>'currency', COUNT(*), COALESCE(SUM((c.data->>'amount')::numeric), 0) \
         FROM events e JOIN events c ON c.stream_id = e.stream_id AND c.version = 1 \
         WHERE e.event_type = 'paid' AND e.position <= $4 \
         AND ($1::text IS NULL OR c.data->>'currency' = $1) \
         AND ($2::timestamptz IS NULL OR e.recorded_at >= $2) \
         AND ($3::timestamptz IS NULL OR e.recorded_at < $3) GROUP BY 1",
    )
    .bind(currency)
    .bind(start)
    .bind(end)
    .bind(position)
    .fetch_all(pool)
    .await?;
    let log_refunded: Vec<(String, Decimal)> = sqlx::query_as(
        "SELECT c.data->>'currency', COALESCE(SUM((e.data->>'amount')::numeric), 0) \
         FROM events e JOIN events c ON c.stream_id = e.stream_id AND c.version = 1 \
         WHERE e.event_type = 'refunded' AND e.position <= $4 \
         AND ($1::text IS NULL OR c.data->>'currency' = $1) \
         AND ($2::timestamptz IS NULL OR e.recorded_at >= $2) \
         AND ($3::timestamptz IS NULL OR e.recorded_at < $3) GROUP BY 1",
    )
    .bind(currency)
    .bind(start)
    .bind(end)
    .bind(position)
    .fetch_all(pool)
    .await?;
    let read: Vec<(String, String, i64, Decimal)> = sqlx::query_as(
        "SELECT currency::text, entry_type, COUNT(*), COALESCE(SUM(amount), 0) FROM ledger_entries \
         WHERE account = 'gateway_clearing' AND entry_type IN ('paid', 'refunded') \
         AND position <= $4 AND ($1::text IS NULL OR currency = $1) \
         AND ($2::timestamptz IS NULL OR recorded_at >= $2) \
         AND ($3::timestamptz IS NULL OR recorded_at < $3) GROUP BY 1, 2",
    )
    .bind(currency)
    .bind(start)
    .bind(end)
    .bind(position)
    .fetch_all(pool)
    .await?;
    let mut log = Totals::new();
    for (c, n, sum) in log_paid {
        let s = log.entry(c).or_default();
        s.paid_count = n;
        s.paid_amount = sum;
    }
    for (c, sum) in log_refunded {
        log.entry(c).or_default().refunded_amount = sum;
    }
    let mut from_read = Totals::new();
    for (c, kind, n, sum) in read {
        let s = from_read.entry(c).or_default();
        if kind == "paid" {
            s.paid_count = n;
            s.paid_amount = sum;
        } else {
            s.refunded_amount = -sum;
        }
    }
    for side in log.values_mut().chain(from_read.values_mut()) {
        side.paid_amount = side.paid_amount.normalize();
        side.refunded_amount = side.refunded_amount.normalize();
    }
    Ok((log, from_read))
}
