//! TLS for the API: with LEDGER_TLS_CERT / LEDGER_TLS_KEY the service speaks HTTPS only, and a
//! bad certificate or key stops start-up naming the setting.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use crate::common::{raw_config, TestDb};
use ledger::app::{self, ServeRole};
use ledger::client::Client;
use ledger::gateway::sandbox::Faults;

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A certificate for 127.0.0.1 signed by a fresh test CA, made with the openssl command
/// line. Returns (ca.pem, cert.pem, key.pem).
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "1", "-subj", "/CN=ledger test CA"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca-key.pem", "-out", "ca.pem"]);
    openssl(&ca, dir);
    let mut csr = vec!["req", "-subj", "/CN=127.0.0.1"];
    csr.extend(ec);
    csr.extend(["-keyout", "key.pem", "-out", "cert.csr"]);
    openssl(&csr, dir);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .expect("write ext");
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "cert.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
            "-out",
            "cert.pem",
        ],
        dir,
    );
    (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    )
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ledger-tls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_is_served_over_tls_and_refuses_plain_http() {
    let dir = temp_dir();
    let (ca_pem, cert, key) = certificates(&dir);
    let db = Arc::new(TestDb::new().await);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut raw = raw_config(&db.url, None, "tls", "TLS", addr);
    raw.tls_cert = Some(cert.clone());
    raw.tls_key = Some(key);
    raw.public_url = None;
    let settings = raw.resolve().expect("TLS settings are valid");
    assert_eq!(settings.public_url, format!("https://{addr}"));
    let ledger = app::build(settings, ServeRole::All, Faults::default())
        .await
        .expect("service starts");
    let cancel = ledger.cancel.clone();
    let server = tokio::spawn(app::serve(ledger, listener, std::future::pending()));

    let ca = reqwest::Certificate::from_pem(&std::fs::read(&ca_pem).unwrap()).unwrap();
    let https = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let health = https
        .get(format!("https://{addr}/healthz"))
        .send()
        .await
        .expect("HTTPS request");
    assert_eq!(health.status(), 200);

    // A signed command over TLS works end to end.
    let client = Client::with_http(
        https.clone(),
        &format!("https://{addr}"),
        "t-client",
        "client-secret-1",
    );
    let body = r#"{"amount":"12.50","currency":"CNY","payment_method":"alipay","order_id":"tls-1","user_id":"u-tls"}"#;
    let created = client
        .send("POST", "/api/v1/payments/create", Some(body), &[])
        .await
        .expect("create over TLS");
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(created.body["data"]["amount"], "12.50");

    // Plain HTTP on the same port gets no HTTP answer.
    let plain = reqwest::Client::new()
        .get(format!("http://{addr}/healthz"))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP must not be served: {plain:?}");

    // A client that does not trust the certificate cannot connect.
    let untrusting = reqwest::Client::new()
        .get(format!("https://{addr}/healthz"))
        .send()
        .await;
    assert!(untrusting.is_err(), "an untrusted certificate must fail");

    cancel.cancel();
    let _ = server.await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn bad_tls_settings_stop_start_up_naming_the_setting() {
    let dir = temp_dir();
    let (_, cert, key) = certificates(&dir);
    let addr = "127.0.0.1:0".parse().unwrap();
    let url = "postgres://postgres@127.0.0.1:5432/unused";

    let mut only_cert = raw_config(url, None, "tls", "TLS", addr);
    only_cert.tls_cert = Some(cert.clone());
    let e = only_cert
        .resolve()
        .err()
        .expect("a cert without a key is refused");
    assert!(e.to_string().starts_with("LEDGER_TLS_KEY:"), "{e}");

    let mut missing = raw_config(url, None, "tls", "TLS", addr);
    missing.tls_cert = Some(dir.join("nope.pem"));
    missing.tls_key = Some(key.clone());
    let e = missing
        .resolve()
        .err()
        .expect("a missing cert file is refused");
    assert!(e.to_string().starts_with("LEDGER_TLS_CERT:"), "{e}");

    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a key").unwrap();
    let mut bad_key = raw_config(url, None, "tls", "TLS", addr);
    bad_key.tls_cert = Some(cert.clone());
    bad_key.tls_key = Some(garbage);
    let e = bad_key.resolve().err().expect("a bad key is refused");
    assert!(e.to_string().starts_with("LEDGER_TLS_KEY:"), "{e}");

    // A key that does not belong to the certificate.
    let other = temp_dir();
    let (_, _, other_key) = certificates(&other);
    let mut mismatched = raw_config(url, None, "tls", "TLS", addr);
    mismatched.tls_cert = Some(cert);
    mismatched.tls_key = Some(other_key);
    let e = mismatched
        .resolve()
        .err()
        .expect("a foreign key is refused");
    assert!(e.to_string().starts_with("LEDGER_TLS_KEY:"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&other);
}
