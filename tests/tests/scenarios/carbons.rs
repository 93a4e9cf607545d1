//! Message carbons (XEP-0280) and the hints that touch them (XEP-0334): which resource of an
//! account gets which copy, `private` and `no-copy`, disabling, forged copies, bad requests;
//! and `no-store` for a recipient that is offline.
//!
//! "Nothing else arrived" is checked without waiting: each step ends with a barrier message
//! from the same sender (one route partition, so delivered in order after everything the step
//! caused), and what a client read up to the barrier is compared whole.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use meerkat_testkit::client::{chat, stanza_error_condition, Client};
use meerkat_testkit::stack::Dc;
use meerkat_xmpp::{carbons, ns, Element};

use crate::{dc, online, user};

const WAIT: Duration = Duration::from_secs(10);

/// Logged in with the given presence priority; with carbons enabled if `carbons`. The
/// enable result (or a ping) comes once the router has seen the presence too.
async fn resource(dc: &Dc, name: &str, res: &str, priority: i8, carbons: bool) -> Client {
    let mut c = login(dc, name, res).await;
    let presence = Element::new("presence", ns::CLIENT)
        .with_child(Element::new("priority", ns::CLIENT).with_text(priority.to_string()));
    c.send(&presence).await.unwrap();
    if carbons {
        enable(&mut c).await;
    } else {
        c.iq_ok("get", None, Element::new("ping", ns::PING))
            .await
            .unwrap();
    }
    c
}

async fn register(dc: &Dc, name: &str) {
    Client::register_account(&dc.client(), name, "secret-pw")
        .await
        .unwrap();
}

async fn login(dc: &Dc, name: &str, res: &str) -> Client {
    Client::login(&dc.client(), name, "secret-pw", Some(res))
        .await
        .unwrap()
}

async fn enable(c: &mut Client) {
    c.iq_ok("set", None, Element::new("enable", ns::CARBONS))
        .await
        .unwrap();
}

/// What a client saw: `msg <body>` for a message, `received <body>` / `sent <body>` for a
/// carbon (checked: from the account's bare JID, to the client's full JID, wrapping the
/// original with its addressing).
fn seen(c: &Client, el: &Element) -> String {
    let body = |m: &Element| m.child_text("body", ns::CLIENT).unwrap_or_default();
    let side = el
        .children()
        .find(|w| w.ns() == ns::CARBONS)
        .map(Element::name);
    match (side, carbons::forwarded(el)) {
        (Some(side), Some(inner)) if el.attr("from") == Some(c.bare_jid()) => {
            assert_eq!(el.attr("to"), Some(c.jid()), "{el}");
            assert!(inner.attr("from").is_some() && inner.attr("to").is_some());
            format!("{side} {}", body(inner))
        }
        (Some(side), _) => format!("forged {side} {}", body(el)),
        (None, _) => format!("msg {}", body(el)),
    }
}

/// Every message `c` reads up to the one whose (forwarded) body is `barrier`, described.
async fn until(c: &mut Client, barrier: &str) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        let el = c
            .expect_within(WAIT, barrier, |e| e.is("message", ns::CLIENT))
            .await
            .unwrap();
        let what = seen(c, &el);
        let done = what.ends_with(&format!(" {barrier}"));
        got.push(what);
        if done {
            return got;
        }
    }
}

#[tokio::test]
async fn carbons_copy_each_message_once_to_the_other_enabled_resources() {
    let dc = dc().await;
    let (a, b) = (user("alice"), user("bob"));
    register(&dc, &a).await;
    register(&dc, &b).await;
    // Alice: 1 is her main resource (a bare-JID chat goes there), 2 wants carbons, 3 does not.
    let mut a1 = resource(&dc, &a, "one", 5, true).await;
    let mut a2 = resource(&dc, &a, "two", 1, true).await;
    let mut a3 = resource(&dc, &a, "three", 1, false).await;
    let mut bob = resource(&dc, &b, "desk", 0, false).await;
    let (a1j, a2j, a3j, abare) = (
        a1.jid().to_owned(),
        a2.jid().to_owned(),
        a3.jid().to_owned(),
        a1.bare_jid().to_owned(),
    );
    let bobj = bob.jid().to_owned();

    // Bob to Alice's full and bare JIDs, a private message, a no-copy one, a forged carbon.
    bob.send(&chat(&a1j, "to full")).await.unwrap();
    bob.send(&chat(&abare, "to bare")).await.unwrap();
    let mut private = chat(&a1j, "private");
    private.push_child(Element::new("private", ns::CARBONS));
    bob.send(&private).await.unwrap();
    let mut no_copy = chat(&a1j, "no-copy");
    no_copy.push_child(Element::new("no-copy", ns::HINTS));
    bob.send(&no_copy).await.unwrap();
    let forged = chat(&a1j, "forged").with_child(
        Element::new("sent", ns::CARBONS)
            .with_child(Element::new("forwarded", ns::FORWARD).with_child(chat(&bobj, "inside"))),
    );
    bob.send(&forged).await.unwrap();
    // To resource 2 itself: 1 gets a copy (3 has carbons off).
    bob.send(&chat(&a2j, "to two")).await.unwrap();
    bob.send(&chat(&a1j, "bob done")).await.unwrap();

    assert_eq!(
        until(&mut a1, "bob done").await,
        [
            "msg to full",
            "msg to bare",
            "msg private",
            "msg no-copy",
            "forged sent forged",
            "received to two",
            "msg bob done"
        ]
    );
    assert_eq!(
        until(&mut a2, "bob done").await,
        [
            "received to full",
            "received to bare",
            "msg to two",
            "received bob done"
        ]
    );
    // The private message reached its recipient without the element.
    // (Checked on the stanza itself: `seen` only describes.)
    bob.send(&private).await.unwrap();
    let got = a1
        .expect("the private message again", |e| {
            e.child_text("body", ns::CLIENT).as_deref() == Some("private")
        })
        .await
        .unwrap();
    assert!(!got.has_child("private", ns::CARBONS), "{got}");

    // Alice sends from 1: a `sent` copy to 2, none to 1 itself nor to 3.
    a1.send(&chat(&bobj, "from one")).await.unwrap();
    let mut private = chat(&bobj, "private from one");
    private.push_child(Element::new("private", ns::CARBONS));
    a1.send(&private).await.unwrap();
    // To her own resource 3: 2 gets it as `received`, once.
    a1.send(&chat(&a3j, "one to three")).await.unwrap();
    a1.send(&chat(&a2j, "alice done")).await.unwrap();
    assert_eq!(
        until(&mut a2, "alice done").await,
        ["sent from one", "received one to three", "msg alice done"]
    );
    assert_eq!(
        until(&mut bob, "private from one").await,
        ["msg from one", "msg private from one"]
    );
    // Resource 3 never had carbons: only what was addressed to it.
    assert_eq!(until(&mut a3, "one to three").await, ["msg one to three"]);
    bob.send(&chat(&a3j, "bob to three")).await.unwrap();
    assert_eq!(until(&mut a3, "bob to three").await, ["msg bob to three"]);
    // ... of which 2 (carbons on) gets a copy.
    assert_eq!(
        until(&mut a2, "bob to three").await,
        ["received bob to three"]
    );

    // Disabled: 2 gets no more copies, of either side.
    a2.iq_ok("set", None, Element::new("disable", ns::CARBONS))
        .await
        .unwrap();
    bob.send(&chat(&a1j, "after disable")).await.unwrap();
    bob.send(&chat(&a2j, "bob barrier")).await.unwrap();
    a1.send(&chat(&bobj, "sent after disable")).await.unwrap();
    a1.send(&chat(&a2j, "alice barrier")).await.unwrap();
    let got = until(&mut a2, "bob barrier").await;
    let alice_first = got.iter().any(|m| m == "msg alice barrier");
    let rest: Vec<&String> = got.iter().filter(|m| *m != "msg alice barrier").collect();
    assert_eq!(rest, ["msg bob barrier"]);
    if !alice_first {
        assert_eq!(until(&mut a2, "alice barrier").await, ["msg alice barrier"]);
    }
    // Enabled twice in a row: still one copy each.
    enable(&mut a2).await;
    enable(&mut a2).await;
    bob.send(&chat(&a1j, "enabled again")).await.unwrap();
    assert_eq!(
        until(&mut a2, "enabled again").await,
        ["received enabled again"]
    );
    dc.stop().await.unwrap();
}

#[tokio::test]
async fn carbons_requests() {
    let dc = dc().await;
    let (a, b) = (user("alice"), user("bob"));
    let mut alice = online(&dc, &a, "one").await;
    online(&dc, &b, "desk").await;
    let bob_bare = format!("{b}@example.com");
    let cond = |r: Element| stanza_error_condition(&r);
    // `get` is not a request of carbons.
    let r = alice
        .iq("get", None, Element::new("enable", ns::CARBONS))
        .await
        .unwrap();
    assert_eq!(cond(r).as_deref(), Some("bad-request"));
    // Another account's carbons are not the sender's to change.
    let r = alice
        .iq("set", Some(&bob_bare), Element::new("enable", ns::CARBONS))
        .await
        .unwrap();
    assert_eq!(cond(r).as_deref(), Some("not-allowed"));
    // An element of the namespace that is not a request.
    let r = alice
        .iq("set", None, Element::new("private", ns::CARBONS))
        .await
        .unwrap();
    assert_eq!(cond(r).as_deref(), Some("bad-request"));
    // To the server or the own bare JID: both fine.
    alice
        .iq_ok(
            "set",
            Some("example.com"),
            Element::new("enable", ns::CARBONS),
        )
        .await
        .unwrap();
    let own = alice.bare_jid().to_owned();
    alice
        .iq_ok("set", Some(&own), Element::new("disable", ns::CARBONS))
        .await
        .unwrap();
    dc.stop().await.unwrap();
}

/// XEP-0334 `no-store` to an account with no resource online: not stored; a message with a
/// body is answered with service-unavailable, a chat state is dropped silently.
#[tokio::test]
async fn no_store_is_not_stored_offline() {
    let dc = dc().await;
    let (a, c) = (user("alice"), user("carol"));
    let mut alice = online(&dc, &a, "one").await;
    let carol = online(&dc, &c, "desk").await;
    let carol_bare = carol.bare_jid().to_owned();
    carol.close().await.unwrap();
    let no_store = |m: Element| m.with_child(Element::new("no-store", ns::HINTS));
    alice
        .send(&no_store(chat(&carol_bare, "not kept")))
        .await
        .unwrap();
    let err = alice
        .expect("the error", |e| e.attr("type") == Some("error"))
        .await
        .unwrap();
    assert_eq!(
        stanza_error_condition(&err).as_deref(),
        Some("service-unavailable")
    );
    let state = Element::new("message", ns::CLIENT)
        .with_attr("to", carol_bare.clone())
        .with_attr("type", "chat")
        .with_child(Element::new(
            "composing",
            "http://jabber.org/protocol/chatstates",
        ));
    alice.send(&no_store(state)).await.unwrap();
    alice.send(&chat(&carol_bare, "kept")).await.unwrap();
    // Stored and confirmed before the next stanza: the ping answers after it.
    alice
        .iq_ok("get", None, Element::new("ping", ns::PING))
        .await
        .unwrap();
    assert!(
        !alice.buffered().any(|e| e.attr("type") == Some("error")),
        "a second error"
    );
    let mut carol = login(&dc, &c, "desk").await;
    carol.send_presence().await.unwrap();
    let got = carol
        .expect("the stored message", |e| e.is("message", ns::CLIENT))
        .await
        .unwrap();
    assert_eq!(got.child_text("body", ns::CLIENT).as_deref(), Some("kept"));
    dc.stop().await.unwrap();
}
