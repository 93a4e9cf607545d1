//! Inter-DC stanzas are believed only when they came through the federation link of the DC
//! they claim (issue 13): DC 3 publishing a stanza that claims DC 1, or anyone publishing
//! straight into DC 2's own inter-DC exchange, reaches nobody at DC 2; a genuine stanza from
//! DC 1 does.

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use meerkat_testkit::client::pred::message_with_body;
use meerkat_testkit::stack::Dc;
use meerkat_xmpp::{ns, Element};

use crate::{multi, online, user, CONVERGE};

/// Publishes on `dc`'s broker, into its `meerkat.inter.stanzas` towards DC 2, a wrapped chat
/// message from `from` to `to` whose headers claim it comes from `claimed`.
async fn publish_claiming(dc: &Dc, claimed: &str, from: &str, to: &str, body: &str) {
    let props = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    let conn = Connection::connect(&dc.amqp_url, props).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let stanza = Element::new("message", ns::CLIENT)
        .with_attr("from", from.to_owned())
        .with_attr("to", to.to_owned())
        .with_attr("type", "chat")
        .with_child(Element::new("body", ns::CLIENT).with_text(body.to_owned()));
    let envelope = format!(
        "<route xmlns='urn:xmpp:meerkat:route:1' from='{claimed}.example.com' to='dc2.example.com'>{}</route>",
        stanza.to_xml()
    );
    let mut headers = FieldTable::default();
    for (k, v) in [
        ("x-meerkat-origin-dc", claimed),
        ("x-meerkat-target-dc", "dc2"),
        ("x-meerkat-kind", "stanza"),
        ("x-meerkat-sender", from),
    ] {
        headers.insert(
            ShortString::from(k),
            AMQPValue::LongString(LongString::from(v)),
        );
    }
    headers.insert(
        ShortString::from("x-meerkat-hops"),
        AMQPValue::LongLongInt(2),
    );
    headers.insert(
        ShortString::from("x-meerkat-wire"),
        AMQPValue::LongLongInt(1),
    );
    let props = BasicProperties::default()
        .with_message_id(uuid::Uuid::new_v4().to_string().into())
        .with_delivery_mode(2)
        .with_headers(headers);
    ch.basic_publish(
        "meerkat.inter.stanzas",
        "dc2",
        BasicPublishOptions::default(),
        envelope.as_bytes(),
        props,
    )
    .await
    .unwrap()
    .await
    .unwrap();
    conn.close(0, "done").await.unwrap();
}

/// DC `dc`'s first router's `meerkat_router_inter_refused_total{reason=...}`.
async fn refused(dc: &Dc, reason: &str) -> u64 {
    let series = format!("meerkat_router_inter_refused_total{{reason=\"{reason}\"}}");
    crate::metric(dc.routers[0].admin, &series).await as u64
}

#[tokio::test]
async fn a_stanza_not_from_the_dc_it_claims_is_refused() {
    let m = multi(3).await;
    let (alice, bob) = (user("a"), user("b"));
    let mut a = online(m.dc(1), &alice, "one").await;
    let mut b = online(m.dc(2), &bob, "two").await;
    m.wait_directory_sessions(2, CONVERGE).await.unwrap();
    let (aj, bj) = (a.jid().to_owned(), b.jid().to_owned());

    // DC 3 speaks for DC 1 (the link into DC 2 says DC 3); a message published in DC 2's own
    // broker claims DC 1 (no link at all).
    publish_claiming(m.dc(3), "dc1", &aj, &bj, "forged through dc3").await;
    publish_claiming(m.dc(2), "dc1", &aj, &bj, "forged inside dc2").await;
    // The genuine one, from Alice's client at DC 1.
    a.send_message(&bj, "genuine").await.unwrap();
    b.expect("the genuine message", message_with_body("genuine"))
        .await
        .unwrap();

    // Both forged ones reached DC 2's router and were refused.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let counts = (
            refused(m.dc(2), "wrong-link").await,
            refused(m.dc(2), "not-federated").await,
        );
        if counts == (1, 1) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "refusals (wrong-link, not-federated) = {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    b.expect_none(Duration::from_millis(500), |s: &Element| {
        s.child_text("body", ns::CLIENT)
            .is_some_and(|t| t.starts_with("forged"))
    })
    .await
    .unwrap();
    m.stop().await.unwrap();
}
