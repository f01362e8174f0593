//! Given/when/then tests of the payment aggregate: each test folds a history (`given`), runs one
//! command through `decide` (`when`) and checks the exact events or error (`then`). Everything
//! here is synchronous and pure; no database, clock or network is involved.

use crate::events::{
    CallbackReceived, Created, Failed, Paid, RefundFailed, RefundRequested, Refunded,
};
use crate::payment::{Notification, State};
use crate::{
    decide, evolve, fold, CallbackStatus, Command, Currency, DomainError, Money, NotifyOutcome,
    Payment, PaymentEvent, PaymentMethod, PaymentStatus, RefundStatus,
};
use chrono::{DateTime, TimeZone, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// given / when / then
// ---------------------------------------------------------------------------------------------

/// The state a history folds to.
fn given(events: &[PaymentEvent]) -> State {
    let state = fold(events);
    if let Some(p) = &state {
        assert_eq!(
            p.version as usize,
            events.len(),
            "version counts the events"
        );
    }
    state
}

/// The outcome of one command against a state, kept together with that state so a test can
/// also look at the state the decided events lead to.
struct Decision {
    before: State,
    result: Result<Vec<PaymentEvent>, DomainError>,
}

fn when(state: &State, command: Command) -> Decision {
    Decision {
        before: state.clone(),
        result: decide(state, &command),
    }
}

impl Decision {
    /// Asserts the exact events or error, and returns the state after applying the events.
    fn then(self, expected: Result<Vec<PaymentEvent>, DomainError>) -> State {
        assert_eq!(self.result, expected);
        match self.result {
            Ok(events) => events.iter().fold(self.before, evolve),
            Err(_) => self.before,
        }
    }

    /// Asserts events were decided, and returns the payment they lead to.
    fn then_events(self, expected: Vec<PaymentEvent>) -> Payment {
        self.then(Ok(expected))
            .expect("a payment exists after events")
    }

    /// Asserts the command was refused with exactly this error.
    fn then_error(self, expected: DomainError) {
        self.then(Err(expected));
    }

    /// Asserts the command was refused as `Invalid`, whatever its message.
    fn then_invalid(self) {
        assert!(
            matches!(self.result, Err(DomainError::Invalid(_))),
            "expected Invalid, got {:?}",
            self.result
        );
    }

    /// Asserts the command was refused as `NotAllowed`, whatever its message.
    fn then_not_allowed(self) {
        assert!(
            matches!(self.result, Err(DomainError::NotAllowed(_))),
            "expected NotAllowed, got {:?}",
            self.result
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Fixtures: one CNY 100.00 Alipay payment, fixed ids and times.
// ---------------------------------------------------------------------------------------------

const PAYMENT_ID: u128 = 0x0190_0000_0000_7000_8000_0000_0000_0001;

fn dec(text: &str) -> Decimal {
    text.parse().expect("test amounts are valid decimals")
}

fn cny() -> Currency {
    Currency::from_code("CNY").expect("CNY is in the table")
}

fn jpy() -> Currency {
    Currency::from_code("JPY").expect("JPY is in the table")
}

fn kwd() -> Currency {
    Currency::from_code("KWD").expect("KWD is in the table")
}

fn at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap()
}

fn refund_uuid(n: u128) -> Uuid {
    Uuid::from_u128(0x1000 + n)
}

fn refund_no(n: u128) -> String {
    format!("R{n}")
}

fn create_command(order_id: &str, user_id: &str, amount: Money) -> Command {
    Command::Create {
        payment_id: Uuid::from_u128(PAYMENT_ID),
        payment_no: "P0001".into(),
        order_id: order_id.into(),
        user_id: user_id.into(),
        amount,
        method: PaymentMethod::Alipay,
        payment_url: "https://pay.example/P0001".into(),
        return_url: None,
        merchant: None,
        payer: None,
    }
}

fn create() -> Command {
    create_command("order-1", "user-1", Money::parse("100.00", cny()).unwrap())
}

fn created_with(amount: &str, currency: Currency) -> PaymentEvent {
    PaymentEvent::Created(Created {
        payment_id: Uuid::from_u128(PAYMENT_ID),
        payment_no: "P0001".into(),
        order_id: "order-1".into(),
        user_id: "user-1".into(),
        amount: Money::parse(amount, currency).unwrap().amount(),
        currency,
        payment_method: PaymentMethod::Alipay,
        payment_url: "https://pay.example/P0001".into(),
        return_url: None,
        merchant: None,
        payer: None,
    })
}

fn created() -> PaymentEvent {
    created_with("100.00", cny())
}

/// A payment notification from the payment's own gateway.
fn notice(callback_no: &str, outcome: NotifyOutcome, amount: &str) -> Notification {
    Notification {
        callback_id: Uuid::from_u128(0x2000 + callback_no.len() as u128),
        callback_no: callback_no.into(),
        gateway: PaymentMethod::Alipay,
        outcome,
        amount: dec(amount),
        gateway_trade_no: format!("T-{callback_no}"),
        refund_no: None,
        paid_at: at(),
    }
}

/// A refund notification (`refund_no` set) from the payment's own gateway.
fn refund_notice(
    callback_no: &str,
    refund: u128,
    outcome: NotifyOutcome,
    amount: &str,
) -> Notification {
    Notification {
        refund_no: Some(refund_no(refund)),
        ..notice(callback_no, outcome, amount)
    }
}

/// The callback event `decide` records for a notification.
fn callback(
    n: &Notification,
    status: CallbackStatus,
    reason: Option<&str>,
    flagged_for_refund: bool,
) -> PaymentEvent {
    PaymentEvent::CallbackReceived(CallbackReceived {
        callback_id: n.callback_id,
        callback_no: n.callback_no.clone(),
        gateway: n.gateway,
        outcome: n.outcome,
        amount: n.amount,
        gateway_trade_no: n.gateway_trade_no.clone(),
        refund_no: n.refund_no.clone(),
        status,
        reason: reason.map(str::to_owned),
        flagged_for_refund,
    })
}

fn applied(n: &Notification) -> PaymentEvent {
    callback(n, CallbackStatus::Success, None, false)
}

fn paid_by(n: &Notification) -> PaymentEvent {
    PaymentEvent::Paid(Paid {
        paid_at: n.paid_at,
        gateway_trade_no: n.gateway_trade_no.clone(),
        callback_no: n.callback_no.clone(),
    })
}

/// The two events of a successful payment notification for the full amount.
fn paid_history() -> Vec<PaymentEvent> {
    let n = notice("cb-pay", NotifyOutcome::Success, "100.00");
    vec![created(), applied(&n), paid_by(&n)]
}

fn failed(reason: &str) -> PaymentEvent {
    PaymentEvent::Failed(Failed {
        reason: reason.into(),
    })
}

fn request_refund(n: u128, amount: &str) -> Command {
    Command::RequestRefund {
        refund_id: refund_uuid(n),
        refund_no: refund_no(n),
        amount: dec(amount),
        reason: "customer asked".into(),
    }
}

fn refund_requested(n: u128, amount: &str) -> PaymentEvent {
    PaymentEvent::RefundRequested(RefundRequested {
        refund_id: refund_uuid(n),
        refund_no: refund_no(n),
        amount: dec(amount),
        reason: "customer asked".into(),
        from_suspense: Decimal::ZERO,
    })
}

fn refunded(n: u128, amount: &str) -> PaymentEvent {
    PaymentEvent::Refunded(Refunded {
        refund_id: refund_uuid(n),
        refund_no: refund_no(n),
        amount: dec(amount),
        late: false,
    })
}

fn refund_failed(n: u128, amount: &str, reason: &str) -> PaymentEvent {
    PaymentEvent::RefundFailed(RefundFailed {
        refund_id: refund_uuid(n),
        refund_no: refund_no(n),
        amount: dec(amount),
        reason: reason.into(),
    })
}

fn history(parts: &[&[PaymentEvent]]) -> Vec<PaymentEvent> {
    parts.iter().flat_map(|p| p.iter().cloned()).collect()
}

// ---------------------------------------------------------------------------------------------
// Create
// ---------------------------------------------------------------------------------------------

#[test]
fn create_on_an_empty_stream_records_a_pending_payment() {
    let payment = when(&given(&[]), create()).then_events(vec![created()]);
    assert_eq!(payment.status, PaymentStatus::Pending);
    assert_eq!(payment.version, 1);
    assert_eq!(payment.amount, Money::parse("100", cny()).unwrap());
    // Nothing is paid yet, so nothing can be refunded.
    assert_eq!(payment.refundable_amount(), Decimal::ZERO);
    assert_eq!(payment.refunded_amount(), Decimal::ZERO);
}

#[test]
fn create_on_an_existing_payment_is_not_allowed() {
    when(&given(&[created()]), create()).then_not_allowed();
}

#[test]
fn every_other_command_on_an_empty_stream_is_not_found() {
    let commands = [
        Command::Notify(notice("cb", NotifyOutcome::Success, "100.00")),
        request_refund(1, "1.00"),
        Command::ConfirmRefund {
            refund_id: refund_uuid(1),
        },
        Command::FailRefund {
            refund_id: refund_uuid(1),
            reason: "x".into(),
        },
        Command::FailPayment { reason: "x".into() },
    ];
    for command in commands {
        when(&given(&[]), command).then_error(DomainError::NotFound);
    }
}

#[test]
fn order_id_and_user_id_of_one_to_sixty_four_characters_are_accepted() {
    let amount = Money::parse("1", cny()).unwrap();
    for id in ["a", &"x".repeat(64), &"张".repeat(64), "订单 #1/ä"] {
        let result = decide(&given(&[]), &create_command(id, "user-1", amount));
        assert!(result.is_ok(), "order_id {id:?}: {result:?}");
        let result = decide(&given(&[]), &create_command("order-1", id, amount));
        assert!(result.is_ok(), "user_id {id:?}: {result:?}");
    }
}

#[test]
fn empty_order_id_is_invalid() {
    let amount = Money::parse("1", cny()).unwrap();
    when(&given(&[]), create_command("", "user-1", amount)).then_invalid();
}

#[test]
fn order_id_longer_than_sixty_four_characters_is_invalid() {
    let amount = Money::parse("1", cny()).unwrap();
    when(
        &given(&[]),
        create_command(&"x".repeat(65), "user-1", amount),
    )
    .then_invalid();
    when(
        &given(&[]),
        create_command(&"张".repeat(65), "user-1", amount),
    )
    .then_invalid();
}

#[test]
fn order_id_with_a_control_character_is_invalid() {
    let amount = Money::parse("1", cny()).unwrap();
    for id in [
        "order\n1",
        "order\t1",
        "\0",
        "order\u{7f}",
        "order\u{85}1",
        "\r",
    ] {
        when(&given(&[]), create_command(id, "user-1", amount)).then_invalid();
    }
}

#[test]
fn empty_user_id_is_invalid() {
    let amount = Money::parse("1", cny()).unwrap();
    when(&given(&[]), create_command("order-1", "", amount)).then_invalid();
}

#[test]
fn user_id_longer_than_sixty_four_characters_is_invalid() {
    let amount = Money::parse("1", cny()).unwrap();
    when(
        &given(&[]),
        create_command("order-1", &"u".repeat(65), amount),
    )
    .then_invalid();
}

#[test]
fn user_id_with_a_control_character_is_invalid() {
    let amount = Money::parse("1", cny()).unwrap();
    for id in ["user\n1", "\u{1b}[31m", "user\u{9f}"] {
        when(&given(&[]), create_command("order-1", id, amount)).then_invalid();
    }
}

// ---------------------------------------------------------------------------------------------
// Money at the currency's scale
// ---------------------------------------------------------------------------------------------

#[test]
fn more_decimals_than_the_currency_allows_is_invalid() {
    for (text, currency) in [
        ("1.005", cny()),
        ("0.001", cny()),
        ("1.5", jpy()),
        ("0.1", jpy()),
        ("1.0005", kwd()),
    ] {
        assert!(
            matches!(Money::parse(text, currency), Err(DomainError::Invalid(_))),
            "{text} {currency} must be refused, not rounded"
        );
    }
}

#[test]
fn trailing_zeros_beyond_the_currency_scale_are_not_extra_decimals() {
    assert_eq!(
        Money::parse("1.500", cny()).unwrap(),
        Money::parse("1.5", cny()).unwrap()
    );
    assert_eq!(
        Money::parse("100.000", jpy()).unwrap().amount().to_string(),
        "100"
    );
    assert_eq!(
        Money::parse("1.005", kwd()).unwrap().amount().to_string(),
        "1.005"
    );
}

#[test]
fn refund_with_more_decimals_than_the_currency_allows_is_invalid() {
    when(&given(&paid_history()), request_refund(1, "1.005")).then_invalid();

    let n = notice("cb-pay", NotifyOutcome::Success, "1000");
    let jpy_paid = [created_with("1000", jpy()), applied(&n), paid_by(&n)];
    when(&given(&jpy_paid), request_refund(1, "1.5")).then_invalid();
    when(&given(&jpy_paid), request_refund(1, "2")).then_events(vec![refund_requested(1, "2")]);
}

#[test]
fn refund_of_zero_or_a_negative_amount_is_invalid() {
    when(&given(&paid_history()), request_refund(1, "0")).then_invalid();
    when(&given(&paid_history()), request_refund(1, "-1.00")).then_invalid();
}

#[test]
fn refund_amount_is_recorded_at_the_currency_scale() {
    when(&given(&paid_history()), request_refund(1, "1.5"))
        .then_events(vec![refund_requested(1, "1.50")]);
    let PaymentEvent::RefundRequested(r) =
        decide(&given(&paid_history()), &request_refund(1, "1.5"))
            .unwrap()
            .remove(0)
    else {
        panic!("a refund request decides refund_requested");
    };
    assert_eq!(r.amount.to_string(), "1.50");
}

#[test]
fn refund_with_an_empty_or_overlong_reason_is_invalid() {
    for reason in [String::new(), "r".repeat(256), "bad\nreason".into()] {
        let command = Command::RequestRefund {
            refund_id: refund_uuid(1),
            refund_no: refund_no(1),
            amount: dec("1.00"),
            reason,
        };
        when(&given(&paid_history()), command).then_invalid();
    }
}

// ---------------------------------------------------------------------------------------------
// Payment notifications
// ---------------------------------------------------------------------------------------------

#[test]
fn success_notice_for_the_payment_amount_records_the_callback_and_pays() {
    let n = notice("cb-1", NotifyOutcome::Success, "100.00");
    let payment = when(&given(&[created()]), Command::Notify(n.clone()))
        .then_events(vec![applied(&n), paid_by(&n)]);
    assert_eq!(payment.status, PaymentStatus::Success);
    assert_eq!(payment.paid_at, Some(at()));
    assert_eq!(payment.gateway_trade_no.as_deref(), Some("T-cb-1"));
    assert_eq!(
        payment.callback_status("cb-1"),
        Some(CallbackStatus::Success)
    );
    assert_eq!(payment.version, 3);
}

#[test]
fn success_notice_with_the_same_amount_at_another_scale_pays() {
    let n = notice("cb-1", NotifyOutcome::Success, "100");
    when(&given(&[created()]), Command::Notify(n.clone()))
        .then_events(vec![applied(&n), paid_by(&n)]);
}

#[test]
fn success_notice_with_another_amount_is_recorded_as_a_failed_callback_and_does_not_pay() {
    for amount in ["99.99", "100.01", "1000.00", "100.1"] {
        let n = notice("cb-1", NotifyOutcome::Success, amount);
        let payment =
            when(&given(&[created()]), Command::Notify(n.clone())).then_events(vec![callback(
                &n,
                CallbackStatus::Failed,
                Some("amount_mismatch"),
                false,
            )]);
        assert_eq!(payment.status, PaymentStatus::Pending, "amount {amount}");
        assert_eq!(payment.paid_at, None);
        assert_eq!(
            payment.callback_status("cb-1"),
            Some(CallbackStatus::Failed)
        );
    }
}

#[test]
fn notice_with_an_amount_invalid_in_the_currency_is_refused() {
    for amount in ["0", "-100.00", "100.001", "1000000000001"] {
        let n = notice("cb-1", NotifyOutcome::Success, amount);
        let d = when(&given(&[created()]), Command::Notify(n));
        assert!(
            matches!(d.result, Err(DomainError::Invalid(_))),
            "amount {amount}: {:?}",
            d.result
        );
    }
}

#[test]
fn failure_notice_fails_a_pending_payment() {
    let n = notice("cb-1", NotifyOutcome::Failed, "100.00");
    let payment = when(&given(&[created()]), Command::Notify(n.clone()))
        .then_events(vec![applied(&n), failed("gateway_reported_failure")]);
    assert_eq!(payment.status, PaymentStatus::Failed);
    assert_eq!(
        payment.failure_reason.as_deref(),
        Some("gateway_reported_failure")
    );
    assert!(!payment.is_live());
}

#[test]
fn duplicate_callback_no_produces_no_events() {
    let state = given(&paid_history());
    for outcome in [NotifyOutcome::Success, NotifyOutcome::Failed] {
        for amount in ["100.00", "1.00"] {
            when(&state, Command::Notify(notice("cb-pay", outcome, amount))).then(Ok(vec![]));
        }
    }
}

#[test]
fn duplicate_of_a_refused_callback_produces_no_events_and_the_payment_stays_pending() {
    let n = notice("cb-1", NotifyOutcome::Success, "1.00");
    let state = given(&[
        created(),
        callback(&n, CallbackStatus::Failed, Some("amount_mismatch"), false),
    ]);
    let correct = notice("cb-1", NotifyOutcome::Success, "100.00");
    let after = when(&state, Command::Notify(correct)).then(Ok(vec![]));
    assert_eq!(after.unwrap().status, PaymentStatus::Pending);
}

#[test]
fn notice_from_another_gateway_is_wrong_gateway_and_records_nothing() {
    for gateway in [
        PaymentMethod::Wechat,
        PaymentMethod::Bank,
        PaymentMethod::CreditCard,
    ] {
        let n = Notification {
            gateway,
            ..notice("cb-1", NotifyOutcome::Success, "100.00")
        };
        when(&given(&[created()]), Command::Notify(n)).then_error(DomainError::WrongGateway {
            expected: "alipay".into(),
            got: gateway.name().into(),
        });
    }
}

#[test]
fn notice_from_another_gateway_is_wrong_gateway_even_when_its_callback_no_was_seen() {
    let n = Notification {
        gateway: PaymentMethod::Wechat,
        ..notice("cb-pay", NotifyOutcome::Success, "100.00")
    };
    when(&given(&paid_history()), Command::Notify(n)).then_error(DomainError::WrongGateway {
        expected: "alipay".into(),
        got: "wechat".into(),
    });
}

#[test]
fn notice_with_an_empty_or_overlong_callback_no_is_invalid() {
    for callback_no in [String::new(), "c".repeat(101)] {
        let n = notice(&callback_no, NotifyOutcome::Success, "100.00");
        when(&given(&[created()]), Command::Notify(n)).then_invalid();
    }
    let n = Notification {
        gateway_trade_no: String::new(),
        ..notice("cb-1", NotifyOutcome::Success, "100.00")
    };
    when(&given(&[created()]), Command::Notify(n)).then_invalid();
}

#[test]
fn success_after_failure_is_a_failed_callback_flagged_for_refund_and_the_payment_stays_failed() {
    let state = given(&[created(), failed("gateway_unreachable")]);
    let n = notice("cb-late", NotifyOutcome::Success, "100.00");
    let payment = when(&state, Command::Notify(n.clone())).then_events(vec![callback(
        &n,
        CallbackStatus::Failed,
        Some("success_after_failure"),
        true,
    )]);
    assert_eq!(payment.status, PaymentStatus::Failed);
    assert!(payment.flagged_for_refund);
    assert_eq!(payment.paid_at, None);
}

#[test]
fn failure_notice_on_a_failed_payment_is_applied_without_another_failed_event() {
    let state = given(&[created(), failed("gateway_unreachable")]);
    let n = notice("cb-2", NotifyOutcome::Failed, "100.00");
    let payment = when(&state, Command::Notify(n.clone())).then_events(vec![applied(&n)]);
    assert_eq!(payment.status, PaymentStatus::Failed);
    assert!(!payment.flagged_for_refund);
}

#[test]
fn failure_notice_on_a_successful_payment_is_refused_as_a_failed_callback() {
    let n = notice("cb-2", NotifyOutcome::Failed, "100.00");
    let payment =
        when(&given(&paid_history()), Command::Notify(n.clone())).then_events(vec![callback(
            &n,
            CallbackStatus::Failed,
            Some("contradicts_settled_payment"),
            false,
        )]);
    assert_eq!(payment.status, PaymentStatus::Success);
    assert_eq!(payment.failure_reason, None);
}

#[test]
fn second_success_notice_of_the_same_trade_is_applied_without_paying_twice() {
    let n = Notification {
        gateway_trade_no: "T-cb-pay".into(),
        ..notice("cb-2", NotifyOutcome::Success, "100.00")
    };
    let payment =
        when(&given(&paid_history()), Command::Notify(n.clone())).then_events(vec![applied(&n)]);
    assert_eq!(payment.status, PaymentStatus::Success);
    assert_eq!(payment.gateway_trade_no.as_deref(), Some("T-cb-pay"));
    assert!(!payment.flagged_for_refund);
}

#[test]
fn second_success_with_another_trade_no_on_a_paid_payment_is_a_flagged_double_charge() {
    let n = notice("cb-2", NotifyOutcome::Success, "100.00");
    let payment =
        when(&given(&paid_history()), Command::Notify(n.clone())).then_events(vec![callback(
            &n,
            CallbackStatus::Failed,
            Some("duplicate_charge"),
            true,
        )]);
    assert_eq!(payment.status, PaymentStatus::Success);
    assert!(payment.flagged_for_refund);
    assert_eq!(payment.flag_reason.as_deref(), Some("duplicate_charge"));
    assert_eq!(payment.flagged_amount, dec("100.00"));
    // The gateway holds the payment and the second charge: both can be refunded.
    assert_eq!(payment.refundable_amount(), dec("200.00"));
}

#[test]
fn a_double_charge_is_refunded_from_suspense_first_and_then_from_revenue() {
    let state = given(&history(&[
        &paid_history(),
        &[callback(
            &notice("cb-2", NotifyOutcome::Success, "100.00"),
            CallbackStatus::Failed,
            Some("duplicate_charge"),
            true,
        )],
    ]));
    let events = decide(&state, &request_refund(1, "150.00")).unwrap();
    let PaymentEvent::RefundRequested(r) = &events[0] else {
        panic!("a refund request, got {events:?}");
    };
    assert_eq!(r.from_suspense, dec("100.00"));
    let payment = fold(&history(&[
        &paid_history(),
        &[
            callback(
                &notice("cb-2", NotifyOutcome::Success, "100.00"),
                CallbackStatus::Failed,
                Some("duplicate_charge"),
                true,
            ),
            events[0].clone(),
            refunded(1, "150.00"),
        ],
    ]))
    .unwrap();
    // Half the payment is still the merchant's: not fully refunded.
    assert_eq!(payment.status, PaymentStatus::Success);
    assert_eq!(payment.refundable_amount(), dec("50.00"));
}

#[test]
fn money_reported_after_failure_can_be_refunded_up_to_what_the_gateway_reported() {
    let n = notice("cb-late", NotifyOutcome::Success, "100.00");
    let state = given(&[
        created(),
        failed("gateway_unreachable"),
        callback(
            &n,
            CallbackStatus::Failed,
            Some("success_after_failure"),
            true,
        ),
    ]);
    when(&state, request_refund(1, "100.01")).then_error(DomainError::RefundExceedsRefundable {
        requested: dec("100.01"),
        refundable: dec("100.00"),
    });
    let events = decide(&state, &request_refund(1, "100.00")).unwrap();
    assert!(matches!(
        &events[0],
        PaymentEvent::RefundRequested(r) if r.from_suspense == dec("100.00")
    ));
    let after = events.iter().fold(state, evolve);
    // All the flagged money is promised back: a failed payment has nothing more to refund.
    when(&after, request_refund(2, "0.01")).then_not_allowed();
    assert_eq!(after.unwrap().status, PaymentStatus::Failed);
}

// ---------------------------------------------------------------------------------------------
// FailPayment
// ---------------------------------------------------------------------------------------------

#[test]
fn fail_payment_fails_a_pending_payment() {
    let payment = when(
        &given(&[created()]),
        Command::FailPayment {
            reason: "gateway_unreachable".into(),
        },
    )
    .then_events(vec![failed("gateway_unreachable")]);
    assert_eq!(payment.status, PaymentStatus::Failed);
}

#[test]
fn fail_payment_on_a_failed_payment_changes_nothing() {
    when(
        &given(&[created(), failed("first")]),
        Command::FailPayment {
            reason: "second".into(),
        },
    )
    .then(Ok(vec![]));
}

#[test]
fn fail_payment_on_a_successful_or_refunded_payment_is_not_allowed() {
    let refunded_history = history(&[
        &paid_history(),
        &[refund_requested(1, "100.00"), refunded(1, "100.00")],
    ]);
    for events in [paid_history(), refunded_history] {
        when(
            &given(&events),
            Command::FailPayment {
                reason: "late".into(),
            },
        )
        .then_not_allowed();
    }
}

// ---------------------------------------------------------------------------------------------
// Refund requests
// ---------------------------------------------------------------------------------------------

#[test]
fn refund_on_a_pending_payment_is_not_allowed() {
    when(&given(&[created()]), request_refund(1, "1.00")).then_not_allowed();
}

#[test]
fn refund_on_a_failed_payment_is_not_allowed() {
    when(&given(&[created(), failed("x")]), request_refund(1, "1.00")).then_not_allowed();
}

#[test]
fn refund_larger_than_the_paid_amount_is_rejected() {
    when(&given(&paid_history()), request_refund(1, "100.01")).then_error(
        DomainError::RefundExceedsRefundable {
            requested: dec("100.01"),
            refundable: dec("100.00"),
        },
    );
}

#[test]
fn refund_larger_than_the_refundable_amount_is_rejected() {
    let state = given(&history(&[
        &paid_history(),
        &[
            refund_requested(1, "30.00"),
            refunded(1, "30.00"),
            refund_requested(2, "50.00"),
        ],
    ]));
    when(&state, request_refund(3, "20.01")).then_error(DomainError::RefundExceedsRefundable {
        requested: dec("20.01"),
        refundable: dec("20.00"),
    });
}

#[test]
fn partial_refunds_are_accepted_up_to_the_paid_amount() {
    let state = given(&paid_history());
    let state =
        when(&state, request_refund(1, "30.00")).then(Ok(vec![refund_requested(1, "30.00")]));
    let state =
        when(&state, request_refund(2, "45.50")).then(Ok(vec![refund_requested(2, "45.50")]));
    let state =
        when(&state, request_refund(3, "24.50")).then(Ok(vec![refund_requested(3, "24.50")]));
    let payment = state.clone().unwrap();
    assert_eq!(payment.refundable_amount(), Decimal::ZERO);
    assert_eq!(payment.refunded_amount(), Decimal::ZERO);
    assert_eq!(payment.status, PaymentStatus::Success);
    when(&state, request_refund(4, "0.01")).then_error(DomainError::RefundExceedsRefundable {
        requested: dec("0.01"),
        refundable: dec("0.00"),
    });
}

#[test]
fn a_confirmed_partial_refund_leaves_the_payment_successful_with_a_refunded_amount() {
    let state = given(&history(&[
        &paid_history(),
        &[refund_requested(1, "40.00")],
    ]));
    let payment = when(
        &state,
        Command::ConfirmRefund {
            refund_id: refund_uuid(1),
        },
    )
    .then_events(vec![refunded(1, "40.00")]);
    assert_eq!(payment.status, PaymentStatus::Success);
    assert_eq!(payment.refunded_amount(), dec("40.00"));
    assert_eq!(payment.refundable_amount(), dec("60.00"));
    assert_eq!(
        payment.refund(refund_uuid(1)).unwrap().status,
        RefundStatus::Success
    );
}

#[test]
fn confirming_refunds_up_to_the_full_amount_marks_the_payment_refunded() {
    let state = given(&history(&[
        &paid_history(),
        &[
            refund_requested(1, "40.00"),
            refund_requested(2, "60.00"),
            refunded(1, "40.00"),
        ],
    ]));
    assert_eq!(state.as_ref().unwrap().status, PaymentStatus::Success);
    let payment = when(
        &state,
        Command::ConfirmRefund {
            refund_id: refund_uuid(2),
        },
    )
    .then_events(vec![refunded(2, "60.00")]);
    assert_eq!(payment.status, PaymentStatus::Refunded);
    assert_eq!(payment.refunded_amount(), dec("100.00"));
    assert!(!payment.is_live());
}

#[test]
fn refund_of_a_fully_refunded_payment_is_not_allowed() {
    let state = given(&history(&[
        &paid_history(),
        &[refund_requested(1, "100.00"), refunded(1, "100.00")],
    ]));
    assert_eq!(state.as_ref().unwrap().status, PaymentStatus::Refunded);
    when(&state, request_refund(2, "0.01")).then_not_allowed();
}

#[test]
fn a_failed_refund_makes_its_amount_refundable_again() {
    let state = given(&history(&[
        &paid_history(),
        &[refund_requested(1, "100.00")],
    ]));
    when(&state, request_refund(2, "0.01")).then_error(DomainError::RefundExceedsRefundable {
        requested: dec("0.01"),
        refundable: dec("0.00"),
    });
    let payment = when(
        &state,
        Command::FailRefund {
            refund_id: refund_uuid(1),
            reason: "gateway_rejected".into(),
        },
    )
    .then_events(vec![refund_failed(1, "100.00", "gateway_rejected")]);
    assert_eq!(payment.refundable_amount(), dec("100.00"));
    assert_eq!(payment.status, PaymentStatus::Success);
    when(&Some(payment), request_refund(2, "100.00"))
        .then_events(vec![refund_requested(2, "100.00")]);
}

// ---------------------------------------------------------------------------------------------
// Refund notifications (`refund_no` set)
// ---------------------------------------------------------------------------------------------

fn refund_processing() -> State {
    given(&history(&[
        &paid_history(),
        &[refund_requested(1, "25.00")],
    ]))
}

#[test]
fn refund_success_notice_records_the_callback_and_confirms_the_refund() {
    let n = refund_notice("cb-r1", 1, NotifyOutcome::Success, "25.00");
    let payment = when(&refund_processing(), Command::Notify(n.clone()))
        .then_events(vec![applied(&n), refunded(1, "25.00")]);
    assert_eq!(payment.refunded_amount(), dec("25.00"));
    assert_eq!(payment.status, PaymentStatus::Success);
}

#[test]
fn refund_success_notice_for_the_whole_amount_marks_the_payment_refunded() {
    let state = given(&history(&[
        &paid_history(),
        &[refund_requested(1, "100.00")],
    ]));
    let n = refund_notice("cb-r1", 1, NotifyOutcome::Success, "100.00");
    let payment = when(&state, Command::Notify(n.clone()))
        .then_events(vec![applied(&n), refunded(1, "100.00")]);
    assert_eq!(payment.status, PaymentStatus::Refunded);
}

#[test]
fn refund_failure_notice_records_the_callback_and_fails_the_refund() {
    let n = refund_notice("cb-r1", 1, NotifyOutcome::Failed, "25.00");
    let payment = when(&refund_processing(), Command::Notify(n.clone())).then_events(vec![
        applied(&n),
        refund_failed(1, "25.00", "gateway_reported_failure"),
    ]);
    assert_eq!(
        payment.refund(refund_uuid(1)).unwrap().status,
        RefundStatus::Failed
    );
    assert_eq!(payment.refundable_amount(), dec("100.00"));
}

#[test]
fn refund_notice_with_another_amount_is_a_failed_callback_and_leaves_the_refund_processing() {
    for outcome in [NotifyOutcome::Success, NotifyOutcome::Failed] {
        let n = refund_notice("cb-r1", 1, outcome, "100.00");
        let payment =
            when(&refund_processing(), Command::Notify(n.clone())).then_events(vec![callback(
                &n,
                CallbackStatus::Failed,
                Some("amount_mismatch"),
                false,
            )]);
        assert_eq!(
            payment.refund(refund_uuid(1)).unwrap().status,
            RefundStatus::Processing
        );
    }
}

#[test]
fn refund_notice_for_an_unknown_refund_no_is_not_found() {
    let n = refund_notice("cb-r9", 9, NotifyOutcome::Success, "25.00");
    when(&refund_processing(), Command::Notify(n)).then_error(DomainError::NotFound);
}

#[test]
fn refund_notice_agreeing_with_a_settled_refund_is_applied_without_new_refund_events() {
    let state = given(&history(&[
        &paid_history(),
        &[refund_requested(1, "25.00"), refunded(1, "25.00")],
    ]));
    let n = refund_notice("cb-r1", 1, NotifyOutcome::Success, "25.00");
    when(&state, Command::Notify(n.clone())).then_events(vec![applied(&n)]);
}

#[test]
fn refund_notice_contradicting_a_settled_refund_is_a_failed_callback() {
    let state = given(&history(&[
        &paid_history(),
        &[refund_requested(1, "25.00"), refunded(1, "25.00")],
    ]));
    let n = refund_notice("cb-r1", 1, NotifyOutcome::Failed, "25.00");
    let payment = when(&state, Command::Notify(n.clone())).then_events(vec![callback(
        &n,
        CallbackStatus::Failed,
        Some("contradicts_settled_refund"),
        false,
    )]);
    assert_eq!(payment.refunded_amount(), dec("25.00"));
}

#[test]
fn duplicate_refund_notice_produces_no_events() {
    let n = refund_notice("cb-r1", 1, NotifyOutcome::Success, "25.00");
    let state = given(&history(&[
        &paid_history(),
        &[
            refund_requested(1, "25.00"),
            applied(&n),
            refunded(1, "25.00"),
        ],
    ]));
    when(&state, Command::Notify(n)).then(Ok(vec![]));
}

// ---------------------------------------------------------------------------------------------
// ConfirmRefund / FailRefund
// ---------------------------------------------------------------------------------------------

#[test]
fn confirm_refund_of_a_confirmed_refund_changes_nothing() {
    let state = given(&history(&[
        &paid_history(),
        &[refund_requested(1, "25.00"), refunded(1, "25.00")],
    ]));
    when(
        &state,
        Command::ConfirmRefund {
            refund_id: refund_uuid(1),
        },
    )
    .then(Ok(vec![]));
}

#[test]
fn a_refund_confirmed_after_it_failed_is_recorded_late_flagged_and_never_refundable_again() {
    let state = given(&history(&[
        &paid_history(),
        &[refund_requested(1, "25.00"), refund_failed(1, "25.00", "x")],
    ]));
    assert_eq!(state.as_ref().unwrap().refundable_amount(), dec("100.00"));
    let payment = when(
        &state,
        Command::ConfirmRefund {
            refund_id: refund_uuid(1),
        },
    )
    .then_events(vec![PaymentEvent::Refunded(Refunded {
        refund_id: refund_uuid(1),
        refund_no: refund_no(1),
        amount: dec("25.00"),
        late: true,
    })]);
    assert!(payment.flagged_for_refund);
    assert_eq!(
        payment.flag_reason.as_deref(),
        Some("refund_confirmed_after_failure")
    );
    assert!(payment.refunds[0].late);
    assert_eq!(payment.refunded_amount(), dec("25.00"));
    assert_eq!(payment.refundable_amount(), dec("75.00"));
}

#[test]
fn a_success_notice_for_a_failed_refund_confirms_it_late() {
    let state = given(&history(&[
        &paid_history(),
        &[refund_requested(1, "25.00"), refund_failed(1, "25.00", "x")],
    ]));
    let n = refund_notice("cb-r1", 1, NotifyOutcome::Success, "25.00");
    let payment = when(&state, Command::Notify(n.clone())).then_events(vec![
        applied(&n),
        PaymentEvent::Refunded(Refunded {
            refund_id: refund_uuid(1),
            refund_no: refund_no(1),
            amount: dec("25.00"),
            late: true,
        }),
    ]);
    assert!(payment.flagged_for_refund);
    assert_eq!(payment.refundable_amount(), dec("75.00"));
}

#[test]
fn fail_refund_of_a_failed_refund_changes_nothing() {
    let state = given(&history(&[
        &paid_history(),
        &[refund_requested(1, "25.00"), refund_failed(1, "25.00", "x")],
    ]));
    when(
        &state,
        Command::FailRefund {
            refund_id: refund_uuid(1),
            reason: "again".into(),
        },
    )
    .then(Ok(vec![]));
}

#[test]
fn fail_refund_of_a_confirmed_refund_is_not_allowed() {
    let state = given(&history(&[
        &paid_history(),
        &[refund_requested(1, "25.00"), refunded(1, "25.00")],
    ]));
    when(
        &state,
        Command::FailRefund {
            refund_id: refund_uuid(1),
            reason: "late".into(),
        },
    )
    .then_not_allowed();
}

#[test]
fn confirm_or_fail_of_an_unknown_refund_is_not_found() {
    when(
        &refund_processing(),
        Command::ConfirmRefund {
            refund_id: refund_uuid(9),
        },
    )
    .then_error(DomainError::NotFound);
    when(
        &refund_processing(),
        Command::FailRefund {
            refund_id: refund_uuid(9),
            reason: "x".into(),
        },
    )
    .then_error(DomainError::NotFound);
}

// ---------------------------------------------------------------------------------------------
// Folding
// ---------------------------------------------------------------------------------------------

#[test]
fn folding_a_whole_history_counts_every_event_and_keeps_every_refund() {
    let n = refund_notice("cb-r2", 2, NotifyOutcome::Failed, "10.00");
    let events = history(&[
        &paid_history(),
        &[
            refund_requested(1, "25.00"),
            refund_requested(2, "10.00"),
            refunded(1, "25.00"),
            applied(&n),
            refund_failed(2, "10.00", "gateway_reported_failure"),
        ],
    ]);
    let payment = given(&events).unwrap();
    assert_eq!(payment.version, 8);
    assert_eq!(payment.refunds.len(), 2);
    assert_eq!(payment.refunded_amount(), dec("25.00"));
    assert_eq!(payment.refundable_amount(), dec("75.00"));
    assert_eq!(payment.callbacks.len(), 2);
}
