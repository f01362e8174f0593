//! The operations view against the real service: after real traffic (create, notify, refund,
//! reads, a bad signature, a replayed nonce, an idempotent replay and a gateway retry),
//! `/metrics` exports every metric the Grafana dashboards and the Prometheus alert rules
//! (`deploy/`) use, each with `# HELP`, counters ending in `_total`; every metric the code
//! records is described in `telemetry::METRICS`; the dashboards are valid provisioned
//! dashboards; and the periodic checks (`watch`) report a healthy hash chain as 1 and a
//! tampered one as 0, and stop promptly when cancelled.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use crate::common::{Options, TestApp};
use ledger::gateway::sandbox::Faults;
use ledger::telemetry::{Kind, METRICS};
use ledger::watch::Watch;
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;
use yaml_rust2::{Yaml, YamlLoader};

const WAIT_MAX: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn dashboards() -> Vec<(String, Value)> {
    let dir = crate::common::repo().join("deploy/grafana/dashboards");
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .expect("deploy/grafana/dashboards exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let v = serde_json::from_str(&read(&p))
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", p.display()));
            (p.file_name().unwrap().to_string_lossy().into_owned(), v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(
        out.iter().any(|d| d.0 == "ledger-overview.json")
            && out.iter().any(|d| d.0 == "ledger-finance.json"),
        "both dashboards exist"
    );
    out
}

fn alert_rules() -> Vec<Yaml> {
    let text = read(&crate::common::repo().join("deploy/prometheus/alerts.yml"));
    let doc = YamlLoader::load_from_str(&text).expect("alerts.yml is YAML");
    let mut rules = Vec::new();
    for group in doc[0]["groups"].as_vec().expect("groups") {
        rules.extend(group["rules"].as_vec().expect("rules").iter().cloned());
    }
    rules
}

/// Every `ledger_…` name in a PromQL expression.
fn metric_names(expr: &str, into: &mut BTreeSet<String>) {
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("ledger_") {
        let start = i + at;
        let boundary = start == 0 || {
            let b = bytes[start - 1];
            !(b.is_ascii_alphanumeric() || b == b'_' || b == b':')
        };
        let end = start
            + expr[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(expr.len() - start);
        if boundary {
            into.insert(expr[start..end].to_owned());
        }
        i = end;
    }
}

/// The PromQL of a dashboard: every panel target's `expr` and every variable's query.
fn dashboard_queries(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr" | "definition", Value::String(s)) => out.push(s.clone()),
                    ("query", Value::String(s)) => out.push(s.clone()),
                    _ => dashboard_queries(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| dashboard_queries(x, out)),
        _ => {}
    }
}

/// Every `ledger_` metric name the dashboards and the alert rules use, with where.
fn referenced_metrics() -> BTreeMap<String, BTreeSet<String>> {
    let mut by_name: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (file, d) in dashboards() {
        let mut queries = Vec::new();
        dashboard_queries(&d, &mut queries);
        let mut names = BTreeSet::new();
        for q in &queries {
            metric_names(q, &mut names);
        }
        for n in names {
            by_name.entry(n).or_default().insert(file.clone());
        }
    }
    for rule in alert_rules() {
        let alert = rule["alert"]
            .as_str()
            .expect("every rule is an alert")
            .to_owned();
        let mut names = BTreeSet::new();
        metric_names(rule["expr"].as_str().expect("expr"), &mut names);
        assert!(
            !names.is_empty() || alert == "LedgerDown",
            "{alert} uses no ledger metric"
        );
        for n in names {
            by_name
                .entry(n)
                .or_default()
                .insert(format!("alerts.yml {alert}"));
        }
    }
    by_name
}

/// One metric family of a scrape.
#[derive(Debug, Default)]
struct Family {
    kind: Option<String>,
    help: bool,
    samples: usize,
}

fn parse_scrape(text: &str) -> BTreeMap<String, Family> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or_default();
            families.entry(name.to_owned()).or_default().help = true;
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().unwrap_or_default();
            families.entry(name.to_owned()).or_default().kind = parts.next().map(str::to_owned);
        } else if !line.is_empty() && !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|b| families.get(*b).is_some_and(|f| f.kind.is_some()))
                })
                .unwrap_or(name);
            families.entry(base.to_owned()).or_default().samples += 1;
        }
    }
    families
}

/// Whether `name`, as a query names it, is exported: itself, or the histogram it is the
/// `_bucket`, `_sum` or `_count` series of.
fn exported(name: &str, families: &BTreeMap<String, Family>) -> bool {
    if families.get(name).is_some_and(|f| f.samples > 0) {
        return true;
    }
    ["_bucket", "_sum", "_count"].iter().any(|s| {
        name.strip_suffix(s).is_some_and(|base| {
            families
                .get(base)
                .is_some_and(|f| f.samples > 0 && f.kind.as_deref() == Some("histogram"))
        })
    })
}

async fn scrape(app: &TestApp) -> String {
    let r = reqwest::get(format!("{}/metrics", app.base))
        .await
        .expect("scrape /metrics");
    assert_eq!(r.status(), 200);
    r.text().await.expect("metrics text")
}

/// A signed POST with a chosen nonce (to replay it).
async fn post_with_nonce(app: &TestApp, path: &str, body: &str, nonce: &str) -> (u16, Value) {
    let ts = chrono::Utc::now().timestamp().to_string();
    let sig = ledger::signing::sign("client-secret-1", &ts, nonce, "POST", path, body.as_bytes());
    let r = reqwest::Client::new()
        .post(format!("{}{path}", app.base))
        .header("x-key-id", "t-client")
        .header("x-timestamp", ts)
        .header("x-nonce", nonce)
        .header("x-signature", sig)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("post");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn create_body(order: &str, amount: &str) -> String {
    json!({
        "amount": amount, "currency": "CNY", "payment_method": "alipay",
        "order_id": order, "user_id": "user-metrics",
    })
    .to_string()
}

/// Drives every kind of request the dashboards show through the service.
async fn traffic(app: &TestApp) {
    // The sandbox's first call fails once: the create is retried (ledger_gateway_retries_total).
    let id = app.paid_payment("80.00").await;
    let operator = app.client("operator");
    let refund = operator
        .send(
            "POST",
            &format!("/api/v1/payments/{id}/refund"),
            Some(r#"{"amount":"30.00","reason":"metrics test"}"#),
            &[],
        )
        .await
        .expect("refund");
    assert_eq!(refund.status, 201, "{}", refund.body);

    let auditor = app.client("auditor");
    for path in [
        format!("/api/v1/payments/{id}"),
        format!("/api/v1/payments/{id}"),
        format!("/api/v1/payments/{id}/status"),
        format!("/api/v1/payments/{id}/events"),
        "/api/v1/payments?page=1&size=10".to_owned(),
        "/api/v1/payments/history?user_id=user-1".to_owned(),
        "/api/v1/audit/verify".to_owned(),
    ] {
        let a = auditor.send("GET", &path, None, &[]).await.expect("read");
        assert_eq!(a.status, 200, "{path}: {}", a.body);
    }
    let totals = app
        .client("finance")
        .send("GET", "/api/v1/ledger/totals", None, &[])
        .await
        .expect("totals");
    assert_eq!(totals.status, 200, "{}", totals.body);

    // A bad signature: 401 40101.
    let forged = ledger::client::Client::new(&app.base, "t-client", "not-the-secret")
        .send("GET", &format!("/api/v1/payments/{id}/status"), None, &[])
        .await
        .expect("forged");
    assert_eq!(forged.status, 401, "{}", forged.body);

    // A replayed nonce: the second POST with the same nonce is 401 40102.
    let nonce = format!("metrics-nonce-{}", Uuid::new_v4().simple());
    let body = create_body(&format!("ORD-M-{}", Uuid::new_v4().simple()), "5.00");
    let (first, _) = post_with_nonce(app, "/api/v1/payments/create", &body, &nonce).await;
    assert_eq!(first, 201);
    let (second, answer) = post_with_nonce(app, "/api/v1/payments/create", &body, &nonce).await;
    assert_eq!(
        (second, answer["code"].as_u64()),
        (401, Some(40102)),
        "{answer}"
    );

    // An idempotent replay: the same key and body answer the first answer again.
    let key = format!("metrics-{}", Uuid::new_v4().simple());
    let body = create_body(&format!("ORD-M-{}", Uuid::new_v4().simple()), "6.00");
    let client = app.client("client");
    let mut ids = Vec::new();
    for _ in 0..2 {
        let a = client
            .send(
                "POST",
                "/api/v1/payments/create",
                Some(&body),
                &[("idempotency-key", &key)],
            )
            .await
            .expect("create");
        assert_eq!(a.status, 201, "{}", a.body);
        ids.push(a.body["data"]["payment_id"].clone());
    }
    assert_eq!(ids[0], ids[1], "the replay answers the first payment");

    let ready = reqwest::get(format!("{}/readyz", app.base))
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    app.settle().await;
}

#[tokio::test]
async fn every_metric_the_dashboards_and_alerts_use_is_exported_with_help_after_real_traffic() {
    let app = TestApp::spawn_with(Options {
        faults: Faults::parse("fail_next=1").expect("fault list"),
        ..Options::default()
    })
    .await;
    traffic(&app).await;
    // What the periodic checks export every LEDGER_WATCH_INTERVAL_SECS: the pass at start-up
    // saw no money yet, so run the next one now instead of waiting a minute.
    let pass = Watch::new(app.state.clone()).pass().await;
    assert!(pass.chain.as_ref().is_ok_and(|c| c.report.ok), "{pass:?}");
    assert!(pass.totals.as_ref().is_ok_and(|t| t.matches()), "{pass:?}");

    let referenced = referenced_metrics();
    assert!(
        referenced.len() > 30,
        "only {} names found",
        referenced.len()
    );
    // The refund driver reports its queue on its next pass (at most a second away).
    let deadline = tokio::time::Instant::now() + WAIT_MAX;
    let (text, families) = loop {
        let text = scrape(&app).await;
        let families = parse_scrape(&text);
        let missing = referenced
            .keys()
            .filter(|n| !exported(n, &families))
            .count();
        if missing == 0 || tokio::time::Instant::now() > deadline {
            break (text, families);
        }
        tokio::time::sleep(POLL).await;
    };

    // (a) Every name a dashboard or an alert uses is exported.
    let missing: Vec<String> = referenced
        .iter()
        .filter(|(n, _)| !exported(n, &families))
        .map(|(n, used)| {
            format!(
                "{n} (used by {})",
                used.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        })
        .collect();
    assert!(
        missing.is_empty(),
        "not exported after traffic:\n{}",
        missing.join("\n")
    );

    for (name, f) in families.iter().filter(|(n, _)| n.starts_with("ledger_")) {
        // (b) Every exported ledger metric has # HELP.
        assert!(f.help, "{name} has no # HELP line");
        // (c) Counters, and only counters, end in _total.
        let kind = f.kind.as_deref().unwrap_or("untyped");
        assert_eq!(
            kind == "counter",
            name.ends_with("_total"),
            "{name} is a {kind}: counters, and only counters, end in _total"
        );
        // Latencies are histograms (the dashboards take quantiles from their buckets).
        if name.ends_with("_seconds")
            && METRICS
                .iter()
                .any(|m| m.0 == name && m.1 == Kind::Histogram)
        {
            assert_eq!(kind, "histogram", "{name}");
        }
    }
    // Secrets never become labels or values.
    for secret in [
        "client-secret-1",
        "operator-secret-1",
        "alipay-secret-1",
        "not-the-secret",
    ] {
        assert!(!text.contains(secret), "/metrics contains {secret}");
    }
    app.stop().await;
}

/// The names the code records (`metrics::counter!("…")` and the like), with their kind.
fn recorded_in_code() -> BTreeMap<String, Kind> {
    let mut found = BTreeMap::new();
    let mut dirs = vec![
        crate::common::repo().join("src"),
        crate::common::repo().join("store/src"),
        crate::common::repo().join("projections/src"),
    ];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("source dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let text = read(&path);
            for (mac, kind) in [
                ("counter!(", Kind::Counter),
                ("gauge!(", Kind::Gauge),
                ("histogram!(", Kind::Histogram),
            ] {
                for (at, _) in text.match_indices(mac) {
                    let rest = text[at + mac.len()..].trim_start();
                    if let Some(name) = rest
                        .strip_prefix('"')
                        .and_then(|r| r.split('"').next())
                        .filter(|n| n.starts_with("ledger_"))
                    {
                        found.insert(name.to_owned(), kind);
                    }
                }
            }
        }
    }
    found
}

#[test]
fn every_metric_the_code_records_is_described_once_with_its_kind() {
    let described: BTreeMap<&str, Kind> = METRICS.iter().map(|m| (m.0, m.1)).collect();
    let recorded = recorded_in_code();
    assert!(recorded.len() > 20, "found only {recorded:?}");
    let wrong: Vec<String> = recorded
        .iter()
        .filter(|(name, kind)| described.get(name.as_str()) != Some(*kind))
        .map(|(name, kind)| {
            format!(
                "{name}: recorded as a {kind:?}, described as {:?}",
                described.get(name.as_str())
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "describe these in telemetry::METRICS:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn dashboards_are_provisioned_grafana_dashboards_on_the_provisioned_datasource() {
    let ds = YamlLoader::load_from_str(&read(
        &crate::common::repo().join("deploy/grafana/provisioning/datasources/prometheus.yml"),
    ))
    .expect("datasource YAML");
    let uid = ds[0]["datasources"][0]["uid"]
        .as_str()
        .expect("the datasource has a uid")
        .to_owned();
    let provider = YamlLoader::load_from_str(&read(
        &crate::common::repo().join("deploy/grafana/provisioning/dashboards/ledger.yml"),
    ))
    .expect("provider YAML");
    assert_eq!(provider[0]["providers"][0]["type"].as_str(), Some("file"));
    let compose = read(&crate::common::repo().join("docker-compose.yml"));
    let path = provider[0]["providers"][0]["options"]["path"]
        .as_str()
        .expect("provider path");
    assert!(
        compose.contains(&format!("./deploy/grafana/dashboards:{path}")),
        "docker-compose.yml mounts the dashboards at the provider's path {path}"
    );

    let mut uids = BTreeSet::new();
    for (file, d) in dashboards() {
        assert!(
            d["schemaVersion"].as_i64().unwrap_or(0) >= 38,
            "{file}: schemaVersion"
        );
        assert!(
            uids.insert(d["uid"].as_str().expect("uid").to_owned()),
            "{file}: uid reused"
        );
        assert!(
            d["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{file}: title"
        );
        let panels = d["panels"].as_array().expect("panels");
        let mut ids = BTreeSet::new();
        for p in panels {
            let title = p["title"].as_str().unwrap_or("?");
            assert!(
                ids.insert(p["id"].as_i64().expect("panel id")),
                "{file}: id of {title}"
            );
            let g = &p["gridPos"];
            let (x, w) = (g["x"].as_i64().unwrap_or(-1), g["w"].as_i64().unwrap_or(0));
            assert!(
                x >= 0 && w > 0 && x + w <= 24,
                "{file}: {title} is off the grid"
            );
            if p["type"] == "row" {
                continue;
            }
            assert_eq!(
                p["datasource"]["uid"].as_str(),
                Some(uid.as_str()),
                "{file}: {title}"
            );
            let targets = p["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{file}: {title} has no query");
            for t in targets {
                assert_eq!(
                    t["datasource"]["uid"].as_str(),
                    Some(uid.as_str()),
                    "{file}: {title}"
                );
                assert!(
                    t["expr"].as_str().is_some_and(|e| !e.is_empty()),
                    "{file}: {title}"
                );
            }
        }
        for v in d["templating"]["list"].as_array().expect("templating") {
            assert_eq!(
                v["datasource"]["uid"].as_str(),
                Some(uid.as_str()),
                "{file}: variable"
            );
        }
    }
}

#[test]
fn every_alert_says_what_to_do() {
    let rules = alert_rules();
    for expected in [
        "LedgerDown",
        "LedgerDatabaseUnreachable",
        "LedgerBusDisconnected",
        "LedgerHighServerErrorRate",
        "LedgerProjectionLagging",
        "LedgerProjectionDelayed",
        "LedgerRelayBacklogGrowing",
        "LedgerRefundStuck",
        "LedgerTotalsMismatch",
        "LedgerChainVerificationFailed",
        "LedgerChainVerificationStale",
    ] {
        let rule = rules
            .iter()
            .find(|r| r["alert"].as_str() == Some(expected))
            .unwrap_or_else(|| panic!("no alert {expected}"));
        for a in ["summary", "description"] {
            assert!(
                rule["annotations"][a]
                    .as_str()
                    .is_some_and(|s| s.len() > 10),
                "{expected} has no {a}"
            );
        }
        assert!(
            rule["labels"]["severity"].as_str().is_some(),
            "{expected}: severity"
        );
    }
}

/// Edits one event's data as a superuser with the immutability triggers off (as in
/// `tamper.rs`).
async fn tamper_with_first_event(app: &TestApp) {
    let mut conn = PgConnection::connect(&app.db.url).await.expect("connect");
    let mut tx = conn.begin().await.expect("begin");
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .expect("switch triggers off");
    sqlx::query(
        "UPDATE events SET data = jsonb_set(data, '{amount}', '\"1.00\"') WHERE position = 1",
    )
    .execute(&mut *tx)
    .await
    .expect("edit an event");
    tx.commit().await.expect("commit");
}

/// Exports `pass` to a recorder of its own (other tests share the process-wide one) and
/// returns the text a scrape would show.
fn exported_text(pass: &ledger::watch::Pass) -> String {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    ::metrics::with_local_recorder(&recorder, || pass.export());
    handle.render()
}

fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn a_watch_pass_reports_a_healthy_chain_as_1_and_a_tampered_one_as_0() {
    let app = TestApp::spawn().await;
    app.paid_payment("12.34").await;
    app.settle().await;
    let watch = Watch::new(app.state.clone());

    let healthy = watch.check().await;
    let chain = healthy.chain.as_ref().expect("the chain was verified");
    assert!(chain.report.ok, "{:?}", chain.report);
    assert!(chain.report.events_checked >= 3, "{:?}", chain.report);
    let text = exported_text(&healthy);
    assert_eq!(sample(&text, "ledger_chain_verify_ok"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "ledger_database_up"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "ledger_totals_matches"), Some(1.0), "{text}");
    assert_eq!(
        sample(&text, "ledger_chain_verified_events"),
        Some(chain.report.events_checked as f64)
    );
    assert!(
        sample(&text, "ledger_chain_verify_last_success_timestamp_seconds")
            .is_some_and(|t| t > 0.0)
    );
    assert!(
        text.contains("ledger_paid_amount{currency=\"CNY\"} 12.34"),
        "{text}"
    );

    tamper_with_first_event(&app).await;
    let tampered = watch.check().await;
    let chain = tampered.chain.as_ref().expect("the chain was verified");
    assert!(!chain.report.ok);
    assert_eq!(chain.report.first_broken_position, Some(1));
    let text = exported_text(&tampered);
    assert_eq!(sample(&text, "ledger_chain_verify_ok"), Some(0.0), "{text}");
    assert_eq!(
        sample(&text, "ledger_verify_failures_total"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "ledger_chain_verify_last_success_timestamp_seconds"),
        None,
        "a failed verification is no success"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_watch_task_stops_promptly_when_cancelled() {
    let app = TestApp::spawn().await;
    let cancel = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(Watch::new(app.state.clone()).run(cancel.clone()));
    // Let it start its first pass, then cancel mid-way or during its pause.
    tokio::time::sleep(Duration::from_millis(20)).await;
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the watch stopped within 5 s")
        .expect("the watch did not panic");
    app.stop().await;
}
