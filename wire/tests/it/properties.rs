//! Properties over arbitrary inputs: signatures verify for anything we sign and for nothing
//! we alter, conversions are exact both ways, encryption round-trips and detects tampering.
//! Case counts are modest because each RSA case costs milliseconds in a debug build.

use std::str::FromStr;

use ledger_wire::alipay::{self, sim as alipay_sim, Params, SignedFields};
use ledger_wire::wechat::{self, ApiV3Key, Authorization, WechatError};
use proptest::prelude::*;
use rust_decimal::Decimal;

use super::alipay_flows::{alipay_key, merchant_key, trade_notification};
use super::wechat_flows::{keyring, platform};

/// Parameter names as Alipay uses them, and values with everything that could confuse a
/// naive encoder or signer: `&`, `=`, `+`, `%`, spaces, newlines and non-ASCII.
fn param_map() -> impl Strategy<Value = Params> {
    proptest::collection::btree_map(
        "[a-z][a-z_]{0,11}",
        "[a-zA-Z0-9 &=+%/\\n中文€-]{0,24}",
        0..10,
    )
}

fn rsa_config() -> ProptestConfig {
    ProptestConfig::with_cases(48)
}

proptest! {
    #![proptest_config(rsa_config())]

    #[test]
    fn alipay_sign_then_verify_holds_for_any_parameter_map(params in param_map(), exclude_sign_type in any::<bool>()) {
        let fields = if exclude_sign_type { SignedFields::AllButSignAndSignType } else { SignedFields::AllButSign };
        let mut signed = params.clone();
        signed.remove("sign_type");
        let sign = alipay::sign_params(&signed, &merchant_key(), fields);
        signed.insert("sign".into(), sign);
        prop_assert_eq!(alipay::verify_params(&signed, merchant_key().public_key(), fields), Ok(()));
        // And the form encoding carries the map through unchanged.
        prop_assert_eq!(alipay::parse_form(alipay::encode_form(&signed).as_bytes()).unwrap(), signed);
    }

    #[test]
    fn alipay_notification_with_any_byte_flipped_fails_or_decodes_to_the_same_parameters(
        index in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let body = alipay_sim::sign_notification(&trade_notification(), &alipay_key());
        let mut flipped = body.clone().into_bytes();
        let i = index.index(flipped.len());
        flipped[i] ^= 1 << bit;
        match alipay::verify_notification(&flipped, alipay_key().public_key()) {
            Err(_) => {}
            // A flip may still verify only if it leaves every signed value as it was: an
            // alias of the form encoding (`%2b` and `%2B` are one byte), or a change to what
            // the signature does not cover (`sign_type`, or a parameter with an empty value).
            Ok(_) => {
                let signed = |p: &Params| {
                    (
                        alipay::signing_string(p, SignedFields::AllButSignAndSignType),
                        p.get("sign").cloned(),
                    )
                };
                prop_assert_eq!(
                    signed(&alipay::parse_form(&flipped).unwrap()),
                    signed(&alipay::parse_form(body.as_bytes()).unwrap())
                )
            }
        }
    }

    #[test]
    fn wechat_notification_with_any_body_byte_flipped_fails(
        index in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let body = br#"{"id":"EV-1","create_time":"2026-11-30T10:00:05+08:00","event_type":"TRANSACTION.SUCCESS","resource_type":"encrypt-resource","resource":{"algorithm":"AEAD_AES_256_GCM","ciphertext":"AAAA","nonce":"abcdefghijkl","associated_data":"transaction","original_type":"transaction"},"summary":"ok"}"#;
        let headers = platform().sign(body, 1_796_000_000, "N1").unwrap();
        let mut flipped = body.to_vec();
        let i = index.index(flipped.len());
        flipped[i] ^= 1 << bit;
        prop_assert_eq!(
            wechat::verify_signature(&headers, &flipped, &keyring(), 1_796_000_000),
            Err(WechatError::BadSignature)
        );
    }

    #[test]
    fn wechat_request_signature_round_trips_for_any_body(body in "[ -~中文]{0,64}", nonce in "[A-Za-z0-9]{1,32}", ts in 0i64..4_000_000_000) {
        let merchant = super::wechat_flows::merchant();
        let auth = merchant.authorization("POST", "/v3/refund/domestic/refunds", &body, ts, &nonce).unwrap();
        let header = wechat::sim::verify_request(
            &auth, "POST", "/v3/refund/domestic/refunds", &body, &merchant.mchid,
            merchant.private_key.public_key(), ts,
        ).unwrap();
        prop_assert_eq!(header.nonce_str, nonce);
    }
}

proptest! {
    #[test]
    fn fen_to_yuan_to_fen_is_the_identity(fen in 0i64..=i64::MAX) {
        prop_assert_eq!(wechat::yuan_to_fen(wechat::fen_to_yuan(fen)), Ok(fen));
    }

    #[test]
    fn yuan_to_fen_to_yuan_is_the_identity_for_two_place_amounts(units in 0u64..10_000_000_000_000, cents in 0u32..100, places in 0u32..=2) {
        let text = match places {
            0 => format!("{units}"),
            1 => format!("{units}.{}", cents / 10),
            _ => format!("{units}.{cents:02}"),
        };
        let yuan = Decimal::from_str(&text).unwrap();
        let fen = wechat::yuan_to_fen(yuan).unwrap();
        prop_assert_eq!(wechat::fen_to_yuan(fen), yuan);
    }

    #[test]
    fn a_third_significant_decimal_is_always_refused(mantissa in 1i64..i64::MAX, scale in 3u32..=10) {
        let yuan = Decimal::new(mantissa, scale);
        prop_assume!(yuan.normalize().scale() > 2);
        prop_assert!(matches!(wechat::yuan_to_fen(yuan), Err(wechat::AmountError::TooManyDecimals(_))));
        prop_assert!(alipay::format_amount(yuan).is_err());
    }

    #[test]
    fn alipay_amounts_format_and_parse_back_exactly(cents in 1i64..=10_000_000_000) {
        let yuan = Decimal::new(cents, 2);
        let text = alipay::format_amount(yuan).unwrap();
        prop_assert_eq!(text.split_once('.').map(|(_, f)| f.len()), Some(2));
        prop_assert_eq!(alipay::parse_amount("total_amount", &text).unwrap(), yuan);
    }

    #[test]
    fn aead_encrypt_then_decrypt_round_trips(
        plaintext in proptest::collection::vec(any::<u8>(), 0..256),
        aad in "[ -~]{0,32}",
        nonce in "[A-Za-z0-9]{12}",
        key in "[!-~]{32}",
    ) {
        let key = ApiV3Key::new(&key).unwrap();
        let sealed = wechat::encrypt(&key, &nonce, &aad, &plaintext).unwrap();
        prop_assert_eq!(wechat::decrypt(&key, &nonce, &aad, &sealed).unwrap(), plaintext);
    }

    #[test]
    fn aead_detects_any_flipped_ciphertext_bit(
        plaintext in proptest::collection::vec(any::<u8>(), 0..64),
        index in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let key = ApiV3Key::new("0123456789abcdefghijklmnopqrstuv").unwrap();
        let sealed = b64.decode(wechat::encrypt(&key, "abcdefghijkl", "transaction", &plaintext).unwrap()).unwrap();
        let mut flipped = sealed.clone();
        let i = index.index(flipped.len());
        flipped[i] ^= 1 << bit;
        prop_assert_eq!(
            wechat::decrypt(&key, "abcdefghijkl", "transaction", &b64.encode(flipped)),
            Err(WechatError::DecryptFailed)
        );
    }

    #[test]
    fn authorization_header_writes_and_parses_back(
        mchid in "[0-9]{1,12}",
        nonce in "[A-Za-z0-9]{1,32}",
        signature in "[A-Za-z0-9+/]{1,40}={0,2}",
        timestamp in 0i64..=i64::MAX,
        serial in "[0-9A-F]{1,40}",
    ) {
        let header = Authorization { mchid, nonce_str: nonce, signature, timestamp, serial_no: serial };
        prop_assert_eq!(Authorization::parse(&header.to_header_value()), Ok(header));
    }

    #[test]
    fn wechat_timestamps_never_overflow_and_respect_the_window(ts in "[0-9]{1,25}", now in any::<i64>()) {
        let headers = wechat::SignatureHeaders {
            timestamp: ts.clone(),
            nonce: "N".into(),
            signature: "AAAA".into(),
            serial: "5DEA10EF55877E3CF6C33255C2E7DEFFF7E427EC".into(),
        };
        let fresh = ts.parse::<i128>().map(|t| (i128::from(now) - t).abs() <= 300).unwrap_or(false);
        let result = wechat::verify_signature(&headers, b"{}", &keyring(), now);
        if fresh {
            prop_assert_eq!(result, Err(WechatError::BadSignature));
        } else {
            let is_stale = matches!(result, Err(WechatError::StaleTimestamp { .. }));
            prop_assert!(is_stale);
        }
    }
}
