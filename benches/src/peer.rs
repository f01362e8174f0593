//! The peer of `ledger bench`: the same create → pay → refund flow written on cqrs-es with
//! postgres-es, the way its documentation builds an application — an aggregate that handles
//! commands and applies events, a persisted event store, and a view (`GenericQuery` over a
//! `PostgresViewRepository`) updated after every commit, so that, as in the ledger, a command
//! returns once its events are stored and its read model is updated.
//!
//! It is compiled into the `ledger` binary (feature `peer`, on by default) and mounted as
//! `ledger::bench::peer`; it is called in-process, without HTTP or request signing, which
//! favours the peer. It owns its tables (`peer_*`) in the bench's database.

use std::sync::Arc;
use std::time::Instant;

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{GenericQuery, PersistedEventStore};
use cqrs_es::{Aggregate, CqrsFramework, DomainEvent, EventEnvelope, View};
use postgres_es::{PostgresEventRepository, PostgresViewRepository};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use super::load::{Recorder, Step, Worker};

const EVENTS_TABLE: &str = "peer_events";
const SNAPSHOTS_TABLE: &str = "peer_snapshots";
const VIEW_TABLE: &str = "peer_payment_view";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerStatus {
    #[default]
    New,
    Pending,
    Success,
    Refunded,
}

/// The aggregate: what decisions need.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PeerPayment {
    status: PeerStatus,
    amount: Decimal,
    refunded: Decimal,
    callbacks: Vec<String>,
}

#[derive(Debug)]
pub enum PeerCommand {
    Create {
        order_id: String,
        user_id: String,
        amount: Decimal,
        currency: String,
        method: String,
    },
    Pay {
        callback_no: String,
        amount: Decimal,
        gateway_trade_no: String,
    },
    Refund {
        refund_id: Uuid,
        amount: Decimal,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PeerEvent {
    Created {
        order_id: String,
        user_id: String,
        amount: Decimal,
        currency: String,
        method: String,
    },
    CallbackReceived {
        callback_no: String,
        amount: Decimal,
        gateway_trade_no: String,
    },
    Paid {
        gateway_trade_no: String,
    },
    RefundRequested {
        refund_id: Uuid,
        amount: Decimal,
        reason: String,
    },
}

impl DomainEvent for PeerEvent {
    fn event_type(&self) -> String {
        match self {
            PeerEvent::Created { .. } => "created",
            PeerEvent::CallbackReceived { .. } => "callback_received",
            PeerEvent::Paid { .. } => "paid",
            PeerEvent::RefundRequested { .. } => "refund_requested",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PeerError(String);

impl Aggregate for PeerPayment {
    const TYPE: &'static str = "payment";
    type Command = PeerCommand;
    type Event = PeerEvent;
    type Error = PeerError;
    type Services = ();

    async fn handle(
        &mut self,
        command: PeerCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), PeerError> {
        let refuse = |why: &str| Err(PeerError(why.to_owned()));
        match command {
            PeerCommand::Create {
                order_id,
                user_id,
                amount,
                currency,
                method,
            } => {
                if self.status != PeerStatus::New {
                    return refuse("payment already exists");
                }
                if amount <= Decimal::ZERO || amount.scale() > 2 {
                    return refuse("bad amount");
                }
                sink.write(
                    PeerEvent::Created {
                        order_id,
                        user_id,
                        amount,
                        currency,
                        method,
                    },
                    self,
                )
                .await;
            }
            PeerCommand::Pay {
                callback_no,
                amount,
                gateway_trade_no,
            } => {
                if self.status == PeerStatus::New {
                    return refuse("no such payment");
                }
                if self.callbacks.contains(&callback_no) {
                    return Ok(());
                }
                let applies = self.status == PeerStatus::Pending && amount == self.amount;
                let event = PeerEvent::CallbackReceived {
                    callback_no,
                    amount,
                    gateway_trade_no: gateway_trade_no.clone(),
                };
                sink.write(event, self).await;
                if applies {
                    sink.write(PeerEvent::Paid { gateway_trade_no }, self).await;
                }
            }
            PeerCommand::Refund {
                refund_id,
                amount,
                reason,
            } => {
                if self.status != PeerStatus::Success {
                    return refuse("only a paid payment can be refunded");
                }
                if amount <= Decimal::ZERO || self.refunded + amount > self.amount {
                    return refuse("refund exceeds the refundable amount");
                }
                sink.write(
                    PeerEvent::RefundRequested {
                        refund_id,
                        amount,
                        reason,
                    },
                    self,
                )
                .await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: PeerEvent) {
        match event {
            PeerEvent::Created { amount, .. } => {
                self.status = PeerStatus::Pending;
                self.amount = amount;
            }
            PeerEvent::CallbackReceived { callback_no, .. } => self.callbacks.push(callback_no),
            PeerEvent::Paid { .. } => self.status = PeerStatus::Success,
            PeerEvent::RefundRequested { amount, .. } => {
                self.refunded += amount;
                if self.refunded >= self.amount {
                    self.status = PeerStatus::Refunded;
                }
            }
        }
    }
}

/// The read model: the payment detail with its callbacks and refunds.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PeerPaymentView {
    id: String,
    order_id: String,
    user_id: String,
    amount: Decimal,
    currency: String,
    method: String,
    status: String,
    refunded_amount: Decimal,
    gateway_trade_no: Option<String>,
    callbacks: Vec<(String, Decimal)>,
    refunds: Vec<(Uuid, Decimal, String)>,
}

impl View<PeerPayment> for PeerPaymentView {
    fn update(&mut self, event: &EventEnvelope<PeerPayment>) {
        match &event.payload {
            PeerEvent::Created {
                order_id,
                user_id,
                amount,
                currency,
                method,
            } => {
                self.id = event.aggregate_id.clone();
                self.order_id = order_id.clone();
                self.user_id = user_id.clone();
                self.amount = *amount;
                self.currency = currency.clone();
                self.method = method.clone();
                self.status = "pending".into();
            }
            PeerEvent::CallbackReceived {
                callback_no,
                amount,
                ..
            } => self.callbacks.push((callback_no.clone(), *amount)),
            PeerEvent::Paid { gateway_trade_no } => {
                self.status = "success".into();
                self.gateway_trade_no = Some(gateway_trade_no.clone());
            }
            PeerEvent::RefundRequested {
                refund_id,
                amount,
                reason,
            } => {
                self.refunds.push((*refund_id, *amount, reason.clone()));
                self.refunded_amount += *amount;
            }
        }
    }
}

pub type PeerCqrs =
    CqrsFramework<PeerPayment, PersistedEventStore<PostgresEventRepository, PeerPayment>>;

/// Creates the peer's tables (postgres-es's schema) and its framework.
pub async fn setup(pool: &PgPool) -> anyhow::Result<Arc<PeerCqrs>> {
    for ddl in [
        format!(
            "CREATE TABLE {EVENTS_TABLE} (aggregate_type text NOT NULL, aggregate_id text NOT NULL, \
             sequence bigint CHECK (sequence >= 0) NOT NULL, event_type text NOT NULL, \
             event_version text NOT NULL, payload json NOT NULL, metadata json NOT NULL, \
             PRIMARY KEY (aggregate_type, aggregate_id, sequence))"
        ),
        format!(
            "CREATE TABLE {SNAPSHOTS_TABLE} (aggregate_type text NOT NULL, aggregate_id text NOT NULL, \
             last_sequence bigint CHECK (last_sequence >= 0) NOT NULL, \
             current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL, payload json NOT NULL, \
             PRIMARY KEY (aggregate_type, aggregate_id, last_sequence))"
        ),
        format!(
            "CREATE TABLE {VIEW_TABLE} (view_id text NOT NULL, version bigint CHECK (version >= 0) NOT NULL, \
             payload json NOT NULL, PRIMARY KEY (view_id))"
        ),
    ] {
        sqlx::query(&ddl).execute(pool).await?;
    }
    let repo =
        PostgresEventRepository::new(pool.clone()).with_tables(EVENTS_TABLE, SNAPSHOTS_TABLE);
    let store = PersistedEventStore::new_event_store(repo);
    let view = Arc::new(PostgresViewRepository::<PeerPaymentView, PeerPayment>::new(
        VIEW_TABLE,
        pool.clone(),
    ));
    let query = GenericQuery::new(view);
    Ok(Arc::new(CqrsFramework::new(
        store,
        vec![Box::new(query)],
        (),
    )))
}

enum Stage {
    Create,
    Pay(String),
    Refund(String),
}

/// One client running create → pay → refund flows back to back, one command per step.
pub struct PeerWorker {
    cqrs: Arc<PeerCqrs>,
    stage: Stage,
    worker: usize,
    seq: u64,
}

impl PeerWorker {
    pub fn new(cqrs: Arc<PeerCqrs>, worker: usize) -> Self {
        Self {
            cqrs,
            stage: Stage::Create,
            worker,
            seq: 0,
        }
    }
}

impl Worker for PeerWorker {
    async fn step(&mut self, rec: &mut Recorder) -> Step {
        let amount = Decimal::new(10_000, 2);
        let started = Instant::now();
        let stage = std::mem::replace(&mut self.stage, Stage::Create);
        let (id, command, next) = match stage {
            Stage::Create => {
                self.seq += 1;
                let id = Uuid::now_v7().to_string();
                let command = PeerCommand::Create {
                    order_id: format!("PEER-{}-{}", self.worker, self.seq),
                    user_id: format!("bench-user-{}", self.seq % 1000),
                    amount,
                    currency: "CNY".into(),
                    method: "alipay".into(),
                };
                (id.clone(), command, Stage::Pay(id))
            }
            Stage::Pay(id) => {
                let command = PeerCommand::Pay {
                    callback_no: format!("CB{}", Uuid::now_v7().simple()),
                    amount,
                    gateway_trade_no: format!("T{}", Uuid::now_v7().simple()),
                };
                (id.clone(), command, Stage::Refund(id))
            }
            Stage::Refund(id) => {
                let command = PeerCommand::Refund {
                    refund_id: Uuid::now_v7(),
                    amount: Decimal::new(3_000, 2),
                    reason: "bench refund".into(),
                };
                (id, command, Stage::Create)
            }
        };
        let outcome = self
            .cqrs
            .execute(&id, command)
            .await
            .map_err(|e| e.to_string());
        if outcome.is_ok() {
            self.stage = next;
        }
        rec.record(started, outcome);
        Step::Continue
    }
}
