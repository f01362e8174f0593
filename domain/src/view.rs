//! The read side's view of one payment, and the one fold that builds it from events.
//!
//! A `PaymentView` is what a detail shows: the aggregate's state (folded by the same
//! [`evolve`](crate::payment::evolve) that `decide` relies on, so no business rule is written
//! twice) plus what only readers need: when things happened, every callback as received, and
//! each refund's times. The projections write their rows from views, `as_of` folds a prefix of
//! the log into one, and the replay check compares rebuilt rows with live ones: all through
//! [`apply`]. Pure: the caller passes each event's time, version and position.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::events::{CallbackStatus, NotifyOutcome, PaymentEvent};
use crate::payer::SealedPayer;
use crate::payment::{evolve, Payment};
use crate::{Currency, PaymentMethod, PaymentStatus};

/// A gateway notification as the ledger recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct CallbackView {
    pub id: Uuid,
    pub callback_no: String,
    pub gateway: PaymentMethod,
    pub status: CallbackStatus,
    pub outcome: NotifyOutcome,
    pub amount: Decimal,
    pub gateway_trade_no: String,
    pub refund_no: Option<String>,
    pub reason: Option<String>,
    pub flagged_for_refund: bool,
    pub created_at: DateTime<Utc>,
    pub position: i64,
}

/// When a refund was requested and last changed; its state is the aggregate's `Refund`.
#[derive(Debug, Clone, PartialEq)]
pub struct RefundTimes {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Log position of the last event that changed this refund.
    pub position: i64,
}

/// One payment as readers see it.
#[derive(Debug, Clone, PartialEq)]
pub struct PaymentView {
    /// The aggregate's state after the same events.
    pub payment: Payment,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When the last refund that made the payment fully refunded was confirmed.
    pub refund_time: Option<DateTime<Utc>>,
    /// Sealed payer data from the created event (the read side masks it).
    pub payer: Option<SealedPayer>,
    /// Callbacks recorded by the events folded into this view, in order. A view loaded from
    /// the read tables to continue folding starts with none: callbacks are only ever added.
    pub callbacks: Vec<CallbackView>,
    /// Times of each refund, in the order of `payment.refunds`.
    pub refund_times: Vec<RefundTimes>,
    /// Stream version and log position of the last event folded.
    pub version: i32,
    pub position: i64,
}

/// Where an event sits in the log, as the fold needs it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct At {
    pub recorded_at: DateTime<Utc>,
    pub version: i32,
    pub position: i64,
}

impl PaymentView {
    pub fn id(&self) -> Uuid {
        self.payment.id
    }

    pub fn status(&self) -> PaymentStatus {
        self.payment.status
    }

    pub fn currency(&self) -> Currency {
        self.payment.currency()
    }

    pub fn refund_times(&self, refund_id: Uuid) -> Option<&RefundTimes> {
        self.refund_times.iter().find(|t| t.id == refund_id)
    }
}

/// Applies one event to a view. Like `evolve`, it never refuses: an event whose version the
/// view already holds is skipped, which makes re-applying a batch harmless.
pub fn apply(view: Option<PaymentView>, event: &PaymentEvent, at: At) -> Option<PaymentView> {
    let mut view = match (view, event) {
        (None, PaymentEvent::Created(c)) => {
            let payment = evolve(None, event)?;
            return Some(PaymentView {
                payment,
                created_at: at.recorded_at,
                updated_at: at.recorded_at,
                refund_time: None,
                payer: c.payer.clone(),
                callbacks: Vec::new(),
                refund_times: Vec::new(),
                version: at.version,
                position: at.position,
            });
        }
        (Some(v), _) if at.version <= v.version => return Some(v),
        (Some(v), _) => v,
        (None, _) => return None,
    };
    let was = view.payment.status;
    view.payment = evolve(Some(view.payment), event)?;
    view.updated_at = at.recorded_at;
    view.version = at.version;
    view.position = at.position;
    match event {
        PaymentEvent::CallbackReceived(c) => view.callbacks.push(CallbackView {
            id: c.callback_id,
            callback_no: c.callback_no.clone(),
            gateway: c.gateway,
            status: c.status,
            outcome: c.outcome,
            amount: c.amount,
            gateway_trade_no: c.gateway_trade_no.clone(),
            refund_no: c.refund_no.clone(),
            reason: c.reason.clone(),
            flagged_for_refund: c.flagged_for_refund,
            created_at: at.recorded_at,
            position: at.position,
        }),
        PaymentEvent::RefundRequested(r) => view.refund_times.push(RefundTimes {
            id: r.refund_id,
            created_at: at.recorded_at,
            updated_at: at.recorded_at,
            position: at.position,
        }),
        PaymentEvent::Refunded(r) => touch_refund(&mut view, r.refund_id, at),
        PaymentEvent::RefundFailed(r) => touch_refund(&mut view, r.refund_id, at),
        PaymentEvent::Created(_) | PaymentEvent::Paid(_) | PaymentEvent::Failed(_) => {}
    }
    if was != PaymentStatus::Refunded && view.payment.status == PaymentStatus::Refunded {
        view.refund_time = Some(at.recorded_at);
    }
    Some(view)
}

fn touch_refund(view: &mut PaymentView, refund_id: Uuid, at: At) {
    if let Some(t) = view.refund_times.iter_mut().find(|t| t.id == refund_id) {
        t.updated_at = at.recorded_at;
        t.position = at.position;
    }
}

/// Folds a stream (or a prefix of it) into its view.
pub fn fold<'a>(events: impl IntoIterator<Item = (&'a PaymentEvent, At)>) -> Option<PaymentView> {
    events
        .into_iter()
        .fold(None, |view, (event, at)| apply(view, event, at))
}

/// A refund's state and times together, as a detail lists it.
pub fn refunds(
    view: &PaymentView,
) -> impl Iterator<Item = (&crate::payment::Refund, &RefundTimes)> {
    view.payment
        .refunds
        .iter()
        .filter_map(move |r| view.refund_times(r.id).map(|t| (r, t)))
}
