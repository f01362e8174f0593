//! The bench's own world: fresh databases (`ledger_bench_<random>`, dropped at the end) on the
//! server `DATABASE_URL` names, a NATS prefix and stream of its own (deleted at the end), and
//! the service started in this process on a port-0 listener, as the tests start it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use ledger::api::AppState;
use ledger::app::{self, ServeRole};
use ledger::config::RawConfig;
use ledger::gateway::sandbox::Faults;
use ledger::signing::new_nonce;

/// Key id of the bench's admin key (admin may create, refund and read).
pub const ADMIN_KEY_ID: &str = "bench-admin";
/// How long stopping the service may take before we give up on it.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A database created for the bench; [`Databases::drop_all`] removes it.
pub struct Databases {
    admin: PgConnectOptions,
    base_url: String,
    created: Vec<String>,
    /// Random part shared by every name this run creates.
    pub run_id: String,
}

impl Databases {
    pub fn new(database_url: &str) -> anyhow::Result<Self> {
        let options: PgConnectOptions = database_url
            .parse()
            .map_err(|e| anyhow::anyhow!("DATABASE_URL is malformed: {e}"))?;
        Ok(Self {
            admin: options.database("postgres"),
            base_url: database_url.to_owned(),
            created: Vec::new(),
            run_id: Uuid::new_v4().simple().to_string()[..12].to_owned(),
        })
    }

    async fn admin(&self) -> anyhow::Result<PgConnection> {
        self.admin.connect().await.map_err(|e| {
            anyhow::anyhow!("cannot connect to PostgreSQL (DATABASE_URL's server): {e}")
        })
    }

    /// Creates `ledger_bench_<run>_<suffix>` and returns its URL.
    pub async fn create(&mut self, suffix: &str) -> anyhow::Result<String> {
        let name = format!("ledger_bench_{}_{suffix}", self.run_id);
        let mut conn = self.admin().await?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await?;
        self.created.push(name.clone());
        Ok(with_database(&self.base_url, &name))
    }

    /// Drops every database this run created (also when a phase failed).
    pub async fn drop_all(&mut self) {
        let Ok(mut conn) = self.admin().await else {
            eprintln!(
                "warning: cannot reach PostgreSQL to drop {:?}",
                self.created
            );
            return;
        };
        for name in self.created.drain(..) {
            if let Err(e) = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await
            {
                eprintln!("warning: could not drop database {name}: {e}");
            }
        }
        let _ = conn.close().await;
    }

    /// `SHOW server_version`, for the report.
    pub async fn server_version(&self) -> String {
        match self.admin().await {
            Ok(mut c) => sqlx::query_scalar::<_, String>("SHOW server_version")
                .fetch_one(&mut c)
                .await
                .unwrap_or_else(|_| "unknown".into()),
            Err(_) => "unknown".into(),
        }
    }
}

/// Replaces the database name in a `postgres://` URL (keeping any `?options`).
pub fn with_database(url: &str, name: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    let scheme_end = head.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match head[scheme_end..].find('/') {
        Some(i) => &head[..scheme_end + i],
        None => head,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// Everything a signed client needs to talk to the bench's service.
#[derive(Clone)]
pub struct Credentials {
    pub admin_secret: String,
    /// (method name, secret) for every gateway.
    pub gateways: Vec<(String, String)>,
}

impl Credentials {
    fn generate() -> Self {
        Self {
            admin_secret: new_nonce(),
            gateways: ["alipay", "wechat", "bank", "credit_card"]
                .iter()
                .map(|m| (m.to_string(), new_nonce()))
                .collect(),
        }
    }

    pub fn gateway_secret(&self, method: &str) -> &str {
        self.gateways
            .iter()
            .find(|(m, _)| m == method)
            .map(|(_, s)| s.as_str())
            .expect("every method has a secret")
    }
}

/// The service under test, running in this process.
pub struct Service {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    pub credentials: Credentials,
    pub stream: Option<String>,
    cancel: CancellationToken,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Service {
    /// Starts the service on `database_url` with its own keys and NATS prefix/stream.
    pub async fn start(
        base: &RawConfig,
        database_url: &str,
        run_id: &str,
    ) -> anyhow::Result<Service> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let credentials = Credentials::generate();
        let hex_key = || hex::encode(rand::random::<[u8; 32]>());
        let raw = RawConfig {
            database_url: database_url.to_owned(),
            bind: addr,
            nats_prefix: format!("bench{run_id}"),
            nats_stream: format!("BENCH{run_id}"),
            api_keys: Some(format!("{ADMIN_KEY_ID}:{}:admin", credentials.admin_secret)),
            gateway_secrets: Some(
                credentials
                    .gateways
                    .iter()
                    .map(|(m, s)| format!("{m}:{s}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            master_key: Some(hex_key()),
            signing_key: Some(hex_key()),
            env: ledger::config::Environment::Development,
            sandbox: Some(ledger::config::SandboxMode::On),
            sandbox_secret: Some(hex_key()),
            public_url: Some(format!("http://{addr}")),
            ..base.clone()
        };
        let settings = raw.resolve()?;
        let stream = settings.nats.as_ref().map(|n| n.stream.clone());
        let ledger = app::build(settings, ServeRole::All, Faults::default()).await?;
        let state = ledger.state.clone();
        let cancel = ledger.cancel.clone();
        let server = tokio::spawn(app::serve(ledger, listener, std::future::pending()));
        Ok(Service {
            addr,
            state,
            credentials,
            stream,
            cancel,
            server,
        })
    }

    /// Stops the service (drains as on SIGTERM) and deletes its NATS stream.
    pub async fn stop(self) {
        self.cancel.cancel();
        match tokio::time::timeout(STOP_TIMEOUT, self.server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => eprintln!("warning: the service stopped with an error: {e}"),
            Ok(Err(e)) => eprintln!("warning: the service task failed: {e}"),
            Err(_) => eprintln!("warning: the service did not stop within {STOP_TIMEOUT:?}"),
        }
        if let (Some(bus), Some(stream)) = (&self.state.bus, &self.stream) {
            if let Err(e) = bus.jetstream.delete_stream(stream).await {
                eprintln!("warning: could not delete NATS stream {stream}: {e}");
            }
        }
    }

    /// Waits (bounded) until the read models include everything in the log and no refund is
    /// still waiting for the gateway. Returns the refunds still processing at the end.
    pub async fn settle(&self, limit: Duration) -> anyhow::Result<i64> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let head = ledger_store::head_position(&self.state.pool).await?;
            let processing: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM payment_refunds WHERE status = 0")
                    .fetch_one(&self.state.pool)
                    .await?;
            if self.state.position() >= head && processing == 0 {
                return Ok(0);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(processing);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
