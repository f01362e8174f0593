//! The read side: one module per read table, the runner that feeds them from the log, and the
//! queries the API serves (SQL for the read side lives here, not in handlers).
//!
//! Every projection is a pure function of the log: a batch is folded onto the current views of
//! the payments it touches with the one fold of payment state (`ledger_domain::view`), and the
//! rows follow from the views, so rows take their ids and times from the events. A batch is
//! applied in one transaction with the checkpoints, and applying an event twice changes
//! nothing (rows carry the version or position they last applied). This crate is the only
//! writer of the read tables and the home of every read-side query; it must not write the log.

pub mod cache;
pub mod callbacks;
pub mod copy;
pub mod ledger_entries;
pub mod payments;
pub mod queues;
pub mod read;
pub mod refunds;
pub mod replay;
pub mod runner;
pub mod settled;
pub mod shred;
pub mod totals;

use std::collections::HashMap;

use sqlx::PgConnection;
use uuid::Uuid;

use ledger_domain::events::PaymentEvent;
use ledger_domain::view::{self, At, CallbackView, PaymentView};
use ledger_store::sealing::MasterKey;
use ledger_store::StoredEvent;

use ledger_entries::{postings, Entry};
use payments::{Masked, PaymentRow};
use read::{ListChange, RowFacts};
use refunds::RefundRow;

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

/// What a batch changes in the read tables: the views it folded and the rows that follow.
#[derive(Debug, Default)]
pub struct Changes {
    pub payments: Vec<PaymentRow>,
    pub refunds: Vec<RefundRow>,
    pub callbacks: Vec<(Uuid, CallbackView)>,
    pub entries: Vec<Entry>,
    /// Every payment the batch touched (for the cache).
    pub touched: Vec<Uuid>,
    /// How lists saw each changed payment before and after (for the list cache).
    pub list_changes: Vec<ListChange>,
}

/// Folds a batch onto the current views of the payments it touches (read from `tables`) with
/// the one fold, `ledger_domain::view::apply`, and returns the rows to write. Events the rows
/// already include (by stream version) are skipped, so a batch applied twice changes nothing.
pub async fn fold_batch(
    conn: &mut PgConnection,
    ctx: &ProjectionContext,
    events: &[Decoded<'_>],
    tables: &Tables,
) -> Result<Changes, sqlx::Error> {
    let mut ids: Vec<Uuid> = events.iter().map(|e| e.stored.stream_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut refund_rows: HashMap<Uuid, Vec<RefundRow>> = HashMap::new();
    for r in refunds::load(conn, &tables.refunds, &ids).await? {
        refund_rows.entry(r.payment_id).or_default().push(r);
    }
    let mut views: HashMap<Uuid, (PaymentView, Masked)> = HashMap::with_capacity(ids.len());
    for row in payments::load(conn, &tables.payments, &ids).await? {
        let id = row.id;
        let refunds = refund_rows.remove(&id).unwrap_or_default();
        match row.into_view(refunds) {
            Ok(v) => {
                views.insert(id, v);
            }
            Err(problem) => {
                return Err(sqlx::Error::Protocol(format!(
                    "read table cannot be folded on: {problem}"
                )))
            }
        }
    }
    let before: HashMap<Uuid, RowFacts> = views
        .values()
        .map(|(v, _)| (v.id(), RowFacts::of(v)))
        .collect();
    let payers = payments::open_payers(conn, ctx, events).await?;
    let mut changes = Changes::default();
    let mut changed: Vec<Uuid> = Vec::new();
    for d in events {
        let e = d.stored;
        let current = views.remove(&e.stream_id);
        if current
            .as_ref()
            .is_some_and(|(v, _)| e.version <= v.version)
        {
            views.extend(current.map(|c| (e.stream_id, c)));
            continue; // already applied
        }
        let (before, masked) = match current {
            Some((v, m)) => (Some(v), m),
            None => (None, payers.get(&e.stream_id).cloned().unwrap_or_default()),
        };
        let callbacks_before = before.as_ref().map(|v| v.callbacks.len()).unwrap_or(0);
        let Some(after) = step(before, d, &mut changes.entries) else {
            tracing::error!(
                position = e.position,
                "event for a payment the projection never saw created"
            );
            continue;
        };
        changes.callbacks.extend(
            after.callbacks[callbacks_before..]
                .iter()
                .map(|c| (e.stream_id, c.clone())),
        );
        changed.push(e.stream_id);
        views.insert(e.stream_id, (after, masked));
    }
    changed.sort_unstable();
    changed.dedup();
    for id in &changed {
        if let Some((view, masked)) = views.get(id) {
            changes.payments.push(PaymentRow::from_view(view, masked));
            changes.refunds.extend(RefundRow::from_view(view));
            changes.list_changes.push(ListChange {
                before: before.get(id).cloned(),
                after: RowFacts::of(view),
            });
        }
    }
    changes.touched = ids;
    Ok(changes)
}

/// Folds one event onto its payment's view with the one fold (`view::apply`), and adds the
/// ledger lines it posts (`postings`, decided on the state before it). `None` for an event of
/// a payment whose creation was never seen.
pub fn step(
    before: Option<PaymentView>,
    d: &Decoded<'_>,
    entries: &mut Vec<Entry>,
) -> Option<PaymentView> {
    let e = d.stored;
    let lines = postings(before.as_ref().map(|v| &v.payment), &d.event);
    let after = view::apply(
        before,
        &d.event,
        At {
            recorded_at: e.recorded_at,
            version: e.version,
            position: e.position,
        },
    )?;
    let currency = after.currency().code();
    entries.extend(
        lines
            .into_iter()
            .enumerate()
            .map(|(line, (account, amount))| Entry {
                event_id: e.event_id,
                line: line as i16,
                position: e.position,
                payment_id: e.stream_id,
                account,
                currency,
                amount,
                entry_type: d.event.event_type(),
                recorded_at: e.recorded_at,
            }),
    );
    Some(after)
}

/// Writes what `fold_batch` decided. Every statement keeps the newer row, so a batch written
/// twice (or after a later one) changes nothing.
pub async fn write_changes(
    conn: &mut PgConnection,
    changes: &Changes,
    tables: &Tables,
) -> Result<(), sqlx::Error> {
    payments::upsert(conn, &tables.payments, changes.payments.iter()).await?;
    let callbacks: Vec<(Uuid, &CallbackView)> =
        changes.callbacks.iter().map(|(p, c)| (*p, c)).collect();
    callbacks::insert(conn, &tables.callbacks, &callbacks).await?;
    refunds::upsert(conn, &tables.refunds, &changes.refunds).await?;
    ledger_entries::insert(conn, &tables.ledger_entries, &changes.entries).await?;
    Ok(())
}

/// Applies one batch to every read table. The caller owns the transaction.
pub async fn apply_batch(
    conn: &mut PgConnection,
    ctx: &ProjectionContext,
    events: &[Decoded<'_>],
    tables: &Tables,
) -> Result<Changes, sqlx::Error> {
    let changes = fold_batch(conn, ctx, events, tables).await?;
    write_changes(conn, &changes, tables).await?;
    Ok(changes)
}

/// One column of rows, for binding as an array parameter.
pub(crate) fn column<T, U>(items: &[T], f: impl Fn(&T) -> U) -> Vec<U> {
    items.iter().map(f).collect()
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
