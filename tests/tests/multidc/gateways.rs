//! Gateways scale out and in while the DC runs: an instance added to a DC serves its users like
//! every other (at this DC and across DCs), and one taken away ends its sessions cleanly — its
//! clients are told `<system-shutdown/>`, their contacts at every DC see them go, and what is
//! sent to them afterwards waits for them as for any user who logged out.

use meerkat_testkit::client::pred::{message_with_body, presence_of_type};
use meerkat_testkit::client::{Client, ClientConfig};
use meerkat_xmpp::{ns, Element};

use crate::{available, befriend, multi, register, user, CONVERGE};

/// Logged in through `cfg`, roster requested, available.
async fn available_via(cfg: &ClientConfig, name: &str, resource: &str) -> Client {
    let mut c = Client::login(cfg, name, "secret-pw", Some(resource))
        .await
        .expect("login");
    c.iq_ok("get", None, Element::new("query", ns::ROSTER))
        .await
        .expect("roster get");
    c.send_presence().await.expect("presence");
    c
}

#[tokio::test]
async fn a_gateway_added_then_removed_serves_and_then_ends_its_sessions_cleanly() {
    let mut m = multi(2).await;
    let (a, c, b) = (user("alice"), user("carol"), user("bob"));
    register(m.dc(1), &a).await;
    register(m.dc(1), &c).await;
    register(m.dc(2), &b).await;
    crate::wait_account(m.dc(2), &a).await;
    crate::wait_account(m.dc(1), &b).await;

    // A third instance joins DC 1, which already has its gateways on the shared port; Alice
    // comes in through the new one, Carol through the old ones, Bob at DC 2.
    let before = m.dc(1).gateways.len();
    let added = m.dc_mut(1).start_gateway_on_own_port().await.unwrap();
    let mut alice = available_via(&added, &a, "laptop").await;
    let mut carol = available(m.dc(1), &c, "desk").await;
    let mut bob = available(m.dc(2), &b, "car").await;
    m.wait_directory_sessions(3, CONVERGE).await.unwrap();
    befriend(&mut alice, &mut carol).await;
    befriend(&mut alice, &mut bob).await;
    let alice_full = alice.jid().to_owned();
    let alice_bare = alice.bare_jid().to_owned();

    // The new instance carries chat both ways, inside the DC and across DCs.
    alice
        .send_message(bob.bare_jid(), "via new gw")
        .await
        .unwrap();
    bob.expect("alice's message", message_with_body("via new gw"))
        .await
        .unwrap();
    bob.send_message(&alice_bare, "to new gw").await.unwrap();
    alice
        .expect("bob's message", message_with_body("to new gw"))
        .await
        .unwrap();
    carol.send_message(&alice_bare, "hi alice").await.unwrap();
    alice
        .expect("carol's message", message_with_body("hi alice"))
        .await
        .unwrap();

    // Scaled back in: the instance stops gracefully.
    m.dc_mut(1).stop_gateway(before).await.unwrap();
    let error = alice.expect_stream_end().await.unwrap();
    assert_eq!(error.as_deref(), Some("system-shutdown"));
    for (who, contact) in [("carol", &mut carol), ("bob", &mut bob)] {
        contact
            .expect(
                &format!("{who} sees alice go"),
                presence_of_type(&alice_full, Some("unavailable")),
            )
            .await
            .unwrap();
    }
    m.wait_directory_sessions(2, CONVERGE).await.unwrap();

    // What Bob writes now is kept for her; she gets it when she is back through a remaining
    // gateway, and her contacts see her return.
    bob.send_message(&alice_bare, "while you were away")
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let mut alice = available(m.dc(1), &a, "laptop").await;
    alice
        .expect(
            "the message kept while she was away",
            message_with_body("while you were away"),
        )
        .await
        .unwrap();
    bob.expect("alice back", presence_of_type(&alice_full, None))
        .await
        .unwrap();
    m.stop().await.unwrap();
}
