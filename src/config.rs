//! Configuration from the environment (SPEC §9), typed at the edge.
//!
//! Every setting is a clap argument that is also an environment variable, parsed by a typed
//! value parser whose error names the variable, so a malformed value stops start-up with one
//! line naming it. Every bound lives in [`Limits`], each with its default and the reason for
//! it, each settable from the environment (README "Configuration" lists them). `resolve`
//! then checks what spans several settings and generates development keys where allowed.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::domain::PaymentMethod;
use crate::signing::new_nonce;
use crate::store::digest::SigningKey;
use crate::store::sealing::MasterKey;

/// A role an API key can hold (SPEC §6). `Admin` may do everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Client,
    Operator,
    Auditor,
    Finance,
    Admin,
}

impl Role {
    pub fn parse(text: &str) -> Option<Role> {
        Some(match text {
            "client" => Role::Client,
            "operator" => Role::Operator,
            "auditor" => Role::Auditor,
            "finance" => Role::Finance,
            "admin" => Role::Admin,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Operator => "operator",
            Role::Auditor => "auditor",
            Role::Finance => "finance",
            Role::Admin => "admin",
        }
    }
}

#[derive(Clone)]
pub struct ApiKey {
    pub key_id: String,
    pub secret: String,
    pub role: Role,
    /// A client key bound to a merchant sees only the payments it created.
    pub merchant: Option<String>,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("key_id", &self.key_id)
            .field("role", &self.role)
            .field("merchant", &self.merchant)
            .finish_non_exhaustive()
    }
}

/// Shortest secret accepted for an API key or a gateway (a guessable secret is no secret).
pub const SECRET_CHARS_MIN: usize = 8;

/// Whether the built-in sandbox gateway runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SandboxMode {
    On,
    Off,
}

/// The environment the service runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Environment {
    Development,
    #[value(alias = "dev")]
    Dev,
    Test,
    Production,
}

/// Every bound of the service (TIGER_STYLE): sizes, queues, batches, waits and timeouts, each
/// with its unit last in its name and its environment variable.
#[derive(clap::Args, Debug, Clone)]
pub struct Limits {
    /// Largest accepted request body in bytes (SPEC §5: 64 KiB).
    #[arg(long, env = "LEDGER_BODY_BYTES_MAX", default_value_t = 64 * 1024)]
    pub body_bytes_max: usize,
    /// Largest settlement file the console may upload, in bytes.
    #[arg(long, env = "LEDGER_UPLOAD_BYTES_MAX", default_value_t = 8 * 1024 * 1024)]
    pub upload_bytes_max: usize,
    /// Signed timestamps further than this from the server clock are refused (SPEC §6).
    #[arg(long, env = "LEDGER_TIMESTAMP_WINDOW_SECS", default_value_t = 300)]
    pub timestamp_window_secs: u64,
    /// Clock difference between nodes that nonces are kept beyond the window for.
    #[arg(long, env = "LEDGER_CLOCK_SKEW_MARGIN_SECS", default_value_t = 60)]
    pub clock_skew_margin_secs: u64,
    /// Longest a POST waits for the read models to include its change before answering.
    #[arg(long, env = "LEDGER_READ_YOUR_WRITES_WAIT_MS", default_value_t = 5_000)]
    pub read_your_writes_wait_ms: u64,
    /// Longest a GET with `min_position` waits.
    #[arg(long, env = "LEDGER_MIN_POSITION_WAIT_MS", default_value_t = 5_000)]
    pub min_position_wait_ms: u64,
    /// Longest a duplicate idempotent request waits in this process for the first one.
    #[arg(long, env = "LEDGER_IDEMPOTENCY_WAIT_MS", default_value_t = 10_000)]
    pub idempotency_wait_ms: u64,
    /// Attempts of a command against fresh state after version conflicts.
    #[arg(long, env = "LEDGER_COMMAND_ATTEMPTS_MAX", default_value_t = 32)]
    pub command_attempts_max: u32,
    /// Appends committed in one group-commit transaction.
    #[arg(long, env = "LEDGER_WRITER_BATCH_MAX", default_value_t = 512)]
    pub writer_batch_max: usize,
    /// Appends waiting for the writer; beyond it senders wait (back-pressure).
    #[arg(long, env = "LEDGER_WRITER_QUEUE_MAX", default_value_t = 8192)]
    pub writer_queue_max: usize,
    /// Longest an append transaction waits for the append lock (`lock_timeout`), so that a
    /// stalled holder on any node cannot block every node for long.
    #[arg(long, env = "LEDGER_APPEND_LOCK_TIMEOUT_MS", default_value_t = 5_000)]
    pub append_lock_timeout_ms: u64,
    /// Longest any statement of an append transaction runs (`statement_timeout`).
    #[arg(
        long,
        env = "LEDGER_APPEND_STATEMENT_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub append_statement_timeout_ms: u64,
    /// Events the projector applies in one transaction.
    #[arg(long, env = "LEDGER_PROJECTION_BATCH_MAX", default_value_t = 1000)]
    pub projection_batch_max: i64,
    /// Events the relay publishes before awaiting acks.
    #[arg(long, env = "LEDGER_RELAY_BATCH_MAX", default_value_t = 500)]
    pub relay_batch_max: i64,
    /// Page size limit of lists (SPEC §5).
    #[arg(long, env = "LEDGER_PAGE_SIZE_MAX", default_value_t = 100)]
    pub page_size_max: u32,
    /// Deepest row a page-numbered list reaches ((page − 1) × size); beyond it use `after=`.
    #[arg(long, env = "LEDGER_PAGE_OFFSET_MAX", default_value_t = 10_000)]
    pub page_offset_max: u32,
    /// Limit of `/events` pages (SPEC §11).
    #[arg(long, env = "LEDGER_EVENTS_LIMIT_MAX", default_value_t = 1000)]
    pub events_limit_max: i64,
    /// Requests served at once; beyond it they queue (bounded by the OS backlog).
    #[arg(long, env = "LEDGER_CONCURRENT_REQUESTS_MAX", default_value_t = 4096)]
    pub concurrent_requests_max: usize,
    /// Open connections one peer address may hold.
    #[arg(long, env = "LEDGER_CONNECTIONS_PER_PEER_MAX", default_value_t = 256)]
    pub connections_per_peer_max: usize,
    /// Longest a client may take to send the request line and headers.
    #[arg(long, env = "LEDGER_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_read_timeout_ms: u64,
    /// Longest a client may take to send the body.
    #[arg(long, env = "LEDGER_BODY_READ_TIMEOUT_MS", default_value_t = 30_000)]
    pub body_read_timeout_ms: u64,
    /// Longest a request may take in all before it is answered 503.
    #[arg(long, env = "LEDGER_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    pub request_timeout_ms: u64,
    /// Longest one call to a payment gateway may take.
    #[arg(long, env = "LEDGER_GATEWAY_CALL_TIMEOUT_MS", default_value_t = 10_000)]
    pub gateway_call_timeout_ms: u64,
    /// Longest wait between two attempts of one refund (backoff doubles up to it).
    #[arg(long, env = "LEDGER_REFUND_BACKOFF_MAX_SECS", default_value_t = 300)]
    pub refund_backoff_max_secs: u64,
    /// Refunds the refund driver works on at once.
    #[arg(long, env = "LEDGER_REFUND_CONCURRENCY_MAX", default_value_t = 16)]
    pub refund_concurrency_max: usize,
    /// Chain verifications (`/audit/verify`, `/audit/digest`) running at once; others wait.
    #[arg(long, env = "LEDGER_VERIFY_CONCURRENT_MAX", default_value_t = 1)]
    pub verify_concurrent_max: usize,
    /// Longest a verification waits for its turn before a 429.
    #[arg(long, env = "LEDGER_VERIFY_WAIT_MS", default_value_t = 2_000)]
    pub verify_wait_ms: u64,
    /// Orders and refunds the sandbox gateway remembers (oldest forgotten first).
    #[arg(long, env = "LEDGER_SANDBOX_ENTRIES_MAX", default_value_t = 100_000)]
    pub sandbox_entries_max: usize,
    /// Events a replay's catch-up reads at a time while it holds its lock.
    #[arg(long, env = "LEDGER_REPLAY_CATCHUP_BATCH_MAX", default_value_t = 5_000)]
    pub replay_catchup_batch_max: i64,
    /// How long a member portal link lives.
    #[arg(long, env = "LEDGER_PORTAL_TTL_SECS", default_value_t = 900)]
    pub portal_ttl_secs: u64,
    /// A console session ends after this long without a request.
    #[arg(long, env = "LEDGER_CONSOLE_IDLE_SECS", default_value_t = 1800)]
    pub console_idle_secs: u64,
    /// A console session ends this long after sign-in, however active.
    #[arg(long, env = "LEDGER_CONSOLE_SESSION_MAX_SECS", default_value_t = 12 * 3600)]
    pub console_session_max_secs: u64,
    /// Failed console sign-ins per key id (and per address) in a 15-minute window.
    #[arg(long, env = "LEDGER_SIGNIN_FAILURES_MAX", default_value_t = 5)]
    pub signin_failures_max: u32,
    /// How long a node's lease on a background duty lasts unless renewed (renewed every
    /// third of it): the longest a dead leader's duty waits for another node.
    #[arg(long, env = "LEDGER_LEASE_TTL_MS", default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(300..))]
    pub lease_ttl_ms: u64,
    /// How long shutdown waits for background tasks (SPEC §11: exit within 30 s).
    #[arg(long, env = "LEDGER_SHUTDOWN_DEADLINE_SECS", default_value_t = 25)]
    pub shutdown_deadline_secs: u64,
    /// Pause between two passes of the periodic checks (chain verification from genesis,
    /// totals, samples) on projector nodes: each pass reads the whole log once.
    #[arg(long, env = "LEDGER_WATCH_INTERVAL_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub watch_interval_secs: u64,
    /// Longest the relay waits for JetStream to acknowledge a publish before retrying.
    #[arg(long, env = "LEDGER_PUBLISH_ACK_TIMEOUT_MS", default_value_t = 3_000)]
    pub publish_ack_timeout_ms: u64,
    /// The duplicate window of the stream the service creates (SPEC §11: at least 2 min):
    /// how long JetStream remembers an event id to drop a second publish of it.
    #[arg(long, env = "LEDGER_NATS_DUPLICATE_WINDOW_SECS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(120..))]
    pub nats_duplicate_window_secs: u64,
    /// Refunds (or expired payments) the refund (or expiry) driver takes per pass.
    #[arg(long, env = "LEDGER_DRIVER_BATCH_MAX", default_value_t = 100)]
    pub driver_batch_max: i64,
    /// Longest the refund and expiry drivers sleep between passes when nothing woke them.
    #[arg(long, env = "LEDGER_DRIVER_POLL_MS", default_value_t = 1_000)]
    pub driver_poll_ms: u64,
    /// First wait after an unknown refund or close outcome; it doubles per attempt up to
    /// LEDGER_REFUND_BACKOFF_MAX_SECS.
    #[arg(long, env = "LEDGER_REFUND_BACKOFF_BASE_MS", default_value_t = 1_000)]
    pub refund_backoff_base_ms: u64,
    /// Pause between two purges of expired nonces and idempotency answers.
    #[arg(long, env = "LEDGER_PURGE_INTERVAL_SECS", default_value_t = 600)]
    pub purge_interval_secs: u64,
    /// `/readyz` answers 503 while the read models trail the log by more events than this.
    #[arg(long, env = "LEDGER_READY_LAG_EVENTS_MAX", default_value_t = 10_000)]
    pub ready_lag_events_max: i64,
    /// Longest a TLS handshake may take (it runs off the accept path).
    #[arg(
        long,
        env = "LEDGER_TLS_HANDSHAKE_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub tls_handshake_timeout_ms: u64,
    /// The window failed console sign-ins are counted in (LEDGER_SIGNIN_FAILURES_MAX).
    #[arg(long, env = "LEDGER_SIGNIN_WINDOW_SECS", default_value_t = 15 * 60)]
    pub signin_window_secs: u64,
    /// Live console sessions one key may hold; signing in again ends the oldest.
    #[arg(
        long,
        env = "LEDGER_CONSOLE_SESSIONS_PER_KEY_MAX",
        default_value_t = 32
    )]
    pub console_sessions_per_key_max: i64,
    /// How long a sandbox pay page's one-time token stays usable.
    #[arg(long, env = "LEDGER_SANDBOX_TOKEN_TTL_SECS", default_value_t = 15 * 60)]
    pub sandbox_token_ttl_secs: i64,
    /// Longest the projector sleeps when neither the writer nor another node woke it.
    #[arg(long, env = "LEDGER_PROJECTOR_IDLE_POLL_MS", default_value_t = 200)]
    pub projector_idle_poll_ms: u64,
    /// How often a node that does not project re-reads the projector's position, in case a
    /// notification was lost (a reconnect).
    #[arg(long, env = "LEDGER_FOLLOW_POLL_MS", default_value_t = 1_000)]
    pub follow_poll_ms: u64,
    /// Committed batches the writer keeps for the local projector; a projector further
    /// behind reads the log instead.
    #[arg(long, env = "LEDGER_HANDOFF_BATCHES_MAX", default_value_t = 1024)]
    pub handoff_batches_max: usize,
    /// Lines a settlement file may have (`ledger reconcile`, the console's upload).
    #[arg(long, env = "LEDGER_SETTLEMENT_LINES_MAX", default_value_t = 5_000_000)]
    pub settlement_lines_max: usize,
    /// Largest answer read from a real gateway (Alipay, WeChat Pay).
    #[arg(long, env = "LEDGER_GATEWAY_ANSWER_BYTES_MAX", default_value_t = 64 * 1024)]
    pub gateway_answer_bytes_max: usize,
    /// WeChat Pay code URLs kept for checkout pages (2 h each).
    #[arg(long, env = "LEDGER_WECHAT_CODE_URLS_MAX", default_value_t = 100_000)]
    pub wechat_code_urls_max: u64,
}

impl Default for Limits {
    fn default() -> Self {
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            limits: Limits,
        }
        <Only as clap::Parser>::parse_from(["ledger"]).limits
    }
}

impl Limits {
    pub fn timestamp_window(&self) -> Duration {
        Duration::from_secs(self.timestamp_window_secs)
    }
    pub fn read_your_writes_wait(&self) -> Duration {
        Duration::from_millis(self.read_your_writes_wait_ms)
    }
    pub fn min_position_wait(&self) -> Duration {
        Duration::from_millis(self.min_position_wait_ms)
    }
    pub fn idempotency_wait(&self) -> Duration {
        Duration::from_millis(self.idempotency_wait_ms)
    }
    pub fn gateway_call_timeout(&self) -> Duration {
        Duration::from_millis(self.gateway_call_timeout_ms)
    }
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_millis(self.lease_ttl_ms)
    }
    pub fn shutdown_deadline(&self) -> Duration {
        Duration::from_secs(self.shutdown_deadline_secs)
    }
    pub fn watch_interval(&self) -> Duration {
        Duration::from_secs(self.watch_interval_secs)
    }
    pub fn driver_poll(&self) -> Duration {
        Duration::from_millis(self.driver_poll_ms)
    }
    pub fn refund_backoff_base(&self) -> Duration {
        Duration::from_millis(self.refund_backoff_base_ms)
    }
    pub fn refund_backoff_max(&self) -> Duration {
        Duration::from_secs(self.refund_backoff_max_secs)
    }
    pub fn purge_interval(&self) -> Duration {
        Duration::from_secs(self.purge_interval_secs)
    }
    pub fn signin_window(&self) -> Duration {
        Duration::from_secs(self.signin_window_secs)
    }
}

/// The environment, as clap reads it: every field typed, every field also an environment
/// variable. Secrets are `hide_env_values` so `--help` never prints them.
#[derive(clap::Args, Debug, Clone)]
pub struct RawConfig {
    /// PostgreSQL URL (postgres:// or postgresql://). The database is created and migrated at
    /// start if missing; TLS options in the URL (sslmode, sslrootcert) are honoured.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/ledger",
        value_parser = database_url
    )]
    pub database_url: String,
    /// NATS server URL (nats://, tls:// or ws://; several comma-separated for a cluster).
    /// `none` runs single-node with the in-process bus.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222", value_parser = nats_url)]
    pub nats_url: String,
    /// Address the API listens on, IP:PORT.
    #[arg(long, env = "LEDGER_BIND", default_value = "127.0.0.1:8080", value_parser = socket_addr("LEDGER_BIND"))]
    pub bind: SocketAddr,
    /// Subject prefix: events are published to {prefix}.payment.{event_type}. Tokens of
    /// [A-Za-z0-9_-] joined by dots.
    #[arg(long, env = "LEDGER_NATS_PREFIX", default_value = "ledger", value_parser = subject_prefix)]
    pub nats_prefix: String,
    /// JetStream stream, created if missing (duplicate window 2 min). 1-64 of [A-Za-z0-9_-].
    #[arg(long, env = "LEDGER_NATS_STREAM", default_value = "LEDGER_EVENTS", value_parser = stream_name)]
    pub nats_stream: String,
    /// Replicas of the JetStream stream, 1-5 (3 in a NATS cluster).
    #[arg(long, env = "LEDGER_NATS_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub nats_replicas: u8,
    /// API keys: key_id:secret:role[,…]; role client, operator, auditor, finance or admin; a
    /// client key may be bound to a merchant (key_id:secret:client:merchant, merchant 1-64
    /// printable characters); secrets of at least 8 characters; a key id may not be a gateway's
    /// name. Generated into LEDGER_DATA_DIR in development, required in production.
    #[arg(long, env = "LEDGER_API_KEYS", hide_env_values = true)]
    pub api_keys: Option<String>,
    /// Secrets of the signed-JSON gateways: method:secret[,…]; method alipay, wechat, bank or
    /// credit_card; secrets of at least 8 characters. Generated in development, required in
    /// production.
    #[arg(long, env = "LEDGER_GATEWAY_SECRETS", hide_env_values = true)]
    pub gateway_secrets: Option<String>,
    /// 64 hex characters (32 bytes): wraps each user's payer data key (AES-256-GCM).
    /// Generated in development, required in production.
    #[arg(long, env = "LEDGER_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<String>,
    /// 64 hex characters: the Ed25519 seed that signs audit digests. Generated in development,
    /// required in production.
    #[arg(long, env = "LEDGER_SIGNING_KEY", hide_env_values = true)]
    pub signing_key: Option<String>,
    /// How long an entry of the read cache lives, in seconds.
    #[arg(long, env = "LEDGER_CACHE_TTL_SECS", default_value_t = 1800)]
    pub cache_ttl_secs: u64,
    /// Entries the read cache holds (at least 1).
    #[arg(long, env = "LEDGER_CACHE_CAPACITY", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub cache_capacity: u64,
    /// development, test or production. `production` refuses to start without explicit keys
    /// and with the sandbox on.
    #[arg(long, env = "LEDGER_ENV", value_enum, default_value = "development")]
    pub env: Environment,
    /// Where generated development keys are kept (and `ledger demo`'s settlement file).
    #[arg(long, env = "LEDGER_DATA_DIR", default_value = ".ledger-data")]
    pub data_dir: PathBuf,
    /// Base URL members and clients reach this service at (payment_url, portal links); an
    /// http(s):// URL, default http://LEDGER_BIND (https:// with TLS).
    #[arg(long, env = "LEDGER_PUBLIC_URL", value_parser = public_url)]
    pub public_url: Option<String>,
    /// Connections in the database pool, 2-1000.
    #[arg(long, env = "LEDGER_DB_MAX_CONNECTIONS", default_value_t = 16, value_parser = clap::value_parser!(u32).range(2..=1000))]
    pub db_max_connections: u32,
    /// PEM certificate chain: with LEDGER_TLS_KEY, the API is served over TLS.
    #[arg(long, env = "LEDGER_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of LEDGER_TLS_CERT.
    #[arg(long, env = "LEDGER_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Pending payments fail with reason `expired` after this long (0 never expires them).
    #[arg(long, env = "LEDGER_PAYMENT_TTL_SECS", default_value_t = 1800)]
    pub payment_ttl_secs: u64,
    /// The sandbox gateway, on or off (on by default in development; refused in production).
    #[arg(long, env = "LEDGER_SANDBOX", value_enum)]
    pub sandbox: Option<SandboxMode>,
    /// The sandbox gateway's own signing secret, at least 8 characters (generated in
    /// development into LEDGER_DATA_DIR/sandbox.secret).
    #[arg(long, env = "LEDGER_SANDBOX_SECRET", hide_env_values = true)]
    pub sandbox_secret: Option<String>,
    /// A file the sandboxes of several nodes on one machine share their refund decisions
    /// through, so that a refund is decided once across them (a local cluster, its tests).
    #[arg(long, env = "LEDGER_SANDBOX_JOURNAL")]
    pub sandbox_journal: Option<PathBuf>,
    /// Peers whose `X-Forwarded-For` is believed: comma-separated addresses or CIDR blocks.
    #[arg(long, env = "LEDGER_TRUSTED_PROXIES", default_value = "", value_parser = trusted_proxies)]
    pub trusted_proxies: TrustedProxies,
    #[command(flatten, next_help_heading = "Alipay (real gateway)")]
    pub alipay: AlipayConfig,
    #[command(flatten, next_help_heading = "WeChat Pay (real gateway)")]
    pub wechat: WechatConfig,
    #[command(flatten, next_help_heading = "Limits")]
    pub limits: Limits,
}

/// Alipay (open platform, RSA2) as a real gateway. Alipay is real when LEDGER_ALIPAY_APP_ID is
/// set, and then every key file is required; otherwise the sandbox serves `alipay`.
#[derive(clap::Args, Debug, Clone)]
pub struct AlipayConfig {
    /// The app id of the merchant's Alipay open-platform app. Setting it makes `alipay` a real
    /// gateway: notifications are then taken only at /api/v1/gateways/alipay/notify/rsa2.
    #[arg(long, env = "LEDGER_ALIPAY_APP_ID", value_parser = alipay_app_id)]
    pub alipay_app_id: Option<String>,
    /// PEM file of the merchant's app private key (PKCS#8 or PKCS#1, RSA 2048+), which signs
    /// every request to Alipay.
    #[arg(long, env = "LEDGER_ALIPAY_PRIVATE_KEY_FILE")]
    pub alipay_private_key_file: Option<PathBuf>,
    /// PEM file of Alipay's public key (or its public-key certificate), which every answer and
    /// notification must be signed with.
    #[arg(long, env = "LEDGER_ALIPAY_PUBLIC_KEY_FILE")]
    pub alipay_public_key_file: Option<PathBuf>,
    /// Alipay's gateway: page-pay redirects and OpenAPI calls go there (an http(s) URL; the
    /// sandbox is https://openapi-sandbox.dl.alipaydev.com/gateway.do).
    #[arg(
        long,
        env = "LEDGER_ALIPAY_GATEWAY_URL",
        default_value = "https://openapi.alipay.com/gateway.do",
        value_parser = http_url("LEDGER_ALIPAY_GATEWAY_URL")
    )]
    pub alipay_gateway_url: String,
}

/// WeChat Pay API v3 as a real gateway. WeChat Pay is real when LEDGER_WECHAT_MCHID is set,
/// and then every other setting but the base URL is required; otherwise the sandbox serves
/// `wechat`.
#[derive(clap::Args, Clone)]
pub struct WechatConfig {
    /// The merchant number (1-32 digits). Setting it makes `wechat` a real gateway:
    /// notifications are then taken only at /api/v1/gateways/wechat/notify/v3.
    #[arg(long, env = "LEDGER_WECHAT_MCHID", value_parser = wechat_mchid)]
    pub wechat_mchid: Option<String>,
    /// The app id (appid) orders are placed for.
    #[arg(long, env = "LEDGER_WECHAT_APPID")]
    pub wechat_appid: Option<String>,
    /// The APIv3 key set in the merchant platform: exactly 32 printable ASCII characters. It
    /// decrypts notifications.
    #[arg(long, env = "LEDGER_WECHAT_APIV3_KEY", hide_env_values = true)]
    pub wechat_apiv3_key: Option<String>,
    /// PEM file of the merchant's API private key (apiclient_key.pem), which signs every request.
    #[arg(long, env = "LEDGER_WECHAT_PRIVATE_KEY_FILE")]
    pub wechat_private_key_file: Option<PathBuf>,
    /// Serial number of the merchant's API certificate (upper-case hex), sent with every
    /// request so WeChat Pay knows which key signed it.
    #[arg(long, env = "LEDGER_WECHAT_CERT_SERIAL")]
    pub wechat_cert_serial: Option<String>,
    /// WeChat Pay's platform keys: serial:file[,…], each file a PEM public key (the serial is
    /// its PUB_KEY_ID_…) or a platform certificate. Answers and notifications must be signed
    /// by one of them; list two while WeChat Pay rotates its key.
    #[arg(long, env = "LEDGER_WECHAT_PLATFORM_KEYS")]
    pub wechat_platform_keys: Option<String>,
    /// WeChat Pay's API base URL (an http(s) URL).
    #[arg(
        long,
        env = "LEDGER_WECHAT_BASE_URL",
        default_value = "https://api.mch.weixin.qq.com",
        value_parser = http_url("LEDGER_WECHAT_BASE_URL")
    )]
    pub wechat_base_url: String,
}

impl std::fmt::Debug for WechatConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The APIv3 key is a secret: shown only as set or not.
        f.debug_struct("WechatConfig")
            .field("wechat_mchid", &self.wechat_mchid)
            .field("wechat_appid", &self.wechat_appid)
            .field(
                "wechat_apiv3_key",
                &self.wechat_apiv3_key.as_ref().map(|_| "[set]"),
            )
            .field("wechat_private_key_file", &self.wechat_private_key_file)
            .field("wechat_cert_serial", &self.wechat_cert_serial)
            .field("wechat_platform_keys", &self.wechat_platform_keys)
            .field("wechat_base_url", &self.wechat_base_url)
            .finish()
    }
}

/// Alipay as the real gateway of `alipay`, resolved: ids checked, keys parsed. Keys never
/// show in `Debug` (the key types print only their size).
#[derive(Debug, Clone)]
pub struct AlipaySettings {
    pub app_id: String,
    pub private_key: ledger_wire::keys::PrivateKey,
    pub alipay_public_key: ledger_wire::keys::PublicKey,
    pub gateway_url: String,
}

/// WeChat Pay as the real gateway of `wechat`, resolved.
#[derive(Debug, Clone)]
pub struct WechatSettings {
    pub mchid: String,
    pub appid: String,
    pub apiv3_key: ledger_wire::wechat::ApiV3Key,
    pub private_key: ledger_wire::keys::PrivateKey,
    pub cert_serial: String,
    pub platform_keys: ledger_wire::wechat::PlatformKeys,
    pub base_url: String,
}

fn alipay_app_id(text: &str) -> Result<String, String> {
    let text = text.trim();
    if !text.is_empty() && text.len() <= 32 && text.bytes().all(|b| b.is_ascii_digit()) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "LEDGER_ALIPAY_APP_ID: {text:?} is not an Alipay app id (1-32 digits)"
        ))
    }
}

fn wechat_mchid(text: &str) -> Result<String, String> {
    let text = text.trim();
    if !text.is_empty() && text.len() <= 32 && text.bytes().all(|b| b.is_ascii_digit()) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "LEDGER_WECHAT_MCHID: {text:?} is not a merchant number (1-32 digits)"
        ))
    }
}

fn http_url(setting: &'static str) -> impl Fn(&str) -> Result<String, String> + Clone {
    move |text| {
        let ok = (text.starts_with("http://") || text.starts_with("https://"))
            && text.len() > "https://".len()
            && text.bytes().all(|b| b.is_ascii_graphic());
        if ok {
            Ok(text.trim_end_matches('/').to_owned())
        } else {
            Err(format!("{setting}: {text:?} is not an http(s) URL"))
        }
    }
}

/// Reads a key file named by `setting`; the error names the setting and the file, never the
/// key.
fn key_file(setting: &'static str, path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map_err(|e| bad(setting, format!("cannot read {}: {e}", path.display())))
}

fn private_key(
    setting: &'static str,
    path: &Path,
) -> Result<ledger_wire::keys::PrivateKey, ConfigError> {
    ledger_wire::keys::PrivateKey::parse(&key_file(setting, path)?).map_err(|e| {
        bad(
            setting,
            format!("{} is not an RSA private key: {e}", path.display()),
        )
    })
}

fn public_key(
    setting: &'static str,
    path: &Path,
) -> Result<ledger_wire::keys::PublicKey, ConfigError> {
    ledger_wire::keys::PublicKey::parse(&key_file(setting, path)?).map_err(|e| {
        bad(
            setting,
            format!(
                "{} is not an RSA public key or certificate: {e}",
                path.display()
            ),
        )
    })
}

impl AlipayConfig {
    /// `None` (the sandbox) when no Alipay setting is given; the real gateway when the app id
    /// and both key files are; otherwise the error names the missing setting.
    pub fn resolve(&self) -> Result<Option<AlipaySettings>, ConfigError> {
        let Some(app_id) = &self.alipay_app_id else {
            if self.alipay_private_key_file.is_some() || self.alipay_public_key_file.is_some() {
                return Err(bad(
                    "LEDGER_ALIPAY_APP_ID",
                    "required when an Alipay key file is set (Alipay is real only with its app id)",
                ));
            }
            return Ok(None);
        };
        let required =
            |setting: &'static str| bad(setting, "required when LEDGER_ALIPAY_APP_ID is set");
        let private = self
            .alipay_private_key_file
            .as_deref()
            .ok_or_else(|| required("LEDGER_ALIPAY_PRIVATE_KEY_FILE"))?;
        let public = self
            .alipay_public_key_file
            .as_deref()
            .ok_or_else(|| required("LEDGER_ALIPAY_PUBLIC_KEY_FILE"))?;
        Ok(Some(AlipaySettings {
            app_id: app_id.clone(),
            private_key: private_key("LEDGER_ALIPAY_PRIVATE_KEY_FILE", private)?,
            alipay_public_key: public_key("LEDGER_ALIPAY_PUBLIC_KEY_FILE", public)?,
            gateway_url: self.alipay_gateway_url.clone(),
        }))
    }
}

impl WechatConfig {
    /// `None` (the sandbox) when no WeChat Pay setting is given; the real gateway when the
    /// merchant number and every other setting are; otherwise the error names the missing one.
    pub fn resolve(&self) -> Result<Option<WechatSettings>, ConfigError> {
        let Some(mchid) = &self.wechat_mchid else {
            let any = self.wechat_appid.is_some()
                || self.wechat_apiv3_key.is_some()
                || self.wechat_private_key_file.is_some()
                || self.wechat_cert_serial.is_some()
                || self.wechat_platform_keys.is_some();
            if any {
                return Err(bad(
                    "LEDGER_WECHAT_MCHID",
                    "required when another LEDGER_WECHAT_* setting is set (WeChat Pay is real only with its merchant number)",
                ));
            }
            return Ok(None);
        };
        let required =
            |setting: &'static str| bad(setting, "required when LEDGER_WECHAT_MCHID is set");
        let appid = self
            .wechat_appid
            .as_deref()
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .ok_or_else(|| required("LEDGER_WECHAT_APPID"))?;
        if appid.len() > 32 || !appid.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(bad(
                "LEDGER_WECHAT_APPID",
                "must be 1-32 ASCII letters and digits",
            ));
        }
        let apiv3 = self
            .wechat_apiv3_key
            .as_deref()
            .ok_or_else(|| required("LEDGER_WECHAT_APIV3_KEY"))?;
        // The error never repeats the key.
        let apiv3_key = ledger_wire::wechat::ApiV3Key::new(apiv3).map_err(|_| {
            bad(
                "LEDGER_WECHAT_APIV3_KEY",
                "must be exactly 32 printable ASCII characters",
            )
        })?;
        let private = self
            .wechat_private_key_file
            .as_deref()
            .ok_or_else(|| required("LEDGER_WECHAT_PRIVATE_KEY_FILE"))?;
        let cert_serial = self
            .wechat_cert_serial
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| required("LEDGER_WECHAT_CERT_SERIAL"))?;
        if cert_serial.len() > 64 || !cert_serial.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(bad(
                "LEDGER_WECHAT_CERT_SERIAL",
                "must be the certificate's serial number in hex (1-64 letters and digits)",
            ));
        }
        let platform = self
            .wechat_platform_keys
            .as_deref()
            .ok_or_else(|| required("LEDGER_WECHAT_PLATFORM_KEYS"))?;
        Ok(Some(WechatSettings {
            mchid: mchid.clone(),
            appid: appid.to_owned(),
            apiv3_key,
            private_key: private_key("LEDGER_WECHAT_PRIVATE_KEY_FILE", private)?,
            cert_serial: cert_serial.to_owned(),
            platform_keys: parse_platform_keys(platform)?,
            base_url: self.wechat_base_url.clone(),
        }))
    }
}

/// `serial:file[,…]`: each file a PEM public key, or a certificate (whose own serial must then
/// be the one given).
pub fn parse_platform_keys(text: &str) -> Result<ledger_wire::wechat::PlatformKeys, ConfigError> {
    const SETTING: &str = "LEDGER_WECHAT_PLATFORM_KEYS";
    let mut keys = ledger_wire::wechat::PlatformKeys::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((serial, file)) = entry.split_once(':') else {
            return Err(bad(SETTING, "each entry must be serial:file"));
        };
        let serial = serial.trim();
        if serial.is_empty()
            || serial.len() > 64
            || !serial
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(bad(
                SETTING,
                format!("{serial:?} is not a serial (1-64 of [A-Za-z0-9_])"),
            ));
        }
        let path = Path::new(file.trim());
        let text = key_file(SETTING, path)?;
        if text.contains("BEGIN CERTIFICATE") {
            let cert = ledger_wire::keys::Certificate::parse_pem(&text).map_err(|e| {
                bad(
                    SETTING,
                    format!("{} is not a certificate: {e}", path.display()),
                )
            })?;
            if !cert.serial_hex.eq_ignore_ascii_case(serial) {
                return Err(bad(
                    SETTING,
                    format!(
                        "{} has serial {}, not {serial}",
                        path.display(),
                        cert.serial_hex
                    ),
                ));
            }
            keys.insert(serial, cert.public_key);
        } else {
            keys.insert(serial, public_key(SETTING, path)?);
        }
    }
    if keys.is_empty() {
        return Err(bad(SETTING, "no platform key given"));
    }
    Ok(keys)
}

impl Default for RawConfig {
    /// The defaults (and whatever the environment sets), as `ledger` with no flags reads them.
    fn default() -> Self {
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            config: RawConfig,
        }
        <Only as clap::Parser>::parse_from(["ledger"]).config
    }
}

/// Addresses and blocks whose `X-Forwarded-For` the service believes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrustedProxies(pub Vec<ipnet::IpNet>);

impl TrustedProxies {
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(&ip))
    }
}

fn trusted_proxies(text: &str) -> Result<TrustedProxies, String> {
    text.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<ipnet::IpNet>()
                .or_else(|_| t.parse::<IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    format!("LEDGER_TRUSTED_PROXIES: {t:?} is not an IP address or CIDR block")
                })
        })
        .collect::<Result<_, _>>()
        .map(TrustedProxies)
}

fn database_url(text: &str) -> Result<String, String> {
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        Ok(text.to_owned())
    } else {
        Err("DATABASE_URL: must be a postgres:// URL".into())
    }
}

fn nats_url(text: &str) -> Result<String, String> {
    match text.trim() {
        "" | "none" => Ok("none".into()),
        url if url.split(',').all(|u| {
            ["nats://", "tls://", "ws://"]
                .iter()
                .any(|s| u.trim().starts_with(s))
        }) =>
        {
            Ok(url.to_owned())
        }
        other => Err(format!(
            "NATS_URL: {other:?} is not a nats:// URL (or several, comma-separated) or none"
        )),
    }
}

fn socket_addr(setting: &'static str) -> impl Fn(&str) -> Result<SocketAddr, String> + Clone {
    move |text| {
        text.parse()
            .map_err(|_| format!("{setting}: {text:?} is not an address like 127.0.0.1:8080"))
    }
}

fn subject_prefix(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text.split('.').all(|t| {
            !t.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
    if ok {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "LEDGER_NATS_PREFIX: {text:?} is not a valid NATS subject prefix (tokens of [A-Za-z0-9_-] joined by dots)"
        ))
    }
}

fn stream_name(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text.len() <= 64
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "LEDGER_NATS_STREAM: {text:?} is not a valid JetStream stream name (1-64 of [A-Za-z0-9_-])"
        ))
    }
}

fn public_url(text: &str) -> Result<String, String> {
    if text.starts_with("http://") || text.starts_with("https://") {
        Ok(text.trim_end_matches('/').to_owned())
    } else {
        Err(format!("LEDGER_PUBLIC_URL: {text:?} is not an http(s) URL"))
    }
}

#[derive(Debug, Clone)]
pub struct NatsSettings {
    /// One or more server URLs (comma-separated in `NATS_URL`): any reachable one is used.
    pub url: String,
    pub prefix: String,
    pub stream: String,
    pub replicas: u8,
    /// LEDGER_PUBLISH_ACK_TIMEOUT_MS.
    pub ack_timeout: Duration,
    /// LEDGER_NATS_DUPLICATE_WINDOW_SECS.
    pub duplicate_window: Duration,
}

/// The resolved configuration.
#[derive(Clone)]
pub struct Settings {
    pub database_url: String,
    pub nats: Option<NatsSettings>,
    pub bind: SocketAddr,
    pub api_keys: HashMap<String, ApiKey>,
    /// Secrets of the gateways that speak the signed JSON of SPEC §6.
    pub gateway_secrets: HashMap<PaymentMethod, String>,
    pub master_key: MasterKey,
    pub signing_key: SigningKey,
    pub cache_ttl: Duration,
    pub cache_capacity: u64,
    pub production: bool,
    pub public_url: String,
    pub db_max_connections: u32,
    pub limits: Limits,
    /// TLS for the API, when LEDGER_TLS_CERT and LEDGER_TLS_KEY are set.
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// Pending payments expire after this (None: never).
    pub payment_ttl: Option<Duration>,
    /// The sandbox gateway's secret when the sandbox runs.
    pub sandbox_secret: Option<String>,
    /// The sandbox's shared journal (LEDGER_SANDBOX_JOURNAL), opened.
    pub sandbox_journal: Option<crate::gateway::journal::Journal>,
    pub trusted_proxies: TrustedProxies,
    /// Alipay as a real gateway (None: the sandbox serves `alipay`).
    pub alipay: Option<AlipaySettings>,
    /// WeChat Pay as a real gateway (None: the sandbox serves `wechat`).
    pub wechat: Option<WechatSettings>,
}

/// A start-up error: one line naming the setting.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {problem}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub problem: String,
}

pub(crate) fn bad(setting: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        setting,
        problem: problem.into(),
    }
}

impl RawConfig {
    /// Whether `method` is served by its real gateway: its identifying setting (Alipay's app
    /// id, WeChat Pay's merchant number) is given — `resolve` then insists on the rest. The
    /// other methods are always the sandbox's.
    pub fn real_gateway(&self, method: crate::domain::PaymentMethod) -> bool {
        use crate::domain::PaymentMethod;
        match method {
            PaymentMethod::Alipay => self.alipay.alipay_app_id.is_some(),
            PaymentMethod::Wechat => self.wechat.wechat_mchid.is_some(),
            _ => false,
        }
    }

    /// The settings as environment variables, for a child process (`ledger bench`).
    pub fn to_env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("DATABASE_URL", self.database_url.clone()),
            ("NATS_URL", self.nats_url.clone()),
            ("LEDGER_BIND", self.bind.to_string()),
            ("LEDGER_NATS_PREFIX", self.nats_prefix.clone()),
            ("LEDGER_NATS_STREAM", self.nats_stream.clone()),
            ("LEDGER_CACHE_TTL_SECS", self.cache_ttl_secs.to_string()),
            ("LEDGER_CACHE_CAPACITY", self.cache_capacity.to_string()),
            ("LEDGER_DATA_DIR", self.data_dir.display().to_string()),
            (
                "LEDGER_DB_MAX_CONNECTIONS",
                self.db_max_connections.to_string(),
            ),
        ];
        let optional = [
            ("LEDGER_API_KEYS", &self.api_keys),
            ("LEDGER_GATEWAY_SECRETS", &self.gateway_secrets),
            ("LEDGER_MASTER_KEY", &self.master_key),
            ("LEDGER_SIGNING_KEY", &self.signing_key),
            ("LEDGER_PUBLIC_URL", &self.public_url),
        ];
        env.extend(
            optional
                .into_iter()
                .filter_map(|(k, v)| v.clone().map(|v| (k, v))),
        );
        env
    }

    pub fn production(&self) -> bool {
        self.env == Environment::Production
    }

    /// Checks what spans several settings, parses the keys, and generates development keys
    /// where allowed.
    pub fn resolve(&self) -> Result<Settings, ConfigError> {
        let production = self.production();
        let nats = match self.nats_url.as_str() {
            "none" => None,
            url => Some(NatsSettings {
                url: url.to_owned(),
                prefix: self.nats_prefix.clone(),
                stream: self.nats_stream.clone(),
                replicas: self.nats_replicas,
                ack_timeout: Duration::from_millis(self.limits.publish_ack_timeout_ms),
                duplicate_window: Duration::from_secs(self.limits.nats_duplicate_window_secs),
            }),
        };
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(crate::tls::load(cert, key)?),
            (None, None) => None,
            (Some(_), None) => {
                return Err(bad("LEDGER_TLS_KEY", "must be set with LEDGER_TLS_CERT"))
            }
            (None, Some(_)) => {
                return Err(bad("LEDGER_TLS_CERT", "must be set with LEDGER_TLS_KEY"))
            }
        };
        let sandbox = self.sandbox.unwrap_or(if production {
            SandboxMode::Off
        } else {
            SandboxMode::On
        });
        if production && sandbox == SandboxMode::On {
            return Err(bad(
                "LEDGER_SANDBOX",
                "the sandbox gateway cannot run with LEDGER_ENV=production (anyone could mark payments paid)",
            ));
        }

        // Before any development key is generated: a half-configured gateway stops start-up.
        let alipay = self.alipay.resolve()?;
        let wechat = self.wechat.resolve()?;

        let dev = DevKeys::new(&self.data_dir);
        let required = |setting: &'static str| bad(setting, "required when LEDGER_ENV=production");
        let api_keys = match &self.api_keys {
            Some(text) => parse_api_keys(text)?,
            None if production => return Err(required("LEDGER_API_KEYS")),
            None => parse_api_keys(&dev.api_keys()?)?,
        };
        let gateway_secrets = match &self.gateway_secrets {
            Some(text) => parse_gateway_secrets(text)?,
            None if production => return Err(required("LEDGER_GATEWAY_SECRETS")),
            None => parse_gateway_secrets(&dev.gateway_secrets()?)?,
        };
        let master_key = match &self.master_key {
            Some(text) => MasterKey::from_hex(text.trim()).map_err(|e| {
                bad(
                    "LEDGER_MASTER_KEY",
                    format!("{e} (expected 64 hex characters)"),
                )
            })?,
            None if production => return Err(required("LEDGER_MASTER_KEY")),
            None => MasterKey::from_hex(&dev.key("master.key", "LEDGER_MASTER_KEY", || {
                MasterKey::generate().to_hex()
            })?)
            .map_err(|e| {
                bad(
                    "LEDGER_MASTER_KEY",
                    format!("generated key file is corrupt: {e}"),
                )
            })?,
        };
        let signing_key = match &self.signing_key {
            Some(text) => SigningKey::from_hex(text.trim()).map_err(|e| {
                bad(
                    "LEDGER_SIGNING_KEY",
                    format!("{e} (expected 64 hex characters)"),
                )
            })?,
            None if production => return Err(required("LEDGER_SIGNING_KEY")),
            None => SigningKey::from_hex(&dev.key("signing.key", "LEDGER_SIGNING_KEY", || {
                SigningKey::generate().to_hex()
            })?)
            .map_err(|e| {
                bad(
                    "LEDGER_SIGNING_KEY",
                    format!("generated key file is corrupt: {e}"),
                )
            })?,
        };
        let sandbox_secret = match (sandbox, &self.sandbox_secret) {
            (SandboxMode::Off, _) => None,
            (SandboxMode::On, Some(s)) => Some(check_secret("LEDGER_SANDBOX_SECRET", s)?),
            (SandboxMode::On, None) => {
                Some(dev.key("sandbox.secret", "LEDGER_SANDBOX_SECRET", new_nonce)?)
            }
        };
        let sandbox_journal =
            match &self.sandbox_journal {
                Some(path) => Some(crate::gateway::journal::Journal::open(path).map_err(|e| {
                    bad("LEDGER_SANDBOX_JOURNAL", format!("{}: {e}", path.display()))
                })?),
                None => None,
            };
        let public_url = match &self.public_url {
            Some(u) => u.clone(),
            None if tls.is_some() => format!("https://{}", self.bind),
            None => format!("http://{}", self.bind),
        };
        Ok(Settings {
            database_url: self.database_url.clone(),
            nats,
            bind: self.bind,
            api_keys,
            gateway_secrets,
            master_key,
            signing_key,
            cache_ttl: Duration::from_secs(self.cache_ttl_secs),
            cache_capacity: self.cache_capacity,
            production,
            public_url,
            db_max_connections: self.db_max_connections,
            tls,
            limits: self.limits.clone(),
            payment_ttl: (self.payment_ttl_secs > 0)
                .then(|| Duration::from_secs(self.payment_ttl_secs)),
            sandbox_secret,
            sandbox_journal,
            trusted_proxies: self.trusted_proxies.clone(),
            alipay,
            wechat,
        })
    }
}

fn check_secret(setting: &'static str, secret: &str) -> Result<String, ConfigError> {
    if secret.chars().count() < SECRET_CHARS_MIN {
        return Err(bad(
            setting,
            format!("must have at least {SECRET_CHARS_MIN} characters"),
        ));
    }
    Ok(secret.to_owned())
}

/// `key_id:secret:role[:merchant],…`
pub fn parse_api_keys(text: &str) -> Result<HashMap<String, ApiKey>, ConfigError> {
    let mut keys = HashMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let mut parts = entry.splitn(4, ':');
        let (Some(key_id), Some(secret), Some(role)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad(
                "LEDGER_API_KEYS",
                "each entry must be key_id:secret:role or key_id:secret:client:merchant",
            ));
        };
        let merchant = parts.next().map(str::trim).map(str::to_owned);
        let role = Role::parse(role.trim()).ok_or_else(|| {
            bad("LEDGER_API_KEYS", format!("key {key_id:?} has unknown role {role:?} (client, operator, auditor, finance, admin)"))
        })?;
        if key_id.is_empty() || secret.chars().count() < SECRET_CHARS_MIN {
            return Err(bad(
                "LEDGER_API_KEYS",
                format!("key {key_id:?} needs a key id and a secret of at least {SECRET_CHARS_MIN} characters"),
            ));
        }
        match &merchant {
            Some(_) if role != Role::Client => {
                return Err(bad(
                    "LEDGER_API_KEYS",
                    format!("key {key_id:?}: only client keys can be bound to a merchant"),
                ))
            }
            Some(m) if m.is_empty() || m.len() > 64 || m.chars().any(char::is_control) => {
                return Err(bad(
                    "LEDGER_API_KEYS",
                    format!("key {key_id:?}: the merchant must be 1 to 64 printable characters"),
                ))
            }
            _ => {}
        }
        if PaymentMethod::parse(key_id).is_some() {
            return Err(bad(
                "LEDGER_API_KEYS",
                format!("key id {key_id:?} is reserved for the gateway"),
            ));
        }
        let previous = keys.insert(
            key_id.to_owned(),
            ApiKey {
                key_id: key_id.to_owned(),
                secret: secret.to_owned(),
                role,
                merchant,
            },
        );
        if previous.is_some() {
            return Err(bad(
                "LEDGER_API_KEYS",
                format!("key id {key_id:?} appears twice"),
            ));
        }
    }
    if keys.is_empty() {
        return Err(bad("LEDGER_API_KEYS", "no keys given"));
    }
    Ok(keys)
}

/// `method:secret,…`
pub fn parse_gateway_secrets(text: &str) -> Result<HashMap<PaymentMethod, String>, ConfigError> {
    let mut secrets = HashMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((method, secret)) = entry.split_once(':') else {
            return Err(bad(
                "LEDGER_GATEWAY_SECRETS",
                "each entry must be method:secret",
            ));
        };
        let method = PaymentMethod::parse(method.trim()).ok_or_else(|| {
            bad(
                "LEDGER_GATEWAY_SECRETS",
                format!("unknown method {method:?} (alipay, wechat, bank, credit_card)"),
            )
        })?;
        if secret.chars().count() < SECRET_CHARS_MIN {
            return Err(bad(
                "LEDGER_GATEWAY_SECRETS",
                format!("the secret of {method} must have at least {SECRET_CHARS_MIN} characters"),
            ));
        }
        secrets.insert(method, secret.to_owned());
    }
    Ok(secrets)
}

/// Development keys generated once into the data directory and reused after.
struct DevKeys<'a> {
    dir: &'a Path,
}

impl<'a> DevKeys<'a> {
    fn new(dir: &'a Path) -> Self {
        Self { dir }
    }

    fn key(
        &self,
        file: &str,
        setting: &'static str,
        generate: impl FnOnce() -> String,
    ) -> Result<String, ConfigError> {
        let path = self.dir.join(file);
        if let Ok(text) = std::fs::read_to_string(&path) {
            return Ok(text.trim().to_owned());
        }
        let value = generate();
        self.write(&path, &value, setting)?;
        tracing::warn!(setting, path = %path.display(), "no {setting} configured: generated a development key (never do this in production)");
        eprintln!(
            "warning: {setting} not set; generated a development key in {}",
            path.display()
        );
        Ok(value)
    }

    fn api_keys(&self) -> Result<String, ConfigError> {
        let path = self.dir.join("api-keys");
        if let Ok(text) = std::fs::read_to_string(&path) {
            return Ok(text.trim().to_owned());
        }
        let keys: Vec<String> = ["admin", "client", "operator", "auditor", "finance"]
            .iter()
            .map(|role| format!("dev-{role}:{}:{role}", new_nonce()))
            .collect();
        let text = keys.join(",");
        self.write(&path, &text, "LEDGER_API_KEYS")?;
        let admin_secret = keys[0].split(':').nth(1).unwrap_or_default();
        let env_file = self.dir.join("credentials.env");
        let env_text = format!("LEDGER_KEY_ID=dev-admin\nLEDGER_SECRET={admin_secret}\n");
        self.write(&env_file, &env_text, "LEDGER_API_KEYS")?;
        eprintln!(
            "No LEDGER_API_KEYS configured: generated development credentials (shown once, kept in {}):",
            path.display()
        );
        for k in &keys {
            eprintln!("  {k}");
        }
        eprintln!(
            "`ledger api` uses dev-admin from {} when LEDGER_KEY_ID/LEDGER_SECRET are unset.",
            env_file.display()
        );
        Ok(text)
    }

    fn gateway_secrets(&self) -> Result<String, ConfigError> {
        self.key("gateway-secrets", "LEDGER_GATEWAY_SECRETS", || {
            PaymentMethod::ALL
                .iter()
                .map(|m| format!("{}:{}", m.name(), new_nonce()))
                .collect::<Vec<_>>()
                .join(",")
        })
    }

    fn write(&self, path: &Path, value: &str, setting: &'static str) -> Result<(), ConfigError> {
        std::fs::create_dir_all(self.dir).map_err(|e| {
            bad(
                setting,
                format!("cannot create data directory {}: {e}", self.dir.display()),
            )
        })?;
        write_private(path, value)
            .map_err(|e| bad(setting, format!("cannot write {}: {e}", path.display())))
    }
}

#[cfg(unix)]
fn write_private(path: &Path, value: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(value.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, value: &str) -> std::io::Result<()> {
    std::fs::write(path, value)
}

/// Reads `LEDGER_KEY_ID`/`LEDGER_SECRET` for the `ledger api` client, falling back to the
/// development credentials file.
pub fn client_credentials(data_dir: &Path) -> Option<(String, String)> {
    if let (Ok(k), Ok(s)) = (
        std::env::var("LEDGER_KEY_ID"),
        std::env::var("LEDGER_SECRET"),
    ) {
        return Some((k, s));
    }
    let text = std::fs::read_to_string(data_dir.join("credentials.env")).ok()?;
    let mut key = None;
    let mut secret = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("LEDGER_KEY_ID=") {
            key = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("LEDGER_SECRET=") {
            secret = Some(v.to_owned());
        }
    }
    Some((key?, secret?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn a_method_is_real_exactly_when_its_identifying_setting_is_given() {
        use crate::domain::PaymentMethod;
        let mut raw = RawConfig::default();
        assert!(PaymentMethod::ALL.iter().all(|m| !raw.real_gateway(*m)));
        raw.alipay.alipay_app_id = Some("2021000000000000".into());
        raw.wechat.wechat_mchid = Some("1900000001".into());
        let real: Vec<_> = PaymentMethod::ALL
            .iter()
            .filter(|m| raw.real_gateway(**m))
            .collect();
        assert_eq!(real, [&PaymentMethod::Alipay, &PaymentMethod::Wechat]);
    }

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: RawConfig,
    }

    fn parse(args: &[&str]) -> Result<RawConfig, String> {
        let mut all = vec!["ledger"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all)
            .map(|c| c.config)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn api_keys_parse_with_roles_and_merchants() {
        let keys =
            parse_api_keys("a:secret123:client, b:secret456:admin, m:secret789:client:shop-1")
                .unwrap();
        assert_eq!(keys["a"].role, Role::Client);
        assert_eq!(keys["b"].role, Role::Admin);
        assert_eq!(keys["m"].merchant.as_deref(), Some("shop-1"));
        assert!(parse_api_keys("x:secret123:operator:shop").is_err());
    }

    #[test]
    fn malformed_settings_name_the_variable() {
        let e = parse_api_keys("a:secret123:king").unwrap_err();
        assert!(e.to_string().starts_with("LEDGER_API_KEYS:"), "{e}");
        let e = parse_gateway_secrets("paypal:secret123").unwrap_err();
        assert!(e.to_string().starts_with("LEDGER_GATEWAY_SECRETS:"), "{e}");
        let e = parse(&["--bind", "nowhere"]).unwrap_err();
        assert!(e.contains("LEDGER_BIND:"), "{e}");
        let e = parse(&["--cache-ttl-secs", "soon"]).unwrap_err();
        assert!(e.contains("cache-ttl-secs"), "{e}");
        let e = parse(&["--trusted-proxies", "10.0.0.0/8,lan"]).unwrap_err();
        assert!(e.contains("LEDGER_TRUSTED_PROXIES:"), "{e}");
        let e = parse(&["--nats-url", "http://x"]).unwrap_err();
        assert!(e.contains("NATS_URL:"), "{e}");
    }

    #[test]
    fn production_refuses_to_start_without_explicit_keys_or_with_the_sandbox() {
        let mut raw = test_raw();
        raw.env = Environment::Production;
        raw.api_keys = None;
        assert!(raw
            .resolve()
            .err()
            .unwrap()
            .to_string()
            .starts_with("LEDGER_API_KEYS:"));
        let mut raw = test_raw();
        raw.env = Environment::Production;
        raw.sandbox = Some(SandboxMode::Off);
        raw.master_key = None;
        assert!(raw
            .resolve()
            .err()
            .unwrap()
            .to_string()
            .starts_with("LEDGER_MASTER_KEY:"));
        let mut raw = test_raw();
        raw.env = Environment::Production;
        raw.sandbox = Some(SandboxMode::On);
        assert!(raw
            .resolve()
            .err()
            .unwrap()
            .to_string()
            .starts_with("LEDGER_SANDBOX:"));
        let mut raw = test_raw();
        raw.env = Environment::Production;
        raw.sandbox = None;
        assert!(raw.resolve().unwrap().sandbox_secret.is_none());
    }

    #[test]
    fn every_limit_can_be_set_from_its_flag_and_keeps_its_default_otherwise() {
        let raw = parse(&["--writer-batch-max", "7", "--page-size-max", "50"]).unwrap();
        assert_eq!(raw.limits.writer_batch_max, 7);
        assert_eq!(raw.limits.page_size_max, 50);
        assert_eq!(raw.limits.body_bytes_max, 64 * 1024);
    }

    #[test]
    fn trusted_proxies_accept_addresses_and_blocks() {
        let raw = parse(&["--trusted-proxies", "10.0.0.0/8, 192.168.1.7"]).unwrap();
        assert!(raw.trusted_proxies.contains("10.1.2.3".parse().unwrap()));
        assert!(raw.trusted_proxies.contains("192.168.1.7".parse().unwrap()));
        assert!(!raw.trusted_proxies.contains("192.168.1.8".parse().unwrap()));
    }

    fn test_raw() -> RawConfig {
        RawConfig {
            database_url: "postgres://postgres@127.0.0.1:5432/x".into(),
            nats_url: "none".into(),
            api_keys: Some("k:secret123:admin".into()),
            gateway_secrets: Some("alipay:secret123".into()),
            master_key: Some("11".repeat(32)),
            signing_key: Some("22".repeat(32)),
            env: Environment::Development,
            data_dir: std::env::temp_dir().join("ledger-config-test"),
            sandbox_secret: Some("sandbox-secret".into()),
            ..RawConfig::default()
        }
    }
}
