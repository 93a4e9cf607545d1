//! End-to-end scenarios: one binary, one module per area. Each test starts its own DC (fresh
//! vhost, fresh database) on the shared broker and database of the test run.

mod accounts;
mod archive;
mod auth;
mod blocking;
mod carbons;
mod csi;
mod delivery;
mod flood;
mod hostile;
mod interop;
mod offline;
mod pep;
mod personal;
mod resilience;
mod sm;
mod streams;
mod throttles;

use meerkat_testkit::client::Client;
use meerkat_testkit::stack::{Dc, StackOptions};

/// A DC with default options.
pub async fn dc() -> Dc {
    Dc::start(StackOptions::default()).await.expect("start DC")
}

/// A unique account name for this test.
pub fn user(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Registers `name` in-band and logs in with SCRAM-SHA-256 and the given resource.
pub async fn online(dc: &Dc, name: &str, resource: &str) -> Client {
    let cfg = dc.client();
    let mut c = Client::connect(&cfg).await.expect("connect");
    c.register(name, "secret-pw")
        .await
        .expect("register io")
        .expect("registered");
    drop(c);
    Client::login(&cfg, name, "secret-pw", Some(resource))
        .await
        .expect("login")
}
