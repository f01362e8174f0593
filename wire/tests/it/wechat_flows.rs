//! Our own WeChat Pay round trips: merchant-side builders against the simulator's checkers,
//! simulator-side signers and encryptors against the merchant's verifiers. Vendor test keys
//! are reused as "some merchant" and "some platform"; no result here is a vendor vector.

use std::str::FromStr;

use chrono::{TimeZone, Utc};
use ledger_wire::keys::PrivateKey;
use ledger_wire::wechat::{
    self, sim, verify_notification, verify_signature, ApiV3Key, H5Scene, Merchant,
    NotificationEvent, Order, PlatformKeys, RefundEvent, RefundOrder, RefundStatus,
    SignatureHeaders, TradeState, WechatError,
};
use rust_decimal::Decimal;

const NOW: i64 = 1_796_000_000;
const API_V3_KEY: &str = "0123456789abcdefghijklmnopqrstuv";
const PLATFORM_SERIAL: &str = "5DEA10EF55877E3CF6C33255C2E7DEFFF7E427EC";

pub(crate) fn merchant() -> Merchant {
    Merchant {
        mchid: "1230000109".into(),
        serial_no: "5F1C72E2A8931B72A2E13AF8DEE92471EB397115".into(),
        private_key: PrivateKey::parse(include_str!(
            "../vectors/wechatpay-java/merchant_private_key.pem"
        ))
        .unwrap(),
    }
}

pub(crate) fn platform() -> sim::PlatformSigner {
    sim::PlatformSigner {
        serial: PLATFORM_SERIAL.into(),
        private_key: PrivateKey::parse(include_str!(
            "../vectors/wechatpay-java/wechat_pay_private_key.pem"
        ))
        .unwrap(),
    }
}

pub(crate) fn keyring() -> PlatformKeys {
    let mut keys = PlatformKeys::new();
    keys.insert(PLATFORM_SERIAL, platform().private_key.public_key().clone());
    keys
}

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn order() -> Order {
    Order {
        appid: "wxd678efh567hg6787".into(),
        mchid: "1230000109".into(),
        description: "会员充值".into(),
        out_trade_no: "PAY20261130000001".into(),
        notify_url: "https://ledger.example/api/v1/gateways/wechat/notify".into(),
        total: d("12.3"),
        time_expire: Some(Utc.with_ymd_and_hms(2026, 11, 30, 2, 30, 0).unwrap()),
    }
}

#[test]
fn native_and_h5_orders_have_the_documented_paths_and_bodies() {
    let native = wechat::native_order(&order()).unwrap();
    assert_eq!(native.method.as_str(), "POST");
    assert_eq!(native.path, "/v3/pay/transactions/native");
    assert_eq!(
        native.body,
        r#"{"appid":"wxd678efh567hg6787","mchid":"1230000109","description":"会员充值","out_trade_no":"PAY20261130000001","time_expire":"2026-11-30T10:30:00+08:00","notify_url":"https://ledger.example/api/v1/gateways/wechat/notify","amount":{"total":1230,"currency":"CNY"}}"#
    );
    let scene = H5Scene {
        payer_client_ip: "14.23.150.211".into(),
        h5_type: "Wap".into(),
    };
    let h5 = wechat::h5_order(
        &Order {
            time_expire: None,
            ..order()
        },
        &scene,
    )
    .unwrap();
    assert_eq!(h5.path, "/v3/pay/transactions/h5");
    assert_eq!(
        h5.body,
        r#"{"appid":"wxd678efh567hg6787","mchid":"1230000109","description":"会员充值","out_trade_no":"PAY20261130000001","notify_url":"https://ledger.example/api/v1/gateways/wechat/notify","amount":{"total":1230,"currency":"CNY"},"scene_info":{"payer_client_ip":"14.23.150.211","h5_info":{"type":"Wap"}}}"#
    );
    let bad_ip = H5Scene {
        payer_client_ip: "not-an-ip".into(),
        ..scene
    };
    assert!(wechat::h5_order(&order(), &bad_ip).is_err());
}

#[test]
fn orders_refuse_amounts_that_are_not_whole_fen() {
    assert!(matches!(
        wechat::native_order(&Order {
            total: d("0.001"),
            ..order()
        }),
        Err(WechatError::Amount(_))
    ));
    assert!(matches!(
        wechat::native_order(&Order {
            total: d("0"),
            ..order()
        }),
        Err(WechatError::InvalidRequest(_))
    ));
}

#[test]
fn query_close_refund_and_refund_query_have_the_documented_shapes() {
    let q = wechat::query_order("1230000109", "PAY20261130000001").unwrap();
    assert_eq!((q.method.as_str(), q.body.as_str()), ("GET", ""));
    assert_eq!(
        q.path,
        "/v3/pay/transactions/out-trade-no/PAY20261130000001?mchid=1230000109"
    );
    let c = wechat::close_order("1230000109", "PAY20261130000001").unwrap();
    assert_eq!(
        c.path,
        "/v3/pay/transactions/out-trade-no/PAY20261130000001/close"
    );
    assert_eq!(c.body, r#"{"mchid":"1230000109"}"#);
    let refund = RefundOrder {
        out_trade_no: "PAY20261130000001".into(),
        out_refund_no: "RF20261130000001".into(),
        reason: Some("商品已售完".into()),
        notify_url: Some("https://ledger.example/api/v1/gateways/wechat/notify".into()),
        refund: d("5"),
        total: d("12.30"),
    };
    let r = wechat::refund(&refund).unwrap();
    assert_eq!(r.path, "/v3/refund/domestic/refunds");
    assert_eq!(
        r.body,
        r#"{"out_trade_no":"PAY20261130000001","out_refund_no":"RF20261130000001","reason":"商品已售完","notify_url":"https://ledger.example/api/v1/gateways/wechat/notify","amount":{"refund":500,"total":1230,"currency":"CNY"}}"#
    );
    assert!(wechat::refund(&RefundOrder {
        refund: d("12.31"),
        ..refund.clone()
    })
    .is_err());
    assert!(wechat::refund(&RefundOrder {
        refund: d("0.015"),
        ..refund
    })
    .is_err());
    let rq = wechat::query_refund("RF20261130000001").unwrap();
    assert_eq!(
        (rq.method.as_str(), rq.path.as_str()),
        ("GET", "/v3/refund/domestic/refunds/RF20261130000001")
    );
}

#[test]
fn a_signed_request_is_accepted_by_the_simulator_and_refused_when_altered_or_late() {
    let request = wechat::native_order(&order()).unwrap();
    let m = merchant();
    let auth = request
        .authorization(&m, NOW, "593BEC0C930BF1AFEB40B4A08C8FB242")
        .unwrap();
    assert!(auth.starts_with("WECHATPAY2-SHA256-RSA2048 mchid=\"1230000109\",nonce_str=\"593BEC0C930BF1AFEB40B4A08C8FB242\",signature=\""));
    let key = m.private_key.public_key();
    let header = sim::verify_request(
        &auth,
        "POST",
        &request.path,
        &request.body,
        "1230000109",
        key,
        NOW,
    )
    .unwrap();
    assert_eq!(header.serial_no, m.serial_no);
    assert_eq!(header.timestamp, NOW);

    let other_body = request.body.replace("1230", "1");
    assert_eq!(
        sim::verify_request(
            &auth,
            "POST",
            &request.path,
            &other_body,
            "1230000109",
            key,
            NOW
        ),
        Err(WechatError::BadSignature)
    );
    assert_eq!(
        sim::verify_request(
            &auth,
            "GET",
            &request.path,
            &request.body,
            "1230000109",
            key,
            NOW
        ),
        Err(WechatError::BadSignature)
    );
    assert!(matches!(
        sim::verify_request(
            &auth,
            "POST",
            &request.path,
            &request.body,
            "1230000109",
            key,
            NOW + 301
        ),
        Err(WechatError::StaleTimestamp { .. })
    ));
    assert!(sim::verify_request(
        &auth,
        "POST",
        &request.path,
        &request.body,
        "1900009191",
        key,
        NOW
    )
    .is_err());
}

#[test]
fn request_signing_refuses_nonces_and_paths_that_would_break_the_message() {
    let m = merchant();
    for nonce in ["", "has space", "line\nbreak", "quote\"", &"x".repeat(33)] {
        assert_eq!(
            m.authorization("GET", "/v3/x", "", NOW, nonce),
            Err(WechatError::InvalidNonce),
            "{nonce:?}"
        );
    }
    assert!(m.authorization("get", "/v3/x", "", NOW, "N").is_err());
    assert!(m
        .authorization("GET", "https://api.mch.weixin.qq.com/v3/x", "", NOW, "N")
        .is_err());
    assert!(m.authorization("GET", "/v3/x", "", -1, "N").is_err());
}

#[test]
fn a_signed_query_answer_verifies_and_reads_typed() {
    let body = r#"{"amount":{"currency":"CNY","payer_currency":"CNY","payer_total":1230,"total":1230},"appid":"wxd678efh567hg6787","attach":"","bank_type":"OTHERS","mchid":"1230000109","out_trade_no":"PAY20261130000001","payer":{"openid":"o1"},"promotion_detail":[],"success_time":"2026-11-30T10:00:04+08:00","trade_state":"SUCCESS","trade_state_desc":"支付成功","trade_type":"NATIVE","transaction_id":"4200000000202611300000000001"}"#;
    let headers = platform().sign(body.as_bytes(), NOW, "NONCE1").unwrap();
    let verified = verify_signature(&headers, body.as_bytes(), &keyring(), NOW).unwrap();
    let t = wechat::parse_transaction(&verified).unwrap();
    assert_eq!(t.trade_state, TradeState::Success);
    assert_eq!(t.amount.unwrap().total_yuan(), d("12.30"));
}

#[test]
fn an_empty_204_answer_is_signed_too() {
    let headers = platform().sign(b"", NOW, "NONCE2").unwrap();
    assert!(verify_signature(&headers, b"", &keyring(), NOW).is_ok());
    assert_eq!(
        verify_signature(&headers, b"{}", &keyring(), NOW),
        Err(WechatError::BadSignature)
    );
}

#[test]
fn headers_are_read_case_insensitively_through_a_lookup() {
    let signed = platform().sign(b"{}", NOW, "NONCE3").unwrap();
    let raw = [
        ("wechatpay-timestamp", signed.timestamp.clone()),
        ("WECHATPAY-NONCE", signed.nonce.clone()),
        ("Wechatpay-Signature", signed.signature.clone()),
        ("wechatpay-serial", signed.serial.clone()),
    ];
    let headers = SignatureHeaders::from_lookup(|name| {
        raw.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    })
    .unwrap();
    assert_eq!(headers, signed);
}

fn notification(
    event_type: &str,
    original_type: &str,
    resource: &str,
    nonce: &str,
) -> (SignatureHeaders, String) {
    let spec = sim::NotificationSpec {
        id: "EV-2026113000000001".into(),
        create_time: "2026-11-30T10:00:05+08:00".into(),
        event_type: event_type.into(),
        summary: "支付成功".into(),
        original_type: original_type.into(),
        nonce: nonce.into(),
    };
    let body =
        sim::build_notification(&spec, resource, &ApiV3Key::new(API_V3_KEY).unwrap()).unwrap();
    let headers = platform()
        .sign(body.as_bytes(), NOW, "NOTIFYNONCE")
        .unwrap();
    (headers, body)
}

const PAID: &str = r#"{"mchid":"1230000109","appid":"wxd678efh567hg6787","out_trade_no":"PAY20261130000001","transaction_id":"4200000000202611300000000001","trade_type":"NATIVE","trade_state":"SUCCESS","trade_state_desc":"支付成功","bank_type":"OTHERS","attach":"","success_time":"2026-11-30T10:00:04+08:00","payer":{"openid":"o1"},"amount":{"total":1230,"payer_total":1230,"currency":"CNY","payer_currency":"CNY"}}"#;

#[test]
fn a_transaction_success_notification_round_trips_through_the_simulator() {
    let (headers, body) = notification("TRANSACTION.SUCCESS", "transaction", PAID, "abcdefghijkl");
    let key = ApiV3Key::new(API_V3_KEY).unwrap();
    let n = verify_notification(&headers, body.as_bytes(), &keyring(), &key, NOW).unwrap();
    assert_eq!(n.id, "EV-2026113000000001");
    assert_eq!(n.event_type, "TRANSACTION.SUCCESS");
    let NotificationEvent::TransactionSuccess(t) = n.event else {
        panic!("expected a transaction");
    };
    assert_eq!(t.out_trade_no, "PAY20261130000001");
    assert_eq!(
        t.transaction_id.as_deref(),
        Some("4200000000202611300000000001")
    );
    assert_eq!(t.amount.as_ref().map(|a| a.total), Some(1230));
}

#[test]
fn refund_notifications_read_as_their_event() {
    let notice = r#"{"mchid":"1230000109","out_trade_no":"PAY20261130000001","transaction_id":"4200000000202611300000000001","out_refund_no":"RF20261130000001","refund_id":"50000000382019052709732678859","refund_status":"SUCCESS","success_time":"2026-11-30T11:00:00+08:00","user_received_account":"招商银行信用卡0403","amount":{"total":1230,"refund":500,"payer_total":1230,"payer_refund":500}}"#;
    let key = ApiV3Key::new(API_V3_KEY).unwrap();
    for (event_type, expected) in [
        ("REFUND.SUCCESS", RefundEvent::Success),
        ("REFUND.ABNORMAL", RefundEvent::Abnormal),
        ("REFUND.CLOSED", RefundEvent::Closed),
    ] {
        let (headers, body) = notification(event_type, "refund", notice, "mnopqrstuvwx");
        let n = verify_notification(&headers, body.as_bytes(), &keyring(), &key, NOW).unwrap();
        let NotificationEvent::Refund { event, notice } = n.event else {
            panic!("expected a refund");
        };
        assert_eq!(event, expected);
        assert_eq!(notice.refund_status, RefundStatus::Success);
        assert_eq!(notice.amount.refund_yuan(), d("5.00"));
    }
}

#[test]
fn an_unknown_event_is_decrypted_but_not_interpreted() {
    let (headers, body) = notification(
        "PAYSCORE.USER_OPEN_SERVICE",
        "payscore",
        "{\"x\":1}",
        "abcdefghijkl",
    );
    let key = ApiV3Key::new(API_V3_KEY).unwrap();
    let n = verify_notification(&headers, body.as_bytes(), &keyring(), &key, NOW).unwrap();
    assert_eq!(
        n.event,
        NotificationEvent::Other {
            event_type: "PAYSCORE.USER_OPEN_SERVICE".into(),
            plaintext: "{\"x\":1}".into()
        }
    );
}

#[test]
fn a_notification_for_another_key_or_an_inconsistent_success_is_refused() {
    let (headers, body) = notification("TRANSACTION.SUCCESS", "transaction", PAID, "abcdefghijkl");
    let other = ApiV3Key::new("vutsrqponmlkjihgfedcba9876543210").unwrap();
    assert_eq!(
        verify_notification(&headers, body.as_bytes(), &keyring(), &other, NOW),
        Err(WechatError::DecryptFailed)
    );
    let key = ApiV3Key::new(API_V3_KEY).unwrap();
    let unpaid = PAID.replace(r#""trade_state":"SUCCESS""#, r#""trade_state":"NOTPAY""#);
    let (headers, body) = notification(
        "TRANSACTION.SUCCESS",
        "transaction",
        &unpaid,
        "abcdefghijkl",
    );
    assert!(matches!(
        verify_notification(&headers, body.as_bytes(), &keyring(), &key, NOW),
        Err(WechatError::MalformedResource(_))
    ));
}

#[test]
fn a_refund_answer_and_an_error_body_read_typed() {
    let body = r#"{"refund_id":"50000000382019052709732678859","out_refund_no":"RF20261130000001","transaction_id":"4200000000202611300000000001","out_trade_no":"PAY20261130000001","channel":"ORIGINAL","user_received_account":"招商银行信用卡0403","create_time":"2026-11-30T10:59:00+08:00","status":"PROCESSING","amount":{"total":1230,"refund":500,"payer_total":1230,"payer_refund":500,"settlement_refund":500,"settlement_total":1230,"discount_refund":0,"currency":"CNY"}}"#;
    let headers = platform().sign(body.as_bytes(), NOW, "NONCE4").unwrap();
    let verified = verify_signature(&headers, body.as_bytes(), &keyring(), NOW).unwrap();
    let refund = wechat::parse_refund(&verified).unwrap();
    assert_eq!(refund.status, RefundStatus::Processing);
    assert_eq!(refund.amount.currency.as_deref(), Some("CNY"));
    let error =
        wechat::parse_error_body(r#"{"code":"ORDER_NOT_EXIST","message":"订单不存在"}"#.as_bytes())
            .unwrap();
    assert_eq!(error.code, wechat::ERROR_ORDER_NOT_EXIST);
    assert!(!error.is_outcome_unknown());
    assert!(
        wechat::parse_error_body(r#"{"code":"SYSTEM_ERROR","message":"系统错误"}"#.as_bytes())
            .unwrap()
            .is_outcome_unknown()
    );
}
