//! The sandbox gateway's pay page (`/sandbox/pay/{payment_no}`): a person sees the amount and
//! clicks Pay or Fail, and the page sends a notification signed with the gateway's secret to
//! `POST /api/v1/gateways/{method}/notify`, as a real gateway would. Unsigned, like any
//! payment page; it exists only for the sandbox gateway.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use crate::domain::PaymentMethod;
use crate::projections::read;
use crate::signing;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/sandbox/pay/{payment_no}", get(page))
        .route("/sandbox/pay/{payment_no}", post(act))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn shell(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>body{{font-family:sans-serif;max-width:32em;margin:3em auto}}button{{font-size:1.2em;margin:.5em}}</style>\
         </head><body>{body}</body></html>"
    ))
}

async fn page(State(state): State<Arc<AppState>>, Path(payment_no): Path<String>) -> Response {
    let found = match read::payment_by_no(&state.pool, &payment_no).await {
        Ok(Some(id)) => super::payments::load_detail(&state, id)
            .await
            .ok()
            .flatten(),
        _ => None,
    };
    let Some(d) = found else {
        return (
            StatusCode::NOT_FOUND,
            shell("Not found", "<h1>No such payment</h1>"),
        )
            .into_response();
    };
    let no = escape(&d.payment_no);
    let actions = if d.status == "pending" {
        format!(
            "<form method=\"post\" action=\"/sandbox/pay/{no}\">\
             <button name=\"outcome\" value=\"success\" id=\"pay\">Pay / 支付</button>\
             <button name=\"outcome\" value=\"failed\" id=\"fail\">Fail / 失败</button></form>"
        )
    } else {
        String::new()
    };
    let body = format!(
        "<h1>Sandbox {method}</h1><p>Payment <code>{no}</code></p>\
         <p id=\"amount\">{amount} {currency}</p><p>Status: <b id=\"status\">{status}</b></p>{actions}",
        method = escape(&d.payment_method),
        amount = escape(&d.amount),
        currency = escape(&d.currency),
        status = escape(&d.status),
    );
    shell("Sandbox payment", &body).into_response()
}

#[derive(Deserialize)]
struct Action {
    outcome: String,
}

async fn act(
    State(state): State<Arc<AppState>>,
    Path(payment_no): Path<String>,
    Form(action): Form<Action>,
) -> Response {
    let outcome = match action.outcome.as_str() {
        "success" | "failed" => action.outcome.clone(),
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                shell("Bad request", "<h1>Unknown action</h1>"),
            )
                .into_response()
        }
    };
    let detail = match read::payment_by_no(&state.pool, &payment_no).await {
        Ok(Some(id)) => super::payments::load_detail(&state, id)
            .await
            .ok()
            .flatten(),
        _ => None,
    };
    let Some(d) = detail else {
        return (
            StatusCode::NOT_FOUND,
            shell("Not found", "<h1>No such payment</h1>"),
        )
            .into_response();
    };
    let Some(method) = PaymentMethod::parse(&d.payment_method) else {
        return (
            StatusCode::NOT_FOUND,
            shell("Not found", "<h1>No such gateway</h1>"),
        )
            .into_response();
    };
    let faults = &state.gateways.sandbox.faults;
    let amount = if faults.take_wrong_amount() {
        // One minor unit more: well-formed in the currency, but not what the payment asks.
        match d.amount.parse::<rust_decimal::Decimal>() {
            Ok(a) => (a + rust_decimal::Decimal::new(1, a.scale())).to_string(),
            Err(_) => d.amount.clone(),
        }
    } else {
        d.amount.clone()
    };
    let body = json!({
        "payment_no": d.payment_no,
        "callback_no": format!("SBX{}", uuid::Uuid::now_v7().simple()),
        "status": outcome,
        "amount": amount,
        "gateway_trade_no": format!("T{}", uuid::Uuid::now_v7().simple()),
        "paid_at": crate::store::event::format_time(state.clock.now()),
    })
    .to_string();
    let late = faults.take_late_ms();
    let times = if faults.take_notify_twice() { 2 } else { 1 };
    let Some(secret) = state.settings.gateway_secrets.get(&method).cloned() else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            shell("Error", "<h1>No gateway secret</h1>"),
        )
            .into_response();
    };
    let url = format!(
        "{}/api/v1/gateways/{}/notify",
        state.settings.public_url,
        method.name()
    );
    let path = format!("/api/v1/gateways/{}/notify", method.name());
    let send = async move {
        if late > 0 {
            tokio::time::sleep(Duration::from_millis(late as u64)).await;
        }
        let client = reqwest::Client::new();
        let mut last = None;
        for _ in 0..times {
            let ts = chrono::Utc::now().timestamp().to_string();
            let nonce = signing::new_nonce();
            let sig = signing::sign(&secret, &ts, &nonce, "POST", &path, body.as_bytes());
            let r = client
                .post(&url)
                .header("content-type", "application/json")
                .header("x-key-id", method.name())
                .header("x-timestamp", ts)
                .header("x-nonce", nonce)
                .header("x-signature", sig)
                .body(body.clone())
                .send()
                .await;
            last = Some(match r {
                Ok(r) => r.status().as_u16(),
                Err(e) => {
                    tracing::warn!(error = %e, "sandbox could not deliver its notification");
                    0
                }
            });
        }
        last
    };
    if late > 0 {
        tokio::spawn(send);
        return shell("Sent", "<h1>Notification scheduled</h1>").into_response();
    }
    match send.await {
        Some(200) => {
            let title = if outcome == "success" {
                "Paid / 支付成功"
            } else {
                "Failed / 支付失败"
            };
            shell(title, &format!("<h1 id=\"result\">{title}</h1>")).into_response()
        }
        other => (
            StatusCode::BAD_GATEWAY,
            shell(
                "Error",
                &format!("<h1 id=\"result\">Notification answered {other:?}</h1>"),
            ),
        )
            .into_response(),
    }
}
