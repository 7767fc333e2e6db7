//! The integration tests, one binary: each module was a test crate of its
//! own, and each of those linked the whole library again, so a change to
//! `src/` relinked seven binaries instead of one.
//!
//! Run one module's tests with a filter on its path, e.g.
//! `cargo test --release --test it records::`.
//! Proptest keeps its regression seeds in `tests/proptest-regressions/`
//! (`<module>.txt`): its default places them beside the directory that
//! holds `main.rs`.

mod cli;
mod codec_corruption;
mod codec_golden;
mod codec_round_trip;
mod common;
mod fake_broker;
mod records;
mod remap_properties;
mod schema_matches_kafka_specs;
