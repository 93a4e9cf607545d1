//! A rolling upgrade caught half-way: DC 2 speaks the next minor wire version (its routers and
//! replicator stamp `1.1`, add a field to every JSON event and a header to every message, and
//! send next to every stanza for DC 1 a message of a kind 1.0 does not know), DC 1 speaks
//! 1.0. Accounts, chat, presence and subscriptions, session and data replication work both
//! ways; DC 1 parks the unknown kind where an operator sees it (`meerkat.parked`, counted),
//! and `meerkatctl parked replay` puts it back (parked again while DC 1 still cannot read it).

use lapin::options::{BasicGetOptions, BasicNackOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use meerkat_bus::publisher::{NEWER_MINOR_FIELD, NEWER_MINOR_KIND};
use meerkat_bus::HeaderExt;
use meerkat_testkit::client::pred::message_with_body;
use meerkat_testkit::multi::MultiDc;
use meerkat_testkit::stack::{Dc, StackOptions};
use meerkat_wire::headers as h;
use meerkat_wire::topology as names;

use crate::{accepts, available, befriend, eventually, register, user, CONVERGE};

#[tokio::test]
async fn a_dc_one_minor_version_ahead_interoperates_and_its_new_kind_is_parked() {
    let m = MultiDc::start_each(2, |k| StackOptions {
        newer_minor_wire: k == 2,
        ..StackOptions::default()
    })
    .await
    .expect("start DCs");
    let (a, b) = (user("a"), user("b"));

    // Data replication both ways: each account is created at one DC only.
    register(m.dc(1), &a).await;
    register(m.dc(2), &b).await;
    eventually("alice's account at DC 2 (1.0 -> 1.1)", CONVERGE, || {
        accepts(m.dc(2), &a, "secret-pw")
    })
    .await;
    eventually("bob's account at DC 1 (1.1 -> 1.0)", CONVERGE, || {
        accepts(m.dc(1), &b, "secret-pw")
    })
    .await;

    // Session replication both ways.
    let mut alice = available(m.dc(1), &a, "phone").await;
    let mut bob = available(m.dc(2), &b, "desk").await;
    m.wait_directory_sessions(2, CONVERGE).await.unwrap();

    // Subscriptions and presence both ways (roster writes replicate too).
    befriend(&mut alice, &mut bob).await;

    // Chat both ways.
    let (aj, bj) = (alice.jid().to_owned(), bob.jid().to_owned());
    alice.send_message(&bj, "from 1.0").await.unwrap();
    bob.expect("alice's message", message_with_body("from 1.0"))
        .await
        .unwrap();
    bob.send_message(&aj, "from 1.1").await.unwrap();
    alice
        .expect("bob's message", message_with_body("from 1.1"))
        .await
        .unwrap();

    // DC 1 parked DC 2's new kind: counted, and waiting in its parking queue as sent (one minor above its own,
    // with the new header); DC 2 parked nothing.
    let inbound1 = names::inter_stanzas_queue("dc1");
    let series1 = format!("meerkat_parked_messages_total{{queue=\"{inbound1}\",reason=\"kind\"}}");
    eventually("DC 1 counts the parked kind", CONVERGE, || async {
        crate::metric(m.dc(1).routers[0].admin, &series1).await >= 1.0
    })
    .await;
    let parked = parked_count(m.dc(1)).await;
    assert!(parked >= 1, "nothing in DC 1's meerkat.parked");
    let (version, kind, field, from) = peek_parked(m.dc(1)).await;
    let newer = meerkat_wire::WireVersion::new(
        meerkat_wire::version::CURRENT.major,
        meerkat_wire::version::CURRENT.minor + 1,
    );
    assert_eq!(version.as_deref(), Some(newer.to_string().as_str()));
    assert_eq!(kind.as_deref(), Some(NEWER_MINOR_KIND));
    assert!(field, "the newer DC's extra header is kept");
    assert_eq!(from.as_deref(), Some(inbound1.as_str()));
    assert_eq!(parked_count(m.dc(2)).await, 0, "DC 2 parked something");
    let series2 = format!(
        "meerkat_parked_messages_total{{queue=\"{}\",reason=\"kind\"}}",
        names::inter_stanzas_queue("dc2")
    );
    assert_eq!(crate::metric(m.dc(2).routers[0].admin, &series2).await, 0.0);

    // Replay: everything parked goes back to DC 1's inbound queue; DC 1 still does not know the
    // kind, so it is parked again (counted again), and nothing else waits behind it.
    let before = crate::metric(m.dc(1).routers[0].admin, &series1).await;
    let done = meerkat_bus::parking::replay(&m.dc(1).amqp_url, None)
        .await
        .unwrap();
    let replayed: u64 = done.replayed.values().sum();
    assert!(replayed >= parked, "{done:?}, {parked} were parked");
    assert!(done.kept.is_empty(), "{done:?}");
    eventually("the replayed messages parked again", CONVERGE, || async {
        crate::metric(m.dc(1).routers[0].admin, &series1).await >= before + replayed as f64
    })
    .await;
    bob.send_message(&aj, "after the replay").await.unwrap();
    alice
        .expect(
            "bob's message after the replay",
            message_with_body("after the replay"),
        )
        .await
        .unwrap();
    m.stop().await.unwrap();
}

async fn connect(dc: &Dc) -> Connection {
    let props = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    Connection::connect(&dc.amqp_url, props).await.unwrap()
}

/// Messages in DC `dc`'s parking queue.
async fn parked_count(dc: &Dc) -> u64 {
    let conn = connect(dc).await;
    let ch = conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(
            names::PARKED_QUEUE,
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    conn.close(0, "done").await.unwrap();
    u64::from(q.message_count())
}

/// The first parked message's version, kind, whether it has the newer version's header, and
/// the queue it was parked from; left in the queue.
async fn peek_parked(dc: &Dc) -> (Option<String>, Option<String>, bool, Option<String>) {
    let conn = connect(dc).await;
    let ch = conn.create_channel().await.unwrap();
    let msg = ch
        .basic_get(names::PARKED_QUEUE, BasicGetOptions { no_ack: false })
        .await
        .unwrap()
        .expect("a parked message");
    let headers = msg.properties.headers().as_ref();
    let seen = (
        headers.get_str(h::WIRE),
        headers.get_str(h::KIND),
        headers.get_bool(NEWER_MINOR_FIELD),
        headers.get_str(h::PARKED_QUEUE),
    );
    msg.delivery
        .nack(BasicNackOptions {
            requeue: true,
            ..BasicNackOptions::default()
        })
        .await
        .unwrap();
    conn.close(0, "done").await.unwrap();
    seen
}
