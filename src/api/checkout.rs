//! The member checkout's read (issue 12): `GET /api/v1/checkout/{payment_no}`, unsigned, as any
//! payment page is. The payment number is the capability (derived from a random id, it cannot
//! be guessed), so the answer says only what the member needs to pay: no payer data, no user
//! id, no payment id.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::Serialize;

use super::error::ApiError;
use super::params::{self, Query};
use super::payments::{load_detail, payment_id_of_no, read_position};
use super::AppState;
use crate::domain::{Currency, Money, PaymentMethod};
use crate::gateway::CheckoutOrder;
use crate::store::event::format_time;

/// Unsigned paths start with this (see `auth::is_unsigned`).
pub const PATH_PREFIX: &str = "/api/v1/checkout/";

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/api/v1/checkout/{payment_no}", get(checkout))
}

#[derive(Serialize, utoipa::ToSchema)]
struct CheckoutView<'a> {
    payment_no: &'a str,
    order_id: &'a str,
    amount: &'a str,
    currency: &'a str,
    payment_method: &'a str,
    status: &'a str,
    failure_reason: Option<&'a str>,
    return_url: Option<&'a str>,
    /// The gateway's page to continue to; null when this service has none to offer.
    pay_url: Option<String>,
    created_at: &'a str,
    paid_at: Option<&'a str>,
    /// When a pending payment expires (null when payments never expire).
    expires_at: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/checkout/{payment_no}", tag = "pages", operation_id = "checkout",
    summary = "What the member checkout shows",
    description = "Unsigned: the payment number is the capability. No payer data, user id or payment id.",
    params(("payment_no" = String, Path), ("min_position" = Option<i64>, Query)),
    responses((status = 200, description = "data {payment_no, order_id, amount, currency, payment_method, status, failure_reason, return_url, pay_url, created_at, paid_at, expires_at}", body = CheckoutView)))]
async fn checkout(
    State(state): State<Arc<AppState>>,
    Path(payment_no): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref(), &["min_position"])?;
    let id = payment_id_of_no(&payment_no).ok_or_else(ApiError::not_found)?;
    let position = read_position(&state, &q).await?;
    let d = load_detail(&state, id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    // Only the number exactly as issued names the payment.
    if d.payment_no != payment_no {
        return Err(ApiError::not_found());
    }
    let expires = match (
        state.settings.payment_ttl,
        params::parse_time(&d.created_at),
    ) {
        (Some(ttl), Some(created)) => chrono::Duration::from_std(ttl)
            .ok()
            .map(|ttl| created + ttl),
        _ => None,
    };
    let expires_at = expires.map(format_time);
    let method = PaymentMethod::parse(&d.payment_method);
    let pay_url = match method {
        // A real gateway's page (Alipay's signed page-pay URL, WeChat Pay's code_url), only
        // while the payment can still be paid.
        Some(method) if state.gateways.is_real(method) => {
            let amount =
                Currency::from_code(&d.currency).and_then(|c| Money::parse(&d.amount, c).ok());
            match amount {
                Some(amount) if d.status == "pending" => {
                    let order = CheckoutOrder {
                        payment_no: d.payment_no.clone(),
                        amount,
                        expires_at: expires,
                    };
                    state.gateways.get(method).checkout_url(&order).await
                }
                _ => None,
            }
        }
        _ => state
            .settings
            .sandbox_secret
            .is_some()
            .then(|| state.gateways.sandbox.pay_url(&d.payment_no)),
    };
    Ok(super::envelope::ok_read(
        position,
        &CheckoutView {
            payment_no: &d.payment_no,
            order_id: &d.order_no,
            amount: &d.amount,
            currency: &d.currency,
            payment_method: &d.payment_method,
            status: &d.status,
            failure_reason: d.failure_reason.as_deref(),
            return_url: d.return_url.as_deref(),
            pay_url,
            created_at: &d.created_at,
            paid_at: d.payment_time.as_deref(),
            expires_at,
        },
    ))
}
