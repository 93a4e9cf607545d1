//! Multi-DC scenarios: several DCs in one test, one vhost each on the shared broker, federated
//! full mesh (`meerkat_testkit::multi`). `federation` checks the links themselves; the other
//! modules run the issue-3 scenarios through real clients at different DCs.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]

mod federation;
