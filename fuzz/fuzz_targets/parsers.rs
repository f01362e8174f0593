//! Fuzz target over the request parsers: amounts, currencies, methods and statuses, JSON
//! amount fields, query strings and times, signature headers, Accept-Language and payer
//! masking. Any panic is a finding; the invariants live in `exercise.rs`, shared with the
//! property test `tests/parsers_props.rs`.
#![no_main]

#[path = "../exercise.rs"]
mod exercise;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    exercise::parsers(data);
});
