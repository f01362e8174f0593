//! Micro benchmarks of request signing (SPEC §6): what every client pays per request and
//! what the server pays to check it.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use ledger::signing;

const SECRET: &str = "bench-secret-0123456789";
const TS: &str = "1700000000";
const PATH: &str = "/api/v1/payments/create";
const BODY: &[u8] = br#"{"amount":"100.00","currency":"CNY","payment_method":"alipay","order_id":"ORD-1","user_id":"U-1"}"#;

fn bench_signing(c: &mut Criterion) {
    let nonce = signing::new_nonce();
    c.bench_function("new nonce", |b| b.iter(signing::new_nonce));
    c.bench_function("sign a create request", |b| {
        b.iter(|| signing::sign(black_box(SECRET), TS, &nonce, "POST", PATH, black_box(BODY)))
    });
    let signature = signing::sign(SECRET, TS, &nonce, "POST", PATH, BODY);
    c.bench_function("verify a create request", |b| {
        b.iter(|| {
            signing::verify(
                black_box(SECRET),
                TS,
                &nonce,
                "POST",
                PATH,
                black_box(BODY),
                &signature,
            )
        })
    });
    c.bench_function("sign a GET (empty body)", |b| {
        b.iter(|| {
            signing::sign(
                black_box(SECRET),
                TS,
                &nonce,
                "GET",
                "/api/v1/payments?page=1&size=10",
                b"",
            )
        })
    });
}

criterion_group!(benches, bench_signing);
criterion_main!(benches);
