//! Start-up and shutdown: connect and migrate, start the writer, projector, relay and refund
//! process as tracked tasks under one cancellation token, and serve HTTP on a listener the
//! caller bound (so `main` passes the configured address and tests pass port 0).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{self, AppState};
use crate::bus::{self, NatsBus};
use crate::clock::Clock;
use crate::config::Settings;
use crate::gateway::{sandbox, Gateways, RetryPolicy};
use crate::projections::cache::ReadCache;
use crate::projections::runner::{self, Projector};
use crate::projections::ProjectionContext;
use crate::service::CommandService;
use crate::store::keyring::Keyring;
use crate::store::{self, Writer, WriterConfig};

/// Which parts of the service this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ServeRole {
    /// HTTP API (reads and writes); projections are followed from the database.
    Api,
    /// Projector, NATS relay and refund process; serves only the operational routes.
    Projector,
    /// Everything in one process.
    All,
}

/// How long shutdown waits for background tasks (SPEC §11: exit within 30 s).
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(25);
/// How often expired nonces and idempotency keys are purged.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(600);

/// A started service.
pub struct Ledger {
    pub state: Arc<AppState>,
    pub projector: Projector,
    pub cancel: CancellationToken,
    pub tracker: TaskTracker,
    pub role: ServeRole,
}

/// Connects, migrates and starts the background tasks of `role`.
pub async fn build(
    settings: Settings,
    role: ServeRole,
    sandbox_faults: sandbox::Faults,
) -> anyhow::Result<Ledger> {
    let settings = Arc::new(settings);
    let pool = store::connect(&settings.database_url, settings.db_max_connections, true).await?;
    store::migrate(&pool).await?;
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();

    let head = store::head_position(&pool).await?;
    let limits = &settings.limits;
    let writer = Writer::spawn(
        pool.clone(),
        WriterConfig {
            batch_max: limits.writer_batch_max,
            queue_max: limits.writer_queue_max,
            lock_timeout: Duration::from_millis(limits.append_lock_timeout_ms),
            statement_timeout: Duration::from_millis(limits.append_statement_timeout_ms),
        },
        head,
        cancel.clone(),
        &tracker,
    );
    let commands = CommandService::new(
        pool.clone(),
        writer.clone(),
        settings.limits.command_attempts_max,
        settings.cache_capacity,
    );
    let cache = ReadCache::new(settings.cache_capacity, settings.cache_ttl);
    let ctx = ProjectionContext {
        master_key: settings.master_key.clone(),
    };
    let projector = Projector::new(
        pool.clone(),
        ctx,
        cache.clone(),
        settings.limits.projection_batch_max,
    );
    let applied = projector.applied();

    let bus = match &settings.nats {
        Some(n) => {
            let bus = NatsBus::connect(n)
                .await
                .map_err(|e| anyhow::anyhow!("NATS_URL: {e}"))?;
            if let Err(e) = bus.ensure_stream().await {
                tracing::warn!(error = %e, "NATS stream not ready yet; the relay will retry");
            }
            Some(bus)
        }
        None => None,
    };
    let wake = Arc::new(Notify::new());
    let sandbox = Arc::new(sandbox::Sandbox::bounded(
        &settings.public_url,
        sandbox_faults,
        limits.sandbox_entries_max,
    ));
    let retry = RetryPolicy {
        call_timeout: limits.gateway_call_timeout(),
        ..RetryPolicy::default()
    };
    let gateways = Arc::new(Gateways::sandbox(sandbox, retry));

    let runs_projector = matches!(role, ServeRole::Projector | ServeRole::All);
    if runs_projector {
        let local_head = (role == ServeRole::All).then(|| writer.head());
        tracker.spawn(
            projector
                .clone()
                .run(local_head, wake.clone(), cancel.clone()),
        );
        if let Some(bus) = &bus {
            tracker.spawn(bus::run_relay(
                pool.clone(),
                bus.clone(),
                settings.limits.relay_batch_max,
                Some(writer.head()),
                cancel.clone(),
            ));
        }
        let refunds = crate::gateway::refunds::RefundDriver {
            pool: pool.clone(),
            commands: commands.clone(),
            gateways: gateways.clone(),
            concurrency_max: limits.refund_concurrency_max,
            backoff_max: Duration::from_secs(limits.refund_backoff_max_secs),
        };
        tracker.spawn(refunds.run(cancel.clone()));
        if let Some(ttl) = settings.payment_ttl {
            let expiry = crate::gateway::expiry::ExpiryDriver {
                pool: pool.clone(),
                commands: commands.clone(),
                gateways: gateways.clone(),
                ttl,
                backoff_max: Duration::from_secs(limits.refund_backoff_max_secs),
            };
            tracker.spawn(expiry.run(cancel.clone()));
        }
    } else {
        tracker.spawn(runner::follow_remote(
            pool.clone(),
            cache.clone(),
            projector.applied_sender(),
            wake.clone(),
            cancel.clone(),
        ));
    }
    if let Some(bus) = &bus {
        if role != ServeRole::All {
            tracker.spawn(bus::wake_on_messages(
                bus.clone(),
                wake.clone(),
                cancel.clone(),
            ));
        }
    }
    {
        let pool = pool.clone();
        let cancel = cancel.clone();
        tracker.spawn(async move {
            loop {
                match store::requests::purge_expired(&pool).await {
                    Ok(n) if n > 0 => {
                        tracing::info!(rows = n, "purged expired nonces and idempotency keys")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "purge failed"),
                }
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(PURGE_INTERVAL) => {}
                }
            }
        });
    }

    let state = Arc::new(AppState {
        keyring: Keyring::new(pool.clone(), settings.master_key.clone()),
        key_turns: crate::api::pipeline::KeyTurns::default(),
        id_secret: settings.master_key.derive("ids"),
        settings,
        pool,
        commands,
        cache,
        applied,
        bus,
        clock: Arc::new(Clock::default()),
        metrics: crate::telemetry::metrics_handle(),
        gateways,
    });
    Ok(Ledger {
        state,
        projector,
        cancel,
        tracker,
        role,
    })
}

/// Serves until `shutdown` resolves, then drains: stops accepting, finishes in-flight
/// requests, lets the writer, projector and relay finish their batch, and returns.
pub async fn serve(
    ledger: Ledger,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let router = match ledger.role {
        ServeRole::Projector => api::ops_router(ledger.state.clone()),
        _ => api::router(ledger.state.clone()),
    };
    let cancel = ledger.cancel.clone();
    let shutdown = async move {
        tokio::select! {
            _ = shutdown => {}
            _ = cancel.cancelled() => {}
        }
    };
    let service = router.into_make_service();
    let served = match ledger.state.settings.tls.clone() {
        Some(tls) => {
            let listener = crate::tls::TlsListener::new(listener, tls)?;
            axum::serve(listener, service)
                .with_graceful_shutdown(shutdown)
                .await
        }
        None => {
            axum::serve(listener, service)
                .with_graceful_shutdown(shutdown)
                .await
        }
    };
    stop(&ledger).await;
    served.map_err(|e| anyhow::anyhow!("server error: {e}"))
}

/// Cancels the background tasks and waits for them (bounded).
pub async fn stop(ledger: &Ledger) {
    ledger.cancel.cancel();
    ledger.tracker.close();
    if tokio::time::timeout(SHUTDOWN_DEADLINE, ledger.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("background tasks did not stop in time");
    }
    ledger.state.pool.close().await;
}
