//! The contract clients generate from: real answers of the service, for every operation of the
//! served `/api/v1/openapi.json` (its successes and main errors), validated against the schema
//! the document gives for that operation and status (with `$ref`s resolved within the
//! document, formats checked, and every object closed: a field the document does not name is
//! a failure). Every GET answer carries `X-Ledger-Position`, and every header a response
//! declares required is there. The test asserts it exercised every operation of the document.
//!
//! Also here: requests refused by validation or authentication leave their `Idempotency-Key`
//! free (SPEC §12), the document's amount patterns agree with the service's parser, and the
//! `/docs` page signs in the browser exactly as `ledger::signing` does.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use crate::common::TestApp;
use ledger::signing;
use serde_json::{json, Value};
use uuid::Uuid;

/// How a request proves who sends it.
#[derive(Clone)]
enum Auth {
    None,
    /// Signed with a test key of this role.
    Key(&'static str),
    /// Signed with a gateway's secret (`X-Key-Id` = the method).
    Gateway(&'static str),
    /// Signed with a wrong secret.
    BadSignature,
    /// A console session's cookie, with its CSRF token or without.
    Console {
        token: String,
        csrf: Option<String>,
    },
    /// A portal link's token.
    Bearer(String),
}

/// An answer as the wire carried it.
struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
    text: String,
}

impl Reply {
    fn data(&self) -> &Value {
        &self.body["data"]
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

fn secret_of(role: &str) -> (&'static str, &'static str) {
    match role {
        "admin" => ("t-admin", "admin-secret-1"),
        "client" => ("t-client", "client-secret-1"),
        "operator" => ("t-operator", "operator-secret-1"),
        "auditor" => ("t-auditor", "auditor-secret-1"),
        "finance" => ("t-finance", "finance-secret-1"),
        "alipay" => ("alipay", "alipay-secret-1"),
        "wechat" => ("wechat", "wechat-secret-1"),
        "bank" => ("bank", "bank-secret-1"),
        "credit_card" => ("credit_card", "card-secret-1"),
        other => panic!("no test key {other}"),
    }
}

/// The document as served, and what the test has checked against it.
struct Contract {
    doc: Value,
    http: reqwest::Client,
    base: String,
    /// (method, path template) → statuses checked.
    seen: Mutex<BTreeMap<(String, String), BTreeSet<u16>>>,
}

impl Contract {
    async fn load(app: &TestApp) -> Contract {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a reqwest client");
        let r = http
            .get(format!("{}/api/v1/openapi.json", app.base))
            .send()
            .await
            .expect("the document is served");
        assert_eq!(r.status().as_u16(), 200);
        let doc: Value = r.json().await.expect("the document is JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        Contract {
            doc,
            http,
            base: app.base.clone(),
            seen: Mutex::new(BTreeMap::new()),
        }
    }

    /// Sends a request, then checks its answer against the document's `template` operation.
    async fn call(
        &self,
        method: &str,
        template: &str,
        target: &str,
        body: Option<(&str, Vec<u8>)>,
        auth: Auth,
        extra: &[(&str, &str)],
    ) -> Reply {
        let reply = self.send(method, target, body, auth, extra).await;
        self.check(method, template, &reply);
        reply
    }

    async fn send(
        &self,
        method: &str,
        target: &str,
        body: Option<(&str, Vec<u8>)>,
        auth: Auth,
        extra: &[(&str, &str)],
    ) -> Reply {
        let bytes = body.as_ref().map(|(_, b)| b.clone()).unwrap_or_default();
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
        let mut req = self.http.request(m, format!("{}{target}", self.base));
        let signed = |key: &str, secret: &str| {
            let ts = chrono::Utc::now().timestamp().to_string();
            let nonce = signing::new_nonce();
            let sig = signing::sign(secret, &ts, &nonce, method, target, &bytes);
            vec![
                ("x-key-id", key.to_owned()),
                ("x-timestamp", ts),
                ("x-nonce", nonce),
                ("x-signature", sig),
            ]
        };
        let headers: Vec<(&str, String)> = match &auth {
            Auth::None => vec![],
            Auth::Key(role) | Auth::Gateway(role) => {
                let (key, secret) = secret_of(role);
                signed(key, secret)
            }
            Auth::BadSignature => signed("t-admin", "not-the-secret"),
            Auth::Console { token, csrf } => {
                let mut h = vec![("cookie", format!("ledger_console={token}"))];
                if let Some(c) = csrf {
                    h.push(("x-csrf-token", c.clone()));
                }
                h
            }
            Auth::Bearer(token) => vec![("authorization", format!("Bearer {token}"))],
        };
        for (k, v) in headers {
            req = req.header(k, v);
        }
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        if let Some((content_type, b)) = body {
            req = req.header("content-type", content_type).body(b);
        }
        let r = req.send().await.expect("the service answers");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.expect("a body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    /// Checks one answer: its status is documented for the operation, its body validates
    /// against that status's schema (closed objects), its content type is the documented one,
    /// every required header is there, and a GET answer carries `X-Ledger-Position`.
    fn check(&self, method: &str, template: &str, reply: &Reply) {
        let m = method.to_ascii_lowercase();
        let op = &self.doc["paths"][template][&m];
        assert!(op.is_object(), "{method} {template} is not in the document");
        let label = format!("{method} {template} → {}", reply.status);
        let response = self.resolve(&op["responses"][reply.status.to_string()]);
        assert!(
            response.is_object(),
            "{label}: status not documented; body {}",
            reply.text
        );
        let content_type = reply.header("content-type").unwrap_or_default().to_owned();
        if let Some(content) = response["content"].as_object() {
            let (documented, media) = content
                .iter()
                .find(|(k, _)| content_type.starts_with(k.as_str()))
                .unwrap_or_else(|| {
                    panic!("{label}: content type {content_type:?} is not one of {content:?}")
                });
            if documented == "application/json" {
                validate(&self.doc, &media["schema"], &reply.body)
                    .unwrap_or_else(|e| panic!("{label}: {e}\nbody: {}", reply.text));
            }
        }
        if let Some(headers) = response["headers"].as_object() {
            for (name, h) in headers {
                let h = self.resolve(h);
                if h["required"] == json!(true) {
                    let v = reply.header(&name.to_ascii_lowercase());
                    assert!(v.is_some(), "{label}: required header {name} missing");
                    if let Some(schema) = h.get("schema") {
                        let value = v
                            .and_then(|v| v.parse::<i64>().ok().map(Value::from))
                            .filter(|_| schema["type"] == "integer")
                            .unwrap_or_else(|| json!(v));
                        validate(&self.doc, schema, &value)
                            .unwrap_or_else(|e| panic!("{label}: header {name}: {e}"));
                    }
                }
            }
        }
        if m == "get" {
            let p = reply.header("x-ledger-position");
            assert!(
                p.and_then(|p| p.parse::<i64>().ok())
                    .is_some_and(|p| p >= 0),
                "{label}: X-Ledger-Position missing or not a position: {p:?}"
            );
        }
        // LEDGER_CONTRACT_ANSWERS=FILE keeps the answers (the document's examples come from them).
        if let Ok(path) = std::env::var("LEDGER_CONTRACT_ANSWERS") {
            use std::io::Write;
            let line = json!({ "operation": format!("{method} {template}"), "status": reply.status, "body": reply.body });
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                let _ = writeln!(f, "{line}");
            }
        }
        self.seen
            .lock()
            .expect("not poisoned")
            .entry((m, template.to_owned()))
            .or_default()
            .insert(reply.status);
    }

    fn resolve<'a>(&'a self, v: &'a Value) -> &'a Value {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => self
                .doc
                .pointer(r.trim_start_matches('#'))
                .unwrap_or(&Value::Null),
            None => v,
        }
    }

    /// Every operation of the document was exercised, each with its success status.
    fn assert_coverage(&self) {
        let seen = self.seen.lock().expect("not poisoned");
        let mut missing = Vec::new();
        let mut summary = Vec::new();
        for (path, item) in self.doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("a path item") {
                let key = (method.clone(), path.clone());
                let success: Vec<u16> = op["responses"]
                    .as_object()
                    .expect("responses")
                    .keys()
                    .filter_map(|s| s.parse().ok())
                    .filter(|s| (200..400).contains(s))
                    .collect();
                match seen.get(&key) {
                    Some(statuses) if statuses.iter().any(|s| success.contains(s)) => {
                        summary.push(format!(
                            "{} {path}: {}",
                            method.to_uppercase(),
                            statuses
                                .iter()
                                .map(u16::to_string)
                                .collect::<Vec<_>>()
                                .join(" ")
                        ));
                    }
                    _ => missing.push(format!("{} {path}", method.to_uppercase())),
                }
            }
        }
        let checked: usize = seen.values().map(BTreeSet::len).sum();
        println!(
            "contract: {} operations, {checked} (operation, status) answers validated\n{}",
            summary.len(),
            summary.join("\n")
        );
        assert!(
            missing.is_empty(),
            "operations of the document never answered a success in this test: {missing:?}"
        );
    }
}

/// Makes every object schema closed (`unevaluatedProperties: false`) unless it says otherwise,
/// except the members of combinators and conditions, which describe only part of an object.
fn closed(v: &mut Value, in_part: bool) {
    match v {
        Value::Object(map) => {
            if !in_part
                && map.contains_key("properties")
                && !map.contains_key("additionalProperties")
                && !map.contains_key("unevaluatedProperties")
            {
                map.insert("unevaluatedProperties".into(), json!(false));
            }
            for (k, child) in map.iter_mut() {
                match k.as_str() {
                    "allOf" | "anyOf" | "oneOf" => {
                        if let Value::Array(items) = child {
                            for i in items {
                                closed(i, true);
                            }
                        }
                    }
                    "if" | "then" | "else" | "not" => closed(child, true),
                    "properties" => {
                        if let Value::Object(props) = child {
                            for p in props.values_mut() {
                                closed(p, false);
                            }
                        }
                    }
                    "example" | "examples" | "enum" | "const" | "default" => {}
                    _ => closed(child, false),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| closed(i, false)),
        _ => {}
    }
}

/// Validates `instance` against `schema`, a schema of `doc` whose `$ref`s point into it.
fn validate(doc: &Value, schema: &Value, instance: &Value) -> Result<(), String> {
    let validator = compile(doc, schema)?;
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// A validator for `schema` of `doc`, every object closed, formats checked.
fn compile(doc: &Value, schema: &Value) -> Result<jsonschema::Validator, String> {
    let mut components = doc["components"].clone();
    closed(&mut components, false);
    let mut schema = schema.clone();
    closed(&mut schema, false);
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": components,
        "allOf": [schema],
    });
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&root)
        .map_err(|e| format!("the document's schema does not compile: {e}"))
}

fn json_body(v: &Value) -> Option<(&'static str, Vec<u8>)> {
    Some(("application/json", v.to_string().into_bytes()))
}

fn order() -> String {
    format!("ORD-{}", Uuid::new_v4().simple())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_answers_as_the_document_says() {
    let app = TestApp::spawn().await;
    let c = Contract::load(&app).await;

    // The document itself, and the examples it gives validate against their own schemas.
    c.call(
        "GET",
        "/api/v1/openapi.json",
        "/api/v1/openapi.json",
        None,
        Auth::None,
        &[],
    )
    .await;
    for (name, schema) in c.doc["components"]["schemas"].as_object().expect("schemas") {
        if let Some(example) = schema.get("example") {
            validate(&c.doc, schema, example).unwrap_or_else(|e| panic!("example of {name}: {e}"));
        }
    }
    for (path, item) in c.doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("a path item") {
            for (status, response) in op["responses"].as_object().expect("responses") {
                for (media, content) in response["content"].as_object().into_iter().flatten() {
                    if let Some(example) = content.get("example") {
                        validate(&c.doc, &content["schema"], example).unwrap_or_else(|e| {
                            panic!("example of {method} {path} {status} {media}: {e}")
                        });
                    }
                }
            }
        }
    }

    if let Ok(path) = std::env::var("LEDGER_OPENAPI_OUT") {
        let text = serde_json::to_string_pretty(&c.doc).expect("the document serializes");
        std::fs::write(&path, text).expect("write the document");
    }
    // The validation is strict: an unnamed field, a wrong format or a missing field fails.
    let created = json!({ "$ref": "#/components/schemas/CreatedPaymentEnvelope" });
    let answer = json!({
        "code": 0, "message": "success",
        "data": {
            "payment_id": "0193a5b2-c3d4-7e8f-9a0b-1c2d3e4f5a6b",
            "payment_no": "P0193A5B2C3D47E8F9A0B1C2D3E4F5A6B",
            "payment_url": "http://127.0.0.1:8080/checkout/P0193A5B2C3D47E8F9A0B1C2D3E4F5A6B",
            "status": "pending", "failure_reason": null, "amount": "100.00", "currency": "CNY",
            "return_url": null, "position": 1,
        },
    });
    validate(&c.doc, &created, &answer).expect("a real answer validates");
    for (pointer, wrong) in [
        ("/data/extra", json!(1)),
        ("/data/payment_id", json!("not-a-uuid")),
        ("/data/currency", json!("XXY")),
        ("/data/status", json!("paid")),
        ("/code", json!(1073741824)),
    ] {
        let mut bad = answer.clone();
        let (parent, key) = pointer.rsplit_once('/').expect("a pointer");
        bad.pointer_mut(if parent.is_empty() { "" } else { parent })
            .and_then(Value::as_object_mut)
            .expect("an object")
            .insert(key.to_owned(), wrong);
        assert!(
            validate(&c.doc, &created, &bad).is_err(),
            "{pointer} must fail"
        );
    }
    let mut missing = answer.clone();
    missing["data"]
        .as_object_mut()
        .expect("data")
        .remove("position");
    assert!(validate(&c.doc, &created, &missing).is_err());

    // Operations.
    c.call("GET", "/healthz", "/healthz", None, Auth::None, &[])
        .await;
    c.call("GET", "/readyz", "/readyz", None, Auth::None, &[])
        .await;
    c.call("GET", "/metrics", "/metrics", None, Auth::None, &[])
        .await;

    // Create: success, and its errors.
    let create = "/api/v1/payments/create";
    let body = json!({
        "amount": "100.00", "currency": "CNY", "payment_method": "alipay",
        "order_id": order(), "user_id": "U-contract",
        "payer": { "name": "张三", "account": "4111111111111111" },
        "return_url": "https://shop.example/orders/1",
    });
    let created = c
        .call(
            "POST",
            create,
            create,
            json_body(&body),
            Auth::Key("client"),
            &[],
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.data()["payment_id"]
        .as_str()
        .expect("an id")
        .to_owned();
    let no = created.data()["payment_no"]
        .as_str()
        .expect("a number")
        .to_owned();
    let again = c
        .call(
            "POST",
            create,
            create,
            json_body(&body),
            Auth::Key("client"),
            &[],
        )
        .await;
    assert_eq!(
        (again.status, again.body["code"].as_u64()),
        (409, Some(40901))
    );
    assert_eq!(
        again.data()["payment_id"],
        json!(id),
        "40901 names the live payment"
    );
    let jpy = json!({
        "amount": 500, "currency": "JPY", "payment_method": "wechat",
        "order_id": order(), "user_id": "U-contract",
    });
    let r = c
        .call(
            "POST",
            create,
            create,
            json_body(&jpy),
            Auth::Key("operator"),
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let mut bad = body.clone();
    bad["amount"] = json!("1.005");
    bad["order_id"] = json!(order());
    let r = c
        .call(
            "POST",
            create,
            create,
            json_body(&bad),
            Auth::Key("client"),
            &[],
        )
        .await;
    assert_eq!(r.status, 400);
    let r = c
        .call(
            "POST",
            create,
            create,
            json_body(&body),
            Auth::BadSignature,
            &[],
        )
        .await;
    assert_eq!((r.status, r.body["code"].as_u64()), (401, Some(40101)));
    let r = c
        .call(
            "POST",
            create,
            create,
            json_body(&body),
            Auth::Key("auditor"),
            &[],
        )
        .await;
    assert_eq!(r.status, 403);
    let huge = vec![b'x'; 70 * 1024];
    let r = c
        .call(
            "POST",
            create,
            create,
            Some(("application/json", huge)),
            Auth::Key("client"),
            &[],
        )
        .await;
    assert_eq!(r.status, 413);
    let key = format!("idem-{}", Uuid::new_v4());
    let mut keyed = body.clone();
    keyed["order_id"] = json!(order());
    let r = c
        .call(
            "POST",
            create,
            create,
            json_body(&keyed),
            Auth::Key("client"),
            &[("idempotency-key", key.as_str())],
        )
        .await;
    assert_eq!(r.status, 201);
    let r = c
        .call(
            "POST",
            create,
            create,
            json_body(&keyed),
            Auth::Key("client"),
            &[("idempotency-key", key.as_str())],
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.header("idempotent-replayed"), Some("true"));
    keyed["amount"] = json!("101.00");
    let r = c
        .call(
            "POST",
            create,
            create,
            json_body(&keyed),
            Auth::Key("client"),
            &[("idempotency-key", key.as_str())],
        )
        .await;
    assert_eq!((r.status, r.body["code"].as_u64()), (409, Some(40903)));
    let r = c
        .send("PUT", create, json_body(&body), Auth::Key("client"), &[])
        .await;
    assert_eq!((r.status, r.body["code"].as_u64()), (405, Some(40501)));
    // 405 is documented under the path's operation.
    c.check("POST", create, &r);

    // Status, detail, history, list, events, checkout.
    let status = "/api/v1/payments/{payment_id}/status";
    let r = c
        .call(
            "GET",
            status,
            &format!("/api/v1/payments/{id}/status"),
            None,
            Auth::Key("client"),
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
    let unknown = Uuid::now_v7();
    let r = c
        .call(
            "GET",
            status,
            &format!("/api/v1/payments/{unknown}/status"),
            None,
            Auth::Key("client"),
            &[],
        )
        .await;
    assert_eq!(r.status, 404);
    let r = c
        .call(
            "GET",
            status,
            &format!("/api/v1/payments/{id}/status?min_position=-1"),
            None,
            Auth::Key("client"),
            &[],
        )
        .await;
    assert_eq!(r.status, 400);
    let r = c
        .call(
            "GET",
            status,
            &format!("/api/v1/payments/{id}/status"),
            None,
            Auth::None,
            &[],
        )
        .await;
    assert_eq!(r.status, 401);

    let detail = "/api/v1/payments/{payment_id}";
    let r = c
        .call(
            "GET",
            detail,
            &format!("/api/v1/payments/{id}"),
            None,
            Auth::Key("auditor"),
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.data()["payer"]["account"], "****1111");
    let r = c
        .call(
            "GET",
            detail,
            &format!("/api/v1/payments/{unknown}"),
            None,
            Auth::Key("auditor"),
            &[],
        )
        .await;
    assert_eq!(r.status, 404);
    let r = c
        .call(
            "GET",
            detail,
            &format!("/api/v1/payments/{id}"),
            None,
            Auth::Key("client"),
            &[],
        )
        .await;
    assert_eq!(r.status, 403);

    let history = "/api/v1/payments/history";
    let r = c
        .call(
            "GET",
            history,
            "/api/v1/payments/history?user_id=U-contract&page=1&size=10",
            None,
            Auth::Key("client"),
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
    let r = c
        .call(
            "GET",
            history,
            "/api/v1/payments/history",
            None,
            Auth::Key("client"),
            &[],
        )
        .await;
    assert_eq!(r.status, 400);

    let list = "/api/v1/payments";
    let r = c
        .call(
            "GET",
            list,
            "/api/v1/payments?page=1&size=1&status=pending&flagged=false",
            None,
            Auth::Key("operator"),
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
    let cursor = r.data()["next_after"]
        .as_str()
        .expect("a full page has a cursor")
        .to_owned();
    let r = c
        .call(
            "GET",
            list,
            &format!("/api/v1/payments?size=1&after={cursor}"),
            None,
            Auth::Key("operator"),
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
    let r = c
        .call(
            "GET",
            list,
            "/api/v1/payments?size=0",
            None,
            Auth::Key("operator"),
            &[],
        )
        .await;
    assert_eq!(r.status, 400);

    let checkout = "/api/v1/checkout/{payment_no}";
    let r = c
        .call(
            "GET",
            checkout,
            &format!("/api/v1/checkout/{no}"),
            None,
            Auth::None,
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
    let r = c
        .call(
            "GET",
            checkout,
            "/api/v1/checkout/P00000000000000000000000000000000",
            None,
            Auth::None,
            &[],
        )
        .await;
    assert_eq!(r.status, 404);

    // The sandbox's pages: render, pay, result.
    let page = "/sandbox/pay/{payment_no}";
    let r = c
        .call(
            "GET",
            page,
            &format!("/sandbox/pay/{no}"),
            None,
            Auth::None,
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
    let token = r
        .text
        .split("name=\"token\" value=\"")
        .nth(1)
        .and_then(|t| t.split('"').next())
        .expect("the page has a token")
        .to_owned();
    let form = |t: &str| {
        Some((
            "application/x-www-form-urlencoded",
            format!("outcome=success&token={t}").into_bytes(),
        ))
    };
    let r = c
        .call(
            "POST",
            page,
            &format!("/sandbox/pay/{no}"),
            form("bad"),
            Auth::None,
            &[],
        )
        .await;
    assert_eq!(r.status, 403);
    let r = c
        .call(
            "POST",
            page,
            &format!("/sandbox/pay/{no}"),
            form(&token),
            Auth::None,
            &[],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.text);
    let result = r.header("location").expect("a redirect").to_owned();
    let r = c
        .call(
            "GET",
            "/sandbox/pay/{payment_no}/result",
            &result,
            None,
            Auth::None,
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
    let r = c
        .call(
            "GET",
            page,
            "/sandbox/pay/PNOSUCHPAYMENT",
            None,
            Auth::None,
            &[],
        )
        .await;
    assert_eq!(r.status, 404);

    // Notifications: paid (by the sandbox above), a duplicate, and the errors.
    let notify = "/api/v1/gateways/{method}/notify";
    let (_, paid_no) = app.create_payment("50.00", "CNY", "bank", &order()).await;
    let notice = json!({
        "payment_no": paid_no, "callback_no": format!("CB-{}", Uuid::new_v4().simple()),
        "status": "success", "amount": "50.00", "gateway_trade_no": "T-1",
        "paid_at": "2026-11-30T08:15:00Z",
    });
    for _ in 0..2 {
        let r = c
            .call(
                "POST",
                notify,
                "/api/v1/gateways/bank/notify",
                json_body(&notice),
                Auth::Gateway("bank"),
                &[],
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let r = c
        .call(
            "POST",
            notify,
            "/api/v1/gateways/wechat/notify",
            json_body(&notice),
            Auth::Gateway("wechat"),
            &[],
        )
        .await;
    assert_eq!((r.status, r.body["code"].as_u64()), (409, Some(40901)));
    let mut unknown_no = notice.clone();
    unknown_no["payment_no"] = json!("P00000000000000000000000000000000");
    let r = c
        .call(
            "POST",
            notify,
            "/api/v1/gateways/bank/notify",
            json_body(&unknown_no),
            Auth::Gateway("bank"),
            &[],
        )
        .await;
    assert_eq!(r.status, 404);
    let r = c
        .call(
            "POST",
            notify,
            "/api/v1/gateways/bank/notify",
            json_body(&notice),
            Auth::Key("admin"),
            &[],
        )
        .await;
    assert_eq!(r.status, 403);
    let r = c
        .call(
            "POST",
            notify,
            "/api/v1/gateways/bank/notify",
            json_body(&json!({"status": "won"})),
            Auth::Gateway("bank"),
            &[],
        )
        .await;
    assert_eq!(r.status, 400);

    // Refunds.
    let refund = "/api/v1/payments/{payment_id}/refund";
    let paid = app.paid_payment("80.00").await;
    let target = format!("/api/v1/payments/{paid}/refund");
    let r = c
        .call(
            "POST",
            refund,
            &target,
            json_body(&json!({"amount": "30.00", "reason": "returned"})),
            Auth::Key("operator"),
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = c
        .call(
            "POST",
            refund,
            &target,
            json_body(&json!({"amount": "500.00", "reason": "too much"})),
            Auth::Key("operator"),
            &[],
        )
        .await;
    assert_eq!((r.status, r.body["code"].as_u64()), (409, Some(40902)));
    let (pending, _) = app.create_payment("9.00", "CNY", "alipay", &order()).await;
    let r = c
        .call(
            "POST",
            refund,
            &format!("/api/v1/payments/{pending}/refund"),
            json_body(&json!({"amount": 1, "reason": "unpaid"})),
            Auth::Key("operator"),
            &[],
        )
        .await;
    assert_eq!((r.status, r.body["code"].as_u64()), (409, Some(40901)));
    let r = c
        .call(
            "POST",
            refund,
            &format!("/api/v1/payments/{unknown}/refund"),
            json_body(&json!({"amount": "1.00", "reason": "x"})),
            Auth::Key("operator"),
            &[],
        )
        .await;
    assert_eq!(r.status, 404);
    let r = c
        .call(
            "POST",
            refund,
            &target,
            json_body(&json!({"amount": "1.00", "reason": ""})),
            Auth::Key("operator"),
            &[],
        )
        .await;
    assert_eq!(r.status, 400);
    let r = c
        .call(
            "POST",
            refund,
            &target,
            json_body(&json!({"amount": "1.00", "reason": "x"})),
            Auth::Key("client"),
            &[],
        )
        .await;
    assert_eq!(r.status, 403);
    let r = c
        .call(
            "GET",
            detail,
            &format!("/api/v1/payments/{paid}"),
            None,
            Auth::Key("operator"),
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(!r.data()["refunds"].as_array().expect("refunds").is_empty());
    assert!(!r.data()["callbacks"]
        .as_array()
        .expect("callbacks")
        .is_empty());
    let as_of = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let r = c
        .call(
            "GET",
            detail,
            &format!(
                "/api/v1/payments/{paid}?as_of={}",
                as_of.replace('+', "%2B")
            ),
            None,
            Auth::Key("operator"),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    // Audit and finance.
    let events = "/api/v1/payments/{payment_id}/events";
    let r = c
        .call(
            "GET",
            events,
            &format!("/api/v1/payments/{paid}/events"),
            None,
            Auth::Key("auditor"),
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
    let r = c
        .call(
            "GET",
            events,
            &format!("/api/v1/payments/{unknown}/events"),
            None,
            Auth::Key("auditor"),
            &[],
        )
        .await;
    assert_eq!(r.status, 404);
    let r = c
        .call(
            "GET",
            "/api/v1/events",
            "/api/v1/events?after=0&limit=5",
            None,
            Auth::Key("auditor"),
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
    let r = c
        .call(
            "GET",
            "/api/v1/events",
            "/api/v1/events?limit=0",
            None,
            Auth::Key("auditor"),
            &[],
        )
        .await;
    assert_eq!(r.status, 400);
    let r = c
        .call(
            "GET",
            "/api/v1/events",
            "/api/v1/events",
            None,
            Auth::Key("finance"),
            &[],
        )
        .await;
    assert_eq!(r.status, 403);
    let r = c
        .call(
            "GET",
            "/api/v1/audit/verify",
            "/api/v1/audit/verify",
            None,
            Auth::Key("auditor"),
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.data()["ok"], true);
    let r = c
        .call(
            "GET",
            "/api/v1/audit/digest",
            "/api/v1/audit/digest",
            None,
            Auth::Key("auditor"),
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
    let r = c
        .call(
            "GET",
            "/api/v1/ledger/totals",
            "/api/v1/ledger/totals?currency=CNY",
            None,
            Auth::Key("finance"),
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
    let r = c
        .call(
            "GET",
            "/api/v1/ledger/totals",
            "/api/v1/ledger/totals?currency=XXY",
            None,
            Auth::Key("finance"),
            &[],
        )
        .await;
    assert_eq!(r.status, 400);
    let r = c
        .call(
            "GET",
            "/api/v1/ledger/daily",
            "/api/v1/ledger/daily?start_time=2020-01-01T00:00:00Z",
            None,
            Auth::Key("finance"),
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
    let csv = format!(
        "payment_no,gateway_trade_no,type,amount,fee,settled_at\n{no},T-1,payment,100.00,0.60,2026-11-30T08:00:00Z\n"
    );
    let r = c
        .call(
            "POST",
            "/api/v1/reconcile",
            "/api/v1/reconcile",
            Some(("text/csv", csv.into_bytes())),
            Auth::Key("finance"),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = c
        .call(
            "POST",
            "/api/v1/reconcile",
            "/api/v1/reconcile",
            Some(("text/csv", b"nonsense".to_vec())),
            Auth::Key("finance"),
            &[],
        )
        .await;
    assert_eq!(r.status, 400);

    // The console's session: sign in, read it, the CSRF rule, sign out.
    let sign_in = "/api/v1/console/sessions";
    let current = "/api/v1/console/sessions/current";
    let r = c
        .call(
            "POST",
            sign_in,
            sign_in,
            json_body(&json!({"key_id": "t-operator", "secret": "operator-secret-1"})),
            Auth::None,
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let cookie = r
        .header("set-cookie")
        .and_then(|c| c.strip_prefix("ledger_console="))
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_owned();
    let csrf = r.data()["csrf_token"].as_str().expect("a token").to_owned();
    let r = c
        .call(
            "POST",
            sign_in,
            sign_in,
            json_body(&json!({"key_id": "t-operator", "secret": "wrong"})),
            Auth::None,
            &[],
        )
        .await;
    assert_eq!(r.status, 401);
    let r = c
        .call(
            "POST",
            sign_in,
            sign_in,
            json_body(&json!({"key_id": "t-client", "secret": "client-secret-1"})),
            Auth::None,
            &[],
        )
        .await;
    assert_eq!(r.status, 403);
    let session = |csrf: Option<&str>| Auth::Console {
        token: cookie.clone(),
        csrf: csrf.map(str::to_owned),
    };
    let r = c
        .call("GET", current, current, None, session(None), &[])
        .await;
    assert_eq!(r.status, 200);
    let r = c
        .call("GET", list, "/api/v1/payments", None, session(None), &[])
        .await;
    assert_eq!(r.status, 200, "the console's cookie reads the API");
    let r = c
        .call("GET", current, current, None, Auth::Key("operator"), &[])
        .await;
    assert_eq!(r.status, 401);
    let r = c
        .call("DELETE", current, current, None, session(None), &[])
        .await;
    assert_eq!(r.status, 403, "a state change needs the CSRF token");
    let r = c
        .call("DELETE", current, current, None, session(Some(&csrf)), &[])
        .await;
    assert_eq!(r.status, 200);
    let r = c
        .call("GET", current, current, None, session(None), &[])
        .await;
    assert_eq!(r.status, 401, "signed out");

    // The member portal: a link, whom it shows, what it may read.
    let links = "/api/v1/portal/sessions";
    let r = c
        .call(
            "POST",
            links,
            links,
            json_body(&json!({"user_id": "U-contract"})),
            Auth::Key("client"),
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let token = r.data()["url"]
        .as_str()
        .and_then(|u| u.split("#token=").nth(1))
        .expect("a token in the url")
        .to_owned();
    let r = c
        .call(
            "POST",
            links,
            links,
            json_body(&json!({"user_id": ""})),
            Auth::Key("client"),
            &[],
        )
        .await;
    assert_eq!(r.status, 400);
    let r = c
        .call(
            "POST",
            links,
            links,
            json_body(&json!({"user_id": "U-1"})),
            Auth::Key("auditor"),
            &[],
        )
        .await;
    assert_eq!(r.status, 403);
    let portal = "/api/v1/portal/session";
    let r = c
        .call(
            "GET",
            portal,
            portal,
            None,
            Auth::Bearer(token.clone()),
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
    let r = c
        .call(
            "GET",
            portal,
            portal,
            None,
            Auth::Bearer("not.valid".into()),
            &[],
        )
        .await;
    assert_eq!(r.status, 401);
    let r = c
        .call("GET", portal, portal, None, Auth::Key("client"), &[])
        .await;
    assert_eq!(r.status, 403);
    let r = c
        .call(
            "GET",
            history,
            "/api/v1/payments/history?user_id=U-contract",
            None,
            Auth::Bearer(token.clone()),
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
    let r = c
        .call(
            "GET",
            status,
            &format!("/api/v1/payments/{id}/status"),
            None,
            Auth::Bearer(token.clone()),
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
    let r = c
        .call(
            "GET",
            list,
            "/api/v1/payments",
            None,
            Auth::Bearer(token),
            &[],
        )
        .await;
    assert_eq!(r.status, 403);

    c.assert_coverage();
    app.stop().await;
}

/// Stripe's rule (SPEC §12): only a request that started executing is stored under its key,
/// so a client that fixes a refused request retries with the same key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_refused_by_validation_or_authentication_leave_their_idempotency_key_free() {
    let app = TestApp::spawn().await;
    let c = Contract::load(&app).await;
    let create = "/api/v1/payments/create";
    let good = json!({
        "amount": "10.00", "currency": "CNY", "payment_method": "alipay",
        "order_id": order(), "user_id": "U-idem",
    });
    let key = format!("idem-{}", Uuid::new_v4());
    let with_key = [("idempotency-key", key.as_str())];
    // Refused by validation (the body, then the domain's own rule on the order id).
    let mut bad = good.clone();
    bad["amount"] = json!("0");
    let r = c
        .send(
            "POST",
            create,
            json_body(&bad),
            Auth::Key("client"),
            &with_key,
        )
        .await;
    assert_eq!(r.status, 400);
    let mut long = good.clone();
    long["order_id"] = json!("x".repeat(65));
    let r = c
        .send(
            "POST",
            create,
            json_body(&long),
            Auth::Key("client"),
            &with_key,
        )
        .await;
    assert_eq!(r.status, 400);
    // Refused by authentication: a bad signature, a role that may not create.
    let r = c
        .send(
            "POST",
            create,
            json_body(&good),
            Auth::BadSignature,
            &with_key,
        )
        .await;
    assert_eq!(r.status, 401);
    // The fixed request with the same key executes.
    let r = c
        .send(
            "POST",
            create,
            json_body(&good),
            Auth::Key("client"),
            &with_key,
        )
        .await;
    assert_eq!(r.status, 201, "the key was left free: {}", r.text);
    assert_eq!(r.header("idempotent-replayed"), None);

    // A refund refused by the domain's validation (the reason), then by the console's CSRF
    // rule (403), then fixed, under one key of the operator's.
    let paid = app.paid_payment("40.00").await;
    let target = format!("/api/v1/payments/{paid}/refund");
    let key = format!("idem-{}", Uuid::new_v4());
    let with_key = [("idempotency-key", key.as_str())];
    let r = c
        .send(
            "POST",
            &target,
            json_body(&json!({"amount": "10.00", "reason": ""})),
            Auth::Key("operator"),
            &with_key,
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = c
        .send(
            "POST",
            &target,
            json_body(&json!({"amount": "10.001", "reason": "x"})),
            Auth::Key("operator"),
            &with_key,
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = c
        .send(
            "POST",
            &target,
            json_body(&json!({"amount": "10.00", "reason": "fixed"})),
            Auth::Key("operator"),
            &with_key,
        )
        .await;
    assert_eq!(r.status, 201, "the key was left free: {}", r.text);

    let signed_in = c
        .send(
            "POST",
            "/api/v1/console/sessions",
            json_body(&json!({"key_id": "t-operator", "secret": "operator-secret-1"})),
            Auth::None,
            &[],
        )
        .await;
    let cookie = signed_in
        .header("set-cookie")
        .and_then(|c| c.strip_prefix("ledger_console="))
        .and_then(|c| c.split(';').next())
        .expect("a cookie")
        .to_owned();
    let csrf = signed_in.data()["csrf_token"]
        .as_str()
        .expect("a token")
        .to_owned();
    let key = format!("idem-{}", Uuid::new_v4());
    let with_key = [("idempotency-key", key.as_str())];
    let body = json!({"amount": "5.00", "reason": "console"});
    let r = c
        .send(
            "POST",
            &target,
            json_body(&body),
            Auth::Console {
                token: cookie.clone(),
                csrf: None,
            },
            &with_key,
        )
        .await;
    assert_eq!(r.status, 403);
    let r = c
        .send(
            "POST",
            &target,
            json_body(&body),
            Auth::Console {
                token: cookie,
                csrf: Some(csrf),
            },
            &with_key,
        )
        .await;
    assert_eq!(r.status, 201, "the key was left free: {}", r.text);
    app.stop().await;
}

/// The document's amount patterns accept exactly the amounts the service accepts, per scale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documents_amounts_are_the_amounts_the_service_accepts() {
    let app = TestApp::spawn().await;
    let c = Contract::load(&app).await;
    let conditions = c.doc["components"]["schemas"]["CreateRequest"]["allOf"]
        .as_array()
        .expect("one condition per minor unit")
        .clone();
    let mut candidates: Vec<String> = Vec::new();
    let alphabet = ['0', '1', '5', '9', '.'];
    let mut frontier = vec![String::new()];
    for _ in 0..6 {
        let mut next = Vec::new();
        for s in &frontier {
            for ch in alphabet {
                next.push(format!("{s}{ch}"));
            }
        }
        candidates.extend(next.iter().cloned());
        frontier = next;
    }
    candidates.extend(
        [
            "",
            " 1",
            "1 ",
            "+1",
            "-1",
            "1e2",
            "0",
            "0.0",
            "1000000000000",
            "1000000000000.00",
            "1000000000000.01",
            "999999999999.99",
            "0.01",
            "0.001",
            "0.0001",
            "0.00001",
            "1.50000000",
            "1.500000000",
            "1.50000000000000000000000000000000000000000000000000000000000",
            "999999999999.990000000000000000000000000000000000000000000000",
            "1000000000000.000000000000000000000000000000000000000000000000",
            "1.",
            ".5",
            "١",
            "0x1",
        ]
        .map(str::to_owned),
    );
    let mut disagreements = Vec::new();
    for condition in &conditions {
        let codes = condition["if"]["properties"]["currency"]["enum"]
            .as_array()
            .expect("codes");
        let code = codes[0].as_str().expect("a code");
        let currency = ledger::domain::Currency::from_code(code).expect("a currency");
        let schema = compile(&c.doc, &condition["then"]["properties"]["amount"])
            .expect("the amount's schema compiles");
        for s in &candidates {
            let documented = schema.is_valid(&json!(s));
            let accepted =
                serde_json::from_str::<ledger::api::params::AmountText>(&json!(s).to_string())
                    .ok()
                    .is_some_and(|a| ledger::domain::Money::parse(&a.0, currency).is_ok());
            if documented != accepted {
                disagreements.push(format!(
                    "{code} {s:?}: document {documented}, service {accepted}"
                ));
            }
        }
    }
    assert!(disagreements.is_empty(), "{disagreements:#?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_page_has_a_credentials_box_and_signs_try_it_out_requests() {
    let app = TestApp::spawn().await;
    let http = reqwest::Client::new();
    let page = http
        .get(format!("{}/docs", app.base))
        .send()
        .await
        .expect("/docs");
    assert_eq!(page.status().as_u16(), 200);
    let csp = page
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = page.text().await.expect("html");
    for needle in [
        "id=\"ledger-key-id\"",
        "id=\"ledger-secret\"",
        "type=\"password\"",
        "ledger api",
        "/docs/ledger-signing.js",
        "/docs/swagger-ui-bundle.js",
    ] {
        assert!(html.contains(needle), "{needle} in {html}");
    }
    let js = http
        .get(format!("{}/docs/ledger-signing.js", app.base))
        .send()
        .await
        .expect("the script")
        .text()
        .await
        .expect("js");
    assert!(
        js.contains("requestInterceptor") && js.contains("crypto.subtle"),
        "{js}"
    );
    assert!(!js.contains("localStorage") && !js.contains("sessionStorage"));
    for asset in ["swagger-ui-bundle.js", "swagger-ui.css"] {
        let r = http
            .get(format!("{}/docs/{asset}", app.base))
            .send()
            .await
            .expect("asset");
        assert_eq!(r.status().as_u16(), 200, "{asset}");
    }

    // The page's signing code and `ledger::signing` sign the same string the same way.
    let dir = std::env::temp_dir().join(format!("ledger-docs-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let script = dir.join("signing.js");
    std::fs::write(&script, &js).expect("write the script");
    let (secret, ts, nonce, target) = (
        "s3cr3t-κλειδί",
        "1700000000",
        "abcDEF0123456789_-xy",
        "/api/v1/payments?page=1&size=10",
    );
    let body = r#"{"amount":"12.34","reason":"退款"}"#;
    let program = format!(
        "const s = require({script:?}); s.sign({secret:?}, {ts:?}, {nonce:?}, 'post', {target:?}, new TextEncoder().encode({body:?})).then((x) => console.log(x));",
        script = script.display().to_string(),
    );
    let out = std::process::Command::new("node")
        .arg("-e")
        .arg(&program)
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    let rust = signing::sign(secret, ts, nonce, "POST", target, body.as_bytes());
    match out {
        Ok(out) if out.status.success() => {
            let browser = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            println!("signature: browser {browser}, rust {rust}");
            assert_eq!(browser, rust);
        }
        Ok(out) => panic!("node failed: {}", String::from_utf8_lossy(&out.stderr)),
        Err(e) => panic!("node (20+, as the web pages need) is not available: {e}"),
    }
    app.stop().await;
}
