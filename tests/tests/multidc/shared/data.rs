//! Persistent data at every DC (docs/replication.md): an account, its roster and its offline
//! messages written at one DC are there at the others, through the replicators.

use std::time::Duration;

use meerkat_testkit::client::Client;
use meerkat_xmpp::{ns, Element};

use crate::{accepts, available, eventually, shared, store, user, CONVERGE};

#[tokio::test]
async fn registered_at_one_dc_then_the_password_changed_at_another() {
    let m = shared().await;
    let charlie = user("charlie");
    let mut reg = Client::connect(&m.dc(1).client()).await.unwrap();
    reg.register(&charlie, "first-pw").await.unwrap().unwrap();
    reg.close().await.unwrap();
    eventually("DC 2 knows the account", CONVERGE, || {
        accepts(m.dc(2), &charlie, "first-pw")
    })
    .await;

    // A password change at DC 2 (XEP-0077 §3.3): DC 1 then takes only the new one.
    let mut c = Client::login(&m.dc(2).client(), &charlie, "first-pw", Some("fridge"))
        .await
        .unwrap();
    let change = Element::new("query", ns::REGISTER)
        .with_child(Element::new("username", ns::REGISTER).with_text(charlie.as_str()))
        .with_child(Element::new("password", ns::REGISTER).with_text("second-pw"));
    c.iq_ok("set", None, change).await.unwrap();
    eventually("DC 1 takes the new password", CONVERGE, || {
        accepts(m.dc(1), &charlie, "second-pw")
    })
    .await;
    assert!(!accepts(m.dc(1), &charlie, "first-pw").await);
    assert!(!accepts(m.dc(2), &charlie, "first-pw").await);
}

#[tokio::test]
async fn a_roster_change_at_one_dc_is_pushed_and_stored_at_the_other() {
    let m = shared().await;
    let charlie = user("charlie");
    Client::register_account(&m.dc(1).client(), &charlie, "secret-pw")
        .await
        .unwrap();
    eventually("DC 2 knows the account", CONVERGE, || {
        accepts(m.dc(2), &charlie, "secret-pw")
    })
    .await;
    let mut phone = available(m.dc(1), &charlie, "phone").await;
    let mut fridge = available(m.dc(2), &charlie, "fridge").await;
    m.wait_directory_holds(&[phone.jid(), fridge.jid()], CONVERGE)
        .await
        .unwrap();

    let item = Element::new("item", ns::ROSTER)
        .with_attr("jid", "dora@example.com")
        .with_attr("name", "Dora");
    phone
        .iq_ok(
            "set",
            None,
            Element::new("query", ns::ROSTER).with_child(item),
        )
        .await
        .unwrap();
    let push = fridge
        .expect("roster push", |e| {
            e.is("iq", ns::CLIENT)
                && e.attr("type") == Some("set")
                && e.get_child("query", ns::ROSTER).is_some()
        })
        .await
        .unwrap();
    let pushed = push.get_child("query", ns::ROSTER).unwrap();
    assert_eq!(
        pushed.children().next().and_then(|i| i.attr("jid")),
        Some("dora@example.com")
    );
    // And DC 2's copy of the roster has it: a fresh login there lists it.
    eventually("DC 2's roster has the item", CONVERGE, || async {
        let mut c = Client::login(&m.dc(2).client(), &charlie, "secret-pw", None)
            .await
            .unwrap();
        let r = c
            .iq_ok("get", None, Element::new("query", ns::ROSTER))
            .await
            .unwrap();
        let _ = c.close().await;
        r.get_child("query", ns::ROSTER).is_some_and(|q| {
            q.children().any(|i| {
                i.attr("jid") == Some("dora@example.com") && i.attr("name") == Some("Dora")
            })
        })
    })
    .await;
}

#[tokio::test]
async fn an_offline_message_stored_at_one_dc_is_delivered_once_at_another() {
    let m = shared().await;
    let (alice, dora) = (user("alice"), user("dora"));
    for name in [&alice, &dora] {
        Client::register_account(&m.dc(1).client(), name, "secret-pw")
            .await
            .unwrap();
    }
    let mut a = available(m.dc(1), &alice, "phone").await;
    a.send_message(&format!("{dora}@example.com"), "while you were out")
        .await
        .unwrap();
    // Stored at DC 1; replicated to DC 2.
    let dc2 = store(m.dc(2)).await;
    eventually("DC 2 holds the offline message", CONVERGE, || async {
        dc2.offline_messages(&dora).await.unwrap().len() == 1
    })
    .await;

    let mut d = available(m.dc(2), &dora, "tablet").await;
    let msg = d
        .expect("offline message", |e| e.is("message", ns::CLIENT))
        .await
        .unwrap();
    assert_eq!(
        msg.child_text("body", ns::CLIENT).as_deref(),
        Some("while you were out")
    );
    assert!(msg.get_child("delay", ns::DELAY).is_some());
    // Delivered at DC 2, so gone at DC 1 too: a login there gets nothing.
    let dc1 = store(m.dc(1)).await;
    eventually("DC 1 forgot the delivered message", CONVERGE, || async {
        dc1.offline_messages(&dora).await.unwrap().is_empty()
    })
    .await;
    let mut d1 = available(m.dc(1), &dora, "phone").await;
    d1.expect_none(Duration::from_secs(1), |e| e.is("message", ns::CLIENT))
        .await
        .unwrap();
    d.expect_none(Duration::from_millis(200), |e| e.is("message", ns::CLIENT))
        .await
        .unwrap();
}
