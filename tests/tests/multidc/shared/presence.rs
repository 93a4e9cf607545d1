//! Subscriptions, presence and iq between users at different DCs.

use std::time::Duration;

use meerkat_testkit::client::pred::{iq_request, presence_of_type};
use meerkat_testkit::client::stanza_error_condition;
use meerkat_xmpp::{ns, Element};

use crate::{
    accounts_apart, available, online, presence, register_everywhere, shared, user, CONVERGE,
};

#[tokio::test]
async fn subscription_handshake_and_presence_across_dcs() {
    let m = shared().await;
    // Each account registered at its own DC; data replication brings it to the other. The
    // router applies a subscription to both rosters in its own DC's database; the stanza
    // that reaches the contact's DC waits there until that write has been applied.
    let (a, b) = accounts_apart(m.dc(1), m.dc(2)).await;
    let mut alice = available(m.dc(1), &a, "phone").await;
    let mut bob = available(m.dc(2), &b, "desk").await;
    m.wait_directory_holds(&[alice.jid(), bob.jid()], CONVERGE)
        .await
        .unwrap();
    let (aj, bj) = (alice.bare_jid().to_owned(), bob.bare_jid().to_owned());

    alice.send(&presence("subscribe", &bj)).await.unwrap();
    bob.expect("subscribe", presence_of_type(&aj, Some("subscribe")))
        .await
        .unwrap();
    bob.approve_subscription(&mut alice).await.unwrap();

    bob.send(&presence("subscribe", &aj)).await.unwrap();
    alice
        .expect("subscribe", presence_of_type(&bj, Some("subscribe")))
        .await
        .unwrap();
    alice.send(&presence("subscribed", &bj)).await.unwrap();
    bob.expect("alice's presence", presence_of_type(&aj, None))
        .await
        .unwrap();

    // Both ways now: a presence change crosses, and so does going offline.
    let away = Element::new("presence", ns::CLIENT)
        .with_child(Element::new("show", ns::CLIENT).with_text("away"));
    alice.send(&away).await.unwrap();
    bob.expect("alice away", |e| {
        presence_of_type(&aj, None)(e)
            && e.child_text("show", ns::CLIENT).as_deref() == Some("away")
    })
    .await
    .unwrap();
    bob.close().await.unwrap();
    alice
        .expect(
            "bob unavailable",
            presence_of_type(&bj, Some("unavailable")),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn ping_round_trip_across_dcs() {
    let m = shared().await;
    let mut alice = online(m.dc(1), &user("a"), "phone").await;
    let mut bob = online(m.dc(2), &user("b"), "desk").await;
    m.wait_directory_holds(&[alice.jid(), bob.jid()], CONVERGE)
        .await
        .unwrap();
    let (aj, bj) = (alice.jid().to_owned(), bob.jid().to_owned());

    let ping = Element::new("iq", ns::CLIENT)
        .with_attr("type", "get")
        .with_attr("id", "p1")
        .with_attr("to", bj.as_str())
        .with_child(Element::new("ping", ns::PING));
    alice.send(&ping).await.unwrap();
    let req = bob
        .expect("ping", iq_request("ping", ns::PING))
        .await
        .unwrap();
    assert_eq!(req.attr("from"), Some(aj.as_str()));
    let pong = Element::new("iq", ns::CLIENT)
        .with_attr("type", "result")
        .with_attr("id", req.attr("id").unwrap_or_default())
        .with_attr("to", aj.as_str());
    bob.send(&pong).await.unwrap();
    let reply = alice
        .expect_within(Duration::from_secs(10), "pong", |e| {
            e.is("iq", ns::CLIENT) && e.attr("id") == Some("p1")
        })
        .await
        .unwrap();
    assert_eq!(reply.attr("type"), Some("result"), "{reply}");
    assert_eq!(reply.attr("from"), Some(bj.as_str()));
    assert_eq!(stanza_error_condition(&reply), None);
}

/// The contact is offline when asked: the request waits in their data (replicated to their
/// DC) and is shown at their next login there; their answer completes the handshake.
#[tokio::test]
async fn subscription_to_an_offline_contact_at_another_dc() {
    let m = shared().await;
    let (a, b) = accounts_apart(m.dc(1), m.dc(2)).await;
    let mut alice = available(m.dc(1), &a, "phone").await;
    m.wait_directory_holds(&[alice.jid()], CONVERGE)
        .await
        .unwrap();
    let aj = alice.bare_jid().to_owned();
    let bj = format!("{b}@example.com");

    alice.send(&presence("subscribe", &bj)).await.unwrap();
    // The request is stored (at DC 1, then replicated): wait until DC 2 holds it.
    let dc2 = crate::store(m.dc(2)).await;
    crate::eventually("the request reached DC 2", CONVERGE, || async {
        !dc2.subscription_requests(&b).await.unwrap().is_empty()
    })
    .await;
    let mut bob = available(m.dc(2), &b, "desk").await;
    bob.expect("stored request", presence_of_type(&aj, Some("subscribe")))
        .await
        .unwrap();
    bob.approve_subscription(&mut alice).await.unwrap();
}

/// A subscription request and a directed presence reach the contact at the other DC.
#[tokio::test]
async fn subscription_request_and_directed_presence_cross_dcs() {
    let m = shared().await;
    let (a, b) = (user("a"), user("b"));
    for name in [&a, &b] {
        register_everywhere(m, name).await;
    }
    let mut alice = available(m.dc(1), &a, "phone").await;
    let mut bob = available(m.dc(2), &b, "desk").await;
    m.wait_directory_holds(&[alice.jid(), bob.jid()], CONVERGE)
        .await
        .unwrap();
    let (aj, bj) = (alice.bare_jid().to_owned(), bob.jid().to_owned());

    alice
        .send(&presence("subscribe", &format!("{b}@example.com")))
        .await
        .unwrap();
    bob.expect("subscribe", presence_of_type(&aj, Some("subscribe")))
        .await
        .unwrap();
    let directed = Element::new("presence", ns::CLIENT).with_attr("to", bj.as_str());
    alice.send(&directed).await.unwrap();
    bob.expect("directed presence", presence_of_type(alice.jid(), None))
        .await
        .unwrap();
}
