//! XEP-0191 blocking at one DC: the list (get, block, unblock, unblock all) with its pushes to
//! the resources that asked for it, what a blocked contact's stanzas meet (service-unavailable,
//! nothing for presence, no offline storage), what the user's own stanzas to a blocked contact
//! meet (not-acceptable + `<blocked/>`), presence cut both ways, domain items, and the limits.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use meerkat_testkit::blocking::{block, blocklist, push, unblock, wait_interest};
use meerkat_testkit::client::pred::{message_with_body, presence_of_type};
use meerkat_testkit::client::{stanza_error_condition, Client};
use meerkat_testkit::stack::Dc;
use meerkat_xmpp::{ns, Element};

use crate::{befriend, dc, online, user};

const QUIET: Duration = Duration::from_millis(500);
const CONVERGE: Duration = Duration::from_secs(10);

fn routers(dc: &Dc) -> Vec<std::net::SocketAddr> {
    dc.routers.iter().map(|r| r.admin).collect()
}

/// Logged in, block list requested (and known to the routers), available.
async fn watching(dc: &Dc, name: &str, resource: &str) -> Client {
    let mut c = Client::login(&dc.client(), name, "secret-pw", Some(resource))
        .await
        .unwrap();
    blocklist(&mut c).await.unwrap();
    wait_interest(&routers(dc), c.jid(), CONVERGE)
        .await
        .unwrap();
    c.send_presence().await.unwrap();
    c
}

fn chat(to: &str, body: &str) -> Element {
    Element::new("message", ns::CLIENT)
        .with_attr("to", to)
        .with_attr("type", "chat")
        .with_attr("id", format!("m-{body}"))
        .with_child(Element::new("body", ns::CLIENT).with_text(body))
}

/// The error answering the message `m-{body}`.
async fn message_error(c: &mut Client, body: &str) -> Element {
    let id = format!("m-{body}");
    c.expect("a message error", |e| {
        e.is("message", ns::CLIENT)
            && e.attr("type") == Some("error")
            && e.attr("id") == Some(id.as_str())
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn blocking_scenarios() {
    let dc = dc().await;
    list_block_unblock_and_pushes(&dc).await;
    a_blocked_contact_cannot_reach_the_user(&dc).await;
    presence_is_cut_both_ways(&dc).await;
    domain_items_and_bad_requests(&dc).await;
    dc.stop().await.unwrap();
}

async fn list_block_unblock_and_pushes(dc: &Dc) {
    let alice = user("alice");
    drop(online(dc, &alice, "setup").await);
    let mut phone = watching(dc, &alice, "phone").await;
    let mut laptop = watching(dc, &alice, "laptop").await;
    // A resource that never asked for the list gets no pushes.
    let mut tablet = Client::login(&dc.client(), &alice, "secret-pw", Some("tablet"))
        .await
        .unwrap();
    tablet.send_presence().await.unwrap();
    assert_eq!(blocklist(&mut phone).await.unwrap(), Vec::<String>::new());

    block(&mut phone, &["Eve@Example.com", "mallory@example.com/desk"])
        .await
        .unwrap()
        .unwrap();
    for c in [&mut phone, &mut laptop] {
        let p = c.expect("block push", push("block")).await.unwrap();
        let mut jids =
            meerkat_testkit::blocking::item_jids(p.get_child("block", ns::BLOCKING).unwrap());
        jids.sort();
        assert_eq!(jids, ["eve@example.com", "mallory@example.com/desk"]);
    }
    assert_eq!(
        blocklist(&mut laptop).await.unwrap(),
        ["eve@example.com", "mallory@example.com/desk"]
    );

    unblock(&mut laptop, &["eve@example.com"])
        .await
        .unwrap()
        .unwrap();
    for c in [&mut phone, &mut laptop] {
        let p = c.expect("unblock push", push("unblock")).await.unwrap();
        let jids =
            meerkat_testkit::blocking::item_jids(p.get_child("unblock", ns::BLOCKING).unwrap());
        assert_eq!(jids, ["eve@example.com"]);
    }
    assert_eq!(
        blocklist(&mut phone).await.unwrap(),
        ["mallory@example.com/desk"]
    );

    // Unblock all: an empty <unblock/>, pushed as such.
    unblock(&mut phone, &[]).await.unwrap().unwrap();
    for c in [&mut phone, &mut laptop] {
        let p = c.expect("unblock-all push", push("unblock")).await.unwrap();
        assert_eq!(
            p.get_child("unblock", ns::BLOCKING)
                .unwrap()
                .children()
                .count(),
            0
        );
    }
    assert!(blocklist(&mut phone).await.unwrap().is_empty());

    // One push per change at each interested resource, none at the other.
    for c in [&mut phone, &mut laptop, &mut tablet] {
        c.expect_none(QUIET, |e| push("block")(e) || push("unblock")(e))
            .await
            .unwrap();
    }
}

async fn a_blocked_contact_cannot_reach_the_user(dc: &Dc) {
    let (alice, eve) = (user("alice"), user("eve"));
    drop(online(dc, &alice, "setup").await);
    let mut a = watching(dc, &alice, "phone").await;
    let mut e = online(dc, &eve, "desk").await;
    e.send_presence().await.unwrap();
    let (aj, ej) = (a.bare_jid().to_owned(), e.bare_jid().to_owned());
    block(&mut a, &[&ej]).await.unwrap().unwrap();
    // Eve never saw Alice's presence: blocking tells her nothing (not even Alice's resources).
    e.expect_none(QUIET, |s| {
        s.is("presence", ns::CLIENT) && s.attr("from").is_some_and(|f| f.starts_with(aj.as_str()))
    })
    .await
    .unwrap();

    // Eve's message: service-unavailable, and Alice sees nothing of it.
    e.send(&chat(&aj, "hello-bare")).await.unwrap();
    let err = message_error(&mut e, "hello-bare").await;
    assert_eq!(
        stanza_error_condition(&err).as_deref(),
        Some("service-unavailable")
    );
    e.send(&chat(a.jid(), "hello-full")).await.unwrap();
    message_error(&mut e, "hello-full").await;
    // Eve's iq to Alice's resource: service-unavailable too.
    let ping = e
        .iq("get", Some(a.jid()), Element::new("ping", ns::PING))
        .await
        .unwrap();
    assert_eq!(
        stanza_error_condition(&ping).as_deref(),
        Some("service-unavailable")
    );
    a.expect_none(QUIET, |s| {
        (s.is("message", ns::CLIENT) || s.is("iq", ns::CLIENT))
            && s.attr("from").is_some_and(|f| f.starts_with(ej.as_str()))
    })
    .await
    .unwrap();

    // Alice's message to Eve: not-acceptable with <blocked/>; Eve gets nothing.
    a.send(&chat(&ej, "to-eve")).await.unwrap();
    let err = message_error(&mut a, "to-eve").await;
    assert_eq!(
        stanza_error_condition(&err).as_deref(),
        Some("not-acceptable")
    );
    assert!(err
        .get_child("error", ns::CLIENT)
        .is_some_and(|x| x.has_child("blocked", ns::BLOCKING_ERRORS)));
    e.expect_none(QUIET, message_with_body("to-eve"))
        .await
        .unwrap();

    // Alice offline: Eve's message is refused, not stored for her next login.
    a.close().await.unwrap();
    e.send(&chat(&aj, "while-away")).await.unwrap();
    message_error(&mut e, "while-away").await;
    let mut back = Client::login(&dc.client(), &alice, "secret-pw", Some("phone"))
        .await
        .unwrap();
    back.send_presence().await.unwrap();
    back.expect_none(QUIET, message_with_body("while-away"))
        .await
        .unwrap();

    // Unblocked: Eve reaches her again.
    unblock(&mut back, &[&ej]).await.unwrap().unwrap();
    e.send_message(&aj, "after-unblock").await.unwrap();
    back.expect("eve's message", message_with_body("after-unblock"))
        .await
        .unwrap();
}

async fn presence_is_cut_both_ways(dc: &Dc) {
    let (alice, eve) = (user("alice"), user("eve"));
    drop(online(dc, &alice, "setup").await);
    let mut a = watching(dc, &alice, "phone").await;
    let mut e = online(dc, &eve, "desk").await;
    e.send_presence().await.unwrap();
    befriend(&mut a, &mut e).await;
    let (a_full, e_full, ej) = (
        a.jid().to_owned(),
        e.jid().to_owned(),
        e.bare_jid().to_owned(),
    );

    // Blocking sends Eve Alice's unavailable presence (XEP-0191 §3.3).
    block(&mut a, &[&ej]).await.unwrap().unwrap();
    e.expect(
        "alice unavailable",
        presence_of_type(&a_full, Some("unavailable")),
    )
    .await
    .unwrap();
    // Neither sees the other's presence any more.
    let away = Element::new("presence", ns::CLIENT)
        .with_child(Element::new("show", ns::CLIENT).with_text("away"));
    a.send(&away).await.unwrap();
    e.send(&away).await.unwrap();
    e.expect_none(QUIET, presence_of_type(&a_full, None))
        .await
        .unwrap();
    a.expect_none(QUIET, presence_of_type(&e_full, None))
        .await
        .unwrap();
    // A probe at login shows nothing of Eve either.
    let mut laptop = Client::login(&dc.client(), &alice, "secret-pw", Some("laptop"))
        .await
        .unwrap();
    laptop.send_presence().await.unwrap();
    laptop
        .expect_none(QUIET, presence_of_type(&e_full, None))
        .await
        .unwrap();
    e.expect_none(QUIET, presence_of_type(laptop.jid(), None))
        .await
        .unwrap();

    // Unblocked: Eve, subscribed, sees Alice again (§3.4).
    unblock(&mut a, &[&ej]).await.unwrap().unwrap();
    e.expect("alice's presence", presence_of_type(&a_full, None))
        .await
        .unwrap();
}

async fn domain_items_and_bad_requests(dc: &Dc) {
    let (alice, eve) = (user("alice"), user("eve"));
    drop(online(dc, &alice, "setup").await);
    let mut a = watching(dc, &alice, "phone").await;
    let mut e = online(dc, &eve, "desk").await;
    let aj = a.bare_jid().to_owned();

    // A domain item blocks everyone there.
    block(&mut a, &["example.com"]).await.unwrap().unwrap();
    e.send(&chat(&aj, "from-the-domain")).await.unwrap();
    let err = message_error(&mut e, "from-the-domain").await;
    assert_eq!(
        stanza_error_condition(&err).as_deref(),
        Some("service-unavailable")
    );
    // The server itself still answers Alice.
    a.iq_ok("get", Some("example.com"), Element::new("ping", ns::PING))
        .await
        .unwrap();
    unblock(&mut a, &[]).await.unwrap().unwrap();

    // Bad requests (XEP-0191 §3.2, §3.3).
    assert_eq!(block(&mut a, &[]).await.unwrap(), Err("bad-request".into()));
    assert_eq!(
        block(&mut a, &["@bad"]).await.unwrap(),
        Err("jid-malformed".into())
    );
    assert_eq!(
        unblock(&mut a, &["eve@example.com/"]).await.unwrap(),
        Err("jid-malformed".into())
    );
    let wrong = a
        .iq("set", None, Element::new("blocklist", ns::BLOCKING))
        .await
        .unwrap();
    assert_eq!(
        stanza_error_condition(&wrong).as_deref(),
        Some("bad-request")
    );

    // Limits: 100 items a request (the routers' max_block_request), 1000 a list (max_blocked).
    let jids: Vec<String> = (0..101).map(|i| format!("spam{i}@spam.example")).collect();
    let refs: Vec<&str> = jids.iter().map(String::as_str).collect();
    assert_eq!(
        block(&mut a, &refs).await.unwrap(),
        Err("resource-constraint".into())
    );
    for batch in 0..10 {
        let jids: Vec<String> = (0..100)
            .map(|i| format!("spam{batch}-{i}@spam.example"))
            .collect();
        let refs: Vec<&str> = jids.iter().map(String::as_str).collect();
        block(&mut a, &refs).await.unwrap().unwrap();
    }
    assert_eq!(
        block(&mut a, &["one-more@spam.example"]).await.unwrap(),
        Err("resource-constraint".into())
    );
    assert_eq!(blocklist(&mut a).await.unwrap().len(), 1000);
    // Re-blocking a listed JID adds nothing and is accepted.
    block(&mut a, &["spam0-0@spam.example"])
        .await
        .unwrap()
        .unwrap();
    unblock(&mut a, &[]).await.unwrap().unwrap();
    assert!(blocklist(&mut a).await.unwrap().is_empty());

    // The server advertises the feature.
    let info = a
        .iq_ok(
            "get",
            Some("example.com"),
            Element::new("query", ns::DISCO_INFO),
        )
        .await
        .unwrap();
    assert!(info
        .get_child("query", ns::DISCO_INFO)
        .unwrap()
        .children()
        .any(|f| f.is("feature", ns::DISCO_INFO) && f.attr("var") == Some(ns::BLOCKING)));
}
