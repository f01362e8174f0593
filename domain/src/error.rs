//! Errors a user can cause in the domain. Each variant is a stable, documented outcome; the
//! API layer alone decides which HTTP status and code it becomes.

use rust_decimal::Decimal;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// Input that can never be valid (bad amount, scale, currency, method, text length).
    #[error("{0}")]
    Invalid(String),
    /// The payment's current state does not allow this command.
    #[error("{0}")]
    NotAllowed(String),
    /// A second live (pending or success) payment for the same order.
    #[error("order already has a live payment {existing}")]
    OrderHasLivePayment { existing: Uuid },
    /// The refund asks for more than is still refundable.
    #[error("refund of {requested} exceeds the refundable amount {refundable}")]
    RefundExceedsRefundable {
        requested: Decimal,
        refundable: Decimal,
    },
    /// The command names a payment (or refund) that does not exist.
    #[error("no such payment")]
    NotFound,
    /// A notification came from a gateway other than the payment's method.
    #[error("notification from gateway {got} for a {expected} payment")]
    WrongGateway { expected: String, got: String },
}
