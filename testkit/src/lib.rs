//! Test kit: the shared broker and database of a test run (`infra`), dedicated brokers for
//! fault tests, an XMPP test client, the timers of a test's DCs (`timers`: fast by default), the two DCs the tests that
//! disturb nothing share (`shared`), DCs of service processes (`procs`) and an OTLP trace
//! receiver (`otlp`). It starts every service from its library, so it sits beside the tests
//! at the top of the workspace, not under `shared/` with the crates the services build on.
pub mod blocking;
pub mod client;
pub mod infra;
pub mod mam;
pub use infra::*;
pub mod muc;
pub mod multi;
pub mod otlp;
pub mod pep;
pub mod personal;
pub mod procs;
pub mod shared;
pub mod stack;
pub mod timers;
