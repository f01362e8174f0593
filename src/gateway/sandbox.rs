//! The sandbox gateway: the default for every method. It keeps its orders and refunds in
//! memory, and injects faults deterministically on request (fail the next N calls, time out,
//! answer "unknown", reject refunds, notify twice, late or with the wrong amount), so that
//! tests and demos can drive every path of SPEC §8.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use rust_decimal::Decimal;

use super::{CloseOutcome, Gateway, GatewayError, QueryOutcome, RefundOutcome};
use crate::domain::Money;

/// Faults armed by tests or by `LEDGER_SANDBOX_FAULTS`; each counter is consumed per call.
#[derive(Debug, Default)]
pub struct Faults {
    /// The next N calls answer "unavailable" (nothing happens).
    pub fail_next: AtomicU32,
    /// The next N calls time out after taking effect (the outcome is unknown to the caller).
    pub timeout_next: AtomicU32,
    /// The next N queries answer "unknown" (pending).
    pub unknown_next: AtomicU32,
    /// The next N refunds are rejected.
    pub reject_refunds: AtomicU32,
    /// The next N refunds stay pending until a notification confirms them.
    pub pending_refunds: AtomicU32,
    /// The next N notifications from the pay page are sent twice.
    pub notify_twice: AtomicU32,
    /// The next N notifications from the pay page carry the wrong amount.
    pub notify_wrong_amount: AtomicU32,
    /// The next N notifications from the pay page are sent after this many milliseconds.
    pub notify_late_ms: AtomicU32,
}

fn take(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        .is_ok()
}

impl Faults {
    /// Parses `fail_next=2,timeout_next=1,…`.
    pub fn parse(text: &str) -> Result<Faults, String> {
        let f = Faults::default();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, n) = item
                .split_once('=')
                .ok_or_else(|| format!("{item:?} is not name=count"))?;
            let n: u32 = n
                .parse()
                .map_err(|_| format!("{item:?}: count must be a number"))?;
            let counter = match name {
                "fail_next" => &f.fail_next,
                "timeout_next" => &f.timeout_next,
                "unknown_next" => &f.unknown_next,
                "reject_refunds" => &f.reject_refunds,
                "pending_refunds" => &f.pending_refunds,
                "notify_twice" => &f.notify_twice,
                "notify_wrong_amount" => &f.notify_wrong_amount,
                "notify_late_ms" => &f.notify_late_ms,
                other => return Err(format!("unknown fault {other:?}")),
            };
            counter.store(n, Ordering::Release);
        }
        Ok(f)
    }

    pub fn take_notify_twice(&self) -> bool {
        take(&self.notify_twice)
    }

    pub fn take_wrong_amount(&self) -> bool {
        take(&self.notify_wrong_amount)
    }

    pub fn take_late_ms(&self) -> u32 {
        self.notify_late_ms.swap(0, Ordering::AcqRel)
    }
}

#[derive(Debug, Clone)]
enum RefundState {
    Done,
    Pending,
    Rejected(String),
}

impl From<RefundState> for super::journal::Decision {
    fn from(s: RefundState) -> Self {
        match s {
            RefundState::Done => Self::Done,
            RefundState::Pending => Self::Pending,
            RefundState::Rejected(r) => Self::Rejected(r),
        }
    }
}

impl From<super::journal::Decision> for RefundState {
    fn from(d: super::journal::Decision) -> Self {
        match d {
            super::journal::Decision::Done => Self::Done,
            super::journal::Decision::Pending => Self::Pending,
            super::journal::Decision::Rejected(r) => Self::Rejected(r),
        }
    }
}

/// An order as the sandbox knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderState {
    Open,
    Paid,
    Closed,
}

pub struct Sandbox {
    base_url: String,
    pub faults: Faults,
    /// Bounded: the oldest orders and refunds are forgotten first (a forgotten refund is
    /// "not found", an unknown outcome the refund driver asks about again).
    orders: moka::sync::Cache<String, (Money, OrderState)>,
    refunds: moka::sync::Cache<String, RefundState>,
    /// Serialises refund decisions so a refund_no is decided once.
    refund_gate: Mutex<()>,
    /// Gateway calls made (for tests and metrics).
    pub calls: AtomicU32,
    /// Refund calls that executed a refund (each refund_no counts once).
    pub refunds_executed: AtomicU32,
    /// Refund decisions shared with the sandboxes of other processes (`LEDGER_SANDBOX_JOURNAL`).
    journal: Option<super::journal::Journal>,
}

impl Sandbox {
    pub fn new(base_url: &str, faults: Faults) -> Self {
        Self::bounded(base_url, faults, 100_000)
    }

    pub fn bounded(base_url: &str, faults: Faults, entries_max: usize) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            faults,
            orders: moka::sync::Cache::new(entries_max as u64),
            refunds: moka::sync::Cache::new(entries_max as u64),
            refund_gate: Mutex::new(()),
            calls: AtomicU32::new(0),
            refunds_executed: AtomicU32::new(0),
            journal: None,
        }
    }

    /// Shares refund decisions with every sandbox that uses the same journal file.
    pub fn with_journal(mut self, journal: super::journal::Journal) -> Self {
        self.journal = Some(journal);
        self
    }

    /// The order's state, if the sandbox still remembers it.
    pub fn order_state(&self, payment_no: &str) -> Option<OrderState> {
        self.orders.get(payment_no).map(|o| o.1)
    }

    /// Marks an open order paid (its pay page was used); false when it is closed.
    pub fn mark_paid(&self, payment_no: &str) -> bool {
        match self.orders.get(payment_no) {
            Some((_, OrderState::Closed)) => false,
            Some((m, _)) => {
                self.orders
                    .insert(payment_no.to_owned(), (m, OrderState::Paid));
                true
            }
            None => true,
        }
    }

    /// How many entries the sandbox holds (orders, refunds): bounded by its capacity.
    pub fn entries(&self) -> (u64, u64) {
        self.orders.run_pending_tasks();
        self.refunds.run_pending_tasks();
        (self.orders.entry_count(), self.refunds.entry_count())
    }

    pub fn pay_url(&self, payment_no: &str) -> String {
        format!("{}/sandbox/pay/{payment_no}", self.base_url)
    }

    /// How many distinct refunds the sandbox executed (each refund_no counts once).
    pub fn refunds_done(&self) -> usize {
        self.refunds
            .iter()
            .filter(|(_, s)| matches!(s, RefundState::Done))
            .count()
    }

    /// Marks a pending refund as settled (as the gateway's own back office would).
    pub fn settle_refund(&self, refund_no: &str, success: bool) {
        self.refunds.insert(
            refund_no.to_owned(),
            if success {
                RefundState::Done
            } else {
                RefundState::Rejected("gateway_rejected".into())
            },
        );
    }

    fn before_call(&self) -> Result<bool, GatewayError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if take(&self.faults.fail_next) {
            return Err(GatewayError::Unavailable("sandbox fault: fail_next".into()));
        }
        Ok(take(&self.faults.timeout_next))
    }
}

#[async_trait::async_trait]
impl Gateway for Sandbox {
    async fn create_order(&self, payment_no: &str, amount: &Money) -> Result<String, GatewayError> {
        let time_out = self.before_call()?;
        if self.orders.get(payment_no).is_none() {
            self.orders
                .insert(payment_no.to_owned(), (*amount, OrderState::Open));
        }
        if time_out {
            return Err(GatewayError::Timeout);
        }
        Ok(self.pay_url(payment_no))
    }

    async fn query_order(
        &self,
        payment_no: &str,
    ) -> Result<(QueryOutcome, Option<String>), GatewayError> {
        if self.before_call()? {
            return Err(GatewayError::Timeout);
        }
        Ok(match self.order_state(payment_no) {
            Some(OrderState::Open) => (QueryOutcome::Pending, Some(self.pay_url(payment_no))),
            Some(OrderState::Paid) => (QueryOutcome::Succeeded, Some(self.pay_url(payment_no))),
            Some(OrderState::Closed) => (QueryOutcome::Failed("closed".into()), None),
            None => (QueryOutcome::NotFound, None),
        })
    }

    async fn refund(
        &self,
        refund_no: &str,
        _payment_no: &str,
        _amount: Decimal,
    ) -> Result<RefundOutcome, GatewayError> {
        let time_out = self.before_call()?;
        let _gate = self
            .refund_gate
            .lock()
            .map_err(|_| GatewayError::Unavailable("sandbox state poisoned".into()))?;
        // The refund_no is the idempotency key: a retried call reports the first outcome.
        let decide = || {
            if take(&self.faults.reject_refunds) {
                RefundState::Rejected("sandbox fault: reject_refunds".into())
            } else if take(&self.faults.pending_refunds) {
                RefundState::Pending
            } else {
                self.refunds_executed.fetch_add(1, Ordering::Relaxed);
                RefundState::Done
            }
        };
        let state = match (&self.journal, self.refunds.get(refund_no)) {
            // Another process's sandbox may have decided it: the journal is the book.
            (Some(journal), _) => {
                let d = journal
                    .refund(refund_no, || decide().into())
                    .map_err(|e| GatewayError::Unavailable(format!("sandbox journal: {e}")))?;
                let s = RefundState::from(d);
                self.refunds.insert(refund_no.to_owned(), s.clone());
                s
            }
            (None, Some(s)) => s,
            (None, None) => {
                let s = decide();
                self.refunds.insert(refund_no.to_owned(), s.clone());
                s
            }
        };
        if time_out {
            return Err(GatewayError::Timeout);
        }
        Ok(match state {
            RefundState::Done => RefundOutcome::Confirmed,
            RefundState::Pending => RefundOutcome::Pending,
            RefundState::Rejected(r) => RefundOutcome::Rejected(r),
        })
    }

    async fn query_refund(
        &self,
        refund_no: &str,
        _payment_no: &str,
    ) -> Result<QueryOutcome, GatewayError> {
        if self.before_call()? {
            return Err(GatewayError::Timeout);
        }
        if take(&self.faults.unknown_next) {
            return Ok(QueryOutcome::Pending);
        }
        let known = match (self.refunds.get(refund_no), &self.journal) {
            (Some(s), _) => Some(s),
            (None, Some(journal)) => journal
                .decision(refund_no)
                .map_err(|e| GatewayError::Unavailable(format!("sandbox journal: {e}")))?
                .map(RefundState::from),
            (None, None) => None,
        };
        Ok(match known {
            Some(RefundState::Done) => QueryOutcome::Succeeded,
            Some(RefundState::Pending) => QueryOutcome::Pending,
            Some(RefundState::Rejected(r)) => QueryOutcome::Failed(r),
            None => QueryOutcome::NotFound,
        })
    }

    async fn close_order(&self, payment_no: &str) -> Result<CloseOutcome, GatewayError> {
        if self.before_call()? {
            return Err(GatewayError::Timeout);
        }
        Ok(match self.orders.get(payment_no) {
            Some((_, OrderState::Paid)) => CloseOutcome::AlreadyPaid,
            Some((m, _)) => {
                self.orders
                    .insert(payment_no.to_owned(), (m, OrderState::Closed));
                CloseOutcome::Closed
            }
            None => CloseOutcome::Closed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Currency;

    #[tokio::test]
    async fn the_sandbox_remembers_a_bounded_number_of_orders_and_refunds() {
        let sandbox = Sandbox::bounded("http://x", Faults::default(), 50);
        let amount = Money::parse("1.00", Currency::from_code("CNY").unwrap()).unwrap();
        for i in 0..2_000 {
            sandbox
                .create_order(&format!("P{i}"), &amount)
                .await
                .unwrap();
            sandbox
                .refund(&format!("R{i}"), &format!("P{i}"), amount.amount())
                .await
                .unwrap();
        }
        let (orders, refunds) = sandbox.entries();
        assert!(
            orders <= 50 && refunds <= 50,
            "{orders} orders, {refunds} refunds"
        );
    }
}
