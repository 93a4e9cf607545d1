//! Faults: a broker restart during live sessions, graceful router shutdown.

use std::time::Duration;

use meerkat_testkit::stack::{Dc, StackOptions};
use meerkat_xmpp::{ns, Element};

use crate::{online, user};

fn body_is(text: &'static str) -> impl Fn(&Element) -> bool {
    move |el: &Element| {
        el.name() == "message" && el.child_text("body", ns::CLIENT).as_deref() == Some(text)
    }
}

#[tokio::test]
async fn a_broker_restart_during_sessions_is_survived() {
    let broker = meerkat_testkit::dedicated_broker()
        .await
        .expect("dedicated broker");
    let dc = Dc::start(StackOptions {
        amqp_url: Some(broker.amqp_url()),
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let (a, b) = (user("ra"), user("rb"));
    let mut alice = online(&dc, &a, "phone").await;
    let mut bob = online(&dc, &b, "desk").await;
    let bob_jid = bob.jid().to_owned();
    alice.send_message(&bob_jid, "before").await.unwrap();
    bob.expect("message before the restart", body_is("before"))
        .await
        .unwrap();

    broker.stop().await.expect("stop broker");
    // Sent while the broker is down: the gateway keeps retrying until it is back.
    alice.send_message(&bob_jid, "during").await.unwrap();
    broker.start().await.expect("start broker");

    bob.expect_within(
        Duration::from_secs(40),
        "message sent during the outage",
        body_is("during"),
    )
    .await
    .unwrap();
    alice.send_message(&bob_jid, "after").await.unwrap();
    bob.expect_within(
        Duration::from_secs(20),
        "message after the restart",
        body_is("after"),
    )
    .await
    .unwrap();
    // Services report ready again.
    for s in dc.gateways.iter().chain(dc.routers.iter()) {
        meerkat_testkit::stack::wait_ready(s.admin).await.unwrap();
    }
    dc.stop().await.unwrap();
}

#[tokio::test]
async fn router_shutdown_is_graceful_and_another_router_takes_over() {
    let mut dc = Dc::start(StackOptions {
        routers: 2,
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let (a, b) = (user("ga"), user("gb"));
    let mut alice = online(&dc, &a, "phone").await;
    let mut bob = online(&dc, &b, "desk").await;
    let bob_jid = bob.jid().to_owned();
    dc.routers[0]
        .stop()
        .await
        .expect("router stops within the time limit");
    for i in 0..20 {
        alice
            .send_message(&bob_jid, &format!("m{i}"))
            .await
            .unwrap();
    }
    for i in 0..20 {
        let want = format!("m{i}");
        let got = bob
            .expect("message in order", |el| el.name() == "message")
            .await
            .unwrap();
        assert_eq!(got.child_text("body", ns::CLIENT), Some(want));
    }
    dc.stop().await.unwrap();
}
