//! The sandbox gateway: the default for every method. It keeps its orders and refunds in
//! memory, and injects faults deterministically on request (fail the next N calls, time out,
//! answer "unknown", reject refunds, notify twice, late or with the wrong amount), so that
//! tests and demos can drive every path of SPEC §8.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use rust_decimal::Decimal;

use super::{Gateway, GatewayError, QueryOutcome, RefundOutcome};
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

pub struct Sandbox {
    base_url: String,
    pub faults: Faults,
    orders: Mutex<HashMap<String, Money>>,
    refunds: Mutex<HashMap<String, RefundState>>,
    /// Gateway calls made (for tests and metrics).
    pub calls: AtomicU32,
}

impl Sandbox {
    pub fn new(base_url: &str, faults: Faults) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            faults,
            orders: Mutex::new(HashMap::new()),
            refunds: Mutex::new(HashMap::new()),
            calls: AtomicU32::new(0),
        }
    }

    pub fn pay_url(&self, payment_no: &str) -> String {
        format!("{}/sandbox/pay/{payment_no}", self.base_url)
    }

    /// How many distinct refunds the sandbox executed (each refund_no counts once).
    pub fn refunds_done(&self) -> usize {
        self.refunds
            .lock()
            .map(|r| {
                r.values()
                    .filter(|s| matches!(s, RefundState::Done))
                    .count()
            })
            .unwrap_or(0)
    }

    /// Marks a pending refund as settled (as the gateway's own back office would).
    pub fn settle_refund(&self, refund_no: &str, success: bool) {
        if let Ok(mut r) = self.refunds.lock() {
            r.insert(
                refund_no.to_owned(),
                if success {
                    RefundState::Done
                } else {
                    RefundState::Rejected("gateway_rejected".into())
                },
            );
        }
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
        if let Ok(mut o) = self.orders.lock() {
            o.insert(payment_no.to_owned(), *amount);
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
        let known = self
            .orders
            .lock()
            .map(|o| o.contains_key(payment_no))
            .unwrap_or(false);
        Ok(if known {
            (QueryOutcome::Pending, Some(self.pay_url(payment_no)))
        } else {
            (QueryOutcome::NotFound, None)
        })
    }

    async fn refund(
        &self,
        refund_no: &str,
        _payment_no: &str,
        _amount: Decimal,
    ) -> Result<RefundOutcome, GatewayError> {
        let time_out = self.before_call()?;
        let mut refunds = self
            .refunds
            .lock()
            .map_err(|_| GatewayError::Unavailable("sandbox state poisoned".into()))?;
        // The refund_no is the idempotency key: a retried call reports the first outcome.
        let state = match refunds.get(refund_no) {
            Some(s) => s.clone(),
            None => {
                let s = if take(&self.faults.reject_refunds) {
                    RefundState::Rejected("sandbox fault: reject_refunds".into())
                } else if take(&self.faults.pending_refunds) {
                    RefundState::Pending
                } else {
                    RefundState::Done
                };
                refunds.insert(refund_no.to_owned(), s.clone());
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

    async fn query_refund(&self, refund_no: &str) -> Result<QueryOutcome, GatewayError> {
        if self.before_call()? {
            return Err(GatewayError::Timeout);
        }
        if take(&self.faults.unknown_next) {
            return Ok(QueryOutcome::Pending);
        }
        let state = self
            .refunds
            .lock()
            .ok()
            .and_then(|r| r.get(refund_no).cloned());
        Ok(match state {
            Some(RefundState::Done) => QueryOutcome::Succeeded,
            Some(RefundState::Pending) => QueryOutcome::Pending,
            Some(RefundState::Rejected(r)) => QueryOutcome::Failed(r),
            None => QueryOutcome::NotFound,
        })
    }
}
