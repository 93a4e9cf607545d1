//! Client state indication (XEP-0352): an inactive client is written only what matters at once.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use meerkat_testkit::client::Client;
use meerkat_testkit::stack::Dc;
use meerkat_xmpp::{ns, Element};

use crate::dc;
use crate::sm::friends;

fn status(text: &str) -> Element {
    Element::new("presence", ns::CLIENT)
        .with_child(Element::new("status", ns::CLIENT).with_text(text))
}

/// What `c` reads until `quiet` passes: presences by status, messages by body or chat state.
async fn seen(c: &mut Client, quiet: Duration) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(el) = c
        .expect_within(quiet, "a stanza", |e: &Element| {
            e.is("presence", ns::CLIENT) || e.is("message", ns::CLIENT)
        })
        .await
    {
        let what = match (el.name(), el.child_text("status", ns::CLIENT)) {
            ("presence", Some(s)) => format!("presence {s}"),
            ("presence", None) => "presence".to_owned(),
            _ => match el.child_text("body", ns::CLIENT) {
                Some(b) => format!("body {b}"),
                None if el.children().any(|c| c.ns() == ns::CHATSTATES) => "chat state".to_owned(),
                None => "message".to_owned(),
            },
        };
        out.push(what);
    }
    out
}

async fn saved(dc: &Dc) -> u64 {
    let url = format!("http://{}/metrics", dc.gateways[0].admin);
    let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("meerkat_gateway_csi_saved_stanzas_total "))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// Bob's phone goes inactive: Alice's three presence updates and a chat state wait (only her
/// latest presence is kept); her message with a body brings what waited, in order, then
/// itself. Inactive again, her next update waits until Bob's `<active/>`.
#[tokio::test]
async fn an_inactive_client_is_written_only_what_matters_at_once() {
    let dc = dc().await;
    let (mut alice, mut bob, _) = friends(&dc, &dc.client()).await;
    assert!(
        bob.features().has_child("csi", ns::CSI),
        "{}",
        bob.features()
    );
    bob.send_raw(&format!("<inactive xmlns='{}'/>", ns::CSI))
        .await
        .unwrap();
    // Alice's presence updates are routed through her partition, Bob's state change only
    // touches his gateway: a ping round trip orders them.
    bob.iq_ok("get", None, Element::new("ping", ns::PING))
        .await
        .unwrap();
    for s in ["away 1", "away 2", "away 3"] {
        alice.send(&status(s)).await.unwrap();
    }
    let composing = Element::new("message", ns::CLIENT)
        .with_attr("type", "chat")
        .with_attr("to", bob.bare_jid().to_owned())
        .with_child(Element::new("composing", ns::CHATSTATES));
    alice.send(&composing).await.unwrap();
    assert_eq!(
        seen(&mut bob, Duration::from_millis(800)).await,
        Vec::<String>::new(),
        "nothing written while inactive"
    );

    alice.send_message(bob.bare_jid(), "wake up").await.unwrap();
    assert_eq!(
        seen(&mut bob, Duration::from_millis(800)).await,
        ["presence away 3", "chat state", "body wake up"]
    );
    assert_eq!(saved(&dc).await, 2, "away 1 and away 2 were never written");

    alice.send(&status("back")).await.unwrap();
    assert_eq!(
        seen(&mut bob, Duration::from_millis(800)).await,
        Vec::<String>::new()
    );
    bob.send_raw(&format!("<active xmlns='{}'/>", ns::CSI))
        .await
        .unwrap();
    assert_eq!(
        seen(&mut bob, Duration::from_millis(800)).await,
        ["presence back"]
    );
    dc.stop().await.unwrap();
}
