//! PostgreSQL's own limit, measured by its own tool: `pgbench` with one INSERT of an
//! event-sized row per transaction at N clients, for a fixed time, in the bench's database.
//! Beside the harness's raw row it shows how much of the gap to the service is the harness.

use std::process::Stdio;
use std::time::Duration;

use sqlx::PgPool;
use tokio::process::Command;

const TABLE: &str = "bench_pgbench";
/// The transaction pgbench repeats: one row about the size of a stored event.
const SCRIPT: &str = "INSERT INTO bench_pgbench (payload) VALUES (repeat('x', 600));\n";

/// The transactions per second pgbench measured, or `None` when pgbench is not installed.
pub async fn run(url: &str, clients: usize, seconds: Duration) -> anyhow::Result<Option<f64>> {
    if Command::new("pgbench")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_err()
    {
        return Ok(None);
    }
    let pool = ledger_store::connect(url, 2, false).await?;
    prepare(&pool).await?;
    let script = std::env::temp_dir().join(format!(
        "ledger-pgbench-{}.sql",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(&script, SCRIPT)?;
    let out = Command::new("pgbench")
        .args(["-n", "-j", "2", "-c", &clients.to_string()])
        .args(["-T", &seconds.as_secs().max(1).to_string()])
        .arg("-f")
        .arg(&script)
        .arg(url)
        .output()
        .await;
    let _ = std::fs::remove_file(&script);
    let _ = sqlx::query(&format!("DROP TABLE IF EXISTS {TABLE}"))
        .execute(&pool)
        .await;
    pool.close().await;
    let out = out?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        anyhow::bail!(
            "pgbench failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    tps(&text)
        .map(Some)
        .ok_or_else(|| anyhow::anyhow!("pgbench printed no tps line: {text}"))
}

async fn prepare(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query(&format!(
        "CREATE TABLE IF NOT EXISTS {TABLE} (id BIGSERIAL PRIMARY KEY, \
         at TIMESTAMPTZ NOT NULL DEFAULT now(), payload TEXT NOT NULL)"
    ))
    .execute(pool)
    .await?;
    Ok(())
}

/// The `tps = N (without initial connection time)` figure of pgbench's report.
pub fn tps(report: &str) -> Option<f64> {
    report
        .lines()
        .filter(|l| l.starts_with("tps = "))
        .find(|l| l.contains("without initial connection time") || !l.contains("including"))
        .and_then(|l| l["tps = ".len()..].split_whitespace().next())
        .and_then(|n| n.parse().ok())
}
