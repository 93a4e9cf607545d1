//! Sessions follow their account at every DC (docs/security/accounts-and-links.md): a
//! password change or a removal at one DC ends the account's stale sessions at the others,
//! through the replicated account change.

use meerkat_testkit::client::{Client, Mechanism};
use meerkat_testkit::shared::SharedDcs;
use meerkat_xmpp::{ns, Element};

use crate::{accepts, eventually, login, register, shared, store, user, CONVERGE};

fn ping() -> Element {
    Element::new("ping", "urn:xmpp:ping")
}

/// A new account registered at DC 1, taken by DC 2 (replicated), logged in at both.
async fn logged_in_at_both(m: &SharedDcs) -> (String, Client, Client) {
    let alice = user("alice");
    register(m.dc(1), &alice).await;
    eventually("DC 2 knows the account", CONVERGE, || {
        accepts(m.dc(2), &alice, "secret-pw")
    })
    .await;
    let at1 = login(m.dc(1), &alice, "one").await;
    let at2 = login(m.dc(2), &alice, "two").await;
    (alice, at1, at2)
}

#[tokio::test]
async fn a_password_change_at_one_dc_resets_the_sessions_at_the_other() {
    let m = shared().await;
    let (alice, mut at1, mut at2) = logged_in_at_both(m).await;

    let change = Element::new("query", ns::REGISTER)
        .with_child(Element::new("username", ns::REGISTER).with_text(alice.as_str()))
        .with_child(Element::new("password", ns::REGISTER).with_text("new-pw"));
    at1.iq_ok("set", None, change).await.unwrap();
    assert_eq!(
        at2.expect_stream_end_within(CONVERGE)
            .await
            .unwrap()
            .as_deref(),
        Some("reset"),
        "the session at DC 2 must authenticate again"
    );
    // The session that changed it stays.
    at1.iq_ok("get", None, ping()).await.unwrap();
    assert!(!accepts(m.dc(2), &alice, "secret-pw").await);
    let mut again = Client::login(&m.dc(2).client(), &alice, "new-pw", Some("two"))
        .await
        .unwrap();
    again.iq_ok("get", None, ping()).await.unwrap();
}

#[tokio::test]
async fn an_account_removed_at_one_dc_ends_its_sessions_at_every_dc() {
    let m = shared().await;
    let (alice, mut at1, mut at2) = logged_in_at_both(m).await;
    let mut late = Client::connect(&m.dc(2).client()).await.unwrap();
    late.authenticate(Mechanism::ScramSha256, &alice, "secret-pw")
        .await
        .unwrap()
        .expect("login");

    // As `meerkatctl user del` does: straight in DC 1's database. DC 1's replicator announces
    // it when it ships the change; DC 2's when it applies it.
    assert!(store(m.dc(1)).await.delete_account(&alice).await.unwrap());
    for (dc, c) in [(1, &mut at1), (2, &mut at2)] {
        assert_eq!(
            c.expect_stream_end_within(CONVERGE)
                .await
                .unwrap()
                .as_deref(),
            Some("not-authorized"),
            "the session at DC {dc} ends"
        );
    }
    let bind = Element::new("iq", ns::CLIENT)
        .with_attr("type", "set")
        .with_attr("id", "late")
        .with_child(
            Element::new("bind", ns::BIND)
                .with_child(Element::new("resource", ns::BIND).with_text("late")),
        );
    late.send(&bind).await.unwrap();
    assert_eq!(
        late.expect_stream_end().await.unwrap().as_deref(),
        Some("not-authorized"),
        "no resource is bound for the removed account at DC 2"
    );
}
