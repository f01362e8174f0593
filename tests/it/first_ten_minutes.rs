//! A newcomer's first ten minutes (issue 17), against the real `ledger` binary: the guide and
//! the help, `ledger doctor` passing here and naming the fix when PostgreSQL or NATS is
//! stopped or a key is malformed, README's quick-start block (`docs/quickstart.sh`, which
//! README includes verbatim) run as is against a fresh `ledger serve`, and `ledger demo` twice
//! in a row on a ledger that has other traffic.
//!
//! These run the binary as child processes rather than the library in-process, because what
//! they check is what a user sees of the binary: its exit status, its output, its own
//! start-up from the environment and `LEDGER_DATA_DIR`.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ledger::client::Client;
use serde_json::json;
use tokio::process::Command;
use uuid::Uuid;

use crate::common::{TestDb, GATEWAY_SECRETS, KEYS, NATS_URL, SANDBOX_SECRET};

/// Longest one child command may run before the test gives up on it (a hang, not a speed).
const COMMAND_WAIT_MAX: Duration = Duration::from_secs(180);
/// Longest a fresh `ledger serve` may take to answer `/healthz`.
const START_WAIT_MAX: Duration = Duration::from_secs(60);

/// A fresh directory under the system's temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("ledger-{what}-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("local addr").to_string()
}

/// A child `ledger` command with nothing inherited but PATH and HOME, so the developer's own
/// LEDGER_* settings cannot leak in.
fn ledger(env: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(crate::common::ledger_bin());
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", std::env::var("HOME").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

async fn output(mut cmd: Command) -> Output {
    tokio::time::timeout(COMMAND_WAIT_MAX, cmd.output())
        .await
        .expect("the command finishes")
        .expect("the command runs")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The settings of a healthy test setup: the test's database, the local NATS with a stream of
/// this test's own, explicit keys, a free listen address.
fn healthy_env(db: &TestDb, data_dir: &Path, stream: &str) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", db.url.clone()),
        ("NATS_URL", NATS_URL.to_owned()),
        ("LEDGER_NATS_PREFIX", stream.to_lowercase()),
        ("LEDGER_NATS_STREAM", stream.to_owned()),
        ("LEDGER_BIND", free_addr()),
        ("LEDGER_DATA_DIR", data_dir.display().to_string()),
        ("LEDGER_API_KEYS", KEYS.to_owned()),
        ("LEDGER_GATEWAY_SECRETS", GATEWAY_SECRETS.to_owned()),
        ("LEDGER_MASTER_KEY", "4d".repeat(32)),
        ("LEDGER_SIGNING_KEY", "5e".repeat(32)),
        ("LEDGER_SANDBOX_SECRET", SANDBOX_SECRET.to_owned()),
    ]
}

fn with(
    env: &[(&'static str, String)],
    key: &'static str,
    value: &str,
) -> Vec<(&'static str, String)> {
    let mut env: Vec<_> = env.iter().filter(|(k, _)| *k != key).cloned().collect();
    env.push((key, value.to_owned()));
    env
}

async fn doctor(env: &[(&'static str, String)]) -> (i32, String) {
    let mut cmd = ledger(env);
    cmd.arg("doctor");
    let o = output(cmd).await;
    let (out, err) = text(&o);
    (o.status.code().unwrap_or(-1), format!("{out}{err}"))
}

/// The line of the check `name`.
fn check_line<'a>(report: &'a str, name: &str) -> &'a str {
    report
        .lines()
        .find(|l| {
            l.split_whitespace().nth(1) == Some(name) && (l.starts_with('✓') || l.starts_with('✗'))
        })
        .unwrap_or_else(|| panic!("no {name} line in:\n{report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_passes_against_the_test_database_and_the_local_nats() {
    let db = TestDb::new().await;
    let data = TempDir::new("doctor");
    let stream = format!("DOC{}", &Uuid::new_v4().simple().to_string()[..12]);
    let env = healthy_env(&db, &data.0, &stream);

    // A database that exists but was never migrated: migratable, so it passes.
    let (code, report) = doctor(&env).await;
    assert_eq!(code, 0, "{report}");
    assert!(
        !report.lines().any(|l| l.starts_with('✗')),
        "a failed check:\n{report}"
    );
    assert!(
        check_line(&report, "postgres").contains("PostgreSQL"),
        "{report}"
    );
    assert!(
        check_line(&report, "migrations").contains("pending"),
        "{report}"
    );
    let nats = check_line(&report, "nats");
    assert!(
        nats.contains("JetStream") && nats.contains(&stream),
        "{report}"
    );
    assert!(nats.contains("does not exist yet"), "{report}");
    assert!(check_line(&report, "clock").starts_with('✓'), "{report}");
    assert!(
        check_line(&report, "LEDGER_BIND").contains("free"),
        "{report}"
    );
    assert!(
        check_line(&report, "LEDGER_MASTER_KEY").starts_with('✓'),
        "{report}"
    );
    assert!(report.contains("checks pass"), "{report}");
    // Doctor changed nothing: no stream, no key files.
    assert!(std::fs::read_dir(&data.0).unwrap().next().is_none());

    // Migrated: every migration applied, nothing pending.
    ledger::store::migrate(&db.pool().await)
        .await
        .expect("migrate");
    let (code, report) = doctor(&env).await;
    assert_eq!(code, 0, "{report}");
    let migrations = check_line(&report, "migrations");
    assert!(
        migrations.contains("applied") && !migrations.contains("pending"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_names_the_fix_and_fails_when_postgresql_is_stopped() {
    let db = TestDb::new().await;
    let data = TempDir::new("doctor");
    let env = healthy_env(&db, &data.0, "DOCPG");
    let env = with(
        &env,
        "DATABASE_URL",
        "postgres://postgres@127.0.0.1:1/ledger",
    );
    let (code, report) = doctor(&env).await;
    assert_eq!(code, 1, "{report}");
    let pg = check_line(&report, "postgres");
    assert!(pg.starts_with('✗'), "{report}");
    assert!(pg.contains("127.0.0.1:1/ledger"), "{report}");
    assert!(pg.contains("fix: start PostgreSQL"), "{report}");
    assert!(pg.contains("DATABASE_URL"), "{report}");
    assert!(
        check_line(&report, "migrations").starts_with('✗'),
        "{report}"
    );
    // The other checks still ran and passed.
    assert!(check_line(&report, "nats").starts_with('✓'), "{report}");
    assert!(
        check_line(&report, "LEDGER_API_KEYS").starts_with('✓'),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_names_the_fix_and_fails_when_nats_is_stopped() {
    let db = TestDb::new().await;
    let data = TempDir::new("doctor");
    let env = healthy_env(&db, &data.0, "DOCNATS");
    let env = with(&env, "NATS_URL", "nats://127.0.0.1:1");
    let (code, report) = doctor(&env).await;
    assert_eq!(code, 1, "{report}");
    let nats = check_line(&report, "nats");
    assert!(nats.starts_with('✗'), "{report}");
    assert!(nats.contains("nats://127.0.0.1:1"), "{report}");
    assert!(nats.contains("fix: start NATS with JetStream"), "{report}");
    assert!(nats.contains("NATS_URL=none"), "{report}");
    assert!(check_line(&report, "postgres").starts_with('✓'), "{report}");

    // NATS_URL=none is a choice, not a failure.
    let (code, report) = doctor(&with(&env, "NATS_URL", "none")).await;
    assert_eq!(code, 0, "{report}");
    assert!(
        check_line(&report, "nats").contains("NATS_URL=none"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_names_the_setting_and_its_rule_for_a_bad_key() {
    let db = TestDb::new().await;
    let data = TempDir::new("doctor");
    let env = healthy_env(&db, &data.0, "DOCKEY");
    let cases = [
        (
            "LEDGER_GATEWAY_SECRETS",
            "alipay:short",
            "LEDGER_GATEWAY_SECRETS",
            "at least 8 characters",
        ),
        (
            "LEDGER_API_KEYS",
            "k:secret123:king",
            "LEDGER_API_KEYS",
            "client, operator, auditor, finance, admin",
        ),
        (
            "LEDGER_MASTER_KEY",
            "abc",
            "LEDGER_MASTER_KEY",
            "64 hex characters",
        ),
        (
            "LEDGER_SIGNING_KEY",
            &"zz".repeat(32),
            "LEDGER_SIGNING_KEY",
            "64 hex characters",
        ),
        (
            "LEDGER_SANDBOX_SECRET",
            "short",
            "LEDGER_SANDBOX_SECRET",
            "at least 8 characters",
        ),
        (
            "LEDGER_TLS_CERT",
            "/nonexistent/cert.pem",
            "TLS",
            "LEDGER_TLS_KEY",
        ),
        // Malformed before any verb runs (the parser's own check): still one ✗ line.
        ("NATS_URL", "http://nats.internal", "settings", "NATS_URL"),
        ("LEDGER_BIND", "nowhere", "settings", "like 127.0.0.1:8080"),
    ];
    for (setting, value, check, rule) in cases {
        let (code, report) = doctor(&with(&env, setting, value)).await;
        assert_eq!(code, 1, "{setting}={value}:\n{report}");
        let line = check_line(&report, check);
        assert!(line.starts_with('✗'), "{setting}={value}:\n{report}");
        assert!(
            line.contains(rule),
            "{setting}={value}: no rule {rule:?} in\n{report}"
        );
        assert!(line.contains("fix:"), "{setting}={value}:\n{report}");
        assert!(
            !report.contains("secret123"),
            "a secret was echoed: {report}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_points_to_doctor_when_it_cannot_start() {
    let data = TempDir::new("serve");
    let env = vec![
        (
            "DATABASE_URL",
            "postgres://postgres@127.0.0.1:1/ledger".to_owned(),
        ),
        ("NATS_URL", "none".to_owned()),
        ("LEDGER_BIND", free_addr()),
        ("LEDGER_DATA_DIR", data.0.display().to_string()),
    ];
    let mut cmd = ledger(&env);
    cmd.arg("serve");
    let o = output(cmd).await;
    let (out, err) = text(&o);
    assert_ne!(o.status.code(), Some(0), "{out}{err}");
    assert!(err.contains("error:"), "{err}");
    assert!(
        err.contains("run `ledger doctor` to check the setup"),
        "{err}"
    );

    // A setting the parser refuses, before `serve` runs at all: the same pointer.
    let mut cmd = ledger(&with(&env, "LEDGER_BIND", "nowhere"));
    cmd.arg("serve");
    let o = output(cmd).await;
    let (out, err) = text(&o);
    assert_ne!(o.status.code(), Some(0), "{out}{err}");
    assert!(err.contains("LEDGER_BIND"), "{err}");
    assert!(
        err.contains("run `ledger doctor` to check the setup"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_alone_prints_a_guide_and_every_verb_teaches_itself() {
    let o = output(ledger(&[])).await;
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    for heading in ["run", "operate", "audit", "finance", "try"] {
        assert!(
            out.lines().any(|l| l == heading),
            "no {heading} group:\n{out}"
        );
    }
    let command = ledger::cli::command();
    let verbs: Vec<&str> = command
        .get_subcommands()
        .map(|c| c.get_name())
        .filter(|n| *n != "help")
        .collect();
    assert!(verbs.len() >= 11, "{verbs:?}");
    for verb in &verbs {
        assert!(
            out.lines()
                .any(|l| l.trim_start().starts_with(&format!("{verb} "))),
            "the guide does not explain {verb}:\n{out}"
        );
        let sub = command.find_subcommand(verb).expect("the verb");
        let example = sub
            .get_after_help()
            .map(|h| h.to_string())
            .unwrap_or_default();
        assert!(
            example.starts_with("Example:") && example.contains("ledger "),
            "{verb} --help ends without an example: {example:?}"
        );
    }

    // `serve --help` shows every setting with its rule, and ends with the example.
    let mut cmd = ledger(&[]);
    cmd.args(["serve", "--help"]);
    let o = output(cmd).await;
    let (help, _) = text(&o);
    assert_eq!(o.status.code(), Some(0));
    for needle in [
        "LEDGER_GATEWAY_SECRETS",
        "secrets of at least 8 characters",
        "64 hex characters",
        "LEDGER_WRITER_BATCH_MAX",
        "[default: 127.0.0.1:8080]",
    ] {
        assert!(help.contains(needle), "`serve --help` lacks {needle:?}");
    }
    assert!(
        help.trim_end().lines().any(|l| l.trim() == "ledger serve"),
        "{help}"
    );

    for shell in ["bash", "zsh", "fish"] {
        let mut cmd = ledger(&[]);
        cmd.args(["completions", shell]);
        let o = output(cmd).await;
        let (script, err) = text(&o);
        assert_eq!(o.status.code(), Some(0), "{shell}: {err}");
        assert!(
            script.contains("ledger") && script.contains("doctor"),
            "{shell}: {script}"
        );
    }
}

/// A `ledger serve` child on a fresh database, with the defaults a newcomer has: development
/// keys generated into its own `LEDGER_DATA_DIR`, the local NATS (a stream of its own).
struct Served {
    child: tokio::process::Child,
    env: Vec<(&'static str, String)>,
    base: String,
    data: TempDir,
    stream: String,
    _db: TestDb,
}

impl Served {
    async fn start() -> Served {
        let db = TestDb::new().await;
        let data = TempDir::new("served");
        let addr = free_addr();
        let id = Uuid::new_v4().simple().to_string();
        let stream = format!("QS{}", &id[..12]);
        let env = vec![
            ("DATABASE_URL", db.url.clone()),
            ("NATS_URL", NATS_URL.to_owned()),
            ("LEDGER_NATS_PREFIX", format!("qs{}", &id[..12])),
            ("LEDGER_NATS_STREAM", stream.clone()),
            ("LEDGER_BIND", addr.clone()),
            ("LEDGER_DATA_DIR", data.0.display().to_string()),
        ];
        let log = std::fs::File::create(data.0.join("serve.log")).expect("log file");
        let mut cmd = ledger(&env);
        cmd.arg("serve")
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        let mut child = cmd.spawn().expect("start ledger serve");
        let base = format!("http://{addr}");
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + START_WAIT_MAX;
        loop {
            if let Ok(r) = http.get(format!("{base}/healthz")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "ledger serve exited with {status}:\n{}",
                    std::fs::read_to_string(data.0.join("serve.log")).unwrap_or_default()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "ledger serve did not answer within {START_WAIT_MAX:?}:\n{}",
                std::fs::read_to_string(data.0.join("serve.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Served {
            child,
            env,
            base,
            data,
            stream,
            _db: db,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.data.0.join("serve.log")).unwrap_or_default()
    }

    /// Clients signed as the generated dev-admin key and as the alipay gateway.
    fn clients(&self) -> (Client, Client) {
        let creds =
            std::fs::read_to_string(self.data.0.join("credentials.env")).expect("dev credentials");
        let get = |k: &str| {
            creds
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")).map(str::to_owned))
                .expect("a credential")
        };
        let secrets = std::fs::read_to_string(self.data.0.join("gateway-secrets"))
            .expect("dev gateway secrets");
        let alipay = ledger::config::parse_gateway_secrets(secrets.trim()).expect("secrets")
            [&ledger::domain::PaymentMethod::Alipay]
            .clone();
        (
            Client::new(&self.base, &get("LEDGER_KEY_ID"), &get("LEDGER_SECRET")),
            Client::new(&self.base, "alipay", &alipay),
        )
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        if let Ok(c) = async_nats::connect(NATS_URL).await {
            let _ = async_nats::jetstream::new(c)
                .delete_stream(&self.stream)
                .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_quick_start_block_runs_as_is_against_a_fresh_server() {
    let served = Served::start().await;
    let script = crate::common::repo().join("docs/quickstart.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(&script)
        .current_dir(crate::common::repo())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", std::env::var("HOME").unwrap_or_default())
        .env("LEDGER", crate::common::ledger_bin())
        .env("RUST_LOG", "warn")
        .envs(served.env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let o = output(cmd).await;
    let (out, err) = text(&o);
    assert!(
        o.status.success(),
        "docs/quickstart.sh failed ({}):\n--- stdout\n{out}\n--- stderr\n{err}\n--- server\n{}",
        o.status,
        served.log()
    );
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("payment "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no payment line:\n{out}"))
        .to_owned();
    assert!(
        out.lines().any(|l| l.starts_with("refund ") && l.len() > 8),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l == "success"),
        "the status line:\n{out}"
    );
    assert!(
        out.contains("\"refunded_amount\": \"30.00\"")
            || out.contains("\"status\": \"processing\""),
        "{out}"
    );

    // `--field` naming nothing: exit 1, the reason on stderr, nothing on stdout.
    let mut cmd = ledger(&served.env);
    cmd.args([
        "api",
        "--field",
        "data.nope",
        "GET",
        &format!("/api/v1/payments/{id}"),
    ]);
    let o = output(cmd).await;
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("--field data.nope") && err.contains("\"nope\"") && err.contains("payment_no"),
        "{err}"
    );
    // A non-2xx answer: exit 1.
    let mut cmd = ledger(&served.env);
    cmd.args([
        "api",
        "GET",
        &format!("/api/v1/payments/{}", Uuid::new_v4()),
    ]);
    let o = output(cmd).await;
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    let mut cmd = ledger(&served.env);
    cmd.args([
        "api",
        "--field",
        "data.status",
        "GET",
        &format!("/api/v1/payments/{}", Uuid::new_v4()),
    ]);
    let o = output(cmd).await;
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(out.is_empty() && err.contains("404"), "{out}{err}");
    served.stop().await;
}

/// Other traffic while the demo runs: payments created, paid and partly refunded by another
/// client, until told to stop. Returns how many it made.
async fn other_traffic(
    admin: Client,
    alipay: Client,
    stop: Arc<AtomicBool>,
    made: Arc<AtomicUsize>,
) {
    while !stop.load(Ordering::Relaxed) {
        let order = format!("OTHER-{}", Uuid::new_v4().simple());
        let body = json!({"amount": "12.34", "currency": "CNY", "payment_method": "alipay", "order_id": order, "user_id": "someone-else"});
        let Ok(a) = admin
            .send(
                "POST",
                "/api/v1/payments/create",
                Some(&body.to_string()),
                &[],
            )
            .await
        else {
            continue;
        };
        let (Some(id), Some(no)) = (
            a.body["data"]["payment_id"].as_str(),
            a.body["data"]["payment_no"].as_str(),
        ) else {
            continue;
        };
        let notice = json!({"payment_no": no, "callback_no": format!("CB-{order}"), "status": "success", "amount": "12.34", "gateway_trade_no": format!("T-{order}")});
        let _ = alipay
            .send(
                "POST",
                "/api/v1/gateways/alipay/notify",
                Some(&notice.to_string()),
                &[],
            )
            .await;
        let refund = json!({"amount": "1.00", "reason": "other traffic"});
        let _ = admin
            .send(
                "POST",
                &format!("/api/v1/payments/{id}/refund"),
                Some(&refund.to_string()),
                &[],
            )
            .await;
        made.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_agrees_twice_in_a_row_on_a_ledger_with_other_traffic() {
    let served = Served::start().await;
    let (admin, alipay) = served.clients();
    let stop = Arc::new(AtomicBool::new(false));
    let made = Arc::new(AtomicUsize::new(0));
    let traffic = tokio::spawn(other_traffic(admin, alipay, stop.clone(), made.clone()));
    // Some traffic before the first run, as the README's examples leave.
    while made.load(Ordering::Relaxed) < 3 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for run in 1..=2 {
        let mut cmd = ledger(&served.env);
        cmd.args(["demo", "--payments", "30"]);
        let o = output(cmd).await;
        let (out, err) = text(&o);
        let context = format!(
            "run {run}:\n--- stdout\n{out}\n--- stderr\n{err}\n--- server\n{}",
            served.log()
        );
        assert_eq!(o.status.code(), Some(0), "{context}");
        assert!(
            out.contains("reconciling the 30 payments and 6 refunds this run created"),
            "{context}"
        );
        assert!(
            out.contains("reconciliation: everything matches"),
            "{context}"
        );
        assert!(
            out.contains(&format!("{}/console/payments?start_time=", served.base)),
            "{context}"
        );
        assert!(
            out.contains("ledger verify") && out.contains(&format!("{}/metrics", served.base)),
            "{context}"
        );
        assert_eq!(
            out.trim_end().lines().last(),
            Some("everything agrees"),
            "{context}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    traffic.await.expect("the other traffic ends");
    assert!(
        made.load(Ordering::Relaxed) > 3,
        "the other traffic kept going during the demo"
    );
    served.stop().await;
}

/// The units cargo would build for `args`, each with an identity that covers its package,
/// target, mode, features, profile and (recursively) its dependencies': two units with the
/// same identity are one compilation, shared through the target directory.
async fn unit_graph(args: &[&str], target_dir: &Path) -> Vec<(String, u64)> {
    use std::hash::{Hash, Hasher};
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(args)
        .args(["--offline", "--unit-graph", "-Z", "unstable-options"])
        .current_dir(crate::common::repo())
        // `--unit-graph` is unstable: RUSTC_BOOTSTRAP lets this stable cargo print it. It
        // only prints the plan; nothing is compiled.
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_DIR", target_dir)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let o = output(cmd).await;
    let (out, err) = text(&o);
    assert!(
        o.status.success(),
        "cargo {args:?} --unit-graph failed: {err}"
    );
    let graph: serde_json::Value = serde_json::from_str(&out).expect("a unit graph");
    let units = graph["units"].as_array().expect("units").clone();
    fn identity(units: &[serde_json::Value], i: usize, memo: &mut Vec<Option<u64>>) -> u64 {
        if let Some(h) = memo[i] {
            return h;
        }
        let u = &units[i];
        let mut deps: Vec<u64> = u["dependencies"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| identity(units, d["index"].as_u64().expect("index") as usize, memo))
            .collect();
        deps.sort_unstable();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for part in [
            "pkg_id", "target", "mode", "features", "profile", "platform",
        ] {
            u[part].to_string().hash(&mut h);
        }
        deps.hash(&mut h);
        let h = h.finish();
        memo[i] = Some(h);
        h
    }
    let mut memo = vec![None; units.len()];
    (0..units.len())
        .map(|i| {
            let u = &units[i];
            let name = format!(
                "{} ({} {}, features {})",
                u["pkg_id"].as_str().unwrap_or("?"),
                u["target"]["name"].as_str().unwrap_or("?"),
                u["mode"].as_str().unwrap_or("?"),
                u["features"]
            );
            (name, identity(&units, i, &mut memo))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_run_reuses_everything_the_release_tests_built() {
    // README: after `cargo test --release` (the suite against the optimised build),
    // `cargo run --release -- serve` (this package's `ledger` binary alone, without
    // dev-dependencies) compiles nothing again.
    let target = TempDir::new("unit-graph");
    let test = unit_graph(&["test", "--release", "--no-run"], &target.0).await;
    let run = unit_graph(
        &["build", "--release", "-p", "ledger", "--bin", "ledger"],
        &target.0,
    )
    .await;
    assert!(
        run.len() > 100 && test.len() > run.len(),
        "unit graphs read: test {} units, run {}",
        test.len(),
        run.len()
    );
    let built: std::collections::HashSet<u64> = test.iter().map(|(_, h)| *h).collect();
    let again: Vec<&String> = run
        .iter()
        .filter(|(_, h)| !built.contains(h))
        .map(|(name, _)| name)
        .collect();
    assert!(
        again.is_empty(),
        "`cargo run --release` would compile {} unit(s) that `cargo test --release` built \
         differently; the first ones whose own features differ are the cause (align them in \
         Cargo.toml's feature-alignment block):\n{}",
        again.len(),
        again
            .iter()
            .map(|n| format!("  {n}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
