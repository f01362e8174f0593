//! The periodic checks, on nodes that run projections (role `all` or `projector`): every
//! `LEDGER_WATCH_INTERVAL_SECS` one pass verifies the hash chain from genesis, compares the
//! ledger totals of the log and of the read tables for all time, and samples what Prometheus
//! cannot ask for itself (database reachable, bus connected, pool use, relay backlog,
//! projection lag). Results become the gauges described in `telemetry`; a failure is logged
//! at error level, and alerts (`deploy/prometheus/alerts.yml`) fire on the gauges.
//!
//! It only reads, through `ledger_store` and `ledger_projections` (no SQL here). A
//! verification takes a turn of `AppState::verify_turns`, the same turns `/audit/verify` and
//! `/audit/digest` take, so the process never scans the log more times at once than
//! `LEDGER_VERIFY_CONCURRENT_MAX` allows (one by default); passes run one after another.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use tokio_util::sync::CancellationToken;

use crate::api::AppState;
use crate::projections::totals::{self, Side};
use crate::store::verify::{self, VerifyReport};
use crate::store::{self, StoreError};

/// The periodic checks of one service.
#[derive(Clone)]
pub struct Watch {
    state: Arc<AppState>,
}

/// What one pass found. `Err` holds why a check could not run (logged; the gauges it would
/// set keep their last value, so an outage is not mistaken for tampering).
#[derive(Debug)]
pub struct Pass {
    pub samples: Samples,
    pub chain: Result<ChainCheck, String>,
    pub totals: Result<TotalsCheck, String>,
}

/// Cheap samples of the service's surroundings.
#[derive(Debug, Clone, PartialEq)]
pub struct Samples {
    pub database_up: bool,
    /// `true` with the in-process bus.
    pub bus_connected: bool,
    /// Head position minus the relay checkpoint (`None` without a relay, or unreadable).
    pub relay_backlog_events: Option<i64>,
    /// `None` when the database could not be read.
    pub projection_lag: Option<Lag>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Lag {
    pub events: i64,
    /// Age of the oldest event not projected yet (0 when caught up).
    pub seconds: f64,
}

#[derive(Debug, Clone)]
pub struct ChainCheck {
    pub report: VerifyReport,
    pub took: Duration,
    pub finished_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TotalsCheck {
    /// The position both sides were computed up to (what the read tables include).
    pub position: i64,
    /// Per currency: (from the log, from the read tables).
    pub currencies: BTreeMap<String, (Side, Side)>,
}

impl TotalsCheck {
    pub fn matches(&self) -> bool {
        self.currencies.values().all(|(log, read)| log == read)
    }
}

impl Watch {
    pub fn new(state: Arc<AppState>) -> Watch {
        Watch { state }
    }

    /// Runs until cancelled: a pass at once, then one every `LEDGER_WATCH_INTERVAL_SECS`
    /// after the previous one ended (so passes never overlap). Cancellation abandons a pass
    /// in progress at its next await: it only reads, so nothing is left half done.
    pub async fn run(self, cancel: CancellationToken) {
        let interval = self.state.settings.limits.watch_interval();
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                _ = self.pass() => {}
            }
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(interval) => {}
            }
        }
        tracing::info!("watch stopped");
    }

    /// One pass: checks, exports the results as metrics and logs what failed.
    pub async fn pass(&self) -> Pass {
        let pass = self.check().await;
        crate::telemetry::sample_pool(&self.state.pool);
        pass.export();
        pass.log();
        pass
    }

    /// One pass's checks, without exporting or logging them.
    pub async fn check(&self) -> Pass {
        let samples = self.sample().await;
        let (chain, totals) = if samples.database_up {
            (self.verify_chain().await, self.check_totals().await)
        } else {
            let down = "the database is unreachable".to_owned();
            (Err(down.clone()), Err(down))
        };
        Pass {
            samples,
            chain,
            totals,
        }
    }

    async fn sample(&self) -> Samples {
        let pool = &self.state.pool;
        let bus_connected = self.state.bus.as_ref().is_none_or(|b| b.is_connected());
        // Read the projected position before the head, so the lag is never understated.
        let applied = self.state.position();
        let head = match store::head_position(pool).await {
            Ok(h) => h,
            Err(e) => {
                tracing::debug!(error = %e, "watch: head position unreadable");
                return Samples {
                    database_up: false,
                    bus_connected,
                    relay_backlog_events: None,
                    projection_lag: None,
                };
            }
        };
        let relay_backlog_events = match &self.state.bus {
            Some(_) => store::checkpoint(pool, crate::bus::RELAY_CHECKPOINT)
                .await
                .ok()
                .map(|relayed| (head - relayed).max(0)),
            None => None,
        };
        let events = (head - applied).max(0);
        let projection_lag = if events == 0 {
            Some(Lag {
                events,
                seconds: 0.0,
            })
        } else {
            store::read_after(pool, applied, 1).await.ok().map(|first| {
                let seconds = first.first().map_or(0.0, |e| {
                    let age = self.state.clock.now() - e.recorded_at;
                    (age.num_milliseconds().max(0) as f64) / 1000.0
                });
                Lag { events, seconds }
            })
        };
        Samples {
            database_up: true,
            bus_connected,
            relay_backlog_events,
            projection_lag,
        }
    }

    async fn verify_chain(&self) -> Result<ChainCheck, String> {
        let _turn = self
            .state
            .verify_turns
            .acquire()
            .await
            .map_err(|_| "verification turns are closed".to_owned())?;
        let started = Instant::now();
        let report = verify::verify_log(&self.state.pool, None, |_| {})
            .await
            .map_err(|e: StoreError| e.to_string())?;
        Ok(ChainCheck {
            report,
            took: started.elapsed(),
            finished_at: self.state.clock.now(),
        })
    }

    async fn check_totals(&self) -> Result<TotalsCheck, String> {
        // The read tables include at least this position; both sides stop there, so events
        // committed meanwhile cannot make them differ.
        let position = self.state.position();
        let (from_log, mut from_read) =
            totals::compute(&self.state.pool, None, None, None, position)
                .await
                .map_err(|e| e.to_string())?;
        let mut currencies = BTreeMap::new();
        for (currency, log) in from_log {
            let read = from_read.remove(&currency).unwrap_or_default();
            currencies.insert(currency, (log, read));
        }
        for (currency, read) in from_read {
            currencies.insert(currency, (Side::default(), read));
        }
        Ok(TotalsCheck {
            position,
            currencies,
        })
    }
}

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

fn amount(d: Decimal) -> f64 {
    d.to_f64().unwrap_or(f64::NAN)
}

impl Pass {
    /// Sets the metrics of this pass (to whatever recorder is current).
    pub fn export(&self) {
        let s = &self.samples;
        for (check, failed) in [
            ("chain", self.chain.is_err()),
            ("totals", self.totals.is_err()),
        ] {
            // Adding 0 exports the series before the first failure.
            metrics::counter!("ledger_watch_errors_total", "check" => check)
                .increment(u64::from(failed));
        }
        metrics::gauge!("ledger_database_up").set(flag(s.database_up));
        metrics::gauge!("ledger_bus_connected").set(flag(s.bus_connected));
        if let Some(backlog) = s.relay_backlog_events {
            metrics::gauge!("ledger_relay_backlog_events").set(backlog as f64);
        }
        if let Some(lag) = &s.projection_lag {
            metrics::gauge!("ledger_projection_lag_events").set(lag.events as f64);
            metrics::gauge!("ledger_projection_lag_seconds").set(lag.seconds);
        }
        if let Ok(c) = &self.chain {
            let events = c.report.events_checked as f64;
            metrics::gauge!("ledger_chain_verify_ok").set(flag(c.report.ok));
            metrics::gauge!("ledger_chain_verified_events").set(events);
            metrics::gauge!("ledger_chain_verify_duration_seconds").set(c.took.as_secs_f64());
            if c.report.ok {
                metrics::gauge!("ledger_chain_verify_last_success_timestamp_seconds")
                    .set(c.finished_at.timestamp() as f64);
            } else {
                metrics::counter!("ledger_verify_failures_total").increment(1);
            }
        }
        if let Ok(t) = &self.totals {
            metrics::gauge!("ledger_totals_matches").set(flag(t.matches()));
            for (currency, (log, read)) in &t.currencies {
                let c = || currency.clone();
                // Adding 0 when they agree exports the series from the start, so that
                // `increase()` sees the first mismatch.
                metrics::counter!("ledger_totals_mismatch_total", "currency" => c())
                    .increment(u64::from(log != read));
                metrics::gauge!("ledger_paid_payments", "currency" => c())
                    .set(log.paid_count as f64);
                metrics::gauge!("ledger_paid_amount", "currency" => c())
                    .set(amount(log.paid_amount));
                metrics::gauge!("ledger_refunded_amount", "currency" => c())
                    .set(amount(log.refunded_amount));
                metrics::gauge!("ledger_flagged_amount", "currency" => c())
                    .set(amount(log.flagged_amount));
                let net = log.paid_amount + log.flagged_amount - log.refunded_amount;
                metrics::gauge!("ledger_net_amount", "currency" => c()).set(amount(net));
            }
        }
    }

    /// Logs what failed, at error level (ids, positions and amounts only).
    pub fn log(&self) {
        let s = &self.samples;
        if !s.database_up {
            tracing::error!("periodic check: the database is unreachable");
        }
        if !s.bus_connected {
            tracing::error!("periodic check: the NATS connection is down");
        }
        match &self.chain {
            Ok(c) if !c.report.ok => tracing::error!(
                first_broken_position = ?c.report.first_broken_position,
                problem = ?c.report.problem,
                events_checked = c.report.events_checked,
                "periodic check: the event log fails verification"
            ),
            Ok(c) => tracing::debug!(
                events_checked = c.report.events_checked,
                took_ms = c.took.as_millis() as u64,
                "periodic check: the event log verifies"
            ),
            Err(e) if s.database_up => {
                tracing::error!(error = %e, "periodic check: could not verify the event log")
            }
            Err(_) => {}
        }
        match &self.totals {
            Ok(t) => {
                for (currency, (log, read)) in &t.currencies {
                    if log != read {
                        tracing::error!(
                            currency = %currency,
                            position = t.position,
                            ?log,
                            ?read,
                            "periodic check: ledger totals differ between the log and the read tables"
                        );
                    }
                }
            }
            Err(e) if s.database_up => {
                tracing::error!(error = %e, "periodic check: could not compute the ledger totals")
            }
            Err(_) => {}
        }
    }
}
