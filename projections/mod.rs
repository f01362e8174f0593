//! The read side: one module per read table, the runner that feeds them from the log, and the
//! queries the API serves (SQL for the read side lives here, not in handlers).
//!
//! Every projection is a pure function of the log: rows take their ids and times from the
//! events, each applies a batch in one transaction with its checkpoint, and applying an event
//! twice changes nothing (rows carry the version or position they last applied).

pub mod cache;
pub mod callbacks;
pub mod ledger_entries;
pub mod payments;
pub mod read;
pub mod refunds;
pub mod runner;

use std::collections::HashMap;

use sqlx::PgConnection;
use uuid::Uuid;

use crate::crypto::payer::MasterKey;
use crate::domain::events::PaymentEvent;
use crate::store::StoredEvent;

/// The projections, in the order they are applied within a batch.
pub const PROJECTIONS: [&str; 4] = [
    "payments",
    "payment_callbacks",
    "payment_refunds",
    "ledger_entries",
];

/// A stored event with its decoded domain event.
pub struct Decoded<'a> {
    pub stored: &'a StoredEvent,
    pub event: PaymentEvent,
}

/// What projections need besides the events.
#[derive(Clone)]
pub struct ProjectionContext {
    /// Opens sealed payer data to show it masked; without the user's key it shows `[erased]`.
    pub master_key: MasterKey,
}

/// Applies one batch to every read table. The caller owns the transaction.
pub async fn apply_batch(
    conn: &mut PgConnection,
    ctx: &ProjectionContext,
    events: &[Decoded<'_>],
    tables: &Tables,
) -> Result<(), sqlx::Error> {
    let currencies = payments::apply(conn, ctx, events, &tables.payments).await?;
    callbacks::apply(conn, events, &tables.callbacks).await?;
    refunds::apply(conn, events, &currencies, &tables.refunds).await?;
    ledger_entries::apply(conn, events, &currencies, &tables.ledger_entries).await?;
    Ok(())
}

/// Table names, so that `ledger replay` can build into fresh tables and swap them in.
#[derive(Debug, Clone)]
pub struct Tables {
    pub payments: String,
    pub callbacks: String,
    pub refunds: String,
    pub ledger_entries: String,
}

impl Tables {
    pub fn live() -> Self {
        Self::with_suffix("")
    }

    pub fn with_suffix(suffix: &str) -> Self {
        Self {
            payments: format!("payments{suffix}"),
            callbacks: format!("payment_callbacks{suffix}"),
            refunds: format!("payment_refunds{suffix}"),
            ledger_entries: format!("ledger_entries{suffix}"),
        }
    }

    pub fn all(&self) -> [&str; 4] {
        [
            &self.payments,
            &self.callbacks,
            &self.refunds,
            &self.ledger_entries,
        ]
    }
}

/// Currency and amount of every payment a batch touches (refunds and postings need them).
pub type Currencies = HashMap<Uuid, (String, rust_decimal::Decimal)>;
