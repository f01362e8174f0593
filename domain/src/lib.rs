//! The payment domain: pure, synchronous, and free of I/O.
//!
//! It owns money and currencies, identifiers, the seven payment events, the commands that
//! produce them (`decide`), the fold that rebuilds state from them (`evolve`), the read side's
//! view of a payment and its one fold (`view`), and the chart of accounts (`postings`). It must not
//! read the clock, draw random numbers or touch a database: whatever a decision needs from
//! outside (the time, fresh ids) is put into the command before `decide` is called.

pub mod currency;
pub mod error;
pub mod events;
pub mod money;
pub mod payer;
pub mod payment;
pub mod postings;
pub mod view;

pub use currency::Currency;
pub use error::DomainError;
pub use events::{CallbackStatus, NotifyOutcome, PaymentEvent, RefundStatus};
pub use money::Money;
pub use payment::{decide, evolve, fold, Command, Payment, PaymentMethod, PaymentStatus};

#[cfg(test)]
mod tests;
