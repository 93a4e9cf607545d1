//! Router scenarios end to end: real broker, database, gateway and XMPP clients. Messages to
//! full and bare JIDs, offline storage and its bound, iq errors, disco/ping/version, rosters and
//! the subscription handshake, presence broadcast and probes, directed presence.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use meerkat_testkit::client::pred::{iq_request, message_with_body, presence_of_type};
use meerkat_testkit::client::{stanza_error_condition, Client};
use meerkat_testkit::shared::DcAccess;
use meerkat_testkit::stack::{Dc, StackOptions};
use meerkat_xmpp::{ns, Element};

const QUIET: Duration = Duration::from_millis(500);
/// Offline messages kept per user by this file's DC (the routers' `max_offline`).
const OFFLINE_LIMIT: u32 = 3;

fn user(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

async fn dc() -> Dc {
    Dc::start(StackOptions {
        max_offline: Some(OFFLINE_LIMIT),
        ..StackOptions::default()
    })
    .await
    .expect("start DC")
}

async fn register(dc: &Dc, name: &str) {
    Client::register_account(&dc.client(), name, "secret-pw")
        .await
        .expect("register");
}

async fn login(dc: &Dc, name: &str, resource: &str) -> Client {
    Client::login(&dc.client(), name, "secret-pw", Some(resource))
        .await
        .expect("login")
}

/// Registered, logged in, roster requested, available.
async fn online(dc: &Dc, name: &str, resource: &str) -> Client {
    register(dc, name).await;
    let mut c = login(dc, name, resource).await;
    roster(&mut c).await;
    c.send_presence().await.expect("presence");
    c
}

async fn roster(c: &mut Client) -> Element {
    c.iq_ok("get", None, Element::new("query", ns::ROSTER))
        .await
        .expect("roster get")
}

fn roster_item<'a>(reply: &'a Element, jid: &str) -> Option<&'a Element> {
    reply
        .get_child("query", ns::ROSTER)?
        .children()
        .find(|i| i.attr("jid") == Some(jid))
}

fn push_for<'a>(jid: &'a str, sub: &'a str) -> impl Fn(&Element) -> bool + 'a {
    move |el| {
        iq_request("query", ns::ROSTER)(el)
            && el
                .get_child("query", ns::ROSTER)
                .and_then(|q| q.get_child("item", ns::ROSTER))
                .is_some_and(|i| i.attr("jid") == Some(jid) && i.attr("subscription") == Some(sub))
    }
}

async fn ack_push(c: &mut Client, push: &Element) {
    let mut r = Element::new("iq", ns::CLIENT).with_attr("type", "result");
    if let Some(id) = push.attr("id") {
        r.set_attr("id", id);
    }
    c.send(&r).await.expect("push result");
}

fn presence(kind: &str, to: &str) -> Element {
    Element::new("presence", ns::CLIENT)
        .with_attr("type", kind)
        .with_attr("to", to)
}

/// Alice and Bob with a mutual (both) subscription, both online.
async fn friends(dc: &Dc) -> (Client, Client) {
    let (a, b) = (user("fa"), user("fb"));
    let mut alice = online(dc, &a, "phone").await;
    let mut bob = online(dc, &b, "desk").await;
    let (aj, bj) = (alice.bare_jid().to_owned(), bob.bare_jid().to_owned());
    alice.send(&presence("subscribe", &bj)).await.unwrap();
    bob.expect("subscribe", presence_of_type(&aj, Some("subscribe")))
        .await
        .unwrap();
    bob.send(&presence("subscribed", &aj)).await.unwrap();
    bob.send(&presence("subscribe", &aj)).await.unwrap();
    alice
        .expect("subscribe", presence_of_type(&bj, Some("subscribe")))
        .await
        .unwrap();
    alice.send(&presence("subscribed", &bj)).await.unwrap();
    alice
        .expect("bob's presence", presence_of_type(&bj, None))
        .await
        .unwrap();
    bob.expect("alice's presence", presence_of_type(&aj, None))
        .await
        .unwrap();
    (alice, bob)
}

#[tokio::test]
async fn router_scenarios() {
    let dc = dc().await;
    chat_to_full_and_bare_jids(&dc).await;
    offline_messages_carry_a_delay(&dc).await;
    offline_store_is_bounded(&dc).await;
    iq_errors(&dc).await;
    disco_ping_version(&dc).await;
    subscription_handshake_both_online(&dc).await;
    subscription_request_waits_for_login(&dc).await;
    a_request_asked_back_before_it_is_answered_stays_the_contacts(&dc).await;
    a_pre_approval_answers_the_request_that_follows(&dc).await;
    a_request_read_as_another_dcs_answer_lands_is_not_shown(&dc).await;
    presence_probe_and_broadcast(&dc).await;
    roster_versioning_and_remove(&dc).await;
    directed_presence_and_a_lost_connection(&dc).await;
    dc.stop().await.unwrap();
}

async fn chat_to_full_and_bare_jids(dc: &Dc) {
    let (a, b) = (user("ca"), user("cb"));
    let mut alice = online(dc, &a, "phone").await;
    let mut bob = online(dc, &b, "desk").await;
    let (bob_full, bob_bare) = (bob.jid().to_owned(), bob.bare_jid().to_owned());
    alice.send_message(&bob_full, "to full").await.unwrap();
    let m = bob
        .expect("message to full JID", message_with_body("to full"))
        .await
        .unwrap();
    assert_eq!(m.attr("from"), Some(alice.jid()));
    // A forged `from` is replaced by the sender's authenticated full JID.
    let forged = Element::new("message", ns::CLIENT)
        .with_attr("to", bob_full.clone())
        .with_attr("from", format!("{bob_bare}/mallory"))
        .with_attr("type", "chat")
        .with_child(Element::new("body", ns::CLIENT).with_text("forged"));
    alice.send(&forged).await.unwrap();
    let m = bob
        .expect("message with a forged from", message_with_body("forged"))
        .await
        .unwrap();
    assert_eq!(m.attr("from"), Some(alice.jid()));
    alice.send_message(&bob_bare, "to bare").await.unwrap();
    bob.expect("message to bare JID", message_with_body("to bare"))
        .await
        .unwrap();
    // A chat to a resource that does not exist goes to the account.
    alice
        .send_message(&format!("{bob_bare}/gone"), "to gone")
        .await
        .unwrap();
    bob.expect("message to a gone resource", message_with_body("to gone"))
        .await
        .unwrap();
    // Two resources with equal priority both get a bare-JID chat.
    let mut bob2 = login(dc, &b, "laptop").await;
    bob2.send_presence().await.unwrap();
    bob.expect("bob2's presence", presence_of_type(bob2.jid(), None))
        .await
        .unwrap();
    alice.send_message(&bob_bare, "to both").await.unwrap();
    bob.expect("first resource", message_with_body("to both"))
        .await
        .unwrap();
    bob2.expect("second resource", message_with_body("to both"))
        .await
        .unwrap();
    // A headline to a full JID without a session is dropped, silently.
    let headline = Element::new("message", ns::CLIENT)
        .with_attr("to", format!("{bob_bare}/gone"))
        .with_attr("type", "headline")
        .with_child(Element::new("body", ns::CLIENT).with_text("news"));
    alice.send(&headline).await.unwrap();
    bob.expect_none(QUIET, message_with_body("news"))
        .await
        .unwrap();
    alice
        .expect_none(QUIET, |e| e.attr("type") == Some("error"))
        .await
        .unwrap();
}

async fn offline_messages_carry_a_delay(dc: &Dc) {
    let (a, b) = (user("oa"), user("ob"));
    let mut alice = online(dc, &a, "phone").await;
    register(dc, &b).await;
    let bob_bare = format!("{b}@example.com");
    alice.send_message(&bob_bare, "while away").await.unwrap();
    alice.send_message(&bob_bare, "second").await.unwrap();
    alice
        .expect_none(QUIET, |e| e.attr("type") == Some("error"))
        .await
        .unwrap();
    let mut bob = login(dc, &b, "desk").await;
    // Nothing before initial presence.
    bob.expect_none(QUIET, message_with_body("while away"))
        .await
        .unwrap();
    bob.send_presence().await.unwrap();
    let m = bob
        .expect("offline message", message_with_body("while away"))
        .await
        .unwrap();
    let delay = m.get_child("delay", ns::DELAY).expect("delay element");
    assert_eq!(delay.attr("from"), Some("example.com"));
    assert!(delay.attr("stamp").is_some());
    let second = bob.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        second.child_text("body", ns::CLIENT).as_deref(),
        Some("second"),
        "order kept"
    );
    // Delivered once: a new session gets nothing more.
    drop(bob);
    let mut again = login(dc, &b, "other").await;
    again.send_presence().await.unwrap();
    again
        .expect_none(Duration::from_secs(1), message_with_body("while away"))
        .await
        .unwrap();
}

async fn offline_store_is_bounded(dc: &Dc) {
    let (a, b) = (user("fa"), user("fb"));
    let mut alice = online(dc, &a, "phone").await;
    register(dc, &b).await;
    let bob_bare = format!("{b}@example.com");
    for i in 0..OFFLINE_LIMIT {
        alice
            .send_message(&bob_bare, &format!("kept {i}"))
            .await
            .unwrap();
    }
    alice.send_message(&bob_bare, "one too many").await.unwrap();
    let e = alice
        .expect("error for the message over the bound", |e| {
            e.name() == "message" && e.attr("type") == Some("error")
        })
        .await
        .unwrap();
    assert_eq!(
        stanza_error_condition(&e).as_deref(),
        Some("resource-constraint"),
        "{e}"
    );
    assert_eq!(e.attr("from"), Some(bob_bare.as_str()));
    assert_eq!(
        e.child_text("body", ns::CLIENT).as_deref(),
        Some("one too many")
    );
    let mut bob = login(dc, &b, "desk").await;
    bob.send_presence().await.unwrap();
    for i in 0..OFFLINE_LIMIT {
        let m = bob.next(Duration::from_secs(5)).await.unwrap();
        assert_eq!(
            m.child_text("body", ns::CLIENT),
            Some(format!("kept {i}")),
            "{m}"
        );
    }
    bob.expect_none(QUIET, message_with_body("one too many"))
        .await
        .unwrap();
}

async fn iq_errors(dc: &Dc) {
    let a = user("ia");
    let b = user("ib");
    let mut alice = online(dc, &a, "phone").await;
    register(dc, &b).await;
    let ping = || Element::new("ping", ns::PING);
    let nobody = format!("{}@example.com", user("nobody"));
    let cases: Vec<(String, &str)> = vec![
        (nobody.clone(), "service-unavailable"),
        (format!("{b}@example.com/none"), "service-unavailable"),
        (
            "someone@elsewhere.example".to_owned(),
            "remote-server-not-found",
        ),
    ];
    for (to, want) in cases {
        let r = alice.iq("get", Some(&to), ping()).await.unwrap();
        assert_eq!(
            stanza_error_condition(&r).as_deref(),
            Some(want),
            "iq to {to}: {r}"
        );
    }
    let r = alice
        .iq(
            "get",
            Some("example.com"),
            Element::new("query", "urn:example:unknown"),
        )
        .await
        .unwrap();
    assert_eq!(
        stanza_error_condition(&r).as_deref(),
        Some("service-unavailable")
    );
    // An account without a vCard has an empty one (scenarios::personal tests the rest).
    let r = alice
        .iq(
            "get",
            Some(&format!("{b}@example.com")),
            Element::new("vCard", "vcard-temp"),
        )
        .await
        .unwrap();
    assert_eq!(stanza_error_condition(&r), None, "{r}");
    assert!(r.has_child("vCard", "vcard-temp"), "{r}");
    // A message to a non-existent account comes back as an error.
    alice.send_message(&nobody, "hello?").await.unwrap();
    let e = alice
        .expect("message error", |e| {
            e.name() == "message" && e.attr("type") == Some("error")
        })
        .await
        .unwrap();
    assert_eq!(
        stanza_error_condition(&e).as_deref(),
        Some("service-unavailable")
    );
}

async fn disco_ping_version(dc: &Dc) {
    let (a, b) = (user("da"), user("db"));
    let mut alice = online(dc, &a, "phone").await;
    register(dc, &b).await;
    let info = alice
        .iq_ok(
            "get",
            Some("example.com"),
            Element::new("query", ns::DISCO_INFO),
        )
        .await
        .unwrap();
    let q = info.get_child("query", ns::DISCO_INFO).expect("query");
    let id = q.get_child("identity", ns::DISCO_INFO).expect("identity");
    assert_eq!(
        (id.attr("category"), id.attr("type")),
        (Some("server"), Some("im"))
    );
    let features: Vec<&str> = q.children().filter_map(|f| f.attr("var")).collect();
    for want in [
        ns::DISCO_INFO,
        ns::PING,
        ns::VERSION,
        ns::OFFLINE,
        ns::ROSTER_VER,
        ns::CARBONS,
        ns::CARBONS_RULES,
    ] {
        assert!(features.contains(&want), "{want} not in {features:?}");
    }
    alice
        .iq_ok(
            "get",
            Some("example.com"),
            Element::new("query", ns::DISCO_ITEMS),
        )
        .await
        .unwrap();
    let pong = alice
        .iq_ok("get", Some("example.com"), Element::new("ping", ns::PING))
        .await
        .unwrap();
    assert_eq!(pong.attr("from"), Some("example.com"));
    alice
        .iq_ok("get", None, Element::new("ping", ns::PING))
        .await
        .unwrap();
    let v = alice
        .iq_ok(
            "get",
            Some("example.com"),
            Element::new("query", ns::VERSION),
        )
        .await
        .unwrap();
    let vq = v.get_child("query", ns::VERSION).expect("version query");
    assert_eq!(
        vq.child_text("name", ns::VERSION).as_deref(),
        Some("Meerkat")
    );
    let acct = alice
        .iq_ok(
            "get",
            Some(&format!("{b}@example.com")),
            Element::new("query", ns::DISCO_INFO),
        )
        .await
        .unwrap();
    let id = acct
        .get_child("query", ns::DISCO_INFO)
        .and_then(|q| q.get_child("identity", ns::DISCO_INFO))
        .expect("account identity");
    assert_eq!(
        (id.attr("category"), id.attr("type")),
        (Some("account"), Some("registered"))
    );
}

/// RFC 6121 §3.4: Bob approves Alice before she asks (a pre-approval, advertised as a stream
/// feature); her request is then answered by the server on his behalf, and each sees the
/// other's side move: she gets `to` and his `subscribed`, he gets `from`.
async fn a_pre_approval_answers_the_request_that_follows(dc: &Dc) {
    let (a, b) = (user("pa"), user("pb"));
    let mut alice = online(dc, &a, "phone").await;
    let mut bob = online(dc, &b, "desk").await;
    let (aj, bj) = (alice.bare_jid().to_owned(), bob.bare_jid().to_owned());
    bob.send(&presence("subscribed", &aj)).await.unwrap();
    let p = bob
        .expect("the pre-approval pushed", push_for(&aj, "none"))
        .await
        .unwrap();
    let item = roster_item(&p, &aj).unwrap();
    assert_eq!(item.attr("approved"), Some("true"));
    ack_push(&mut bob, &p).await;
    alice.send(&presence("subscribe", &bj)).await.unwrap();
    alice
        .expect(
            "answered on bob's behalf",
            presence_of_type(&bj, Some("subscribed")),
        )
        .await
        .unwrap();
    alice
        .expect("alice's push", push_for(&bj, "to"))
        .await
        .unwrap();
    bob.expect("bob's push", push_for(&aj, "from"))
        .await
        .unwrap();
}

/// Another DC answers a request stored for Bob (he approved Alice there): that DC's answer
/// removes the request and then writes his item, and this DC applies both in that order. A
/// router that lists the request just before the answer is applied and reads the item just
/// after sees a request with an item already `from`: the request is answered, and Bob is
/// not asked. The database is put in that in-between state (the request kept, the item
/// written) and Bob logs in: he is not shown the request.
async fn a_request_read_as_another_dcs_answer_lands_is_not_shown(dc: &Dc) {
    let (alice, b) = asked_while_away(dc, "t").await;
    let aj = alice.bare_jid().to_owned();
    let store = meerkat_store::Store::connect(dc.database_url())
        .await
        .unwrap();
    assert_eq!(store.subscription_requests(&b).await.unwrap().len(), 1);
    let item = meerkat_store::RosterItem {
        jid: aj.clone(),
        name: None,
        subscription: meerkat_store::Subscription::From,
        ask_out: false,
        approved: false,
        groups: Vec::new(),
    };
    store.put_roster_item(&b, &item).await.unwrap();
    assert_eq!(store.subscription_requests(&b).await.unwrap().len(), 1);
    no_request_at_next_login(dc, &b, &aj).await;
}

async fn subscription_handshake_both_online(dc: &Dc) {
    let (a, b) = (user("sa"), user("sb"));
    let mut alice = online(dc, &a, "phone").await;
    let mut bob = online(dc, &b, "desk").await;
    let (aj, bj) = (alice.bare_jid().to_owned(), bob.bare_jid().to_owned());
    // Roster set with a name and a group is pushed back.
    let set = Element::new("query", ns::ROSTER).with_child(
        Element::new("item", ns::ROSTER)
            .with_attr("jid", bj.clone())
            .with_attr("name", "Bob")
            .with_child(Element::new("group", ns::ROSTER).with_text("Friends")),
    );
    alice.iq_ok("set", None, set).await.unwrap();
    let p = alice
        .expect("push after set", push_for(&bj, "none"))
        .await
        .unwrap();
    ack_push(&mut alice, &p).await;
    alice.send(&presence("subscribe", &bj)).await.unwrap();
    let p = alice
        .expect("push with ask", push_for(&bj, "none"))
        .await
        .unwrap();
    let item = roster_item(&p, &bj).unwrap();
    assert_eq!(item.attr("ask"), Some("subscribe"));
    let req = bob
        .expect(
            "subscription request",
            presence_of_type(&aj, Some("subscribe")),
        )
        .await
        .unwrap();
    assert_eq!(
        req.attr("from"),
        Some(aj.as_str()),
        "stamped with the bare JID"
    );
    bob.send(&presence("subscribed", &aj)).await.unwrap();
    bob.expect("bob's push", push_for(&aj, "from"))
        .await
        .unwrap();
    alice
        .expect("alice's push", push_for(&bj, "to"))
        .await
        .unwrap();
    alice
        .expect("subscribed", presence_of_type(&bj, Some("subscribed")))
        .await
        .unwrap();
    alice
        .expect(
            "bob's presence after subscribed",
            presence_of_type(&bj, None),
        )
        .await
        .unwrap();
    let r = roster(&mut alice).await;
    let item = roster_item(&r, &bj).expect("bob in alice's roster");
    assert_eq!(item.attr("subscription"), Some("to"));
    assert_eq!(item.attr("name"), Some("Bob"));
    assert_eq!(item.attr("ask"), None);
    // Bob sees nothing of Alice's presence (he has from only), Alice sees Bob's.
    alice
        .send(
            &Element::new("presence", ns::CLIENT)
                .with_child(Element::new("status", ns::CLIENT).with_text("busy")),
        )
        .await
        .unwrap();
    bob.expect_none(QUIET, presence_of_type(alice.jid(), None))
        .await
        .unwrap();
    bob.send(
        &Element::new("presence", ns::CLIENT)
            .with_child(Element::new("status", ns::CLIENT).with_text("away")),
    )
    .await
    .unwrap();
    let p = alice
        .expect("bob's broadcast", presence_of_type(bob.jid(), None))
        .await
        .unwrap();
    assert_eq!(p.child_text("status", ns::CLIENT).as_deref(), Some("away"));
    // Unsubscribe: Alice stops seeing Bob and gets his unavailable.
    alice.send(&presence("unsubscribe", &bj)).await.unwrap();
    alice
        .expect("alice's push", push_for(&bj, "none"))
        .await
        .unwrap();
    bob.expect("bob's push", push_for(&aj, "none"))
        .await
        .unwrap();
    bob.expect("unsubscribe", presence_of_type(&aj, Some("unsubscribe")))
        .await
        .unwrap();
    alice
        .expect(
            "bob unavailable",
            presence_of_type(bob.jid(), Some("unavailable")),
        )
        .await
        .unwrap();
}

/// Alice (online, `<p>a…`) asks Bob (`<p>b…`, registered, never logged in) to see his
/// presence; returns her client, once her ask is pushed, and Bob's username.
async fn asked_while_away(dc: &Dc, p: &str) -> (Client, String) {
    let (a, b) = (user(&format!("{p}a")), user(&format!("{p}b")));
    let mut alice = online(dc, &a, "phone").await;
    register(dc, &b).await;
    let bj = format!("{b}@example.com");
    alice.send(&presence("subscribe", &bj)).await.unwrap();
    alice
        .expect("ask push", push_for(&bj, "none"))
        .await
        .unwrap();
    (alice, b)
}

/// `b` logs in again and announces itself: no request from `from` is shown any more. Returns
/// the new session.
async fn no_request_at_next_login(dc: &Dc, b: &str, from: &str) -> Client {
    let mut c = login(dc, b, "tablet").await;
    c.send_presence().await.unwrap();
    c.expect_none(
        Duration::from_secs(1),
        presence_of_type(from, Some("subscribe")),
    )
    .await
    .unwrap();
    c
}

async fn subscription_request_waits_for_login(dc: &Dc) {
    let (mut alice, b) = asked_while_away(dc, "w").await;
    let (aj, bj) = (alice.bare_jid().to_owned(), format!("{b}@example.com"));
    let mut bob = login(dc, &b, "desk").await;
    roster(&mut bob).await;
    bob.send_presence().await.unwrap();
    bob.expect("stored request", presence_of_type(&aj, Some("subscribe")))
        .await
        .unwrap();
    bob.approve_subscription(&mut alice).await.unwrap();
    // Answered: not redelivered at the next login.
    drop(bob);
    let mut bob = no_request_at_next_login(dc, &b, &aj).await;
    // After an unsubscribe, a new subscribe is a new request for Bob to answer.
    alice.send(&presence("unsubscribe", &bj)).await.unwrap();
    alice.send(&presence("subscribe", &bj)).await.unwrap();
    bob.expect("second request", presence_of_type(&aj, Some("subscribe")))
        .await
        .unwrap();
}

/// Bob, asked by Alice while away, asks her back before he has seen her request (his
/// client's first stanza after login): the request stored for him is still Alice's, so
/// what his initial presence shows him is her `subscribe`, not his own (which would ask him to
/// approve himself, and leave her request unanswered for good).
async fn a_request_asked_back_before_it_is_answered_stays_the_contacts(dc: &Dc) {
    let (mut alice, b) = asked_while_away(dc, "x").await;
    let (aj, bj) = (alice.bare_jid().to_owned(), format!("{b}@example.com"));
    let mut bob = login(dc, &b, "desk").await;
    bob.send(&presence("subscribe", &aj)).await.unwrap();
    alice
        .expect("bob's request", presence_of_type(&bj, Some("subscribe")))
        .await
        .unwrap();
    bob.send_presence().await.unwrap();
    let shown = bob
        .expect(
            "the stored request",
            presence_of_type(&aj, Some("subscribe")),
        )
        .await
        .unwrap();
    assert_eq!(shown.attr("to"), Some(bj.as_str()), "{shown}");
    // Answered, it makes both ways once Alice answers Bob's.
    bob.approve_subscription(&mut alice).await.unwrap();
    alice.send(&presence("subscribed", &bj)).await.unwrap();
    bob.expect("alice's presence", presence_of_type(&aj, None))
        .await
        .unwrap();
    // Nothing left for Bob to answer at his next login.
    no_request_at_next_login(dc, &b, &aj).await;
}

async fn presence_probe_and_broadcast(dc: &Dc) {
    let (mut alice, mut bob) = friends(dc).await;
    let (aj, bj) = (alice.bare_jid().to_owned(), bob.bare_jid().to_owned());
    // Subscribing again when already approved is answered by Bob's server, not by Bob.
    alice.send(&presence("subscribe", &bj)).await.unwrap();
    alice
        .expect("auto-reply", presence_of_type(&bj, Some("subscribed")))
        .await
        .unwrap();
    bob.expect_none(QUIET, presence_of_type(&aj, Some("subscribe")))
        .await
        .unwrap();
    // A new resource of Alice gets Bob's presence (probe) and Alice's other resource's.
    let a_name = aj.split('@').next().unwrap().to_owned();
    let mut tablet = login(dc, &a_name, "tablet").await;
    tablet.send_presence().await.unwrap();
    tablet
        .expect("probe answer", presence_of_type(bob.jid(), None))
        .await
        .unwrap();
    tablet
        .expect("own other resource", presence_of_type(alice.jid(), None))
        .await
        .unwrap();
    bob.expect("tablet's presence", presence_of_type(tablet.jid(), None))
        .await
        .unwrap();
    alice
        .expect("tablet's presence", presence_of_type(tablet.jid(), None))
        .await
        .unwrap();
    // Going unavailable is broadcast to contacts and own resources.
    tablet
        .send(&Element::new("presence", ns::CLIENT).with_attr("type", "unavailable"))
        .await
        .unwrap();
    bob.expect(
        "tablet unavailable",
        presence_of_type(tablet.jid(), Some("unavailable")),
    )
    .await
    .unwrap();
    alice
        .expect(
            "tablet unavailable",
            presence_of_type(tablet.jid(), Some("unavailable")),
        )
        .await
        .unwrap();
    // Ending a session is seen as unavailable too.
    let bob_full = bob.jid().to_owned();
    bob.close().await.unwrap();
    alice
        .expect("bob gone", presence_of_type(&bob_full, Some("unavailable")))
        .await
        .unwrap();
}

async fn roster_versioning_and_remove(dc: &Dc) {
    let (mut alice, mut bob) = friends(dc).await;
    let (aj, bj) = (alice.bare_jid().to_owned(), bob.bare_jid().to_owned());
    let full = roster(&mut alice).await;
    let ver = full
        .get_child("query", ns::ROSTER)
        .and_then(|q| q.attr("ver"))
        .expect("ver")
        .to_owned();
    let same = alice
        .iq_ok(
            "get",
            None,
            Element::new("query", ns::ROSTER).with_attr("ver", ver.clone()),
        )
        .await
        .unwrap();
    assert!(
        same.get_child("query", ns::ROSTER).is_none(),
        "same version: empty result"
    );
    // Removing Bob cancels both directions.
    let rm = Element::new("query", ns::ROSTER).with_child(
        Element::new("item", ns::ROSTER)
            .with_attr("jid", bj.clone())
            .with_attr("subscription", "remove"),
    );
    alice.iq_ok("set", None, rm).await.unwrap();
    alice
        .expect("remove push", push_for(&bj, "remove"))
        .await
        .unwrap();
    bob.expect("unsubscribe", presence_of_type(&aj, Some("unsubscribe")))
        .await
        .unwrap();
    bob.expect("unsubscribed", presence_of_type(&aj, Some("unsubscribed")))
        .await
        .unwrap();
    bob.expect("bob's push", push_for(&aj, "none"))
        .await
        .unwrap();
    let r = roster(&mut bob).await;
    assert_eq!(
        roster_item(&r, &aj).and_then(|i| i.attr("subscription")),
        Some("none")
    );
    let newer = alice
        .iq_ok(
            "get",
            None,
            Element::new("query", ns::ROSTER).with_attr("ver", ver),
        )
        .await
        .unwrap();
    let q = newer
        .get_child("query", ns::ROSTER)
        .expect("changed roster is sent");
    assert!(roster_item(&newer, &bj).is_none());
    assert_ne!(q.attr("ver"), None);
    // Removing an unknown item is an error.
    let rm = Element::new("query", ns::ROSTER).with_child(
        Element::new("item", ns::ROSTER)
            .with_attr("jid", "nobody@example.com")
            .with_attr("subscription", "remove"),
    );
    let r = alice.iq("set", None, rm).await.unwrap();
    assert_eq!(
        stanza_error_condition(&r).as_deref(),
        Some("item-not-found")
    );
}

async fn directed_presence_and_a_lost_connection(dc: &Dc) {
    let (a, c) = (user("pa"), user("pc"));
    let mut alice = online(dc, &a, "phone").await;
    let mut carol = online(dc, &c, "desk").await;
    let alice_full = alice.jid().to_owned();
    // No subscription either way: only a directed presence reaches Carol.
    let directed = Element::new("presence", ns::CLIENT).with_attr("to", carol.jid().to_owned());
    alice.send(&directed).await.unwrap();
    carol
        .expect("directed presence", presence_of_type(&alice_full, None))
        .await
        .unwrap();
    // The connection is lost without a closing tag: Carol, who had Alice's directed
    // presence, is told she is unavailable.
    drop(alice);
    carol
        .expect(
            "unavailable after a lost connection",
            presence_of_type(&alice_full, Some("unavailable")),
        )
        .await
        .unwrap();
}
