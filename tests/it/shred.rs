//! Sensitive payer data (SPEC §7, issue 7): crypto-shredding a user with the real
//! `ledger shred` command while the service runs, and no secret or payer field in the logs,
//! error bodies or metrics of the real `ledger serve` binary.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{data, Options, TestApp, TestDb, GATEWAY_SECRETS, KEYS, NATS_URL};
use ledger::client::Client;
use serde_json::{json, Value};
use uuid::Uuid;

const MASTER_KEY_HEX: &str = "4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d";
const SIGNING_KEY_HEX: &str = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e";

/// The configuration the test services use, as environment variables for the binary.
fn ledger_cmd(db_url: &str, data_dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(crate::common::ledger_bin());
    cmd.env("DATABASE_URL", db_url)
        .env("NATS_URL", "none")
        .env("LEDGER_API_KEYS", KEYS)
        .env("LEDGER_GATEWAY_SECRETS", GATEWAY_SECRETS)
        .env("LEDGER_MASTER_KEY", MASTER_KEY_HEX)
        .env("LEDGER_SIGNING_KEY", SIGNING_KEY_HEX)
        .env("LEDGER_ENV", "test")
        .env("LEDGER_DATA_DIR", data_dir)
        .stdin(Stdio::null());
    cmd
}

fn temp_dir(what: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ledger-{what}-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

async fn create_with_payer(app: &TestApp, user: &str, amount: &str, payer: Value) -> String {
    let body = json!({
        "amount": amount, "currency": "CNY", "payment_method": "alipay",
        "order_id": format!("SHRED-{}", Uuid::new_v4().simple()), "user_id": user,
        "payer": payer,
    });
    let a = app
        .client("client")
        .send(
            "POST",
            "/api/v1/payments/create",
            Some(&body.to_string()),
            &[],
        )
        .await
        .expect("create");
    assert_eq!(a.status, 201, "{}", a.body);
    data(&a)["payment_id"].as_str().expect("id").to_owned()
}

async fn get(app: &TestApp, role: &str, target: &str) -> Value {
    let a = app
        .client(role)
        .send("GET", target, None, &[])
        .await
        .expect("get");
    assert_eq!(a.status, 200, "{target}: {}", a.body);
    data(&a).clone()
}

/// A detail without its payer and without the fields that move with time.
fn without_payer(mut d: Value) -> Value {
    let o = d.as_object_mut().expect("object");
    o.remove("payer");
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shredding_a_user_erases_their_payer_data_and_keeps_amounts_totals_and_the_chain() {
    let app = TestApp::spawn_with(Options {
        nats_url: None,
        ..Default::default()
    })
    .await;
    let user = format!("shred-{}", Uuid::new_v4().simple());
    let other = format!("keep-{}", Uuid::new_v4().simple());
    let card = "4111 1111 1111 1111";
    let paid = create_with_payer(
        &app,
        &user,
        "80.00",
        json!({"name": "张三", "account": card}),
    )
    .await;
    let pending =
        create_with_payer(&app, &user, "12.50", json!({"account": "6011000990139424"})).await;
    let kept = create_with_payer(
        &app,
        &other,
        "33.00",
        json!({"name": "Li Si", "account": card}),
    )
    .await;
    let no = get(&app, "auditor", &format!("/api/v1/payments/{paid}")).await["payment_no"]
        .as_str()
        .expect("payment_no")
        .to_owned();
    assert_eq!(app.pay("alipay", &no, "80.00").await.status, 200);
    let refund = app
        .client("operator")
        .send(
            "POST",
            &format!("/api/v1/payments/{paid}/refund"),
            Some(&json!({"amount": "30.00", "reason": "partial"}).to_string()),
            &[],
        )
        .await
        .expect("refund");
    assert_eq!(refund.status, 201, "{}", refund.body);
    // Let the refund settle, then read everything once (this fills the detail cache too).
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&app, "auditor", &format!("/api/v1/payments/{paid}")).await["refunded_amount"]
        != "30.00"
    {
        assert!(Instant::now() < deadline, "refund never settled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.settle().await;
    let ids = [&paid, &pending, &kept];
    let mut before = Vec::new();
    for id in ids {
        before.push(get(&app, "auditor", &format!("/api/v1/payments/{id}")).await);
    }
    assert_eq!(
        before[0]["payer"],
        json!({"name": "张*", "account": "****1111"})
    );
    assert_eq!(before[1]["payer"]["account"], "****9424");
    let totals_before = get(&app, "finance", "/api/v1/ledger/totals").await["currencies"].clone();
    let pool = app.pool().await;
    let log_before: Vec<String> =
        sqlx::query_scalar("SELECT to_jsonb(e)::text FROM events e ORDER BY position")
            .fetch_all(&pool)
            .await
            .expect("dump");

    // The real command, on the running service's database.
    let dir = temp_dir("shred");
    let out = ledger_cmd(&app.db.url, &dir)
        .args(["shred", "--user", &user])
        .output()
        .expect("run ledger shred");
    assert!(
        out.status.success(),
        "ledger shred: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout).to_string();

    let erased = json!({"name": "[erased]", "account": "[erased]"});
    // Another process shredded: the service drops its cached details when it sees the
    // cache generation move (bounded wait, not a timing assertion).
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&app, "auditor", &format!("/api/v1/payments/{paid}")).await["payer"] != erased {
        assert!(
            Instant::now() < deadline,
            "the cached detail still shows the payer"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut after = Vec::new();
    for id in ids {
        after.push(get(&app, "auditor", &format!("/api/v1/payments/{id}")).await);
    }
    assert_eq!(
        after[0]["payer"], erased,
        "the shredded user's paid payment"
    );
    assert_eq!(
        after[1]["payer"], erased,
        "the shredded user's pending payment"
    );
    assert_eq!(
        after[2]["payer"], before[2]["payer"],
        "another user is untouched"
    );
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(without_payer(b.clone()), without_payer(a.clone()));
    }
    // Rebuilt from the log as of now: erased too (the key is gone, not just the row).
    let as_of = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let rebuilt = get(
        &app,
        "auditor",
        &format!(
            "/api/v1/payments/{paid}?as_of={}",
            as_of.replace('+', "%2B").replace(':', "%3A")
        ),
    )
    .await;
    assert_eq!(rebuilt["payer"], erased);
    let totals_after = get(&app, "finance", "/api/v1/ledger/totals").await;
    assert_eq!(totals_after["currencies"], totals_before);
    assert_eq!(totals_after["matches"], true);
    // The log is byte-for-byte what it was, and verifies.
    let log_after: Vec<String> =
        sqlx::query_scalar("SELECT to_jsonb(e)::text FROM events e ORDER BY position")
            .fetch_all(&pool)
            .await
            .expect("dump");
    assert_eq!(log_before, log_after, "shredding never touches the log");
    let verify = get(&app, "auditor", "/api/v1/audit/verify").await;
    assert_eq!(verify["ok"], true, "{verify}");
    let cli_verify = ledger_cmd(&app.db.url, &dir)
        .arg("verify")
        .output()
        .expect("run ledger verify");
    assert!(
        cli_verify.status.success(),
        "ledger verify: {}{}",
        String::from_utf8_lossy(&cli_verify.stdout),
        String::from_utf8_lossy(&cli_verify.stderr)
    );
    // A rebuild of every read table from the log agrees with the live (erased) tables.
    let replay = ledger_cmd(&app.db.url, &dir)
        .args(["replay", "--check"])
        .output()
        .expect("run ledger replay");
    assert!(
        replay.status.success(),
        "ledger replay --check: {}",
        String::from_utf8_lossy(&replay.stdout)
    );
    // The user may pay again: new payer data gets a new key and is shown masked.
    let fresh = create_with_payer(&app, &user, "5.00", json!({"name": "张三"})).await;
    let fresh = get(&app, "auditor", &format!("/api/v1/payments/{fresh}")).await;
    assert_eq!(fresh["payer"]["name"], "张*");
    assert_eq!(
        get(&app, "auditor", &format!("/api/v1/payments/{paid}")).await["payer"],
        erased
    );
    println!(
        "shred: {} -> 2 payments of the user read [erased] (detail, cache and as_of), 1 of \
         another user intact; amounts, statuses, refunds and totals unchanged; {} events \
         unchanged and verified (API and `ledger verify`); `ledger replay --check` no drift",
        said.trim(),
        log_after.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// Nothing sensitive in logs, error bodies or metrics
// ---------------------------------------------------------------------------------------

struct Server {
    child: Child,
    log: std::path::PathBuf,
    dir: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_or_payer_data_reaches_the_logs_error_bodies_or_metrics() {
    let db = TestDb::new().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let dir = temp_dir("loggrep");
    let log = dir.join("serve.log");
    let file = std::fs::File::create(&log).expect("log");
    let id = Uuid::new_v4().simple().to_string();
    let stream = format!("L{}", &id[..12]);
    // The most verbose level our own code and the HTTP stack log at.
    let child = ledger_cmd(&db.url, &dir)
        .arg("serve")
        .env("NATS_URL", NATS_URL)
        .env("LEDGER_NATS_PREFIX", format!("l{}", &id[..12]))
        .env("LEDGER_NATS_STREAM", &stream)
        .env("LEDGER_BIND", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "debug")
        .stdout(file.try_clone().expect("log"))
        .stderr(file)
        .spawn()
        .expect("start ledger serve");
    let mut server = Server { child, log, dir };
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while !matches!(reqwest::get(format!("{base}/healthz")).await, Ok(r) if r.status().is_success())
    {
        if let Some(s) = server.child.try_wait().expect("wait") {
            panic!("serve exited: {s}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "serve never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let name = "Zhang Sanfeng-Secretname";
    let card = "4111 1111 1111 1111";
    let card_digits = "4111111111111111";
    let bad_card = "4111111111111112";
    let iban = "DE89370400440532013000";
    let client = Client::new(&base, "t-client", "client-secret-1");
    let create = |payer: Value| {
        json!({
            "amount": "10.00", "currency": "CNY", "payment_method": "credit_card",
            "order_id": format!("LOG-{}", Uuid::new_v4().simple()), "user_id": "log-user",
            "payer": payer,
        })
        .to_string()
    };
    // Accepted, refused for a bad card, refused for shapes serde complains about (a payer
    // that is a string, a number, with unknown or mistyped fields), a bad signature made
    // with the wrong secret, and an unknown key.
    let bodies = [
        create(json!({"name": name, "account": card})),
        create(json!({"name": name, "account": iban})),
        create(json!({"name": name, "account": bad_card})),
        create(json!(card)),
        create(json!(card_digits)),
        create(json!(card_digits.parse::<u64>().expect("digits"))),
        create(json!({"name": name, "account": card, "cvv": card})),
        create(json!({"name": [name], "account": card_digits})),
        create(json!({"name": name, "account": {"number": card}})),
        format!("{{\"payer\": {{\"name\": \"{name}\", \"account\": \"{card}\""),
        create(json!({"name": name, "account": format!("{card}\u{0}")})),
    ];
    let mut answers = Vec::new();
    for body in &bodies {
        let a = client
            .send("POST", "/api/v1/payments/create", Some(body), &[])
            .await
            .expect("create");
        answers.push((a.status, a.body.to_string()));
    }
    let accepted = answers.iter().filter(|(s, _)| *s == 201).count();
    let wrong_secret = Client::new(&base, "t-client", "client-secret-WRONG");
    let a = wrong_secret
        .send("POST", "/api/v1/payments/create", Some(&bodies[0]), &[])
        .await
        .expect("bad signature");
    assert_eq!(a.status, 401);
    answers.push((a.status, a.body.to_string()));
    let unknown = Client::new(&base, "t-nobody", "client-secret-1");
    let a = unknown
        .send("POST", "/api/v1/payments/create", Some(&bodies[0]), &[])
        .await
        .expect("unknown key");
    answers.push((a.status, a.body.to_string()));
    // Read everything back: detail, list, events feed (the payer there is ciphertext).
    let ops = Client::new(&base, "t-auditor", "auditor-secret-1");
    for target in ["/api/v1/payments?size=100", "/api/v1/events?limit=1000"] {
        let a = ops.send("GET", target, None, &[]).await.expect("get");
        assert_eq!(a.status, 200, "{}", a.body);
        answers.push((a.status, a.body.to_string()));
    }
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");

    // Stop the server so the log is complete.
    let pid = server.child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let deadline = Instant::now() + Duration::from_secs(40);
    while server.child.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "serve did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let logs = std::fs::read_to_string(&server.log).expect("read log");

    let secrets = [
        name,
        "Secretname",
        card,
        card_digits,
        bad_card,
        "1111 1111",
        iban,
        "client-secret-1",
        "admin-secret-1",
        "operator-secret-1",
        "alipay-secret-1",
        "card-secret-1",
        "client-secret-WRONG",
        MASTER_KEY_HEX,
        SIGNING_KEY_HEX,
    ];
    let mut leaks = Vec::new();
    for s in secrets {
        if logs.contains(s) {
            leaks.push(format!("log contains {s:?}"));
        }
        if metrics.contains(s) {
            leaks.push(format!("/metrics contains {s:?}"));
        }
        for (status, body) in &answers {
            if body.contains(s) {
                leaks.push(format!("a {status} body contains {s:?}: {body}"));
            }
        }
    }
    println!(
        "log grep: {} requests ({accepted} accepted), {} log lines ({} bytes at RUST_LOG=debug), \
         {} bytes of /metrics, {} secret strings checked: {} leaks",
        answers.len(),
        logs.lines().count(),
        logs.len(),
        metrics.len(),
        secrets.len(),
        leaks.len()
    );
    assert!(accepted >= 2, "{answers:#?}");
    assert!(leaks.is_empty(), "{leaks:#?}");
    if let Ok(c) = async_nats::connect(NATS_URL).await {
        let _ = async_nats::jetstream::new(c).delete_stream(&stream).await;
    }
}
