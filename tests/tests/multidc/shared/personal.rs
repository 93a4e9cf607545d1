//! Personal data across DCs (issue 17): a vCard and private XML set at DC 1 are read at DC 2
//! (by a contact and by the owner's other resource); a contact at DC 2 who sees a presence
//! announcing a new vCard avatar (XEP-0153) gets the new vCard at once; and learns when the
//! user at DC 1 logged out and with which status (XEP-0012).

use std::time::{Duration, Instant};

use meerkat_testkit::client::{stanza_error_condition, Client};
use meerkat_testkit::personal::{last_activity, vcard_name};
use meerkat_xmpp::{ns, Element};

use crate::{available, befriend, login, register_everywhere, shared, user, CONVERGE};

/// Asks `ask` of `c` until `done` holds for the reply, within [`CONVERGE`].
async fn until(
    c: &mut Client,
    what: &str,
    ty: &str,
    to: Option<&str>,
    payload: Element,
    done: impl Fn(&Element) -> bool,
) -> Element {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let r = c.iq(ty, to, payload.clone()).await.unwrap();
        if done(&r) {
            return r;
        }
        assert!(Instant::now() < deadline, "{what}: last reply {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_vcard_and_private_xml_set_at_one_dc_are_read_at_the_other() {
    let m = shared().await;
    let (alice, bob) = (user("alice"), user("bob"));
    register_everywhere(m, &alice).await;
    register_everywhere(m, &bob).await;
    let mut phone = login(m.dc(1), &alice, "phone").await;
    let aj = phone.bare_jid().to_owned();
    let card = Element::new("vCard", ns::VCARD)
        .with_child(Element::new("FN", ns::VCARD).with_text("Alice at DC 1"));
    phone.iq_ok("set", None, card).await.unwrap();
    let notes = Element::new("query", ns::PRIVATE).with_child(
        Element::new("storage", "storage:rosternotes")
            .with_child(Element::new("note", "storage:rosternotes").with_text("from dc1")),
    );
    phone.iq_ok("set", None, notes).await.unwrap();

    let mut desk = login(m.dc(2), &bob, "desk").await;
    let r = until(
        &mut desk,
        "Alice's vCard at DC 2",
        "get",
        Some(&aj),
        Element::new("vCard", ns::VCARD),
        |r| vcard_name(r).is_some_and(|t| t == "Alice at DC 1"),
    )
    .await;
    assert_eq!(r.attr("from"), Some(aj.as_str()));

    let mut laptop = login(m.dc(2), &alice, "laptop").await;
    let ask = Element::new("query", ns::PRIVATE)
        .with_child(Element::new("storage", "storage:rosternotes"));
    until(
        &mut laptop,
        "Alice's notes at DC 2",
        "get",
        None,
        ask,
        |r| r.to_xml().contains("from dc1"),
    )
    .await;
    // Bob at DC 2 may not read them.
    let ask = Element::new("query", ns::PRIVATE)
        .with_child(Element::new("storage", "storage:rosternotes"));
    let r = desk.iq("get", Some(&aj), ask).await.unwrap();
    assert_eq!(stanza_error_condition(&r).as_deref(), Some("forbidden"));
}

#[tokio::test]
async fn a_contact_at_another_dc_gets_the_vcard_a_presence_announces_and_the_logout() {
    let m = shared().await;
    let (alice, bob) = (user("alice"), user("bob"));
    register_everywhere(m, &alice).await;
    register_everywhere(m, &bob).await;
    let mut a = available(m.dc(1), &alice, "phone").await;
    let mut b = available(m.dc(2), &bob, "desk").await;
    m.wait_directory_holds(&[a.jid(), b.jid()], CONVERGE)
        .await
        .unwrap();
    befriend(&mut a, &mut b).await;
    let aj = a.bare_jid().to_owned();

    // Online: active now.
    let r = b
        .iq_ok("get", Some(&aj), Element::new("query", ns::LAST))
        .await
        .unwrap();
    assert_eq!(last_activity(&r), Some((0, String::new())));

    // A new avatar: the vCard set at DC 1, then the presence announcing its hash (XEP-0153).
    // DC 2 routes that presence only once it holds the vCard, so Bob's first fetch has it.
    let card = Element::new("vCard", ns::VCARD)
        .with_child(Element::new("FN", ns::VCARD).with_text("new avatar"));
    a.iq_ok("set", None, card).await.unwrap();
    let update = Element::new("presence", ns::CLIENT).with_child(
        Element::new("x", ns::VCARD_UPDATE)
            .with_child(Element::new("photo", ns::VCARD_UPDATE).with_text("0123abcd")),
    );
    a.send(&update).await.unwrap();
    b.expect("the presence with the photo hash", |p| {
        p.is("presence", ns::CLIENT) && p.has_child("x", ns::VCARD_UPDATE)
    })
    .await
    .unwrap();
    let r = b
        .iq_ok("get", Some(&aj), Element::new("vCard", ns::VCARD))
        .await
        .unwrap();
    assert_eq!(vcard_name(&r).as_deref(), Some("new avatar"), "{r}");

    let bye = Element::new("presence", ns::CLIENT)
        .with_attr("type", "unavailable")
        .with_child(Element::new("status", ns::CLIENT).with_text("gone fishing"));
    a.send(&bye).await.unwrap();
    let _ = a.close().await;
    let r = until(
        &mut b,
        "Alice's last logout at DC 2",
        "get",
        Some(&aj),
        Element::new("query", ns::LAST),
        |r| last_activity(r).is_some_and(|(_, status)| status == "gone fishing"),
    )
    .await;
    let (secs, _) = last_activity(&r).unwrap();
    assert!(
        secs < CONVERGE.as_secs() + 5,
        "{secs} s since a logout just now"
    );

    // DC 2 tells the time too.
    let r = b
        .iq_ok("get", Some("example.com"), Element::new("time", ns::TIME))
        .await
        .unwrap();
    assert!(r.get_child("time", ns::TIME).is_some());
}
