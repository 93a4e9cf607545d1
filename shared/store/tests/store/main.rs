//! Store tests against a real PostgreSQL, one fresh database per test.

// Test helpers outside #[test] functions unwrap too; a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod accounts;
mod archive;
mod blocking;
mod helpers;
mod offline;
mod pep;
mod personal;
mod replication;
mod roster;
mod throttle;
