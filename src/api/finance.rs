//! Finance routes of the console (issue 12): paid and refunded amounts per UTC day (the chart
//! beside `/ledger/totals`), and reconciliation of an uploaded settlement file against the
//! ledger — the same matching as `ledger reconcile` (`crate::reconcile`), answered as JSON.
//!
//! The reconciliation reads only: it appends nothing, so it needs no pipeline.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{header, HeaderMap};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;

use super::auth::Caller;
use super::envelope::ok_read;
use super::error::ApiError;
use super::params::Query;
use super::payments::read_position;
use super::AppState;
use crate::config::Role;
use crate::domain::money::format_amount;
use crate::domain::Currency;
use crate::reconcile::{self, Category, Item, Kind};

/// The route whose body may be as large as `upload_bytes_max` (see `auth::body_limit`).
pub const RECONCILE_PATH: &str = "/api/v1/reconcile";

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/ledger/daily", get(daily))
        // `auth` has already read the body within `upload_bytes_max`; axum's own default
        // (2 MB) must not cut a settlement file shorter.
        .route(
            RECONCILE_PATH,
            post(reconcile_upload).layer(DefaultBodyLimit::disable()),
        )
}

/// A period's filter as `/ledger/totals` reads it.
struct Period {
    currency: Option<Currency>,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
}

/// `currency`, `start_time` and `end_time`; start after end is refused.
fn period(q: &Query) -> Result<Period, ApiError> {
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
    Ok(Period {
        currency,
        start,
        end,
    })
}

fn amount(d: Decimal, currency: &str) -> String {
    match Currency::from_code(currency) {
        Some(c) => format_amount(d, c),
        None => d.normalize().to_string(),
    }
}

#[derive(Serialize, utoipa::ToSchema)]
struct Day {
    day: String,
    currency: String,
    paid_amount: String,
    refunded_amount: String,
}

#[derive(Serialize, utoipa::ToSchema)]
struct Daily {
    days: Vec<Day>,
}

#[utoipa::path(get, path = "/api/v1/ledger/daily", tag = "finance", operation_id = "ledger_daily",
    summary = "Paid and refunded amounts per UTC day",
    description = "Role: finance (admin). One row per day and currency, oldest first.",
    params(("currency" = Option<String>, Query), ("start_time" = Option<String>, Query, description = "inclusive"),
        ("end_time" = Option<String>, Query, description = "exclusive"), ("min_position" = Option<i64>, Query)),
    responses((status = 200, description = "data {days}", body = Daily)))]
/// `GET /api/v1/ledger/daily?currency=&start_time=&end_time=` (finance).
async fn daily(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Finance])?;
    let q = Query::parse(
        raw.as_deref(),
        &["currency", "start_time", "end_time", "min_position"],
    )?;
    let p = period(&q)?;
    let position = read_position(&state, &q).await?;
    let code = p.currency.map(|c| c.code());
    let rows = crate::projections::totals::daily(&state.pool, code, p.start, p.end).await?;
    let days = rows
        .into_iter()
        .map(|r| Day {
            day: r.day.format("%Y-%m-%d").to_string(),
            paid_amount: amount(r.paid_amount, &r.currency),
            refunded_amount: amount(r.refunded_amount, &r.currency),
            currency: r.currency,
        })
        .collect();
    Ok(ok_read(position, &Daily { days }))
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ReconcileItem)]
struct ReportItem {
    category: &'static str,
    line: Option<usize>,
    payment_no: String,
    /// For a refund, its refund_no; for a payment line, the gateway's trade number.
    reference: String,
    kind: &'static str,
    file_amount: Option<String>,
    ledger_amount: Option<String>,
    /// The ledger's status of the payment or refund, when the ledger has it.
    ledger_status: Option<String>,
    /// For an amount mismatch, file minus ledger (language-neutral; the page words the rest).
    detail: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ReconcileReport)]
struct ReportView {
    all_match: bool,
    lines: usize,
    counts: BTreeMap<&'static str, usize>,
    /// Every line or ledger item that is not `matched`: file lines first, then ledger items.
    items: Vec<ReportItem>,
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Payment => "payment",
        Kind::Refund => "refund",
    }
}

fn item_view(i: Item) -> ReportItem {
    let detail = match (i.category, &i.file_amount, &i.ledger_amount) {
        (Category::AmountMismatch, Some(f), Some(l)) => {
            match (f.parse::<Decimal>(), l.parse::<Decimal>()) {
                (Ok(f), Ok(l)) => {
                    let d = (f - l).normalize();
                    Some(if d > Decimal::ZERO {
                        format!("+{d}")
                    } else {
                        d.to_string()
                    })
                }
                _ => None,
            }
        }
        _ => None,
    };
    ReportItem {
        category: i.category.name(),
        line: i.line,
        payment_no: i.payment_no,
        reference: i.reference,
        kind: kind_name(i.kind),
        file_amount: i.file_amount,
        ledger_amount: i.ledger_amount,
        ledger_status: i.ledger_status,
        detail,
    }
}

fn is_csv(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("text/csv"))
}

#[utoipa::path(post, path = "/api/v1/reconcile", tag = "finance", operation_id = "reconcile_settlement",
    summary = "Reconcile a settlement file",
    description = "Role: finance (admin). Matches a gateway's settlement file (CSV with the header `payment_no,gateway_trade_no,type,amount,fee,settled_at`; at most 8 MiB) against the ledger, as `ledger reconcile` does; appends nothing. A malformed line is 400/40001 naming the line.",
    params(("start_time" = Option<String>, Query, description = "inclusive"), ("end_time" = Option<String>, Query, description = "exclusive")),
    request_body(content = String, content_type = "text/csv", description = "The settlement file"),
    responses((status = 200, description = "data {all_match, lines, counts, items}", body = ReportView)))]
/// `POST /api/v1/reconcile?start_time=&end_time=` with the settlement CSV as the body
/// (finance).
async fn reconcile_upload(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Finance])?;
    let q = Query::parse(raw.as_deref(), &["start_time", "end_time"])?;
    let p = period(&q)?;
    if !is_csv(&headers) {
        return Err(ApiError::BadRequest(
            "Content-Type must be text/csv (the settlement file)".into(),
        ));
    }
    // Parsing a file of up to `upload_bytes_max` is CPU work: off the async threads.
    let lines_max = state.settings.limits.settlement_lines_max;
    let rows = tokio::task::spawn_blocking(move || reconcile::parse_file(&body[..], lines_max))
        .await
        .map_err(|e| ApiError::Internal(format!("settlement parser: {e}")))?
        .map_err(|e| ApiError::BadRequest(format!("settlement file: {e}")))?;
    let position = state.position();
    let (payments, refunds) =
        crate::projections::settled::load(&state.pool, p.start, p.end).await?;
    let report =
        tokio::task::spawn_blocking(move || reconcile::reconcile(&rows, &payments, &refunds))
            .await
            .map_err(|e| ApiError::Internal(format!("reconciliation: {e}")))?;
    metrics::counter!("ledger_reconcile_mismatches_total").increment(report.problems.len() as u64);
    tracing::info!(
        key_id = caller.key_id(),
        lines = report.lines,
        problems = report.problems.len(),
        "settlement file reconciled"
    );
    let view = ReportView {
        all_match: report.all_match(),
        lines: report.lines,
        counts: report.counts.iter().map(|(c, n)| (c.name(), *n)).collect(),
        items: report.problems.into_iter().map(item_view).collect(),
    };
    Ok(ok_read(position, &view))
}
