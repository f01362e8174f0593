//! Simulators of the real gateways (`ledger simulate alipay|wechat`, and in-process in the
//! tests): axum servers that speak exactly Alipay's and WeChat Pay's wire formats, with key
//! pairs of their own, so the drivers, the notification routes and the whole money path run
//! end to end without reaching the real gateways.
//!
//! Each simulator has a pay page a person or a test can click, sends real-format
//! notifications to the merchant's `notify_url` and retries them with backoff until the
//! answer is right (Alipay: `success`; WeChat Pay: a 2xx), serves the OpenAPI calls the
//! ledger makes (query, refund, refund query, close) after verifying the merchant's
//! signature, and injects faults on request like the sandbox does ([`Faults`]).
//!
//! Owns: the simulated gateways' state (in memory, bounded) and their HTTP servers. Must not:
//! build or check any signature, encryption or message by hand — the gateway side of every
//! exchange comes from `ledger_wire::{alipay, wechat}::sim` and the shared wire types — or
//! touch the ledger's database.

pub mod alipay;
pub mod wechat;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ledger_wire::keys::{PrivateKey, PublicKey};
use rand::distributions::{Alphanumeric, DistString};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Deliveries remembered for inspection (oldest forgotten first).
pub const DELIVERIES_MAX: usize = 10_000;
/// Orders a simulator holds; beyond it new orders are refused.
pub const ORDERS_MAX: usize = 100_000;
/// Longest a notification held back by `notify_out_of_order` waits for the next one.
pub const HOLD_MAX: Duration = Duration::from_secs(5);
/// Longest body a simulator reads from the merchant (requests and notification answers).
pub const BODY_BYTES_MAX: usize = 64 * 1024;

/// Faults armed on a simulator; each counter is consumed by the call or notification it
/// affects. The same names as the sandbox's where they mean the same.
#[derive(Debug, Default)]
pub struct Faults {
    /// The next N API calls answer 503 and change nothing.
    pub fail_next: AtomicU32,
    /// The next N API calls take effect but answer only after the simulator's `slow_answer`
    /// (longer than the ledger's call timeout): the caller cannot know what happened.
    pub timeout_next: AtomicU32,
    /// The next N notifications are delivered again after they were acknowledged.
    pub notify_twice: AtomicU32,
    /// The next N payment notifications report an amount 0.01 off the order's.
    pub notify_wrong_amount: AtomicU32,
    /// The next N notifications are held back and delivered after the next one (or after
    /// [`HOLD_MAX`]).
    pub notify_out_of_order: AtomicU32,
    /// The first delivery of the next N notifications has its body changed after signing.
    pub notify_tampered: AtomicU32,
    /// The first delivery of the next N notifications is signed ten minutes in the past
    /// (WeChat Pay; Alipay's notifications carry no signed timestamp).
    pub notify_stale: AtomicU32,
    /// The next N notifications name another merchant (app_id / mchid) — signed correctly.
    pub notify_other_merchant: AtomicU32,
    /// The next N refunds stay pending (Alipay answers "unknown", WeChat Pay `PROCESSING`)
    /// until they settle after the simulator's `refund_settle` and are notified.
    pub refund_pending: AtomicU32,
}

/// Takes one from a fault counter; true when it was armed.
pub fn take(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        .is_ok()
}

impl Faults {
    /// Arms faults from `name=count,…` (adding to what is armed).
    pub fn arm(&self, text: &str) -> Result<(), String> {
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, n) = item
                .split_once('=')
                .ok_or_else(|| format!("{item:?} is not name=count"))?;
            let n: u32 = n
                .trim()
                .parse()
                .map_err(|_| format!("{item:?}: count must be a number"))?;
            self.counter(name.trim())
                .ok_or_else(|| format!("unknown fault {name:?}"))?
                .fetch_add(n, Ordering::AcqRel);
        }
        Ok(())
    }

    fn counter(&self, name: &str) -> Option<&AtomicU32> {
        Some(match name {
            "fail_next" => &self.fail_next,
            "timeout_next" => &self.timeout_next,
            "notify_twice" => &self.notify_twice,
            "notify_wrong_amount" => &self.notify_wrong_amount,
            "notify_out_of_order" => &self.notify_out_of_order,
            "notify_tampered" => &self.notify_tampered,
            "notify_stale" => &self.notify_stale,
            "notify_other_merchant" => &self.notify_other_merchant,
            "refund_pending" => &self.refund_pending,
            _ => return None,
        })
    }
}

/// How notifications are retried until answered right.
#[derive(Debug, Clone)]
pub struct NotifySchedule {
    /// Wait before the second attempt; it doubles per attempt up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Attempts per notification, the first included (Alipay gives up after about 25 hours).
    pub attempts_max: u32,
    /// Longest one delivery may take.
    pub timeout: Duration,
}

impl Default for NotifySchedule {
    fn default() -> Self {
        Self {
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            attempts_max: 10,
            timeout: Duration::from_secs(10),
        }
    }
}

impl NotifySchedule {
    /// The wait after attempt `attempt` (1-based) failed.
    pub fn backoff(&self, attempt: u32) -> Duration {
        self.backoff_base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.backoff_max)
    }
}

/// One delivery attempt of a notification, as the simulator saw it.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryRecord {
    /// Alipay's `notify_id` or WeChat Pay's notification `id`.
    pub message_id: String,
    /// What the notification is about: our out_trade_no (Alipay) or out_trade_no (WeChat).
    pub out_trade_no: String,
    /// `TRADE_SUCCESS`, `TRANSACTION.SUCCESS`, `REFUND.SUCCESS`, …
    pub kind: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The HTTP status answered; `None` when the request failed.
    pub status: Option<u16>,
    /// The answer's body (truncated), or the transport error.
    pub answer: String,
    /// The answer was the one the gateway waits for.
    pub accepted: bool,
    pub at: DateTime<Utc>,
}

/// A notification's bytes for one attempt.
pub struct Prepared {
    pub body: Vec<u8>,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
}

/// Builds the notification for attempt `n` (1-based): WeChat Pay signs each attempt afresh.
pub type Prepare = Arc<dyn Fn(u32) -> Prepared + Send + Sync>;

/// A notification to deliver.
pub struct Delivery {
    pub message_id: String,
    pub out_trade_no: String,
    pub kind: String,
    pub url: String,
    pub prepare: Prepare,
    /// Deliver it again once acknowledged (`notify_twice`).
    pub twice: bool,
}

/// Delivers notifications with retries, in tasks owned by the simulator.
pub struct Notifier {
    http: reqwest::Client,
    schedule: NotifySchedule,
    /// Alipay: the body is `success`; WeChat Pay: any 2xx.
    accepts: fn(u16, &str) -> bool,
    deliveries: Mutex<std::collections::VecDeque<DeliveryRecord>>,
    /// A notification held back by `notify_out_of_order`.
    held: Mutex<Option<Delivery>>,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Notifier {
    pub fn new(
        schedule: NotifySchedule,
        accepts: fn(u16, &str) -> bool,
        tracker: TaskTracker,
        cancel: CancellationToken,
    ) -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(schedule.timeout)
                .build()?,
            schedule,
            accepts,
            deliveries: Mutex::new(Default::default()),
            held: Mutex::new(None),
            tracker,
            cancel,
        })
    }

    /// Every delivery attempt so far (the last [`DELIVERIES_MAX`]).
    pub fn deliveries(&self) -> Vec<DeliveryRecord> {
        lock(&self.deliveries).iter().cloned().collect()
    }

    /// Sends `delivery` in the background; `out_of_order` holds it back until the next one.
    pub fn send(self: &Arc<Self>, delivery: Delivery, out_of_order: bool) {
        if out_of_order {
            let previous = lock(&self.held).replace(delivery);
            if let Some(previous) = previous {
                self.spawn(previous, Duration::ZERO);
            }
            let me = self.clone();
            self.tracker.spawn(async move {
                tokio::select! {
                    _ = me.cancel.cancelled() => {}
                    _ = tokio::time::sleep(HOLD_MAX) => {
                        if let Some(held) = lock(&me.held).take() {
                            me.spawn(held, Duration::ZERO);
                        }
                    }
                }
            });
            return;
        }
        self.spawn(delivery, Duration::ZERO);
        // The held one goes after this one: a little later, so that it arrives second.
        if let Some(held) = lock(&self.held).take() {
            self.spawn(held, Duration::from_millis(200));
        }
    }

    fn spawn(self: &Arc<Self>, delivery: Delivery, delay: Duration) {
        let me = self.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                _ = me.cancel.cancelled() => {}
                _ = async {
                    tokio::time::sleep(delay).await;
                    let accepted = me.deliver(&delivery).await;
                    if accepted && delivery.twice {
                        me.deliver(&delivery).await;
                    }
                } => {}
            }
        });
    }

    /// Attempts until the answer is right or the attempts are spent; true when accepted.
    async fn deliver(&self, d: &Delivery) -> bool {
        for attempt in 1..=self.schedule.attempts_max {
            let prepared = (d.prepare)(attempt);
            let mut request = self
                .http
                .post(&d.url)
                .header(reqwest::header::CONTENT_TYPE, prepared.content_type)
                .body(prepared.body);
            for (name, value) in &prepared.headers {
                request = request.header(*name, value);
            }
            let (status, answer) = match request.send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let text = r.text().await.unwrap_or_default();
                    (Some(status), text)
                }
                Err(e) => (None, e.to_string()),
            };
            let accepted = status.is_some_and(|s| (self.accepts)(s, &answer));
            self.record(DeliveryRecord {
                message_id: d.message_id.clone(),
                out_trade_no: d.out_trade_no.clone(),
                kind: d.kind.clone(),
                attempt,
                status,
                answer: answer.chars().take(200).collect(),
                accepted,
                at: Utc::now(),
            });
            if accepted {
                return true;
            }
            if attempt < self.schedule.attempts_max {
                tokio::time::sleep(self.schedule.backoff(attempt)).await;
            }
        }
        tracing::warn!(message_id = %d.message_id, "notification never acknowledged; giving up");
        false
    }

    fn record(&self, record: DeliveryRecord) {
        let mut log = lock(&self.deliveries);
        if log.len() >= DELIVERIES_MAX {
            log.pop_front();
        }
        log.push_back(record);
    }
}

/// Locks a simulator's state. A panic while holding it is a bug in the simulator; the state
/// is still the best there is, so a poisoned lock is used as it is.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A running simulator: its base URL and the tasks it owns, stopped on `stop` or drop.
pub struct Running {
    pub base_url: String,
    pub addr: SocketAddr,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Running {
    fn start(
        listener: tokio::net::TcpListener,
        base_url: String,
        router: axum::Router,
        cancel: CancellationToken,
        tracker: TaskTracker,
    ) -> std::io::Result<Running> {
        let addr = listener.local_addr()?;
        let stop = cancel.clone();
        tracker.spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "simulator server stopped");
            }
        });
        Ok(Running {
            base_url,
            addr,
            cancel,
            tracker,
        })
    }

    /// Stops the server and every pending delivery, and waits for them (bounded).
    pub async fn stop(&self) {
        self.cancel.cancel();
        self.tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tracker.wait()).await;
    }

    /// Resolves when the simulator is told to stop.
    pub async fn stopped(&self) {
        self.cancel.cancelled().await
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A fresh 2048-bit RSA key pair (a simulator's own, or a demo merchant's).
pub fn generate_key() -> anyhow::Result<(PrivateKey, String)> {
    use rsa::pkcs8::{EncodePrivateKey, LineEnding};
    let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, ledger_wire::keys::RSA_BITS_MIN)?;
    let pem = key.to_pkcs8_pem(LineEnding::LF)?;
    let parsed = PrivateKey::parse(&pem)?;
    Ok((parsed, pem.to_string()))
}

/// `n` random ASCII letters and digits.
pub fn random_alnum(n: usize) -> String {
    Alphanumeric.sample_string(&mut rand::thread_rng(), n)
}

/// A simulator's sequence for trade and message numbers.
#[derive(Debug, Default)]
pub struct Sequence(AtomicU64);

impl Sequence {
    pub fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// Another merchant's id of the same shape: `id` with its last digit changed.
pub fn other_id(id: &str) -> String {
    let mut chars: Vec<char> = id.chars().collect();
    if let Some(last) = chars.last_mut() {
        *last = if *last == '9' { '8' } else { '9' };
    }
    chars.into_iter().collect()
}

/// Escapes text for HTML.
pub fn html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A simulator page around `body` (already escaped).
pub fn page(title: &str, body: &str) -> axum::response::Html<String> {
    axum::response::Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font-family:sans-serif;max-width:36em;margin:3em auto}}\
         button{{font-size:1.1em;margin-right:1em}}dt{{font-weight:bold}}</style></head>\
         <body><h1>{t}</h1>{body}</body></html>",
        t = html(title)
    ))
}

/// `ledger simulate alipay|wechat`.
#[derive(clap::Args, Debug, Clone)]
pub struct SimulateArgs {
    /// Which gateway to simulate.
    #[arg(value_enum)]
    pub gateway: SimGateway,
    /// Address to listen on (default 127.0.0.1:9501 for alipay, 127.0.0.1:9502 for wechat).
    #[arg(long)]
    pub bind: Option<SocketAddr>,
    /// Base URL the simulator is reached at, for its pay pages (default http://BIND).
    #[arg(long)]
    pub public_url: Option<String>,
    /// Where the key files are written (default LEDGER_DATA_DIR/simulate-GATEWAY).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The merchant's public key (PEM). Without it a merchant key pair is generated too, and
    /// the ledger is pointed at its private half.
    #[arg(long)]
    pub merchant_public_key: Option<PathBuf>,
    /// Faults to arm at start, e.g. `notify_twice=1,refund_pending=2` (also `POST /sim/faults`).
    #[arg(long, default_value = "")]
    pub faults: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SimGateway {
    Alipay,
    Wechat,
}

fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.create(true).truncate(true).write(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut f = options
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// The merchant's key: the given public key, or a generated pair whose private half is
/// written for the ledger. Returns the public key and the private key file, if written.
fn merchant_key(args: &SimulateArgs, dir: &Path) -> anyhow::Result<(PublicKey, Option<PathBuf>)> {
    match &args.merchant_public_key {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!("--merchant-public-key: cannot read {}: {e}", path.display())
            })?;
            let key = PublicKey::parse(&text)
                .map_err(|e| anyhow::anyhow!("--merchant-public-key: {}: {e}", path.display()))?;
            Ok((key, None))
        }
        None => {
            let (key, pem) = generate_key()?;
            let path = dir.join("merchant-private.pem");
            write_file(&path, &pem)?;
            Ok((key.public_key().clone(), Some(path)))
        }
    }
}

/// Runs `ledger simulate` until Ctrl-C or SIGTERM.
pub async fn run_cli(args: SimulateArgs, data_dir: &Path) -> anyhow::Result<i32> {
    let name = match args.gateway {
        SimGateway::Alipay => "alipay",
        SimGateway::Wechat => "wechat",
    };
    let bind = args.bind.unwrap_or_else(|| match args.gateway {
        SimGateway::Alipay => SocketAddr::from(([127, 0, 0, 1], 9501)),
        SimGateway::Wechat => SocketAddr::from(([127, 0, 0, 1], 9502)),
    });
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| data_dir.join(format!("simulate-{name}")));
    std::fs::create_dir_all(&dir)
        .map_err(|e| anyhow::anyhow!("--dir: cannot create {}: {e}", dir.display()))?;
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|e| anyhow::anyhow!("--bind: cannot listen on {bind}: {e}"))?;
    let base_url = args
        .public_url
        .clone()
        .unwrap_or_else(|| {
            format!(
                "http://{}",
                listener
                    .local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default()
            )
        })
        .trim_end_matches('/')
        .to_owned();
    eprintln!("generating the {name} simulator's RSA keys…");
    let (gateway_key, _) = generate_key()?;
    let (merchant_public, merchant_private_file) = merchant_key(&args, &dir)?;
    let private_line = |setting: &str| match &merchant_private_file {
        Some(p) => format!("{setting}={}", p.display()),
        None => format!("{setting}=<the merchant private key whose public half you gave>"),
    };
    let (running, settings) = match args.gateway {
        SimGateway::Alipay => {
            let public_file = dir.join("alipay-public.pem");
            write_file(&public_file, &gateway_key.public_key().to_spki_pem())?;
            let config = alipay::AlipaySimConfig::new(gateway_key, merchant_public);
            let app_id = config.app_id.clone();
            let (sim, running) = alipay::spawn(config, listener, base_url.clone())?;
            sim.faults
                .arm(&args.faults)
                .map_err(|e| anyhow::anyhow!("--faults: {e}"))?;
            let settings = vec![
                format!("LEDGER_ALIPAY_APP_ID={app_id}"),
                private_line("LEDGER_ALIPAY_PRIVATE_KEY_FILE"),
                format!("LEDGER_ALIPAY_PUBLIC_KEY_FILE={}", public_file.display()),
                format!("LEDGER_ALIPAY_GATEWAY_URL={base_url}/gateway.do"),
            ];
            (running, settings)
        }
        SimGateway::Wechat => {
            let config = wechat::WechatSimConfig::new(gateway_key, merchant_public);
            let public_file = dir.join("wechat-platform-public.pem");
            write_file(
                &public_file,
                &config.platform.private_key.public_key().to_spki_pem(),
            )?;
            let settings = vec![
                format!("LEDGER_WECHAT_MCHID={}", config.mchid),
                format!("LEDGER_WECHAT_APPID={}", config.appid),
                format!("LEDGER_WECHAT_APIV3_KEY={}", config.apiv3_key_text),
                private_line("LEDGER_WECHAT_PRIVATE_KEY_FILE"),
                format!("LEDGER_WECHAT_CERT_SERIAL={}", config.merchant_serial),
                format!(
                    "LEDGER_WECHAT_PLATFORM_KEYS={}:{}",
                    config.platform.serial,
                    public_file.display()
                ),
                format!("LEDGER_WECHAT_BASE_URL={base_url}"),
            ];
            let (sim, running) = wechat::spawn(config, listener, base_url.clone())?;
            sim.faults
                .arm(&args.faults)
                .map_err(|e| anyhow::anyhow!("--faults: {e}"))?;
            (running, settings)
        }
    };
    println!("{name} simulator listening on {base_url}");
    println!(
        "Start the ledger with these settings to use it (they are test keys: never for money):"
    );
    for line in &settings {
        println!("  export {line}");
    }
    println!(
        "State: GET {base_url}/sim/state   Faults: curl -d 'notify_twice=1' {base_url}/sim/faults"
    );
    tokio::select! {
        _ = crate::cli::shutdown_signal() => {}
        _ = running.stopped() => {}
    }
    running.stop().await;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_arm_by_name_and_unknown_names_are_refused() {
        let f = Faults::default();
        f.arm("notify_twice=2, fail_next=1").unwrap();
        assert!(take(&f.notify_twice));
        assert!(take(&f.notify_twice));
        assert!(!take(&f.notify_twice));
        assert!(take(&f.fail_next));
        assert!(f.arm("explode=1").is_err());
        assert!(f.arm("fail_next").is_err());
    }

    #[test]
    fn notification_backoff_doubles_up_to_its_maximum() {
        let s = NotifySchedule {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_millis(500),
            attempts_max: 5,
            timeout: Duration::from_secs(1),
        };
        assert_eq!(s.backoff(1), Duration::from_millis(100));
        assert_eq!(s.backoff(2), Duration::from_millis(200));
        assert_eq!(s.backoff(4), Duration::from_millis(500));
        assert_eq!(s.backoff(40), Duration::from_millis(500));
    }

    #[test]
    fn html_escapes_markup() {
        assert_eq!(
            html("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
