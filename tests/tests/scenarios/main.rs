//! End-to-end scenarios: one binary, one module per area. Each test starts its own DC (fresh
//! vhost, fresh database) on the shared broker and database of the test run.

mod accounts;
mod archive;
mod auth;
mod blocking;
mod bosh;
mod carbons;
mod csi;
mod delivery;
mod flood;
mod hostile;
mod interop;
mod muc;
mod offline;
mod pep;
mod personal;
mod resilience;
mod sm;
mod streams;
mod throttles;
mod websocket;

use meerkat_testkit::client::pred::presence_of_type;
use meerkat_testkit::client::Client;
use meerkat_testkit::stack::{Dc, StackOptions};
use meerkat_xmpp::{ns, Element};

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

/// Mutual presence subscription between two available clients.
pub async fn befriend(a: &mut Client, b: &mut Client) {
    let (aj, bj) = (a.bare_jid().to_owned(), b.bare_jid().to_owned());
    let subscribe = |to: &str| {
        Element::new("presence", ns::CLIENT)
            .with_attr("type", "subscribe")
            .with_attr("to", to)
    };
    a.send(&subscribe(&bj)).await.expect("send subscribe");
    b.expect("subscribe", presence_of_type(&aj, Some("subscribe")))
        .await
        .expect("subscribe");
    b.approve_subscription(a).await.expect("approve");
    b.send(&subscribe(&aj)).await.expect("send subscribe");
    a.expect("subscribe", presence_of_type(&bj, Some("subscribe")))
        .await
        .expect("subscribe");
    a.approve_subscription(b).await.expect("approve");
}
