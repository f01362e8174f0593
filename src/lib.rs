//! ledger: an event-sourced payment ledger with CQRS read models — the service.
//!
//! This crate is the top layer. It owns the command pipeline (`service`), the bus relay
//! (`bus`), the gateways and their drivers (`gateway`), the HTTP API (`api`) and the command
//! line (`cli`). It reads and writes only through the layers below: the pure domain
//! (`ledger_domain`), the event log (`ledger_store`, the only writer of `events`) and the read
//! side (`ledger_projections`, the only writer of the read tables and home of every read
//! query). It must not contain SQL. The layers are re-exported under their short names so
//! that callers write `ledger::domain::Money`.

pub use ledger_domain as domain;
pub use ledger_projections as projections;
pub use ledger_store as store;

pub mod api;
pub mod app;
pub mod audit_cli;
pub mod bus;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod demo;
pub mod doctor;
pub mod duties;
pub mod gateway;
pub mod reconcile;
pub mod server;
pub mod service;
pub mod signing;
pub mod simulate;
pub mod telemetry;
pub mod tls;
pub mod watch;
