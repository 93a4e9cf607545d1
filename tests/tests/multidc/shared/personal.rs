//! Personal data across DCs (issue 17): a vCard and private XML set at DC 1 are read at DC 2
//! (by a contact and by the owner's other resource); a contact at DC 2 who sees a presence
//! announcing a new vCard avatar (XEP-0153) gets the new vCard at once; and learns when the
//! user at DC 1 logged out and with which status (XEP-0012); a photo set at DC 1 is announced,
//! with its hash, by the presence the owner sends at DC 2 (XEP-0153).

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

/// XEP-0153 across DCs: a vCard with a photo set at DC 1; once DC 2 has it, the presence
/// Alice's other resource sends at DC 2 carries its hash (computed by DC 2 when it applied the
/// vCard) to Bob at DC 1.
#[tokio::test]
async fn a_photo_set_at_one_dc_is_announced_by_presence_sent_at_the_other() {
    let m = shared().await;
    let (alice, bob) = (user("alice"), user("bob"));
    register_everywhere(m, &alice).await;
    register_everywhere(m, &bob).await;
    let mut phone = available(m.dc(1), &alice, "phone").await;
    let mut b = available(m.dc(1), &bob, "desk").await;
    let mut tablet = available(m.dc(2), &alice, "tablet").await;
    m.wait_directory_holds(&[phone.jid(), b.jid(), tablet.jid()], CONVERGE)
        .await
        .unwrap();
    befriend(&mut phone, &mut b).await;

    // The bytes "world", base64 broken over lines as clients send it.
    let card = Element::new("vCard", ns::VCARD).with_child(
        Element::new("PHOTO", ns::VCARD)
            .with_child(Element::new("TYPE", ns::VCARD).with_text("image/png"))
            .with_child(Element::new("BINVAL", ns::VCARD).with_text("d29y\nbGQ=")),
    );
    phone.iq_ok("set", None, card).await.unwrap();
    until(
        &mut tablet,
        "Alice's vCard at DC 2",
        "get",
        None,
        Element::new("vCard", ns::VCARD),
        |r| {
            r.get_child("vCard", ns::VCARD)
                .is_some_and(|v| v.has_child("PHOTO", ns::VCARD))
        },
    )
    .await;

    let status = Element::new("status", ns::CLIENT).with_text("from dc2");
    tablet
        .send(&Element::new("presence", ns::CLIENT).with_child(status))
        .await
        .unwrap();
    let tj = tablet.jid().to_owned();
    let p = b
        .expect("the tablet's presence", |p| {
            p.is("presence", ns::CLIENT)
                && p.attr("from") == Some(tj.as_str())
                && p.child_text("status", ns::CLIENT).as_deref() == Some("from dc2")
        })
        .await
        .unwrap();
    let photo = p
        .get_child("x", ns::VCARD_UPDATE)
        .and_then(|x| x.child_text("photo", ns::VCARD_UPDATE));
    // SHA-1 of "world".
    assert_eq!(
        photo.as_deref(),
        Some("7c211433f02071597741e6ff5a8ea34789abbf43"),
        "{p}"
    );
}
