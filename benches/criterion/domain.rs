//! Micro benchmarks of the pure write-side pieces: `decide` and `evolve` over a payment's
//! life, event serialisation (to the stored `data` and back), and the canonical bytes and
//! SHA-256 that chain every event.

use std::hint::black_box;

use chrono::Utc;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use ledger::domain::payment::Notification;
use ledger::domain::{
    decide, evolve, fold, Command, Currency, Money, NotifyOutcome, PaymentEvent, PaymentMethod,
};
use ledger::store::event::{canonical_bytes, sha256_hex, truncate_to_micros, GENESIS_HASH};
use rust_decimal::Decimal;
use uuid::Uuid;

fn create() -> Command {
    let id = Uuid::now_v7();
    Command::Create {
        payment_id: id,
        payment_no: format!("P{}", id.simple()).to_uppercase(),
        order_id: "ORD-1".into(),
        user_id: "U-1".into(),
        amount: Money::parse("100.00", Currency::from_code("CNY").expect("CNY exists"))
            .expect("a valid amount"),
        method: PaymentMethod::Alipay,
        payment_url: "http://127.0.0.1:8080/checkout/P1".into(),
        return_url: None,
        merchant: None,
        payer: None,
    }
}

fn notify() -> Command {
    Command::Notify(Notification {
        callback_id: Uuid::now_v7(),
        callback_no: "CB-1".into(),
        gateway: PaymentMethod::Alipay,
        outcome: NotifyOutcome::Success,
        amount: Decimal::new(10_000, 2),
        gateway_trade_no: "T-1".into(),
        refund_no: None,
        paid_at: truncate_to_micros(Utc::now()),
    })
}

fn refund() -> Command {
    let refund_id = Uuid::now_v7();
    Command::RequestRefund {
        refund_id,
        refund_no: format!("R{}", refund_id.simple()).to_uppercase(),
        amount: Decimal::new(3_000, 2),
        reason: "customer request".into(),
    }
}

/// The events of create → notify → refund, decided by the domain.
fn life() -> Vec<PaymentEvent> {
    let mut state = None;
    let mut events = Vec::new();
    for command in [create(), notify(), refund()] {
        for e in decide(&state, &command).expect("the flow is valid") {
            state = evolve(state, &e);
            events.push(e);
        }
    }
    events
}

fn bench_decide_evolve(c: &mut Criterion) {
    let events = life();
    let paid = fold(events[..3].iter()).expect("three events fold");
    let state = Some(paid);
    let command = refund();
    c.bench_function("decide refund on a paid payment", |b| {
        b.iter(|| decide(black_box(&state), black_box(&command)))
    });
    let create = create();
    c.bench_function("decide create", |b| {
        b.iter(|| decide(black_box(&None), black_box(&create)))
    });
    c.bench_function("fold a payment's 4 events", |b| {
        b.iter(|| fold(black_box(&events).iter()))
    });
    c.bench_function("evolve one event (refund_requested)", |b| {
        b.iter_batched(
            || state.clone(),
            |s| evolve(s, black_box(&events[3])),
            BatchSize::SmallInput,
        )
    });
}

fn bench_serialisation(c: &mut Criterion) {
    let events = life();
    let created = &events[0];
    c.bench_function("serialise created event data", |b| {
        b.iter(|| black_box(created).data())
    });
    let data = created.data();
    c.bench_function("deserialise created event data", |b| {
        b.iter_batched(
            || data.clone(),
            |d| PaymentEvent::from_parts("created", d),
            BatchSize::SmallInput,
        )
    });
    let text = data.to_string();
    c.bench_function("parse created event data from JSON text", |b| {
        b.iter(|| serde_json::from_str::<serde_json::Value>(black_box(&text)))
    });
}

fn bench_hashing(c: &mut Criterion) {
    let events = life();
    let data = events[0].data();
    let metadata =
        serde_json::json!({ "actor_key_id": "k1", "request_id": Uuid::now_v7().to_string() });
    let (event_id, stream_id) = (Uuid::now_v7(), Uuid::now_v7());
    let at = truncate_to_micros(Utc::now());
    let canonical = || {
        canonical_bytes(
            1,
            event_id,
            stream_id,
            1,
            "created",
            &data,
            &metadata,
            at,
            GENESIS_HASH,
        )
    };
    c.bench_function("canonical bytes of a created event", |b| b.iter(canonical));
    let bytes = canonical();
    c.bench_function("sha256 hex of canonical bytes", |b| {
        b.iter(|| sha256_hex(black_box(bytes.as_bytes())))
    });
    c.bench_function("canonical bytes + sha256 (per appended event)", |b| {
        b.iter(|| sha256_hex(canonical().as_bytes()))
    });
}

criterion_group!(
    benches,
    bench_decide_evolve,
    bench_serialisation,
    bench_hashing
);
criterion_main!(benches);
