//! The one fold, end to end (ARCHITECTURE "One fold of payment state"): for generated payment
//! histories, the rows the projector writes to PostgreSQL, the read side's fold
//! (`view::fold`), the domain state (`ledger_domain::fold`) and the read queries built on the
//! rows (`read::detail`, `read::list`) agree on every field they share, the ledger lines are
//! the ones `postings` decides, and a rebuild from the log finds no drift.
//!
//! Each case decides real commands through the command service (several payments at once, so
//! the projector's batches mix streams), waits for the projections, and compares. Every source
//! is turned into a `Record` (field name → canonical text: amounts as exact normalised
//! decimals, times at the microsecond precision of `timestamptz`), and every field two or more
//! sources have must be equal in all of them. The refund driver is kept out of the way (the
//! sandbox leaves every refund pending), so the histories are the generated ones.
//!
//! `PROPTEST_CASES` and `PROPTEST_RNG_SEED` explore further than the fixed default.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use futures::future::join_all;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use rust_decimal::{Decimal, RoundingStrategy};
use sqlx::PgPool;
use uuid::Uuid;

use ledger::domain::money::{format_amount, AMOUNT_MAJOR_UNITS_MAX};
use ledger::domain::payment::{Notification, Refund};
use ledger::domain::postings::{
    postings, ACCOUNTS, GATEWAY_CLEARING, MERCHANT_REVENUE, REFUNDS_PAYABLE, SUSPENSE,
};
use ledger::domain::view::{self, At, PaymentView};
use ledger::domain::{
    evolve, fold, CallbackStatus, Command, Currency, Money, NotifyOutcome, Payment, PaymentEvent,
    PaymentMethod, PaymentStatus, RefundStatus,
};
use ledger::gateway::sandbox::Faults;
use ledger::projections::read::{self, ListFilter};
use ledger::projections::replay::replay;
use ledger::projections::ProjectionContext;
use ledger::service::{Bookkeeping, CommandError, Meta, Outcome};
use ledger::store::event::format_time;
use ledger::store::{self, StoredEvent};

use crate::common::{Options, TestApp};

/// Cases per run: each is two or three payments of up to `OPS_MAX` commands.
const CASES: u32 = 24;
const OPS_MAX: usize = 25;
/// The default seed, so that a run is repeatable; `PROPTEST_RNG_SEED` picks another.
const SEED: u64 = 0x1ed9_e4f0_1d00;
/// Small, so that the same callback_no arrives again and again.
const CALLBACK_NO_POOL: u8 = 5;
/// Gateway trade numbers per payment: a success under another one is a second charge.
const TRADE_POOL: u8 = 3;
const CURRENCIES: [&str; 4] = ["CNY", "JPY", "KWD", "USD"];

// ---------------------------------------------------------------------------------------
// histories
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Opening {
    currency: &'static str,
    minor_units: i64,
    method: PaymentMethod,
    return_url: bool,
    merchant: bool,
}

/// How an operation picks its amount, resolved against the state when it runs.
#[derive(Debug, Clone)]
enum AmountPick {
    /// The payment's amount, or for a refund notice the refund's.
    Natural,
    Refundable,
    Half,
    Units(u32),
}

#[derive(Debug, Clone)]
enum Op {
    Notify {
        callback: u8,
        /// A callback_no the other payments of the case may use too (same gateway: a
        /// duplicate recorded elsewhere).
        shared: bool,
        success: bool,
        amount: AmountPick,
        /// Index into the refunds (modulo their number): a refund notice.
        refund: Option<u8>,
        trade: u8,
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
}

#[derive(Debug, Clone)]
struct Plan {
    opening: Opening,
    ops: Vec<Op>,
}

fn currency(code: &str) -> Currency {
    Currency::from_code(code).expect("test currencies are in the table")
}

fn opening() -> impl Strategy<Value = Opening> {
    (
        prop::sample::select(CURRENCIES.to_vec()),
        prop_oneof![8 => 1i64..=10_000_000, 1 => Just(1i64), 1 => Just(i64::MAX)],
        prop::sample::select(PaymentMethod::ALL.to_vec()),
        any::<bool>(),
        prop::bool::weighted(0.3),
    )
        .prop_map(|(code, units, method, return_url, merchant)| {
            // i64::MAX stands for the largest amount the currency accepts.
            let max_units = AMOUNT_MAJOR_UNITS_MAX * 10i64.pow(currency(code).minor_unit());
            Opening {
                currency: code,
                minor_units: units.min(max_units),
                method,
                return_url,
                merchant,
            }
        })
}

fn amount(natural_weight: u32) -> impl Strategy<Value = AmountPick> {
    prop_oneof![
        natural_weight => Just(AmountPick::Natural),
        3 => Just(AmountPick::Refundable),
        3 => Just(AmountPick::Half),
        2 => (1u32..=2_000_000).prop_map(AmountPick::Units),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (
            0..CALLBACK_NO_POOL,
            prop::bool::weighted(0.1),
            prop::bool::weighted(0.8),
            amount(10),
            prop::option::weighted(0.3, any::<u8>()),
            prop_oneof![6 => Just(0u8), 1 => 1..TRADE_POOL],
        )
            .prop_map(|(callback, shared, success, amount, refund, trade)| Op::Notify {
                callback,
                shared,
                success,
                amount,
                refund,
                trade,
            }),
        6 => amount(2).prop_map(|amount| Op::RequestRefund { amount }),
        3 => any::<u8>().prop_map(|refund| Op::ConfirmRefund { refund }),
        2 => any::<u8>().prop_map(|refund| Op::FailRefund { refund }),
        1 => Just(Op::FailPayment),
    ]
}

fn history() -> impl Strategy<Value = Vec<Plan>> {
    vec(
        (opening(), vec(op(), 0..=OPS_MAX)).prop_map(|(opening, ops)| Plan { opening, ops }),
        2..=3,
    )
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
    }
}

fn pick_refund(p: &Payment, index: u8) -> Option<&Refund> {
    (!p.refunds.is_empty()).then(|| &p.refunds[usize::from(index) % p.refunds.len()])
}

/// Ids and names of one payment of a case; every id is fresh, so cases never collide.
struct Names {
    id: Uuid,
    tag: String,
    payment_no: String,
    order_id: String,
    /// Shared by the payments of one case.
    case: String,
}

impl Names {
    fn new(case: &str) -> Names {
        let id = Uuid::now_v7();
        let tag = id.simple().to_string();
        Names {
            id,
            payment_no: format!("P{}", tag.to_uppercase()),
            order_id: format!("order-{tag}"),
            tag,
            case: case.to_owned(),
        }
    }
}

fn create_command(n: &Names, o: &Opening) -> Command {
    let c = currency(o.currency);
    Command::Create {
        payment_id: n.id,
        payment_no: n.payment_no.clone(),
        order_id: n.order_id.clone(),
        user_id: "user-fold".into(),
        amount: Money::new(Decimal::new(o.minor_units, c.minor_unit()), c)
            .expect("the strategy draws valid amounts"),
        method: o.method,
        payment_url: format!("https://pay.example/{}", n.payment_no),
        return_url: o
            .return_url
            .then(|| format!("https://shop.example/orders/{}", n.order_id)),
        merchant: o.merchant.then(|| "merchant-fold".to_owned()),
        payer: None,
    }
}

fn command_for(op: &Op, p: &Payment, step: usize, n: &Names) -> Command {
    let start = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
    match op {
        Op::Notify {
            callback,
            shared,
            success,
            amount,
            refund,
            trade,
        } => {
            let refund = refund.map(|index| pick_refund(p, index));
            let natural = match refund {
                Some(Some(r)) => r.amount,
                _ => p.amount.amount(),
            };
            Command::Notify(Notification {
                callback_id: Uuid::new_v4(),
                callback_no: if *shared {
                    format!("{}-cb{callback}", n.case)
                } else {
                    format!("{}-cb{callback}", n.tag)
                },
                gateway: p.method,
                outcome: if *success {
                    NotifyOutcome::Success
                } else {
                    NotifyOutcome::Failed
                },
                amount: resolve(amount, natural, p),
                gateway_trade_no: format!("T-{}-{trade}", n.tag),
                refund_no: refund
                    .map(|r| r.map_or_else(|| "R-NONE".into(), |r| r.refund_no.clone())),
                // Microseconds, as `timestamptz` keeps them.
                paid_at: start + Duration::microseconds(step as i64 * 1_000_003),
            })
        }
        Op::RequestRefund { amount } => {
            let refund_id = Uuid::new_v4();
            Command::RequestRefund {
                refund_id,
                refund_no: format!("R{}", refund_id.simple()).to_uppercase(),
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
    }
}

/// One payment as driven: its names, what each command did, and the service's last state.
struct Driven {
    names: Names,
    said: Vec<String>,
}

async fn run(
    app: &TestApp,
    id: Uuid,
    command: &Command,
    state: &mut Option<Arc<Payment>>,
) -> Result<String, TestCaseError> {
    let outcome = app
        .state
        .commands
        .execute(
            id,
            std::slice::from_ref(command),
            &Meta::system("proptest"),
            &Bookkeeping::default(),
        )
        .await;
    Ok(match outcome {
        Ok(Outcome::Appended {
            payment, events, ..
        }) => {
            *state = Some(payment);
            let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
            format!("appended {}", types.join(", "))
        }
        Ok(Outcome::Unchanged { payment }) => {
            *state = Some(payment);
            "unchanged".into()
        }
        Ok(Outcome::CallbackElsewhere { owner }) => format!("callback_no recorded on {owner}"),
        Err(CommandError::Domain(e)) => format!("refused: {e}"),
        Err(e) => {
            return Err(TestCaseError::fail(format!(
                "payment {id}: {command:?} could not run: {e}"
            )))
        }
    })
}

/// Creates one payment and runs its operations, one command at a time.
async fn drive(app: &TestApp, plan: &Plan, case: &str) -> Result<Driven, TestCaseError> {
    let names = Names::new(case);
    let mut state = None;
    let create = create_command(&names, &plan.opening);
    let mut said = vec![format!(
        "create {:?} -> {}",
        plan.opening,
        run(app, names.id, &create, &mut state).await?
    )];
    for (step, op) in plan.ops.iter().enumerate() {
        let Some(p) = state.clone() else {
            return Err(TestCaseError::fail(format!(
                "payment {} was not created: {said:?}",
                names.id
            )));
        };
        let command = command_for(op, &p, step, &names);
        let did = run(app, names.id, &command, &mut state).await?;
        said.push(format!("{op:?} -> {did}"));
    }
    Ok(Driven { names, said })
}

// ---------------------------------------------------------------------------------------
// records: each source of a payment, field by field, in canonical text
// ---------------------------------------------------------------------------------------

/// One source's values, by field name.
#[derive(Debug, Default)]
struct Record(BTreeMap<&'static str, String>);

impl Record {
    fn with(mut self, field: &'static str, value: impl Debug) -> Record {
        self.0.insert(field, format!("{value:?}"));
        self
    }
}

/// An exact amount, whatever its scale (1.5 and 1.50 are the same money).
fn dec(d: Decimal) -> String {
    d.normalize().to_string()
}

fn time(t: DateTime<Utc>) -> String {
    format_time(t)
}

/// An amount as the API shows it: it must carry exactly the currency's scale.
fn shown(text: &str, c: Currency) -> String {
    match Decimal::from_str_exact(text) {
        Ok(d) if format_amount(d, c) == text => dec(d),
        _ => format!("shown as {text:?}, not with {} decimals", c.minor_unit()),
    }
}

fn payment_status(code: i32) -> String {
    i16::try_from(code)
        .ok()
        .and_then(PaymentStatus::from_code)
        .map_or_else(|| format!("code {code}"), |s| s.name().to_owned())
}

fn refund_status(code: i32) -> String {
    i16::try_from(code)
        .ok()
        .and_then(RefundStatus::from_code)
        .map_or_else(|| format!("code {code}"), |s| s.name().to_owned())
}

fn callback_status(code: i32) -> String {
    i16::try_from(code)
        .ok()
        .and_then(CallbackStatus::from_code)
        .map_or_else(|| format!("code {code}"), |s| s.name().to_owned())
}

fn outcome_name(o: NotifyOutcome) -> &'static str {
    match o {
        NotifyOutcome::Success => "success",
        NotifyOutcome::Failed => "failed",
    }
}

fn callbacks_seen<'a>(pairs: impl Iterator<Item = (&'a str, String)>) -> Vec<String> {
    let mut seen: Vec<String> = pairs.map(|(no, s)| format!("{no}={s}")).collect();
    seen.sort();
    seen
}

/// What the aggregate knows of a payment (the domain state, or the service's).
fn payment_record(p: &Payment) -> Record {
    Record::default()
        .with("id", p.id)
        .with("order_id", &p.order_id)
        .with("payment_no", &p.payment_no)
        .with("user_id", &p.user_id)
        .with("payment_method", p.method.name())
        .with("payment_url", &p.payment_url)
        .with("return_url", &p.return_url)
        .with("merchant", &p.merchant)
        .with("amount", dec(p.amount.amount()))
        .with("currency", p.currency().code())
        .with("status", p.status.name())
        .with("refunded_amount", dec(p.refunded_amount()))
        .with(
            "refundable_amount",
            dec(p.refundable_amount().max(Decimal::ZERO)),
        )
        .with("flagged_amount", dec(p.flagged_amount))
        .with("flagged_for_refund", p.flagged_for_refund)
        .with("flag_reason", &p.flag_reason)
        .with("failure_reason", &p.failure_reason)
        .with("payment_time", p.paid_at.map(time))
        .with("gateway_trade_no", &p.gateway_trade_no)
        .with("version", i64::from(p.version))
        .with(
            "refund ids in order",
            p.refunds.iter().map(|r| r.id).collect::<Vec<_>>(),
        )
        .with(
            "callbacks (callback_no=status)",
            callbacks_seen(
                p.callbacks
                    .iter()
                    .map(|(no, s)| (no.as_str(), s.name().into())),
            ),
        )
}

/// The fold adds what only readers need: times, positions, callbacks as received.
fn view_record(v: &PaymentView) -> Record {
    payment_record(&v.payment)
        .with("refund_time", v.refund_time.map(time))
        .with("created_at", time(v.created_at))
        .with("updated_at", time(v.updated_at))
        .with("view version", i64::from(v.version))
        .with("position", v.position)
        .with(
            "callback ids in order",
            v.callbacks.iter().map(|c| c.id).collect::<Vec<_>>(),
        )
        .with(
            "callbacks (callback_no=status)",
            callbacks_seen(
                v.callbacks
                    .iter()
                    .map(|c| (c.callback_no.as_str(), c.status.name().into())),
            ),
        )
}

/// Where the payment's events sit in the log.
fn log_record(events: &[StoredEvent], decoded: &[PaymentEvent]) -> Record {
    let (Some(first), Some(last)) = (events.first(), events.last()) else {
        return Record::default();
    };
    let callbacks: Vec<Uuid> = decoded
        .iter()
        .filter_map(|e| match e {
            PaymentEvent::CallbackReceived(c) => Some(c.callback_id),
            _ => None,
        })
        .collect();
    Record::default()
        .with("id", first.stream_id)
        .with("created_at", time(first.recorded_at))
        .with("updated_at", time(last.recorded_at))
        .with("version", i64::from(last.version))
        .with("view version", i64::from(last.version))
        .with("position", last.position)
        .with("callback ids in order", callbacks)
}

#[derive(Debug, sqlx::FromRow)]
struct PaymentsRow {
    id: Uuid,
    order_id: String,
    payment_no: String,
    payment_method: String,
    amount: Decimal,
    status: i32,
    payment_time: Option<DateTime<Utc>>,
    refund_time: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    currency: String,
    user_id: String,
    refunded_amount: Decimal,
    payment_url: String,
    return_url: Option<String>,
    merchant: Option<String>,
    gateway_trade_no: Option<String>,
    failure_reason: Option<String>,
    flagged_for_refund: bool,
    flag_reason: Option<String>,
    flagged_amount: Decimal,
    payer_name: Option<String>,
    last_version: i32,
    last_position: i64,
}

#[derive(Debug, sqlx::FromRow)]
struct RefundsRow {
    id: Uuid,
    payment_id: Uuid,
    refund_no: String,
    amount: Decimal,
    reason: Option<String>,
    status: i32,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    currency: String,
    failure_reason: Option<String>,
    last_position: i64,
    from_suspense: Decimal,
    late: bool,
}

#[derive(Debug, sqlx::FromRow)]
struct CallbacksRow {
    id: Uuid,
    payment_id: Uuid,
    callback_no: String,
    gateway: String,
    status: i32,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    outcome: String,
    amount: Decimal,
    gateway_trade_no: String,
    refund_no: Option<String>,
    reason: Option<String>,
    flagged_for_refund: bool,
    position: i64,
}

#[derive(Debug, sqlx::FromRow)]
struct EntriesRow {
    event_id: Uuid,
    line: i16,
    position: i64,
    account: String,
    currency: String,
    amount: Decimal,
    entry_type: String,
    recorded_at: DateTime<Utc>,
}

/// The payment's rows in the four read tables, read with SQL of this test's own.
struct Tables {
    payment: Option<PaymentsRow>,
    refunds: Vec<RefundsRow>,
    callbacks: Vec<CallbacksRow>,
    entries: Vec<EntriesRow>,
}

async fn tables(pool: &PgPool, id: Uuid) -> Result<Tables, sqlx::Error> {
    Ok(Tables {
        payment: sqlx::query_as(
            "SELECT id, order_id, payment_no, payment_method, amount, status, payment_time, \
             refund_time, created_at, updated_at, currency, user_id, refunded_amount, \
             payment_url, return_url, merchant, gateway_trade_no, failure_reason, \
             flagged_for_refund, flag_reason, flagged_amount, payer_name, last_version, \
             last_position FROM payments WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(pool)
        .await?,
        refunds: sqlx::query_as(
            "SELECT id, payment_id, refund_no, amount, reason, status, created_at, updated_at, \
             currency, failure_reason, last_position, from_suspense, late \
             FROM payment_refunds WHERE payment_id = $1 ORDER BY created_at, id",
        )
        .bind(id)
        .fetch_all(pool)
        .await?,
        callbacks: sqlx::query_as(
            "SELECT id, payment_id, callback_no, gateway, status, created_at, updated_at, \
             outcome, amount, gateway_trade_no, refund_no, reason, flagged_for_refund, \
             position FROM payment_callbacks WHERE payment_id = $1 ORDER BY position",
        )
        .bind(id)
        .fetch_all(pool)
        .await?,
        entries: sqlx::query_as(
            "SELECT event_id, line, position, account, currency, amount, entry_type, \
             recorded_at FROM ledger_entries WHERE payment_id = $1 ORDER BY position, line",
        )
        .bind(id)
        .fetch_all(pool)
        .await?,
    })
}

fn row_record(row: &PaymentsRow, t: &Tables) -> Record {
    Record::default()
        .with("id", row.id)
        .with("order_id", &row.order_id)
        .with("payment_no", &row.payment_no)
        .with("user_id", &row.user_id)
        .with("payment_method", row.payment_method.as_str())
        .with("payment_url", &row.payment_url)
        .with("return_url", &row.return_url)
        .with("merchant", &row.merchant)
        .with("amount", dec(row.amount))
        .with("currency", row.currency.as_str())
        .with("status", payment_status(row.status).as_str())
        .with("refunded_amount", dec(row.refunded_amount))
        .with("flagged_amount", dec(row.flagged_amount))
        .with("flagged_for_refund", row.flagged_for_refund)
        .with("flag_reason", &row.flag_reason)
        .with("failure_reason", &row.failure_reason)
        .with("payment_time", row.payment_time.map(time))
        .with("refund_time", row.refund_time.map(time))
        .with("gateway_trade_no", &row.gateway_trade_no)
        .with("created_at", time(row.created_at))
        .with("updated_at", time(row.updated_at))
        .with("version", i64::from(row.last_version))
        .with("view version", i64::from(row.last_version))
        .with("position", row.last_position)
        .with("payer name", &row.payer_name)
        .with(
            "refund ids in order",
            t.refunds.iter().map(|r| r.id).collect::<Vec<_>>(),
        )
        .with(
            "callback ids in order",
            t.callbacks.iter().map(|c| c.id).collect::<Vec<_>>(),
        )
        .with(
            "callbacks (callback_no=status)",
            callbacks_seen(
                t.callbacks
                    .iter()
                    .map(|c| (c.callback_no.as_str(), callback_status(c.status))),
            ),
        )
}

fn detail_record(d: &read::PaymentDetail, c: Currency) -> Record {
    Record::default()
        .with("id", d.id)
        .with("order_id", &d.order_no)
        .with("payment_no", &d.payment_no)
        .with("user_id", &d.user_id)
        .with("payment_method", d.payment_method.as_str())
        .with("payment_url", &d.payment_url)
        .with("return_url", &d.return_url)
        .with("merchant", &d.merchant)
        .with("amount", shown(&d.amount, c))
        .with("currency", d.currency.as_str())
        .with("status", d.status.as_str())
        .with("refunded_amount", shown(&d.refunded_amount, c))
        .with("refundable_amount", shown(&d.refundable_amount, c))
        .with("flagged_amount", shown(&d.flagged_amount, c))
        .with("flagged_for_refund", d.flagged_for_refund)
        .with("flag_reason", &d.flag_reason)
        .with("failure_reason", &d.failure_reason)
        .with("payment_time", &d.payment_time)
        .with("refund_time", &d.refund_time)
        .with("created_at", d.created_at.as_str())
        .with("updated_at", d.updated_at.as_str())
        .with("position", d.last_position)
        .with("payer name", d.payer.as_ref().and_then(|p| p.name.clone()))
        .with(
            "refund ids in order",
            d.refunds.iter().map(|r| r.id).collect::<Vec<_>>(),
        )
        .with(
            "callback ids in order",
            d.callbacks.iter().map(|c| c.id).collect::<Vec<_>>(),
        )
        .with(
            "callbacks (callback_no=status)",
            callbacks_seen(
                d.callbacks
                    .iter()
                    .map(|c| (c.callback_no.as_str(), c.status.clone())),
            ),
        )
}

fn list_record(item: &read::ListItem, c: Currency) -> Record {
    Record::default()
        .with("id", item.id)
        .with("order_id", &item.order_no)
        .with("payment_no", &item.payment_no)
        .with("user_id", &item.user_id)
        .with("payment_method", item.payment_method.as_str())
        .with("amount", shown(&item.amount, c))
        .with("currency", item.currency.as_str())
        .with("status", item.status.as_str())
        .with("refunded_amount", shown(&item.refunded_amount, c))
        .with("flagged_for_refund", item.flagged_for_refund)
        .with("payment_time", &item.payment_time)
        .with("created_at", item.created_at.as_str())
}

fn refund_record(r: &Refund, payment: Uuid, c: Currency) -> Record {
    Record::default()
        .with("payment_id", payment)
        .with("refund_no", &r.refund_no)
        .with("amount", dec(r.amount))
        .with("currency", c.code())
        .with("reason", Some(&r.reason))
        .with("status", r.status.name())
        .with("from_suspense", dec(r.from_suspense))
        .with("failure_reason", &r.failure_reason)
        .with("late", r.late)
}

fn callback_event_record(c: &ledger::domain::events::CallbackReceived, at: &StoredEvent) -> Record {
    Record::default()
        .with("callback_no", &c.callback_no)
        .with("gateway", c.gateway.name())
        .with("status", c.status.name())
        .with("outcome", outcome_name(c.outcome))
        .with("amount", dec(c.amount))
        .with("gateway_trade_no", &c.gateway_trade_no)
        .with("refund_no", &c.refund_no)
        .with("reason", &c.reason)
        .with("flagged_for_refund", c.flagged_for_refund)
        .with("payment_id", at.stream_id)
        .with("created_at", time(at.recorded_at))
        .with("updated_at", time(at.recorded_at))
        .with("position", at.position)
}

/// One ledger line: what `postings` decides for an event, or a `ledger_entries` row.
fn line_record(
    event_id: Uuid,
    account: &str,
    amount: Decimal,
    currency: &str,
    entry_type: &str,
    recorded_at: DateTime<Utc>,
) -> Record {
    Record::default()
        .with("event_id", event_id)
        .with("account", account)
        .with("amount", dec(amount))
        .with("currency", currency)
        .with("entry_type", entry_type)
        .with("recorded_at", time(recorded_at))
}

/// Each account's balance for one payment as its final state implies it (debits positive):
/// clearing holds what the gateway holds minus what it paid back; payable is the refunds in
/// flight; suspense is the flagged money not yet promised back; revenue is the rest.
fn balances_from_state(p: &Payment) -> BTreeMap<&'static str, Decimal> {
    let paid = match p.status {
        PaymentStatus::Success | PaymentStatus::Refunded => p.amount.amount(),
        PaymentStatus::Pending | PaymentStatus::Failed => Decimal::ZERO,
    };
    let kept_back: Decimal = p
        .refunds
        .iter()
        .filter(|r| r.is_committed())
        .map(|r| r.amount - r.from_suspense)
        .sum();
    let in_flight: Decimal = p
        .refunds
        .iter()
        .filter(|r| r.status == RefundStatus::Processing)
        .map(|r| r.amount)
        .sum();
    BTreeMap::from([
        (GATEWAY_CLEARING, p.held_amount() - p.refunded_amount()),
        (MERCHANT_REVENUE, kept_back - paid),
        (REFUNDS_PAYABLE, -in_flight),
        (SUSPENSE, -p.suspense_remaining()),
    ])
}

fn balance_record(balances: &BTreeMap<&'static str, Decimal>) -> Record {
    let mut r = Record::default();
    for account in ACCOUNTS {
        let value = balances.get(account).copied().unwrap_or_default();
        r = r.with(account, dec(value));
    }
    r
}

// ---------------------------------------------------------------------------------------
// comparing
// ---------------------------------------------------------------------------------------

/// The disagreements found for one payment.
struct Findings {
    payment: Uuid,
    found: Vec<String>,
}

impl Findings {
    fn note(&mut self, what: impl std::fmt::Display) {
        self.found.push(format!("payment {}: {what}", self.payment));
    }

    /// Every field that two or more of `sources` have must be equal in all of them. A field
    /// only one source has is a mistake in this test (a misspelt name would compare nothing).
    fn compare(&mut self, what: &str, sources: &[(&str, Option<&Record>)]) {
        let missing: Vec<&str> = sources
            .iter()
            .filter(|(_, r)| r.is_none())
            .map(|(s, _)| *s)
            .collect();
        if !missing.is_empty() {
            let present: Vec<&str> = sources
                .iter()
                .filter(|(_, r)| r.is_some())
                .map(|(s, _)| *s)
                .collect();
            self.note(format!(
                "{what} is missing from {missing:?} (present in {present:?})"
            ));
        }
        let fields: BTreeSet<&'static str> = sources
            .iter()
            .filter_map(|(_, r)| *r)
            .flat_map(|r| r.0.keys().copied())
            .collect();
        for field in fields {
            let values: Vec<(&str, &String)> = sources
                .iter()
                .filter_map(|(s, r)| r.and_then(|r| r.0.get(field)).map(|v| (*s, v)))
                .collect();
            if values.len() < 2 && missing.is_empty() {
                self.note(format!(
                    "{what}.{field} is only in {:?}: the test compares nothing",
                    values[0].0
                ));
            } else if values.windows(2).any(|w| w[0].1 != w[1].1) {
                let shown: Vec<String> = values.iter().map(|(s, v)| format!("{s} = {v}")).collect();
                self.note(format!("{what}.{field} disagrees: {}", shown.join(", ")));
            }
        }
    }
}

/// Compares every source of one payment; returns what disagrees.
async fn check_payment(app: &TestApp, id: Uuid, order_id: &str) -> Result<Vec<String>, String> {
    let pool = &app.state.pool;
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("payment {id}: {what}: {e}");
    let events = store::read_stream(pool, id)
        .await
        .map_err(|e| fail("read the log", &e))?;
    let decoded = store::decode_all(&events).map_err(|e| fail("decode the log", &e))?;
    let Some(domain) = fold(decoded.iter()) else {
        return Err(format!("payment {id}: the log holds no created event"));
    };
    let view = view::fold(decoded.iter().zip(&events).map(|(event, e)| {
        (
            event,
            At {
                recorded_at: e.recorded_at,
                version: e.version,
                position: e.position,
            },
        )
    }))
    .ok_or_else(|| format!("payment {id}: the view fold is empty"))?;
    let service = app
        .state
        .commands
        .load(id)
        .await
        .map_err(|e| fail("load the service's state", &e))?;
    let t = tables(pool, id)
        .await
        .map_err(|e| fail("read the tables", &e))?;
    let detail = read::detail(pool, id)
        .await
        .map_err(|e| fail("read the detail", &e))?;
    let list = read::list(
        pool,
        &ListFilter {
            order_no: Some(order_id.to_owned()),
            page: 1,
            size: 10,
            ..ListFilter::default()
        },
    )
    .await
    .map_err(|e| fail("read the list", &e))?;

    let c = domain.currency();
    let mut f = Findings {
        payment: id,
        found: Vec::new(),
    };
    if list.total != 1 || list.list.len() != 1 {
        f.note(format!(
            "the list of its order shows {} of {} payments, not 1",
            list.list.len(),
            list.total
        ));
    }

    // The payment.
    let row = t.payment.as_ref().map(|r| row_record(r, &t));
    f.compare(
        "payment",
        &[
            ("domain", Some(&payment_record(&domain))),
            ("service", service.as_deref().map(payment_record).as_ref()),
            ("fold", Some(&view_record(&view))),
            ("log", Some(&log_record(&events, &decoded))),
            ("row", row.as_ref()),
            (
                "detail",
                detail.as_ref().map(|d| detail_record(d, c)).as_ref(),
            ),
            (
                "list",
                list.list.first().map(|i| list_record(i, c)).as_ref(),
            ),
        ],
    );

    // Each refund, by id.
    let mut refund_ids: Vec<Uuid> = domain.refunds.iter().map(|r| r.id).collect();
    for id in t
        .refunds
        .iter()
        .map(|r| r.id)
        .chain(detail.iter().flat_map(|d| d.refunds.iter().map(|r| r.id)))
    {
        if !refund_ids.contains(&id) {
            refund_ids.push(id);
        }
    }
    for refund_id in refund_ids {
        let domain_r = domain
            .refund(refund_id)
            .map(|r| refund_record(r, domain.id, c));
        let fold_r = view.payment.refund(refund_id).map(|r| {
            let times = view.refund_times(refund_id);
            refund_record(r, view.id(), c)
                .with("created_at", times.map(|t| time(t.created_at)))
                .with("updated_at", times.map(|t| time(t.updated_at)))
                .with("position", times.map(|t| t.position))
        });
        let row_r = t.refunds.iter().find(|r| r.id == refund_id).map(|r| {
            Record::default()
                .with("payment_id", r.payment_id)
                .with("refund_no", &r.refund_no)
                .with("amount", dec(r.amount))
                .with("currency", r.currency.as_str())
                .with("reason", &r.reason)
                .with("status", refund_status(r.status).as_str())
                .with("from_suspense", dec(r.from_suspense))
                .with("failure_reason", &r.failure_reason)
                .with("late", r.late)
                .with("created_at", Some(time(r.created_at)))
                .with("updated_at", Some(time(r.updated_at)))
                .with("position", Some(r.last_position))
        });
        let detail_r = detail
            .as_ref()
            .and_then(|d| d.refunds.iter().find(|r| r.id == refund_id))
            .map(|r| {
                Record::default()
                    .with("refund_no", &r.refund_no)
                    .with("amount", shown(&r.amount, c))
                    .with("reason", Some(&r.reason))
                    .with("status", r.status.as_str())
                    .with("from_suspense", shown(&r.from_suspense, c))
                    .with("failure_reason", &r.failure_reason)
                    .with("late", r.flagged)
                    .with("created_at", Some(&r.created_at))
                    .with("updated_at", Some(&r.updated_at))
            });
        f.compare(
            &format!("refund {refund_id}"),
            &[
                ("domain", domain_r.as_ref()),
                ("fold", fold_r.as_ref()),
                ("row", row_r.as_ref()),
                ("detail", detail_r.as_ref()),
            ],
        );
    }

    // Each callback, by id: the event itself, the fold, the row, the detail.
    let mut callback_ids: Vec<Uuid> = Vec::new();
    let mut from_log: BTreeMap<Uuid, Record> = BTreeMap::new();
    for (event, stored) in decoded.iter().zip(&events) {
        if let PaymentEvent::CallbackReceived(cb) = event {
            callback_ids.push(cb.callback_id);
            from_log.insert(cb.callback_id, callback_event_record(cb, stored));
        }
    }
    for id in t
        .callbacks
        .iter()
        .map(|c| c.id)
        .chain(detail.iter().flat_map(|d| d.callbacks.iter().map(|c| c.id)))
    {
        if !callback_ids.contains(&id) {
            callback_ids.push(id);
        }
    }
    for callback_id in callback_ids {
        let fold_c = view
            .callbacks
            .iter()
            .find(|c| c.id == callback_id)
            .map(|c| {
                Record::default()
                    .with("callback_no", &c.callback_no)
                    .with("gateway", c.gateway.name())
                    .with("status", c.status.name())
                    .with("outcome", outcome_name(c.outcome))
                    .with("amount", dec(c.amount))
                    .with("gateway_trade_no", &c.gateway_trade_no)
                    .with("refund_no", &c.refund_no)
                    .with("reason", &c.reason)
                    .with("flagged_for_refund", c.flagged_for_refund)
                    .with("created_at", time(c.created_at))
                    .with("position", c.position)
            });
        let row_c = t.callbacks.iter().find(|c| c.id == callback_id).map(|c| {
            Record::default()
                .with("payment_id", c.payment_id)
                .with("callback_no", &c.callback_no)
                .with("gateway", c.gateway.as_str())
                .with("status", callback_status(c.status).as_str())
                .with("outcome", c.outcome.as_str())
                .with("amount", dec(c.amount))
                .with("gateway_trade_no", &c.gateway_trade_no)
                .with("refund_no", &c.refund_no)
                .with("reason", &c.reason)
                .with("flagged_for_refund", c.flagged_for_refund)
                .with("created_at", time(c.created_at))
                .with("updated_at", time(c.updated_at))
                .with("position", c.position)
        });
        let detail_c = detail
            .as_ref()
            .and_then(|d| d.callbacks.iter().find(|c| c.id == callback_id))
            .map(|cb| {
                Record::default()
                    .with("callback_no", &cb.callback_no)
                    .with("gateway", cb.gateway.as_str())
                    .with("status", cb.status.as_str())
                    .with("outcome", cb.outcome.as_str())
                    .with("amount", shown(&cb.amount, c))
                    .with("gateway_trade_no", &cb.gateway_trade_no)
                    .with("refund_no", &cb.refund_no)
                    .with("reason", &cb.reason)
                    .with("flagged_for_refund", cb.flagged_for_refund)
                    .with("created_at", cb.created_at.as_str())
            });
        f.compare(
            &format!("callback {callback_id}"),
            &[
                ("log", from_log.get(&callback_id)),
                ("fold", fold_c.as_ref()),
                ("row", row_c.as_ref()),
                ("detail", detail_c.as_ref()),
            ],
        );
    }

    // The ledger: each line `postings` decides (on the state before its event) is a row,
    // and each account's balance is what the final state implies.
    let mut expected: BTreeMap<(i64, i16), Record> = BTreeMap::new();
    let mut by_postings: BTreeMap<&'static str, Decimal> = BTreeMap::new();
    let mut before = None;
    for (event, stored) in decoded.iter().zip(&events) {
        for (line, (account, amount)) in postings(before.as_ref(), event).into_iter().enumerate() {
            *by_postings.entry(account).or_default() += amount;
            let line = i16::try_from(line).expect("an event posts a handful of lines");
            expected.insert(
                (stored.position, line),
                line_record(
                    stored.event_id,
                    account,
                    amount,
                    c.code(),
                    event.event_type(),
                    stored.recorded_at,
                ),
            );
        }
        before = evolve(before, event);
    }
    let mut by_rows: BTreeMap<&'static str, Decimal> = BTreeMap::new();
    let mut rows: BTreeMap<(i64, i16), Record> = BTreeMap::new();
    for e in &t.entries {
        match ACCOUNTS.iter().find(|a| **a == e.account) {
            Some(account) => *by_rows.entry(account).or_default() += e.amount,
            None => f.note(format!(
                "ledger_entries holds unknown account {:?}",
                e.account
            )),
        }
        rows.insert(
            (e.position, e.line),
            line_record(
                e.event_id,
                &e.account,
                e.amount,
                &e.currency,
                &e.entry_type,
                e.recorded_at,
            ),
        );
    }
    let keys: BTreeSet<(i64, i16)> = expected.keys().chain(rows.keys()).copied().collect();
    for key in keys {
        f.compare(
            &format!("ledger line {}/{}", key.0, key.1),
            &[("postings", expected.get(&key)), ("rows", rows.get(&key))],
        );
    }
    f.compare(
        "ledger balance",
        &[
            (
                "domain",
                Some(&balance_record(&balances_from_state(&domain))),
            ),
            ("postings", Some(&balance_record(&by_postings))),
            ("rows", Some(&balance_record(&by_rows))),
        ],
    );
    let net: Decimal = by_rows.values().sum();
    if !net.is_zero() {
        f.note(format!("its ledger rows sum to {net}, not zero"));
    }
    Ok(f.found)
}

/// One case: drive every payment at once, wait for the projections, compare, and check that
/// a rebuild from the log finds the live tables as they are.
async fn case(app: &TestApp, plans: Vec<Plan>) -> Result<(), TestCaseError> {
    let tag = Uuid::now_v7().simple().to_string();
    let driven: Vec<Driven> = join_all(plans.iter().map(|plan| drive(app, plan, &tag)))
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    app.settle().await;
    let mut found = Vec::new();
    for d in &driven {
        let disagreements = check_payment(app, d.names.id, &d.names.order_id)
            .await
            .map_err(TestCaseError::fail)?;
        if !disagreements.is_empty() {
            found.extend(disagreements);
            found.push(format!("  what payment {} went through:", d.names.id));
            found.extend(d.said.iter().map(|s| format!("    {s}")));
        }
    }
    let ctx = ProjectionContext {
        master_key: app.state.settings.master_key.clone(),
    };
    let report = replay(&app.state.pool, &ctx, true, false)
        .await
        .map_err(|e| TestCaseError::fail(format!("replay --check: {e}")))?;
    if report.has_drift() {
        found.push(format!(
            "a rebuild from the log differs from the live tables: {:?}",
            report.drift
        ));
    }
    if found.is_empty() {
        Ok(())
    } else {
        Err(TestCaseError::fail(found.join("\n")))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn projected_rows_the_view_fold_and_the_domain_state_agree_for_generated_histories() {
    // Every refund stays pending at the sandbox, so the refund driver appends nothing and
    // each refund's outcome is the history's.
    let app = TestApp::spawn_with(Options {
        nats_url: None,
        faults: Faults {
            pending_refunds: AtomicU32::new(u32::MAX),
            ..Faults::default()
        },
        ..Options::default()
    })
    .await;
    let defaults = Config::default();
    let config = Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(CASES),
        rng_seed: match defaults.rng_seed {
            RngSeed::Random => RngSeed::Fixed(SEED),
            chosen => chosen,
        },
        failure_persistence: None,
        max_shrink_iters: 64,
        ..defaults
    };
    let handle = tokio::runtime::Handle::current();
    let result = tokio::task::block_in_place(|| {
        TestRunner::new(config).run(&history(), |plans| handle.block_on(case(&app, plans)))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    app.stop().await;
}
