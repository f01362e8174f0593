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

    /// The service's base URL, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
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
    /// Print only this value of the answer (`data.payment_id`), as `jq -r` would.
    pub field: Option<&'a str>,
}

/// Exit status of `ledger api` when the answer is not 2xx or `--field` names nothing.
pub const EXIT_ANSWER: i32 = 1;

/// `ledger api METHOD PATH [BODY]`: prints the JSON answer (or one value of it with
/// `--field`); exits [`EXIT_ANSWER`] on a non-2xx answer or a missing field.
pub async fn run_cli(config: &RawConfig, request: Request<'_>) -> anyhow::Result<i32> {
    let Request {
        method,
        path,
        body,
        url,
        idempotency_key,
        lang,
        gateway,
        field,
    } = request;
    let (key_id, secret) = match gateway {
        Some(name) => gateway_credentials(config, name)?,
        None => client_credentials(Path::new(&config.data_dir)).ok_or_else(|| {
            anyhow::anyhow!(
                "LEDGER_KEY_ID / LEDGER_SECRET: not set (and no development credentials in {}; \
                 `ledger serve` generates them on its first start)",
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
    let answer = client.send(method, path, body, &extra).await.map_err(|e| {
        anyhow::anyhow!("cannot reach {base}: {e} (is `ledger serve` running? `ledger doctor` checks the setup)")
    })?;
    let pretty = serde_json::to_string_pretty(&answer.body)?;
    let success = (200..300).contains(&answer.status);
    match field {
        None => {
            println!("{pretty}");
            if !success {
                eprintln!("error: {method} {path} answered HTTP {}", answer.status);
            }
        }
        Some(_) if !success => {
            // The value asked for is not there; show the whole answer where a script's
            // `$(…)` does not swallow it.
            eprintln!("{pretty}");
            eprintln!("error: {method} {path} answered HTTP {}", answer.status);
        }
        Some(path_expr) => match field_value(&answer.body, path_expr) {
            Ok(v) => println!("{}", raw_text(v)),
            Err(e) => {
                eprintln!("{pretty}");
                eprintln!("error: --field {path_expr}: {e}");
                return Ok(EXIT_ANSWER);
            }
        },
    }
    Ok(if success { 0 } else { EXIT_ANSWER })
}

/// The value at a dot-separated path (`data.list.0.id`; a leading `.` is allowed, as in jq):
/// a segment names an object's key, or an array's index. The error says where the path
/// stopped and what was there instead.
pub fn field_value<'a>(
    value: &'a serde_json::Value,
    path: &str,
) -> Result<&'a serde_json::Value, String> {
    use serde_json::Value;
    let path = path.strip_prefix('.').unwrap_or(path);
    let mut at = value;
    let mut walked = String::new();
    for segment in path.split('.').filter(|s| !s.is_empty()) {
        let here = if walked.is_empty() {
            "the answer".to_owned()
        } else {
            walked.clone()
        };
        at = match at {
            Value::Object(map) => map.get(segment).ok_or_else(|| {
                let keys: Vec<&str> = map.keys().map(String::as_str).collect();
                format!(
                    "{here} has no {segment:?} (it has: {})",
                    if keys.is_empty() {
                        "nothing".to_owned()
                    } else {
                        keys.join(", ")
                    }
                )
            })?,
            Value::Array(items) => segment
                .parse::<usize>()
                .ok()
                .and_then(|i| items.get(i))
                .ok_or_else(|| {
                    format!(
                        "{here} is a list of {} item(s); {segment:?} is not an index in it",
                        items.len()
                    )
                })?,
            other => {
                return Err(format!(
                    "{here} is {}, which has no {segment:?}",
                    kind(other)
                ))
            }
        };
        if !walked.is_empty() {
            walked.push('.');
        }
        walked.push_str(segment);
    }
    Ok(at)
}

fn kind(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "null".to_owned(),
        serde_json::Value::String(s) => format!("the string {s:?}"),
        other => format!("the value {other}"),
    }
}

/// A value as `jq -r` prints it: a string without quotes, anything else as compact JSON.
pub fn raw_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_field_path_reads_like_jq_raw_output() {
        let v = json!({"code": 0, "data": {"payment_id": "p-1", "position": 7, "list": [{"id": "a"}, {"id": "b"}], "payer": null}});
        let f = |p: &str| field_value(&v, p).map(raw_text);
        assert_eq!(f("data.payment_id").unwrap(), "p-1");
        assert_eq!(f(".data.payment_id").unwrap(), "p-1");
        assert_eq!(f("data.position").unwrap(), "7");
        assert_eq!(f("data.list.1.id").unwrap(), "b");
        assert_eq!(f("data.list.0").unwrap(), r#"{"id":"a"}"#);
        assert_eq!(f("data.payer").unwrap(), "null");
        let e = f("data.payment_idx").unwrap_err();
        assert!(
            e.contains("\"payment_idx\"") && e.contains("payment_id"),
            "{e}"
        );
        assert!(f("data.list.2").unwrap_err().contains("2 item(s)"));
        assert!(f("data.position.x").unwrap_err().contains("data.position"));
    }
}
