//! A PostgreSQL server of a test's own, in a temporary directory on a free port, for tests
//! that crash the database (the shared server on 5432 is never stopped). `initdb` refuses to
//! run as root, so the server runs as the `postgres` user when the tests run as root.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use uuid::Uuid;

const WAIT_MAX: Duration = Duration::from_secs(30);

/// The newest installed PostgreSQL's binaries.
fn bin(name: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed under /usr/lib/postgresql")
        .flatten()
        .map(|e| e.path())
        .collect();
    versions.sort();
    versions
        .last()
        .expect("a PostgreSQL version")
        .join("bin")
        .join(name)
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs a PostgreSQL tool, as `postgres` when we are root.
fn run(tool: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin(tool));
        c
    } else {
        Command::new(bin(tool))
    };
    cmd.args(args).output().expect("the PostgreSQL tool runs")
}

/// A private server, stopped (fast) when dropped.
pub struct PrivatePostgres {
    pub port: u16,
    dir: PathBuf,
}

impl PrivatePostgres {
    pub async fn start() -> PrivatePostgres {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir().join(format!("ledger-pg-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("data dir");
        if running_as_root() {
            let status = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&dir)
                .status()
                .expect("chown");
            assert!(status.success());
        }
        let data = dir.to_string_lossy().into_owned();
        let out = run(
            "initdb",
            &["-D", &data, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pg = PrivatePostgres { port, dir };
        pg.launch().await;
        pg
    }

    fn data(&self) -> String {
        self.dir.to_string_lossy().into_owned()
    }

    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Starts the server on its port and waits (bounded) until it accepts connections.
    pub async fn launch(&self) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={}",
            self.port,
            self.data()
        );
        let log = self.dir.join("server.log").to_string_lossy().into_owned();
        let out = run(
            "pg_ctl",
            &["-D", &self.data(), "-o", &opts, "-l", &log, "-w", "start"],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = tokio::time::Instant::now() + WAIT_MAX;
        loop {
            let ok = run(
                "pg_isready",
                &["-h", "127.0.0.1", "-p", &self.port.to_string()],
            );
            if ok.status.success() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the private PostgreSQL did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the server the way a power cut would: no shutdown checkpoint, and only what
    /// reached the WAL on disk survives (`pg_ctl stop -m immediate`).
    pub fn crash(&self) {
        let out = run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
