//! The Alipay driver (open platform, RSA2): the `Gateway` of `alipay` when LEDGER_ALIPAY_APP_ID
//! is set. Every byte on the wire comes from `ledger_wire::alipay`; this module only does the
//! HTTP exchange and maps Alipay's answers onto the gateway outcomes of SPEC §8.
//!
//! - **Numbers**: `out_trade_no` is our payment_no (33 characters, within Alipay's 64), and a
//!   refund's `out_request_no` is our refund_no, Alipay's idempotency key for it.
//! - **Create** builds the signed page-pay URL; Alipay creates the trade only when the payer
//!   opens it, so there is no call that could time out. The checkout builds the URL again,
//!   with `time_expire` at the payment's expiry (LEDGER_PAYMENT_TTL_SECS after creation), so
//!   Alipay stops taking money for a payment the ledger has expired.
//! - **Answers** must carry Alipay's signature over their exact bytes. An unsigned or
//!   unverifiable answer, an HTTP error, a timeout and Alipay's own "unknown" codes (`20000`,
//!   `ACQ.SYSTEM_ERROR`) are all unknown outcomes (`GatewayError::Timeout`), settled by a
//!   query and never taken for success.
//!
//! Must not: hand-write any signature or format (the wire crate owns them), or decide what a
//! payment becomes (the domain does, from notifications and these outcomes).

use chrono::{DateTime, Utc};
use ledger_wire::alipay::{
    verify_response, ApiFailure, ApiOutcome, Merchant, OpenApiRequest, PayOrder, PayProduct,
    RefundQuery, RefundRequest, RefundStatus, TradeClose, TradeQuery, TradeRefund, TradeStatus,
    VerifiedResponse,
};
use ledger_wire::keys::PublicKey;
use rust_decimal::Decimal;

use super::{
    transport_error, CheckoutOrder, CloseOutcome, Gateway, GatewayError, QueryOutcome,
    RefundOutcome,
};
use crate::config::AlipaySettings;
use crate::domain::Money;

/// Where Alipay posts its notifications, under LEDGER_PUBLIC_URL (`notify_url`).
pub const NOTIFY_PATH: &str = "/api/v1/gateways/alipay/notify/rsa2";
/// The only currency Alipay's domestic products take.
pub const CURRENCY: &str = "CNY";
/// `sub_code` of a close or refund on a trade in the wrong state (paid, closed, finished).
pub const SUB_CODE_TRADE_STATUS_ERROR: &str = "ACQ.TRADE_STATUS_ERROR";

/// The Alipay gateway.
pub struct Alipay {
    merchant: Merchant,
    alipay_key: PublicKey,
    gateway_url: String,
    /// LEDGER_PUBLIC_URL: where Alipay sends notifications and the payer back.
    public_url: String,
    http: reqwest::Client,
    /// Longest answer read, in bytes (LEDGER_GATEWAY_ANSWER_BYTES_MAX): Alipay's are a few
    /// hundred bytes.
    answer_bytes_max: usize,
}

impl std::fmt::Debug for Alipay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alipay")
            .field("app_id", &self.merchant.app_id)
            .field("gateway_url", &self.gateway_url)
            .finish_non_exhaustive()
    }
}

impl Alipay {
    pub fn new(
        settings: &AlipaySettings,
        public_url: &str,
        limits: &crate::config::Limits,
    ) -> Result<Self, reqwest::Error> {
        Ok(Self {
            merchant: Merchant {
                app_id: settings.app_id.clone(),
                private_key: settings.private_key.clone(),
            },
            alipay_key: settings.alipay_public_key.clone(),
            gateway_url: settings.gateway_url.clone(),
            public_url: public_url.trim_end_matches('/').to_owned(),
            http: super::vendor_http(limits)?,
            answer_bytes_max: limits.gateway_answer_bytes_max,
        })
    }

    pub fn notify_url(&self) -> String {
        format!("{}{NOTIFY_PATH}", self.public_url)
    }

    fn checkout_page(&self, payment_no: &str) -> String {
        format!("{}/checkout/{payment_no}", self.public_url)
    }

    /// The signed page-pay URL of a payment, signed at `at`.
    pub fn pay_url(
        &self,
        payment_no: &str,
        amount: &Money,
        expires_at: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    ) -> Result<String, GatewayError> {
        let order = PayOrder {
            out_trade_no: payment_no.to_owned(),
            total_amount: cny(amount)?,
            subject: subject(payment_no),
            notify_url: self.notify_url(),
            return_url: Some(self.checkout_page(payment_no)),
            time_expire: expires_at,
        };
        self.merchant
            .pay_url(&self.gateway_url, PayProduct::Page, &order, at)
            .map_err(|e| GatewayError::Refused(format!("alipay: {e}")))
    }

    /// POSTs a signed OpenAPI request and returns Alipay's verified answer.
    async fn call(
        &self,
        request: Result<OpenApiRequest, ledger_wire::alipay::AlipayError>,
    ) -> Result<VerifiedResponse, GatewayError> {
        let request = request.map_err(|e| GatewayError::Refused(format!("alipay: {e}")))?;
        let answer = self
            .http
            .post(&self.gateway_url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded;charset=utf-8",
            )
            .body(request.form_body())
            .send()
            .await
            .map_err(|e| transport_error(&e))?;
        let status = answer.status();
        let body = super::read_bounded(answer, self.answer_bytes_max)
            .await
            .map_err(|e| transport_error(&e))?;
        let Some(body) = body.filter(|_| status.is_success()) else {
            tracing::warn!(
                method = request.method(),
                status = status.as_u16(),
                bytes_max = self.answer_bytes_max,
                "alipay answered outside its protocol (a failure status or too long); outcome unknown"
            );
            return Err(GatewayError::Timeout);
        };
        let text = std::str::from_utf8(&body).map_err(|_| GatewayError::Timeout)?;
        verify_response(text, request.method(), &self.alipay_key).map_err(|e| {
            // Unsigned or unverifiable: it proves nothing either way.
            tracing::warn!(method = request.method(), error = %e, "alipay answer not verified; outcome unknown");
            GatewayError::Timeout
        })
    }

    async fn trade_query(&self, payment_no: &str) -> Result<ApiOutcome<TradeQuery>, GatewayError> {
        let answer = self
            .call(self.merchant.trade_query(payment_no, Utc::now()))
            .await?;
        answer.trade_query().map_err(malformed)
    }
}

/// What the payer sees as the trade's subject: the payment number, so that their Alipay bill
/// names what the ledger knows the payment by.
pub fn subject(payment_no: &str) -> String {
    format!("Payment {payment_no}")
}

/// The amount in yuan, or a refusal for any other currency.
pub fn cny(amount: &Money) -> Result<Decimal, GatewayError> {
    if amount.currency().code() != CURRENCY {
        return Err(GatewayError::Refused(format!(
            "alipay takes CNY only, not {}",
            amount.currency().code()
        )));
    }
    Ok(amount.amount())
}

fn malformed(e: ledger_wire::alipay::AlipayError) -> GatewayError {
    tracing::warn!(error = %e, "alipay answer signed but unreadable; outcome unknown");
    GatewayError::Timeout
}

/// A failed call: Alipay's "unknown" codes leave the outcome unknown; anything else is its
/// answer, a refusal.
pub fn failure(f: &ApiFailure) -> GatewayError {
    if f.is_outcome_unknown() {
        GatewayError::Timeout
    } else {
        GatewayError::Refused(format!(
            "alipay {} {}: {}",
            f.code,
            f.sub_code.as_deref().unwrap_or("-"),
            f.sub_msg.as_deref().unwrap_or(&f.msg)
        ))
    }
}

/// `alipay.trade.query` → the order's outcome.
pub fn query_outcome(
    answer: ApiOutcome<TradeQuery>,
    payment_no: &str,
) -> Result<QueryOutcome, GatewayError> {
    match answer {
        ApiOutcome::Success(q) if q.out_trade_no != payment_no => Err(GatewayError::Unavailable(
            format!("alipay answered for trade {:?}", q.out_trade_no),
        )),
        ApiOutcome::Success(q) => Ok(match q.trade_status {
            TradeStatus::TradeSuccess | TradeStatus::TradeFinished => QueryOutcome::Succeeded,
            TradeStatus::TradeClosed => QueryOutcome::Failed("closed".into()),
            TradeStatus::WaitBuyerPay | TradeStatus::Other(_) => QueryOutcome::Pending,
        }),
        // The payer has not opened the page yet: Alipay creates the trade only then.
        ApiOutcome::Failure(f) if f.is_trade_not_exist() => Ok(QueryOutcome::NotFound),
        ApiOutcome::Failure(f) => Err(failure(&f)),
    }
}

/// `alipay.trade.refund` → the refund's outcome. A `10000` answer is a refund done (a retried
/// request answers `fund_change=N`: done before, not done twice).
pub fn refund_outcome(answer: ApiOutcome<TradeRefund>) -> Result<RefundOutcome, GatewayError> {
    match answer {
        ApiOutcome::Success(_) => Ok(RefundOutcome::Confirmed),
        ApiOutcome::Failure(f) if f.is_outcome_unknown() => Err(GatewayError::Timeout),
        ApiOutcome::Failure(f) => Ok(RefundOutcome::Rejected(match failure(&f) {
            GatewayError::Refused(reason) => reason,
            other => other.to_string(),
        })),
    }
}

/// `alipay.trade.fastpay.refund.query` → the refund's outcome. Without `refund_status` Alipay
/// has no successful refund under this number (yet): pending, so that it is asked again and
/// the refund re-sent under the same number — never declared failed from that.
pub fn refund_query_outcome(
    answer: ApiOutcome<RefundQuery>,
    refund_no: &str,
) -> Result<QueryOutcome, GatewayError> {
    match answer {
        ApiOutcome::Success(q) => {
            if q.out_request_no.as_deref().is_some_and(|n| n != refund_no) {
                return Err(GatewayError::Unavailable(format!(
                    "alipay answered for refund {:?}",
                    q.out_request_no
                )));
            }
            Ok(match q.refund_status {
                RefundStatus::RefundSuccess => QueryOutcome::Succeeded,
                RefundStatus::NotSucceeded | RefundStatus::Other(_) => QueryOutcome::Pending,
            })
        }
        ApiOutcome::Failure(f) if f.is_trade_not_exist() => Ok(QueryOutcome::NotFound),
        ApiOutcome::Failure(f) => Err(failure(&f)),
    }
}

/// `alipay.trade.close` → closed, or "ask what state the trade is in" (`None`) when Alipay
/// says the trade's state does not allow closing (paid, finished or already closed).
pub fn close_outcome(answer: ApiOutcome<TradeClose>) -> Result<Option<CloseOutcome>, GatewayError> {
    match answer {
        ApiOutcome::Success(_) => Ok(Some(CloseOutcome::Closed)),
        // Never opened by the payer: there is nothing Alipay could take money for.
        ApiOutcome::Failure(f) if f.is_trade_not_exist() => Ok(Some(CloseOutcome::Closed)),
        ApiOutcome::Failure(f)
            if f.sub_code
                .as_deref()
                .is_some_and(|s| s.ends_with(SUB_CODE_TRADE_STATUS_ERROR)) =>
        {
            Ok(None)
        }
        ApiOutcome::Failure(f) => Err(failure(&f)),
    }
}

#[async_trait::async_trait]
impl Gateway for Alipay {
    async fn create_order(&self, payment_no: &str, amount: &Money) -> Result<String, GatewayError> {
        self.pay_url(payment_no, amount, None, Utc::now())
    }

    async fn query_order(
        &self,
        payment_no: &str,
    ) -> Result<(QueryOutcome, Option<String>), GatewayError> {
        let outcome = query_outcome(self.trade_query(payment_no).await?, payment_no)?;
        let page = matches!(outcome, QueryOutcome::Pending | QueryOutcome::Succeeded)
            .then(|| self.checkout_page(payment_no));
        Ok((outcome, page))
    }

    async fn refund(
        &self,
        refund_no: &str,
        payment_no: &str,
        amount: Decimal,
    ) -> Result<RefundOutcome, GatewayError> {
        let request = RefundRequest {
            out_trade_no: payment_no.to_owned(),
            refund_amount: amount,
            out_request_no: refund_no.to_owned(),
            refund_reason: None,
        };
        let answer = self
            .call(self.merchant.trade_refund(&request, Utc::now()))
            .await?;
        refund_outcome(answer.trade_refund().map_err(malformed)?)
    }

    async fn query_refund(
        &self,
        refund_no: &str,
        payment_no: &str,
    ) -> Result<QueryOutcome, GatewayError> {
        let answer = self
            .call(
                self.merchant
                    .refund_query(payment_no, refund_no, Utc::now()),
            )
            .await?;
        refund_query_outcome(answer.refund_query().map_err(malformed)?, refund_no)
    }

    async fn close_order(&self, payment_no: &str) -> Result<CloseOutcome, GatewayError> {
        let answer = self
            .call(self.merchant.trade_close(payment_no, Utc::now()))
            .await?;
        if let Some(outcome) = close_outcome(answer.trade_close().map_err(malformed)?)? {
            return Ok(outcome);
        }
        // Paid, finished or closed already: the trade's own state says which.
        match query_outcome(self.trade_query(payment_no).await?, payment_no)? {
            QueryOutcome::Succeeded => Ok(CloseOutcome::AlreadyPaid),
            QueryOutcome::Failed(_) | QueryOutcome::NotFound => Ok(CloseOutcome::Closed),
            QueryOutcome::Pending => Err(GatewayError::Unavailable(
                "alipay refused to close a trade it reports unpaid".into(),
            )),
        }
    }

    async fn checkout_url(&self, order: &CheckoutOrder) -> Result<Option<String>, GatewayError> {
        self.pay_url(
            &order.payment_no,
            &order.amount,
            order.expires_at,
            Utc::now(),
        )
        .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Currency;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn money(amount: &str, currency: &str) -> Money {
        Money::parse(amount, Currency::from_code(currency).unwrap()).unwrap()
    }

    fn failed(code: &str, sub_code: Option<&str>) -> ApiFailure {
        ApiFailure {
            code: code.into(),
            msg: "Business Failed".into(),
            sub_code: sub_code.map(str::to_owned),
            sub_msg: Some("why".into()),
        }
    }

    fn trade(no: &str, status: TradeStatus) -> ApiOutcome<TradeQuery> {
        ApiOutcome::Success(TradeQuery {
            out_trade_no: no.into(),
            trade_no: "2026113022001".into(),
            trade_status: status,
            total_amount: d("10.00"),
            buyer_pay_amount: None,
            send_pay_date: None,
        })
    }

    #[test]
    fn amounts_are_taken_in_cny_only_and_exactly() {
        assert_eq!(cny(&money("12.30", "CNY")).unwrap(), d("12.30"));
        assert!(matches!(
            cny(&money("12.30", "USD")),
            Err(GatewayError::Refused(r)) if r.contains("CNY only, not USD")
        ));
    }

    #[test]
    fn the_trade_states_map_onto_query_outcomes() {
        let no = "P0123";
        assert_eq!(
            query_outcome(trade(no, TradeStatus::TradeSuccess), no),
            Ok(QueryOutcome::Succeeded)
        );
        assert_eq!(
            query_outcome(trade(no, TradeStatus::TradeFinished), no),
            Ok(QueryOutcome::Succeeded)
        );
        assert_eq!(
            query_outcome(trade(no, TradeStatus::WaitBuyerPay), no),
            Ok(QueryOutcome::Pending)
        );
        assert_eq!(
            query_outcome(trade(no, TradeStatus::TradeClosed), no),
            Ok(QueryOutcome::Failed("closed".into()))
        );
        assert!(query_outcome(trade("P9999", TradeStatus::TradeSuccess), no).is_err());
        assert_eq!(
            query_outcome(
                ApiOutcome::Failure(failed("40004", Some("ACQ.TRADE_NOT_EXIST"))),
                no
            ),
            Ok(QueryOutcome::NotFound)
        );
        assert_eq!(
            query_outcome(
                ApiOutcome::Failure(failed("20000", Some("aop.ACQ.SYSTEM_ERROR"))),
                no
            ),
            Err(GatewayError::Timeout)
        );
    }

    #[test]
    fn a_refund_is_confirmed_by_code_10000_unknown_on_20000_and_rejected_otherwise() {
        let done = ApiOutcome::Success(TradeRefund {
            out_trade_no: "P1".into(),
            trade_no: "T1".into(),
            refund_fee: d("1.00"),
            fund_change: false,
            gmt_refund_pay: None,
        });
        assert_eq!(refund_outcome(done), Ok(RefundOutcome::Confirmed));
        assert_eq!(
            refund_outcome(ApiOutcome::Failure(failed("20000", None))),
            Err(GatewayError::Timeout)
        );
        assert!(matches!(
            refund_outcome(ApiOutcome::Failure(failed("40004", Some("ACQ.SELLER_BALANCE_NOT_ENOUGH")))),
            Ok(RefundOutcome::Rejected(r)) if r.contains("ACQ.SELLER_BALANCE_NOT_ENOUGH")
        ));
    }

    #[test]
    fn a_refund_query_without_success_is_pending_never_failed() {
        let q = |status: RefundStatus, no: Option<&str>| {
            ApiOutcome::Success(RefundQuery {
                out_trade_no: Some("P1".into()),
                trade_no: None,
                out_request_no: no.map(str::to_owned),
                refund_amount: None,
                total_amount: None,
                refund_status: status,
                gmt_refund_pay: None,
            })
        };
        assert_eq!(
            refund_query_outcome(q(RefundStatus::RefundSuccess, Some("R1")), "R1"),
            Ok(QueryOutcome::Succeeded)
        );
        assert_eq!(
            refund_query_outcome(q(RefundStatus::NotSucceeded, None), "R1"),
            Ok(QueryOutcome::Pending)
        );
        assert!(refund_query_outcome(q(RefundStatus::RefundSuccess, Some("R2")), "R1").is_err());
    }

    #[test]
    fn closing_a_trade_that_never_existed_counts_as_closed_and_a_wrong_state_asks_again() {
        let closed = ApiOutcome::Success(TradeClose {
            out_trade_no: Some("P1".into()),
            trade_no: None,
        });
        assert_eq!(close_outcome(closed), Ok(Some(CloseOutcome::Closed)));
        assert_eq!(
            close_outcome(ApiOutcome::Failure(failed(
                "40004",
                Some("ACQ.TRADE_NOT_EXIST")
            ))),
            Ok(Some(CloseOutcome::Closed))
        );
        assert_eq!(
            close_outcome(ApiOutcome::Failure(failed(
                "40004",
                Some("ACQ.TRADE_STATUS_ERROR")
            ))),
            Ok(None)
        );
        assert_eq!(
            close_outcome(ApiOutcome::Failure(failed(
                "20000",
                Some("ACQ.SYSTEM_ERROR")
            ))),
            Err(GatewayError::Timeout)
        );
    }

    #[test]
    fn the_subject_names_the_payment() {
        assert_eq!(subject("P00AB"), "Payment P00AB");
    }
}
