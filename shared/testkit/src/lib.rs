//! Test kit: the shared broker and database of a test run (`infra`), dedicated brokers for
//! fault tests, and an XMPP test client.
pub mod client;
pub mod infra;
pub use infra::*;
pub mod multi;
pub mod stack;
