//! The buyer-facing redirect: `alipay.trade.page.pay` (desktop) and `alipay.trade.wap.pay`
//! (mobile browser). The ledger sends the buyer's browser to `{gateway}?{signed params}`.
//!
//! Must not: create anything at Alipay by itself — the trade only exists once the buyer
//! opens the URL, which is why a later query may answer `ACQ.TRADE_NOT_EXIST`.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;

use super::params::{encode_form, sign_params, Params, SignedFields};
use super::{format_amount, timestamp, AlipayError, Merchant, CHARSET, FORMAT, SIGN_TYPE, VERSION};

/// Which checkout the buyer gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayProduct {
    /// `alipay.trade.page.pay`, product `FAST_INSTANT_TRADE_PAY`.
    Page,
    /// `alipay.trade.wap.pay`, product `QUICK_WAP_WAY`.
    Wap,
}

impl PayProduct {
    pub fn method(self) -> &'static str {
        match self {
            PayProduct::Page => "alipay.trade.page.pay",
            PayProduct::Wap => "alipay.trade.wap.pay",
        }
    }

    pub fn product_code(self) -> &'static str {
        match self {
            PayProduct::Page => "FAST_INSTANT_TRADE_PAY",
            PayProduct::Wap => "QUICK_WAP_WAY",
        }
    }
}

/// What the buyer is asked to pay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayOrder {
    /// Our payment number; Alipay's idempotency key for the trade.
    pub out_trade_no: String,
    /// Yuan, at most two decimals.
    pub total_amount: Decimal,
    pub subject: String,
    pub notify_url: String,
    pub return_url: Option<String>,
    /// When Alipay should stop accepting payment (our pending-payment TTL), if set.
    pub time_expire: Option<DateTime<Utc>>,
}

/// `biz_content` in the field order Alipay's own SDKs write (`out_trade_no`, `total_amount`,
/// `subject`, `product_code`); the gateway does not care, but a reader comparing with the
/// vendor documentation does.
#[derive(Serialize)]
struct PayBizContent<'a> {
    out_trade_no: &'a str,
    total_amount: String,
    subject: &'a str,
    product_code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    time_expire: Option<String>,
}

/// The `biz_content` JSON of a pay request.
pub fn biz_content(product: PayProduct, order: &PayOrder) -> Result<String, AlipayError> {
    check_trade_no("out_trade_no", &order.out_trade_no)?;
    if order.subject.trim().is_empty() || order.subject.chars().count() > 256 {
        return Err(AlipayError::InvalidRequest(
            "subject must be 1..=256 characters".into(),
        ));
    }
    let content = PayBizContent {
        out_trade_no: &order.out_trade_no,
        total_amount: format_amount(order.total_amount)?,
        subject: &order.subject,
        product_code: product.product_code(),
        time_expire: order.time_expire.map(timestamp),
    };
    serde_json::to_string(&content).map_err(|e| AlipayError::InvalidRequest(e.to_string()))
}

/// Alipay's numbers are at most 64 characters; whitespace or control characters in one would
/// only surface later as a signature mismatch, so they are refused here.
pub(super) fn check_trade_no(field: &str, value: &str) -> Result<(), AlipayError> {
    let ok = !value.is_empty() && value.len() <= 64 && value.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(AlipayError::InvalidRequest(format!(
            "{field} must be 1..=64 printable ASCII characters"
        )))
    }
}

impl Merchant {
    /// The common request parameters, `biz_content` included, signed.
    pub(super) fn signed_params(
        &self,
        method: &str,
        biz_content: String,
        at: DateTime<Utc>,
        extra: &[(&str, &str)],
    ) -> Params {
        let mut params = Params::new();
        for (k, v) in [
            ("app_id", self.app_id.as_str()),
            ("method", method),
            ("format", FORMAT),
            ("charset", CHARSET),
            ("sign_type", SIGN_TYPE),
            ("version", VERSION),
        ] {
            params.insert(k.to_owned(), v.to_owned());
        }
        params.insert("timestamp".to_owned(), timestamp(at));
        params.insert("biz_content".to_owned(), biz_content);
        for (k, v) in extra {
            params.insert((*k).to_owned(), (*v).to_owned());
        }
        // Requests are signed over everything but `sign`, `sign_type` included.
        let sign = sign_params(&params, &self.private_key, SignedFields::AllButSign);
        params.insert("sign".to_owned(), sign);
        params
    }

    /// The signed parameters of a page-pay or wap-pay request, for a caller that would rather
    /// render an auto-submitting POST form than redirect.
    pub fn pay_params(
        &self,
        product: PayProduct,
        order: &PayOrder,
        at: DateTime<Utc>,
    ) -> Result<Params, AlipayError> {
        let biz = biz_content(product, order)?;
        if order.notify_url.is_empty() {
            return Err(AlipayError::InvalidRequest("notify_url is required".into()));
        }
        let mut extra = vec![("notify_url", order.notify_url.as_str())];
        if let Some(return_url) = order.return_url.as_deref() {
            extra.push(("return_url", return_url));
        }
        Ok(self.signed_params(product.method(), biz, at, &extra))
    }

    /// `{gateway_url}?{url-encoded signed params}`: where to send the buyer's browser.
    pub fn pay_url(
        &self,
        gateway_url: &str,
        product: PayProduct,
        order: &PayOrder,
        at: DateTime<Utc>,
    ) -> Result<String, AlipayError> {
        let query = encode_form(&self.pay_params(product, order, at)?);
        // A configured gateway may already carry a query (`gateway.do?charset=utf-8`).
        let joiner = if gateway_url.contains('?') { '&' } else { '?' };
        Ok(format!("{gateway_url}{joiner}{query}"))
    }
}
