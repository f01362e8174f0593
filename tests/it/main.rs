//! The integration tests: one test binary (matklad, "Delete Cargo Integration Tests"), so the
//! library is linked once. Every test talks to the real PostgreSQL and NATS, gets a fresh
//! database and its own NATS prefix and stream, and drops them afterwards, so they run in
//! parallel. Tests that need a process of their own (signals, a killed node) start the real
//! `ledger` binary as a child process from here.

mod common;

mod api_auth;
mod api_endpoints;
mod api_hostile;
mod api_idempotency;
mod api_smoke;
mod bench_harness;
mod browser;
mod cluster;
mod contract;
mod crash;
mod event_log;
mod first_ten_minutes;
mod fold_agreement;
mod gateway;
mod metrics;
mod money_safety;
mod pages_api;
mod parsers_props;
mod projections;
mod real_gateways;
mod reconcile;
mod relay;
mod shred;
mod shutdown;
mod tamper;
mod tls;
mod torture;
mod web_unit;
