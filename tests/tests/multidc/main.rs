//! Multi-DC scenarios: several DCs in one test, one vhost each on the shared broker, federated
//! full mesh (`meerkat_testkit::multi`). `federation` checks the links themselves; the other
//! modules run the issue-3 scenarios through real clients at different DCs.
//!
//! Accounts reach every DC by data replication (`data`). Tests on a DC set of their own may
//! register an account at every DC where it logs in (a `conflict` counts as done), which spares
//! them waiting for the replication; tests on the shared two DCs (`shared`) register at DC 1
//! and wait for the account at DC 2 ([`register_everywhere`]): there replication runs warm
//! and may bring one DC's record over the other's right after a login, resetting it.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]

mod failover;
mod federation;
mod gateways;
mod handover;
mod muc_heal;
mod origin;
mod replication;
mod restarts;
mod rosters;
mod stored;
mod three_dcs;
mod traces;
mod versions;

/// The tests that kill, restart, stop and cut nothing: on the run's shared two DCs
/// (`meerkat_testkit::shared`), several at once.
mod shared {
    mod accounts;
    mod archive;
    mod blocking;
    mod carbons;
    mod chat;
    mod data;
    mod interop;
    mod muc;
    mod pep;
    mod personal;
    mod presence;
    mod sessions;
    mod websocket;
}

use std::time::Duration;

use meerkat_testkit::client::pred::presence_of_type;
use meerkat_testkit::client::Client;
use meerkat_testkit::multi::MultiDc;
use meerkat_testkit::shared::{DcAccess, SharedDcs};
use meerkat_testkit::stack::StackOptions;
use meerkat_xmpp::{ns, Element};

/// How long session replication gets to show a session in every DC's directory.
pub const CONVERGE: Duration = Duration::from_secs(20);

/// `n` federated DCs, each with a session replicator.
pub async fn multi(n: usize) -> MultiDc {
    MultiDc::start(n, StackOptions::default())
        .await
        .expect("start DCs")
}

/// The run's shared two DCs (for tests that disturb nothing; unique account names).
pub async fn shared() -> &'static SharedDcs {
    meerkat_testkit::shared::two_dcs()
        .await
        .expect("the shared two DCs")
}

/// A unique account name for this test.
pub fn user(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// A new room name whose home, with both DCs up, is `home` (a MUC room is served by the first
/// DC of its rendezvous order that is up).
pub fn room_homed_at(home: &str) -> String {
    loop {
        let room = format!("{}@conference.example.com", user("room"));
        if router::muc_home_order(&room, ["dc1", "dc2"])[0] == home {
            return room;
        }
    }
}

pub async fn register(dc: &impl DcAccess, name: &str) {
    Client::register_account(&dc.client(), name, "secret-pw")
        .await
        .expect("register");
}

pub async fn login(dc: &impl DcAccess, name: &str, resource: &str) -> Client {
    Client::login(&dc.client(), name, "secret-pw", Some(resource))
        .await
        .expect("login")
}

/// Registered at `dc`, logged in there, roster requested, available.
pub async fn online(dc: &impl DcAccess, name: &str, resource: &str) -> Client {
    register(dc, name).await;
    available(dc, name, resource).await
}

/// Two new accounts, `(alice, bob)`: Alice registered at `dc1`, Bob at `dc2`, each known at
/// the other DC by data replication.
pub async fn accounts_apart(dc1: &impl DcAccess, dc2: &impl DcAccess) -> (String, String) {
    let (a, b) = (user("alice"), user("bob"));
    register(dc1, &a).await;
    register(dc2, &b).await;
    wait_account(dc1, &b).await;
    wait_account(dc2, &a).await;
    (a, b)
}

/// Registered at DC 1 of `m` and, by data replication, known at DC 2.
pub async fn register_everywhere(m: &SharedDcs, name: &str) {
    register(m.dc(1), name).await;
    wait_account(m.dc(2), name).await;
}

/// Logged in at `dc` (account already there), roster requested, available.
pub async fn available(dc: &impl DcAccess, name: &str, resource: &str) -> Client {
    let mut c = login(dc, name, resource).await;
    c.iq_ok("get", None, Element::new("query", ns::ROSTER))
        .await
        .expect("roster get");
    c.send_presence().await.expect("presence");
    c
}

pub fn presence(kind: &str, to: &str) -> Element {
    Element::new("presence", ns::CLIENT)
        .with_attr("type", kind)
        .with_attr("to", to)
}

/// Mutual presence subscription between two available clients.
pub async fn befriend(a: &mut Client, b: &mut Client) {
    let (aj, bj) = (a.bare_jid().to_owned(), b.bare_jid().to_owned());
    a.send(&presence("subscribe", &bj)).await.unwrap();
    b.expect("subscribe", presence_of_type(&aj, Some("subscribe")))
        .await
        .unwrap();
    b.send(&presence("subscribed", &aj)).await.unwrap();
    a.expect("their presence", presence_of_type(&bj, None))
        .await
        .unwrap();
    b.send(&presence("subscribe", &aj)).await.unwrap();
    a.expect("subscribe", presence_of_type(&bj, Some("subscribe")))
        .await
        .unwrap();
    a.send(&presence("subscribed", &bj)).await.unwrap();
    b.expect("their presence", presence_of_type(&aj, None))
        .await
        .unwrap();
}

/// Every message body `c` receives until `quiet` passes without one.
pub async fn bodies_until_quiet(c: &mut Client, quiet: Duration) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(el) = c
        .expect_within(quiet, "a message", |e| e.is("message", ns::CLIENT))
        .await
    {
        if let Some(body) = el.child_text("body", ns::CLIENT) {
            out.push(body);
        }
    }
    out
}

/// The DC's database, as its services see it.
pub async fn store(dc: &impl DcAccess) -> meerkat_store::Store {
    meerkat_store::Store::connect(dc.database_url())
        .await
        .expect("database")
}

/// Waits until `dc`'s database holds the account `name` (data replication brought it).
pub async fn wait_account(dc: &impl DcAccess, name: &str) {
    let s = store(dc).await;
    eventually("the account reached the DC", CONVERGE, || async {
        s.account_exists(name).await.unwrap()
    })
    .await;
}

/// Polls `check` until it holds, for at most `within`.
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = std::time::Instant::now() + within;
    while !check().await {
        assert!(
            std::time::Instant::now() < until,
            "{what}: not within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of `series` (`name{labels}` as it is written) on a service's admin `/metrics`;
/// 0 when absent.
pub async fn metric(admin: std::net::SocketAddr, series: &str) -> f64 {
    let text = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// Whether `dc` accepts `password` for `name` (a real SCRAM login).
pub async fn accepts(dc: &impl DcAccess, name: &str, password: &str) -> bool {
    let mut c = Client::connect(&dc.client()).await.expect("connect");
    let ok = c
        .authenticate(
            meerkat_testkit::client::Mechanism::ScramSha256,
            name,
            password,
        )
        .await
        .expect("authenticate")
        .is_ok();
    let _ = c.close().await;
    ok
}
