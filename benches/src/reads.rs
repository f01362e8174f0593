//! The read phases: cached detail and list reads, the cache-miss path, and the ceiling — a
//! bare axum JSON handler in the same process, on the same runtime and HTTP stack, answering
//! the same payload without authentication, cache or envelope middleware.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use hyper::{Method, StatusCode};
use tokio_util::sync::CancellationToken;

use super::load::{Conn, Recorder, Signer, Step, Worker};
use ledger_projections::cache::Cached;
use ledger_projections::read::PaymentDetail;

/// Reads GET targets drawn at random from a fixed set, expecting 200.
pub struct ReadWorker {
    conn: Conn,
    signer: Signer,
    targets: Arc<Vec<String>>,
    rng: u64,
}

impl ReadWorker {
    pub fn new(conn: Conn, signer: Signer, targets: Arc<Vec<String>>, seed: u64) -> Self {
        Self {
            conn,
            signer,
            targets,
            rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        }
    }

    /// xorshift64: cheap enough not to show up in the client's CPU.
    fn next_index(&mut self) -> usize {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng % self.targets.len() as u64) as usize
    }
}

impl Worker for ReadWorker {
    async fn step(&mut self, rec: &mut Recorder) -> Step {
        let targets = self.targets.clone();
        let target = &targets[self.next_index()];
        let started = Instant::now();
        let outcome = fetch(&mut self.conn, &self.signer, target).await;
        rec.record(started, outcome);
        Step::Continue
    }
}

/// Reads every target of a shared queue once (the first read of each payment), then stops.
pub struct OnceWorker {
    conn: Conn,
    signer: Signer,
    targets: Arc<Vec<String>>,
    next: Arc<AtomicUsize>,
}

impl OnceWorker {
    pub fn new(
        conn: Conn,
        signer: Signer,
        targets: Arc<Vec<String>>,
        next: Arc<AtomicUsize>,
    ) -> Self {
        Self {
            conn,
            signer,
            targets,
            next,
        }
    }
}

impl Worker for OnceWorker {
    async fn step(&mut self, rec: &mut Recorder) -> Step {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        let targets = self.targets.clone();
        let Some(target) = targets.get(i) else {
            return Step::Done;
        };
        let started = Instant::now();
        let outcome = fetch(&mut self.conn, &self.signer, target).await;
        rec.record(started, outcome);
        Step::Continue
    }
}

async fn fetch(conn: &mut Conn, signer: &Signer, target: &str) -> Result<(), String> {
    match conn.send(signer, Method::GET, target, None).await {
        Ok((StatusCode::OK, _)) => Ok(()),
        Ok((status, body)) => Err(format!(
            "GET {target}: {status} {}",
            String::from_utf8_lossy(&body)
        )),
        Err(e) => Err(format!("GET {target}: {e}")),
    }
}

/// The answer the real read path gives for a cached detail (`envelope::ok_read_json` around
/// the cached bytes), without its routing, authentication and middleware.
async fn bare(State(detail): State<Arc<Cached<PaymentDetail>>>) -> axum::response::Response {
    ledger::api::envelope::ok_read_json(0, &detail.json)
}

/// Serves `GET /bare/{anything}` answering `detail` in the envelope, on this runtime, until
/// `cancel`. Returns its address.
pub async fn serve_bare(
    detail: Arc<Cached<PaymentDetail>>,
    cancel: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let router = Router::new()
        .route("/bare/{id}", get(bare))
        .with_state(detail);
    tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await;
        if let Err(e) = served {
            eprintln!("warning: the bare server failed: {e}");
        }
    });
    Ok(addr)
}
