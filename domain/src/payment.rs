//! The payment aggregate: its state, the commands it accepts, `decide` and `evolve`.
//!
//! `decide(&state, &command)` is the only place business rules live; `evolve` only records
//! what an event says and never refuses it, because the log is the truth and must always fold.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::events::{
    status_enum, CallbackReceived, CallbackStatus, Created, Failed, NotifyOutcome, Paid,
    PaymentEvent, RefundFailed, RefundRequested, RefundStatus, Refunded,
};
use super::money::check_amount;
use super::{Currency, DomainError, Money};
use crate::payer::SealedPayer;

status_enum!(PaymentStatus {
    Pending = 0 => "pending",
    Success = 1 => "success",
    Failed = 2 => "failed",
    Refunded = 3 => "refunded",
});

/// How the payer pays; each method is served by its own gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentMethod {
    Alipay,
    Wechat,
    Bank,
    CreditCard,
}

impl PaymentMethod {
    pub const ALL: [PaymentMethod; 4] = [
        PaymentMethod::Alipay,
        PaymentMethod::Wechat,
        PaymentMethod::Bank,
        PaymentMethod::CreditCard,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PaymentMethod::Alipay => "alipay",
            PaymentMethod::Wechat => "wechat",
            PaymentMethod::Bank => "bank",
            PaymentMethod::CreditCard => "credit_card",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == text)
    }
}

impl std::fmt::Display for PaymentMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Longest order and user ids accepted (SPEC §11).
pub const ID_TEXT_CHARS_MAX: usize = 64;
/// Longest refund reason accepted (the seed column is varchar(255)).
pub const REASON_CHARS_MAX: usize = 255;
/// Longest gateway-chosen text (callback_no, trade no) accepted; the seed column is 100.
pub const GATEWAY_TEXT_CHARS_MAX: usize = 100;

/// Checks a user-supplied text: 1..=max characters, none of them control characters.
pub fn check_text(field: &str, value: &str, max_chars: usize) -> Result<(), DomainError> {
    let chars = value.chars().count();
    if chars == 0 || chars > max_chars {
        return Err(DomainError::Invalid(format!(
            "{field} must be 1 to {max_chars} characters"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(DomainError::Invalid(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq)]
pub struct Refund {
    pub id: Uuid,
    pub refund_no: String,
    pub amount: Decimal,
    pub reason: String,
    pub status: RefundStatus,
    /// The part of `amount` that returns flagged money (see `RefundRequested`).
    pub from_suspense: Decimal,
    /// Why the gateway refused it, once failed.
    pub failure_reason: Option<String>,
    /// Confirmed by the gateway after the ledger had recorded it as failed.
    pub late: bool,
}

/// A payment as its events describe it.
#[derive(Debug, Clone, PartialEq)]
pub struct Payment {
    pub id: Uuid,
    /// Number of events folded so far; the expected version of the next append.
    pub version: u32,
    pub payment_no: String,
    pub order_id: String,
    pub user_id: String,
    pub amount: Money,
    pub method: PaymentMethod,
    pub payment_url: String,
    pub return_url: Option<String>,
    /// The merchant that created it, when its key was bound to one.
    pub merchant: Option<String>,
    pub status: PaymentStatus,
    pub paid_at: Option<DateTime<Utc>>,
    pub gateway_trade_no: Option<String>,
    pub failure_reason: Option<String>,
    /// Something about this payment's money needs a person: money the gateway took that the
    /// ledger did not accept, or a refund confirmed after it was recorded as failed.
    pub flagged_for_refund: bool,
    /// Why it is flagged (the first reason).
    pub flag_reason: Option<String>,
    /// Money the gateway reported taking that the ledger did not accept as the payment (held
    /// in `suspense` until refunded).
    pub flagged_amount: Decimal,
    pub callbacks: BTreeMap<String, CallbackStatus>,
    pub refunds: Vec<Refund>,
}

/// When the refunds that succeeded cover `held`, the money the gateway holds for the payment,
/// the payment is refunded. The one place this rule is written.
pub fn fully_refunded(refunded: Decimal, held: Decimal) -> bool {
    refunded >= held
}

impl Payment {
    pub fn currency(&self) -> Currency {
        self.amount.currency()
    }

    /// Money the gateway holds for this payment: the amount once paid, plus flagged money.
    pub fn held_amount(&self) -> Decimal {
        let paid = match self.status {
            PaymentStatus::Success | PaymentStatus::Refunded => self.amount.amount(),
            PaymentStatus::Pending | PaymentStatus::Failed => Decimal::ZERO,
        };
        paid + self.flagged_amount
    }

    /// Sum of refunds the gateway confirmed.
    pub fn refunded_amount(&self) -> Decimal {
        self.refund_sum(|r| r.status == RefundStatus::Success, |r| r.amount)
    }

    /// Money held minus refunds that succeeded or are still in flight.
    pub fn refundable_amount(&self) -> Decimal {
        self.held_amount() - self.refund_sum(Refund::is_committed, |r| r.amount)
    }

    /// Flagged money not yet promised back by a refund.
    pub fn suspense_remaining(&self) -> Decimal {
        self.flagged_amount - self.refund_sum(Refund::is_committed, |r| r.from_suspense)
    }

    fn refund_sum(
        &self,
        include: impl Fn(&Refund) -> bool,
        part: impl Fn(&Refund) -> Decimal,
    ) -> Decimal {
        self.refunds.iter().filter(|r| include(r)).map(part).sum()
    }

    pub fn refund(&self, refund_id: Uuid) -> Option<&Refund> {
        self.refunds.iter().find(|r| r.id == refund_id)
    }

    pub fn refund_by_no(&self, refund_no: &str) -> Option<&Refund> {
        self.refunds.iter().find(|r| r.refund_no == refund_no)
    }

    /// What a previously seen callback_no did, for answering a duplicate.
    pub fn callback_status(&self, callback_no: &str) -> Option<CallbackStatus> {
        self.callbacks.get(callback_no).copied()
    }

    /// Pending and success payments hold their order: no second live payment may exist.
    pub fn is_live(&self) -> bool {
        matches!(self.status, PaymentStatus::Pending | PaymentStatus::Success)
    }

    fn flag(&mut self, reason: &str) {
        self.flagged_for_refund = true;
        if self.flag_reason.is_none() {
            self.flag_reason = Some(reason.to_owned());
        }
    }
}

impl Refund {
    /// Succeeded or still in flight: its money is promised.
    pub fn is_committed(&self) -> bool {
        matches!(
            self.status,
            RefundStatus::Success | RefundStatus::Processing
        )
    }
}

/// A gateway notification, already authenticated, with the time it was received.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub callback_id: Uuid,
    pub callback_no: String,
    pub gateway: PaymentMethod,
    pub outcome: NotifyOutcome,
    pub amount: Decimal,
    pub gateway_trade_no: String,
    pub refund_no: Option<String>,
    pub paid_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Create {
        payment_id: Uuid,
        payment_no: String,
        order_id: String,
        user_id: String,
        amount: Money,
        method: PaymentMethod,
        payment_url: String,
        return_url: Option<String>,
        merchant: Option<String>,
        payer: Option<SealedPayer>,
    },
    Notify(Notification),
    RequestRefund {
        refund_id: Uuid,
        refund_no: String,
        amount: Decimal,
        reason: String,
    },
    /// The gateway confirmed the refund through its refund call.
    ConfirmRefund {
        refund_id: Uuid,
    },
    /// The gateway refused the refund, or it stayed unknown after retries and a query.
    FailRefund {
        refund_id: Uuid,
        reason: String,
    },
    /// The gateway could not take the payment (create failed after retries).
    FailPayment {
        reason: String,
    },
}

/// The state of one stream before its first event is `None`.
pub type State = Option<Payment>;

/// Decides which events a command produces against the current state. An empty vector means
/// "already done, nothing changes" (a duplicate notification, a refund already confirmed).
pub fn decide(state: &State, command: &Command) -> Result<Vec<PaymentEvent>, DomainError> {
    match (state, command) {
        (None, Command::Create { .. }) => decide_create(command),
        (Some(_), Command::Create { .. }) => {
            Err(DomainError::NotAllowed("payment already exists".into()))
        }
        (None, _) => Err(DomainError::NotFound),
        (Some(p), Command::Notify(n)) => decide_notify(p, n),
        (
            Some(p),
            Command::RequestRefund {
                refund_id,
                refund_no,
                amount,
                reason,
            },
        ) => decide_refund(p, *refund_id, refund_no, *amount, reason),
        (Some(p), Command::ConfirmRefund { refund_id }) => {
            let refund = p.refund(*refund_id).ok_or(DomainError::NotFound)?;
            match refund.status {
                RefundStatus::Processing => Ok(vec![refunded(refund, false)]),
                RefundStatus::Success => Ok(vec![]),
                // The gateway says the money went out after all: record it, flagged, so that
                // the amount can never be refunded a second time.
                RefundStatus::Failed => Ok(vec![refunded(refund, true)]),
            }
        }
        (Some(p), Command::FailRefund { refund_id, reason }) => {
            let refund = p.refund(*refund_id).ok_or(DomainError::NotFound)?;
            match refund.status {
                RefundStatus::Processing => Ok(vec![PaymentEvent::RefundFailed(RefundFailed {
                    refund_id: refund.id,
                    refund_no: refund.refund_no.clone(),
                    amount: refund.amount,
                    reason: reason.clone(),
                })]),
                RefundStatus::Failed => Ok(vec![]),
                RefundStatus::Success => Err(DomainError::NotAllowed(
                    "refund already succeeded and cannot fail".into(),
                )),
            }
        }
        (Some(p), Command::FailPayment { reason }) => match p.status {
            PaymentStatus::Pending => Ok(vec![PaymentEvent::Failed(Failed {
                reason: reason.clone(),
            })]),
            PaymentStatus::Failed => Ok(vec![]),
            _ => Err(DomainError::NotAllowed(format!(
                "a {} payment cannot fail",
                p.status.name()
            ))),
        },
    }
}

fn decide_create(command: &Command) -> Result<Vec<PaymentEvent>, DomainError> {
    let Command::Create {
        payment_id,
        payment_no,
        order_id,
        user_id,
        amount,
        method,
        payment_url,
        return_url,
        merchant,
        payer,
    } = command
    else {
        unreachable!("decide_create is only called with Create");
    };
    check_text("order_id", order_id, ID_TEXT_CHARS_MAX)?;
    check_text("user_id", user_id, ID_TEXT_CHARS_MAX)?;
    if let Some(url) = return_url {
        check_return_url(url)?;
    }
    Ok(vec![PaymentEvent::Created(Created {
        payment_id: *payment_id,
        payment_no: payment_no.clone(),
        order_id: order_id.clone(),
        user_id: user_id.clone(),
        amount: amount.amount(),
        currency: amount.currency(),
        payment_method: *method,
        payment_url: payment_url.clone(),
        return_url: return_url.clone(),
        merchant: merchant.clone(),
        payer: payer.clone(),
    })])
}

/// Longest `return_url` accepted.
pub const RETURN_URL_CHARS_MAX: usize = 2048;

/// A merchant's page to send the member back to: an absolute http(s) URL of visible ASCII.
pub fn check_return_url(url: &str) -> Result<(), DomainError> {
    let ok = (url.starts_with("https://") || url.starts_with("http://"))
        && url.len() <= RETURN_URL_CHARS_MAX
        && url.len() > "https://".len()
        && url.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(DomainError::Invalid(format!(
            "return_url must be an absolute http(s) URL of at most {RETURN_URL_CHARS_MAX} visible ASCII characters"
        )))
    }
}

fn refunded(refund: &Refund, late: bool) -> PaymentEvent {
    PaymentEvent::Refunded(Refunded {
        refund_id: refund.id,
        refund_no: refund.refund_no.clone(),
        amount: refund.amount,
        late,
    })
}

fn decide_notify(p: &Payment, n: &Notification) -> Result<Vec<PaymentEvent>, DomainError> {
    if n.gateway != p.method {
        return Err(DomainError::WrongGateway {
            expected: p.method.name().into(),
            got: n.gateway.name().into(),
        });
    }
    check_text("callback_no", &n.callback_no, GATEWAY_TEXT_CHARS_MAX)?;
    check_text(
        "gateway_trade_no",
        &n.gateway_trade_no,
        GATEWAY_TEXT_CHARS_MAX,
    )?;
    if p.callbacks.contains_key(&n.callback_no) {
        return Ok(vec![]);
    }
    // A well-formed amount in the payment's currency; a different but valid one is recorded
    // as a failed callback below, never dropped.
    check_amount(n.amount, p.currency())?;
    let callback = |status: CallbackStatus, reason: Option<&str>, flagged: bool| {
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
            flagged_for_refund: flagged,
        })
    };
    let refused = |reason: &str| callback(CallbackStatus::Failed, Some(reason), false);
    // Money the gateway took that the ledger does not accept as the payment: recorded,
    // flagged and held in suspense, so that an operator can send it back.
    let flagged = |reason: &str| callback(CallbackStatus::Failed, Some(reason), true);
    let applied = callback(CallbackStatus::Success, None, false);
    if let Some(refund_no) = &n.refund_no {
        let refund = p.refund_by_no(refund_no).ok_or(DomainError::NotFound)?;
        if n.amount != refund.amount {
            return Ok(vec![refused("amount_mismatch")]);
        }
        return Ok(match (refund.status, n.outcome) {
            (RefundStatus::Processing, NotifyOutcome::Success) => {
                vec![applied, refunded(refund, false)]
            }
            (RefundStatus::Processing, NotifyOutcome::Failed) => vec![
                applied,
                PaymentEvent::RefundFailed(RefundFailed {
                    refund_id: refund.id,
                    refund_no: refund.refund_no.clone(),
                    amount: refund.amount,
                    reason: "gateway_reported_failure".into(),
                }),
            ],
            (RefundStatus::Success, NotifyOutcome::Success)
            | (RefundStatus::Failed, NotifyOutcome::Failed) => vec![applied],
            // The money went out after the ledger had recorded the refund as failed (and made
            // its amount refundable again): confirm it, flagged.
            (RefundStatus::Failed, NotifyOutcome::Success) => {
                vec![applied, refunded(refund, true)]
            }
            (RefundStatus::Success, NotifyOutcome::Failed) => {
                vec![refused("contradicts_settled_refund")]
            }
        });
    }
    let same_amount = n.amount == p.amount.amount();
    Ok(match (p.status, n.outcome) {
        (PaymentStatus::Pending, NotifyOutcome::Success) if same_amount => vec![
            applied,
            PaymentEvent::Paid(Paid {
                paid_at: n.paid_at,
                gateway_trade_no: n.gateway_trade_no.clone(),
                callback_no: n.callback_no.clone(),
            }),
        ],
        (PaymentStatus::Pending, NotifyOutcome::Success) => vec![refused("amount_mismatch")],
        (PaymentStatus::Pending, NotifyOutcome::Failed) => vec![
            applied,
            PaymentEvent::Failed(Failed {
                reason: "gateway_reported_failure".into(),
            }),
        ],
        (PaymentStatus::Failed, NotifyOutcome::Success) if same_amount => {
            vec![flagged("success_after_failure")]
        }
        (PaymentStatus::Failed, NotifyOutcome::Success) => vec![flagged("amount_mismatch")],
        (PaymentStatus::Failed, NotifyOutcome::Failed) => vec![applied],
        (PaymentStatus::Success | PaymentStatus::Refunded, NotifyOutcome::Success) => {
            if p.gateway_trade_no.as_deref() != Some(n.gateway_trade_no.as_str()) {
                // Another trade: the member was charged twice.
                vec![flagged("duplicate_charge")]
            } else if same_amount {
                vec![applied]
            } else {
                vec![refused("amount_mismatch")]
            }
        }
        (PaymentStatus::Success | PaymentStatus::Refunded, NotifyOutcome::Failed) => {
            vec![refused("contradicts_settled_payment")]
        }
    })
}

fn decide_refund(
    p: &Payment,
    refund_id: Uuid,
    refund_no: &str,
    amount: Decimal,
    reason: &str,
) -> Result<Vec<PaymentEvent>, DomainError> {
    check_text("reason", reason, REASON_CHARS_MAX)?;
    let amount = check_amount(amount, p.currency())?;
    let refundable = p.refundable_amount();
    match p.status {
        // A paid payment, or flagged money the gateway holds for any payment.
        PaymentStatus::Success => {}
        _ if refundable > Decimal::ZERO => {}
        PaymentStatus::Refunded => {
            return Err(DomainError::NotAllowed(
                "payment is already fully refunded".into(),
            ))
        }
        other => {
            return Err(DomainError::NotAllowed(format!(
                "only a successful payment can be refunded; this one is {}",
                other.name()
            )))
        }
    }
    if p.refunds
        .iter()
        .any(|r| r.id == refund_id || r.refund_no == refund_no)
    {
        return Err(DomainError::Invalid(format!(
            "refund {refund_no:?} already exists on this payment"
        )));
    }
    if amount > refundable {
        return Err(DomainError::RefundExceedsRefundable {
            requested: amount,
            refundable,
        });
    }
    Ok(vec![PaymentEvent::RefundRequested(RefundRequested {
        refund_id,
        refund_no: refund_no.to_owned(),
        amount,
        reason: reason.to_owned(),
        // Flagged money goes back first: it was never the merchant's.
        from_suspense: amount.min(p.suspense_remaining().max(Decimal::ZERO)),
    })])
}

/// Applies one event. Never refuses: an event in the log happened.
pub fn evolve(state: State, event: &PaymentEvent) -> State {
    let mut p = match (state, event) {
        (None, PaymentEvent::Created(c)) => {
            return Some(Payment {
                id: c.payment_id,
                version: 1,
                payment_no: c.payment_no.clone(),
                order_id: c.order_id.clone(),
                user_id: c.user_id.clone(),
                amount: Money::new(c.amount, c.currency)
                    .expect("a created event holds an amount validated by decide"),
                method: c.payment_method,
                payment_url: c.payment_url.clone(),
                return_url: c.return_url.clone(),
                merchant: c.merchant.clone(),
                status: PaymentStatus::Pending,
                paid_at: None,
                gateway_trade_no: None,
                failure_reason: None,
                flagged_for_refund: false,
                flag_reason: None,
                flagged_amount: Decimal::ZERO,
                callbacks: BTreeMap::new(),
                refunds: Vec::new(),
            })
        }
        (Some(p), _) => p,
        (None, _) => {
            debug_assert!(false, "a stream must begin with created");
            return None;
        }
    };
    p.version += 1;
    match event {
        PaymentEvent::Created(_) => debug_assert!(false, "created appears only once"),
        PaymentEvent::CallbackReceived(c) => {
            p.callbacks.insert(c.callback_no.clone(), c.status);
            if c.flagged_for_refund {
                p.flagged_amount += c.amount;
                p.flag(c.reason.as_deref().unwrap_or("flagged_for_refund"));
            }
        }
        PaymentEvent::Paid(e) => {
            p.status = PaymentStatus::Success;
            p.paid_at = Some(e.paid_at);
            p.gateway_trade_no = Some(e.gateway_trade_no.clone());
        }
        PaymentEvent::Failed(e) => {
            p.status = PaymentStatus::Failed;
            p.failure_reason = Some(e.reason.clone());
        }
        PaymentEvent::RefundRequested(e) => p.refunds.push(Refund {
            id: e.refund_id,
            refund_no: e.refund_no.clone(),
            amount: e.amount,
            reason: e.reason.clone(),
            status: RefundStatus::Processing,
            from_suspense: e.from_suspense,
            failure_reason: None,
            late: false,
        }),
        PaymentEvent::Refunded(e) => {
            if let Some(r) = p.refunds.iter_mut().find(|r| r.id == e.refund_id) {
                r.status = RefundStatus::Success;
                r.late = e.late;
            }
            if e.late {
                p.flag("refund_confirmed_after_failure");
            }
            if p.status == PaymentStatus::Success
                && fully_refunded(p.refunded_amount(), p.held_amount())
            {
                p.status = PaymentStatus::Refunded;
            }
        }
        PaymentEvent::RefundFailed(e) => {
            if let Some(r) = p.refunds.iter_mut().find(|r| r.id == e.refund_id) {
                r.status = RefundStatus::Failed;
                r.failure_reason = Some(e.reason.clone());
            }
        }
    }
    Some(p)
}

/// Folds a whole stream.
pub fn fold<'a>(events: impl IntoIterator<Item = &'a PaymentEvent>) -> State {
    events.into_iter().fold(None, evolve)
}
