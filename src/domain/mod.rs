//! The payment domain: pure, synchronous, and free of I/O.
//!
//! It owns money and currencies, identifiers, the seven payment events, the commands that
//! produce them (`decide`) and the fold that rebuilds state from them (`evolve`). It must not
//! read the clock, draw random numbers or touch a database: whatever a decision needs from
//! outside (the time, fresh ids) is put into the command before `decide` is called.

pub mod currency;
pub mod error;
pub mod events;
pub mod money;
pub mod payment;

pub use currency::Currency;
pub use error::DomainError;
pub use events::{CallbackStatus, NotifyOutcome, PaymentEvent, RefundStatus};
pub use money::Money;
pub use payment::{decide, evolve, fold, Command, Payment, PaymentMethod, PaymentStatus};
