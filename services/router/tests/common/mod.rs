//! Helpers shared by the router's integration tests: a real DC (testkit), an AMQP connection
//! of the test's own to play another DC or a gateway, and clients.

// Each test binary uses a part of these.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use meerkat_bus::lapin::options::{
    BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions,
};
use meerkat_bus::lapin::types::FieldTable;
use meerkat_bus::lapin::{self, Connection};
use meerkat_bus::{Bus, Publisher};
use meerkat_testkit::client::Client;
use meerkat_testkit::stack::Dc;
use meerkat_wire::{SessionEvent, SessionInfo};
use meerkat_xmpp::{ns, Element};
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(10);

pub fn user(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

pub struct Amqp {
    pub conn: Arc<Connection>,
    pub publisher: Publisher,
    _stop: CancellationToken,
}

pub async fn amqp(dc: &Dc) -> Amqp {
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
pub async fn listen(a: &Amqp, exchange: &str, key: &str) -> lapin::Consumer {
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

pub async fn next(c: &mut lapin::Consumer) -> lapin::message::Delivery {
    let d = tokio::time::timeout(WAIT, c.next())
        .await
        .expect("a message in time")
        .unwrap()
        .unwrap();
    d.ack(BasicAckOptions::default()).await.unwrap();
    d
}

/// The session event of `jid` that makes it available, from our own sessions queue.
pub async fn available_session(events: &mut lapin::Consumer, jid: &str) -> SessionInfo {
    loop {
        let d = next(events).await;
        let e = SessionEvent::from_json(&d.data).unwrap();
        if e.session.jid == jid && e.session.available {
            return e.session;
        }
    }
}

/// Registered, logged in, roster requested, available.
pub async fn online(dc: &Dc, name: &str, resource: &str) -> Client {
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

pub fn chat(from: &str, to: &str, body: &str) -> Element {
    Element::new("message", ns::CLIENT)
        .with_attr("from", from.to_owned())
        .with_attr("to", to.to_owned())
        .with_attr("type", "chat")
        .with_child(Element::new("body", ns::CLIENT).with_text(body.to_owned()))
}

/// The first router's admin `/metrics`, as text.
pub async fn metrics(dc: &Dc) -> String {
    let admin = dc.routers[0].admin;
    reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}
