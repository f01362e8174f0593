//! Start-up and shutdown: connect and migrate, start the writer, projector, relay and refund
//! process as tracked tasks under one cancellation token, and serve HTTP on a listener the
//! caller bound (so `main` passes the configured address and tests pass port 0).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::api::{self, AppState};
use crate::bus::{self, NatsBus};
use crate::clock::Clock;
use crate::config::Settings;
use crate::domain::PaymentMethod;
use crate::duties::{Duty, HeldDuties, Leadership};
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
    /// HTTP API (reads and writes); stands by for the background duties, which it takes
    /// only when no `all` or `projector` node holds them.
    Api,
    /// Prefers the background duties (projector, relay, refunds, expiry) and the periodic
    /// checks; serves only the operational routes.
    Projector,
    /// Everything in one process.
    All,
}

impl ServeRole {
    pub fn name(self) -> &'static str {
        match self {
            ServeRole::Api => "api",
            ServeRole::Projector => "projector",
            ServeRole::All => "all",
        }
    }
}

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
    // This process's name in the duty leases: unique, so a restarted node is a new holder.
    let node_id = format!("node-{}", Uuid::now_v7().simple());

    let head = store::head_position(&pool).await?;
    let limits = &settings.limits;
    let writer = Writer::spawn(
        pool.clone(),
        WriterConfig {
            batch_max: limits.writer_batch_max,
            queue_max: limits.writer_queue_max,
            lock_timeout: Duration::from_millis(limits.append_lock_timeout_ms),
            statement_timeout: Duration::from_millis(limits.append_statement_timeout_ms),
            handoff_batches_max: limits.handoff_batches_max,
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
    )
    .idle_poll(Duration::from_millis(
        settings.limits.projector_idle_poll_ms,
    ));
    let applied = projector.applied();

    let bus = match &settings.nats {
        Some(n) => {
            let bus = NatsBus::connect(n)
                .await
                .map_err(|e| anyhow::anyhow!("NATS_URL: {e}"))?;
            match bus.ensure_stream().await {
                Ok(()) => {}
                // A stream that can never take our events stops start-up with its reason.
                Err(e @ crate::bus::BusError::Misconfigured(_)) => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(error = %e, "NATS stream not ready yet; the relay will retry")
                }
            }
            Some(bus)
        }
        None => None,
    };
    let wake = Arc::new(Notify::new());
    let mut sandbox = sandbox::Sandbox::bounded(
        &settings.public_url,
        sandbox_faults,
        limits.sandbox_entries_max,
    );
    if let Some(journal) = &settings.sandbox_journal {
        sandbox = sandbox.with_journal(journal.clone());
    }
    let sandbox = Arc::new(sandbox);
    let retry = RetryPolicy {
        call_timeout: limits.gateway_call_timeout(),
        ..RetryPolicy::default()
    };
    let gateways = Arc::new(real_gateways(Gateways::sandbox(sandbox, retry), &settings)?);

    // Every node hears every node's appends and projections through PostgreSQL.
    let (projected_tx, projected_rx) = watch::channel(0i64);
    tracker.spawn(bus::listen(
        pool.clone(),
        wake.clone(),
        projected_tx,
        cancel.clone(),
    ));
    // Every node campaigns for every duty; `all` and `projector` nodes are preferred, and
    // `api` nodes stand by: they take a free duty only a grace later, so they lead only when
    // no preferred node is alive (README, "Several nodes").
    let preferred = matches!(role, ServeRole::Projector | ServeRole::All);
    let held = Arc::new(HeldDuties::default());
    {
        let leadership = Leadership {
            pool: pool.clone(),
            node: node_id.clone(),
            ttl: limits.lease_ttl(),
            standby_grace: if preferred {
                Duration::ZERO
            } else {
                limits.lease_ttl() / 6
            },
            held: held.clone(),
        };
        let local_head = Some(writer.head());
        {
            let (projector, wake) = (projector.clone(), wake.clone());
            let writer_for_projector = writer.clone();
            let follow_poll = Duration::from_millis(limits.follow_poll_ms);
            let (pool, cache, applied, projected) = (
                pool.clone(),
                cache.clone(),
                projector.applied_sender(),
                projected_rx.clone(),
            );
            leadership.spawn(
                &tracker,
                Duty::Projector,
                cancel.clone(),
                move |lease, stop| {
                    let handoff = Some(writer_for_projector.committed());
                    projector.fenced(lease.fence()).run(
                        local_head.clone(),
                        handoff,
                        wake.clone(),
                        stop,
                    )
                },
                move |stop| {
                    runner::follow_remote(
                        pool.clone(),
                        cache.clone(),
                        applied.clone(),
                        projected.clone(),
                        follow_poll,
                        stop,
                    )
                },
            );
        }
        if let Some(bus) = &bus {
            let (pool, bus, head, wake) = (pool.clone(), bus.clone(), writer.head(), wake.clone());
            let batch_max = limits.relay_batch_max;
            leadership.spawn(
                &tracker,
                Duty::Relay,
                cancel.clone(),
                move |lease, stop| {
                    bus::run_relay(
                        pool.clone(),
                        bus.clone(),
                        batch_max,
                        Some(head.clone()),
                        wake.clone(),
                        Some(lease),
                        stop,
                    )
                },
                |_stop| async {},
            );
        }
        let refunds = crate::gateway::refunds::RefundDriver {
            pool: pool.clone(),
            commands: commands.clone(),
            gateways: gateways.clone(),
            concurrency_max: limits.refund_concurrency_max,
            batch_max: limits.driver_batch_max,
            poll: limits.driver_poll(),
            backoff_base: limits.refund_backoff_base(),
            backoff_max: limits.refund_backoff_max(),
            applied: applied.clone(),
            settle_wait: limits.read_your_writes_wait(),
        };
        leadership.spawn(
            &tracker,
            Duty::Refunds,
            cancel.clone(),
            move |lease, stop| refunds.clone().run(Some(lease), stop),
            |_stop| async {},
        );
        if let Some(ttl) = settings.payment_ttl {
            let expiry = crate::gateway::expiry::ExpiryDriver {
                pool: pool.clone(),
                commands: commands.clone(),
                gateways: gateways.clone(),
                ttl,
                batch_max: limits.driver_batch_max,
                poll: limits.driver_poll(),
                backoff_base: limits.refund_backoff_base(),
                backoff_max: limits.refund_backoff_max(),
                applied: applied.clone(),
                settle_wait: limits.read_your_writes_wait(),
            };
            leadership.spawn(
                &tracker,
                Duty::Expiry,
                cancel.clone(),
                move |lease, stop| expiry.clone().run(Some(lease), stop),
                |_stop| async {},
            );
        }
    }
    {
        let pool = pool.clone();
        let cancel = cancel.clone();
        let purge_every = limits.purge_interval();
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
                    _ = tokio::time::sleep(purge_every) => {}
                }
            }
        });
    }

    let state = Arc::new(AppState {
        keyring: Keyring::new(pool.clone(), settings.master_key.clone()),
        key_turns: crate::api::pipeline::KeyTurns::default(),
        id_secret: settings.master_key.derive("ids"),
        verify_turns: tokio::sync::Semaphore::new(settings.limits.verify_concurrent_max.max(1)),
        settings,
        pool,
        commands,
        cache,
        applied,
        bus,
        clock: Arc::new(Clock::default()),
        metrics: crate::telemetry::metrics_handle(),
        gateways,
        node: node_id,
        role: role.name(),
        duties: held,
    });
    if preferred {
        tracker.spawn(crate::watch::Watch::new(state.clone()).run(cancel.clone()));
    }
    Ok(Ledger {
        state,
        projector,
        cancel,
        tracker,
        role,
    })
}

/// Serves the methods whose real gateway is configured (LEDGER_ALIPAY_*, LEDGER_WECHAT_*) with
/// it instead of the sandbox.
fn real_gateways(gateways: Gateways, settings: &Settings) -> anyhow::Result<Gateways> {
    let mut gateways = gateways;
    if let Some(alipay) = &settings.alipay {
        let driver =
            crate::gateway::alipay::Alipay::new(alipay, &settings.public_url, &settings.limits)
                .map_err(|e| anyhow::anyhow!("LEDGER_ALIPAY_GATEWAY_URL: HTTP client: {e}"))?;
        tracing::info!(app_id = %alipay.app_id, gateway_url = %alipay.gateway_url, "alipay is a real gateway");
        gateways = gateways.with(PaymentMethod::Alipay, Arc::new(driver));
    }
    if let Some(wechat) = &settings.wechat {
        let driver =
            crate::gateway::wechat::Wechat::new(wechat, &settings.public_url, &settings.limits)
                .map_err(|e| anyhow::anyhow!("LEDGER_WECHAT_BASE_URL: HTTP client: {e}"))?;
        tracing::info!(mchid = %wechat.mchid, base_url = %wechat.base_url, "wechat is a real gateway");
        gateways = gateways.with(PaymentMethod::Wechat, Arc::new(driver));
    }
    Ok(gateways)
}

/// Serves until `shutdown` resolves, then drains: stops accepting, finishes in-flight
/// requests, lets the writer, projector and relay finish their batch, and returns.
pub async fn serve(
    ledger: Ledger,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_until(ledger, listener, Box::pin(shutdown)).await
}

/// [`serve`] with the shutdown future boxed: not generic, so the server loop is compiled
/// once, here, with this crate's optimisation, not again in each caller (under
/// `cargo test --release` the integration suite is compiled unoptimised).
async fn serve_until(
    ledger: Ledger,
    listener: TcpListener,
    shutdown: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
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
    let limits = &ledger.state.settings.limits;
    let bounds = crate::server::ServeLimits {
        header_read_timeout: Duration::from_millis(limits.header_read_timeout_ms),
        connections_per_peer_max: limits.connections_per_peer_max,
        handshake_timeout: Duration::from_millis(limits.tls_handshake_timeout_ms),
        drain_deadline: limits.shutdown_deadline(),
    };
    let served = crate::server::serve(
        listener,
        ledger.state.settings.tls.clone(),
        router,
        bounds,
        shutdown,
    )
    .await;
    stop(&ledger).await;
    served.map_err(|e| anyhow::anyhow!("server error: {e}"))
}

/// Cancels the background tasks and waits for them (bounded).
pub async fn stop(ledger: &Ledger) {
    ledger.cancel.cancel();
    ledger.tracker.close();
    if tokio::time::timeout(
        ledger.state.settings.limits.shutdown_deadline(),
        ledger.tracker.wait(),
    )
    .await
    .is_err()
    {
        tracing::warn!("background tasks did not stop in time");
    }
    ledger.state.pool.close().await;
}
