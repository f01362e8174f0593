//! Several nodes (issue 16): three `ledger serve` processes — one `--role all`, two
//! `--role api` — on one database and a three-server NATS JetStream cluster (stream replicas
//! 3), all started by the test on local ports, under a mixed load of creates, notifications and
//! refunds spread over the nodes. Mid-load the leader node is killed (SIGKILL), then one NATS
//! server. The test checks that another node takes every duty within the bound, that every
//! accepted request is in the log, that the stream holds every event exactly once, that the
//! gateway executed every refund once (the sandboxes share a journal, as a real gateway's
//! servers share their books), and that a read on one node right after a write on another
//! sees the write. The figures are printed (`cargo test cluster -- --nocapture`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use ledger::client::{Answer, Client};
use ledger::gateway::journal::{Decision, Entry, Journal};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::common::{TestDb, GATEWAY_SECRETS, KEYS, SANDBOX_SECRET};

const NATS_SERVER: &str = "/usr/sbin/nats-server";
/// Bounds on waiting for things that should happen in seconds (generous for a loaded machine;
/// the measured figures are printed, not asserted, except the takeover bound of the issue).
const START_MAX: Duration = Duration::from_secs(60);
const SETTLE_MAX: Duration = Duration::from_secs(90);
const REQUEST_MAX: Duration = Duration::from_secs(20);
/// The lease on a duty: a dead leader's duties move within about this plus a renewal period.
const LEASE_TTL_MS: u64 = 2_000;
/// The issue's bound on a takeover.
const TAKEOVER_MAX: Duration = Duration::from_secs(5);
const DUTIES: [&str; 4] = ["expiry", "projector", "refunds", "relay"];
const WORKERS: usize = 6;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn temp_dir(kind: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ledger-{kind}-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn join_urls(ports: &[u16]) -> String {
    ports
        .iter()
        .map(|p| format!("nats://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A NATS client on any server of a comma-separated list.
async fn nats_client(urls: &str) -> Option<async_nats::Client> {
    async_nats::connect(urls.split(',').collect::<Vec<_>>())
        .await
        .ok()
}

/// A process of the test's own, killed (SIGKILL) when dropped.
struct Proc {
    child: Option<Child>,
}

impl Proc {
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three nats-servers with JetStream, routed into one cluster.
struct NatsCluster {
    ports: Vec<u16>,
    servers: Vec<Proc>,
    dir: PathBuf,
}

impl NatsCluster {
    async fn start(size: usize) -> NatsCluster {
        let dir = temp_dir("nats-cluster");
        let ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let routes_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let routes = routes_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let cluster_name = format!("ledger-{}", &Uuid::new_v4().simple().to_string()[..8]);
        let servers = (0..size)
            .map(|i| {
                let store = dir.join(format!("n{i}"));
                std::fs::create_dir_all(&store).expect("store dir");
                let child = Command::new(NATS_SERVER)
                    .args(["-a", "127.0.0.1", "-p", &ports[i].to_string()])
                    .args(["-n", &format!("n{i}"), "-js", "-sd"])
                    .arg(&store)
                    .args([
                        "--cluster_name",
                        &cluster_name,
                        "--cluster",
                        &format!("nats://127.0.0.1:{}", routes_ports[i]),
                        "--routes",
                        &routes,
                    ])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start nats-server");
                Proc { child: Some(child) }
            })
            .collect();
        let cluster = NatsCluster {
            ports,
            servers,
            dir,
        };
        cluster.wait_for_jetstream().await;
        cluster
    }

    /// Every server's URL, as a client lists them (`NATS_URL`).
    fn urls(&self) -> String {
        join_urls(&self.ports)
    }

    /// Waits (bounded) until the cluster has elected its JetStream leader and takes a
    /// three-replica stream.
    async fn wait_for_jetstream(&self) {
        let started = Instant::now();
        let probe = format!("PROBE{}", &Uuid::new_v4().simple().to_string()[..8]);
        loop {
            let attempt = async {
                let client = nats_client(&self.urls()).await?;
                let js = async_nats::jetstream::new(client);
                js.create_stream(async_nats::jetstream::stream::Config {
                    name: probe.clone(),
                    subjects: vec![format!("{}.>", probe.to_lowercase())],
                    num_replicas: self.ports.len(),
                    ..Default::default()
                })
                .await
                .ok()?;
                js.delete_stream(&probe).await.ok()
            };
            if tokio::time::timeout(Duration::from_secs(5), attempt)
                .await
                .ok()
                .flatten()
                .is_some()
            {
                return;
            }
            assert!(
                started.elapsed() < START_MAX,
                "the NATS cluster did not elect a JetStream leader"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn kill(&mut self, i: usize) {
        self.servers[i].kill();
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for s in &mut self.servers {
            s.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One `ledger serve` process.
struct Node {
    name: &'static str,
    proc: Proc,
    base: String,
    log: PathBuf,
    /// Its id in the duty leases (from `/readyz`).
    id: String,
    pid: u32,
}

struct Shared {
    db_url: String,
    nats_urls: String,
    prefix: String,
    stream: String,
    journal: PathBuf,
    dir: PathBuf,
}

impl Node {
    async fn start(name: &'static str, role: &str, shared: &Shared) -> Node {
        let port = free_port();
        let data = shared.dir.join(name);
        std::fs::create_dir_all(&data).expect("data dir");
        let log = shared.dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(crate::common::ledger_bin())
            .args(["serve", "--role", role])
            .env("DATABASE_URL", &shared.db_url)
            .env("NATS_URL", &shared.nats_urls)
            .env("LEDGER_NATS_REPLICAS", "3")
            .env("LEDGER_NATS_PREFIX", &shared.prefix)
            .env("LEDGER_NATS_STREAM", &shared.stream)
            .env("LEDGER_BIND", format!("127.0.0.1:{port}"))
            .env("LEDGER_PUBLIC_URL", format!("http://127.0.0.1:{port}"))
            .env("LEDGER_API_KEYS", KEYS)
            .env("LEDGER_GATEWAY_SECRETS", GATEWAY_SECRETS)
            .env("LEDGER_MASTER_KEY", "4d".repeat(32))
            .env("LEDGER_SIGNING_KEY", "5e".repeat(32))
            .env("LEDGER_ENV", "test")
            .env("LEDGER_DATA_DIR", &data)
            .env("LEDGER_SANDBOX", "on")
            .env("LEDGER_SANDBOX_SECRET", SANDBOX_SECRET)
            .env("LEDGER_SANDBOX_JOURNAL", &shared.journal)
            .env("LEDGER_PAYMENT_TTL_SECS", "3600")
            .env("LEDGER_LEASE_TTL_MS", LEASE_TTL_MS.to_string())
            .env("LEDGER_DB_MAX_CONNECTIONS", "12")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .expect("start ledger serve");
        let pid = child.id();
        let mut node = Node {
            name,
            proc: Proc { child: Some(child) },
            base: format!("http://127.0.0.1:{port}"),
            log,
            id: String::new(),
            pid,
        };
        let started = Instant::now();
        loop {
            if let Some(ready) = node.readyz().await {
                node.id = ready["node"]
                    .as_str()
                    .expect("readyz names the node")
                    .into();
                return node;
            }
            if let Some(status) = node.proc.exited() {
                panic!("{name} exited at start ({status}):\n{}", node.log_tail());
            }
            assert!(
                started.elapsed() < START_MAX,
                "{name} did not start:\n{}",
                node.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `/readyz`'s data, whether ready or not; `None` when the node does not answer.
    async fn readyz(&self) -> Option<Value> {
        let r = reqwest::Client::new()
            .get(format!("{}/readyz", self.base))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        let body: Value = r.json().await.ok()?;
        Some(body["data"].clone())
    }

    async fn duties(&self) -> BTreeSet<String> {
        self.readyz()
            .await
            .and_then(|d| d["duties"].as_object().map(|m| m.keys().cloned().collect()))
            .unwrap_or_default()
    }

    fn client(&self, role: &str) -> Client {
        let (key, secret) = match role {
            "client" => ("t-client", "client-secret-1"),
            "operator" => ("t-operator", "operator-secret-1"),
            other => panic!("no key for {other}"),
        };
        Client::new(&self.base, key, secret)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        // The request log says little here: the rest (starts, takeovers, warnings) does.
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.contains(r#""message":"request""#))
            .collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

async fn send(client: &Client, method: &str, path: &str, body: Option<&Value>) -> Option<Answer> {
    send_with(client, method, path, body, &[]).await
}

async fn send_with(
    client: &Client,
    method: &str,
    path: &str,
    body: Option<&Value>,
    extra: &[(&str, &str)],
) -> Option<Answer> {
    let text = body.map(|b| b.to_string());
    tokio::time::timeout(
        REQUEST_MAX,
        client.send(method, path, text.as_deref(), extra),
    )
    .await
    .ok()?
    .ok()
}

/// What the load's workers had accepted (a 2xx answer) by the end.
#[derive(Default)]
struct Accepted {
    payments: Vec<String>,
    paid: Vec<String>,
    refunds: Vec<String>,
    /// Requests a node did not answer (it was killed, or a connection dropped): tried again
    /// on the next node with the same idempotency key, as a load balancer's client would.
    failovers: u64,
}

/// The nodes a worker may use: a killed node is left out, as a load balancer would.
type Pool = Arc<Mutex<Vec<(String, bool)>>>;

fn live_bases(pool: &Pool) -> Vec<String> {
    pool.lock()
        .unwrap()
        .iter()
        .filter(|(_, up)| *up)
        .map(|(b, _)| b.clone())
        .collect()
}

/// Sends a request to the worker's next node, moving on to the next live node (with the same
/// body and idempotency key) while nodes do not answer.
/// One request of the load: who signs it, and what it is.
struct Req<'a> {
    who: &'a str,
    method: &'a str,
    path: &'a str,
    body: &'a Value,
    idem: &'a str,
}

async fn spread(
    nodes: &Pool,
    turn: &mut usize,
    req: Req<'_>,
    accepted: &mut Accepted,
) -> Option<Answer> {
    let Req {
        who,
        method,
        path,
        body,
        idem,
    } = req;
    for _ in 0..6 {
        let bases = live_bases(nodes);
        *turn += 1;
        let base = &bases[*turn % bases.len()];
        let client = match who {
            "client" => Client::new(base, "t-client", "client-secret-1"),
            "operator" => Client::new(base, "t-operator", "operator-secret-1"),
            _ => Client::new(base, "alipay", "alipay-secret-1"),
        };
        match send_with(
            &client,
            method,
            path,
            Some(body),
            &[("idempotency-key", idem)],
        )
        .await
        {
            Some(a) if a.status == 503 => {
                accepted.failovers += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Some(a) => return Some(a),
            None => {
                accepted.failovers += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    None
}

/// One worker: creates a payment, pays it through the gateway's notification, refunds part of
/// every other one — each step on the next node — until `stop`.
async fn worker(w: usize, nodes: Pool, stop: Arc<AtomicBool>) -> Accepted {
    let mut accepted = Accepted::default();
    let mut turn = w;
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let order = format!("CL-{w}-{i}-{}", Uuid::new_v4().simple());
        let amount = format!("{}.{:02}", 10 + (w * 7 + i) % 40, i % 100);
        let create = json!({
            "amount": amount, "currency": "CNY", "payment_method": "alipay",
            "order_id": order, "user_id": format!("cluster-user-{w}"),
        });
        let Some(a) = spread(
            &nodes,
            &mut turn,
            Req {
                who: "client",
                method: "POST",
                path: "/api/v1/payments/create",
                body: &create,
                idem: &format!("create-{order}"),
            },
            &mut accepted,
        )
        .await
        else {
            continue;
        };
        assert_eq!(a.status, 201, "create: {}", a.body);
        let id = a.body["data"]["payment_id"].as_str().unwrap().to_owned();
        let no = a.body["data"]["payment_no"].as_str().unwrap().to_owned();
        accepted.payments.push(id.clone());
        let notify = json!({
            "payment_no": no,
            "callback_no": format!("CB-{order}"),
            "status": "success",
            "amount": amount,
            "gateway_trade_no": format!("T-{order}"),
        });
        let Some(a) = spread(
            &nodes,
            &mut turn,
            Req {
                who: "gateway",
                method: "POST",
                path: "/api/v1/gateways/alipay/notify",
                body: &notify,
                idem: &format!("notify-{order}"),
            },
            &mut accepted,
        )
        .await
        else {
            continue;
        };
        assert_eq!(a.status, 200, "notify: {}", a.body);
        accepted.paid.push(id.clone());
        if i.is_multiple_of(2) {
            let refund = json!({"amount": "1.00", "reason": "cluster test"});
            if let Some(a) = spread(
                &nodes,
                &mut turn,
                Req {
                    who: "operator",
                    method: "POST",
                    path: &format!("/api/v1/payments/{id}/refund"),
                    body: &refund,
                    idem: &format!("refund-{order}"),
                },
                &mut accepted,
            )
            .await
            {
                assert!(
                    a.status == 201 || a.status == 200,
                    "refund: {} {}",
                    a.status,
                    a.body
                );
                accepted
                    .refunds
                    .push(a.body["data"]["refund_no"].as_str().unwrap().to_owned());
            }
        }
    }
    accepted
}

/// Who holds each duty now (live leases only).
async fn holders(pool: &PgPool) -> BTreeMap<String, String> {
    sqlx::query_as::<_, (String, String)>(
        "SELECT duty, holder FROM duty_leases WHERE expires_at > now()",
    )
    .fetch_all(pool)
    .await
    .expect("duty leases")
    .into_iter()
    .collect()
}

async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.expect(sql)
}

/// A write on one node, then at once a read on another with the write's position: the read
/// sees the write (it waits for the projector, wherever it runs). Returns the reads made.
async fn read_your_writes_across(nodes: &[&Node], rounds: usize) -> usize {
    let mut reads = 0;
    for i in 0..rounds {
        let (writer, reader) = (nodes[i % nodes.len()], nodes[(i + 1) % nodes.len()]);
        let order = format!("RYW-{i}-{}", Uuid::new_v4().simple());
        let a = send(
            &writer.client("client"),
            "POST",
            "/api/v1/payments/create",
            Some(&json!({
                "amount": "3.30", "currency": "CNY", "payment_method": "alipay",
                "order_id": order, "user_id": "ryw-user",
            })),
        )
        .await
        .unwrap_or_else(|| panic!("{} did not answer a create", writer.name));
        assert_eq!(a.status, 201, "{}", a.body);
        let position = a.body["data"]["position"]
            .as_i64()
            .expect("a write answers its position");
        let id = a.body["data"]["payment_id"].as_str().unwrap();
        // The writer itself answered only once its read tables had the write.
        let own = send(
            &writer.client("operator"),
            "GET",
            &format!("/api/v1/payments/{id}"),
            None,
        )
        .await
        .expect("read on the writer");
        assert_eq!(
            own.status, 200,
            "{} reads its own write: {}",
            writer.name, own.body
        );
        let other = send(
            &reader.client("operator"),
            "GET",
            &format!("/api/v1/payments/{id}?min_position={position}"),
            None,
        )
        .await
        .expect("read on another node");
        assert_eq!(
            other.status, 200,
            "{} reads {}'s write at {position}: {}",
            reader.name, writer.name, other.body
        );
        assert_eq!(other.body["data"]["order_no"], json!(order));
        assert!(other.position.unwrap_or(0) >= position);
        reads += 1;
    }
    reads
}

/// Every message's `Nats-Msg-Id`, read back from the start through any live server. A cluster
/// that just lost a server may still be electing leaders: the read is tried again (bounded).
async fn stream_ids(urls: &str, stream: &str, expected: u64) -> Vec<String> {
    let started = Instant::now();
    loop {
        match read_stream_ids(urls, stream, expected).await {
            Ok(ids) => return ids,
            Err(e) => assert!(
                started.elapsed() < SETTLE_MAX,
                "cannot read the stream back: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn read_stream_ids(urls: &str, stream: &str, expected: u64) -> Result<Vec<String>, String> {
    use async_nats::jetstream::consumer::{pull, DeliverPolicy};
    let client = nats_client(urls).await.ok_or("no server answers")?;
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream(stream).await.map_err(|e| e.to_string())?;
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    let mut ids = Vec::new();
    while (ids.len() as u64) < expected {
        let m = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .map_err(|_| format!("stalled after {} messages", ids.len()))?
            .ok_or("the consumer ended")?
            .map_err(|e| e.to_string())?;
        ids.push(
            m.headers
                .as_ref()
                .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                .map(|v| v.as_str().to_owned())
                .ok_or("a message without Nats-Msg-Id")?,
        );
    }
    Ok(ids)
}

async fn stream_messages(urls: &str, stream: &str) -> Option<u64> {
    let client = nats_client(urls).await?;
    let js = async_nats::jetstream::new(client);
    let mut s = js.get_stream(stream).await.ok()?;
    s.info().await.ok().map(|i| i.state.messages)
}

/// Waits until the log is still, every refund has its outcome, the projector and the relay
/// are at the head, and the stream holds as many messages as the log has events.
async fn settle(pool: &PgPool, nodes: &[&Node], urls: &str, stream: &str) -> i64 {
    let started = Instant::now();
    loop {
        let head = scalar(pool, "SELECT COALESCE(max(position), 0) FROM events").await;
        let open_refunds = scalar(
            pool,
            "SELECT count(*) FROM events r WHERE r.event_type = 'refund_requested' \
             AND NOT EXISTS (SELECT 1 FROM events t \
               WHERE t.event_type IN ('refunded', 'refund_failed') \
               AND t.data->>'refund_no' = r.data->>'refund_no')",
        )
        .await;
        let relayed = ledger::store::checkpoint(pool, ledger::bus::RELAY_CHECKPOINT)
            .await
            .expect("relay checkpoint");
        let mut projected_everywhere = true;
        for n in nodes {
            let p = n
                .readyz()
                .await
                .and_then(|d| d["projected_position"].as_i64());
            projected_everywhere &= p == Some(head);
        }
        let messages = stream_messages(urls, stream).await.unwrap_or(0);
        if open_refunds == 0 && relayed == head && projected_everywhere && messages >= head as u64 {
            return head;
        }
        assert!(
            started.elapsed() < SETTLE_MAX,
            "did not settle: head {head}, relayed {relayed}, stream {messages}, open refunds \
             {open_refunds}, projected everywhere {projected_everywhere}\n{}",
            nodes
                .iter()
                .map(|n| n.log_tail())
                .collect::<Vec<_>>()
                .join("\n----\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_and_three_nats_servers_survive_losing_the_leader_and_a_server() {
    let db = TestDb::new().await;
    let pool = db.pool().await;
    let mut nats = NatsCluster::start(3).await;
    let id = Uuid::new_v4().simple().to_string();
    let dir = temp_dir("cluster");
    let shared = Shared {
        db_url: db.url.clone(),
        nats_urls: nats.urls(),
        prefix: format!("c{}", &id[..12]),
        stream: format!("C{}", &id[..12]),
        journal: dir.join("sandbox-journal.tsv"),
        dir: dir.clone(),
    };

    // The `all` node starts first and takes every duty; the `api` nodes stand by.
    let mut a = Node::start("A (all)", "all", &shared).await;
    let started = Instant::now();
    while a.duties().await.len() < DUTIES.len() {
        assert!(
            started.elapsed() < START_MAX,
            "A took {:?}:\n{}",
            a.duties().await,
            a.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let b = Node::start("B (api)", "api", &shared).await;
    let c = Node::start("C (api)", "api", &shared).await;
    // Standbys stay standbys while the preferred node lives (a few renewals later).
    tokio::time::sleep(Duration::from_millis(LEASE_TTL_MS)).await;
    assert_eq!(
        a.duties().await,
        DUTIES
            .iter()
            .map(|d| d.to_string())
            .collect::<BTreeSet<_>>(),
        "the all node holds every duty"
    );
    assert!(b.duties().await.is_empty() && c.duties().await.is_empty());
    let ready = a.readyz().await.expect("readyz");
    assert_eq!(ready["role"], json!("all"));
    assert_eq!(ready["bus"], json!("connected"));

    // Reads right after writes, across nodes, with the projector on A.
    let ryw_before = read_your_writes_across(&[&a, &b, &c], 12).await;

    // Mixed load over the three nodes.
    let nodes: Pool = Arc::new(Mutex::new(
        [&a, &b, &c]
            .iter()
            .map(|n| (n.base.clone(), true))
            .collect(),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| tokio::spawn(worker(w, nodes.clone(), stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Kill the leader mid-load; the load balancer stops sending to it.
    let a_id = a.id.clone();
    let a_pid = a.pid;
    a.proc.kill();
    let killed_at = Instant::now();
    nodes.lock().unwrap()[0].1 = false;
    let takeover = loop {
        let now = holders(&pool).await;
        if DUTIES
            .iter()
            .all(|d| now.get(*d).is_some_and(|h| *h == b.id || *h == c.id))
        {
            break killed_at.elapsed();
        }
        assert!(
            killed_at.elapsed() < SETTLE_MAX,
            "no takeover: {now:?}\n{}\n----\n{}",
            b.log_tail(),
            c.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        takeover <= TAKEOVER_MAX,
        "the duties moved in {takeover:?}, beyond the bound of {TAKEOVER_MAX:?}"
    );

    // Then lose one NATS server mid-burst.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    nats.kill(1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let mut accepted = Accepted::default();
    for w in workers {
        let got = w.await.expect("worker");
        accepted.payments.extend(got.payments);
        accepted.paid.extend(got.paid);
        accepted.refunds.extend(got.refunds);
        accepted.failovers += got.failovers;
    }
    assert!(
        accepted.payments.len() >= WORKERS && !accepted.refunds.is_empty(),
        "the load ran: {} payments, {} refunds",
        accepted.payments.len(),
        accepted.refunds.len()
    );

    // Reads right after writes between the survivors, with the projector moved.
    let ryw_after = read_your_writes_across(&[&b, &c], 12).await;
    let urls = join_urls(&[nats.ports[0], nats.ports[2]]);
    let head = settle(&pool, &[&b, &c], &urls, &shared.stream).await;

    // Each duty is held by exactly one live node, and that node says so.
    let (db_, dc) = (b.duties().await, c.duties().await);
    assert!(
        db_.is_disjoint(&dc),
        "a duty on two nodes: B {db_:?}, C {dc:?}"
    );
    let all: BTreeSet<String> = db_.union(&dc).cloned().collect();
    assert_eq!(all, DUTIES.iter().map(|d| d.to_string()).collect());
    assert!(!holders(&pool).await.values().any(|h| *h == a_id));

    // Every accepted request is in the log.
    let created: HashSet<String> =
        sqlx::query_scalar::<_, Uuid>("SELECT stream_id FROM events WHERE event_type = 'created'")
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.to_string())
            .collect();
    let paid: HashSet<String> =
        sqlx::query_scalar::<_, Uuid>("SELECT stream_id FROM events WHERE event_type = 'paid'")
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.to_string())
            .collect();
    let requested: Vec<String> = sqlx::query_scalar(
        "SELECT data->>'refund_no' FROM events WHERE event_type = 'refund_requested'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let lost_creates: Vec<_> = accepted
        .payments
        .iter()
        .filter(|p| !created.contains(*p))
        .collect();
    let lost_pays: Vec<_> = accepted
        .paid
        .iter()
        .filter(|p| !paid.contains(*p))
        .collect();
    let requested_set: HashSet<&String> = requested.iter().collect();
    let lost_refunds: Vec<_> = accepted
        .refunds
        .iter()
        .filter(|r| !requested_set.contains(r))
        .collect();
    assert!(
        lost_creates.is_empty() && lost_pays.is_empty() && lost_refunds.is_empty(),
        "accepted but not in the log: creates {lost_creates:?}, payments {lost_pays:?}, \
         refunds {lost_refunds:?}"
    );

    // The stream holds every event exactly once.
    let ids = stream_ids(&urls, &shared.stream, head as u64).await;
    let unique: HashSet<&String> = ids.iter().collect();
    let duplicates = ids.len() - unique.len();
    let log_ids: HashSet<String> = sqlx::query_scalar::<_, Uuid>("SELECT event_id FROM events")
        .fetch_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.to_string())
        .collect();
    let in_stream: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(duplicates, 0, "events published twice");
    assert_eq!(in_stream, log_ids, "the stream and the log differ");
    assert_eq!(
        stream_messages(&urls, &shared.stream).await,
        Some(head as u64),
        "the stream holds more messages than the log has events"
    );

    // The gateway executed every refund once. A refund the killed leader had sent but not
    // yet recorded is asked again by the new leader, and answered from the first decision.
    let journal = Journal::entries(&shared.journal).expect("the sandbox journal");
    let mut decided: HashMap<&str, Vec<&Decision>> = HashMap::new();
    let mut calls: HashMap<&str, Vec<u32>> = HashMap::new();
    for e in &journal {
        match e {
            Entry::Decided {
                refund_no,
                decision,
            } => decided.entry(refund_no).or_default().push(decision),
            Entry::Called { refund_no, pid } => calls.entry(refund_no).or_default().push(*pid),
        }
    }
    let refunded: HashSet<String> =
        sqlx::query_scalar("SELECT data->>'refund_no' FROM events WHERE event_type = 'refunded'")
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    let mut asked_again = 0;
    for r in &requested {
        assert_eq!(
            decided.get(r.as_str()).map(|d| d.as_slice()),
            Some(&[&Decision::Done][..]),
            "refund {r} executed other than once"
        );
        assert!(refunded.contains(r), "refund {r} executed but not recorded");
        let pids = &calls[r.as_str()];
        let by_survivors = pids.iter().filter(|p| **p != a_pid).count();
        assert!(
            by_survivors <= 1 && (pids.len() == 1 || pids.contains(&a_pid)),
            "refund {r} was sent by {pids:?} (A was {a_pid})"
        );
        asked_again += pids.len() - 1;
    }
    assert_eq!(
        decided.len(),
        requested.len(),
        "refunds the log does not know"
    );

    println!(
        "cluster: 3 nodes (1 all, 2 api), 3 NATS servers (R3), lease {LEASE_TTL_MS} ms; \
         takeover after SIGKILL of the leader {} ms; accepted {} creates, {} payments, {} refunds \
         ({} fail-overs to another node); events {head}, stream messages {}, duplicates \
         {duplicates}, lost 0; refunds executed once each: {} (asked again after takeover: \
         {asked_again}); read-your-writes across nodes: {} reads",
        takeover.as_millis(),
        accepted.payments.len(),
        accepted.paid.len(),
        accepted.refunds.len(),
        accepted.failovers,
        ids.len(),
        requested.len(),
        ryw_before + ryw_after,
    );
    drop((b, c));
    let _ = std::fs::remove_dir_all(&dir);
}
