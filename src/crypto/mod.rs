//! Cryptography for the ledger: request signing, sealed payer data and signed audit digests.
//! Nothing here does I/O or reads configuration; callers pass keys in.

pub mod digest;
pub mod payer;
pub mod signing;
