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
