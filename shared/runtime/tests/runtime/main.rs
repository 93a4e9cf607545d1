//! Tests of the service runtime through its public API (one binary for all of them).

// Test helpers outside #[test] functions may unwrap too: a panic is a test failure.
#![allow(clippy::unwrap_used)]

mod admin;
mod config;
mod shutdown;
mod telemetry;
mod telemetry_init;
