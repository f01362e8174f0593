//! Alipay vectors published by Alipay's own SDKs. Every constant below is copied verbatim
//! from the named file; keys and certificates are in `tests/vectors/` (see its README).
//! Nothing here was produced by this crate.

use std::str::FromStr;

use ledger_wire::alipay::{
    self, biz_content, signed_content, signing_string, verify_notification,
    verify_notification_params, verify_params, verify_response, AlipayError, Params, PayOrder,
    PayProduct, SignedFields, TradeStatus,
};
use ledger_wire::keys::{Certificate, PrivateKey, PublicKey};
use rust_decimal::Decimal;

// --- alipay/alipay-sdk-java-all ---------------------------------------------------------

/// alipay/alipay-sdk-java-all src/test/resources/fixture/privateKey.json, entry `ProdCert`:
/// the app private key of TestAccount.ProdCert (bare base64 PKCS#8, as the console shows it).
const JAVA_PRODCERT_KEY: &str =
    include_str!("../vectors/alipay-sdk-java-all/prodcert_private_key.txt");
/// alipay/alipay-sdk-java-all src/test/resources/fixture/appCertPublicKey_2019091767145019.crt:
/// the matching app public-key certificate (76-column base64 lines).
const JAVA_PRODCERT_CERT: &str =
    include_str!("../vectors/alipay-sdk-java-all/appCertPublicKey_2019091767145019.crt");
/// alipay/alipay-sdk-java-all src/test/java/com/alipay/api/RSACheckTest.java
/// `should_pass_rsa_check_when_sign_type_is_rsa2`: parameters and their RSA2 `sign`, checked
/// there with `rsaCheckV2` against the certificate above.
const JAVA_RSA2_SIGN: &str = concat!(
    "JzoDc8VxY1/w6yN9WdWV10aipS3YcRpK",
    "+jw4xfLybf90ZK9L3AHLUJbNLWVnHW3IuLoJbBeSGVxSbPBhe4ggPklcYUkPowgtlZ6YlthuQDtjF23h2obXuXkQRd",
    "+RPbDWvOA5AYQjsKH8uSHil5aRARewPIPhukl9Mn4HEovUccsBR/RirQFSGmGYiMM0zvhVSR7pXZDEhiADzvzAkvVVTI1",
    "/HbNqcoBU4ctSPAGsuDPO/mah1+IwGQAuPP6xoEPL",
    "+3zQ0wztQCwHT2o8aQmxFJ9a09q8ybRprHaNjCgTaLDeTWE0o1pllZIE8c7wnG3cOuj6quYjTcQyLm6P4M87Zw==",
);
/// RSACheckTest.java `should_pass_rsa_check_when_charset_is_utf8`: the same parameters plus
/// `extra=中文测试`, and their RSA2 `sign`.
const JAVA_RSA2_UTF8_SIGN: &str = "KrRGUY3/2JX3KtlLgus8CbK0xuUIBDCpOdJkVzJDefez6HvlA8RA6uCVj2rrMd7DgVfarG5SROdSnkZbf8MLKHbVoFqi9w0QCvto9mc8n3ezfWejZECJVCZhbJ3OslB+4gij9+F70usrnCNEJZm02ntyNdVzcqMbgdRMB93BJIRC1jjmCotpXgXWrRdTb/SfhIAkoHqgGi2aCUHuLDInLGZCn8NeziGWMnFOic6/sE/nMpwriOmwLb2nyzD0fGiolwuuxlOGMcBHAb22J8XqchFHyCpbs2A/rWdJMjhUfqsErbtZQM93fi1xfL2pUa9RMWX0Q81Qk7iSEeHCR+NGyQ==";

// --- alipay/alipay-sdk-nodejs-all -------------------------------------------------------

/// alipay/alipay-sdk-nodejs-all test/alipay.test.ts, `checkNotifySign` › "verify sign should
/// delete sign_type": `notifyAlipayPublicKeyV1`, the Alipay public key (bare base64 SPKI)
/// that signed the trade notification below.
const NODE_NOTIFY_KEY_V1: &str = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAqObrdC7hrgAVM98tK0nv3hSQRGGKT4lBsQjHiGjeYZjOPIPHR5knm2jnnz/YGIXIofVHkA/tAlBAd5DrY7YpvI4tP5EONLtZKC2ghBMx7McI2wRD0xiqzxOQr1FuhZGJ8/AUokBzJrzY+aGX2xcOrxFYRlFilvVLTXg4LWjR1tdPkO6+i7wQZAIVMClPkwVRZEbaERRHlKqTzv2gGv5rDU8gRoe1LeaN+6BlbTqHWkQcNCUNrA8C6l17XAXGKDsm/9TFWwO8EPHHHCaQdjtV5/FdcWIt+L8SR1ss7EXTjYDFtxcKVv9rEoY1lX8T4mX+GbXfZHraG5NCF1+XioL5JwIDAQAB";
/// alipay/alipay-sdk-nodejs-all test/fixtures/alipay-notify-sign-public-key-v2.pem: the key
/// that signed the service-market notification below.
const NODE_NOTIFY_KEY_V2: &str =
    include_str!("../vectors/alipay-sdk-nodejs-all/alipay-notify-sign-public-key-v2.pem");
/// alipay/alipay-sdk-nodejs-all test/fixtures/alipay-public-key.pem as stored at commit
/// bf1c02613c993f9a0d7580818f4cbc1df031ac87 (the file was later replaced by another key,
/// which does not verify the answer below).
const NODE_ALIPAY_PUBLIC_KEY: &str =
    include_str!("../vectors/alipay-sdk-nodejs-all/alipay-public-key.pem");
/// alipay/alipay-sdk-nodejs-all test/fixtures/app-private-key.pem (PKCS#1) and
/// app-public-key.pem (SPKI): one key pair in two encodings.
const NODE_APP_PRIVATE_KEY: &str =
    include_str!("../vectors/alipay-sdk-nodejs-all/app-private-key.pem");
const NODE_APP_PUBLIC_KEY: &str =
    include_str!("../vectors/alipay-sdk-nodejs-all/app-public-key.pem");

/// alipay.test.ts `checkNotifySign` › "with sign_type arguments verify success": a real
/// `trade_status_sync` notification. `fund_bill_list` is an array in the test; the SDK
/// signs it as `JSON.stringify` of it, which is also how Alipay sends it in the form body.
fn node_trade_notification() -> Params {
    params(&[
        ("gmt_create", "2019-08-15 15:56:22"),
        ("charset", "utf-8"),
        ("seller_email", "z97-yuquerevenue@service.aliyun.com"),
        ("subject", "语雀空间 500人规模"),
        ("sign", "QfTb8tqE1BMhS5qAnXtvsF3/jBkEvu9q9en0pdbBUDDjvKycZhQb7h8GDs4FKfi049PynaNuatxSgLb/nLWZpXyyh0LEWdK2S6Ri7nPwrVgOs08zugLO20vOQz44y3ti2Ncm8/wZts1Fr2gZ7pShnVX3d1B50hbsXnObT1r/U8ONNQjWXd0HIul4TG+Q3fm3svmSvFEy0WnzuhcyHPX5Gm4ELNctL6Qd5YniGJFNcc7kopHYtI/XD9YCKCH6Ct02rzUs9i11C9CsadtZn+WhxF26Dqt9sGEFajkJ8cxUTLi8+VCpLHsgPE8P0y095uQcDdK0YjCh4x7wVSov+lrmOQ=="),
        ("buyer_id", "2088102534368455"),
        ("invoice_amount", "0.10"),
        ("notify_id", "2019081500222155624068450559358070"),
        ("fund_bill_list", r#"[{"amount":"0.10","fundChannel":"ALIPAYACCOUNT"}]"#),
        ("notify_type", "trade_status_sync"),
        ("trade_status", "TRADE_SUCCESS"),
        ("receipt_amount", "0.10"),
        ("buyer_pay_amount", "0.10"),
        ("sign_type", "RSA2"),
        ("app_id", "2019073166072302"),
        ("seller_id", "2088531891668739"),
        ("gmt_payment", "2019-08-15 15:56:24"),
        ("notify_time", "2019-08-15 15:56:25"),
        ("version", "1.0"),
        ("out_trade_no", "20190815155618536-564-57"),
        ("total_amount", "0.10"),
        ("trade_no", "2019081522001468450512505578"),
        ("auth_app_id", "2019073166072302"),
        ("buyer_logon_id", "xud***@126.com"),
        ("point_amount", "0.00"),
    ])
}

/// alipay.test.ts `checkNotifySign` › "verify sign should delete sign_type" › "verify fail":
/// a notification whose signature is not by the V1 key.
fn node_foreign_notification() -> Params {
    params(&[
        ("app_id", "2018121762595097"),
        ("auth_app_id", "2018121762595097"),
        ("buyer_id", "2088512613526436"),
        ("buyer_logon_id", "152****6706"),
        ("buyer_pay_amount", "0.01"),
        ("charset", "utf-8"),
        ("fund_bill_list", r#"[{"amount":"0.01","fundChannel":"PCREDIT"}]"#),
        ("gmt_create", "2019-05-23 14:13:56"),
        ("gmt_payment", "2019-05-23 14:17:13"),
        ("invoice_amount", "0.01"),
        ("notify_id", "2019052300222141714026431019971405"),
        ("notify_time", "2019-05-23 14:17:14"),
        ("notify_type", "trade_status_sync"),
        ("out_trade_no", "tpxy23962362669658"),
        ("point_amount", "0.00"),
        ("receipt_amount", "0.01"),
        ("seller_email", "myapp@alitest.com"),
        ("seller_id", "2088331578818800"),
        ("sign", "T946S2qyNFAXLhAaRgNMmatxH6SO3MyWYFnTamQOgW1iAcheL/Zz+VoizwvEc6mTEwYewvvKS1wNkMQ1oEajMUHv9+cXQ9IFvU/qKS9Ktvw5xHvCaK0fj7LsVcQ7VxfyT3kSvXUDfKDP4cHSPuSZKwM2ybkzr53bIH9OUTpTQd2d3J0rbdf76OoUt+XF9vwqj7OVE7AGjH2HPWp842DgL/YVy4qeA9N2uFKRevT3YUskjaRxuI/E66reNjTMFhbjEqGLKvMcDD4BaQXnibq9ojAj60589fBwzKk3yWsVQmqGfksMQoheVMtZ3lAw4o2ty3TFngbVFFLwgx8FDpBZ9Q=="),
        ("sign_type", "RSA2"),
        ("subject", "tpxy2222896485"),
        ("total_amount", "0.01"),
        ("trade_no", "111111112019052322001426431037869358"),
        ("trade_status", "TRADE_SUCCESS"),
        ("version", "1.0"),
    ])
}

/// alipay.test.ts `checkNotifySign` › "verify sign should not delete sign_type" › "with
/// sign_type arguments verify success": a service-market notification whose signature
/// covers `sign_type` too, signed by the V2 key.
fn node_servicemarket_notification() -> Params {
    params(&[
        ("app_id", "2017122801303261"),
        ("charset", "UTF-8"),
        ("commodity_order_id", "2019030800000018079639"),
        ("contactor", "技术支持测试的公司"),
        ("merchant_pid", "2088721996721370"),
        ("method", "alipay.open.servicemarket.order.notify"),
        ("name", "技术支持测试的公司"),
        ("notify_id", "2019030800222102023008121054923345"),
        ("notify_time", "2019-03-08 10:20:23"),
        ("notify_type", "servicemarket_order_notify"),
        ("order_item_num", "1"),
        ("order_ticket", "29b1c37d99ab48c5bd5bdaeaeaefbB37"),
        ("order_time", "2019-03-08 10:20:08"),
        ("phone", "17826894615"),
        ("service_code", "58621634"),
        ("sign", "MsK5SCw8oqLw4f0hiNSd5OVGXxBY3wnQeT8vn5PklJSZFWSZbK4hQbNvkp4ZezeXQH514cEv0ul6Qow8yh6e6yM06LfEL+EZjcpZ0nxzFGRNQ5qq2AUc1OaXQdk92AGvxh+Iq4NGpPQFBd4D8EBJa3NJd8+czMfQskceosOQFqUtLQMYa5DPs+VpN7VM5BdXjaVIuKn5d9Wm2B9dI9ObIM+YRySDkZZPv14DVmUvcrcqJfOR8aHvtSd7B4l92wUQPQgQKNcOQho7xOHS/Bk+Y74AZL2y7TkNmdDoq9OGsThuF5tDW9rI9nVwXxOtsuB+bstra+W7aw9x9DvkKgdSRw=="),
        ("sign_type", "RSA2"),
        ("timestamp", "2019-03-08 10:20:23"),
        ("title", "麦禾商城模版"),
        ("total_price", "0.00"),
        ("version", "1.0"),
    ])
}

/// alipay.test.ts `getSignStr()` › "normal", "include \r\n\s" and "include sign key in data":
/// answer bodies and the exact substring Alipay signed in each.
const NODE_SIGN_STR_NORMAL: &str = r#"{"alipay_offline_material_image_upload_response":{"code":"10000","msg":"Success","image_id":"Zp1Nm6FDTZaEuSSniGd5awAAACMAAQED","image_url":"http:\/\/oalipay-dl-django.alicdn.com\/rest\/1.0\/image?fileIds=Zp1Nm6FDTZaEuSSniGd5awAAACMAAQED&zoom=original"},"sign":"P8xrBWqZCUv11UrEBjhQ4Sk3hyj4607qehO2VbKIS0hWa4U+NeLlOftqTyhGv+x1lzfqN590Y/8CaNIzEEg06FiNWJlUFM/uEFJLzSKGse4MjHbblpiSzI3eCV5RzxH26wZbEd9wyVYYi0pHFBf35UrBva47g7b5EuKCHfoVA95/zin9fAyb3xhhiHhmfGaWIDV/1LmE2vtqtOHQnISbY/deC71U614ySZ3YB97ws8npCcCJ+tgZvhHPkMRGvmyYPCRDB/aIN/sKDSLtfPp0u8DxE8pHLvCHm3wR84MQxqNbKgpd8NTKNvH+obELsbCrqPhjW7qI48634qx6enDupw=="}"#;
const NODE_SIGN_STR_WHITESPACE: &str = "{\"alipay_offline_material_image_upload_response\"\n        :\n        {\"code\":\"10000\",\"msg\":\"Success\",\"image_id\":\"Zp1Nm6FDTZaEuSSniGd5awAAACMAAQED\",\"image_url\":\"http:\\/\\/oalipay-dl-django.alicdn.com\\/rest\\/1.0\\/image?fileIds=Zp1Nm6FDTZaEuSSniGd5awAAACMAAQED&zoom=original\"},\n\n          \"sign\"  :  \"P8xrBWqZCUv11UrEBjhQ4Sk3hyj4607qehO2VbKIS0hWa4U+NeLlOftqTyhGv+x1lzfqN590Y/8CaNIzEEg06FiNWJlUFM/uEFJLzSKGse4MjHbblpiSzI3eCV5RzxH26wZbEd9wyVYYi0pHFBf35UrBva47g7b5EuKCHfoVA95/zin9fAyb3xhhiHhmfGaWIDV/1LmE2vtqtOHQnISbY/deC71U614ySZ3YB97ws8npCcCJ+tgZvhHPkMRGvmyYPCRDB/aIN/sKDSLtfPp0u8DxE8pHLvCHm3wR84MQxqNbKgpd8NTKNvH+obELsbCrqPhjW7qI48634qx6enDupw==\"}";
const NODE_SIGN_STR_EXPECTED: &str = r#"{"code":"10000","msg":"Success","image_id":"Zp1Nm6FDTZaEuSSniGd5awAAACMAAQED","image_url":"http:\/\/oalipay-dl-django.alicdn.com\/rest\/1.0\/image?fileIds=Zp1Nm6FDTZaEuSSniGd5awAAACMAAQED&zoom=original"}"#;
const NODE_SIGN_STR_SIGN_IN_DATA: &str = "{\"alipay_offline_material_image_upload_response\"\n        :\n        {\"code\":\"10000\",\"sign\":\"xxx\",\"msg\":\"Success\",\"image_id\":\"Zp1Nm6FDTZaEuSSniGd5awAAACMAAQED\",\"image_url\":\"http:\\/\\/oalipay-dl-django.alicdn.com\\/rest\\/1.0\\/image?fileIds=Zp1Nm6FDTZaEuSSniGd5awAAACMAAQED&zoom=original\"},\n\n          \"sign\"  :  \"P8xrBWqZCUv11UrEBjhQ4Sk3hyj4607qehO2VbKIS0hWa4U+NeLlOftqTyhGv+x1lzfqN590Y/8CaNIzEEg06FiNWJlUFM/uEFJLzSKGse4MjHbblpiSzI3eCV5RzxH26wZbEd9wyVYYi0pHFBf35UrBva47g7b5EuKCHfoVA95/zin9fAyb3xhhiHhmfGaWIDV/1LmE2vtqtOHQnISbY/deC71U614ySZ3YB97ws8npCcCJ+tgZvhHPkMRGvmyYPCRDB/aIN/sKDSLtfPp0u8DxE8pHLvCHm3wR84MQxqNbKgpd8NTKNvH+obELsbCrqPhjW7qI48634qx6enDupw==\"}";
const NODE_SIGN_STR_SIGN_IN_DATA_EXPECTED: &str = r#"{"code":"10000","sign":"xxx","msg":"Success","image_id":"Zp1Nm6FDTZaEuSSniGd5awAAACMAAQED","image_url":"http:\/\/oalipay-dl-django.alicdn.com\/rest\/1.0\/image?fileIds=Zp1Nm6FDTZaEuSSniGd5awAAACMAAQED&zoom=original"}"#;

/// alipay.test.ts `checkResponseSign` › "should work" ("从实测中获取" — taken from a real
/// call): an `alipay.open.file.upload` answer signed by the key in alipay-public-key.pem.
const NODE_FILE_UPLOAD_RESPONSE: &str = r#"{"alipay_open_file_upload_response":{"code":"10000","msg":"Success","file_id":"CAxAToWB1JsAAAAAAAAAAAAADgSLAQBr"},"sign":"F+LDzpTNiavn7xVZPGuPCSSVRSmWzJGgtuji6tVELGEaqMaNj0jRKXUEr5nloZJBBmwEnddOyCjjepMmrTKTvoOqQ0Efxpr/R1iEeHTHVbb/Q8TTh6Up5gHJDkILdaWS2q1cWeQ6VT+HQY9P3WRXS7uhILHuDODIhpAyCu5KhWGt0rMCIG+Im6NODJP2oohtSCtmTFXg58HH587Z2y2bdbjzOxLvzD9IrU1imghXQ2S/Q+wMIvRk9on6cWnBLkrNvJKapA2ReNGWOwyuASvB9zDVzhMPbR+3mfRGkVDxsq5HYLjBKGskJMXHw0HuugZij6ScRuaLPODhmHwr/pJ9yw=="}"#;

// --- alipay/alipay-easysdk --------------------------------------------------------------

/// alipay/alipay-easysdk java/src/test/java/com/alipay/easysdk/payment/page/ClientTest.java
/// `testPay`: the `biz_content` of a page-pay for subject "iPhone6 16G", out_trade_no
/// e5b5bd79-…, total 0.10 (HTML-unescaped from the asserted form field).
const EASYSDK_PAGE_BIZ_CONTENT: &str = r#"{"out_trade_no":"e5b5bd79-8310-447d-b63b-0fe3a393324d","total_amount":"0.10","subject":"iPhone6 16G","product_code":"FAST_INSTANT_TRADE_PAY"}"#;

fn params(pairs: &[(&str, &str)]) -> Params {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn java_rsa2_params(sign: &str, extra: Option<&str>) -> Params {
    let mut p = params(&[
        ("method", "koubei.marketing.data.indicator.query"),
        ("app_id", "2019090366875133"),
        ("sign_type", "RSA2"),
        ("sign", sign),
    ]);
    if let Some(extra) = extra {
        p.insert("extra".into(), extra.into());
    }
    p
}

#[test]
fn java_sdk_app_key_and_certificate_are_one_pair_read_from_bare_base64_and_76_column_pem() {
    let key = PrivateKey::parse(JAVA_PRODCERT_KEY).unwrap();
    let cert = Certificate::parse_pem(JAVA_PRODCERT_CERT).unwrap();
    assert_eq!(key.public_key(), &cert.public_key);
}

#[test]
fn java_sdk_rsa2_check_vectors_cover_sign_type_and_are_reproduced_byte_for_byte() {
    // rsaCheckV2 signs everything but `sign`: `sign_type` is part of the signed string.
    let p = java_rsa2_params(JAVA_RSA2_SIGN, None);
    assert_eq!(
        signing_string(&p, SignedFields::AllButSign),
        "app_id=2019090366875133&method=koubei.marketing.data.indicator.query&sign_type=RSA2"
    );
    let cert = Certificate::parse_pem(JAVA_PRODCERT_CERT).unwrap();
    assert_eq!(
        verify_params(&p, &cert.public_key, SignedFields::AllButSign),
        Ok(())
    );
    assert_eq!(
        verify_params(&p, &cert.public_key, SignedFields::AllButSignAndSignType),
        Err(AlipayError::BadSignature)
    );
    let key = PrivateKey::parse(JAVA_PRODCERT_KEY).unwrap();
    assert_eq!(
        alipay::sign_params(&p, &key, SignedFields::AllButSign),
        JAVA_RSA2_SIGN
    );
}

#[test]
fn java_sdk_utf8_vector_signs_chinese_values_as_utf8_bytes() {
    let p = java_rsa2_params(JAVA_RSA2_UTF8_SIGN, Some("中文测试"));
    let cert = Certificate::parse_pem(JAVA_PRODCERT_CERT).unwrap();
    assert_eq!(
        verify_params(&p, &cert.public_key, SignedFields::AllButSign),
        Ok(())
    );
    let key = PrivateKey::parse(JAVA_PRODCERT_KEY).unwrap();
    assert_eq!(
        alipay::sign_params(&p, &key, SignedFields::AllButSign),
        JAVA_RSA2_UTF8_SIGN
    );
}

#[test]
fn nodejs_sdk_trade_notification_verifies_without_sign_type_and_reads_typed() {
    let key = PublicKey::parse(NODE_NOTIFY_KEY_V1).unwrap();
    let n = verify_notification_params(node_trade_notification(), &key).unwrap();
    assert_eq!(n.app_id, "2019073166072302");
    assert_eq!(n.out_trade_no, "20190815155618536-564-57");
    assert_eq!(n.trade_no, "2019081522001468450512505578");
    assert_eq!(n.trade_status, TradeStatus::TradeSuccess);
    assert_eq!(n.total_amount, Decimal::from_str("0.10").unwrap());
    assert_eq!(n.receipt_amount, Some(Decimal::from_str("0.10").unwrap()));
    assert_eq!(n.notify_id, "2019081500222155624068450559358070");
    assert_eq!(n.gmt_payment.as_deref(), Some("2019-08-15 15:56:24"));
    assert_eq!(n.refund_fee, None);

    // Without `sign_type` (the "without sign_type arguments" case) it verifies too.
    let mut without = node_trade_notification();
    without.remove("sign_type");
    assert!(verify_notification_params(without, &key).is_ok());
}

#[test]
fn nodejs_sdk_trade_notification_verifies_from_its_form_encoded_body() {
    // The raw POST body is the form encoding of the same parameters (spaces as `+`,
    // Chinese and JSON percent-encoded), which is how it reaches `notify_url`.
    let body = alipay::encode_form(&node_trade_notification());
    assert!(body
        .contains("subject=%E8%AF%AD%E9%9B%80%E7%A9%BA%E9%97%B4+500%E4%BA%BA%E8%A7%84%E6%A8%A1"));
    let key = PublicKey::parse(NODE_NOTIFY_KEY_V1).unwrap();
    let n = verify_notification(body.as_bytes(), &key).unwrap();
    assert_eq!(n.params["subject"], "语雀空间 500人规模");
}

#[test]
fn nodejs_sdk_notification_is_refused_when_altered_or_foreign() {
    let key = PublicKey::parse(NODE_NOTIFY_KEY_V1).unwrap();
    let mut altered = node_trade_notification();
    altered.insert("total_amount".into(), "100.10".into());
    assert_eq!(
        verify_notification_params(altered, &key),
        Err(AlipayError::BadSignature)
    );
    assert_eq!(
        verify_notification_params(node_foreign_notification(), &key),
        Err(AlipayError::BadSignature)
    );
    let mut unsigned = node_trade_notification();
    unsigned.remove("sign");
    assert_eq!(
        verify_notification_params(unsigned, &key),
        Err(AlipayError::MissingSignature)
    );
    let mut sha1 = node_trade_notification();
    sha1.insert("sign_type".into(), "RSA".into());
    assert_eq!(
        verify_notification_params(sha1, &key),
        Err(AlipayError::UnsupportedSignType("RSA".into()))
    );
}

#[test]
fn nodejs_sdk_servicemarket_notification_is_signed_with_sign_type_included() {
    // Not every Alipay notification follows the trade rule: this one signs `sign_type` too.
    // The generic checker handles it; the trade-notification checker (rightly) refuses it.
    let key = PublicKey::parse(NODE_NOTIFY_KEY_V2).unwrap();
    let p = node_servicemarket_notification();
    assert_eq!(verify_params(&p, &key, SignedFields::AllButSign), Ok(()));
    assert_eq!(
        verify_params(&p, &key, SignedFields::AllButSignAndSignType),
        Err(AlipayError::BadSignature)
    );
    let mut altered = p;
    altered.insert("service_code".into(), "58621634111".into());
    assert_eq!(
        verify_params(&altered, &key, SignedFields::AllButSign),
        Err(AlipayError::BadSignature)
    );
}

#[test]
fn nodejs_sdk_signed_content_is_located_exactly_even_with_whitespace_and_inner_sign() {
    let method = "alipay.offline.material.image.upload";
    for body in [NODE_SIGN_STR_NORMAL, NODE_SIGN_STR_WHITESPACE] {
        let located = signed_content(body, method).unwrap();
        assert_eq!(located.content, NODE_SIGN_STR_EXPECTED);
        assert!(located.sign.unwrap().starts_with("P8xrBWqZ"));
    }
    let located = signed_content(NODE_SIGN_STR_SIGN_IN_DATA, method).unwrap();
    assert_eq!(located.content, NODE_SIGN_STR_SIGN_IN_DATA_EXPECTED);
    assert!(located.sign.unwrap().starts_with("P8xrBWqZ"));
}

#[test]
fn nodejs_sdk_real_file_upload_answer_verifies_and_a_flipped_byte_does_not() {
    let key = PublicKey::parse(NODE_ALIPAY_PUBLIC_KEY).unwrap();
    let verified =
        verify_response(NODE_FILE_UPLOAD_RESPONSE, "alipay.open.file.upload", &key).unwrap();
    assert!(verified.is_success());
    assert_eq!(
        verified.raw(),
        r#"{"code":"10000","msg":"Success","file_id":"CAxAToWB1JsAAAAAAAAAAAAADgSLAQBr"}"#
    );
    let tampered = NODE_FILE_UPLOAD_RESPONSE.replace("CAxAToWB1Js", "CAxAToWB1Jt");
    assert_eq!(
        verify_response(&tampered, "alipay.open.file.upload", &key),
        Err(AlipayError::BadSignature)
    );
}

#[test]
fn nodejs_sdk_pkcs1_private_key_matches_its_spki_public_key() {
    let private = PrivateKey::parse(NODE_APP_PRIVATE_KEY).unwrap();
    let public = PublicKey::parse(NODE_APP_PUBLIC_KEY).unwrap();
    assert_eq!(private.public_key(), &public);
    let signature = private.sign_base64(b"app_id=1&method=m");
    assert_eq!(
        public.verify_base64(b"app_id=1&method=m", &signature),
        Ok(())
    );
}

#[test]
fn easysdk_page_pay_biz_content_is_reproduced_exactly() {
    let order = PayOrder {
        out_trade_no: "e5b5bd79-8310-447d-b63b-0fe3a393324d".into(),
        total_amount: Decimal::from_str("0.10").unwrap(),
        subject: "iPhone6 16G".into(),
        notify_url: "https://example.invalid/notify".into(),
        return_url: Some("https://www.taobao.com".into()),
        time_expire: None,
    };
    assert_eq!(
        biz_content(PayProduct::Page, &order).unwrap(),
        EASYSDK_PAGE_BIZ_CONTENT
    );
    // The same order as 0.1 (one decimal) is written identically.
    let one_decimal = PayOrder {
        total_amount: Decimal::from_str("0.1").unwrap(),
        ..order
    };
    assert_eq!(
        biz_content(PayProduct::Page, &one_decimal).unwrap(),
        EASYSDK_PAGE_BIZ_CONTENT
    );
}
