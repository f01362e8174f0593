//! The write phase: signed create → gateway notify → refund flows over HTTP. Each POST answers
//! only once its events are committed and projected (read your writes), so a command's
//! latency is the full durable-and-visible path. Also the lag monitor: commit → visible in
//! the read tables, measured inside the service under that load.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use hdrhistogram::Histogram;
use hyper::{Method, StatusCode};
use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::env::{Credentials, ADMIN_KEY_ID};
use super::load::{new_histogram, Conn, Recorder, Signer, Step, Worker};

/// The gateway the bench pays through (the sandbox serves every method alike).
const METHOD: &str = "alipay";
const AMOUNT: &str = "100.00";
const REFUND_AMOUNT: &str = "30.00";

enum Stage {
    Create,
    Notify { id: String, payment_no: String },
    Refund { id: String },
}

/// One virtual client running flows back to back.
pub struct WriteWorker {
    conn: Conn,
    admin: Signer,
    gateway: Signer,
    stage: Stage,
    worker: usize,
    seq: u64,
    /// Ids of the payments this worker created, for the read phases.
    created: Arc<Mutex<Vec<Uuid>>>,
}

impl WriteWorker {
    pub fn new(
        conn: Conn,
        credentials: &Credentials,
        worker: usize,
        created: Arc<Mutex<Vec<Uuid>>>,
    ) -> Self {
        Self {
            conn,
            admin: Signer::new(ADMIN_KEY_ID, &credentials.admin_secret),
            gateway: Signer::new(METHOD, credentials.gateway_secret(METHOD)),
            stage: Stage::Create,
            worker,
            seq: 0,
            created,
        }
    }

    async fn post(
        &mut self,
        gateway: bool,
        target: &str,
        body: String,
        expect: StatusCode,
    ) -> Result<Bytes, String> {
        let signer = if gateway { &self.gateway } else { &self.admin };
        match self
            .conn
            .send(signer, Method::POST, target, Some(Bytes::from(body)))
            .await
        {
            Ok((status, bytes)) if status == expect => Ok(bytes),
            Ok((status, bytes)) => Err(format!(
                "{target}: {status} {}",
                String::from_utf8_lossy(&bytes)
            )),
            Err(e) => Err(format!("{target}: {e}")),
        }
    }
}

#[derive(Deserialize)]
struct Envelope<T> {
    data: T,
}

#[derive(Deserialize)]
struct Created {
    payment_id: Uuid,
    payment_no: String,
}

impl Worker for WriteWorker {
    async fn step(&mut self, rec: &mut Recorder) -> Step {
        let started = Instant::now();
        let stage = std::mem::replace(&mut self.stage, Stage::Create);
        let outcome = match stage {
            Stage::Create => {
                self.seq += 1;
                let body = serde_json::json!({
                    "amount": AMOUNT,
                    "currency": "CNY",
                    "payment_method": METHOD,
                    "order_id": format!("BENCH-{}-{}-{}", Uuid::now_v7().simple(), self.worker, self.seq),
                    "user_id": format!("bench-user-{}", self.seq % 1000),
                });
                let answer = self
                    .post(
                        false,
                        "/api/v1/payments/create",
                        body.to_string(),
                        StatusCode::CREATED,
                    )
                    .await;
                answer.and_then(|bytes| {
                    let created: Envelope<Created> = serde_json::from_slice(&bytes)
                        .map_err(|e| format!("create answer: {e}"))?;
                    self.created
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(created.data.payment_id);
                    self.stage = Stage::Notify {
                        id: created.data.payment_id.to_string(),
                        payment_no: created.data.payment_no,
                    };
                    Ok(())
                })
            }
            Stage::Notify { id, payment_no } => {
                let body = serde_json::json!({
                    "payment_no": payment_no,
                    "callback_no": format!("CB{}", Uuid::now_v7().simple()),
                    "status": "success",
                    "amount": AMOUNT,
                    "gateway_trade_no": format!("T{}", Uuid::now_v7().simple()),
                });
                let target = format!("/api/v1/gateways/{METHOD}/notify");
                let answer = self
                    .post(true, &target, body.to_string(), StatusCode::OK)
                    .await;
                answer.map(|_| self.stage = Stage::Refund { id })
            }
            Stage::Refund { id } => {
                let body = serde_json::json!({ "amount": REFUND_AMOUNT, "reason": "bench refund" });
                let target = format!("/api/v1/payments/{id}/refund");
                self.post(false, &target, body.to_string(), StatusCode::CREATED)
                    .await
                    .map(|_| ())
            }
        };
        // A failed step starts a new flow, so one error cannot wedge a worker.
        rec.record(started, outcome);
        Step::Continue
    }
}

/// Measures commit → visible in the read tables: notes when the writer's head moves and
/// when the projector's applied position passes it. Runs until `cancel`; returns the
/// histogram (microseconds) of what happened inside `[from, until]`.
pub async fn monitor_lag(
    mut head: watch::Receiver<i64>,
    mut applied: watch::Receiver<i64>,
    window: (Instant, Instant),
    cancel: CancellationToken,
) -> Histogram<u64> {
    let mut hist = new_histogram();
    let mut pending: std::collections::VecDeque<(i64, Instant)> = std::collections::VecDeque::new();
    // Runs until cancelled; the queue holds at most one entry per writer commit.
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            changed = head.changed() => {
                if changed.is_err() { break; }
                let position = *head.borrow_and_update();
                pending.push_back((position, Instant::now()));
            }
            changed = applied.changed() => {
                if changed.is_err() { break; }
                let position = *applied.borrow_and_update();
                let now = Instant::now();
                while pending.front().is_some_and(|(p, _)| *p <= position) {
                    let (_, at) = pending.pop_front().expect("front exists");
                    if at >= window.0 && now <= window.1 {
                        let us = now.duration_since(at).as_micros() as u64;
                        hist.saturating_record(us.max(1));
                    }
                }
            }
        }
    }
    hist
}
