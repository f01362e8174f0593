//! A nats-server of a test's own on a free port, for outages and crashes (the shared server
//! on 4222 is never stopped).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use uuid::Uuid;

const NATS_SERVER: &str = "/usr/sbin/nats-server";
const WAIT_MAX: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);

/// A nats-server of this test's own, killed when the test ends however it ends.
pub struct PrivateNats {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateNats {
    pub async fn start() -> PrivateNats {
        let mut nats = PrivateNats::reserve();
        nats.launch().await;
        nats
    }

    /// A port and a store dir for a server that is not running yet.
    pub fn reserve() -> PrivateNats {
        // Take a free port from the kernel and release it for the server.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir().join(format!("ledger-nats-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("store dir");
        PrivateNats {
            port,
            dir,
            child: None,
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server on the same port and store dir and waits (bounded) until it listens.
    pub async fn launch(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new(NATS_SERVER)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + WAIT_MAX;
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("nats-server exited at start: {status}");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nats-server did not listen in time"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGKILL: a crash, not a shutdown.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
