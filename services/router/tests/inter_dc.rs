//! The router's side of active-active within one real DC, the other DC simulated on the
//! broker: a stanza arriving on `meerkat.inter.stanzas` for this DC reaches its session
//! (once, even if the federation delivers it twice) or is re-resolved when that session is
//! not here; a session of another DC in the directory gets its stanzas wrapped for that DC;
//! conflict kicks cross DCs both ways.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use meerkat_bus::lapin::options::{
    BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions,
};
use meerkat_bus::lapin::types::FieldTable;
use meerkat_bus::lapin::{self, BasicProperties, Connection};
use meerkat_bus::{Bus, HeaderExt, Headers, Publisher};
use meerkat_testkit::client::pred::message_with_body;
use meerkat_testkit::client::Client;
use meerkat_testkit::stack::{Dc, StackOptions};
use meerkat_wire::headers as h;
use meerkat_wire::topology as names;
use meerkat_wire::{SessionEvent, SessionEventKind, SessionInfo};
use meerkat_xmpp::{ns, Element};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(10);

fn user(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

struct Amqp {
    conn: Arc<Connection>,
    publisher: Publisher,
    _stop: CancellationToken,
}

async fn amqp(dc: &Dc) -> Amqp {
    let stop = CancellationToken::new();
    let bus = Bus::start(&dc.amqp_url, "inter-dc-test", stop.clone());
    let conn = tokio::time::timeout(WAIT, bus.connected())
        .await
        .unwrap()
        .unwrap();
    Amqp {
        conn,
        publisher: Publisher::new(bus),
        _stop: stop,
    }
}

/// A queue of our own bound to `exchange` with `key`, consumed.
async fn listen(a: &Amqp, exchange: &str, key: &str) -> lapin::Consumer {
    let ch = a.conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(
            "",
            QueueDeclareOptions {
                exclusive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    ch.queue_bind(
        q.name().as_str(),
        exchange,
        key,
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.basic_consume(
        q.name().as_str(),
        "test",
        BasicConsumeOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap()
}

async fn next(c: &mut lapin::Consumer) -> lapin::message::Delivery {
    let d = tokio::time::timeout(WAIT, c.next())
        .await
        .expect("a message in time")
        .unwrap()
        .unwrap();
    d.ack(BasicAckOptions::default()).await.unwrap();
    d
}

/// The session event of `jid` that makes it available, from our own sessions queue.
async fn available_session(events: &mut lapin::Consumer, jid: &str) -> SessionInfo {
    loop {
        let d = next(events).await;
        let e = SessionEvent::from_json(&d.data).unwrap();
        if e.session.jid == jid && e.session.available {
            return e.session;
        }
    }
}

/// Registered, logged in, roster requested, available.
async fn online(dc: &Dc, name: &str, resource: &str) -> Client {
    Client::register_account(&dc.client(), name, "secret-pw")
        .await
        .unwrap();
    let mut c = Client::login(&dc.client(), name, "secret-pw", Some(resource))
        .await
        .unwrap();
    c.iq_ok("get", None, Element::new("query", ns::ROSTER))
        .await
        .unwrap();
    c.send_presence().await.unwrap();
    c
}

/// What another DC's router publishes for a session here.
async fn from_other_dc(a: &Amqp, id: &str, kind: &str, session: Uuid, stanza: Option<&Element>) {
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
        .str(h::ORIGIN_DC, "dc2")
        .str(h::TARGET_DC, "dc1")
        .u64(h::HOPS, 2);
    if let Some(from) = stanza.and_then(|s| s.attr("from")) {
        headers = headers.str(h::SENDER, from);
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

fn chat(from: &str, to: &str, body: &str) -> Element {
    Element::new("message", ns::CLIENT)
        .with_attr("from", from.to_owned())
        .with_attr("to", to.to_owned())
        .with_attr("type", "chat")
        .with_child(Element::new("body", ns::CLIENT).with_text(body.to_owned()))
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
    let dc = Dc::start(StackOptions::default()).await.unwrap();
    let a = amqp(&dc).await;
    let mut events = listen(&a, names::SESSIONS_EXCHANGE, "").await;
    let bob = user("bob");
    let mut b = online(&dc, &bob, "desk").await;
    let bob_full = format!("{bob}@example.com/desk");
    let session = available_session(&mut events, &bob_full).await;

    // Straight to its session, twice with one envelope id: delivered once, as sent.
    let m = chat("alice@example.com/far", &bob_full, "over the sea");
    let id = Uuid::new_v4().to_string();
    from_other_dc(&a, &id, h::kind::STANZA, session.session_id, Some(&m)).await;
    from_other_dc(&a, &id, h::kind::STANZA, session.session_id, Some(&m)).await;
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
        h::kind::STANZA,
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
        h::kind::CONFLICT,
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
    let dc = Dc::start(StackOptions::default()).await.unwrap();
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
        assert_eq!(headers.get_str(h::KIND).as_deref(), Some(h::kind::STANZA));
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
    assert_eq!(headers.get_str(h::KIND).as_deref(), Some(h::kind::CONFLICT));
    assert_eq!(headers.get_str(h::SESSION), Some(older.to_string()));
    // Bob's own session here is untouched.
    b.send_message(&bob_full, "still here").await.unwrap();
    b.expect("own message", message_with_body("still here"))
        .await
        .unwrap();
    dc.stop().await.unwrap();
}
