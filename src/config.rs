//! Configuration from the environment (SPEC §9), resolved once at start-up.
//!
//! Every setting is read as text by clap and then parsed here, so that a malformed value stops
//! start-up with one line naming the environment variable. Every limit and timeout lives here
//! with its default and the reason for it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::crypto::digest::SigningKey;
use crate::crypto::payer::MasterKey;
use crate::crypto::signing::new_nonce;
use crate::domain::PaymentMethod;

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
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("key_id", &self.key_id)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// The environment, as clap reads it. Everything is text until `resolve`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RawConfig {
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/ledger"
    )]
    pub database_url: String,
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    #[arg(long, env = "LEDGER_BIND", default_value = "127.0.0.1:8080")]
    pub bind: String,
    #[arg(long, env = "LEDGER_NATS_PREFIX", default_value = "ledger")]
    pub nats_prefix: String,
    #[arg(long, env = "LEDGER_NATS_STREAM", default_value = "LEDGER_EVENTS")]
    pub nats_stream: String,
    #[arg(long, env = "LEDGER_API_KEYS", hide_env_values = true)]
    pub api_keys: Option<String>,
    #[arg(long, env = "LEDGER_GATEWAY_SECRETS", hide_env_values = true)]
    pub gateway_secrets: Option<String>,
    #[arg(long, env = "LEDGER_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<String>,
    #[arg(long, env = "LEDGER_SIGNING_KEY", hide_env_values = true)]
    pub signing_key: Option<String>,
    #[arg(long, env = "LEDGER_CACHE_TTL_SECS", default_value = "1800")]
    pub cache_ttl_secs: String,
    #[arg(long, env = "LEDGER_CACHE_CAPACITY", default_value = "100000")]
    pub cache_capacity: String,
    /// `production` refuses to start without explicit keys.
    #[arg(long, env = "LEDGER_ENV", default_value = "development")]
    pub env: String,
    /// Where generated development keys are kept.
    #[arg(long, env = "LEDGER_DATA_DIR", default_value = ".ledger-data")]
    pub data_dir: PathBuf,
    /// Base URL clients reach this service at (payment_url points at its sandbox page).
    #[arg(long, env = "LEDGER_PUBLIC_URL")]
    pub public_url: Option<String>,
    #[arg(long, env = "LEDGER_DB_MAX_CONNECTIONS", default_value = "16")]
    pub db_max_connections: String,
    /// PEM certificate chain: with LEDGER_TLS_KEY, the API is served over TLS.
    #[arg(long, env = "LEDGER_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of LEDGER_TLS_CERT.
    #[arg(long, env = "LEDGER_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct NatsSettings {
    pub url: String,
    pub prefix: String,
    pub stream: String,
}

/// The resolved configuration.
#[derive(Clone)]
pub struct Settings {
    pub database_url: String,
    pub nats: Option<NatsSettings>,
    pub bind: SocketAddr,
    pub api_keys: HashMap<String, ApiKey>,
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
}

/// Bounds on everything (TIGER_STYLE): sizes, waits, retries.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest accepted request body (SPEC §5).
    pub body_bytes_max: usize,
    /// Signed timestamps further than this from the server clock are refused (SPEC §6).
    pub timestamp_window: Duration,
    /// Longest a POST waits for the read models to include its change before answering.
    pub read_your_writes_wait: Duration,
    /// Longest a GET with `min_position` waits.
    pub min_position_wait: Duration,
    /// Longest a duplicate idempotent request waits for the first one to finish.
    pub idempotency_wait: Duration,
    /// How long an idempotency key's owner may run before another request may take over.
    pub idempotency_lease: Duration,
    /// Attempts of a command against fresh state after a version conflict.
    pub command_attempts_max: u32,
    /// Events a projector applies in one transaction.
    pub projection_batch_max: i64,
    /// Events the relay publishes before awaiting acks.
    pub relay_batch_max: i64,
    /// Page size limit of lists (SPEC §5).
    pub page_size_max: u32,
    /// Limit of `/events` pages (SPEC §11).
    pub events_limit_max: i64,
    /// Concurrent requests served; beyond it requests queue (bounded by the OS backlog).
    pub concurrent_requests_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            body_bytes_max: 64 * 1024,
            timestamp_window: Duration::from_secs(300),
            read_your_writes_wait: Duration::from_secs(5),
            min_position_wait: Duration::from_secs(5),
            idempotency_wait: Duration::from_secs(10),
            idempotency_lease: Duration::from_secs(30),
            command_attempts_max: 32,
            projection_batch_max: 1000,
            relay_batch_max: 500,
            page_size_max: 100,
            events_limit_max: 1000,
            concurrent_requests_max: 4096,
        }
    }
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
    /// Parses and checks every setting; generates development keys where allowed.
    pub fn resolve(&self) -> Result<Settings, ConfigError> {
        let production = match self.env.as_str() {
            "production" => true,
            "development" | "dev" | "test" => false,
            other => {
                return Err(bad(
                    "LEDGER_ENV",
                    format!("unknown environment {other:?} (use development or production)"),
                ))
            }
        };
        if !self.database_url.starts_with("postgres://")
            && !self.database_url.starts_with("postgresql://")
        {
            return Err(bad("DATABASE_URL", "must be a postgres:// URL"));
        }
        let nats = match self.nats_url.trim() {
            "" | "none" => None,
            url if url.starts_with("nats://")
                || url.starts_with("tls://")
                || url.starts_with("ws://") =>
            {
                Some(NatsSettings {
                    url: url.to_owned(),
                    prefix: check_subject_token("LEDGER_NATS_PREFIX", &self.nats_prefix)?,
                    stream: check_stream_name(&self.nats_stream)?,
                })
            }
            other => {
                return Err(bad(
                    "NATS_URL",
                    format!("{other:?} is not a nats:// URL or none"),
                ))
            }
        };
        let bind: SocketAddr = self.bind.parse().map_err(|_| {
            bad(
                "LEDGER_BIND",
                format!("{:?} is not an address like 127.0.0.1:8080", self.bind),
            )
        })?;
        let cache_ttl_secs: u64 = parse_number("LEDGER_CACHE_TTL_SECS", &self.cache_ttl_secs)?;
        let cache_capacity: u64 = parse_number("LEDGER_CACHE_CAPACITY", &self.cache_capacity)?;
        if cache_capacity == 0 {
            return Err(bad("LEDGER_CACHE_CAPACITY", "must be at least 1"));
        }
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
        let db_max_connections: u32 =
            parse_number("LEDGER_DB_MAX_CONNECTIONS", &self.db_max_connections)?;
        if !(2..=1000).contains(&db_max_connections) {
            return Err(bad(
                "LEDGER_DB_MAX_CONNECTIONS",
                "must be between 2 and 1000",
            ));
        }

        let dev = DevKeys::new(&self.data_dir);
        let api_keys = match &self.api_keys {
            Some(text) => parse_api_keys(text)?,
            None if production => {
                return Err(bad(
                    "LEDGER_API_KEYS",
                    "required when LEDGER_ENV=production",
                ))
            }
            None => parse_api_keys(&dev.api_keys()?)?,
        };
        let gateway_secrets = match &self.gateway_secrets {
            Some(text) => parse_gateway_secrets(text)?,
            None if production => {
                return Err(bad(
                    "LEDGER_GATEWAY_SECRETS",
                    "required when LEDGER_ENV=production",
                ))
            }
            None => parse_gateway_secrets(&dev.gateway_secrets()?)?,
        };
        let master_key = match &self.master_key {
            Some(text) => MasterKey::from_hex(text.trim()).map_err(|e| {
                bad(
                    "LEDGER_MASTER_KEY",
                    format!("{e} (expected 64 hex characters)"),
                )
            })?,
            None if production => {
                return Err(bad(
                    "LEDGER_MASTER_KEY",
                    "required when LEDGER_ENV=production",
                ))
            }
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
            None if production => {
                return Err(bad(
                    "LEDGER_SIGNING_KEY",
                    "required when LEDGER_ENV=production",
                ))
            }
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
        let public_url = match &self.public_url {
            Some(u) if u.starts_with("http://") || u.starts_with("https://") => {
                u.trim_end_matches('/').to_owned()
            }
            Some(u) => {
                return Err(bad(
                    "LEDGER_PUBLIC_URL",
                    format!("{u:?} is not an http(s) URL"),
                ))
            }
            None if tls.is_some() => format!("https://{bind}"),
            None => format!("http://{bind}"),
        };
        Ok(Settings {
            database_url: self.database_url.clone(),
            nats,
            bind,
            api_keys,
            gateway_secrets,
            master_key,
            signing_key,
            cache_ttl: Duration::from_secs(cache_ttl_secs),
            cache_capacity,
            production,
            public_url,
            db_max_connections,
            tls,
            limits: Limits::default(),
        })
    }
}

fn parse_number<T: std::str::FromStr>(setting: &'static str, text: &str) -> Result<T, ConfigError> {
    text.trim()
        .parse()
        .map_err(|_| bad(setting, format!("{text:?} is not a valid number")))
}

fn check_subject_token(setting: &'static str, text: &str) -> Result<String, ConfigError> {
    let ok = !text.is_empty()
        && text.split('.').all(|t| {
            !t.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
    if ok {
        Ok(text.to_owned())
    } else {
        Err(bad(
            setting,
            format!("{text:?} is not a valid NATS subject prefix"),
        ))
    }
}

fn check_stream_name(text: &str) -> Result<String, ConfigError> {
    let ok = !text.is_empty()
        && text.len() <= 64
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(text.to_owned())
    } else {
        Err(bad(
            "LEDGER_NATS_STREAM",
            format!("{text:?} is not a valid JetStream stream name"),
        ))
    }
}

/// `key_id:secret:role,…`
pub fn parse_api_keys(text: &str) -> Result<HashMap<String, ApiKey>, ConfigError> {
    let mut keys = HashMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let mut parts = entry.splitn(3, ':');
        let (Some(key_id), Some(secret), Some(role)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad(
                "LEDGER_API_KEYS",
                "each entry must be key_id:secret:role",
            ));
        };
        let role = Role::parse(role.trim()).ok_or_else(|| {
            bad("LEDGER_API_KEYS", format!("key {key_id:?} has unknown role {role:?} (client, operator, auditor, finance, admin)"))
        })?;
        if key_id.is_empty() || secret.len() < 8 {
            return Err(bad(
                "LEDGER_API_KEYS",
                format!("key {key_id:?} needs a key id and a secret of at least 8 characters"),
            ));
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
        if secret.len() < 8 {
            return Err(bad(
                "LEDGER_GATEWAY_SECRETS",
                format!("the secret of {method} must have at least 8 characters"),
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

    #[test]
    fn api_keys_parse_with_roles() {
        let keys = parse_api_keys("a:secret123:client, b:secret456:admin").unwrap();
        assert_eq!(keys["a"].role, Role::Client);
        assert_eq!(keys["b"].role, Role::Admin);
    }

    #[test]
    fn malformed_settings_name_the_variable() {
        let e = parse_api_keys("a:secret123:king").unwrap_err();
        assert!(e.to_string().starts_with("LEDGER_API_KEYS:"), "{e}");
        let e = parse_gateway_secrets("paypal:secret123").unwrap_err();
        assert!(e.to_string().starts_with("LEDGER_GATEWAY_SECRETS:"), "{e}");
        let raw = RawConfig {
            bind: "nowhere".into(),
            ..test_raw()
        };
        assert!(raw
            .resolve()
            .err()
            .unwrap()
            .to_string()
            .starts_with("LEDGER_BIND:"));
        let raw = RawConfig {
            cache_ttl_secs: "soon".into(),
            ..test_raw()
        };
        assert!(raw
            .resolve()
            .err()
            .unwrap()
            .to_string()
            .starts_with("LEDGER_CACHE_TTL_SECS:"));
    }

    #[test]
    fn production_refuses_to_start_without_explicit_keys() {
        let raw = RawConfig {
            env: "production".into(),
            api_keys: None,
            ..test_raw()
        };
        assert!(raw
            .resolve()
            .err()
            .unwrap()
            .to_string()
            .starts_with("LEDGER_API_KEYS:"));
        let raw = RawConfig {
            env: "production".into(),
            master_key: None,
            ..test_raw()
        };
        assert!(raw
            .resolve()
            .err()
            .unwrap()
            .to_string()
            .starts_with("LEDGER_MASTER_KEY:"));
    }

    fn test_raw() -> RawConfig {
        RawConfig {
            database_url: "postgres://postgres@127.0.0.1:5432/x".into(),
            nats_url: "none".into(),
            bind: "127.0.0.1:0".into(),
            nats_prefix: "ledger".into(),
            nats_stream: "LEDGER_EVENTS".into(),
            api_keys: Some("k:secret123:admin".into()),
            gateway_secrets: Some("alipay:secret123".into()),
            master_key: Some("11".repeat(32)),
            signing_key: Some("22".repeat(32)),
            cache_ttl_secs: "1800".into(),
            cache_capacity: "10".into(),
            env: "development".into(),
            data_dir: std::env::temp_dir().join("ledger-config-test"),
            public_url: None,
            db_max_connections: "4".into(),
            tls_cert: None,
            tls_key: None,
        }
    }
}
