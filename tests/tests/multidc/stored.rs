//! What a router stores because it saw no available resource (a pending subscription request,
//! an offline message) reaches a resource that was online at another DC all along, even when
//! the storing DC's directory did not list it yet: right after a fresh start, and after a
//! partition heals. Each arrives once.

use std::time::Duration;

use meerkat_store::Subscription;
use meerkat_testkit::client::pred::presence_of_type;
use meerkat_testkit::client::Client;
use meerkat_xmpp::ns;

use crate::wait_account;
use crate::{available, eventually, multi, presence, register, store, user, CONVERGE};

/// How long a second copy of something delivered gets to show up.
const ONCE: Duration = Duration::from_secs(1);

/// Bob receives Alice's subscription request and her message, each once.
async fn bob_gets_both(bob: &mut Client, alice_bare: &str, body: &str) {
    bob.expect(
        "alice's subscription request",
        presence_of_type(alice_bare, Some("subscribe")),
    )
    .await
    .unwrap();
    let got = bob
        .expect("alice's message", |e| {
            e.is("message", ns::CLIENT) && e.child_text("body", ns::CLIENT).as_deref() == Some(body)
        })
        .await
        .unwrap();
    assert_eq!(
        got.attr("from").and_then(|f| f.split('/').next()),
        Some(alice_bare)
    );
    bob.expect_none(ONCE, |e| {
        presence_of_type(alice_bare, Some("subscribe"))(e)
            || (e.is("message", ns::CLIENT)
                && e.child_text("body", ns::CLIENT).as_deref() == Some(body))
    })
    .await
    .unwrap();
}

/// The sequence a new user tries first: two fresh DCs, Alice at DC 1 and Bob at DC 2 log in,
/// and Alice at once asks to see Bob's presence and writes to him. The DCs are started as
/// `cargo xtask up` starts them: `MultiDc::start` returns once every service says `/readyz`
/// (each replicator holds the other DC's snapshot); nothing here waits for the directories.
#[tokio::test]
async fn right_after_a_fresh_start_a_request_and_a_message_reach_the_contact_at_the_other_dc() {
    let m = multi(2).await;
    let (a, b) = (user("alice"), user("bob"));
    register(m.dc(1), &a).await;
    register(m.dc(2), &b).await;
    // DC 1 refuses a request to an account it does not hold yet (RFC 6121 §3.1.3).
    wait_account(m.dc(1), &b).await;
    let mut bob = available(m.dc(2), &b, "phone").await;
    let mut alice = available(m.dc(1), &a, "laptop").await;
    let (aj, bj) = (alice.bare_jid().to_owned(), bob.bare_jid().to_owned());
    alice.send(&presence("subscribe", &bj)).await.unwrap();
    alice.send_message(&bj, "hello bob").await.unwrap();
    bob_gets_both(&mut bob, &aj, "hello bob").await;
    m.stop().await.unwrap();
}

/// The rule itself, whatever readiness hides: DC 1 stores a request and a message for Bob
/// while it cannot know he is online at DC 2 (their links are cut); once they heal, both reach
/// him without his logging in again. Carol, also at DC 2, pre-approved Alice there (RFC 6121
/// §3.4) while DC 1 stored Alice's request to her: once the request reaches DC 2 it is
/// answered from the pre-approval, and Carol is never asked.
#[tokio::test]
async fn stored_while_cut_off_reaches_the_contact_online_at_the_other_dc_when_links_heal() {
    let m = multi(2).await;
    let (a, b, c) = (user("alice"), user("bob"), user("carol"));
    register(m.dc(1), &a).await;
    register(m.dc(2), &b).await;
    register(m.dc(2), &c).await;
    wait_account(m.dc(1), &b).await;
    wait_account(m.dc(1), &c).await;
    m.links.cut(1, 2);
    let mut bob = available(m.dc(2), &b, "phone").await;
    let mut carol = available(m.dc(2), &c, "tablet").await;
    let mut alice = available(m.dc(1), &a, "laptop").await;
    let (aj, bj, cj) = (
        alice.bare_jid().to_owned(),
        bob.bare_jid().to_owned(),
        carol.bare_jid().to_owned(),
    );
    carol.send(&presence("subscribed", &aj)).await.unwrap();
    alice.send(&presence("subscribe", &bj)).await.unwrap();
    alice.send(&presence("subscribe", &cj)).await.unwrap();
    alice.send_message(&bj, "while cut off").await.unwrap();
    // Stored at DC 1, which saw no resource of Bob's.
    let dc1 = store(m.dc(1)).await;
    eventually("the request stored at DC 1", CONVERGE, || async {
        !dc1.subscription_requests(&b).await.unwrap().is_empty()
    })
    .await;
    eventually("the message stored at DC 1", CONVERGE, || async {
        !dc1.offline_messages(&b).await.unwrap().is_empty()
    })
    .await;
    let dc2 = store(m.dc(2)).await;
    eventually("carol's pre-approval stored at DC 2", CONVERGE, || async {
        dc2.roster_item(&c, &aj)
            .await
            .unwrap()
            .is_some_and(|i| i.approved)
    })
    .await;
    m.links.heal();
    bob_gets_both(&mut bob, &aj, "while cut off").await;
    alice
        .expect(
            "carol's answer, from her pre-approval",
            presence_of_type(&cj, Some("subscribed")),
        )
        .await
        .unwrap();
    carol
        .expect_none(ONCE, presence_of_type(&aj, Some("subscribe")))
        .await
        .unwrap();
    for (k, db) in [(1, &dc1), (2, &dc2)] {
        eventually(
            &format!("both sides settled at DC {k}"),
            CONVERGE,
            || async {
                let carols = db.roster_item(&c, &aj).await.unwrap();
                let alices = db.roster_item(&a, &cj).await.unwrap();
                carols.is_some_and(|i| i.subscription == Subscription::From && !i.approved)
                    && alices.is_some_and(|i| i.subscription == Subscription::To && !i.ask_out)
                    && db.subscription_requests(&c).await.unwrap().is_empty()
            },
        )
        .await;
    }
    m.stop().await.unwrap();
}
