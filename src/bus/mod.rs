//! The bus: publishes the committed log to NATS JetStream, and wakes followers.
//!
//! The relay reads the log in position order after the last event the stream holds, publishes
//! each event to `{prefix}.payment.{event_type}` with `Nats-Msg-Id` = event id (JetStream
//! drops the duplicates a retry produces) and `Nats-Expected-Last-Msg-Id` = the previous
//! event's id, so the server refuses any event whose predecessor it does not hold: the stream
//! is always a gap-free prefix of the log, in order, even when an ack fails mid-batch. Where
//! to resume is read from the stream itself (its last message), so a stream that was deleted
//! and recreated empty is refilled from the log; the `relay:nats` checkpoint only reports
//! progress. At-least-once, outbox style. Writes never wait for NATS: while it is down the API
//! keeps appending and the relay's backlog grows; when it returns the backlog drains.
//!
//! Without NATS (`NATS_URL=none`) the process runs single-node with the in-process bus: the
//! writer's head position (a watch channel) wakes the projector directly.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::NatsSettings;
use crate::store::{self, StoreError, StoredEvent};

/// Checkpoint name of the relay.
pub const RELAY_CHECKPOINT: &str = "relay:nats";
/// The shortest de-duplication window the stream may have (SPEC §11: at least 2 minutes);
/// the service creates its stream with LEDGER_NATS_DUPLICATE_WINDOW_SECS.
pub const DUPLICATE_WINDOW_MIN: Duration = Duration::from_secs(120);

#[derive(Clone)]
pub struct NatsBus {
    pub client: async_nats::Client,
    pub jetstream: jetstream::Context,
    pub settings: NatsSettings,
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("nats: {0}")]
    Nats(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stream exists with a configuration the relay cannot use: retrying cannot help.
    #[error("{0}")]
    Misconfigured(String),
}

fn nats_err(e: impl std::fmt::Display) -> BusError {
    BusError::Nats(e.to_string())
}

impl NatsBus {
    /// Connects without waiting for the server: if NATS is down, the client keeps trying in
    /// the background and the service starts anyway.
    pub async fn connect(settings: &NatsSettings) -> Result<NatsBus, BusError> {
        let client = async_nats::ConnectOptions::new()
            .name("ledger")
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(2))
            // Every server of the cluster listed (comma-separated): the client starts on any
            // that answers and moves to another when one goes away.
            .connect(
                settings
                    .url
                    .split(',')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .collect::<Vec<_>>(),
            )
            .await
            .map_err(nats_err)?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(settings.ack_timeout);
        Ok(NatsBus {
            client,
            jetstream: js,
            settings: settings.clone(),
        })
    }

    pub fn subject(&self, event_type: &str) -> String {
        format!("{}.payment.{}", self.settings.prefix, event_type)
    }

    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    fn subjects(&self) -> String {
        format!("{}.payment.>", self.settings.prefix)
    }

    /// Creates the stream if it is missing. An existing stream of that name that does not
    /// take this deployment's subjects is `Misconfigured`: the relay could never publish to
    /// it, so start-up stops with a line that says so.
    pub async fn ensure_stream(&self) -> Result<(), BusError> {
        let mut stream = self
            .jetstream
            .get_or_create_stream(stream::Config {
                name: self.settings.stream.clone(),
                subjects: vec![self.subjects()],
                duplicate_window: self.settings.duplicate_window,
                storage: stream::StorageType::File,
                num_replicas: self.settings.replicas as usize,
                ..Default::default()
            })
            .await
            .map_err(nats_err)?;
        let info = stream.info().await.map_err(nats_err)?;
        if !info.config.subjects.contains(&self.subjects()) {
            return Err(BusError::Misconfigured(format!(
                "LEDGER_NATS_STREAM: the JetStream stream {:?} exists with subjects {:?}, not {:?}; \
                 use another stream name (LEDGER_NATS_STREAM) or prefix (LEDGER_NATS_PREFIX), \
                 or fix the stream",
                self.settings.stream,
                info.config.subjects,
                self.subjects()
            )));
        }
        Ok(())
    }

    /// The log position and event id of the last event the stream holds (position 0 when it
    /// is empty).
    pub async fn stream_head(&self) -> Result<(i64, Option<String>), BusError> {
        let mut stream = self
            .jetstream
            .get_stream(&self.settings.stream)
            .await
            .map_err(nats_err)?;
        let last = stream.info().await.map_err(nats_err)?.state.last_sequence;
        if last == 0 {
            return Ok((0, None));
        }
        let message = stream.get_raw_message(last).await.map_err(nats_err)?;
        let envelope: store::EventEnvelope =
            serde_json::from_slice(&message.payload).map_err(|e| {
                BusError::Misconfigured(format!(
                "LEDGER_NATS_STREAM: the last message of stream {:?} is not a ledger event ({e})",
                self.settings.stream
            ))
            })?;
        Ok((envelope.position, Some(envelope.event_id.to_string())))
    }

    /// Publishes events in order, each expecting its predecessor (`previous`: the id of the
    /// event before the first) to be the stream's last message, and waits for every ack.
    /// Returns the position up to which every event was acknowledged.
    pub async fn publish(
        &self,
        events: &[StoredEvent],
        previous: Option<String>,
    ) -> Result<i64, BusError> {
        let mut acks = Vec::with_capacity(events.len());
        let mut previous = previous;
        for e in events {
            let id = e.event_id.to_string();
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
            if let Some(p) = &previous {
                headers.insert(
                    async_nats::header::NATS_EXPECTED_LAST_MESSAGE_ID,
                    p.as_str(),
                );
            }
            previous = Some(id);
            let payload = serde_json::to_vec(&e.envelope()).expect("envelopes serialize");
            let ack = self
                .jetstream
                .publish_with_headers(self.subject(&e.event_type), headers, Bytes::from(payload))
                .await
                .map_err(nats_err)?;
            acks.push((e.position, ack));
        }
        let mut acked = 0;
        for (position, ack) in acks {
            ack.await.map_err(nats_err)?;
            acked = position;
        }
        Ok(acked)
    }
}

/// The relay: runs until cancelled, then stops after its current batch. Returns early only
/// for a misconfigured stream, which no retry can fix.
pub async fn run_relay(
    pool: PgPool,
    bus: NatsBus,
    batch_max: i64,
    head: Option<tokio::sync::watch::Receiver<i64>>,
    wake: Arc<Notify>,
    lease: Option<crate::duties::Lease>,
    cancel: CancellationToken,
) {
    let mut head = head;
    let mut backoff = Duration::from_millis(100);
    // Where the stream ends, once read from it; forgotten after any error, so the next round
    // asks the stream again instead of trusting what it thought it published.
    let mut published: Option<(i64, Option<String>)> = None;
    loop {
        if cancel.is_cancelled() {
            break;
        }
        let step: Result<usize, BusError> = async {
            // A relay that cannot prove it still leads publishes nothing more (another node's
            // relay may have taken over; Nats-Expected-Last-Msg-Id keeps even an overlap in order).
            if lease.as_ref().is_some_and(|l| !l.valid()) {
                return Ok(0);
            }
            let (from, previous) = match published.clone() {
                Some(p) => p,
                None => {
                    bus.ensure_stream().await?;
                    bus.stream_head().await?
                }
            };
            let events = store::read_after(&pool, from, batch_max).await?;
            let log_head = store::head_position(&pool).await?;
            if events.is_empty() {
                metrics::gauge!("ledger_relay_backlog_events").set((log_head - from).max(0) as f64);
                published = Some((from, previous));
                return Ok(0);
            }
            let acked = bus.publish(&events, previous).await?;
            let last_id = events
                .iter()
                .find(|e| e.position == acked)
                .map(|e| e.event_id.to_string());
            published = Some((acked, last_id));
            store::advance_checkpoint(&pool, RELAY_CHECKPOINT, acked).await?;
            metrics::counter!("ledger_relay_published_total").increment(events.len() as u64);
            metrics::gauge!("ledger_relay_backlog_events").set((log_head - acked).max(0) as f64);
            Ok(events.len())
        }
        .await;
        match step {
            Ok(n) if n > 0 => {
                backoff = Duration::from_millis(100);
            }
            Ok(_) => {
                let changed = async {
                    match head.as_mut() {
                        Some(h) => {
                            if h.changed().await.is_err() {
                                std::future::pending::<()>().await
                            }
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = changed => {}
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
            }
            Err(BusError::Misconfigured(problem)) => {
                tracing::error!(%problem, "relay stopped: the stream is misconfigured");
                metrics::counter!("ledger_relay_errors_total").increment(1);
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, "relay could not publish; will retry");
                metrics::counter!("ledger_relay_errors_total").increment(1);
                published = None;
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    tracing::info!("relay stopped");
}

/// Listens to the log's PostgreSQL notifications, so nodes learn of each other's work without
/// polling: an append on any node (`ledger_appended`) wakes this node's projector and relay
/// through `wake`; a projector's commit on any node (`ledger_projected`) moves `projected`,
/// which API nodes follow. Reconnects after a lost connection (missed notifications are
/// covered by the followers' slow re-reads). Runs until cancelled.
pub async fn listen(
    pool: PgPool,
    wake: Arc<Notify>,
    projected: tokio::sync::watch::Sender<i64>,
    cancel: CancellationToken,
) {
    let channels = [
        store::APPENDED_CHANNEL,
        ledger_projections::runner::PROJECTED_CHANNEL,
    ];
    loop {
        let listener = async {
            let mut l = sqlx::postgres::PgListener::connect_with(&pool).await?;
            l.listen_all(channels).await?;
            Ok::<_, sqlx::Error>(l)
        }
        .await;
        match listener {
            Ok(mut l) => loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    n = l.recv() => match n {
                        Ok(n) if n.channel() == store::APPENDED_CHANNEL => wake.notify_waiters(),
                        Ok(n) => {
                            if let Ok(p) = n.payload().parse::<i64>() {
                                projected.send_if_modified(|cur| {
                                    let moved = *cur < p;
                                    *cur = (*cur).max(p);
                                    moved
                                });
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "notification listener lost its connection");
                            break;
                        }
                    }
                }
            },
            Err(e) => tracing::warn!(error = %e, "cannot listen for the log's notifications"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
