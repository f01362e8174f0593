//! The domain's tests: given/when/then aggregate tests, and property tests of the aggregate,
//! the view fold and money. Pure and synchronous, so they need no database.

mod aggregate;
mod properties;
