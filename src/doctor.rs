//! `ledger doctor`: checks what `ledger serve` needs, one line per check, each with what it
//! found and, when it fails, the fix.
//!
//! It owns the checks and their wording; it must not change anything (no database, table,
//! stream or key file is created: those are `serve`'s and `migrate`'s to create) and must never
//! hang: every network step is bounded by [`CHECK_TIMEOUT`]. Database questions go through
//! `store::probe`; keys are parsed by the same functions `RawConfig::resolve` uses, so a key
//! doctor accepts is a key `serve` accepts.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream;

use crate::config::{
    parse_api_keys, parse_gateway_secrets, Environment, RawConfig, SandboxMode, SECRET_CHARS_MIN,
};
use crate::store::digest::SigningKey;
use crate::store::probe;
use crate::store::sealing::MasterKey;

/// Longest any one network step of a check may take.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest clock difference with the database that passes. Signed requests are refused
/// outside ±LEDGER_TIMESTAMP_WINDOW_SECS (300 s) and event times come from the database, so
/// a skew of seconds already means a clock that is not synchronised.
pub const CLOCK_SKEW_MAX: Duration = Duration::from_secs(2);

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    /// What the check found (never a secret).
    pub found: String,
    /// How to fix it, when it failed.
    pub fix: Option<String>,
}

impl Check {
    fn pass(name: &'static str, found: impl Into<String>) -> Check {
        Check {
            name,
            ok: true,
            found: found.into(),
            fix: None,
        }
    }

    fn fail(name: &'static str, found: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name,
            ok: false,
            found: found.into(),
            fix: Some(fix.into()),
        }
    }

    /// `✓ name  found` or `✗ name  found — fix: …`, one line.
    pub fn line(&self) -> String {
        let mark = if self.ok { '✓' } else { '✗' };
        match &self.fix {
            Some(fix) => format!("{mark} {:<22} {} — fix: {fix}", self.name, self.found),
            None => format!("{mark} {:<22} {}", self.name, self.found),
        }
    }
}

/// Runs every check, prints one line each and a closing verdict; returns the exit status
/// (0 only when all pass).
pub async fn run(config: &RawConfig, out: &mut dyn Write) -> anyhow::Result<i32> {
    let mut checks = settings(config);
    let (database, nats) = tokio::join!(database(config), nats(config));
    checks.extend(database);
    checks.push(nats);
    checks.push(listen_address(config.bind).await);
    for c in &checks {
        writeln!(out, "{}", c.line())?;
    }
    let failed = checks.iter().filter(|c| !c.ok).count();
    if failed == 0 {
        writeln!(
            out,
            "all {} checks pass: `ledger serve` has what it needs",
            checks.len()
        )?;
        Ok(0)
    } else {
        writeln!(
            out,
            "{failed} of {} checks fail: fix the ✗ lines above, then run `ledger doctor` again",
            checks.len()
        )?;
        Ok(1)
    }
}

/// A malformed setting caught by the command-line parser before doctor could run, printed
/// as doctor's own failed check (`main` calls this).
pub fn settings_unparsable(message: &str) -> String {
    Check::fail(
        "settings",
        message
            .lines()
            .next()
            .unwrap_or(message)
            .trim_start_matches("error: "),
        "correct that setting; `ledger serve --help` lists every setting with its rule",
    )
    .line()
}

// ---------------------------------------------------------------------------------------
// Keys and secrets

/// Where `serve` keeps (or would generate) a development key.
fn dev_file(config: &RawConfig, file: &str) -> PathBuf {
    config.data_dir.join(file)
}

/// A setting's value: from the environment, from the development file `serve` generated,
/// or absent.
enum Source {
    Env(String),
    File(PathBuf, String),
    Missing(PathBuf),
}

fn source(value: &Option<String>, config: &RawConfig, file: &str) -> Source {
    match value {
        Some(v) => Source::Env(v.clone()),
        None => {
            let path = dev_file(config, file);
            match std::fs::read_to_string(&path) {
                Ok(text) => Source::File(path, text.trim().to_owned()),
                Err(_) => Source::Missing(path),
            }
        }
    }
}

/// One key's check: `parse` validates a value and describes it (never showing the secret).
fn key_check(
    name: &'static str,
    value: &Option<String>,
    config: &RawConfig,
    file: &str,
    rule: &str,
    parse: impl Fn(&str) -> Result<String, String>,
) -> Check {
    let production = config.env == Environment::Production;
    // The line already names the setting: drop it from the parser's message.
    let parse = |text: &str| {
        parse(text).map_err(|e| {
            e.strip_prefix(name)
                .and_then(|e| e.strip_prefix(": "))
                .map(str::to_owned)
                .unwrap_or(e)
        })
    };
    match source(value, config, file) {
        Source::Env(text) => match parse(&text) {
            Ok(found) => Check::pass(name, found),
            Err(e) => Check::fail(name, e, format!("set {name} to {rule}")),
        },
        Source::File(path, text) => match parse(&text) {
            Ok(found) => Check::pass(
                name,
                format!(
                    "not set; the development value in {} is used: {found}",
                    path.display()
                ),
            ),
            Err(e) => Check::fail(
                name,
                format!(
                    "the development value in {} is corrupt: {e}",
                    path.display()
                ),
                format!(
                    "delete {} (`serve` generates a new one) or set {name} to {rule}",
                    path.display()
                ),
            ),
        },
        Source::Missing(_) if production => Check::fail(
            name,
            "not set, and required when LEDGER_ENV=production",
            format!("set {name} to {rule}"),
        ),
        Source::Missing(path) => match writable_dir(&config.data_dir) {
            Ok(()) => Check::pass(
                name,
                format!(
                    "not set; `serve` generates one into {}; in production set it to {rule}",
                    path.display()
                ),
            ),
            Err(e) => Check::fail(
                name,
                format!(
                    "not set, and the data directory {} cannot take a generated one: {e}",
                    config.data_dir.display()
                ),
                format!("set {name} to {rule}, or LEDGER_DATA_DIR to a writable directory"),
            ),
        },
    }
}

/// Whether `dir` exists as a writable directory or could be created (its nearest existing
/// ancestor is a writable directory), without creating anything.
fn writable_dir(dir: &Path) -> Result<(), String> {
    let mut at = Some(dir);
    while let Some(p) = at {
        if let Ok(meta) = std::fs::metadata(p) {
            if !meta.is_dir() {
                return Err(format!("{} is not a directory", p.display()));
            }
            if meta.permissions().readonly() {
                return Err(format!("{} is read-only", p.display()));
            }
            return Ok(());
        }
        at = p.parent().filter(|p| !p.as_os_str().is_empty());
    }
    // A relative path whose ancestors do not exist: created under the working directory.
    Ok(())
}

const API_KEYS_RULE: &str = "key_id:secret:role[,…] (role client, operator, auditor, finance or admin; a client key may add :merchant; secrets of at least 8 characters)";
const GATEWAY_RULE: &str =
    "method:secret[,…] (method alipay, wechat, bank or credit_card; secrets of at least 8 characters)";
const HEX_KEY_RULE: &str = "64 hex characters (32 bytes, e.g. `openssl rand -hex 32`)";

fn settings(config: &RawConfig) -> Vec<Check> {
    let mut checks = vec![
        key_check(
            "LEDGER_API_KEYS",
            &config.api_keys,
            config,
            "api-keys",
            API_KEYS_RULE,
            |text| {
                let keys = parse_api_keys(text).map_err(|e| e.to_string())?;
                let mut names: Vec<String> = keys
                    .values()
                    .map(|k| format!("{} ({})", k.key_id, k.role.name()))
                    .collect();
                names.sort();
                Ok(format!("{} key(s): {}", keys.len(), names.join(", ")))
            },
        ),
        key_check(
            "LEDGER_GATEWAY_SECRETS",
            &config.gateway_secrets,
            config,
            "gateway-secrets",
            GATEWAY_RULE,
            |text| {
                let secrets = parse_gateway_secrets(text).map_err(|e| e.to_string())?;
                let mut names: Vec<&str> = secrets.keys().map(|m| m.name()).collect();
                names.sort();
                Ok(format!("secrets for {}", names.join(", ")))
            },
        ),
        key_check(
            "LEDGER_MASTER_KEY",
            &config.master_key,
            config,
            "master.key",
            HEX_KEY_RULE,
            |text| {
                MasterKey::from_hex(text.trim())
                    .map(|_| "a well-formed 256-bit key".to_owned())
                    .map_err(|e| e.to_string())
            },
        ),
        key_check(
            "LEDGER_SIGNING_KEY",
            &config.signing_key,
            config,
            "signing.key",
            HEX_KEY_RULE,
            |text| {
                SigningKey::from_hex(text.trim())
                    .map(|k| {
                        format!(
                            "a well-formed Ed25519 seed (public key {})",
                            k.public_key_hex()
                        )
                    })
                    .map_err(|e| e.to_string())
            },
        ),
    ];
    checks.push(sandbox(config));
    checks.push(tls(config));
    checks
}

fn sandbox(config: &RawConfig) -> Check {
    let production = config.env == Environment::Production;
    let mode = config.sandbox.unwrap_or(if production {
        SandboxMode::Off
    } else {
        SandboxMode::On
    });
    const NAME: &str = "LEDGER_SANDBOX_SECRET";
    match mode {
        SandboxMode::On if production => Check::fail(
            "LEDGER_SANDBOX",
            "on with LEDGER_ENV=production (anyone could mark payments paid)",
            "set LEDGER_SANDBOX=off in production",
        ),
        SandboxMode::Off => Check::pass("LEDGER_SANDBOX", "off: no sandbox gateway"),
        SandboxMode::On => key_check(
            NAME,
            &config.sandbox_secret,
            config,
            "sandbox.secret",
            "a secret of at least 8 characters",
            |text| {
                if text.chars().count() < SECRET_CHARS_MIN {
                    Err(format!(
                        "{NAME}: must have at least {SECRET_CHARS_MIN} characters"
                    ))
                } else {
                    Ok("the sandbox gateway is on, with a well-formed secret".to_owned())
                }
            },
        ),
    }
}

fn tls(config: &RawConfig) -> Check {
    const NAME: &str = "TLS";
    match (&config.tls_cert, &config.tls_key) {
        (None, None) => Check::pass(
            NAME,
            "not configured: the API speaks plain HTTP (set LEDGER_TLS_CERT and LEDGER_TLS_KEY for HTTPS)",
        ),
        (Some(_), None) => Check::fail(
            NAME,
            "LEDGER_TLS_CERT is set without LEDGER_TLS_KEY",
            "set both (PEM certificate chain and its private key) or neither",
        ),
        (None, Some(_)) => Check::fail(
            NAME,
            "LEDGER_TLS_KEY is set without LEDGER_TLS_CERT",
            "set both (PEM certificate chain and its private key) or neither",
        ),
        (Some(cert), Some(key)) => match crate::tls::load(cert, key) {
            Ok(_) => Check::pass(
                NAME,
                format!(
                    "{} and {} are readable and the key fits the certificate",
                    cert.display(),
                    key.display()
                ),
            ),
            Err(e) => Check::fail(
                NAME,
                e.to_string(),
                format!(
                    "point {} at a readable PEM file; the key must be the certificate's",
                    e.setting
                ),
            ),
        },
    }
}

// ---------------------------------------------------------------------------------------
// PostgreSQL: reachable, migrated, clock

/// `host:port/database` of a URL, without user or password.
fn where_db(url: &str) -> String {
    match url.parse::<sqlx::postgres::PgConnectOptions>() {
        Ok(o) => format!(
            "{}:{}/{}",
            o.get_host(),
            o.get_port(),
            o.get_database().unwrap_or("postgres")
        ),
        Err(_) => "DATABASE_URL".to_owned(),
    }
}

async fn database(config: &RawConfig) -> Vec<Check> {
    let at = where_db(&config.database_url);
    let mut probe = match probe::connect(&config.database_url, CHECK_TIMEOUT).await {
        Ok(p) => p,
        Err(e) => {
            let (found, fix) = match &e {
                sqlx::Error::Database(db)
                    if matches!(db.code().as_deref(), Some("28P01" | "28000")) =>
                (
                    format!("PostgreSQL at {at} refused the login: {}", db.message()),
                    "put the right user and password in DATABASE_URL (postgres://USER:PASSWORD@HOST:PORT/DATABASE)".to_owned(),
                ),
                sqlx::Error::PoolTimedOut => (
                    format!("no answer from {at} within {} s", CHECK_TIMEOUT.as_secs()),
                    "start PostgreSQL or point DATABASE_URL at a reachable server (a firewall may drop the connection)".to_owned(),
                ),
                other => (
                    format!("cannot connect to {at}: {other}"),
                    "start PostgreSQL (`docker compose up -d postgres`, or `pg_ctlcluster <version> main start`) or point DATABASE_URL at it (default postgres://postgres@127.0.0.1:5432/ledger)".to_owned(),
                ),
            };
            let skipped = |name| {
                Check::fail(
                    name,
                    "not checked: PostgreSQL is not reachable",
                    "fix the postgres line first",
                )
            };
            return vec![
                Check::fail("postgres", found, fix),
                skipped("migrations"),
                skipped("clock"),
            ];
        }
    };
    let conn = &mut probe.conn;
    let version = bounded(probe::server_version(conn)).await;
    let mut checks = vec![match &version {
        Ok(v) if probe.database_exists => {
            Check::pass("postgres", format!("PostgreSQL {v} at {at}"))
        }
        Ok(v) => Check::pass(
            "postgres",
            format!("PostgreSQL {v} is reachable; the database {at} does not exist yet (`ledger serve` or `ledger migrate` creates it)"),
        ),
        Err(e) => Check::fail(
            "postgres",
            format!("connected to {at} but `SHOW server_version` failed: {e}"),
            "check that DATABASE_URL points at a PostgreSQL server",
        ),
    }];
    checks.push(if probe.database_exists {
        migrations(conn).await
    } else {
        let all = probe::embedded_migrations();
        Check::pass(
            "migrations",
            format!("{} to apply on creation ({})", all.len(), names(&all)),
        )
    });
    checks.push(clock(conn).await);
    let _ = tokio::time::timeout(CHECK_TIMEOUT, sqlx::Connection::close(probe.conn)).await;
    checks
}

fn names(list: &[(i64, String)]) -> String {
    list.iter()
        .map(|(v, d)| format!("{v:04} {d}"))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn migrations(conn: &mut sqlx::PgConnection) -> Check {
    const NAME: &str = "migrations";
    let state = match bounded(probe::migration_state(conn)).await {
        Ok(s) => s,
        Err(e) => {
            return Check::fail(
                NAME,
                format!("cannot read _sqlx_migrations: {e}"),
                "check that the DATABASE_URL user may read the database",
            )
        }
    };
    if let Some(v) = state.dirty {
        return Check::fail(
            NAME,
            format!("migration {v:04} failed half-way"),
            format!("repair the database by hand, then delete version {v} from _sqlx_migrations and run `ledger migrate`"),
        );
    }
    if !state.modified.is_empty() {
        return Check::fail(
            NAME,
            format!(
                "applied migrations changed since they were applied: {}",
                names(&state.modified)
            ),
            "restore those files in migrations/ as they were applied (a migration is never edited after it lands; add a new one), or use a fresh database",
        );
    }
    if !state.unknown.is_empty() {
        return Check::fail(
            NAME,
            format!(
                "the database has migrations this binary does not know: {:?}",
                state.unknown
            ),
            "run the newer ledger that migrated it, or use another database",
        );
    }
    if state.pending.is_empty() {
        Check::pass(NAME, format!("all {} applied", state.applied))
    } else {
        Check::pass(
            NAME,
            format!(
                "{} applied, {} pending ({}): `ledger migrate` or `ledger serve` applies them",
                state.applied,
                state.pending.len(),
                names(&state.pending)
            ),
        )
    }
}

async fn clock(conn: &mut sqlx::PgConnection) -> Check {
    const NAME: &str = "clock";
    let before = chrono::Utc::now();
    let db_now = bounded(probe::server_now(conn)).await;
    let after = chrono::Utc::now();
    let db_now = match db_now {
        Ok(t) => t,
        Err(e) => {
            return Check::fail(
                NAME,
                format!("cannot read the database's clock: {e}"),
                "check the postgres line",
            )
        }
    };
    let round_trip = after - before;
    let local = before + round_trip / 2;
    let skew = db_now - local;
    let skew_s = skew.num_milliseconds() as f64 / 1000.0;
    let found = format!(
        "the database's clock is {:.3} s {} this machine's (round trip {} ms)",
        skew_s.abs(),
        if skew_s >= 0.0 { "ahead of" } else { "behind" },
        round_trip.num_milliseconds()
    );
    if skew.num_milliseconds().unsigned_abs() as u128 > CLOCK_SKEW_MAX.as_millis() {
        Check::fail(
            NAME,
            found,
            format!(
                "synchronise both clocks with NTP (`timedatectl set-ntp true`, chrony); more than {} s apart means one is wrong, and signed requests outside ±300 s (LEDGER_TIMESTAMP_WINDOW_SECS) are refused",
                CLOCK_SKEW_MAX.as_secs()
            ),
        )
    } else {
        Check::pass(NAME, found)
    }
}

/// A database call bounded by [`CHECK_TIMEOUT`].
async fn bounded<T>(
    f: impl std::future::Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, sqlx::Error> {
    tokio::time::timeout(CHECK_TIMEOUT, f)
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)?
}

// ---------------------------------------------------------------------------------------
// NATS

async fn nats(config: &RawConfig) -> Check {
    const NAME: &str = "nats";
    if config.nats_url == "none" {
        return Check::pass(
            NAME,
            "NATS_URL=none: one node with the in-process bus (events are not published)",
        );
    }
    let url = &config.nats_url;
    let start_fix = "start NATS with JetStream (`nats-server -js`, or `docker compose up -d nats`) or point NATS_URL at it; NATS_URL=none runs one node without the bus";
    let connect = async_nats::ConnectOptions::new()
        .name("ledger doctor")
        .connection_timeout(Duration::from_secs(2))
        .connect(url.as_str());
    let client = match tokio::time::timeout(CHECK_TIMEOUT, connect).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Check::fail(NAME, format!("cannot connect to {url}: {e}"), start_fix),
        Err(_) => {
            return Check::fail(
                NAME,
                format!("no answer from {url} within {} s", CHECK_TIMEOUT.as_secs()),
                start_fix,
            )
        }
    };
    let mut js = jetstream::new(client.clone());
    js.set_timeout(CHECK_TIMEOUT);
    let server = format!(" {}", client.server_info().version);
    let jetstream_on = client.server_info().jetstream;
    let check = stream_check(&js, config, url, &server, jetstream_on).await;
    drop(js);
    let _ = tokio::time::timeout(Duration::from_secs(1), client.drain()).await;
    check
}

async fn stream_check(
    js: &jetstream::Context,
    config: &RawConfig,
    url: &str,
    server: &str,
    jetstream_on: bool,
) -> Check {
    const NAME: &str = "nats";
    if !jetstream_on {
        return Check::fail(
            NAME,
            format!("NATS{server} at {url} answers, but without JetStream"),
            "enable JetStream on the server (`nats-server -js`, or `jetstream {}` in its configuration)",
        );
    }
    let subjects = format!("{}.payment.>", config.nats_prefix);
    let name = &config.nats_stream;
    let stream = tokio::time::timeout(CHECK_TIMEOUT, js.get_stream(name)).await;
    match stream {
        Err(_) => Check::fail(
            NAME,
            format!("NATS{server} at {url}: asking for stream {name} timed out"),
            "check the NATS server's health (`nats server check jetstream`)",
        ),
        Ok(Err(e)) => {
            let not_found = matches!(
                e.kind(),
                jetstream::context::GetStreamErrorKind::JetStream(j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
            );
            if not_found {
                Check::pass(
                    NAME,
                    format!(
                        "NATS{server} at {url} with JetStream; stream {name} does not exist yet: `serve` creates it (subjects {subjects}, {} replica(s))",
                        config.nats_replicas
                    ),
                )
            } else {
                Check::fail(
                    NAME,
                    format!("NATS{server} at {url}: cannot read stream {name}: {e}"),
                    "check that this NATS user may use JetStream",
                )
            }
        }
        Ok(Ok(stream)) => {
            let c = &stream.cached_info().config;
            let found = format!(
                "NATS{server} at {url} with JetStream; stream {} (subjects {}, {} replica(s), duplicate window {} s)",
                c.name,
                c.subjects.join(" "),
                c.num_replicas,
                c.duplicate_window.as_secs()
            );
            if !c.subjects.contains(&subjects) {
                Check::fail(
                    NAME,
                    found,
                    format!("this stream does not take {subjects}: set LEDGER_NATS_STREAM to another name (or LEDGER_NATS_PREFIX to match it), or fix the stream"),
                )
            } else if c.num_replicas != usize::from(config.nats_replicas) {
                Check::fail(
                    NAME,
                    found,
                    format!(
                        "LEDGER_NATS_REPLICAS is {}: set it to {} or change the stream's replicas (`nats stream edit {} --replicas {}`)",
                        config.nats_replicas, c.num_replicas, c.name, config.nats_replicas
                    ),
                )
            } else if c.duplicate_window < crate::bus::DUPLICATE_WINDOW_MIN {
                Check::fail(
                    NAME,
                    found,
                    format!(
                        "the duplicate window must be at least {} s: `nats stream edit {} --dupe-window {}s`",
                        crate::bus::DUPLICATE_WINDOW_MIN.as_secs(),
                        c.name,
                        crate::bus::DUPLICATE_WINDOW_MIN.as_secs()
                    ),
                )
            } else {
                Check::pass(NAME, found)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The listen address

async fn listen_address(bind: SocketAddr) -> Check {
    const NAME: &str = "LEDGER_BIND";
    match std::net::TcpListener::bind(bind) {
        Ok(listener) => {
            drop(listener);
            Check::pass(NAME, format!("{bind} is free to listen on"))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if ledger_answers(bind).await {
                Check::pass(
                    NAME,
                    format!("{bind} is in use by a running ledger (its /healthz answers); a second `serve` needs another LEDGER_BIND"),
                )
            } else {
                Check::fail(
                    NAME,
                    format!("{bind} is in use by another program"),
                    format!(
                        "stop it (`ss -ltnp 'sport = :{}'` shows which) or set LEDGER_BIND to a free address, e.g. {}:{}",
                        bind.port(),
                        bind.ip(),
                        bind.port().wrapping_add(1)
                    ),
                )
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Check::fail(
            NAME,
            format!("not allowed to listen on {bind}: {e}"),
            "use a port of 1024 or more, or give the binary CAP_NET_BIND_SERVICE",
        ),
        Err(e) => Check::fail(
            NAME,
            format!("cannot listen on {bind}: {e}"),
            "set LEDGER_BIND to an address of this machine, e.g. 127.0.0.1:8080 or 0.0.0.0:8080",
        ),
    }
}

/// Whether what listens on `bind` is a ledger (its `/healthz` answers ok, over HTTP or HTTPS).
async fn ledger_answers(bind: SocketAddr) -> bool {
    let Ok(http) = reqwest::Client::builder()
        .timeout(CHECK_TIMEOUT)
        .danger_accept_invalid_certs(true)
        .build()
    else {
        return false;
    };
    for scheme in ["http", "https"] {
        if let Ok(r) = http.get(format!("{scheme}://{bind}/healthz")).send().await {
            if let Ok(v) = r.json::<serde_json::Value>().await {
                if v["data"]["status"] == "ok" {
                    return true;
                }
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_check_is_one_line_with_its_fix() {
        let c = Check::fail("nats", "cannot connect", "start it");
        assert_eq!(c.line().lines().count(), 1);
        assert!(c.line().starts_with("✗ nats"));
        assert!(c.line().ends_with("— fix: start it"));
        assert!(Check::pass("clock", "fine").line().starts_with("✓ clock"));
    }

    #[test]
    fn the_database_is_named_without_its_password() {
        assert_eq!(
            where_db("postgres://u:secret@db.internal:6543/ledger"),
            "db.internal:6543/ledger"
        );
    }
}
