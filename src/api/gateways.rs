//! `POST /api/v1/gateways/{method}/notify`: gateway notifications, signed with the gateway's
//! secret (`X-Key-Id` = the method). Idempotent by callback_no: a repeat answers 200 and
//! appends nothing.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use serde_json::json;

use super::auth::{BodyHash, Caller, PendingNonce};
use super::error::ApiError;
use super::payments::{meta, notification, payment_id_of_no, NotifyBody};
use super::{envelope, params, pipeline, AppState, RequestContext};
use crate::domain::payment::Notification;
use crate::domain::{Command, PaymentMethod};
use crate::service::Outcome;
use crate::store::StoredEvent;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/api/v1/gateways/{method}/notify", post(notify))
}

fn answer(
    payment_id: uuid::Uuid,
    callback_no: &str,
    status: &str,
    duplicate: bool,
    position: i64,
) -> serde_json::Value {
    json!({
        "code": 0,
        "message": envelope::success_message(envelope::lang()),
        "data": {
            "payment_id": payment_id,
            "callback_no": callback_no,
            "status": status,
            "duplicate": duplicate,
            "position": position,
        }
    })
}

#[utoipa::path(post, path = "/api/v1/gateways/{method}/notify", tag = "gateways", operation_id = "gateway_notify",
    summary = "A gateway's notification",
    description = "Signed with the gateway's secret, `X-Key-Id` = the method. Records the callback and says what it did (`status`); a repeated `callback_no` changes nothing and answers `duplicate: true`. A notification carrying `refund_no` confirms or fails that refund.",
    params(("method" = String, Path, description = "alipay, wechat, bank or credit_card")),
    request_body = super::payments::NotifyBody,
    responses((status = 200, description = "data {payment_id, callback_no, status, duplicate, position}")))]
#[allow(clippy::too_many_arguments)]
async fn notify(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Extension(hash): Extension<BodyHash>,
    Extension(ctx): Extension<RequestContext>,
    nonce: Option<Extension<PendingNonce>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(method) = PaymentMethod::parse(&method) else {
        return ApiError::NotFound(format!("no gateway {method:?}")).into_response();
    };
    match &caller {
        Caller::Gateway(m) if *m == method => {}
        other => {
            tracing::warn!(
                key_id = other.key_id(),
                gateway = method.name(),
                "notification not signed by its gateway"
            );
            return ApiError::Forbidden(
                "only the gateway itself may send its notifications".into(),
            )
            .into_response();
        }
    }
    // A method a real gateway serves is paid only by that gateway's own signed notices
    // (`real_gateways`): a signed-JSON notice, whoever holds its secret, is refused.
    if state.gateways.is_real(method) {
        tracing::warn!(
            gateway = method.name(),
            "signed-JSON notification for a method served by its real gateway"
        );
        return ApiError::Forbidden(format!(
            "{m} is served by the real gateway: its notifications arrive at /api/v1/gateways/{m}/notify/{v}",
            m = method.name(),
            v = if method == PaymentMethod::Alipay { "rsa2" } else { "v3" },
        ))
        .into_response();
    }
    let meta = meta(&caller, &ctx, &headers);
    let route = format!("POST /api/v1/gateways/{}/notify", method.name());
    let post = match pipeline::post(&caller, route, &headers, &hash, nonce.map(|n| n.0), meta) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    pipeline::run(&state, post, |_ids| async {
        let req: NotifyBody = params::json(&body)?;
        let n = notification(method, &req, state.clock.now())?;
        let payment_id = resolve_payment(&state, &req.payment_no).await?;
        Ok(notify_work(payment_id, n))
    })
    .await
}

/// The payment a notification names, from the log: its number is derived from its id, so a
/// new payment's notice never waits for the projection.
pub(crate) async fn resolve_payment(
    state: &AppState,
    payment_no: &str,
) -> Result<uuid::Uuid, ApiError> {
    let id = payment_id_of_no(payment_no).ok_or_else(ApiError::not_found)?;
    match state.commands.load(id).await? {
        Some(p) if p.payment_no == payment_no => Ok(id),
        _ => Err(ApiError::not_found()),
    }
}

/// Records a gateway's notification through the pipeline's command: the answer says what the
/// ledger did with it; a repeat answers the first outcome and appends nothing.
pub(crate) fn notify_work(payment_id: uuid::Uuid, n: Notification) -> pipeline::Work {
    let callback_no = n.callback_no.clone();
    pipeline::Work {
        stream_id: payment_id,
        commands: vec![Command::Notify(n)],
        respond: Arc::new(move |events: &[StoredEvent]| {
            let cb = events.iter().find(|e| e.event_type == "callback_received");
            let status = cb
                .and_then(|e| e.data["status"].as_str())
                .unwrap_or("processing")
                .to_owned();
            let callback_no = cb
                .and_then(|e| e.data["callback_no"].as_str())
                .unwrap_or_default()
                .to_owned();
            let flagged = cb.is_some_and(|e| e.data["flagged_for_refund"] == json!(true));
            if flagged {
                metrics::counter!("ledger_flagged_for_refund_total").increment(1);
                tracing::warn!(payment_id = %payment_id, "gateway reported money the ledger did not accept: flagged for refund");
            }
            let position = events.last().map(|e| e.position).unwrap_or(0);
            (
                200,
                answer(payment_id, &callback_no, &status, false, position),
            )
        }),
        unchanged: Box::new(move |outcome, position| {
            let body = match outcome {
                Outcome::Unchanged { payment } => {
                    let status = payment
                        .callback_status(&callback_no)
                        .map(|s| s.name())
                        .unwrap_or("processing");
                    answer(payment_id, &callback_no, status, true, position)
                }
                Outcome::CallbackElsewhere { owner } => {
                    answer(*owner, &callback_no, "failed", true, position)
                }
                Outcome::Appended { .. } => {
                    answer(payment_id, &callback_no, "processing", false, position)
                }
            };
            (StatusCode::OK, body)
        }),
        on_appended: None,
    }
}
