//! Logs and metrics: the log subscriber and the process-wide Prometheus recorder, with a
//! `# HELP` text for every metric the service records (the table [`METRICS`] is the one list
//! of them: a metric recorded anywhere must be described here).
//!
//! Logs go to stdout as JSON lines by default (`LEDGER_LOG_FORMAT=text` for people at a
//! terminal) and, with `LEDGER_LOG_DIR`, also to daily-rotated JSON files written by a
//! background thread. Neither a log line nor a metric label ever carries a secret or payer
//! data: callers log ids, codes and amounts only.

use std::sync::{Mutex, OnceLock};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Daily log files kept under `LEDGER_LOG_DIR`; older ones are deleted at rotation (a bound,
/// so an unattended node cannot fill its disk; ship logs elsewhere to keep them longer).
pub const LOG_FILES_KEPT: usize = 30;

/// The file logs are written by a background thread; this guard flushes it when dropped, so
/// it lives as long as the process (or until [`flush_logs`]).
static LOG_GUARD: Mutex<Option<WorkerGuard>> = Mutex::new(None);

/// How the log lines on stdout look (`LEDGER_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, with the fields of the spans it happened in (the default:
    /// what log collectors parse).
    Json,
    /// Human-readable lines.
    Text,
}

/// The log settings, read from the environment before the command line is parsed (so that
/// configuration errors are logged like everything else).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// `LEDGER_LOG_FORMAT`: `json` (default) or `text`.
    pub format: LogFormat,
    /// `LEDGER_LOG_DIR`: also write JSON lines to `ledger.YYYY-MM-DD.log` there.
    pub dir: Option<std::path::PathBuf>,
    /// `LEDGER_LOG_SPANS=close`: one line when each span (command, append batch, projection
    /// batch) closes, with how long it was busy and idle — to follow a slow request. Off by
    /// default: the projector's span closes several times a second even when idle.
    pub span_close: bool,
}

impl LogSettings {
    /// Reads the settings; a malformed value is an error naming the variable.
    pub fn from_env() -> Result<LogSettings, String> {
        Self::parse(|name| std::env::var(name).ok())
    }

    fn parse(var: impl Fn(&str) -> Option<String>) -> Result<LogSettings, String> {
        let format = match var("LEDGER_LOG_FORMAT").as_deref().map(str::trim) {
            None | Some("") | Some("json") => LogFormat::Json,
            Some("text") => LogFormat::Text,
            Some(other) => {
                return Err(format!(
                    "LEDGER_LOG_FORMAT: {other:?} is neither \"json\" nor \"text\""
                ))
            }
        };
        let dir = var("LEDGER_LOG_DIR")
            .filter(|d| !d.trim().is_empty())
            .map(std::path::PathBuf::from);
        let span_close = match var("LEDGER_LOG_SPANS").as_deref().map(str::trim) {
            None | Some("") | Some("off") => false,
            Some("close") => true,
            Some(other) => {
                return Err(format!(
                    "LEDGER_LOG_SPANS: {other:?} is neither \"off\" nor \"close\""
                ))
            }
        };
        Ok(LogSettings {
            format,
            dir,
            span_close,
        })
    }
}

/// Installs the log subscriber (see the module header). A malformed log setting, or a log
/// directory that cannot be written, stops the process with one line naming the setting.
pub fn init_logging() {
    let settings = match LogSettings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = try_init_logging(&settings) {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}

/// Installs the log subscriber for `settings`. Does nothing when one is already installed
/// (tests start many services in one process).
pub fn try_init_logging(settings: &LogSettings) -> Result<(), String> {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,async_nats=warn"));
    let spans = if settings.span_close {
        FmtSpan::CLOSE
    } else {
        FmtSpan::NONE
    };
    let stdout: Box<dyn Layer<_> + Send + Sync> = match settings.format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_target(false)
            .with_span_events(spans.clone())
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_span_events(spans.clone())
            .boxed(),
    };
    let (file, guard) = match &settings.dir {
        Some(dir) => {
            let appender = RollingFileAppender::builder()
                .rotation(Rotation::DAILY)
                .filename_prefix("ledger")
                .filename_suffix("log")
                .max_log_files(LOG_FILES_KEPT)
                .build(dir)
                .map_err(|e| format!("LEDGER_LOG_DIR: cannot write logs in {dir:?}: {e}"))?;
            // Lossy: a slow disk drops log lines rather than stalling payments.
            let (writer, guard) = tracing_appender::non_blocking(appender);
            let layer = tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(true)
                .with_span_list(true)
                .with_target(false)
                .with_span_events(spans)
                .with_writer(writer)
                .boxed();
            (Some(layer), Some(guard))
        }
        None => (None, None),
    };
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(stdout)
        .with(file)
        .try_init()
        .is_ok();
    if installed {
        if let Some(g) = guard {
            *LOG_GUARD.lock().unwrap_or_else(|p| p.into_inner()) = Some(g);
        }
    }
    Ok(())
}

/// Writes out what the log file thread still holds. Call once, just before the process
/// exits (`std::process::exit` skips destructors); later lines reach stdout only.
pub fn flush_logs() {
    let guard = LOG_GUARD.lock().unwrap_or_else(|p| p.into_inner()).take();
    drop(guard);
}

/// What a metric is, for its `# TYPE` and the `# HELP` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric the service records: name, kind, help. Counters end in `_total`, durations
/// are in seconds, and labels never carry a secret, payer data or an unbounded id.
pub const METRICS: &[(&str, Kind, &str)] = &[
    // HTTP (recorded by `api::observe` for every answer).
    ("ledger_http_requests_total", Kind::Counter, "HTTP requests answered, by method, route (the matched path template) and status."),
    ("ledger_http_request_duration_seconds", Kind::Histogram, "Time to answer an HTTP request, by method, route and status."),
    ("ledger_api_errors_total", Kind::Counter, "Error answers by envelope code: 40101 missing or unknown credentials or a bad signature, 40102 timestamp outside the window or nonce reused, 40903 idempotency key reused with another body, 50001 internal, 50301 unavailable, ..."),
    ("ledger_auth_replays_total", Kind::Counter, "Signed POSTs refused because their nonce was already used (40102)."),
    ("ledger_idempotent_replays_total", Kind::Counter, "POSTs answered with the stored first answer of their Idempotency-Key (no new event)."),
    ("ledger_connections_refused_total", Kind::Counter, "TCP connections closed at once because their peer address already held LEDGER_CONNECTIONS_PER_PEER_MAX."),
    ("ledger_console_signin_failures_total", Kind::Counter, "Staff console sign-ins refused (unknown key id or wrong secret)."),
    ("ledger_request_timeouts_total", Kind::Counter, "Requests answered 503 because they took longer than LEDGER_REQUEST_TIMEOUT_MS in all."),
    // Commands and the append writer.
    ("ledger_events_appended_total", Kind::Counter, "Events appended to the log by this process's commands."),
    ("ledger_append_conflicts_total", Kind::Counter, "Appends refused on a stream version conflict (the command is retried against fresh state)."),
    ("ledger_append_batch_size", Kind::Histogram, "Appends committed together in one group-commit transaction of the writer."),
    ("ledger_append_batch_seconds", Kind::Histogram, "Time to commit one group-commit batch of the writer (lock, plan, write, commit)."),
    ("ledger_append_batch_failures_total", Kind::Counter, "Group-commit batches that failed (every append in them answered an error)."),
    // Projections and the read cache.
    ("ledger_projected_events_total", Kind::Counter, "Events applied to the read tables by this process's projector."),
    ("ledger_projection_handoff_events_total", Kind::Counter, "Events the projector took straight from this process's writer instead of reading them back from the log."),
    ("ledger_projection_batch_seconds", Kind::Histogram, "Time to apply and commit one projector batch."),
    ("ledger_projection_delay_seconds", Kind::Histogram, "Age of the newest event of each projected batch when the batch committed (time from recording to read models)."),
    ("ledger_projection_errors_total", Kind::Counter, "Projector batches that failed and were retried."),
    ("ledger_projection_lag_events", Kind::Gauge, "Events in the log that this node's read tables do not include yet (head position minus projected position)."),
    ("ledger_projection_lag_seconds", Kind::Gauge, "Age of the oldest event this node's read tables do not include yet (0 when caught up)."),
    ("ledger_cache_hits_total", Kind::Counter, "Read cache lookups answered from the cache, by kind (detail or list)."),
    ("ledger_cache_misses_total", Kind::Counter, "Read cache lookups that went to the read tables, by kind (detail or list)."),
    // The NATS relay.
    ("ledger_relay_published_total", Kind::Counter, "Events published to NATS by the relay."),
    ("ledger_relay_errors_total", Kind::Counter, "Relay attempts that failed (NATS unreachable or not acknowledging); retried with backoff."),
    ("ledger_relay_backlog_events", Kind::Gauge, "Committed events the relay has not published to NATS yet (head position minus the relay checkpoint)."),
    ("ledger_bus_connected", Kind::Gauge, "1 when the NATS connection is up (always 1 with the in-process bus), 0 otherwise."),
    // Gateways, refunds and expiry.
    ("ledger_gateway_calls_total", Kind::Counter, "Payment gateway calls (each attempt), by call and outcome (ok, refused, timeout, unavailable)."),
    ("ledger_gateway_retries_total", Kind::Counter, "Gateway call attempts that failed and were retried or given up, by call."),
    ("ledger_refund_queue_depth", Kind::Gauge, "Refunds requested and not yet confirmed or rejected by the gateway (status processing)."),
    ("ledger_refund_queue_oldest_seconds", Kind::Gauge, "Age of the oldest refund still processing (0 when none)."),
    ("ledger_payments_expired_total", Kind::Counter, "Pending payments failed with reason expired after LEDGER_PAYMENT_TTL_SECS."),
    ("ledger_flagged_for_refund_total", Kind::Counter, "Gateway notifications that reported money the ledger did not accept as a payment (flagged for refund)."),
    ("ledger_reconcile_mismatches_total", Kind::Counter, "Problems found by settlement file reconciliations."),
    // Leadership of the background duties (`duties`).
    ("ledger_duty_held", Kind::Gauge, "1 while this node holds the lease of the duty (relay, projector, refunds, expiry), 0 otherwise; exactly one node should hold each."),
    ("ledger_duty_takeovers_total", Kind::Counter, "Times this node took the lease of a duty, by duty (a new fencing token each time)."),
    // The database.
    ("ledger_database_up", Kind::Gauge, "1 when the last periodic check reached PostgreSQL, 0 otherwise."),
    ("ledger_db_pool_connections", Kind::Gauge, "Connections of this process's PostgreSQL pool, by state (idle, used)."),
    ("ledger_db_pool_max", Kind::Gauge, "Most connections this process's PostgreSQL pool opens (LEDGER_DB_MAX_CONNECTIONS)."),
    // The periodic checks (`watch`) and the audit and finance checks.
    ("ledger_chain_verify_ok", Kind::Gauge, "1 when the last periodic verification of the hash chain from genesis passed, 0 when it found the log edited, cut or reordered."),
    ("ledger_chain_verify_last_success_timestamp_seconds", Kind::Gauge, "Unix time at which a periodic verification of the whole chain last passed."),
    ("ledger_chain_verified_events", Kind::Gauge, "Events checked by the last periodic chain verification."),
    ("ledger_chain_verify_duration_seconds", Kind::Gauge, "How long the last periodic chain verification took (raise LEDGER_WATCH_INTERVAL_SECS when it nears the interval)."),
    ("ledger_verify_failures_total", Kind::Counter, "Whole-log verifications (periodic or GET /audit/verify) that found the chain broken."),
    ("ledger_totals_matches", Kind::Gauge, "1 when the last periodic totals check found the log and the read tables agree for every currency, 0 otherwise."),
    ("ledger_totals_mismatch_total", Kind::Counter, "Totals checks (periodic or GET /ledger/totals) whose log and read-table figures differed, by currency."),
    ("ledger_paid_payments", Kind::Gauge, "Payments paid, all time, by currency (from the event log, at the last periodic totals check; includes payments refunded later)."),
    ("ledger_paid_amount", Kind::Gauge, "Money paid, all time, in major units of the currency, by currency (from the event log at the last periodic totals check). A float for display only: the exact figure is GET /ledger/totals."),
    ("ledger_refunded_amount", Kind::Gauge, "Money refunded, all time, in major units, by currency (from the event log at the last periodic totals check). A float for display only."),
    ("ledger_flagged_amount", Kind::Gauge, "Money gateways reported that was not accepted as a payment (held in suspense until refunded), all time, in major units, by currency. A float for display only."),
    ("ledger_net_amount", Kind::Gauge, "Paid plus flagged minus refunded, all time, in major units, by currency. A float for display only."),
    ("ledger_watch_errors_total", Kind::Counter, "Periodic checks that could not run, by check (chain, totals); see the error log."),
    ("ledger_build_info", Kind::Gauge, "Always 1; the version label says which build runs."),
];

/// The process-wide Prometheus recorder (installed once; tests start many apps in one
/// process and share it). Installing it also describes every metric of [`METRICS`], starts
/// the counters without labels at 0 (so that `increase()` sees their first event) and sets
/// `ledger_build_info`.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let latency = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ];
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("ledger_append_batch_size".into()),
                        &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0],
                    )
                })
                .expect("bucket lists are non-empty")
                .install_recorder()
                .expect("the Prometheus recorder is installed once per process");
            describe_metrics();
            handle
        })
        .clone()
}

/// Describes every metric to the current recorder, starts the counters that carry no
/// labels at 0, and sets `ledger_build_info`.
pub fn describe_metrics() {
    for &(name, kind, help) in METRICS {
        match kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram => metrics::describe_histogram!(name, help),
        }
    }
    for name in UNLABELLED_COUNTERS {
        metrics::counter!(*name).increment(0);
    }
    metrics::gauge!("ledger_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

/// The counters recorded without labels: they are exported at 0 from the start.
const UNLABELLED_COUNTERS: &[&str] = &[
    "ledger_auth_replays_total",
    "ledger_idempotent_replays_total",
    "ledger_connections_refused_total",
    "ledger_console_signin_failures_total",
    "ledger_request_timeouts_total",
    "ledger_events_appended_total",
    "ledger_append_conflicts_total",
    "ledger_append_batch_failures_total",
    "ledger_projected_events_total",
    "ledger_projection_errors_total",
    "ledger_projection_handoff_events_total",
    "ledger_relay_published_total",
    "ledger_relay_errors_total",
    "ledger_payments_expired_total",
    "ledger_flagged_for_refund_total",
    "ledger_reconcile_mismatches_total",
    "ledger_verify_failures_total",
];

/// Samples this process's PostgreSQL pool (at every scrape and every periodic check).
pub fn sample_pool(pool: &sqlx::PgPool) {
    let size = pool.size();
    let idle = u32::try_from(pool.num_idle()).unwrap_or(u32::MAX).min(size);
    metrics::gauge!("ledger_db_pool_connections", "state" => "idle").set(f64::from(idle));
    metrics::gauge!("ledger_db_pool_connections", "state" => "used").set(f64::from(size - idle));
    metrics::gauge!("ledger_db_pool_max").set(f64::from(pool.options().get_max_connections()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<LogSettings, String> {
        LogSettings::parse(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn logs_are_json_on_stdout_without_files_by_default() {
        assert_eq!(
            settings(&[]),
            Ok(LogSettings {
                format: LogFormat::Json,
                dir: None,
                span_close: false
            })
        );
    }

    #[test]
    fn log_settings_are_read_and_a_bad_one_is_named() {
        let s = settings(&[
            ("LEDGER_LOG_FORMAT", "text"),
            ("LEDGER_LOG_DIR", "/var/log/ledger"),
            ("LEDGER_LOG_SPANS", "close"),
        ])
        .expect("valid");
        assert_eq!(s.format, LogFormat::Text);
        assert_eq!(
            s.dir.as_deref(),
            Some(std::path::Path::new("/var/log/ledger"))
        );
        assert!(s.span_close);
        let e = settings(&[("LEDGER_LOG_FORMAT", "xml")]).expect_err("refused");
        assert!(e.starts_with("LEDGER_LOG_FORMAT:"), "{e}");
        let e = settings(&[("LEDGER_LOG_SPANS", "all")]).expect_err("refused");
        assert!(e.starts_with("LEDGER_LOG_SPANS:"), "{e}");
    }

    #[test]
    fn every_metric_is_named_by_the_conventions() {
        let mut seen = std::collections::HashSet::new();
        for &(name, kind, help) in METRICS {
            assert!(seen.insert(name), "{name} is listed twice");
            assert!(name.starts_with("ledger_"), "{name}");
            assert!(!help.is_empty(), "{name} has no help");
            assert_eq!(
                kind == Kind::Counter,
                name.ends_with("_total"),
                "{name}: counters, and only counters, end in _total"
            );
        }
        for name in UNLABELLED_COUNTERS {
            assert!(
                METRICS.iter().any(|m| m.0 == *name && m.1 == Kind::Counter),
                "{name} is not a described counter"
            );
        }
    }
}
