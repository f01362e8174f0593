//! The load generator: a lean signed HTTP/1.1 client (one keep-alive connection per virtual
//! client, no pool, no redirects, bodies parsed only where an answer is needed) and a
//! closed-loop driver that runs N workers for a fixed time and records latencies in an HDR
//! histogram.
//!
//! Workers run on the load runtime (threads named [`cpu::LOAD_THREAD_NAME`]) so that the CPU
//! they burn can be told apart from the service's. Every loop stops by itself at its
//! deadline.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::cpu::{self, CpuUsage};
use ledger::signing;

/// Slowest latency the histograms hold, in microseconds (a minute).
const LATENCY_US_MAX: u64 = 60_000_000;

/// Signs requests with one key (SPEC §6): a fresh nonce and timestamp each time.
#[derive(Clone)]
pub struct Signer {
    key_id: HeaderValue,
    secret: String,
}

impl Signer {
    pub fn new(key_id: &str, secret: &str) -> Self {
        Self {
            key_id: HeaderValue::from_str(key_id).expect("key ids are visible ASCII"),
            secret: secret.to_owned(),
        }
    }

    fn headers(
        &self,
        method: &Method,
        target: &str,
        body: &[u8],
    ) -> [(&'static str, HeaderValue); 4] {
        let ts = chrono::Utc::now().timestamp().to_string();
        let nonce = signing::new_nonce();
        let sig = signing::sign(&self.secret, &ts, &nonce, method.as_str(), target, body);
        let value = |s: String| HeaderValue::from_str(&s).expect("signing output is visible ASCII");
        [
            ("x-key-id", self.key_id.clone()),
            ("x-timestamp", value(ts)),
            ("x-nonce", value(nonce)),
            ("x-signature", value(sig)),
        ]
    }
}

/// One keep-alive HTTP/1.1 connection; reconnects when the server closed it.
pub struct Conn {
    addr: SocketAddr,
    host: HeaderValue,
    send: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            host: HeaderValue::from_str(&addr.to_string()).expect("an address is a valid host"),
            send: None,
        }
    }

    async fn sender(&mut self) -> anyhow::Result<&mut SendRequest<Full<Bytes>>> {
        let closed = match &self.send {
            Some(s) => s.is_closed(),
            None => true,
        };
        if closed {
            let stream = TcpStream::connect(self.addr).await?;
            stream.set_nodelay(true)?;
            let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                // Ends when the server or we close the connection; either is fine here.
                let _ = conn.await;
            });
            self.send = Some(send);
        }
        let send = self.send.as_mut().expect("connected just above");
        send.ready().await?;
        Ok(send)
    }

    /// Sends a signed request and reads the whole answer.
    pub async fn send(
        &mut self,
        signer: &Signer,
        method: Method,
        target: &str,
        body: Option<Bytes>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let body = body.unwrap_or_default();
        let mut request = Request::builder().method(method.clone()).uri(target);
        let headers = request.headers_mut().expect("the builder has no error yet");
        headers.insert(HOST, self.host.clone());
        for (name, value) in signer.headers(&method, target, &body) {
            headers.insert(name, value);
        }
        if !body.is_empty() {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let request = request.body(Full::new(body))?;
        let answer = match self.sender().await?.send_request(request).await {
            Ok(a) => a,
            Err(e) => {
                self.send = None;
                return Err(e.into());
            }
        };
        let status = answer.status();
        let bytes = answer.into_body().collect().await?.to_bytes();
        Ok((status, bytes))
    }
}

/// What one worker saw.
pub struct Recorder {
    pub hist: Histogram<u64>,
    pub ops: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    window: (Instant, Instant),
}

impl Recorder {
    fn new(window: (Instant, Instant)) -> Self {
        Self {
            hist: new_histogram(),
            ops: 0,
            errors: 0,
            first_error: None,
            window,
        }
    }

    /// Records an operation that started at `started` and just ended. Only operations that
    /// end inside the measurement window count (the warm-up and the tail are dropped).
    pub fn record(&mut self, started: Instant, outcome: Result<(), String>) {
        let now = Instant::now();
        if now < self.window.0 || now > self.window.1 {
            return;
        }
        match outcome {
            Ok(()) => {
                self.ops += 1;
                let us = now.duration_since(started).as_micros() as u64;
                self.hist.saturating_record(us.clamp(1, LATENCY_US_MAX));
            }
            Err(e) => {
                self.errors += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(e);
                }
            }
        }
    }
}

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("the bounds are valid")
}

/// Whether a worker wants another step.
pub enum Step {
    Continue,
    /// Nothing left to do (a finite workload ran out).
    Done,
}

/// A virtual client: each step does one or more operations and records them.
pub trait Worker: Send + 'static {
    fn step(&mut self, rec: &mut Recorder) -> impl Future<Output = Step> + Send;
}

/// The outcome of a phase.
pub struct PhaseResult {
    pub clients: usize,
    pub ops: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub seconds: f64,
    pub hist: Histogram<u64>,
    pub cpu: CpuUsage,
}

impl PhaseResult {
    pub fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.ops as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// The mean latency in milliseconds.
    pub fn mean_ms(&self) -> f64 {
        if self.hist.is_empty() {
            return 0.0;
        }
        self.hist.mean() / 1000.0
    }

    /// A latency quantile in milliseconds.
    pub fn ms(&self, quantile: f64) -> f64 {
        if self.hist.is_empty() {
            return 0.0;
        }
        self.hist.value_at_quantile(quantile) as f64 / 1000.0
    }
}

/// Runs `workers` on `runtime` in a closed loop: each sends its next request as soon as the
/// previous one answered. Operations ending during `warmup` are not counted; the phase ends
/// after `warmup + measure`, or earlier when every worker is done.
pub async fn run<W: Worker>(
    runtime: &tokio::runtime::Handle,
    workers: Vec<W>,
    warmup: Duration,
    measure: Duration,
) -> PhaseResult {
    let clients = workers.len();
    let start = Instant::now();
    let window = (start + warmup, start + warmup + measure);
    let tasks: Vec<_> = workers
        .into_iter()
        .map(|mut w| {
            runtime.spawn(async move {
                let mut rec = Recorder::new(window);
                // Bounded by the deadline, or by the worker running out of work.
                while Instant::now() < window.1 {
                    if let Step::Done = w.step(&mut rec).await {
                        break;
                    }
                }
                (rec, Instant::now())
            })
        })
        .collect();
    tokio::time::sleep_until(window.0.into()).await;
    let cpu_from = cpu::sample();
    let mut cpu_to = None;
    let mut hist = new_histogram();
    let (mut ops, mut errors, mut first_error) = (0, 0, None);
    let mut last_end = window.0;
    // Sample the CPU at the end of the window even if some worker is still finishing a
    // request that started before it.
    let sampler = tokio::time::sleep_until(window.1.into());
    tokio::pin!(sampler);
    let mut joined = futures::future::join_all(tasks);
    let results = loop {
        tokio::select! {
            _ = &mut sampler, if cpu_to.is_none() => cpu_to = Some(cpu::sample()),
            r = &mut joined => break r,
        }
    };
    let cpu_to = cpu_to.unwrap_or_else(cpu::sample);
    for r in results {
        let Ok((rec, ended)) = r else { continue };
        hist.add(&rec.hist).expect("histograms share their bounds");
        ops += rec.ops;
        errors += rec.errors;
        if first_error.is_none() {
            first_error = rec.first_error;
        }
        last_end = last_end.max(ended.min(window.1));
    }
    let seconds = last_end.saturating_duration_since(window.0).as_secs_f64();
    PhaseResult {
        clients,
        ops,
        errors,
        first_error,
        seconds,
        hist,
        cpu: cpu::usage(&cpu_from, &cpu_to),
    }
}
