//! A session moves to the other DC (XEP-0198 resumption there) from gateway to gateway: the
//! resuming gateway asks the gateway its client's resumption id names, and that gateway answers
//! on the resuming gateway's own key of the inter-DC exchange. No router of either DC is on
//! the way, so a DC whose routers are all down still lets its sessions move.

use meerkat_testkit::client::pred::{message_with_body, presence_of_type};
use meerkat_testkit::client::Client;
use std::time::Duration;

use crate::{available, befriend, bodies_until_quiet, multi, register, user, CONVERGE};

/// Bob, at DC 1 with stream management, has two messages he has not acknowledged. Every
/// router of both DCs stops; his connection drops and he resumes at DC 2: `<resumed/>`, and
/// the two come again, once. With the routers back, the moved session goes on and Alice never
/// saw him go.
#[tokio::test]
async fn a_session_moves_to_the_other_dc_while_no_router_runs() {
    let mut m = multi(2).await;
    let (a, b) = (user("alice"), user("bob"));
    register(m.dc(1), &a).await;
    register(m.dc(1), &b).await;
    crate::wait_account(m.dc(2), &b).await;
    let mut alice = available(m.dc(1), &a, "phone").await;
    let mut bob = available(m.dc(1), &b, "phone").await;
    m.wait_directory_sessions(2, CONVERGE).await.unwrap();
    befriend(&mut alice, &mut bob).await;
    let previd = bob
        .enable_sm(None)
        .await
        .unwrap()
        .attr("id")
        .unwrap()
        .to_owned();
    let bob_full = bob.jid().to_owned();
    // What Bob has handled before the two, acknowledged: a contact's presence may still reach
    // him after `<enabled/>`.
    while bob
        .expect_within(Duration::from_millis(300), "anything", |_| true)
        .await
        .is_ok()
    {}
    let handled = bob.sm_received().unwrap();
    bob.sm_ack(handled).await.unwrap();
    let unacked = ["one", "two"].map(String::from);
    for t in &unacked {
        alice.send_message(&bob_full, t).await.unwrap();
        bob.expect("a message", message_with_body(t)).await.unwrap();
    }

    for k in 1..=2 {
        while !m.dc(k).routers.is_empty() {
            m.dc_mut(k).stop_router(0).await.unwrap();
        }
    }
    bob.drop_connection();
    let (mut bob, answer) = Client::resume(
        &m.dc(2).client(),
        &b,
        "secret-pw",
        &previd,
        handled,
        &bob_full,
    )
    .await
    .unwrap();
    assert_eq!(answer.name(), "resumed", "{answer}");
    assert_eq!(
        bodies_until_quiet(&mut bob, Duration::from_secs(1)).await,
        unacked
    );

    for k in 1..=2 {
        m.dc_mut(k).start_router().await.unwrap();
        let admin = m.dc(k).routers[0].admin;
        meerkat_testkit::stack::wait_ready(admin).await.unwrap();
    }
    alice.send_message(&bob_full, "after").await.unwrap();
    bob.expect_within(CONVERGE, "the next message", message_with_body("after"))
        .await
        .unwrap();
    alice
        .expect_none(
            Duration::from_millis(500),
            presence_of_type(&bob_full, Some("unavailable")),
        )
        .await
        .unwrap();
    m.stop().await.unwrap();
}

/// A resumption asked for at DC 2 while the link to DC 1, where the session is, is cut: the
/// request waits in the cut link, the client gets `<failed/>` and resumes at DC 1 instead.
/// When the link heals (before the link's backlog sends what waits in it back) the requests,
/// given up, must not move the session: Bob's resumed connection at DC 1 goes on and gets what
/// Alice, at DC 2, sends him after the heal.
#[tokio::test]
async fn a_resumption_request_caught_in_a_cut_link_moves_nothing_after_the_heal() {
    // Production's backlog: a stanza waits up to 10 s in a cut link before it comes back, so
    // the heal below comes while the requests, given up after 5 s, would still be there.
    let timers = meerkat_testkit::timers::Timers {
        stanza_backlog_ttl_ms: meerkat_localstack::federation::STANZA_BACKLOG_TTL_MS,
        ..meerkat_testkit::timers::Timers::fast()
    };
    let m = meerkat_testkit::multi::MultiDc::start(
        2,
        meerkat_testkit::stack::StackOptions {
            timers,
            ..Default::default()
        },
    )
    .await
    .expect("start DCs");
    let (a, b) = (user("alice"), user("bob"));
    register(m.dc(1), &a).await;
    register(m.dc(1), &b).await;
    crate::wait_account(m.dc(2), &a).await;
    crate::wait_account(m.dc(2), &b).await;
    let mut bob = available(m.dc(1), &b, "phone").await;
    let previd = bob
        .enable_sm(None)
        .await
        .unwrap()
        .attr("id")
        .unwrap()
        .to_owned();
    let bob_full = bob.jid().to_owned();
    m.wait_directory_sessions(1, CONVERGE).await.unwrap();

    // Asked at once, while DC 2's router still has Bob at DC 1: the request goes straight to
    // his gateway and, a second later, through DC 2's router too; both wait in the cut link.
    m.links.cut(1, 2);
    let handled = bob.sm_received().unwrap();
    bob.drop_connection();
    let asked = std::time::Instant::now();
    let (_, answer) = Client::resume(
        &m.dc(2).client(),
        &b,
        "secret-pw",
        &previd,
        handled,
        &bob_full,
    )
    .await
    .unwrap();
    assert_eq!(answer.name(), "failed", "{answer}");
    let (mut bob, answer) = Client::resume(
        &m.dc(1).client(),
        &b,
        "secret-pw",
        &previd,
        handled,
        &bob_full,
    )
    .await
    .unwrap();
    assert_eq!(answer.name(), "resumed", "{answer}");

    // Longer than a request waits for its asker (topology::HANDOVER_REQUEST_TTL_MS).
    tokio::time::sleep(Duration::from_secs(7).saturating_sub(asked.elapsed())).await;
    m.links.heal();
    let mut alice = available(m.dc(2), &a, "laptop").await;
    m.wait_directory_sessions(2, CONVERGE).await.unwrap();
    // Alice's message crosses the same link after whatever waited in it.
    alice
        .send_message(&bob_full, "after the heal")
        .await
        .unwrap();
    bob.expect_within(
        CONVERGE,
        "Alice's message on the resumed connection",
        message_with_body("after the heal"),
    )
    .await
    .unwrap();
    bob.expect_none(Duration::from_secs(2), |_| false)
        .await
        .expect("the resumed connection goes on");
    bob.iq_ok(
        "get",
        None,
        meerkat_xmpp::Element::new("ping", "urn:xmpp:ping"),
    )
    .await
    .unwrap();
    m.stop().await.unwrap();
}
