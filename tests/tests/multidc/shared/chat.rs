//! Chat between users at different DCs: full JIDs both ways, in order; a bare JID reaching
//! resources of one account at two DCs.

use std::time::Duration;

use meerkat_testkit::client::pred::message_with_body;

use crate::{available, online, register_everywhere, shared, user, CONVERGE};

#[tokio::test]
async fn chat_crosses_dcs_both_ways_in_order() {
    let m = shared().await;
    let mut alice = online(m.dc(1), &user("a"), "phone").await;
    let mut bob = online(m.dc(2), &user("b"), "desk").await;
    m.wait_directory_holds(&[alice.jid(), bob.jid()], CONVERGE)
        .await
        .unwrap();
    let (aj, bj) = (alice.jid().to_owned(), bob.jid().to_owned());

    for n in 0..100 {
        alice.send_message(&bj, &format!("a{n}")).await.unwrap();
    }
    for n in 0..100 {
        let want = format!("a{n}");
        // A loaded machine may hold one message longer than the default wait (a federation
        // link's backlog expires and the stanza is routed again): order and uniqueness are
        // what this test is about.
        let got = bob
            .expect_within(CONVERGE, "alice's message", |e| {
                e.is("message", meerkat_xmpp::ns::CLIENT)
            })
            .await
            .unwrap();
        assert_eq!(got.child_text("body", meerkat_xmpp::ns::CLIENT), Some(want));
        assert_eq!(got.attr("from"), Some(aj.as_str()));
    }
    for n in 0..100 {
        bob.send_message(&aj, &format!("b{n}")).await.unwrap();
    }
    // Each message is awaited on its own (a loaded machine may pause longer than any fixed
    // quiet period); then nothing more may come: no duplicates.
    for n in 0..100 {
        let got = alice
            .expect_within(CONVERGE, "bob's message", |e| {
                e.is("message", meerkat_xmpp::ns::CLIENT)
            })
            .await
            .unwrap();
        assert_eq!(
            got.child_text("body", meerkat_xmpp::ns::CLIENT),
            Some(format!("b{n}"))
        );
    }
    alice
        .expect_none(Duration::from_secs(1), |e| {
            e.is("message", meerkat_xmpp::ns::CLIENT)
        })
        .await
        .unwrap();
    bob.expect_none(Duration::from_millis(200), |e| {
        e.is("message", meerkat_xmpp::ns::CLIENT)
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn bare_jid_message_reaches_resources_at_two_dcs() {
    let m = shared().await;
    let carol = user("c");
    register_everywhere(m, &carol).await;
    let mut at1 = available(m.dc(1), &carol, "one").await;
    let mut at2 = available(m.dc(2), &carol, "two").await;
    let mut dave = online(m.dc(1), &user("d"), "x").await;
    m.wait_directory_holds(&[at1.jid(), at2.jid(), dave.jid()], CONVERGE)
        .await
        .unwrap();
    let bare = at1.bare_jid().to_owned();

    dave.send_message(&bare, "to all of carol").await.unwrap();
    at1.expect("bare message at dc1", message_with_body("to all of carol"))
        .await
        .unwrap();
    at2.expect("bare message at dc2", message_with_body("to all of carol"))
        .await
        .unwrap();
    // A full JID reaches that resource only.
    let two = at2.jid().to_owned();
    dave.send_message(&two, "only two").await.unwrap();
    at2.expect("full message at dc2", message_with_body("only two"))
        .await
        .unwrap();
    at1.expect_none(Duration::from_millis(500), message_with_body("only two"))
        .await
        .unwrap();
}
