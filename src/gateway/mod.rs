//! Gateways (SPEC §8): one implementation per payment method behind the `Gateway` trait,
//! bounded retries with exponential backoff and jitter, and the refund process.
//!
//! A call that times out has an unknown outcome: before anything is declared failed, the
//! gateway is asked what happened (`query_*`). Refund requests carry our `refund_no`, so a
//! retried call can never refund twice.
//!
//! `alipay` and `wechat` are the real gateways (issue 15), served instead of the sandbox for
//! their method when configured; `sandbox` serves every other method.

pub mod alipay;
pub mod expiry;
pub mod journal;
pub mod refunds;
pub mod sandbox;
pub mod wechat;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use rust_decimal::Decimal;
use tokio::sync::Notify;

use crate::domain::{Money, PaymentMethod};

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum GatewayError {
    /// The gateway could not be reached or answered an error: nothing happened.
    #[error("gateway unavailable: {0}")]
    Unavailable(String),
    /// No answer in time: the call may or may not have taken effect.
    #[error("gateway timed out")]
    Timeout,
    /// The gateway answered and said no.
    #[error("gateway refused: {0}")]
    Refused(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum RefundOutcome {
    Confirmed,
    /// Accepted; the gateway will confirm later by notification or query.
    Pending,
    Rejected(String),
}

/// What closing an order (when a payment expires) found.
#[derive(Debug, Clone, PartialEq)]
pub enum CloseOutcome {
    /// The order is closed (or never existed): the payer can no longer pay it.
    Closed,
    /// The payer paid first; its notification settles the payment.
    AlreadyPaid,
}

#[derive(Debug, Clone, PartialEq)]
pub enum QueryOutcome {
    Succeeded,
    Failed(String),
    Pending,
    NotFound,
}

#[async_trait::async_trait]
pub trait Gateway: Send + Sync {
    /// Registers an order; returns the URL where the payer pays.
    async fn create_order(&self, payment_no: &str, amount: &Money) -> Result<String, GatewayError>;
    async fn query_order(
        &self,
        payment_no: &str,
    ) -> Result<(QueryOutcome, Option<String>), GatewayError>;
    /// Requests a refund; `refund_no` is the gateway's idempotency key.
    async fn refund(
        &self,
        refund_no: &str,
        payment_no: &str,
        amount: Decimal,
    ) -> Result<RefundOutcome, GatewayError>;
    /// Asks what became of a refund. `payment_no` is its payment's: some gateways (Alipay)
    /// find a refund only within its trade.
    async fn query_refund(
        &self,
        refund_no: &str,
        payment_no: &str,
    ) -> Result<QueryOutcome, GatewayError>;
    /// Closes an order nobody paid, so that it can no longer be paid.
    async fn close_order(&self, payment_no: &str) -> Result<CloseOutcome, GatewayError>;
    /// Where the payer of a pending payment pays at this gateway, for the checkout page;
    /// `None` when the gateway has no page of its own (the sandbox's page is the checkout's
    /// own concern).
    async fn checkout_url(&self, _order: &CheckoutOrder) -> Result<Option<String>, GatewayError> {
        Ok(None)
    }
}

/// A pending payment as the checkout shows it to a gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckoutOrder {
    pub payment_no: String,
    pub amount: Money,
    /// When the ledger expires the payment (LEDGER_PAYMENT_TTL_SECS after creation), if it does.
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// What a failed HTTP exchange with a gateway means: a request that never left (no
/// connection) changed nothing; anything else — a timeout, a connection lost mid-answer —
/// may have taken effect and is an unknown outcome.
pub(crate) fn transport_error(e: &reqwest::Error) -> GatewayError {
    if e.is_connect() {
        GatewayError::Unavailable(format!("cannot connect: {e}"))
    } else {
        GatewayError::Timeout
    }
}

/// The HTTP client a real gateway calls its vendor with: each call and each connect bounded by
/// LEDGER_GATEWAY_CALL_TIMEOUT_MS.
pub(crate) fn vendor_http(
    limits: &crate::config::Limits,
) -> Result<reqwest::Client, reqwest::Error> {
    let call_timeout = limits.gateway_call_timeout();
    reqwest::Client::builder()
        .timeout(call_timeout)
        .connect_timeout(call_timeout)
        .build()
}

/// Reads a vendor's answer, at most `max` bytes of it: a longer one is `None` and is never
/// held whole in memory (LEDGER_GATEWAY_ANSWER_BYTES_MAX).
pub(crate) async fn read_bounded(
    mut answer: reqwest::Response,
    max: usize,
) -> Result<Option<Vec<u8>>, reqwest::Error> {
    if answer.content_length().is_some_and(|n| n > max as u64) {
        return Ok(None);
    }
    let mut body = Vec::new();
    while let Some(chunk) = answer.chunk().await? {
        if body.len() + chunk.len() > max {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// How gateway calls are retried, and how long one call may take.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first attempt (SPEC §8: 3).
    pub retries: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Longest one call may take; beyond it the call's outcome is unknown (a timeout).
    pub call_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            retries: 3,
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            call_timeout: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// Runs `call` until it succeeds, is refused, or the retries are spent. Returns the last
    /// error otherwise (a `Timeout` if any attempt timed out: the outcome is then unknown).
    pub async fn run<T, F, Fut>(&self, what: &str, mut call: F) -> Result<T, GatewayError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, GatewayError>>,
    {
        let mut timed_out = false;
        let mut last = GatewayError::Unavailable("not attempted".into());
        for attempt in 0..=self.retries {
            let answer = tokio::time::timeout(self.call_timeout, call())
                .await
                .unwrap_or(Err(GatewayError::Timeout));
            let outcome = match &answer {
                Ok(_) => "ok",
                Err(GatewayError::Refused(_)) => "refused",
                Err(GatewayError::Timeout) => "timeout",
                Err(GatewayError::Unavailable(_)) => "unavailable",
            };
            metrics::counter!("ledger_gateway_calls_total", "call" => what.to_owned(), "outcome" => outcome)
                .increment(1);
            match answer {
                Ok(v) => return Ok(v),
                Err(e @ GatewayError::Refused(_)) => return Err(e),
                Err(e) => {
                    metrics::counter!("ledger_gateway_retries_total", "call" => what.to_owned())
                        .increment(1);
                    tracing::warn!(call = what, attempt, error = %e, "gateway call failed");
                    timed_out |= e == GatewayError::Timeout;
                    last = e;
                }
            }
            if attempt < self.retries {
                let exp = self
                    .backoff_base
                    .saturating_mul(1 << attempt.min(16))
                    .min(self.backoff_max);
                let jitter = rand::thread_rng().gen_range(0..=exp.as_millis() as u64 / 2 + 1);
                tokio::time::sleep(exp + Duration::from_millis(jitter)).await;
            }
        }
        Err(if timed_out {
            GatewayError::Timeout
        } else {
            last
        })
    }
}

/// The configured gateway of every method.
pub struct Gateways {
    by_method: HashMap<PaymentMethod, Arc<dyn Gateway>>,
    /// Methods served by a real gateway (`with`) rather than the sandbox.
    real: HashSet<PaymentMethod>,
    pub sandbox: Arc<sandbox::Sandbox>,
    pub retry: RetryPolicy,
    refund_wake: Arc<Notify>,
}

impl Gateways {
    /// Every method served by the sandbox (the default).
    pub fn sandbox(sandbox: Arc<sandbox::Sandbox>, retry: RetryPolicy) -> Self {
        let by_method = PaymentMethod::ALL
            .into_iter()
            .map(|m| (m, sandbox.clone() as Arc<dyn Gateway>))
            .collect();
        Self {
            by_method,
            real: HashSet::new(),
            sandbox,
            retry,
            refund_wake: Arc::new(Notify::new()),
        }
    }

    /// Serves `method` with `gateway` (a real gateway instead of the sandbox).
    pub fn with(mut self, method: PaymentMethod, gateway: Arc<dyn Gateway>) -> Self {
        self.by_method.insert(method, gateway);
        self.real.insert(method);
        self
    }

    /// Whether `method` is served by a real gateway rather than the sandbox.
    pub fn is_real(&self, method: PaymentMethod) -> bool {
        self.real.contains(&method)
    }

    pub fn get(&self, method: PaymentMethod) -> MethodGateway<'_> {
        MethodGateway {
            gateway: self.by_method[&method].as_ref(),
            retry: &self.retry,
        }
    }

    /// Tells the refund process that a refund was requested.
    pub fn wake_refunds(&self) {
        self.refund_wake.notify_one();
    }

    pub fn refund_wake(&self) -> Arc<Notify> {
        self.refund_wake.clone()
    }
}

/// A gateway with the retry policy applied.
pub struct MethodGateway<'a> {
    gateway: &'a dyn Gateway,
    retry: &'a RetryPolicy,
}

impl MethodGateway<'_> {
    /// Creates the order with retries; an unknown outcome is settled by a query.
    pub async fn create_order(
        &self,
        payment_no: &str,
        amount: &Money,
    ) -> Result<String, GatewayError> {
        match self
            .retry
            .run("create_order", || {
                self.gateway.create_order(payment_no, amount)
            })
            .await
        {
            Err(GatewayError::Timeout) => {
                match self
                    .retry
                    .run("query_order", || self.gateway.query_order(payment_no))
                    .await?
                {
                    (QueryOutcome::Pending | QueryOutcome::Succeeded, Some(url)) => Ok(url),
                    _ => Err(GatewayError::Unavailable(
                        "order not registered after a timeout".into(),
                    )),
                }
            }
            other => other,
        }
    }

    /// Refunds with retries; an unknown outcome is settled by a query. `Err` means the
    /// outcome is still unknown (the gateway unavailable, a timeout the query cannot settle,
    /// or a refund it does not know yet): the refund stays processing and is asked about
    /// again later. Only a definite answer fails a refund.
    pub async fn refund(
        &self,
        refund_no: &str,
        payment_no: &str,
        amount: Decimal,
    ) -> Result<RefundOutcome, GatewayError> {
        match self
            .retry
            .run("refund", || {
                self.gateway.refund(refund_no, payment_no, amount)
            })
            .await
        {
            Err(GatewayError::Timeout | GatewayError::Unavailable(_)) => {
                match self
                    .retry
                    .run("query_refund", || {
                        self.gateway.query_refund(refund_no, payment_no)
                    })
                    .await?
                {
                    QueryOutcome::Succeeded => Ok(RefundOutcome::Confirmed),
                    QueryOutcome::Pending => Ok(RefundOutcome::Pending),
                    QueryOutcome::Failed(r) => Ok(RefundOutcome::Rejected(r)),
                    QueryOutcome::NotFound => Err(GatewayError::Unavailable(
                        "refund not known to the gateway yet".into(),
                    )),
                }
            }
            Err(GatewayError::Refused(r)) => Ok(RefundOutcome::Rejected(r)),
            Ok(o) => Ok(o),
        }
    }

    /// Closes an order with retries.
    pub async fn close_order(&self, payment_no: &str) -> Result<CloseOutcome, GatewayError> {
        self.retry
            .run("close_order", || self.gateway.close_order(payment_no))
            .await
    }

    /// The gateway's page for a pending payment: one attempt within the call timeout, since a
    /// person is waiting on the checkout page (which they can reload); `None` when the gateway
    /// has none or did not answer.
    pub async fn checkout_url(&self, order: &CheckoutOrder) -> Option<String> {
        match tokio::time::timeout(self.retry.call_timeout, self.gateway.checkout_url(order)).await
        {
            Ok(Ok(url)) => url,
            Ok(Err(e)) => {
                tracing::warn!(payment_no = %order.payment_no, error = %e, "no checkout URL from the gateway");
                None
            }
            Err(_) => {
                tracing::warn!(payment_no = %order.payment_no, "the gateway's checkout URL timed out");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::read_bounded;

    /// Serves `body` once per connection, with or without a Content-Length (chunked).
    async fn serve(body: &'static [u8], chunked: bool) -> String {
        use axum::body::Body;
        let app = axum::Router::new().route(
            "/",
            axum::routing::get(move || async move {
                if chunked {
                    let parts = body
                        .chunks(100)
                        .map(|c| Ok::<_, std::io::Error>(c.to_vec()));
                    axum::response::Response::new(Body::from_stream(futures::stream::iter(
                        parts.collect::<Vec<_>>(),
                    )))
                } else {
                    axum::response::Response::new(Body::from(body))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    #[tokio::test]
    async fn an_answer_longer_than_the_bound_is_refused_with_or_without_a_length() {
        static BODY: [u8; 1000] = [b'x'; 1000];
        let http = reqwest::Client::new();
        for chunked in [false, true] {
            let url = serve(&BODY, chunked).await;
            let get = || async { http.get(&url).send().await.unwrap() };
            assert_eq!(
                read_bounded(get().await, 1000)
                    .await
                    .unwrap()
                    .map(|b| b.len()),
                Some(1000),
                "chunked {chunked}"
            );
            assert_eq!(
                read_bounded(get().await, 999).await.unwrap(),
                None,
                "chunked {chunked}"
            );
        }
    }
}
