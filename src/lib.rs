//! ledger: an event-sourced payment ledger with CQRS read models.
//!
//! The write side (`domain`, `service`, `store`) appends immutable events to PostgreSQL; the
//! relay (`bus`) publishes the committed log to NATS JetStream; the read side
//! (`projections`, at the top of the repository) folds the log into read tables that the API
//! (`api`) serves through an in-process cache; `gateway` talks to payment gateways.

pub mod api;
pub mod app;
pub mod audit_cli;
pub mod bench;
pub mod bus;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod demo;
pub mod domain;
pub mod gateway;
pub mod keyring;
pub mod reconcile;
pub mod replay;
pub mod service;
pub mod store;
pub mod telemetry;
pub mod tls;

#[path = "../projections/mod.rs"]
pub mod projections;
