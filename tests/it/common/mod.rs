//! Test harness: every test gets a fresh PostgreSQL database and its own NATS subject prefix
//! and stream, talks to the real servers, and drops them afterwards.
#![allow(dead_code)]

pub mod nats;
pub mod postgres;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ledger::api::AppState;
use ledger::app::{self, Ledger, ServeRole};
use ledger::client::{Answer, Client};
use ledger::config::{Environment, RawConfig, SandboxMode};
use ledger::gateway::sandbox::Faults;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The repository's root (this package is its `tests/` folder).
pub fn repo() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
}

/// The `ledger` binary that `cargo test` built beside this test binary
/// (target/<profile>/deps/it-* → target/<profile>/ledger): the root package's test
/// `tests/binary.rs` is what makes cargo build it. Cargo gives `CARGO_BIN_EXE_*` only to a
/// package's own tests, and this suite is its own package, so it finds the binary itself.
pub fn ledger_bin() -> &'static std::path::Path {
    static BIN: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test binary's path");
        let profile_dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("the test binary is in target/<profile>/deps");
        let bin = profile_dir.join(format!("ledger{}", std::env::consts::EXE_SUFFIX));
        assert!(
            bin.is_file(),
            "{} is missing: run the suite with `cargo test` from the repository's root (it \
             builds the binary), or build it first with `cargo build`",
            bin.display()
        );
        bin
    })
}

pub const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const NATS_URL: &str = "nats://127.0.0.1:4222";

pub const KEYS: &str = "t-admin:admin-secret-1:admin,t-client:client-secret-1:client,\
t-operator:operator-secret-1:operator,t-auditor:auditor-secret-1:auditor,\
t-finance:finance-secret-1:finance";
/// The sandbox gateway's own secret in tests.
pub const SANDBOX_SECRET: &str = "sandbox-secret-1";
pub const GATEWAY_SECRETS: &str = "alipay:alipay-secret-1,wechat:wechat-secret-1,\
bank:bank-secret-1,credit_card:card-secret-1";

/// A database created for one test and dropped when this is dropped.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let name = format!("ledger_test_{}", Uuid::new_v4().simple());
        let mut conn = admin_conn().await;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create test database");
        TestDb {
            url: format!("postgres://postgres@127.0.0.1:5432/{name}"),
            name,
        }
    }

    pub async fn pool(&self) -> sqlx::PgPool {
        ledger::store::connect(&self.url, 8, false)
            .await
            .expect("connect to the test database")
    }
}

async fn admin_conn() -> sqlx::PgConnection {
    use sqlx::Connection;
    sqlx::PgConnection::connect(ADMIN_URL)
        .await
        .expect("connect to PostgreSQL at 127.0.0.1:5432")
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside async; use a small runtime on a plain thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let mut conn = admin_conn().await;
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await;
            });
        })
        .join();
    }
}

/// Changes a test service's configuration before it starts (limits, settings).
pub type Tune = Arc<dyn Fn(&mut RawConfig) + Send + Sync>;

/// Options for a test service.
pub struct Options {
    pub nats_url: Option<String>,
    pub role: ServeRole,
    pub faults: Faults,
    pub tune: Option<Tune>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            nats_url: Some(NATS_URL.into()),
            role: ServeRole::All,
            faults: Faults::default(),
            tune: None,
        }
    }
}

impl Options {
    /// The default options with `tune` applied to the configuration.
    pub fn tuned(tune: impl Fn(&mut RawConfig) + Send + Sync + 'static) -> Options {
        Options {
            tune: Some(Arc::new(tune)),
            ..Options::default()
        }
    }
}

/// A running service on a port-0 listener with its own database and NATS prefix.
pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub state: Arc<AppState>,
    pub projector: ledger::projections::runner::Projector,
    pub prefix: String,
    pub stream: String,
    pub db: Arc<TestDb>,
    cancel: CancellationToken,
    server: Option<tokio::task::JoinHandle<()>>,
}

pub fn raw_config(
    db_url: &str,
    nats_url: Option<&str>,
    prefix: &str,
    stream: &str,
    addr: SocketAddr,
) -> RawConfig {
    RawConfig {
        database_url: db_url.to_owned(),
        nats_url: nats_url.unwrap_or("none").to_owned(),
        bind: addr,
        nats_prefix: prefix.to_owned(),
        nats_stream: stream.to_owned(),
        api_keys: Some(KEYS.into()),
        gateway_secrets: Some(GATEWAY_SECRETS.into()),
        master_key: Some("4d".repeat(32)),
        signing_key: Some("5e".repeat(32)),
        cache_ttl_secs: 1800,
        cache_capacity: 10_000,
        env: Environment::Test,
        data_dir: std::env::temp_dir().join("ledger-tests"),
        public_url: Some(format!("http://{addr}")),
        db_max_connections: 10,
        sandbox: Some(SandboxMode::On),
        sandbox_secret: Some(SANDBOX_SECRET.into()),
        ..RawConfig::default()
    }
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(Options::default()).await
    }

    pub async fn spawn_with(opts: Options) -> TestApp {
        if std::env::var("LEDGER_TEST_LOG").is_ok() {
            ledger::telemetry::init_logging();
        }
        let db = Arc::new(TestDb::new().await);
        Self::spawn_on(db, opts).await
    }

    /// Starts a service on an existing database (a second node, or a restart).
    pub async fn spawn_on(db: Arc<TestDb>, opts: Options) -> TestApp {
        let id = Uuid::new_v4().simple().to_string();
        let prefix = format!("t{}", &id[..12]);
        let stream = format!("T{}", &id[..12]);
        Self::spawn_full(db, opts, prefix, stream).await
    }

    pub async fn spawn_full(
        db: Arc<TestDb>,
        opts: Options,
        prefix: String,
        stream: String,
    ) -> TestApp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind port 0");
        let addr = listener.local_addr().expect("local addr");
        let mut raw = raw_config(&db.url, opts.nats_url.as_deref(), &prefix, &stream, addr);
        if let Some(tune) = &opts.tune {
            tune(&mut raw);
        }
        let settings = raw.resolve().expect("test settings are valid");
        let ledger: Ledger = app::build(settings, opts.role, opts.faults)
            .await
            .expect("service starts");
        let state = ledger.state.clone();
        let projector = ledger.projector.clone();
        let cancel = ledger.cancel.clone();
        let server = tokio::spawn(async move {
            app::serve(ledger, listener, std::future::pending())
                .await
                .expect("serve");
        });
        TestApp {
            addr,
            base: format!("http://{addr}"),
            state,
            projector,
            prefix,
            stream,
            db,
            cancel,
            server: Some(server),
        }
    }

    pub fn client(&self, role: &str) -> Client {
        let (key, secret) = match role {
            "admin" => ("t-admin", "admin-secret-1"),
            "client" => ("t-client", "client-secret-1"),
            "operator" => ("t-operator", "operator-secret-1"),
            "auditor" => ("t-auditor", "auditor-secret-1"),
            "finance" => ("t-finance", "finance-secret-1"),
            other => panic!("no test key for role {other}"),
        };
        Client::new(&self.base, key, secret)
    }

    /// The gateway's own signed client (X-Key-Id = method).
    pub fn gateway(&self, method: &str) -> Client {
        let secret = match method {
            "alipay" => "alipay-secret-1",
            "wechat" => "wechat-secret-1",
            "bank" => "bank-secret-1",
            "credit_card" => "card-secret-1",
            other => panic!("no gateway {other}"),
        };
        Client::new(&self.base, method, secret)
    }

    pub async fn pool(&self) -> sqlx::PgPool {
        self.state.pool.clone()
    }

    /// Creates a payment; returns (payment_id, payment_no).
    pub async fn create_payment(
        &self,
        amount: &str,
        currency: &str,
        method: &str,
        order: &str,
    ) -> (String, String) {
        let body = json!({
            "amount": amount, "currency": currency, "payment_method": method,
            "order_id": order, "user_id": "user-1"
        });
        let a = self
            .client("client")
            .send(
                "POST",
                "/api/v1/payments/create",
                Some(&body.to_string()),
                &[],
            )
            .await
            .expect("create");
        assert_eq!(a.status, 201, "create failed: {}", a.body);
        (
            a.body["data"]["payment_id"].as_str().unwrap().to_owned(),
            a.body["data"]["payment_no"].as_str().unwrap().to_owned(),
        )
    }

    /// Sends a success notification for the payment's full amount.
    pub async fn pay(&self, method: &str, payment_no: &str, amount: &str) -> Answer {
        let body = json!({
            "payment_no": payment_no,
            "callback_no": format!("CB{}", Uuid::new_v4().simple()),
            "status": "success",
            "amount": amount,
            "gateway_trade_no": format!("T{}", Uuid::new_v4().simple()),
        });
        self.gateway(method)
            .send(
                "POST",
                &format!("/api/v1/gateways/{method}/notify"),
                Some(&body.to_string()),
                &[],
            )
            .await
            .expect("notify")
    }

    /// Creates and pays a payment; returns its id.
    pub async fn paid_payment(&self, amount: &str) -> String {
        let order = format!("ORD-{}", Uuid::new_v4().simple());
        let (id, no) = self.create_payment(amount, "CNY", "alipay", &order).await;
        let a = self.pay("alipay", &no, amount).await;
        assert_eq!(a.status, 200, "pay failed: {}", a.body);
        id
    }

    /// Waits (bounded) until the projections include everything in the log.
    pub async fn settle(&self) {
        let head = ledger::store::head_position(&self.state.pool)
            .await
            .expect("head");
        let mut rx = self.state.applied.clone();
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|p| *p >= head))
            .await
            .expect("projections catch up")
            .expect("projector alive");
    }

    /// Stops the service (as SIGTERM would) and waits for it.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(s) = self.server.take() {
            // The service bounds its own stop by the shutdown deadline; a little more here.
            let wait = self.state.settings.limits.shutdown_deadline() + Duration::from_secs(5);
            let _ = tokio::time::timeout(wait, s).await;
        }
        self.cleanup_nats().await;
    }

    async fn cleanup_nats(&self) {
        if let Some(bus) = &self.state.bus {
            let _ = bus.jetstream.delete_stream(&self.stream).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(s) = self.server.take() {
            s.abort();
        }
        if let Some(bus) = self.state.bus.clone() {
            let stream = self.stream.clone();
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    if let Ok(c) = async_nats::connect(NATS_URL).await {
                        let _ = async_nats::jetstream::new(c).delete_stream(&stream).await;
                    }
                    drop(bus);
                });
            })
            .join();
        }
    }
}

/// `data` of an envelope.
pub fn data(a: &Answer) -> &Value {
    &a.body["data"]
}
