//! Optional TLS for the API (`LEDGER_TLS_CERT` / `LEDGER_TLS_KEY`, PEM files, rustls).
//!
//! This module loads the certificate and key; the server loop (`crate::server`) runs each
//! handshake in its connection's own task under a timeout, off the accept path, so a slow or
//! hostile client cannot hold up the others.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use crate::config::{bad, ConfigError};

/// Loads the certificate chain and private key; errors name the setting at fault.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, ConfigError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            bad(
                "LEDGER_TLS_CERT",
                format!(
                    "cannot read a PEM certificate chain from {}: {e}",
                    cert.display()
                ),
            )
        })?;
    if certs.is_empty() {
        return Err(bad(
            "LEDGER_TLS_CERT",
            format!("{} holds no certificate", cert.display()),
        ));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        bad(
            "LEDGER_TLS_KEY",
            format!("cannot read a PEM private key from {}: {e}", key.display()),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("LEDGER_TLS_CERT", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, private)
        .map_err(|e| {
            bad(
                "LEDGER_TLS_KEY",
                format!("the key does not fit the certificate: {e}"),
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
