//! One leader for each background duty across all nodes: the relay, the projector, the refund
//! driver and the expiry driver each run on exactly one node at a time.
//!
//! Leadership is a lease in PostgreSQL (`ledger_store::leases`) renewed every third of its
//! time to live; every takeover raises the duty's fencing token. A node runs a duty only while
//! it holds the lease, and stops it as soon as a renewal fails or could not be confirmed
//! before the lease would run out. Because a paused node may still believe it leads, the
//! duty's writes carry the token and are checked where they land (`Fence` in the append
//! writer, `leases::still_held` in the projector's transaction), and the drivers ask
//! `Lease::valid` before every call to a gateway.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::store::{leases, Fence};

/// The background duties.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Duty {
    Relay,
    Projector,
    Refunds,
    Expiry,
}

impl Duty {
    pub const ALL: [Duty; 4] = [Duty::Relay, Duty::Projector, Duty::Refunds, Duty::Expiry];

    pub fn name(self) -> &'static str {
        match self {
            Duty::Relay => "relay",
            Duty::Projector => "projector",
            Duty::Refunds => "refunds",
            Duty::Expiry => "expiry",
        }
    }
}

/// What a running duty knows of its lease: its token, and until when it is sure to hold it.
#[derive(Clone)]
pub struct Lease {
    duty: Duty,
    state: watch::Receiver<Option<(i64, Instant)>>,
}

impl Lease {
    /// The token while the lease is surely held.
    pub fn token(&self) -> Option<i64> {
        match *self.state.borrow() {
            Some((token, sure_until)) if Instant::now() < sure_until => Some(token),
            _ => None,
        }
    }

    /// Whether the lease is surely held now (ask before an action that cannot be fenced,
    /// such as a call to a gateway).
    pub fn valid(&self) -> bool {
        self.token().is_some()
    }

    /// The fence a write of this duty carries (`None` once the lease is lost: the write is
    /// then refused by the writer, because no fence means no duty write).
    pub fn fence(&self) -> Fence {
        Fence {
            duty: self.duty.name(),
            token: self.token().unwrap_or(-1),
        }
    }
}

/// The duties this node holds now, with their fencing tokens (what `/readyz` shows).
#[derive(Debug, Default)]
pub struct HeldDuties(Mutex<BTreeMap<&'static str, i64>>);

impl HeldDuties {
    pub fn snapshot(&self) -> BTreeMap<&'static str, i64> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }

    fn set(&self, duty: Duty, token: Option<i64>) {
        if let Ok(mut m) = self.0.lock() {
            match token {
                Some(t) => m.insert(duty.name(), t),
                None => m.remove(duty.name()),
            };
        }
        metrics::gauge!("ledger_duty_held", "duty" => duty.name()).set(if token.is_some() {
            1.0
        } else {
            0.0
        });
    }
}

/// Elects this node for duties through PostgreSQL leases.
#[derive(Clone)]
pub struct Leadership {
    pub pool: PgPool,
    /// This node's id in the lease table (unique per process).
    pub node: String,
    /// How long a lease lasts unless renewed: the longest a dead leader's duty waits.
    pub ttl: Duration,
    /// How much longer than a preferred node this node waits before it takes a free duty:
    /// zero for `all` and `projector` nodes, a fraction of the lease for `api` nodes, which
    /// stand by and take the duties only when no preferred node does.
    pub standby_grace: Duration,
    /// What this node holds, for `/readyz` and the `ledger_duty_held` metric.
    pub held: Arc<HeldDuties>,
}

impl Leadership {
    /// Runs `lead(lease, stop)` whenever this node holds `duty`, and `follow(stop)` (may be a
    /// no-op) whenever it does not, until `cancel`. `stop` is cancelled when the lease is lost
    /// or the node shuts down; both futures must return promptly after it.
    pub fn spawn<L, LF, F, FF>(
        &self,
        tracker: &TaskTracker,
        duty: Duty,
        cancel: CancellationToken,
        lead: L,
        follow: F,
    ) where
        L: Fn(Lease, CancellationToken) -> LF + Send + 'static,
        LF: Future<Output = ()> + Send + 'static,
        F: Fn(CancellationToken) -> FF + Send + 'static,
        FF: Future<Output = ()> + Send + 'static,
    {
        let this = self.clone();
        let inner = tracker.clone();
        tracker.spawn(async move {
            this.campaign(&inner, duty, cancel, lead, follow).await;
        });
    }

    async fn campaign<L, LF, F, FF>(
        &self,
        tracker: &TaskTracker,
        duty: Duty,
        cancel: CancellationToken,
        lead: L,
        follow: F,
    ) where
        L: Fn(Lease, CancellationToken) -> LF,
        LF: Future<Output = ()> + Send + 'static,
        F: Fn(CancellationToken) -> FF,
        FF: Future<Output = ()> + Send + 'static,
    {
        let renew_every = self.ttl / 3;
        // Stop acting a third of the lease before it runs out: renewals that failed since
        // cannot prove the lease is still ours, and clocks of nodes differ a little.
        let sure_for = self.ttl - self.ttl / 3;
        let (state_tx, state_rx) = watch::channel::<Option<(i64, Instant)>>(None);
        let mut running: Option<(i64, CancellationToken)> = None;
        let mut following: Option<CancellationToken> =
            Some(self.start_following(tracker, &cancel, &follow));
        loop {
            let asked = Instant::now();
            match leases::acquire(
                &self.pool,
                duty.name(),
                &self.node,
                self.ttl,
                self.standby_grace,
            )
            .await
            {
                Ok(Some(held)) => {
                    let sure_until = asked + sure_for;
                    let _ = state_tx.send(Some((held.token, sure_until)));
                    let same = running.as_ref().is_some_and(|(t, _)| *t == held.token);
                    if !same {
                        if let Some((_, stop)) = running.take() {
                            stop.cancel();
                        }
                        if let Some(f) = following.take() {
                            f.cancel();
                        }
                        tracing::info!(duty = duty.name(), token = held.token, node = %self.node, "took the duty");
                        metrics::counter!("ledger_duty_takeovers_total", "duty" => duty.name())
                            .increment(1);
                        let stop = cancel.child_token();
                        let lease = Lease {
                            duty,
                            state: state_rx.clone(),
                        };
                        tracker.spawn(lead(lease, stop.clone()));
                        running = Some((held.token, stop));
                    }
                }
                Ok(None) => {
                    if let Some((_, stop)) = running.take() {
                        tracing::warn!(duty = duty.name(), node = %self.node, "lost the duty to another node");
                        let _ = state_tx.send(None);
                        stop.cancel();
                    }
                    if following.is_none() {
                        following = Some(self.start_following(tracker, &cancel, &follow));
                    }
                }
                Err(e) => {
                    tracing::warn!(duty = duty.name(), error = %e, "could not renew the duty's lease");
                    // `Lease::token` already stops answering once `sure_until` passes.
                }
            }
            self.held.set(duty, running.as_ref().map(|(t, _)| *t));
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(renew_every) => {}
            }
        }
        if let Some((_, stop)) = running.take() {
            stop.cancel();
            let _ = state_tx.send(None);
            // Let another node take over at once rather than after the lease runs out.
            if let Err(e) = leases::release(&self.pool, duty.name(), &self.node).await {
                tracing::warn!(duty = duty.name(), error = %e, "could not release the duty");
            }
        }
        if let Some(f) = following.take() {
            f.cancel();
        }
        self.held.set(duty, None);
    }

    fn start_following<F, FF>(
        &self,
        tracker: &TaskTracker,
        cancel: &CancellationToken,
        follow: &F,
    ) -> CancellationToken
    where
        F: Fn(CancellationToken) -> FF,
        FF: Future<Output = ()> + Send + 'static,
    {
        let stop = cancel.child_token();
        tracker.spawn(follow(stop.clone()));
        stop
    }
}
