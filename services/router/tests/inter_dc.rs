//! The router's side of active-active within one real DC, the other DC simulated on the
//! broker: a stanza arriving on `meerkat.inter.stanzas` for this DC reaches its session
//! (once, even if the federation delivers it twice) or is re-resolved when that session is
//! not here; a session of another DC in the directory gets its stanzas wrapped for that DC;
//! conflict kicks cross DCs both ways; a message that did not come through the federation link
//! of the DC it claims is refused.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use meerkat_bus::lapin::types::{AMQPValue, FieldTable};
use meerkat_bus::lapin::BasicProperties;
use meerkat_bus::{HeaderExt, Headers};
use meerkat_testkit::client::pred::message_with_body;
use meerkat_testkit::client::Client;
use meerkat_testkit::stack::{Dc, StackOptions};
use meerkat_wire::headers as h;
use meerkat_wire::topology as names;
use meerkat_wire::{SessionEvent, SessionEventKind, SessionInfo};
use meerkat_xmpp::Element;
use uuid::Uuid;

mod common;
use common::*;

/// The federation upstream this DC's router is told DC 2 is reached by. The other DC is
/// simulated by publishing on this DC's broker, so the test writes the `x-received-from` entry
/// the federation link would append.
const DC2_LINK: &str = "amqp://127.0.0.1:5672/dc2-link";
/// Another DC's link.
const DC3_LINK: &str = "amqp://127.0.0.1:5672/dc3-link";

/// One DC whose routers know DC 2 and DC 3 by their links. No health service: it would declare
/// the silent simulated DCs down and purge their sessions.
async fn dc() -> Dc {
    Dc::start(StackOptions {
        peers: vec![
            ("dc2".into(), DC2_LINK.into()),
            ("dc3".into(), DC3_LINK.into()),
        ],
        health: false,
        ..StackOptions::default()
    })
    .await
    .unwrap()
}

/// What DC 2's router publishes for a session here, arriving through DC 2's link.
async fn from_other_dc(a: &Amqp, id: &str, kind: &str, session: Uuid, stanza: Option<&Element>) {
    from_dc(a, id, kind, session, stanza, "dc2", Some(DC2_LINK), None).await;
}

/// A message on this DC's inter-DC exchange that claims to come from `claimed` and arrived
/// through the link `via` (none: published in this DC itself).
#[allow(clippy::too_many_arguments)]
async fn from_dc(
    a: &Amqp,
    id: &str,
    kind: &str,
    session: Uuid,
    stanza: Option<&Element>,
    claimed: &str,
    via: Option<&str>,
    data: Option<(&str, u64)>,
) {
    let mut body = format!(
        "<route xmlns='{}' from='dc2.example.com' to='dc1.example.com'>",
        h::ROUTE_NS
    );
    if let Some(s) = stanza {
        body.push_str(&s.to_xml());
    }
    body.push_str("</route>");
    let mut headers = Headers::new()
        .u64(h::WIRE, 1)
        .str(h::KIND, kind)
        .str(h::SESSION, &session.to_string())
        .str(h::TARGET_DC, "dc1")
        .u64(h::HOPS, 2);
    if !claimed.is_empty() {
        headers = headers.str(h::ORIGIN_DC, claimed);
    }
    if let Some((epoch, seq)) = data {
        headers = headers.str(h::DATA_EPOCH, epoch).u64(h::DATA_SEQ, seq);
    }
    if let Some(from) = stanza.and_then(|s| s.attr("from")) {
        headers = headers.str(h::SENDER, from);
    }
    if let Some(uri) = via {
        came_through(&mut headers, uri);
    }
    let props = BasicProperties::default()
        .with_message_id(id.into())
        .with_delivery_mode(2)
        .with_headers(headers.build());
    a.publisher
        .publish(names::INTER_STANZAS_EXCHANGE, "dc1", props, body.as_bytes())
        .await
        .unwrap();
}

/// The `x-received-from` entry the federation link from `uri` appends.
fn came_through(headers: &mut Headers, uri: &str) {
    let mut hop = FieldTable::default();
    hop.insert("uri".into(), AMQPValue::LongString(uri.into()));
    hop.insert(
        "exchange".into(),
        AMQPValue::LongString(names::INTER_STANZAS_EXCHANGE.into()),
    );
    headers.table().insert(
        meerkat_bus::origin::RECEIVED_FROM.into(),
        AMQPValue::FieldArray(vec![AMQPValue::FieldTable(hop)].into()),
    );
}

/// A session of DC 2 as its replicator republishes it into this DC's session fanout.
async fn remote_session(a: &Amqp, jid: &str, id: Uuid) {
    let event = SessionEvent {
        v: 1,
        kind: SessionEventKind::Announce,
        epoch: "dc2-epoch".into(),
        session: SessionInfo {
            jid: jid.into(),
            session_id: id,
            version: 2,
            dc: "dc2".into(),
            gateway: "dc2-gw".into(),
            available: true,
            priority: 0,
            presence: None,
            interested: true,
            carbons: false,
            blocklist: false,
        },
    };
    a.publisher
        .publish(
            names::SESSIONS_EXCHANGE,
            "",
            BasicProperties::default(),
            &event.to_json(),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn stanzas_from_another_dc_reach_their_session_once() {
    let dc = dc().await;
    let a = amqp(&dc).await;
    let mut events = listen(&a, names::SESSIONS_EXCHANGE, "").await;
    let bob = user("bob");
    let mut b = online(&dc, &bob, "desk").await;
    let bob_full = format!("{bob}@example.com/desk");
    let session = available_session(&mut events, &bob_full).await;

    // Straight to its session, twice with one envelope id: delivered once, as sent.
    let m = chat("alice@example.com/far", &bob_full, "over the sea");
    let id = Uuid::new_v4().to_string();
    from_other_dc(
        &a,
        &id,
        meerkat_wire::RouteKind::Stanza.as_str(),
        session.session_id,
        Some(&m),
    )
    .await;
    from_other_dc(
        &a,
        &id,
        meerkat_wire::RouteKind::Stanza.as_str(),
        session.session_id,
        Some(&m),
    )
    .await;
    let got = b
        .expect("the remote message", message_with_body("over the sea"))
        .await
        .unwrap();
    assert_eq!(got.attr("from"), Some("alice@example.com/far"));
    b.expect_none(
        Duration::from_millis(700),
        message_with_body("over the sea"),
    )
    .await
    .unwrap();

    // For a session that is not here (gone): re-resolved by the full JID, still delivered.
    let m = chat("alice@example.com/far", &bob_full, "re-resolved");
    from_other_dc(
        &a,
        &Uuid::new_v4().to_string(),
        meerkat_wire::RouteKind::Stanza.as_str(),
        Uuid::now_v7(),
        Some(&m),
    )
    .await;
    b.expect("the re-resolved message", message_with_body("re-resolved"))
        .await
        .unwrap();

    // A conflict kick from another DC closes the session here.
    from_other_dc(
        &a,
        &Uuid::new_v4().to_string(),
        meerkat_wire::RouteKind::Conflict.as_str(),
        session.session_id,
        None,
    )
    .await;
    assert_eq!(
        b.expect_stream_end().await.unwrap().as_deref(),
        Some("conflict")
    );
    dc.stop().await.unwrap();
}

#[tokio::test]
async fn sessions_of_another_dc_get_wrapped_stanzas() {
    let dc = dc().await;
    let a = amqp(&dc).await;
    let mut to_dc2 = listen(&a, names::INTER_STANZAS_EXCHANGE, "dc2").await;
    let mut events = listen(&a, names::SESSIONS_EXCHANGE, "").await;
    let older = Uuid::now_v7();
    let carol = user("carol");
    let carol_full = format!("{carol}@example.com/far");
    let carol_session = Uuid::now_v7();
    remote_session(&a, &carol_full, carol_session).await;
    let bob = user("bob");
    let mut b = online(&dc, &bob, "desk").await;
    let bob_full = format!("{bob}@example.com/desk");
    available_session(&mut events, &bob_full).await;

    // To the full JID, then to the bare JID (carol's only resource is at DC 2).
    b.send_message(&carol_full, "to the full jid")
        .await
        .unwrap();
    b.send_message(&format!("{carol}@example.com"), "to the bare jid")
        .await
        .unwrap();
    for body in ["to the full jid", "to the bare jid"] {
        let d = next(&mut to_dc2).await;
        let headers = d.properties.headers().as_ref();
        assert_eq!(headers.get_str(h::TARGET_DC).as_deref(), Some("dc2"));
        assert_eq!(headers.get_str(h::ORIGIN_DC).as_deref(), Some("dc1"));
        assert_eq!(
            headers.get_str(h::KIND).as_deref(),
            Some(meerkat_wire::RouteKind::Stanza.as_str())
        );
        assert_eq!(headers.get_str(h::SESSION), Some(carol_session.to_string()));
        assert_eq!(
            headers.get_str(h::SENDER).as_deref(),
            Some(bob_full.as_str())
        );
        assert_eq!(headers.get_u64(h::HOPS), Some(2));
        assert!(d.properties.message_id().is_some());
        let text = String::from_utf8(d.data.clone()).unwrap();
        assert!(
            text.starts_with("<route xmlns='urn:xmpp:meerkat:route:1' from='dc1.example.com' to='dc2.example.com'><message xmlns='jabber:client'"),
            "{text}"
        );
        assert!(text.contains(body), "{text}");
    }

    // An older session of DC 2 for bob's full JID lost: it is kicked through DC 2.
    let mut loser = SessionEvent {
        v: 1,
        kind: SessionEventKind::Open,
        epoch: "dc2-epoch".into(),
        session: SessionInfo {
            jid: bob_full.clone(),
            session_id: older,
            version: 1,
            dc: "dc2".into(),
            gateway: "dc2-gw".into(),
            available: false,
            priority: 0,
            presence: None,
            interested: false,
            carbons: false,
            blocklist: false,
        },
    };
    loser.kind = SessionEventKind::Open;
    a.publisher
        .publish(
            names::SESSIONS_EXCHANGE,
            "",
            BasicProperties::default(),
            &loser.to_json(),
        )
        .await
        .unwrap();
    let d = next(&mut to_dc2).await;
    let headers = d.properties.headers().as_ref();
    assert_eq!(
        headers.get_str(h::KIND).as_deref(),
        Some(meerkat_wire::RouteKind::Conflict.as_str())
    );
    assert_eq!(headers.get_str(h::SESSION), Some(older.to_string()));
    // Bob's own session here is untouched.
    b.send_message(&bob_full, "still here").await.unwrap();
    b.expect("own message", message_with_body("still here"))
        .await
        .unwrap();
    dc.stop().await.unwrap();
}

#[tokio::test]
async fn stanzas_not_from_the_dc_they_claim_are_refused() {
    let dc = dc().await;
    let a = amqp(&dc).await;
    let mut events = listen(&a, names::SESSIONS_EXCHANGE, "").await;
    let bob = user("bob");
    let mut b = online(&dc, &bob, "desk").await;
    let bob_full = format!("{bob}@example.com/desk");
    let session = available_session(&mut events, &bob_full).await;
    let send = |body: &str| chat("alice@example.com/far", &bob_full, body);

    // DC 3 speaking for DC 2; a message published in this DC's own broker claiming DC 2; one
    // claiming a DC that is no peer; one claiming no DC at all; a conflict kick through DC 3's
    // link for DC 2's user.
    let forged: [(&str, &str, Option<&str>); 4] = [
        ("forged: dc3 as dc2", "dc2", Some(DC3_LINK)),
        ("forged: local as dc2", "dc2", None),
        ("forged: dc9", "dc9", Some(DC2_LINK)),
        ("forged: no origin", "", Some(DC2_LINK)),
    ];
    for (body, claimed, via) in forged {
        let m = send(body);
        let id = Uuid::new_v4().to_string();
        from_dc(
            &a,
            &id,
            meerkat_wire::RouteKind::Stanza.as_str(),
            session.session_id,
            Some(&m),
            claimed,
            via,
            None,
        )
        .await;
    }
    let id = Uuid::new_v4().to_string();
    from_dc(
        &a,
        &id,
        meerkat_wire::RouteKind::Conflict.as_str(),
        session.session_id,
        None,
        "dc2",
        Some(DC3_LINK),
        None,
    )
    .await;
    // Then the genuine one, through DC 2's link: it arrives, and none of the forged ones did
    // (they were ahead of it in the same queue, which one consumer takes in order).
    let m = send("genuine");
    from_other_dc(
        &a,
        &Uuid::new_v4().to_string(),
        meerkat_wire::RouteKind::Stanza.as_str(),
        session.session_id,
        Some(&m),
    )
    .await;
    b.expect("the genuine message", message_with_body("genuine"))
        .await
        .unwrap();
    b.expect_none(Duration::from_millis(700), |s: &Element| {
        s.get_child("body", meerkat_xmpp::ns::CLIENT)
            .is_some_and(|body| body.text().starts_with("forged"))
    })
    .await
    .unwrap();
    // The session was not kicked: its own message still comes back.
    b.send_message(&bob_full, "still here").await.unwrap();
    b.expect("own message", message_with_body("still here"))
        .await
        .unwrap();
    // Counted, by reason.
    let metrics = metrics(&dc).await;
    for (reason, n) in [
        ("wrong-link", 2),
        ("not-federated", 1),
        ("unknown-dc", 1),
        ("no-origin", 1),
    ] {
        let line = format!("meerkat_router_inter_refused_total{{reason=\"{reason}\"}} {n}");
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
    dc.stop().await.unwrap();
}

/// A stanza announcing data its DC wrote (a subscription request before the request itself,
/// say) waits for that data even when this DC has applied nothing from that DC yet (a fresh
/// mesh): it is routed once replication catches up, or when the wait's bound passes.
#[tokio::test]
async fn a_stanza_waits_for_its_data_even_from_a_dc_never_heard_from() {
    let dc = dc().await;
    let a = amqp(&dc).await;
    let mut events = listen(&a, names::SESSIONS_EXCHANGE, "").await;
    let bob = user("bob");
    let mut b = online(&dc, &bob, "desk").await;
    let bob_full = format!("{bob}@example.com/desk");
    let session = available_session(&mut events, &bob_full).await;

    // DC 3's database wrote up to seq 7 before sending this; nothing of DC 3's is applied
    // here (no replicator runs in this test), so it waits out the bound, then goes on.
    let m = chat("carol@example.com/far", &bob_full, "after its data");
    from_dc(
        &a,
        &Uuid::new_v4().to_string(),
        meerkat_wire::RouteKind::Stanza.as_str(),
        session.session_id,
        Some(&m),
        "dc3",
        Some(DC3_LINK),
        Some(("dc3-db-epoch", 7)),
    )
    .await;
    b.expect_none(
        Duration::from_millis(1500),
        message_with_body("after its data"),
    )
    .await
    .unwrap();
    b.expect(
        "the message, once the wait is over",
        message_with_body("after its data"),
    )
    .await
    .unwrap();
    dc.stop().await.unwrap();
}

/// A fan-out (one stanza, several recipients), as DC 2's router or this DC's router sends it.
fn fan_out_headers(recipients: &[(Uuid, &str, String)]) -> Headers {
    let list: Vec<meerkat_wire::fanout::Recipient> = recipients
        .iter()
        .map(|(session, id, to)| meerkat_wire::fanout::Recipient {
            session: *session,
            id: (*id).to_owned(),
            to: to.clone(),
        })
        .collect();
    Headers::new()
        .u64(h::WIRE, 1)
        .str(h::KIND, meerkat_wire::RouteKind::Fanout.as_str())
        .str(h::RECIPIENTS, &meerkat_wire::fanout::encode(&list))
        .u64(h::HOPS, 2)
}

/// Bob online at `dc` (his client, full JID and session as announced), Dave registered and
/// offline.
async fn bob_online_dave_offline(dc: &Dc, a: &Amqp) -> (Client, String, SessionInfo, String) {
    let mut events = listen(a, names::SESSIONS_EXCHANGE, "").await;
    let (bob, dave) = (user("bob"), user("dave"));
    let b = online(dc, &bob, "desk").await;
    let bob_full = format!("{bob}@example.com/desk");
    let bs = available_session(&mut events, &bob_full).await;
    Client::register_account(&dc.client(), &dave, "secret-pw")
        .await
        .unwrap();
    (b, bob_full, bs, dave)
}

/// A groupchat-like stanza without `to`, each copy gets its recipient's.
fn reflection(body: &str) -> Element {
    let mut m = chat("room@conference.example.com/nick", "", body);
    m.remove_attr("to");
    m
}

/// Dave (registered, offline) logs in and finds each of `bodies` stored for him, stamped
/// with a delay.
async fn offline_reaches(dc: &Dc, dave: &str, bodies: &[&str]) {
    let mut d = Client::login(&dc.client(), dave, "secret-pw", Some("later"))
        .await
        .unwrap();
    d.send_presence().await.unwrap();
    for body in bodies {
        let got = d
            .expect("the copy kept offline", message_with_body(body))
            .await
            .unwrap();
        assert!(got.get_child("delay", "urn:xmpp:delay").is_some(), "{got}");
    }
}

/// DC 2 sends one fan-out for two sessions here and one that is not (Dave's, who is
/// offline): each session here gets its copy, addressed to it, once, though the federation
/// delivers the fan-out twice; the copy for the missing session is routed again like a
/// bounce and kept offline for Dave.
#[tokio::test]
async fn a_fan_out_from_another_dc_reaches_each_session_once_and_a_missing_one_is_kept() {
    let dc = dc().await;
    let a = amqp(&dc).await;
    let mut events = listen(&a, names::SESSIONS_EXCHANGE, "").await;
    let (bob, carol, dave) = (user("bob"), user("carol"), user("dave"));
    let mut b = online(&dc, &bob, "desk").await;
    let bob_full = format!("{bob}@example.com/desk");
    let bs = available_session(&mut events, &bob_full).await;
    let mut c = online(&dc, &carol, "laptop").await;
    let carol_full = format!("{carol}@example.com/laptop");
    let cs = available_session(&mut events, &carol_full).await;
    Client::register_account(&dc.client(), &dave, "secret-pw")
        .await
        .unwrap();
    let copies = [
        (bs.session_id, "copy-b", bob_full.clone()),
        (cs.session_id, "copy-c", carol_full.clone()),
        (Uuid::now_v7(), "copy-d", format!("{dave}@example.com/gone")),
    ];
    let m = reflection("to everyone");
    let body = format!(
        "<route xmlns='{}' from='dc2.example.com' to='dc1.example.com'>{}</route>",
        h::ROUTE_NS,
        m.to_xml()
    );
    for _ in 0..2 {
        let mut headers = fan_out_headers(&copies)
            .str(h::TARGET_DC, "dc1")
            .str(h::ORIGIN_DC, "dc2")
            .str(h::SENDER, "room@conference.example.com/nick");
        came_through(&mut headers, DC2_LINK);
        let props = BasicProperties::default()
            .with_message_id("fan-out-1".into())
            .with_delivery_mode(2)
            .with_headers(headers.build());
        a.publisher
            .publish(names::INTER_STANZAS_EXCHANGE, "dc1", props, body.as_bytes())
            .await
            .unwrap();
    }
    for (client, full) in [(&mut b, &bob_full), (&mut c, &carol_full)] {
        let got = client
            .expect("its copy", message_with_body("to everyone"))
            .await
            .unwrap();
        assert_eq!(got.attr("to"), Some(full.as_str()));
        assert_eq!(got.attr("from"), Some("room@conference.example.com/nick"));
    }
    for client in [&mut b, &mut c] {
        client
            .expect_none(Duration::from_millis(700), message_with_body("to everyone"))
            .await
            .unwrap();
    }
    offline_reaches(&dc, &dave, &["to everyone"]).await;
    dc.stop().await.unwrap();
}

/// A bundle from another DC (stanzas one handling there queued for sessions here, all from one
/// sender: a room's presences to a newcomer, its history): Bob gets his three in order, each
/// once though the federation delivers the bundle twice, and the one for Dave's session, gone,
/// is routed again and kept offline for him. An uneven bundle (fewer stanzas than recipients)
/// is dropped, and the partition goes on.
#[tokio::test]
async fn a_bundle_from_another_dc_reaches_its_sessions_in_order_and_a_missing_one_is_kept() {
    let dc = dc().await;
    let a = amqp(&dc).await;
    let (mut b, bob_full, bs, dave) = bob_online_dave_offline(&dc, &a).await;
    let dave_to = format!("{dave}@example.com/gone");
    let stanza = |body: &str, to: &str| {
        let mut m = reflection(body);
        m.set_attr("to", to);
        m
    };
    let stanzas = [
        stanza("first", &bob_full),
        stanza("for dave", &dave_to),
        stanza("second", &bob_full),
        stanza("third", &bob_full),
    ];
    let copies = [
        (bs.session_id, "b-1", bob_full.clone()),
        (Uuid::now_v7(), "d-1", dave_to.clone()),
        (bs.session_id, "b-2", bob_full.clone()),
        (bs.session_id, "b-3", bob_full.clone()),
    ];
    let send = |copies: &[(Uuid, &str, String)], stanzas: &[Element], id: &'static str| {
        let refs: Vec<&Element> = stanzas.iter().collect();
        let body = format!(
            "<route xmlns='{}' from='dc2.example.com' to='dc1.example.com'>{}</route>",
            h::ROUTE_NS,
            meerkat_wire::fanout::bundle(&refs).to_xml()
        );
        let mut headers = fan_out_headers(copies)
            .str(h::KIND, meerkat_wire::RouteKind::Bundle.as_str())
            .str(h::TARGET_DC, "dc1")
            .str(h::ORIGIN_DC, "dc2")
            .str(h::SENDER, "room@conference.example.com/nick");
        came_through(&mut headers, DC2_LINK);
        let props = BasicProperties::default()
            .with_message_id(id.into())
            .with_delivery_mode(2)
            .with_headers(headers.build());
        let publisher = &a.publisher;
        async move {
            publisher
                .publish(names::INTER_STANZAS_EXCHANGE, "dc1", props, body.as_bytes())
                .await
                .unwrap();
        }
    };
    send(&copies[..2], &stanzas[..1], "bundle-uneven").await;
    for _ in 0..2 {
        send(&copies, &stanzas, "bundle-1").await;
    }
    let mut got = Vec::new();
    while got.len() < 3 {
        let m = b
            .expect("a bundled stanza", |e| {
                e.attr("from") == Some("room@conference.example.com/nick")
            })
            .await
            .unwrap();
        assert_eq!(m.attr("to"), Some(bob_full.as_str()));
        got.push(
            m.child_text("body", meerkat_xmpp::ns::CLIENT)
                .unwrap_or_default(),
        );
    }
    assert_eq!(got, ["first", "second", "third"]);
    b.expect_none(Duration::from_millis(700), |e| {
        e.attr("from") == Some("room@conference.example.com/nick")
    })
    .await
    .unwrap();
    offline_reaches(&dc, &dave, &["for dave"]).await;
    dc.stop().await.unwrap();
}

/// A fan-out on a gateway's own queue naming a session that gateway does not hold (it ended
/// a moment ago, before the router knew): the session it holds gets its copy; the other
/// copy goes back to the routers and is kept offline for its account. A fan-out with
/// unreadable recipients is parked, and the gateway goes on. Likewise a bundle (stanzas that
/// differ): each to its session in order, the missing one's bounced and kept.
#[tokio::test]
async fn a_gateway_hands_each_fan_out_copy_to_its_session_and_bounces_the_missing_one() {
    let dc = dc().await;
    let a = amqp(&dc).await;
    let (mut b, bob_full, bs, dave) = bob_online_dave_offline(&dc, &a).await;
    let publish = |headers: Headers, id: &'static str, body: String| {
        let props = BasicProperties::default()
            .with_message_id(id.into())
            .with_delivery_mode(2)
            .with_headers(headers.build());
        let gateway = bs.gateway.clone();
        let publisher = &a.publisher;
        async move {
            publisher
                .publish(names::DELIVER_EXCHANGE, &gateway, props, body.as_bytes())
                .await
                .unwrap();
        }
    };
    let bad = fan_out_headers(&[]).str(h::RECIPIENTS, "not json");
    publish(bad, "fan-out-bad", reflection("unreadable").to_xml()).await;
    let copies = [
        (bs.session_id, "gw-copy-b", bob_full.clone()),
        (
            Uuid::now_v7(),
            "gw-copy-d",
            format!("{dave}@example.com/gone"),
        ),
    ];
    publish(
        fan_out_headers(&copies),
        "fan-out-2",
        reflection("from the gateway").to_xml(),
    )
    .await;
    let got = b
        .expect("its copy", message_with_body("from the gateway"))
        .await
        .unwrap();
    assert_eq!(got.attr("to"), Some(bob_full.as_str()));
    b.expect_none(Duration::from_millis(300), message_with_body("unreadable"))
        .await
        .unwrap();
    // A bundle: stanzas that differ, one recipient each, in order; the missing session's is
    // bounced like the fan-out's copy. One whose stanzas and recipients do not pair up is
    // parked.
    let dave_gone = format!("{dave}@example.com/gone");
    let b1 = chat("alice@example.com/x", &bob_full, "bundled 1");
    let b2 = chat("alice@example.com/x", &dave_gone, "bundled 2");
    let b3 = chat("alice@example.com/x", &bob_full, "bundled 3");
    let bundle_headers = |copies: &[(Uuid, &str, String)]| {
        fan_out_headers(copies).str(h::KIND, meerkat_wire::RouteKind::Bundle.as_str())
    };
    let uneven = [(bs.session_id, "uneven-b", bob_full.clone())];
    publish(
        bundle_headers(&uneven),
        "bundle-bad",
        meerkat_wire::fanout::bundle(&[&b1, &b3]).to_xml(),
    )
    .await;
    let copies = [
        (bs.session_id, "bundle-b1", bob_full.clone()),
        (Uuid::now_v7(), "bundle-b2", dave_gone.clone()),
        (bs.session_id, "bundle-b3", bob_full.clone()),
    ];
    publish(
        bundle_headers(&copies),
        "bundle-1",
        meerkat_wire::fanout::bundle(&[&b1, &b2, &b3]).to_xml(),
    )
    .await;
    let first = b
        .expect("a bundled stanza", |e| {
            e.get_child("body", meerkat_xmpp::ns::CLIENT)
                .is_some_and(|b| b.text().starts_with("bundled"))
        })
        .await
        .unwrap();
    assert_eq!(
        first
            .get_child("body", meerkat_xmpp::ns::CLIENT)
            .map(|b| b.text())
            .as_deref(),
        Some("bundled 1")
    );
    b.expect("the third, after the first", message_with_body("bundled 3"))
        .await
        .unwrap();
    b.expect_none(Duration::from_millis(300), message_with_body("bundled 1"))
        .await
        .unwrap();
    offline_reaches(&dc, &dave, &["from the gateway", "bundled 2"]).await;
    dc.stop().await.unwrap();
}
