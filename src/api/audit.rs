//! Auditor and finance routes: the global event feed, chain verification, the signed digest,
//! and ledger totals computed both from the log and from the read tables.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::json;

use super::auth::Caller;
use super::envelope::ok_read;
use super::error::ApiError;
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

#[utoipa::path(get, path = "/api/v1/events", tag = "audit", operation_id = "event_feed",
    summary = "The global event feed",
    description = "Role: auditor (admin). Events in position order after `after`; follow `next_after`.",
    params(("after" = Option<i64>, Query), ("limit" = Option<i64>, Query), ("min_position" = Option<i64>, Query)),
    responses((status = 200, description = "data {events, next_after}")))]
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

#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit", operation_id = "verify_log",
    summary = "Verify the hash chain",
    description = "Role: auditor (admin). Checks the whole log from genesis; one verification runs at a time (429 with Retry-After otherwise).",
    params(("min_position" = Option<i64>, Query)),
    responses((status = 200, description = "data {ok, events_checked, head_position, head_hash, root_hash, first_broken_position, problem}", body = crate::store::verify::VerifyReport)))]
async fn verify_chain(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Auditor])?;
    let q = Query::parse(raw.as_deref(), &["min_position"])?;
    let position = read_position(&state, &q).await?;
    let report = verify_whole_log(&state).await?;
    if !report.ok {
        metrics::counter!("ledger_verify_failures_total").increment(1);
        tracing::error!(position = ?report.first_broken_position, problem = ?report.problem, "event log failed verification");
    }
    Ok(ok_read(position, &report))
}

#[utoipa::path(get, path = "/api/v1/audit/digest", tag = "audit", operation_id = "signed_digest",
    summary = "A signed digest of the log",
    description = "Role: auditor (admin). Verifies the whole log, then signs its head with LEDGER_SIGNING_KEY (Ed25519); keep it outside the system and check later with `ledger verify --digest FILE`. A log that fails verification is 409/40901.",
    params(("min_position" = Option<i64>, Query)),
    responses((status = 200, description = "data {position, root_hash, signed_at, public_key, signature}")))]
async fn digest(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Auditor])?;
    let q = Query::parse(raw.as_deref(), &["min_position"])?;
    let position = read_position(&state, &q).await?;
    let report = verify_whole_log(&state).await?;
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

/// Verifies the whole log when a turn is free within `verify_wait_ms`; 429 otherwise.
async fn verify_whole_log(state: &AppState) -> Result<verify::VerifyReport, ApiError> {
    let wait = std::time::Duration::from_millis(state.settings.limits.verify_wait_ms);
    let _turn = match tokio::time::timeout(wait, state.verify_turns.acquire()).await {
        Ok(Ok(turn)) => turn,
        _ => {
            return Err(ApiError::TooMany {
                message: "a verification of the whole log is already running; try again shortly"
                    .into(),
                retry_after_secs: 5,
            })
        }
    };
    Ok(verify::verify_log(&state.pool, None, |_| {}).await?)
}

#[derive(Serialize)]
struct CurrencyTotals {
    currency: String,
    paid_count: i64,
    paid_amount: String,
    refunded_amount: String,
    /// Money gateways reported that the ledger did not accept (held in `suspense`).
    flagged_amount: String,
    /// What the gateways hold for us from this period: paid + flagged − refunded.
    net_amount: String,
    matches: bool,
    /// The same figures from the read tables (ledger_entries).
    read_model: serde_json::Value,
}

#[utoipa::path(get, path = "/api/v1/ledger/totals", tag = "finance", operation_id = "ledger_totals",
    summary = "Ledger totals per currency",
    description = "Role: finance (admin). Paid count and amounts per currency, from the event log and from the read tables, with `matches`. A payment counts in the window when its `paid` event does, a refund when its `refunded` event does.",
    params(("currency" = Option<String>, Query), ("start_time" = Option<String>, Query, description = "inclusive"),
        ("end_time" = Option<String>, Query, description = "exclusive"), ("min_position" = Option<i64>, Query)),
    responses((status = 200, description = "data {matches, position, currencies}")))]
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
        crate::projections::totals::compute(&state.pool, code.as_deref(), start, end, position)
            .await?;
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
            flagged_amount: fmt(log.flagged_amount),
            net_amount: fmt(log.paid_amount + log.flagged_amount - log.refunded_amount),
            matches,
            read_model: json!({
                "paid_count": read.paid_count,
                "paid_amount": fmt(read.paid_amount),
                "refunded_amount": fmt(read.refunded_amount),
                "flagged_amount": fmt(read.flagged_amount),
            }),
        });
    }
    Ok(ok_read(
        position,
        &json!({ "matches": all, "position": position, "currencies": list }),
    ))
}
