//! A signed HTTP client for the API: `ledger api`, the demo and the load harness use it.

use std::path::Path;

use crate::config::{client_credentials, RawConfig};
use crate::signing;

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    key_id: String,
    secret: String,
}

/// An answer: status and parsed body (or the raw text when it is not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: serde_json::Value,
    pub position: Option<i64>,
}

impl Client {
    pub fn new(base: &str, key_id: &str, secret: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(256)
                .build()
                .expect("a default reqwest client builds"),
            base: base.trim_end_matches('/').to_owned(),
            key_id: key_id.to_owned(),
            secret: secret.to_owned(),
        }
    }

    /// A client on a given HTTP client (a custom root certificate for TLS, say).
    pub fn with_http(http: reqwest::Client, base: &str, key_id: &str, secret: &str) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            key_id: key_id.to_owned(),
            secret: secret.to_owned(),
        }
    }

    /// Sends a signed request. `path` is the request target (path and query) exactly as sent.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Result<Answer, reqwest::Error> {
        let method = method.to_ascii_uppercase();
        let body = body.unwrap_or("");
        let ts = chrono::Utc::now().timestamp().to_string();
        let nonce = signing::new_nonce();
        let sig = signing::sign(&self.secret, &ts, &nonce, &method, path, body.as_bytes());
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
        let mut req = self
            .http
            .request(m, format!("{}{}", self.base, path))
            .header("x-key-id", &self.key_id)
            .header("x-timestamp", ts)
            .header("x-nonce", nonce)
            .header("x-signature", sig);
        if !body.is_empty() {
            req = req
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let position = resp
            .headers()
            .get("x-ledger-position")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let text = resp.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        Ok(Answer {
            status,
            body,
            position,
        })
    }
}

/// One `ledger api` invocation.
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub body: Option<&'a str>,
    pub url: Option<String>,
    pub idempotency_key: Option<String>,
    pub lang: &'a str,
    /// Sign as this gateway instead of as an API key.
    pub gateway: Option<&'a str>,
}

/// `ledger api METHOD PATH [BODY]`: prints the JSON answer; exits non-zero on an HTTP error.
pub async fn run_cli(config: &RawConfig, request: Request<'_>) -> anyhow::Result<i32> {
    let Request {
        method,
        path,
        body,
        url,
        idempotency_key,
        lang,
        gateway,
    } = request;
    let (key_id, secret) = match gateway {
        Some(name) => gateway_credentials(config, name)?,
        None => client_credentials(Path::new(&config.data_dir)).ok_or_else(|| {
            anyhow::anyhow!(
                "LEDGER_KEY_ID / LEDGER_SECRET: not set (and no development credentials in {})",
                config.data_dir.display()
            )
        })?,
    };
    let base = url.unwrap_or_else(|| format!("http://{}", config.bind));
    let client = Client::new(&base, &key_id, &secret);
    let mut extra: Vec<(&str, &str)> = vec![("accept-language", lang)];
    if let Some(k) = idempotency_key.as_deref() {
        extra.push(("idempotency-key", k));
    }
    let answer = client
        .send(method, path, body, &extra)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach {base}: {e}"))?;
    println!("{}", serde_json::to_string_pretty(&answer.body)?);
    Ok(if answer.status < 400 { 0 } else { 1 })
}

/// A gateway's key id (its method name) and secret, from LEDGER_GATEWAY_SECRETS or the
/// development secrets `serve` generated into the data directory.
pub fn gateway_credentials(config: &RawConfig, name: &str) -> anyhow::Result<(String, String)> {
    let method = crate::domain::PaymentMethod::parse(name).ok_or_else(|| {
        anyhow::anyhow!("--gateway: {name:?} is not one of alipay, wechat, bank, credit_card")
    })?;
    let text = match &config.gateway_secrets {
        Some(text) => text.clone(),
        None => {
            let path = config.data_dir.join("gateway-secrets");
            std::fs::read_to_string(&path).map_err(|e| {
                anyhow::anyhow!(
                    "LEDGER_GATEWAY_SECRETS: not set, and {} cannot be read ({e})",
                    path.display()
                )
            })?
        }
    };
    let secrets = crate::config::parse_gateway_secrets(text.trim())?;
    let secret = secrets.get(&method).ok_or_else(|| {
        anyhow::anyhow!("LEDGER_GATEWAY_SECRETS: no secret for {}", method.name())
    })?;
    Ok((method.name().to_owned(), secret.clone()))
}
