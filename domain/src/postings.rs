//! Double-entry postings: the chart of accounts, and the lines each money-moving event posts.
//! Every event's lines sum to zero in its currency (debits positive, credits negative), so a
//! trial balance over any set of whole events nets to zero.
//!
//! | event                                 | debit                         | credit             |
//! |---------------------------------------|-------------------------------|--------------------|
//! | `paid`                                | `gateway_clearing`            | `merchant_revenue` |
//! | `callback_received`, flagged          | `gateway_clearing`            | `suspense`         |
//! | `refund_requested`                    | `suspense` (flagged part), `merchant_revenue` (rest) | `refunds_payable` |
//! | `refunded`                            | `refunds_payable`             | `gateway_clearing` |
//! | `refund_failed`                       | `refunds_payable`             | `suspense` (flagged part), `merchant_revenue` (rest) |
//! | `refunded` after `refund_failed`      | `suspense` (flagged part), `merchant_revenue` (rest) | `gateway_clearing` |
//!
//! - `gateway_clearing` (asset): money the gateways hold for us;
//! - `merchant_revenue` (income): what the merchant has earned;
//! - `refunds_payable` (liability): refunds promised and not yet confirmed;
//! - `suspense` (liability): money a gateway took that the ledger did not accept as a payment
//!   (a success after failure, a second charge), owed back to the payer until refunded.

use rust_decimal::Decimal;

use crate::events::PaymentEvent;
use crate::payment::Payment;

pub const GATEWAY_CLEARING: &str = "gateway_clearing";
pub const MERCHANT_REVENUE: &str = "merchant_revenue";
pub const REFUNDS_PAYABLE: &str = "refunds_payable";
pub const SUSPENSE: &str = "suspense";

/// Every account, in the order reports list them.
pub const ACCOUNTS: [&str; 4] = [
    GATEWAY_CLEARING,
    MERCHANT_REVENUE,
    REFUNDS_PAYABLE,
    SUSPENSE,
];

/// One line: (account, signed amount; debit positive).
pub type Posting = (&'static str, Decimal);

/// The lines `event` posts, given the payment's state just before it (`None` before
/// `created`). Lines of zero are left out; events that move no money post nothing.
pub fn postings(before: Option<&Payment>, event: &PaymentEvent) -> Vec<Posting> {
    let split = |refund_amount: Decimal, from_suspense: Decimal| {
        [
            (SUSPENSE, from_suspense),
            (MERCHANT_REVENUE, refund_amount - from_suspense),
        ]
    };
    let from_suspense = |refund_id| {
        before
            .and_then(|p| p.refund(refund_id))
            .map(|r| r.from_suspense)
            .unwrap_or(Decimal::ZERO)
    };
    let lines: Vec<Posting> = match event {
        PaymentEvent::Paid(_) => match before {
            Some(p) => vec![
                (GATEWAY_CLEARING, p.amount.amount()),
                (MERCHANT_REVENUE, -p.amount.amount()),
            ],
            None => vec![],
        },
        PaymentEvent::CallbackReceived(c) if c.flagged_for_refund => {
            vec![(GATEWAY_CLEARING, c.amount), (SUSPENSE, -c.amount)]
        }
        PaymentEvent::RefundRequested(r) => {
            let mut lines: Vec<Posting> = split(r.amount, r.from_suspense).to_vec();
            lines.push((REFUNDS_PAYABLE, -r.amount));
            lines
        }
        PaymentEvent::Refunded(r) if r.late => {
            let mut lines: Vec<Posting> = split(r.amount, from_suspense(r.refund_id)).to_vec();
            lines.push((GATEWAY_CLEARING, -r.amount));
            lines
        }
        PaymentEvent::Refunded(r) => {
            vec![(REFUNDS_PAYABLE, r.amount), (GATEWAY_CLEARING, -r.amount)]
        }
        PaymentEvent::RefundFailed(r) => {
            let mut lines = vec![(REFUNDS_PAYABLE, r.amount)];
            lines.extend(
                split(r.amount, from_suspense(r.refund_id))
                    .into_iter()
                    .map(|(account, amount)| (account, -amount)),
            );
            lines
        }
        PaymentEvent::Created(_) | PaymentEvent::CallbackReceived(_) | PaymentEvent::Failed(_) => {
            vec![]
        }
    };
    lines.into_iter().filter(|(_, a)| !a.is_zero()).collect()
}
