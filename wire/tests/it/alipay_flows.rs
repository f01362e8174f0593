//! Our own Alipay round trips: what the merchant side builds, the simulator side accepts, and
//! what the simulator signs, the merchant side reads — plus the refusals in between. The keys
//! are vendor test keys reused as "some merchant" and "some gateway"; no result here is a
//! vendor vector.

use std::str::FromStr;

use chrono::{TimeZone, Utc};
use ledger_wire::alipay::{
    self, parse_form, sim, verify_notification, verify_response, AlipayError, ApiOutcome, Merchant,
    Params, PayOrder, PayProduct, RefundRequest, RefundStatus, TradeStatus,
};
use ledger_wire::keys::PrivateKey;
use rust_decimal::Decimal;

pub(crate) fn merchant_key() -> PrivateKey {
    PrivateKey::parse(include_str!(
        "../vectors/alipay-sdk-nodejs-all/app-private-key.pem"
    ))
    .unwrap()
}

pub(crate) fn alipay_key() -> PrivateKey {
    PrivateKey::parse(include_str!(
        "../vectors/alipay-sdk-java-all/prodcert_private_key.txt"
    ))
    .unwrap()
}

fn merchant() -> Merchant {
    Merchant {
        app_id: "2021000000000001".into(),
        private_key: merchant_key(),
    }
}

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn order() -> PayOrder {
    PayOrder {
        out_trade_no: "PAY20261130000001".into(),
        total_amount: d("88.8"),
        subject: "会员充值 & more=yes".into(),
        notify_url: "https://ledger.example/api/v1/gateways/alipay/notify".into(),
        return_url: Some("https://ledger.example/checkout/PAY20261130000001".into()),
        time_expire: Some(Utc.with_ymd_and_hms(2026, 11, 30, 2, 30, 0).unwrap()),
    }
}

pub(crate) fn trade_notification() -> Params {
    [
        ("notify_id", "2026113000222000000000000000000001"),
        ("notify_type", "trade_status_sync"),
        ("notify_time", "2026-11-30 10:00:05"),
        ("app_id", "2021000000000001"),
        ("charset", "utf-8"),
        ("version", "1.0"),
        ("out_trade_no", "PAY20261130000001"),
        ("trade_no", "2026113022001400000000000001"),
        ("trade_status", "TRADE_SUCCESS"),
        ("total_amount", "88.80"),
        ("receipt_amount", "88.80"),
        ("gmt_payment", "2026-11-30 10:00:04"),
        ("subject", "会员充值 & more=yes"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[test]
fn page_pay_url_carries_every_common_parameter_and_verifies_at_the_gateway() {
    let at = Utc.with_ymd_and_hms(2026, 11, 30, 1, 2, 3).unwrap();
    let url = merchant()
        .pay_url(
            "https://openapi.alipay.com/gateway.do",
            PayProduct::Page,
            &order(),
            at,
        )
        .unwrap();
    let (base, query) = url.split_once('?').unwrap();
    assert_eq!(base, "https://openapi.alipay.com/gateway.do");
    let params = sim::verify_request(query.as_bytes(), merchant_key().public_key()).unwrap();
    assert_eq!(params["app_id"], "2021000000000001");
    assert_eq!(params["method"], "alipay.trade.page.pay");
    assert_eq!(params["format"], "JSON");
    assert_eq!(params["charset"], "utf-8");
    assert_eq!(params["sign_type"], "RSA2");
    assert_eq!(params["timestamp"], "2026-11-30 09:02:03");
    assert_eq!(params["version"], "1.0");
    assert_eq!(
        params["notify_url"],
        "https://ledger.example/api/v1/gateways/alipay/notify"
    );
    assert_eq!(
        params["return_url"],
        "https://ledger.example/checkout/PAY20261130000001"
    );
    assert_eq!(
        params["biz_content"],
        r#"{"out_trade_no":"PAY20261130000001","total_amount":"88.80","subject":"会员充值 & more=yes","product_code":"FAST_INSTANT_TRADE_PAY","time_expire":"2026-11-30 10:30:00"}"#
    );
}

#[test]
fn wap_pay_uses_its_own_method_and_product_and_joins_an_existing_query() {
    let at = Utc.with_ymd_and_hms(2026, 11, 30, 1, 2, 3).unwrap();
    let url = merchant()
        .pay_url(
            "https://gw.example/gateway.do?charset=utf-8",
            PayProduct::Wap,
            &order(),
            at,
        )
        .unwrap();
    let query = url
        .strip_prefix("https://gw.example/gateway.do?charset=utf-8&")
        .unwrap();
    let params = sim::verify_request(query.as_bytes(), merchant_key().public_key()).unwrap();
    assert_eq!(params["method"], "alipay.trade.wap.pay");
    assert!(params["biz_content"].contains(r#""product_code":"QUICK_WAP_WAY""#));
}

#[test]
fn a_pay_request_whose_amount_needs_rounding_is_refused() {
    let at = Utc.with_ymd_and_hms(2026, 11, 30, 1, 2, 3).unwrap();
    let bad = PayOrder {
        total_amount: d("0.005"),
        ..order()
    };
    assert!(matches!(
        merchant().pay_url("https://gw", PayProduct::Page, &bad, at),
        Err(AlipayError::InvalidRequest(_))
    ));
    let zero = PayOrder {
        total_amount: d("0"),
        ..order()
    };
    assert!(merchant().pay_params(PayProduct::Page, &zero, at).is_err());
}

#[test]
fn a_tampered_pay_request_is_refused_by_the_gateway_side() {
    let at = Utc.with_ymd_and_hms(2026, 11, 30, 1, 2, 3).unwrap();
    let mut params = merchant()
        .pay_params(PayProduct::Page, &order(), at)
        .unwrap();
    params.insert(
        "biz_content".into(),
        params["biz_content"].replace("88.80", "0.01"),
    );
    let form = alipay::encode_form(&params);
    assert_eq!(
        sim::verify_request(form.as_bytes(), merchant_key().public_key()),
        Err(AlipayError::BadSignature)
    );
}

#[test]
fn openapi_requests_are_signed_forms_with_the_documented_biz_content() {
    let at = Utc.with_ymd_and_hms(2026, 11, 30, 1, 2, 3).unwrap();
    let m = merchant();
    let cases = [
        (
            m.trade_query("PAY1", at).unwrap(),
            "alipay.trade.query",
            r#"{"out_trade_no":"PAY1"}"#,
        ),
        (
            m.trade_refund(
                &RefundRequest {
                    out_trade_no: "PAY1".into(),
                    refund_amount: d("12.3"),
                    out_request_no: "RF1".into(),
                    refund_reason: Some("用户取消".into()),
                },
                at,
            )
            .unwrap(),
            "alipay.trade.refund",
            r#"{"out_trade_no":"PAY1","refund_amount":"12.30","out_request_no":"RF1","refund_reason":"用户取消"}"#,
        ),
        (
            m.refund_query("PAY1", "RF1", at).unwrap(),
            "alipay.trade.fastpay.refund.query",
            r#"{"out_trade_no":"PAY1","out_request_no":"RF1"}"#,
        ),
        (
            m.trade_close("PAY1", at).unwrap(),
            "alipay.trade.close",
            r#"{"out_trade_no":"PAY1"}"#,
        ),
    ];
    for (request, method, biz) in cases {
        assert_eq!(request.method(), method);
        let params =
            sim::verify_request(request.form_body().as_bytes(), merchant_key().public_key())
                .unwrap();
        assert_eq!(&params, request.params());
        assert_eq!(params["method"], method);
        assert_eq!(params["biz_content"], biz);
        assert!(!params.contains_key("notify_url"));
        assert_eq!(
            request.response_key(),
            format!("{}_response", method.replace('.', "_"))
        );
    }
}

#[test]
fn a_refund_without_reason_leaves_the_field_out_and_a_bad_amount_is_refused() {
    let at = Utc.with_ymd_and_hms(2026, 11, 30, 1, 2, 3).unwrap();
    let refund = RefundRequest {
        out_trade_no: "PAY1".into(),
        refund_amount: d("1"),
        out_request_no: "RF1".into(),
        refund_reason: None,
    };
    let request = merchant().trade_refund(&refund, at).unwrap();
    assert_eq!(
        request.params()["biz_content"],
        r#"{"out_trade_no":"PAY1","refund_amount":"1.00","out_request_no":"RF1"}"#
    );
    let third_decimal = RefundRequest {
        refund_amount: d("1.001"),
        ..refund.clone()
    };
    assert!(merchant().trade_refund(&third_decimal, at).is_err());
    let no_request_no = RefundRequest {
        out_request_no: String::new(),
        ..refund
    };
    assert!(merchant().trade_refund(&no_request_no, at).is_err());
}

#[test]
fn a_signed_trade_query_answer_reads_typed() {
    let content = r#"{"code":"10000","msg":"Success","buyer_logon_id":"159****5620","buyer_pay_amount":"88.80","out_trade_no":"PAY1","send_pay_date":"2026-11-30 10:00:04","total_amount":"88.80","trade_no":"2026113022001400000000000001","trade_status":"TRADE_SUCCESS"}"#;
    let body = sim::sign_response("alipay.trade.query", content, &alipay_key()).unwrap();
    let verified = verify_response(&body, "alipay.trade.query", alipay_key().public_key()).unwrap();
    assert_eq!(verified.raw(), content);
    let ApiOutcome::Success(query) = verified.trade_query().unwrap() else {
        panic!("expected success");
    };
    assert_eq!(query.trade_status, TradeStatus::TradeSuccess);
    assert_eq!(query.total_amount, d("88.80"));
    assert_eq!(query.buyer_pay_amount, Some(d("88.80")));
    assert_eq!(query.trade_no, "2026113022001400000000000001");
    // The same verified answer cannot be read as another call's.
    assert!(matches!(
        verified.trade_refund(),
        Err(AlipayError::MalformedResponse(_))
    ));
}

#[test]
fn trade_not_exist_is_a_verified_failure_with_its_sub_code() {
    let content = r#"{"code":"40004","msg":"Business Failed","sub_code":"ACQ.TRADE_NOT_EXIST","sub_msg":"交易不存在","out_trade_no":"PAY1"}"#;
    let body = sim::sign_response("alipay.trade.query", content, &alipay_key()).unwrap();
    let verified = verify_response(&body, "alipay.trade.query", alipay_key().public_key()).unwrap();
    let ApiOutcome::Failure(failure) = verified.trade_query().unwrap() else {
        panic!("expected failure");
    };
    assert!(failure.is_trade_not_exist());
    assert!(!failure.is_outcome_unknown());
}

#[test]
fn refund_answers_and_refund_queries_read_typed() {
    let key = alipay_key();
    let refund = r#"{"code":"10000","msg":"Success","buyer_logon_id":"159****5620","fund_change":"Y","gmt_refund_pay":"2026-11-30 11:00:00","out_trade_no":"PAY1","refund_fee":"12.30","trade_no":"T1"}"#;
    let body = sim::sign_response("alipay.trade.refund", refund, &key).unwrap();
    let ApiOutcome::Success(r) = verify_response(&body, "alipay.trade.refund", key.public_key())
        .unwrap()
        .trade_refund()
        .unwrap()
    else {
        panic!("expected success");
    };
    assert!(r.fund_change);
    assert_eq!(r.refund_fee, d("12.30"));

    let done = r#"{"code":"10000","msg":"Success","out_request_no":"RF1","out_trade_no":"PAY1","refund_amount":"12.30","refund_status":"REFUND_SUCCESS","total_amount":"88.80","trade_no":"T1"}"#;
    let pending = r#"{"code":"10000","msg":"Success","out_request_no":"RF1","out_trade_no":"PAY1","trade_no":"T1"}"#;
    for (content, status) in [
        (done, RefundStatus::RefundSuccess),
        (pending, RefundStatus::NotSucceeded),
    ] {
        let body = sim::sign_response("alipay.trade.fastpay.refund.query", content, &key).unwrap();
        let ApiOutcome::Success(q) =
            verify_response(&body, "alipay.trade.fastpay.refund.query", key.public_key())
                .unwrap()
                .refund_query()
                .unwrap()
        else {
            panic!("expected success");
        };
        assert_eq!(q.refund_status, status);
    }

    let close = r#"{"code":"10000","msg":"Success","out_trade_no":"PAY1","trade_no":"T1"}"#;
    let body = sim::sign_response("alipay.trade.close", close, &key).unwrap();
    let outcome = verify_response(&body, "alipay.trade.close", key.public_key())
        .unwrap()
        .trade_close()
        .unwrap();
    assert!(matches!(outcome, ApiOutcome::Success(c) if c.out_trade_no.as_deref() == Some("PAY1")));
}

#[test]
fn system_error_is_an_unknown_outcome() {
    let content = r#"{"code":"20000","msg":"Service Currently Unavailable","sub_code":"aop.ACQ.SYSTEM_ERROR","sub_msg":"系统异常"}"#;
    let body = sim::sign_response("alipay.trade.refund", content, &alipay_key()).unwrap();
    let verified =
        verify_response(&body, "alipay.trade.refund", alipay_key().public_key()).unwrap();
    let ApiOutcome::Failure(failure) = verified.trade_refund().unwrap() else {
        panic!("expected failure");
    };
    assert!(failure.is_outcome_unknown());
}

#[test]
fn unsigned_answers_are_never_accepted() {
    let key = alipay_key();
    let unsigned_success = r#"{"alipay_trade_query_response":{"code":"10000","msg":"Success","trade_status":"TRADE_SUCCESS"}}"#;
    assert_eq!(
        verify_response(unsigned_success, "alipay.trade.query", key.public_key()),
        Err(AlipayError::MissingSignature)
    );
    let unsigned_error = r#"{"error_response":{"code":"40002","msg":"Invalid Arguments","sub_code":"isv.invalid-app-id","sub_msg":"无效的AppID参数"}}"#;
    let Err(AlipayError::UnsignedFailure(failure)) =
        verify_response(unsigned_error, "alipay.trade.query", key.public_key())
    else {
        panic!("expected an unsigned failure");
    };
    assert_eq!(failure.sub_code.as_deref(), Some("isv.invalid-app-id"));
}

#[test]
fn an_answer_signed_before_slash_escaping_still_verifies_like_the_vendor_sdks() {
    let key = alipay_key();
    let signed_form = r#"{"code":"10000","msg":"Success","url":"https://a/b"}"#;
    let body = sim::sign_response("alipay.trade.query", signed_form, &key).unwrap();
    let escaped = body.replace("https://a/b", r"https:\/\/a\/b");
    let verified = verify_response(&escaped, "alipay.trade.query", key.public_key()).unwrap();
    assert_eq!(
        verified.raw(),
        r#"{"code":"10000","msg":"Success","url":"https:\/\/a\/b"}"#
    );
    // But a different text is still a different text.
    let altered = body.replace("https://a/b", r"https:\/\/a\/c");
    assert_eq!(
        verify_response(&altered, "alipay.trade.query", key.public_key()),
        Err(AlipayError::BadSignature)
    );
}

#[test]
fn a_signed_notification_round_trips_through_the_simulator() {
    let body = sim::sign_notification(&trade_notification(), &alipay_key());
    let n = verify_notification(body.as_bytes(), alipay_key().public_key()).unwrap();
    assert_eq!(n.trade_status, TradeStatus::TradeSuccess);
    assert_eq!(n.total_amount, d("88.80"));
    assert_eq!(n.params["subject"], "会员充值 & more=yes");
    assert_eq!(n.params["sign_type"], "RSA2");
    assert_eq!(alipay::NOTIFY_ACK, "success");
    // Verified with the merchant's key instead of Alipay's, it is refused.
    assert_eq!(
        verify_notification(body.as_bytes(), merchant_key().public_key()),
        Err(AlipayError::BadSignature)
    );
}

#[test]
fn a_refund_notification_carries_the_refund_fields() {
    let mut p = trade_notification();
    for (k, v) in [
        ("out_biz_no", "RF1"),
        ("refund_fee", "12.30"),
        ("gmt_refund", "2026-11-30 11:00:00.123"),
        ("trade_status", "TRADE_CLOSED"),
    ] {
        p.insert(k.into(), v.into());
    }
    let body = sim::sign_notification(&p, &alipay_key());
    let n = verify_notification(body.as_bytes(), alipay_key().public_key()).unwrap();
    assert_eq!(n.trade_status, TradeStatus::TradeClosed);
    assert_eq!(n.out_biz_no.as_deref(), Some("RF1"));
    assert_eq!(n.refund_fee, Some(d("12.30")));
    assert_eq!(n.gmt_refund.as_deref(), Some("2026-11-30 11:00:00.123"));
}

#[test]
fn a_signed_notification_with_a_bad_amount_or_missing_field_is_refused_distinctly() {
    let key = alipay_key();
    let mut three_places = trade_notification();
    three_places.insert("total_amount".into(), "88.800".into());
    let body = sim::sign_notification(&three_places, &key);
    assert_eq!(
        verify_notification(body.as_bytes(), key.public_key()),
        Err(AlipayError::MalformedAmount {
            field: "total_amount",
            value: "88.800".into()
        })
    );
    let mut missing = trade_notification();
    missing.remove("trade_no");
    let body = sim::sign_notification(&missing, &key);
    assert_eq!(
        verify_notification(body.as_bytes(), key.public_key()),
        Err(AlipayError::MissingField("trade_no"))
    );
    let mut gbk = trade_notification();
    gbk.insert("charset".into(), "GBK".into());
    let body = sim::sign_notification(&gbk, &key);
    assert_eq!(
        verify_notification(body.as_bytes(), key.public_key()),
        Err(AlipayError::UnsupportedCharset("GBK".into()))
    );
}

#[test]
fn a_notification_with_a_repeated_field_is_refused_before_verification() {
    let body = sim::sign_notification(&trade_notification(), &alipay_key());
    let doubled = format!("{body}&total_amount=0.01");
    assert_eq!(
        verify_notification(doubled.as_bytes(), alipay_key().public_key()),
        Err(AlipayError::DuplicateParam("total_amount".into()))
    );
    assert_eq!(parse_form(b"").unwrap(), Params::new());
}
