//! The bus: publishes the committed log to NATS JetStream, and wakes followers.
//!
//! The relay reads the log from its checkpoint in position order, publishes each event to
//! `{prefix}.payment.{event_type}` with `Nats-Msg-Id` = event id (JetStream drops the
//! duplicates a retry produces), waits for the acks and only then advances its checkpoint:
//! at-least-once, outbox style. Writes never wait for NATS: while it is down the API keeps
//! appending and the relay's backlog grows; when it returns the backlog drains.
//!
//! Without NATS (`NATS_URL=none`) the process runs single-node with the in-process bus: the
//! writer's head position (a watch channel) wakes the projector directly.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use futures::StreamExt;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::NatsSettings;
use crate::store::{self, StoreError, StoredEvent};

/// Checkpoint name of the relay.
pub const RELAY_CHECKPOINT: &str = "relay:nats";
/// How long JetStream gets to acknowledge a publish before the batch is retried.
pub const PUBLISH_ACK_TIMEOUT: Duration = Duration::from_secs(3);
/// JetStream's de-duplication window (SPEC §11: at least 2 minutes).
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

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
            .connect(settings.url.as_str())
            .await
            .map_err(nats_err)?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(PUBLISH_ACK_TIMEOUT);
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

    /// Creates the stream if it is missing.
    pub async fn ensure_stream(&self) -> Result<(), BusError> {
        self.jetstream
            .get_or_create_stream(stream::Config {
                name: self.settings.stream.clone(),
                subjects: vec![format!("{}.payment.>", self.settings.prefix)],
                duplicate_window: DUPLICATE_WINDOW,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(nats_err)?;
        Ok(())
    }

    /// Publishes events in order and waits for every ack. Returns the position up to which
    /// every event was acknowledged.
    pub async fn publish(&self, events: &[StoredEvent]) -> Result<i64, BusError> {
        let mut acks = Vec::with_capacity(events.len());
        for e in events {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(
                async_nats::header::NATS_MESSAGE_ID,
                e.event_id.to_string().as_str(),
            );
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

/// The relay: runs until cancelled, then stops after its current batch.
pub async fn run_relay(
    pool: PgPool,
    bus: NatsBus,
    batch_max: i64,
    head: Option<tokio::sync::watch::Receiver<i64>>,
    cancel: CancellationToken,
) {
    let mut head = head;
    let mut backoff = Duration::from_millis(100);
    let mut stream_ready = false;
    loop {
        if cancel.is_cancelled() {
            break;
        }
        let step: Result<usize, BusError> = async {
            if !stream_ready {
                bus.ensure_stream().await?;
                stream_ready = true;
            }
            let from = store::checkpoint(&pool, RELAY_CHECKPOINT).await?;
            let events = store::read_after(&pool, from, batch_max).await?;
            if events.is_empty() {
                metrics::gauge!("ledger_relay_backlog").set(0.0);
                return Ok(0);
            }
            let head_pos = events.last().map(|e| e.position).unwrap_or(from);
            let acked = bus.publish(&events).await?;
            store::advance_checkpoint(&pool, RELAY_CHECKPOINT, acked).await?;
            metrics::counter!("ledger_relay_published_total").increment(events.len() as u64);
            let backlog = store::head_position(&pool).await? - head_pos;
            metrics::gauge!("ledger_relay_backlog").set(backlog.max(0) as f64);
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
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "relay could not publish; will retry");
                metrics::counter!("ledger_relay_errors_total").increment(1);
                stream_ready = false;
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

/// Wakes `notify` whenever an event is published on the deployment's subjects (for
/// projector and API nodes that do not share this process's writer).
pub async fn wake_on_messages(bus: NatsBus, notify: Arc<Notify>, cancel: CancellationToken) {
    let subject = format!("{}.payment.>", bus.settings.prefix);
    loop {
        match bus.client.subscribe(subject.clone()).await {
            Ok(mut sub) => loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    msg = sub.next() => match msg {
                        Some(_) => notify.notify_waiters(),
                        None => break,
                    }
                }
            },
            Err(e) => tracing::warn!(error = %e, "cannot subscribe for wake-ups"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
