//! Property tests of the payment aggregate and of money parsing.
//!
//! The aggregate property creates one payment and then throws arbitrary command sequences at
//! it: notifications with random outcomes and amounts (callback_nos drawn from a small pool so
//! duplicates are common), refund requests, confirmations and failures of existing refunds,
//! payment failures. After every step it checks the invariants of SPEC §2 against both the
//! state and the events emitted so far, and that every event survives serialization.

use crate::money::AMOUNT_MAJOR_UNITS_MAX;
use crate::payment::{Notification, State};
use crate::{
    decide, evolve, fold, CallbackStatus, Command, Currency, DomainError, Money, NotifyOutcome,
    Payment, PaymentEvent, PaymentMethod, PaymentStatus, RefundStatus,
};
use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rust_decimal::{Decimal, RoundingStrategy};
use uuid::Uuid;

/// Currencies covering every minor unit that matters: 0 (JPY), 2 (CNY, USD) and 3 (KWD).
const CURRENCIES: [&str; 4] = ["CNY", "JPY", "KWD", "USD"];
/// Small, so that the same callback_no arrives again and again.
const CALLBACK_NO_POOL: u8 = 6;
/// Long enough to pay, refund in several parts and hit every refund state.
const STEPS_MAX: usize = 40;

fn currency(code: &str) -> Currency {
    Currency::from_code(code).expect("test currencies are in the table")
}

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap()
}

/// How an operation picks its amount, resolved against the state when the step runs so a
/// sequence stays meaningful while it shrinks.
#[derive(Debug, Clone)]
enum AmountPick {
    /// The natural amount: the payment's, or for a refund notice the refund's.
    Natural,
    /// What is still refundable (zero once everything is refunded or in flight).
    Refundable,
    /// Half the natural amount, cut down to the currency's scale.
    Half,
    /// A number of minor units, unrelated to anything in the state.
    Units(u32),
    /// One decimal place more than the currency allows.
    OverScale(u32),
    Zero,
}

#[derive(Debug, Clone)]
enum Op {
    Notify {
        callback: u8,
        success: bool,
        amount: AmountPick,
        /// Index into the refunds (modulo their number): a refund notice; None: a payment one.
        refund: Option<u8>,
        other_gateway: bool,
    },
    RequestRefund {
        amount: AmountPick,
    },
    ConfirmRefund {
        refund: u8,
    },
    FailRefund {
        refund: u8,
    },
    FailPayment,
    CreateAgain,
}

#[derive(Debug, Clone)]
struct Create {
    currency: &'static str,
    minor_units: i64,
    method: PaymentMethod,
}

fn create_strategy() -> impl Strategy<Value = Create> {
    (
        prop::sample::select(CURRENCIES.to_vec()),
        prop_oneof![
            8 => 1i64..=10_000_000,
            1 => Just(1i64),
            1 => Just(i64::MAX),
        ],
        prop::sample::select(PaymentMethod::ALL.to_vec()),
    )
        .prop_map(|(code, minor_units, method)| {
            // i64::MAX stands for "the largest amount the currency accepts".
            let scale = currency(code).minor_unit();
            let max_units = AMOUNT_MAJOR_UNITS_MAX * 10i64.pow(scale);
            Create {
                currency: code,
                minor_units: minor_units.min(max_units),
                method,
            }
        })
}

fn amount_strategy(natural_weight: u32) -> impl Strategy<Value = AmountPick> {
    prop_oneof![
        natural_weight => Just(AmountPick::Natural),
        3 => Just(AmountPick::Refundable),
        3 => Just(AmountPick::Half),
        4 => (1u32..=20_000_000).prop_map(AmountPick::Units),
        1 => (0u32..=1_000).prop_map(AmountPick::OverScale),
        1 => Just(AmountPick::Zero),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (
            0..CALLBACK_NO_POOL,
            prop::bool::weighted(0.85),
            amount_strategy(12),
            prop::option::weighted(0.35, any::<u8>()),
            prop::bool::weighted(0.05),
        )
            .prop_map(|(callback, success, amount, refund, other_gateway)| Op::Notify {
                callback,
                success,
                amount,
                refund,
                other_gateway,
            }),
        6 => amount_strategy(2).prop_map(|amount| Op::RequestRefund { amount }),
        3 => any::<u8>().prop_map(|refund| Op::ConfirmRefund { refund }),
        2 => any::<u8>().prop_map(|refund| Op::FailRefund { refund }),
        1 => Just(Op::FailPayment),
        1 => Just(Op::CreateAgain),
    ]
}

fn create_command(create: &Create) -> Command {
    let currency = currency(create.currency);
    let amount = Decimal::new(create.minor_units, currency.minor_unit());
    Command::Create {
        payment_id: Uuid::from_u128(1),
        payment_no: "P1".into(),
        order_id: "order-1".into(),
        user_id: "user-1".into(),
        amount: Money::new(amount, currency).expect("the strategy draws valid amounts"),
        method: create.method,
        payment_url: "https://pay.example/P1".into(),
        return_url: None,
        merchant: None,
        payer: None,
    }
}

fn resolve(pick: &AmountPick, natural: Decimal, p: &Payment) -> Decimal {
    let scale = p.currency().minor_unit();
    match pick {
        AmountPick::Natural => natural,
        AmountPick::Refundable => p.refundable_amount(),
        AmountPick::Half => {
            (natural / Decimal::TWO).round_dp_with_strategy(scale, RoundingStrategy::ToZero)
        }
        AmountPick::Units(units) => Decimal::new(i64::from(*units), scale),
        AmountPick::OverScale(units) => Decimal::new(i64::from(*units) * 10 + 7, scale + 1),
        AmountPick::Zero => Decimal::ZERO,
    }
}

fn pick_refund(p: &Payment, index: u8) -> Option<&crate::payment::Refund> {
    if p.refunds.is_empty() {
        None
    } else {
        Some(&p.refunds[usize::from(index) % p.refunds.len()])
    }
}

/// Turns an operation into a command against the current payment; `step` makes ids unique.
fn command_for(op: &Op, p: &Payment, step: usize, create: &Create) -> Command {
    match op {
        Op::Notify {
            callback,
            success,
            amount,
            refund,
            other_gateway,
        } => {
            let refund = refund.map(|index| pick_refund(p, index));
            let natural = match refund {
                Some(Some(r)) => r.amount,
                _ => p.amount.amount(),
            };
            let gateway = if *other_gateway {
                let at = PaymentMethod::ALL
                    .iter()
                    .position(|m| *m == p.method)
                    .unwrap();
                PaymentMethod::ALL[(at + 1) % PaymentMethod::ALL.len()]
            } else {
                p.method
            };
            Command::Notify(Notification {
                callback_id: Uuid::from_u128(0x1_0000 + step as u128),
                callback_no: format!("cb-{callback}"),
                gateway,
                outcome: if *success {
                    NotifyOutcome::Success
                } else {
                    NotifyOutcome::Failed
                },
                amount: resolve(amount, natural, p),
                gateway_trade_no: format!("T-{step}"),
                refund_no: refund
                    .map(|r| r.map_or_else(|| "R-none".into(), |r| r.refund_no.clone())),
                paid_at: start() + Duration::seconds(step as i64),
            })
        }
        Op::RequestRefund { amount } => {
            let refund_id = Uuid::from_u128(0x2_0000 + step as u128);
            Command::RequestRefund {
                refund_id,
                refund_no: format!("R{step}"),
                amount: resolve(amount, p.amount.amount(), p),
                reason: "customer asked".into(),
            }
        }
        Op::ConfirmRefund { refund } => Command::ConfirmRefund {
            refund_id: pick_refund(p, *refund).map_or(Uuid::nil(), |r| r.id),
        },
        Op::FailRefund { refund } => Command::FailRefund {
            refund_id: pick_refund(p, *refund).map_or(Uuid::nil(), |r| r.id),
            reason: "gateway_rejected".into(),
        },
        Op::FailPayment => Command::FailPayment {
            reason: "gateway_unreachable".into(),
        },
        Op::CreateAgain => create_command(create),
    }
}

/// What the decision must be, where the rules make it certain from the state before.
fn check_decision(
    before: &Payment,
    command: &Command,
    result: &Result<Vec<PaymentEvent>, DomainError>,
) -> Result<(), TestCaseError> {
    match command {
        Command::Create { .. } => {
            prop_assert!(matches!(result, Err(DomainError::NotAllowed(_))));
        }
        Command::Notify(n) => {
            if n.gateway != before.method {
                prop_assert_eq!(
                    result,
                    &Err(DomainError::WrongGateway {
                        expected: before.method.name().into(),
                        got: n.gateway.name().into(),
                    })
                );
            } else if before.callbacks.contains_key(&n.callback_no) {
                prop_assert_eq!(
                    result,
                    &Ok(vec![]),
                    "a duplicate callback_no changes nothing"
                );
            } else if crate::money::check_amount(n.amount, before.currency()).is_err() {
                prop_assert!(
                    matches!(result, Err(DomainError::Invalid(_))),
                    "an amount invalid in the currency is refused: {:?}",
                    result
                );
            } else if n.refund_no.as_deref() == Some("R-none") {
                prop_assert_eq!(result, &Err(DomainError::NotFound));
            } else {
                let events = result
                    .as_ref()
                    .expect("a fresh notification is always recorded");
                let Some(PaymentEvent::CallbackReceived(c)) = events.first() else {
                    return Err(TestCaseError::fail(
                        "a notification records its callback first",
                    ));
                };
                prop_assert_eq!(&c.callback_no, &n.callback_no);
                let natural = match &n.refund_no {
                    Some(no) => {
                        before
                            .refund_by_no(no)
                            .expect("picked from the refunds")
                            .amount
                    }
                    None => before.amount.amount(),
                };
                let pays = events.iter().any(|e| matches!(e, PaymentEvent::Paid(_)));
                if pays {
                    prop_assert_eq!(before.status, PaymentStatus::Pending);
                    prop_assert_eq!(n.amount, natural, "only the exact amount pays");
                    prop_assert_eq!(n.outcome, NotifyOutcome::Success);
                }
                if n.outcome == NotifyOutcome::Success && n.amount != natural {
                    prop_assert_eq!(events.len(), 1, "an amount mismatch only records");
                    prop_assert_eq!(c.status, CallbackStatus::Failed);
                }
                if before.status == PaymentStatus::Failed
                    && n.refund_no.is_none()
                    && n.outcome == NotifyOutcome::Success
                {
                    prop_assert_eq!(c.status, CallbackStatus::Failed);
                    prop_assert_eq!(events.len(), 1);
                }
            }
        }
        Command::RequestRefund { amount, .. } => match result {
            Ok(events) => {
                prop_assert!(
                    before.status == PaymentStatus::Success
                        || before.flagged_amount > Decimal::ZERO,
                    "refunds need a paid payment or flagged money"
                );
                prop_assert!(*amount <= before.refundable_amount());
                prop_assert_eq!(events.len(), 1);
            }
            Err(DomainError::RefundExceedsRefundable {
                requested,
                refundable,
            }) => {
                prop_assert_eq!(*refundable, before.refundable_amount());
                prop_assert!(requested > refundable);
            }
            Err(DomainError::NotAllowed(_)) => {
                prop_assert_ne!(before.status, PaymentStatus::Success);
                prop_assert!(before.refundable_amount() <= Decimal::ZERO);
            }
            Err(DomainError::Invalid(_)) => {
                prop_assert!(
                    Money::new(*amount, before.currency()).is_err(),
                    "only a bad amount makes this refund invalid"
                );
            }
            Err(other) => return Err(TestCaseError::fail(format!("unexpected {other:?}"))),
        },
        Command::ConfirmRefund { refund_id } | Command::FailRefund { refund_id, .. } => {
            match before.refund(*refund_id) {
                None => prop_assert_eq!(result, &Err(DomainError::NotFound)),
                Some(r) if r.status == RefundStatus::Processing => {
                    prop_assert_eq!(result.as_ref().map(Vec::len), Ok(1));
                }
                // A confirmation after failure is recorded late (and flagged).
                Some(r)
                    if r.status == RefundStatus::Failed
                        && matches!(command, Command::ConfirmRefund { .. }) =>
                {
                    prop_assert!(matches!(
                        result.as_ref().map(|e| e.as_slice()),
                        Ok([PaymentEvent::Refunded(x)]) if x.late
                    ));
                }
                Some(_) => prop_assert!(!matches!(result, Ok(events) if !events.is_empty())),
            }
        }
        Command::FailPayment { .. } => match before.status {
            PaymentStatus::Pending => prop_assert_eq!(result.as_ref().map(Vec::len), Ok(1)),
            PaymentStatus::Failed => prop_assert_eq!(result, &Ok(vec![])),
            _ => prop_assert!(matches!(result, Err(DomainError::NotAllowed(_)))),
        },
    }
    Ok(())
}

/// Every invariant of a payment, checked against the state and the whole stream so far.
fn check_invariants(state: &State, events: &[PaymentEvent]) -> Result<(), TestCaseError> {
    let p = state.as_ref().expect("the payment was created first");
    prop_assert_eq!(
        p.version as usize,
        events.len(),
        "version counts the events"
    );
    prop_assert_eq!(
        &fold(events),
        state,
        "folding the stream reproduces the state"
    );
    check_view(p, events)?;

    let amount = p.amount.amount();
    let count = |f: fn(&PaymentEvent) -> bool| events.iter().filter(|e| f(e)).count();
    let paid_events = count(|e| matches!(e, PaymentEvent::Paid(_)));
    let failed_events = count(|e| matches!(e, PaymentEvent::Failed(_)));
    let callback_events = count(|e| matches!(e, PaymentEvent::CallbackReceived(_)));
    prop_assert_eq!(
        count(|e| matches!(e, PaymentEvent::Created(_))),
        1,
        "created only once"
    );
    prop_assert!(paid_events <= 1, "paid at most once");
    prop_assert!(failed_events <= 1, "failed at most once");
    prop_assert!(
        paid_events == 0 || failed_events == 0,
        "a payment is never both paid and failed"
    );
    let has_paid = paid_events == 1;
    let has_failed = failed_events == 1;

    // Refunds never exceed what was paid, and exist only on paid payments.
    let processing: Decimal = p
        .refunds
        .iter()
        .filter(|r| r.status == RefundStatus::Processing)
        .map(|r| r.amount)
        .sum();
    let refunded = p.refunded_amount();
    let late: Decimal = p.refunds.iter().filter(|r| r.late).map(|r| r.amount).sum();
    // Only a refund the gateway confirmed after failing it (flagged for a person) can take
    // more than the gateway holds.
    prop_assert!(
        refunded + processing <= p.held_amount() + late,
        "refunded {} + processing {} > held {}",
        refunded,
        processing,
        p.held_amount()
    );
    prop_assert!(late > Decimal::ZERO || p.refundable_amount() >= Decimal::ZERO);
    prop_assert!(
        p.refunds.is_empty() || has_paid || p.flagged_amount > Decimal::ZERO,
        "refunds only on paid payments or flagged money"
    );
    for r in &p.refunds {
        prop_assert!(r.amount > Decimal::ZERO);
        prop_assert_eq!(r.amount.scale(), p.currency().minor_unit());
    }
    let refunded_by_events: Decimal = events
        .iter()
        .filter_map(|e| match e {
            PaymentEvent::Refunded(r) => Some(r.amount),
            _ => None,
        })
        .sum();
    prop_assert_eq!(
        refunded,
        refunded_by_events,
        "refunded_amount is what was confirmed"
    );

    // The status says what the events say.
    let held = amount + p.flagged_amount;
    let status_agrees = match p.status {
        PaymentStatus::Pending => !has_paid && !has_failed,
        PaymentStatus::Success => has_paid && refunded < held,
        // Refunded stays refunded if a second charge is flagged later: that money is
        // refundable on its own.
        PaymentStatus::Refunded => has_paid && refunded >= amount,
        PaymentStatus::Failed => has_failed && !has_paid,
    };
    prop_assert!(
        status_agrees,
        "status {:?} disagrees with {:?}",
        p.status,
        events
    );
    if p.status == PaymentStatus::Success {
        prop_assert!(!crate::payment::fully_refunded(refunded, p.held_amount()));
    }
    prop_assert_eq!(
        matches!(p.status, PaymentStatus::Success | PaymentStatus::Refunded),
        has_paid
    );
    prop_assert_eq!(p.paid_at.is_some(), has_paid);

    // Callbacks: each callback_no recorded once, and a flag is never lost.
    prop_assert_eq!(
        p.callbacks.len(),
        callback_events,
        "no callback_no is recorded twice"
    );
    let flagged = events.iter().any(|e| {
        matches!(e, PaymentEvent::CallbackReceived(c) if c.flagged_for_refund)
            || matches!(e, PaymentEvent::Refunded(r) if r.late)
    });
    prop_assert_eq!(p.flagged_for_refund, flagged);
    let flagged_money: Decimal = events
        .iter()
        .filter_map(|e| match e {
            PaymentEvent::CallbackReceived(c) if c.flagged_for_refund => Some(c.amount),
            _ => None,
        })
        .sum();
    prop_assert_eq!(p.flagged_amount, flagged_money);
    Ok(())
}

/// The read side's fold agrees with the aggregate on every field they share: the view holds
/// the very state `evolve` built, one callback per callback event, times for every refund,
/// and the version and position of the last event.
fn check_view(p: &Payment, events: &[PaymentEvent]) -> Result<(), TestCaseError> {
    use crate::view::{self, At};
    let at = |i: usize| At {
        recorded_at: start() + Duration::seconds(i as i64),
        version: i as i32 + 1,
        position: 100 + i as i64,
    };
    let v = view::fold(events.iter().enumerate().map(|(i, e)| (e, at(i))))
        .expect("a created stream has a view");
    prop_assert_eq!(&v.payment, p, "the view holds the aggregate's state");
    prop_assert_eq!(v.version as usize, events.len());
    prop_assert_eq!(v.position, 100 + events.len() as i64 - 1);
    prop_assert_eq!(v.created_at, start());
    prop_assert_eq!(v.updated_at, at(events.len() - 1).recorded_at);
    let callbacks = events
        .iter()
        .filter(|e| matches!(e, PaymentEvent::CallbackReceived(_)))
        .count();
    prop_assert_eq!(v.callbacks.len(), callbacks);
    prop_assert_eq!(view::refunds(&v).count(), p.refunds.len());
    prop_assert_eq!(
        v.refund_time.is_some(),
        p.status == PaymentStatus::Refunded,
        "refund_time is set when the payment became refunded"
    );
    // Folding again from any prefix's view gives the same view (how projections continue).
    let mid = events.len() / 2;
    let first = view::fold(events[..=mid].iter().enumerate().map(|(i, e)| (e, at(i))));
    let resumed = events[mid + 1..]
        .iter()
        .enumerate()
        .fold(first, |acc, (j, e)| view::apply(acc, e, at(mid + 1 + j)));
    prop_assert_eq!(resumed.as_ref(), Some(&v));
    // Re-applying an event the view already holds changes nothing.
    let again = view::apply(
        Some(v.clone()),
        &events[events.len() - 1],
        at(events.len() - 1),
    );
    prop_assert_eq!(again.as_ref(), Some(&v));
    Ok(())
}

fn check_round_trip(event: &PaymentEvent) -> Result<(), TestCaseError> {
    let json = serde_json::to_value(event).expect("events serialize");
    let back: PaymentEvent = serde_json::from_value(json.clone()).expect("events deserialize");
    prop_assert_eq!(&back, event, "serde round trip of {}", json);
    let rebuilt = PaymentEvent::from_parts(event.event_type(), event.data())
        .expect("type and data rebuild the event");
    prop_assert_eq!(&rebuilt, event, "from_parts round trip");
    prop_assert_eq!(json["type"].as_str(), Some(event.event_type()));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_command_sequences_keep_every_invariant(
        create in create_strategy(),
        ops in vec(op_strategy(), 0..STEPS_MAX),
    ) {
        let mut events = decide(&None, &create_command(&create)).expect("a valid create");
        prop_assert_eq!(events.len(), 1);
        check_round_trip(&events[0])?;
        let mut state = fold(&events);
        check_invariants(&state, &events)?;

        for (step, op) in ops.iter().enumerate() {
            let before = state.clone().expect("created");
            let command = command_for(op, &before, step, &create);
            let result = decide(&state, &command);
            check_decision(&before, &command, &result)?;
            if let Ok(new_events) = result {
                for event in &new_events {
                    check_round_trip(event)?;
                    state = evolve(state, event);
                }
                events.extend(new_events);
            } else {
                prop_assert_eq!(state.as_ref(), Some(&before), "a refusal changes nothing");
            }
            check_invariants(&state, &events)?;
        }
    }

    /// The double-entry ledger over any history the domain allows: every event's postings net
    /// to zero, so the trial balance is always zero, and each account says what the payment's
    /// state says (clearing = paid − refunded, payable = refunds in flight).
    #[test]
    fn ledger_postings_of_any_history_balance_and_agree_with_the_state(
        create in create_strategy(),
        ops in vec(op_strategy(), 0..STEPS_MAX),
    ) {
        use crate::postings::{
            postings, GATEWAY_CLEARING, MERCHANT_REVENUE, REFUNDS_PAYABLE, SUSPENSE,
        };
        let mut state = fold(&decide(&None, &create_command(&create)).expect("a valid create"));
        let mut accounts: std::collections::BTreeMap<&str, Decimal> = Default::default();
        for (step, op) in ops.iter().enumerate() {
            let before = state.clone().expect("created");
            let command = command_for(op, &before, step, &create);
            let Ok(new_events) = decide(&state, &command) else { continue };
            for event in &new_events {
                let lines = postings(state.as_ref(), event);
                let net: Decimal = lines.iter().map(|l| l.1).sum();
                prop_assert_eq!(net, Decimal::ZERO, "postings of {:?} net to zero", event);
                for (account, amount) in lines {
                    *accounts.entry(account).or_default() += amount;
                }
                state = evolve(state, event);
            }
            let p = state.as_ref().expect("created");
            let total: Decimal = accounts.values().copied().sum();
            prop_assert_eq!(total, Decimal::ZERO, "trial balance");
            let paid = if p.paid_at.is_some() { p.amount.amount() } else { Decimal::ZERO };
            let in_flight: Decimal = p
                .refunds
                .iter()
                .filter(|r| r.status == RefundStatus::Processing)
                .map(|r| r.amount)
                .sum();
            let from_revenue: Decimal = p
                .refunds
                .iter()
                .filter(|r| r.is_committed())
                .map(|r| r.amount - r.from_suspense)
                .sum();
            let get = |a: &str| accounts.get(a).copied().unwrap_or_default();
            prop_assert_eq!(
                get(GATEWAY_CLEARING),
                paid + p.flagged_amount - p.refunded_amount()
            );
            prop_assert_eq!(get(REFUNDS_PAYABLE), -in_flight);
            prop_assert_eq!(get(MERCHANT_REVENUE), -(paid - from_revenue));
            prop_assert_eq!(get(SUSPENSE), -p.suspense_remaining());
        }
    }

    #[test]
    fn valid_amounts_round_trip_at_each_currency_scale(
        currency in prop::sample::select(Currency::all().collect::<Vec<_>>()),
        fraction in 0.0f64..1.0,
        small in 1i64..=1_000_000,
        pick_small in any::<bool>(),
    ) {
        let scale = currency.minor_unit();
        let max_units = AMOUNT_MAJOR_UNITS_MAX * 10i64.pow(scale);
        // The float only chooses which exact integer to test; no amount is ever a float.
        let units = if pick_small { small } else { ((max_units as f64 * fraction) as i64).clamp(1, max_units) };
        let exact = Decimal::new(units, scale);
        let text = exact.to_string();

        let money = Money::parse(&text, currency).expect("a valid amount parses");
        prop_assert_eq!(money.amount(), exact);
        prop_assert_eq!(money.amount().scale(), scale);
        prop_assert_eq!(money.amount().to_string(), text.clone());
        prop_assert_eq!(money.currency(), currency);

        // The same value written differently is the same money.
        let padded = if scale == 0 { format!("{text}.000") } else { format!("{text}000") };
        prop_assert_eq!(Money::parse(&padded, currency), Ok(money));
        prop_assert_eq!(Money::parse(&format!("{units}e-{scale}"), currency), Ok(money));
        prop_assert_eq!(Money::parse(&format!(" {text} "), currency), Ok(money));
        prop_assert_eq!(Money::new(exact.normalize(), currency), Ok(money));

        // Display, FromStr and serde all give it back unchanged.
        prop_assert_eq!(money.to_string().parse::<Money>(), Ok(money));
        let json = serde_json::to_value(money).expect("money serializes");
        prop_assert_eq!(&json["amount"], &serde_json::Value::String(text));
        prop_assert_eq!(serde_json::from_value::<Money>(json).expect("money deserializes"), money);
    }

    #[test]
    fn amounts_with_more_decimals_than_the_currency_allows_are_refused(
        currency in prop::sample::select(Currency::all().collect::<Vec<_>>()),
        units in 0i64..=1_000_000_000,
        extra_digit in 1i64..=9,
    ) {
        let scale = currency.minor_unit();
        let text = Decimal::new(units * 10 + extra_digit, scale + 1).to_string();
        prop_assert!(
            matches!(Money::parse(&text, currency), Err(DomainError::Invalid(_))),
            "{} {} must be refused, not rounded", text, currency
        );
    }

    #[test]
    fn amounts_above_the_maximum_or_not_positive_are_refused(
        currency in prop::sample::select(Currency::all().collect::<Vec<_>>()),
        over in 1i64..=1_000_000,
        under in 0i64..=1_000_000,
    ) {
        let scale = currency.minor_unit();
        let max_units = AMOUNT_MAJOR_UNITS_MAX * 10i64.pow(scale);
        let too_big = Decimal::new(max_units + over, scale).to_string();
        prop_assert!(Money::parse(&too_big, currency).is_err(), "{} accepted", too_big);
        prop_assert!(Money::parse(&Decimal::new(max_units, scale).to_string(), currency).is_ok());
        let not_positive = Decimal::new(-under, scale).to_string();
        prop_assert!(Money::parse(&not_positive, currency).is_err(), "{} accepted", not_positive);
    }

    #[test]
    fn parsing_arbitrary_text_never_panics_and_only_yields_valid_money(
        text in prop_oneof![
            any::<String>(),
            "[-+0-9.eE ]{0,70}",
            "[-+]?[0-9]{0,30}(\\.[0-9]{0,30})?([eE][-+]?[0-9]{1,12})?",
        ],
        code in prop::sample::select(CURRENCIES.to_vec()),
    ) {
        let currency = currency(code);
        if let Ok(money) = Money::parse(&text, currency) {
            prop_assert!(money.amount() > Decimal::ZERO);
            prop_assert!(money.amount() <= Decimal::from(AMOUNT_MAJOR_UNITS_MAX));
            prop_assert_eq!(money.amount().scale(), currency.minor_unit());
        }
        let _ = format!("{text} {code}").parse::<Money>();
    }
}

#[test]
fn every_currency_round_trips_through_serde_by_its_code() {
    for currency in Currency::all() {
        let json = serde_json::to_value(currency).expect("currencies serialize");
        assert_eq!(json, serde_json::Value::String(currency.code().into()));
        assert_eq!(serde_json::from_value::<Currency>(json).unwrap(), currency);
    }
    assert!(serde_json::from_value::<Currency>(serde_json::json!("cny")).is_err());
    assert!(serde_json::from_value::<Currency>(serde_json::json!("XXX")).is_err());
}

#[test]
fn every_status_round_trips_through_its_code_and_name() {
    for status in [
        PaymentStatus::Pending,
        PaymentStatus::Success,
        PaymentStatus::Failed,
        PaymentStatus::Refunded,
    ] {
        assert_eq!(PaymentStatus::from_code(status.code()), Some(status));
        assert_eq!(PaymentStatus::parse(status.name()), Some(status));
        assert_eq!(
            PaymentStatus::parse(&status.code().to_string()),
            Some(status)
        );
    }
    assert_eq!(PaymentStatus::parse("4"), None);
    assert_eq!(PaymentStatus::parse("unknown"), None);
}
