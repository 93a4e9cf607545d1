//! Stream management (XEP-0198): resumption after a lost connection, and nothing lost when a
//! session is not resumed (window passed, fresh bind, gateway killed); the protocol's error
//! paths; dead connections found by the gateway's pings.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use meerkat_testkit::client::pred::{message_with_body, presence_of_type};
use meerkat_testkit::client::{Client, ClientConfig};
use meerkat_testkit::stack::{Dc, StackOptions};
use meerkat_xmpp::{ns, Element};

use crate::{dc, online, user};

const PW: &str = "secret-pw";

/// Alice and Bob, available, each subscribed to the other's presence.
pub async fn friends(dc: &Dc, alice_cfg: &ClientConfig) -> (Client, Client, String) {
    let a = user("alice");
    let b = user("bob");
    let mut bob = online(dc, &b, "desk").await;
    let mut c = Client::connect(alice_cfg).await.unwrap();
    c.register(&a, PW).await.unwrap().unwrap();
    drop(c);
    let mut alice = Client::login(alice_cfg, &a, PW, Some("phone"))
        .await
        .unwrap();
    alice.send_presence().await.unwrap();
    bob.send_presence().await.unwrap();
    let subscribe = Element::new("presence", ns::CLIENT)
        .with_attr("type", "subscribe")
        .with_attr("to", bob.bare_jid().to_owned());
    alice.send(&subscribe).await.unwrap();
    let aj = alice.bare_jid().to_owned();
    bob.expect("subscribe", presence_of_type(&aj, Some("subscribe")))
        .await
        .unwrap();
    bob.approve_subscription(&mut alice).await.unwrap();
    let subscribe = Element::new("presence", ns::CLIENT)
        .with_attr("type", "subscribe")
        .with_attr("to", alice.bare_jid().to_owned());
    bob.send(&subscribe).await.unwrap();
    let bj = bob.bare_jid().to_owned();
    alice
        .expect("subscribe", presence_of_type(&bj, Some("subscribe")))
        .await
        .unwrap();
    alice.approve_subscription(&mut bob).await.unwrap();
    (alice, bob, b)
}

/// Message bodies `c` receives until `quiet` passes without a message.
async fn bodies(c: &mut Client, quiet: Duration) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(m) = c
        .expect_within(quiet, "a message", |e: &Element| {
            e.is("message", ns::CLIENT)
        })
        .await
    {
        out.extend(m.child_text("body", ns::CLIENT));
    }
    out
}

/// Enables stream management with resumption; the resumption id.
async fn resumable(c: &mut Client) -> String {
    c.enable_sm(None)
        .await
        .unwrap()
        .attr("id")
        .unwrap()
        .to_owned()
}

/// Publishes a captured delivery again, as it was, to each (exchange, key).
async fn republish(
    ch: &meerkat_bus::lapin::Channel,
    d: &meerkat_bus::lapin::message::Delivery,
    to: &[(&str, &str)],
) {
    for (exchange, key) in to {
        ch.basic_publish(
            exchange,
            key,
            meerkat_bus::lapin::options::BasicPublishOptions::default(),
            &d.data,
            d.properties.clone(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
}

/// Bob's connection stays open with nothing unexpected on it, he gets Alice's next message
/// (`body`), and Alice sees no flap of his presence.
async fn goes_on(bob: &mut Client, alice: &mut Client, bob_full: &str, body: &str) {
    bob.expect_none(Duration::from_secs(2), |e: &Element| {
        e.is("message", ns::CLIENT)
    })
    .await
    .unwrap();
    alice.send_message(bob_full, body).await.unwrap();
    bob.expect("the next message", message_with_body(body))
        .await
        .unwrap();
    no_flap(alice, bob_full).await;
}

/// `watcher` sees no unavailable presence of `full` (a resumed session shows no flap).
async fn no_flap(watcher: &mut Client, full: &str) {
    watcher
        .expect_none(
            Duration::from_millis(500),
            presence_of_type(full, Some("unavailable")),
        )
        .await
        .unwrap();
}

async fn send_all(from: &mut Client, to: &str, texts: &[String]) {
    for t in texts {
        from.send_message(to, t).await.unwrap();
    }
}

fn texts(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix} {i}")).collect()
}

/// Bob enables stream management, reads three messages and acknowledges one; his connection
/// drops; Alice writes five more. He resumes: the two he had not acknowledged come again, then
/// the five, in order, each once, and Alice never saw him go offline.
#[tokio::test]
async fn a_resumed_session_gets_what_it_had_not_acknowledged_then_what_came_meanwhile() {
    let dc = dc().await;
    let (mut alice, mut bob, b) = friends(&dc, &dc.client()).await;
    let enabled = bob.enable_sm(None).await.unwrap();
    assert_eq!(enabled.attr("resume"), Some("true"), "{enabled}");
    assert_eq!(enabled.attr("max"), Some("300"), "{enabled}");
    let previd = enabled.attr("id").unwrap().to_owned();
    let before = texts("before", 3);
    send_all(&mut alice, bob.bare_jid(), &before).await;
    for t in &before {
        bob.expect("a message", message_with_body(t)).await.unwrap();
    }
    assert_eq!(bob.sm_received(), Some(3));
    bob.sm_ack(1).await.unwrap();
    let bob_full = bob.jid().to_owned();
    bob.drop_connection();

    let meanwhile = texts("meanwhile", 5);
    send_all(&mut alice, &bob_full.clone(), &meanwhile).await;
    let (mut bob, answer) = Client::resume(&dc.client(), &b, PW, &previd, 1, &bob_full)
        .await
        .unwrap();
    assert_eq!(answer.name(), "resumed", "{answer}");
    assert_eq!(answer.attr("previd"), Some(previd.as_str()));
    assert_eq!(
        answer.attr("h"),
        Some("0"),
        "bob sent no stanza since enabling"
    );
    let mut want = before[1..].to_vec();
    want.extend(meanwhile);
    assert_eq!(bodies(&mut bob, Duration::from_secs(1)).await, want);

    // The same session goes on: same full JID, reachable, and no flap for Alice.
    alice
        .send_message(&bob_full, "after the resumption")
        .await
        .unwrap();
    bob.expect(
        "the next message",
        message_with_body("after the resumption"),
    )
    .await
    .unwrap();
    no_flap(&mut alice, &bob_full).await;
    dc.stop().await.unwrap();
}

/// Bob's session is held by the DC's first gateway; his connection drops and he resumes at
/// the second (the balancer sent him elsewhere), with the same id: the session moves there.
/// He gets the two he had not acknowledged, then the five sent meanwhile, in order, each once;
/// Alice never sees him go offline. The moved session keeps working, and after a second drop
/// he resumes with the same id back at the first gateway. Another account presenting his id,
/// or his account with a forged secret, gets `item-not-found` at the second gateway.
#[tokio::test]
async fn a_session_resumes_at_another_gateway_of_the_dc_and_back() {
    let mut dc = dc().await;
    let second = dc.start_gateway_on_own_port().await.unwrap();
    let (mut alice, mut bob, b) = friends(&dc, &dc.client()).await;
    let previd = resumable(&mut bob).await;
    let before = texts("before", 3);
    send_all(&mut alice, bob.bare_jid(), &before).await;
    for t in &before {
        bob.expect("a message", message_with_body(t)).await.unwrap();
    }
    bob.sm_ack(1).await.unwrap();
    let bob_full = bob.jid().to_owned();
    bob.drop_connection();
    let meanwhile = texts("meanwhile", 5);
    send_all(&mut alice, &bob_full, &meanwhile).await;

    // Not Carol's, whatever gateway she asks; nor Bob's with a secret he was not given.
    let carol = user("carol");
    let _ = online(&dc, &carol, "x").await;
    let (_, answer) = Client::resume(&second, &carol, PW, &previd, 0, "")
        .await
        .unwrap();
    assert_eq!(answer.name(), "failed", "{answer}");
    assert!(
        answer.has_child("item-not-found", ns::STANZAS_ERR),
        "{answer}"
    );
    let forged = {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut raw = b64.decode(&previd).unwrap();
        raw[0] ^= 1;
        b64.encode(raw)
    };
    let (_, answer) = Client::resume(&second, &b, PW, &forged, 1, &bob_full)
        .await
        .unwrap();
    assert_eq!(answer.name(), "failed", "{answer}");
    assert!(
        answer.has_child("item-not-found", ns::STANZAS_ERR),
        "{answer}"
    );

    let (mut bob, answer) = Client::resume(&second, &b, PW, &previd, 1, &bob_full)
        .await
        .unwrap();
    assert_eq!(answer.name(), "resumed", "{answer}");
    assert_eq!(answer.attr("previd"), Some(previd.as_str()));
    assert_eq!(
        answer.attr("h"),
        Some("0"),
        "bob sent no stanza since enabling"
    );
    let mut want = before[1..].to_vec();
    want.extend(meanwhile);
    assert_eq!(bodies(&mut bob, Duration::from_secs(2)).await, want);

    // The moved session goes on.
    alice
        .send_message(&bob_full, "after the move")
        .await
        .unwrap();
    bob.expect("the next message", message_with_body("after the move"))
        .await
        .unwrap();

    // Lost again: back at the first gateway, with the same id.
    let h = bob.sm_received().unwrap();
    bob.drop_connection();
    alice.send_message(&bob_full, "away again").await.unwrap();
    let (mut bob, answer) = Client::resume(&dc.client(), &b, PW, &previd, h, &bob_full)
        .await
        .unwrap();
    assert_eq!(answer.name(), "resumed", "{answer}");
    assert_eq!(
        bodies(&mut bob, Duration::from_secs(2)).await,
        vec!["away again".to_owned()]
    );
    alice.send_message(&bob_full, "home again").await.unwrap();
    bob.expect("the next message", message_with_body("home again"))
        .await
        .unwrap();
    no_flap(&mut alice, &bob_full).await;
    dc.stop().await.unwrap();
}

/// SASL2 (XEP-0388) with resumption inline (XEP-0198 §7.2). Offered inside TLS only, with
/// `<inline><sm/></inline>`. A fresh login authenticates without a stream restart and binds on
/// the features that follow `<success/>`; a wrong password gets SASL2's `<failure/>`, an
/// unknown id `<failed/>` inside `<success/>` and then the features, so the client binds.
/// Bob's session, held by the first gateway, resumes inline at the second (it moves) and then
/// back at the first: `<resumed/>` inside `<success/>` naming his full JID, no features, then
/// what he had not acknowledged and what came meanwhile, in order, each once.
#[tokio::test]
async fn sasl2_logs_in_without_a_restart_and_resumes_inline_at_any_gateway() {
    let mut dc = dc().await;
    let second = dc.start_gateway_on_own_port().await.unwrap();
    let (mut alice, mut bob, b) = friends(&dc, &dc.client()).await;

    // Offered inside TLS, not before it.
    let c = Client::connect(&dc.client()).await.unwrap();
    let offer = c
        .features()
        .get_child("authentication", ns::SASL2)
        .expect("SASL2 offered inside TLS")
        .clone();
    let mechanisms: Vec<String> = offer
        .children()
        .filter(|m| m.name() == "mechanism")
        .map(|m| m.text())
        .collect();
    assert!(mechanisms.contains(&"SCRAM-SHA-256".to_owned()), "{offer}");
    assert!(
        offer
            .get_child("inline", ns::SASL2)
            .is_some_and(|i| i.has_child("sm", ns::SM)),
        "{offer}"
    );
    let plain = ClientConfig::without_tls(dc.c2s, dc.options.domain.as_str());
    let c = Client::connect(&plain).await.unwrap();
    assert!(
        c.features()
            .get_child("authentication", ns::SASL2)
            .is_none(),
        "{:?}",
        c.features()
    );

    // A fresh login: no restart, features follow, bind, chat.
    let mut fresh = Client::connect(&dc.client()).await.unwrap();
    let success = fresh
        .authenticate_sasl2(meerkat_testkit::client::Mechanism::ScramSha256, &b, PW, &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        success
            .child_text("authorization-identifier", ns::SASL2)
            .as_deref(),
        Some(bob.bare_jid()),
        "{success}"
    );
    assert!(
        fresh.features().has_child("bind", ns::BIND),
        "{:?}",
        fresh.features()
    );
    let fresh_jid = fresh.bind(Some("laptop")).await.unwrap();
    alice
        .send_message(&fresh_jid, "to the laptop")
        .await
        .unwrap();
    fresh
        .expect("a message", message_with_body("to the laptop"))
        .await
        .unwrap();
    fresh.close().await.unwrap();

    // A wrong password: SASL2's failure with RFC 6120's condition.
    let mut wrong = Client::connect(&dc.client()).await.unwrap();
    let failed = wrong
        .authenticate_sasl2(
            meerkat_testkit::client::Mechanism::ScramSha256,
            &b,
            "not-it",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(failed, Err("not-authorized".to_owned()));

    // An unknown id: `<failed/>` in `<success/>`, then the features; the client binds.
    let (mut unknown, answer) = Client::resume_sasl2(&dc.client(), &b, PW, "bm90IGFuIGlk", 0)
        .await
        .unwrap();
    assert_eq!(answer.name(), "failed", "{answer}");
    assert!(
        answer.has_child("item-not-found", ns::STANZAS_ERR),
        "{answer}"
    );
    assert!(unknown.features().has_child("bind", ns::BIND));
    unknown.bind(Some("other")).await.unwrap();
    unknown.close().await.unwrap();

    // Bob's session: dropped, resumed inline at the second gateway (moved), then back.
    let previd = resumable(&mut bob).await;
    let before = texts("before", 3);
    send_all(&mut alice, bob.bare_jid(), &before).await;
    for t in &before {
        bob.expect("a message", message_with_body(t)).await.unwrap();
    }
    bob.sm_ack(1).await.unwrap();
    let bob_full = bob.jid().to_owned();
    bob.drop_connection();
    let meanwhile = texts("meanwhile", 4);
    send_all(&mut alice, &bob_full, &meanwhile).await;
    let (mut bob, answer) = Client::resume_sasl2(&second, &b, PW, &previd, 1)
        .await
        .unwrap();
    assert_eq!(answer.name(), "resumed", "{answer}");
    assert_eq!(answer.attr("previd"), Some(previd.as_str()));
    assert_eq!(
        bob.jid(),
        bob_full,
        "the authorization identifier is the resumed full JID"
    );
    let mut want = before[1..].to_vec();
    want.extend(meanwhile);
    assert_eq!(bodies(&mut bob, Duration::from_secs(2)).await, want);

    let h = bob.sm_received().unwrap();
    bob.drop_connection();
    alice.send_message(&bob_full, "away again").await.unwrap();
    let (mut bob, answer) = Client::resume_sasl2(&dc.client(), &b, PW, &previd, h)
        .await
        .unwrap();
    assert_eq!(answer.name(), "resumed", "{answer}");
    assert_eq!(
        bodies(&mut bob, Duration::from_secs(2)).await,
        vec!["away again".to_owned()]
    );
    alice.send_message(&bob_full, "home again").await.unwrap();
    bob.expect("the next message", message_with_body("home again"))
        .await
        .unwrap();
    no_flap(&mut alice, &bob_full).await;
    dc.stop().await.unwrap();
}

/// Resuming with a count above what the gateway sent (a buggy client, or a stale count) ends
/// that connection with the XEP's stream error, at the gateway holding the session as at
/// another one; the session stays detached, and resuming with the right count gets everything.
#[tokio::test]
async fn a_count_too_high_is_refused_anywhere_and_the_right_one_still_resumes() {
    let mut dc = dc().await;
    let second = dc.start_gateway_on_own_port().await.unwrap();
    let (mut alice, mut bob, b) = friends(&dc, &dc.client()).await;
    let previd = resumable(&mut bob).await;
    let before = texts("before", 2);
    send_all(&mut alice, bob.bare_jid(), &before).await;
    for t in &before {
        bob.expect("a message", message_with_body(t)).await.unwrap();
    }
    let bob_full = bob.jid().to_owned();
    bob.drop_connection();
    let meanwhile = texts("meanwhile", 2);
    send_all(&mut alice, &bob_full, &meanwhile).await;

    for at in [&dc.client(), &second] {
        let mut c = Client::connect(at).await.unwrap();
        c.authenticate(meerkat_testkit::client::Mechanism::ScramSha256, &b, PW)
            .await
            .unwrap()
            .unwrap();
        c.send_raw(&format!(
            "<resume xmlns='{}' previd='{previd}' h='7'/>",
            ns::SM
        ))
        .await
        .unwrap();
        assert_eq!(
            c.expect_stream_end().await.unwrap().as_deref(),
            Some("undefined-condition"),
            "at {}",
            at.addr
        );
    }

    let (mut bob, answer) = Client::resume(&second, &b, PW, &previd, 0, &bob_full)
        .await
        .unwrap();
    assert_eq!(answer.name(), "resumed", "{answer}");
    let mut want = before.clone();
    want.extend(meanwhile);
    assert_eq!(bodies(&mut bob, Duration::from_secs(2)).await, want);
    no_flap(&mut alice, &bob_full).await;
    dc.stop().await.unwrap();
}

/// A connection the gateway still thinks alive (half-open: the phone moved to another network
/// and its old socket never closed) is closed with `<conflict/>` when its session is resumed
/// from a new connection, at the same gateway and at another; the session goes on at the new
/// one, and its contacts see no flap.
#[tokio::test]
async fn a_half_open_connection_is_closed_when_its_session_resumes_anywhere() {
    let mut dc = dc().await;
    let second = dc.start_gateway_on_own_port().await.unwrap();
    let (mut alice, mut bob, b) = friends(&dc, &dc.client()).await;
    let previd = resumable(&mut bob).await;
    let bob_full = bob.jid().to_owned();
    let mut old = bob;
    for (step, at) in [("same gateway", dc.client()), ("other gateway", second)] {
        alice.send_message(&bob_full, step).await.unwrap();
        old.expect("a message", message_with_body(step))
            .await
            .unwrap();
        let h = old.sm_received().unwrap();
        let (mut new, answer) = Client::resume(&at, &b, PW, &previd, h, &bob_full)
            .await
            .unwrap();
        assert_eq!(answer.name(), "resumed", "{step}: {answer}");
        assert_eq!(
            old.expect_stream_end().await.unwrap().as_deref(),
            Some("conflict"),
            "{step}: the old connection is closed"
        );
        let after = format!("after {step}");
        alice.send_message(&bob_full, &after).await.unwrap();
        new.expect("the next message", message_with_body(&after))
            .await
            .unwrap();
        old = new;
    }
    no_flap(&mut alice, &bob_full).await;
    dc.stop().await.unwrap();
}

/// A detached session whose window passes ends: Alice sees Bob go offline, and the messages
/// he never acknowledged wait in offline storage (stamped with their time), each once.
#[tokio::test]
async fn when_the_window_passes_unacknowledged_messages_go_offline_once_with_their_time() {
    let dc = dc().await;
    let (mut alice, mut bob, b) = friends(&dc, &dc.client()).await;
    let enabled = bob.enable_sm(Some(1)).await.unwrap();
    assert_eq!(enabled.attr("max"), Some("1"), "{enabled}");
    let read = texts("read, not acknowledged", 2);
    send_all(&mut alice, bob.bare_jid(), &read).await;
    for t in &read {
        bob.expect("a message", message_with_body(t)).await.unwrap();
    }
    // A server's reply among what he never acknowledged (to an iq without `to`: no `from`).
    let ping = Element::new("ping", "urn:xmpp:ping");
    let pong = bob.iq_ok("get", None, ping).await.unwrap();
    assert_eq!(pong.attr("from"), None, "{pong}");
    let bob_full = bob.jid().to_owned();
    bob.drop_connection();
    let later = texts("while detached", 1);
    send_all(&mut alice, &bob_full, &later).await;
    alice
        .expect(
            "bob unavailable",
            presence_of_type(&bob_full, Some("unavailable")),
        )
        .await
        .unwrap();

    let mut bob = Client::login(&dc.client(), &b, PW, Some("desk"))
        .await
        .unwrap();
    bob.send_presence().await.unwrap();
    let mut got = Vec::new();
    while let Ok(m) = bob
        .expect_within(Duration::from_secs(1), "a message", |e: &Element| {
            e.is("message", ns::CLIENT)
        })
        .await
    {
        assert!(m.get_child("delay", ns::DELAY).is_some(), "no delay: {m}");
        got.extend(m.child_text("body", ns::CLIENT));
    }
    // Each once. Not in order: the unacknowledged messages go back through their sender's
    // partition while Bob's login goes through his, so some may be stored and flushed at his
    // initial presence after later ones went to his new session directly.
    let mut want = read.clone();
    want.extend(later);
    want.sort();
    got.sort();
    assert_eq!(got, want);
    // The ping's result went back to the routers with the rest, and was dropped as a reply
    // for a session that ended, not refused as unreadable.
    let mut dropped = 0;
    for r in &dc.routers {
        let url = format!("http://{}/metrics", r.admin);
        let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
        assert!(
            !text.contains("meerkat_router_failures_total{reason=\"unreadable\"}"),
            "{text}"
        );
        let prefix = "meerkat_router_stanzas_total{kind=\"iq\",outcome=\"dropped\"} ";
        dropped += text
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map_or(0, |v| v.trim().parse::<u64>().unwrap());
    }
    assert!(
        dropped >= 1,
        "the ping's result was not routed back and dropped"
    );
    dc.stop().await.unwrap();
}

/// A client that binds afresh instead of resuming (same resource) still gets what the old
/// session had not had acknowledged, each once.
#[tokio::test]
async fn binding_afresh_instead_of_resuming_loses_nothing() {
    let dc = dc().await;
    let (mut alice, mut bob, b) = friends(&dc, &dc.client()).await;
    bob.enable_sm(None).await.unwrap();
    let read = texts("unacknowledged", 3);
    send_all(&mut alice, bob.bare_jid(), &read).await;
    for t in &read {
        bob.expect("a message", message_with_body(t)).await.unwrap();
    }
    bob.drop_connection();

    let mut bob = Client::login(&dc.client(), &b, PW, Some("desk"))
        .await
        .unwrap();
    bob.send_presence().await.unwrap();
    let mut got = bodies(&mut bob, Duration::from_secs(2)).await;
    got.sort();
    assert_eq!(got, read);
    dc.stop().await.unwrap();
}

/// The gateway holding a session is killed: what it had written but its client had not
/// acknowledged was still the broker's, and reaches offline storage once the DC's health
/// service finds the gateway dead.
#[tokio::test]
async fn a_killed_gateway_loses_no_unacknowledged_message() {
    let mut dc = dc().await;
    let other = dc.start_gateway_on_own_port().await.unwrap();
    let (mut alice, mut bob, b) = friends(&dc, &other).await;
    bob.enable_sm(None).await.unwrap();
    let sent = texts("unacknowledged", 5);
    send_all(&mut alice, bob.bare_jid(), &sent).await;
    for t in &sent {
        bob.expect("a message", message_with_body(t)).await.unwrap();
    }
    let bob_full = bob.jid().to_owned();
    dc.kill_gateway(0).unwrap();
    drop(bob);
    alice
        .expect(
            "bob unavailable",
            presence_of_type(&bob_full, Some("unavailable")),
        )
        .await
        .unwrap();

    let mut bob = Client::login(&other, &b, PW, Some("desk")).await.unwrap();
    bob.send_presence().await.unwrap();
    let mut got = bodies(&mut bob, Duration::from_secs(2)).await;
    got.sort();
    assert_eq!(got, sent, "each unacknowledged message, once");
    dc.stop().await.unwrap();
}

/// The protocol's error paths: `<enable/>` before binding or twice, `<resume/>` of an unknown
/// id or of another account's session, an `h` above what was sent.
#[tokio::test]
async fn misuse_gets_the_xeps_answers() {
    let dc = dc().await;
    let cfg = dc.client();
    let failed = |cond: &'static str| {
        move |e: &Element| e.is("failed", ns::SM) && e.get_child(cond, ns::STANZAS_ERR).is_some()
    };

    // Before binding.
    let b = user("bob");
    let _ = online(&dc, &b, "desk").await;
    let mut c = Client::connect(&cfg).await.unwrap();
    c.authenticate(meerkat_testkit::client::Mechanism::ScramSha256, &b, PW)
        .await
        .unwrap()
        .unwrap();
    assert!(c.features().has_child("sm", ns::SM), "{}", c.features());
    c.send_raw(&format!("<enable xmlns='{}'/>", ns::SM))
        .await
        .unwrap();
    c.expect("failed", failed("unexpected-request"))
        .await
        .unwrap();

    // An unknown id: refused, and the client binds as usual.
    c.send_raw(&format!(
        "<resume xmlns='{}' previd='bm90LWFuLWlk' h='0'/>",
        ns::SM
    ))
    .await
    .unwrap();
    c.expect("failed", failed("item-not-found")).await.unwrap();
    c.bind(Some("desk")).await.unwrap();

    // Twice.
    let enabled = c.enable_sm(None).await.unwrap();
    let previd = enabled.attr("id").unwrap().to_owned();
    c.send_raw(&format!("<enable xmlns='{}' resume='true'/>", ns::SM))
        .await
        .unwrap();
    c.expect("failed", failed("unexpected-request"))
        .await
        .unwrap();

    // Another account cannot take Bob's session, even with its id: the answer is the same as
    // for an unknown id.
    let carol = user("carol");
    let _ = online(&dc, &carol, "x").await;
    let (_, answer) = Client::resume(&cfg, &carol, PW, &previd, 0, "")
        .await
        .unwrap();
    assert!(failed("item-not-found")(&answer), "{answer}");

    // Bob's session is untouched; an h above what was sent ends the stream.
    let me = c.jid().to_owned();
    c.send_message(&me, "to myself").await.unwrap();
    c.expect("my message", message_with_body("to myself"))
        .await
        .unwrap();
    c.sm_ack(99).await.unwrap();
    assert_eq!(
        c.expect_stream_end().await.unwrap().as_deref(),
        Some("undefined-condition")
    );
    dc.stop().await.unwrap();
}

/// A client that stops answering is pinged and cut within `idle_timeout_secs`; with stream
/// management its session waits for it (its contacts see no change) and it resumes. A client
/// that answers the pings stays.
#[tokio::test]
async fn a_silent_client_is_pinged_cut_and_with_sm_resumes() {
    // Pinged after 4 s of silence, cut 2 s later: time enough for a client on a loaded
    // machine to answer (with 3 s, an answer 1 s late was seen cutting Alice).
    let dc = Dc::start(StackOptions {
        idle_timeout_secs: 6,
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let (mut alice, mut bob, b) = friends(&dc, &dc.client()).await;
    // Bob enables stream management, then says nothing.
    let enabled = bob.enable_sm(None).await.unwrap();
    let previd = enabled.attr("id").unwrap().to_owned();

    // Alice answers the gateway's XEP-0199 pings and stays past the limit.
    let ping = |e: &Element| e.is("iq", ns::CLIENT) && e.get_child("ping", ns::PING).is_some();
    for _ in 0..2 {
        let p = alice.expect("the gateway's ping", ping).await.unwrap();
        let pong = Element::new("iq", ns::CLIENT)
            .with_attr("type", "result")
            .with_attr("id", p.attr("id").unwrap_or_default().to_owned());
        alice.send(&pong).await.unwrap();
    }

    // Meanwhile Bob was asked with <r/>, and cut.
    bob.expect("<r/>", |e: &Element| e.is("r", ns::SM))
        .await
        .unwrap();
    assert_eq!(
        bob.expect_stream_end().await.unwrap().as_deref(),
        Some("connection-timeout")
    );
    let bob_full = bob.jid().to_owned();
    let h = bob.sm_received().unwrap_or(0);
    drop(bob);
    alice
        .send_message(&bob_full, "are you there")
        .await
        .unwrap();
    let (mut bob, answer) = Client::resume(&dc.client(), &b, PW, &previd, h, &bob_full)
        .await
        .unwrap();
    assert_eq!(answer.name(), "resumed", "{answer}");
    bob.expect("the message", message_with_body("are you there"))
        .await
        .unwrap();
    alice
        .expect_none(
            Duration::from_millis(300),
            presence_of_type(&bob_full, Some("unavailable")),
        )
        .await
        .unwrap();
    dc.stop().await.unwrap();
}

/// A client that enables stream management, reads everything and never acknowledges is
/// written nothing more once half of `max_queued_bytes` is unacknowledged; what comes for it
/// then waits, and once that passes `max_queued_bytes` the session is cut. Nothing it was sent
/// is lost: at its next login every message is there (the ones it read but never acknowledged
/// too, at least once).
#[tokio::test]
async fn a_client_that_never_acknowledges_is_cut_and_loses_nothing() {
    let dc = Dc::start(StackOptions {
        gateway: Some(c2s_gateway::Config {
            max_queued_bytes: 256 * 1024,
            ..c2s_gateway::Config::default()
        }),
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let (mut alice, mut bob, b) = friends(&dc, &dc.client()).await;
    bob.enable_sm(None).await.unwrap();
    let padding = "x".repeat(4000);
    // 128 KiB written unacknowledged, then 256 KiB waiting: the cut comes at about the 97th.
    let sent: Vec<String> = (0..120).map(|i| format!("{i:03} {padding}")).collect();
    // Paced under the sender's rate limit; Bob reads all along and never acknowledges.
    for chunk in sent.chunks(10) {
        send_all(&mut alice, bob.bare_jid(), chunk).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        bob.expect_stream_end().await.unwrap().as_deref(),
        Some("policy-violation")
    );
    drop(bob);

    let mut bob = Client::login(&dc.client(), &b, PW, Some("desk"))
        .await
        .unwrap();
    bob.send_presence().await.unwrap();
    let mut got = bodies(&mut bob, Duration::from_secs(2)).await;
    got.sort();
    got.dedup();
    assert_eq!(got, sent, "every message, once its copies are counted once");
    dc.stop().await.unwrap();
}

/// A channel on `dc`'s broker, and what the routers send the gateway `instance` (a queue of the
/// test's own bound to the delivery exchange with that key: a copy, when such a gateway runs).
async fn tap(dc: &Dc, instance: &str) -> (lapin::Connection, lapin::Channel, lapin::Consumer) {
    use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;
    let amqp = lapin::Connection::connect(
        &dc.amqp_url,
        lapin::ConnectionProperties::default()
            .with_executor(tokio_executor_trait::Tokio::current())
            .with_reactor(tokio_reactor_trait::Tokio),
    )
    .await
    .unwrap();
    let ch = amqp.create_channel().await.unwrap();
    let q = ch
        .queue_declare(
            "",
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    ch.queue_bind(
        q.name().as_str(),
        meerkat_wire::topology::DELIVER_EXCHANGE,
        instance,
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let consumer = ch
        .basic_consume(
            q.name().as_str(),
            "",
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    (amqp, ch, consumer)
}

/// What a holder sends a resuming gateway depends on what that gateway reads: one of wire 1.7
/// (its request has no `inline`) gets `moved`, a `forward` per kept stanza, then the `fence`;
/// one of 1.8 gets the kept stanzas in `moved`, which is the fence too, and nothing more. The
/// asking gateway here is the test, on the DC's broker, as a gateway instance of its own.
#[tokio::test]
async fn a_holder_answers_a_1_7_gateway_with_forwards_and_a_1_8_one_with_one_message() {
    use futures::StreamExt as _;
    use lapin::options::BasicPublishOptions;
    use meerkat_bus::HeaderExt as _;
    use meerkat_wire::handover::{Moved, Request};
    use meerkat_wire::{headers as h, topology as names, RouteKind};

    let dc = dc().await;
    for inline in [false, true] {
        let (mut alice, mut bob, b) = friends(&dc, &dc.client()).await;
        let previd = resumable(&mut bob).await;
        let sent = texts(if inline { "inline" } else { "forwarded" }, 2);
        send_all(&mut alice, bob.bare_jid(), &sent).await;
        for t in &sent {
            bob.expect("a message", message_with_body(t)).await.unwrap();
        }
        let bob_full = bob.jid().to_owned();
        bob.drop_connection();

        // The asking gateway's delivery queue.
        let gateway = format!("old-gateway-{}", uuid::Uuid::new_v4().simple());
        let (_amqp, ch, mut steps) = tap(&dc, &gateway).await;
        let secret = {
            use base64::Engine as _;
            let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&previd)
                .unwrap();
            raw[..16].iter().map(|x| format!("{x:02x}")).collect()
        };
        let request = Request {
            request: uuid::Uuid::now_v7(),
            jid: bob_full.clone(),
            new_session: uuid::Uuid::now_v7(),
            secret,
            account: format!("{b}@{}", dc.options.domain),
            h: 0,
            to_dc: dc.options.dc.clone(),
            to_gateway: gateway.clone(),
            sent_at_ms: u64::try_from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis(),
            )
            .unwrap(),
            inline,
            direct: false,
            hinted: false,
        };
        let props = meerkat_bus::Props::stanza(RouteKind::Handover, &dc.options.dc)
            .str(h::HANDOVER, "request")
            .str(h::WIRE, if inline { "1.8" } else { "1.7" });
        ch.basic_publish(
            "",
            names::HANDOVER_REQUESTS_QUEUE,
            BasicPublishOptions::default(),
            &serde_json::to_vec(&request).unwrap(),
            props.build(),
        )
        .await
        .unwrap()
        .await
        .unwrap();

        // Every step until the fence (or a quiet second after `moved`, for 1.8).
        let mut got: Vec<(String, Vec<u8>)> = Vec::new();
        loop {
            let wait = if got.is_empty() { 10 } else { 1 };
            let Ok(Some(Ok(d))) =
                tokio::time::timeout(Duration::from_secs(wait), steps.next()).await
            else {
                break;
            };
            let step = d
                .properties
                .headers()
                .as_ref()
                .get_str(h::HANDOVER)
                .unwrap_or_default();
            let fence = step == "fence";
            got.push((step, d.data));
            if fence {
                break;
            }
        }
        let names: Vec<&str> = got.iter().map(|(s, _)| s.as_str()).collect();
        let moved: Moved = serde_json::from_slice(&got[0].1).unwrap();
        assert_eq!(moved.session.jid, bob_full);
        let bodies = |xml: &[u8]| {
            Element::parse(std::str::from_utf8(xml).unwrap())
                .unwrap()
                .child_text("body", ns::CLIENT)
                .unwrap()
        };
        if inline {
            assert_eq!(names, ["moved"], "{names:?}");
            assert!(moved.fenced);
            let kept: Vec<String> = moved
                .kept
                .iter()
                .map(|k| bodies(k.xml.as_bytes()))
                .collect();
            assert_eq!(kept, sent);
        } else {
            assert_eq!(names, ["moved", "forward", "forward", "fence"], "{names:?}");
            // Read as 1.7 reads it: nothing of 1.8 in it.
            assert!(!String::from_utf8_lossy(&got[0].1).contains("kept"));
            let forwarded: Vec<String> = got[1..3].iter().map(|(_, x)| bodies(x)).collect();
            assert_eq!(forwarded, sent);
        }
    }
    dc.stop().await.unwrap();
}

/// A handover request delivered twice (a router that passed it on stopped before
/// acknowledging it, and another passes it on again) does not move the session it created:
/// the copy that reaches the old holder follows the session to its new gateway, as does the
/// copy the routers send there straight, and the resumed session ignores both and goes on.
#[tokio::test]
async fn a_handover_request_delivered_again_leaves_the_resumed_session_alone() {
    use futures::StreamExt as _;
    use meerkat_bus::HeaderExt as _;
    use meerkat_wire::{headers as h, topology as names};

    let mut dc = dc().await;
    let second = dc.start_gateway_on_own_port().await.unwrap();
    let first = dc.gateways[0].instance.clone();
    let (mut alice, mut bob, b) = friends(&dc, &dc.client()).await;
    let previd = resumable(&mut bob).await;

    // A copy of what the routers send the first gateway.
    let (_amqp, ch, mut copies) = tap(&dc, &first).await;

    let bob_full = bob.jid().to_owned();
    bob.drop_connection();
    let (mut bob, answer) = Client::resume(&second, &b, PW, &previd, 0, &bob_full)
        .await
        .unwrap();
    assert_eq!(answer.name(), "resumed", "{answer}");
    let request = loop {
        let d = tokio::time::timeout(Duration::from_secs(10), copies.next())
            .await
            .expect("the handover request, as the first gateway got it")
            .unwrap()
            .unwrap();
        let step = d.properties.headers().as_ref().get_str(h::HANDOVER);
        if step.as_deref() == Some("request") {
            break d;
        }
    };

    // Again to the first gateway, which follows the session; and again through the routers,
    // which know where it is now.
    let again = [
        (names::DELIVER_EXCHANGE, first.as_str()),
        ("", names::HANDOVER_REQUESTS_QUEUE),
    ];
    republish(&ch, &request, &again).await;
    // Bob's resumed connection is not closed and his session goes on.
    goes_on(
        &mut bob,
        &mut alice,
        &bob_full,
        "after the repeated request",
    )
    .await;

    // Moved on again, back to the first gateway: the session the request made is gone, and
    // the one made from it ignores the request too, however it comes.
    let h = bob.sm_received().unwrap();
    bob.drop_connection();
    let (mut bob, answer) = Client::resume(&dc.client(), &b, PW, &previd, h, &bob_full)
        .await
        .unwrap();
    assert_eq!(answer.name(), "resumed", "{answer}");
    republish(&ch, &request, &again).await;
    goes_on(&mut bob, &mut alice, &bob_full, "after the second move").await;
    dc.stop().await.unwrap();
}

/// `previd` with the place it names (the DC and gateway that gave it) replaced by `dc` and
/// `gateway`: what a client holds after its session moved, or a forgery.
fn naming(previd: &str, dc: &str, gateway: &str) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let raw = b64.decode(previd).unwrap();
    let end = raw[16..]
        .iter()
        .position(|b| *b == 0)
        .map_or(raw.len(), |at| 16 + at);
    let mut named = raw[..end].to_vec();
    for part in [dc, gateway] {
        named.push(0);
        named.extend_from_slice(part.as_bytes());
    }
    b64.encode(named)
}

/// A resumption id names the gateway that gave it, and a resuming gateway asks there first,
/// past the routers. When the gateway named is not where the session is — no such gateway, one
/// that never held it, one that does not answer (gone, or hung) — the session is still found,
/// through the routers: each time Bob resumes, at one gateway or another, and gets what was
/// sent while he was away, once, with no flap for Alice.
#[tokio::test]
async fn a_resumption_id_naming_the_wrong_gateway_still_finds_the_session() {
    use futures::StreamExt as _;
    use meerkat_bus::HeaderExt as _;
    use meerkat_wire::headers as h;

    let mut dc = dc().await;
    let second = dc.start_gateway_on_own_port().await.unwrap();
    let _third = dc.start_gateway_on_own_port().await.unwrap();
    let third = dc.gateways.last().unwrap().instance.clone();
    let (mut alice, mut bob, b) = friends(&dc, &dc.client()).await;
    let previd = resumable(&mut bob).await;
    let bob_full = bob.jid().to_owned();
    // A gateway that does not answer: what is sent to it, read by nobody who answers.
    let silent = format!("silent-{}", uuid::Uuid::new_v4().simple());
    let (_amqp, _ch, mut to_silent) = tap(&dc, &silent).await;

    let dc_id = dc.options.dc.clone();
    let rounds = [
        ("no such gateway", "no-such-gateway", second.clone()),
        ("a gateway that never held it", third.as_str(), dc.client()),
        (
            "a gateway that does not answer",
            silent.as_str(),
            second.clone(),
        ),
    ];
    for (what, named, at) in rounds {
        let h = bob.sm_received().unwrap();
        bob.sm_ack(h).await.unwrap();
        bob.drop_connection();
        let away = texts(what, 2);
        send_all(&mut alice, &bob_full, &away).await;
        let id = naming(&previd, &dc_id, named);
        let (resumed, answer) = Client::resume(&at, &b, PW, &id, h, &bob_full)
            .await
            .unwrap();
        assert_eq!(answer.name(), "resumed", "{what}: {answer}");
        bob = resumed;
        assert_eq!(
            bodies(&mut bob, Duration::from_secs(1)).await,
            away,
            "{what}"
        );
        no_flap(&mut alice, &bob_full).await;
    }
    // The silent gateway was asked first.
    let asked = tokio::time::timeout(Duration::from_secs(5), to_silent.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        asked
            .properties
            .headers()
            .as_ref()
            .get_str(h::HANDOVER)
            .as_deref(),
        Some("request")
    );
    dc.stop().await.unwrap();
}
