//! Roster pushes for changes made at another DC: written from the session's own DC's copy of
//! the roster, so that what a client is pushed last is what its DC holds, whatever order the
//! paths between the DCs deliver in (docs/decisions.md, "Roster pushes come from the
//! session's DC").

use std::time::Duration;

use meerkat_testkit::client::pred::presence_of_type;
use meerkat_testkit::client::Client;
use meerkat_xmpp::{ns, Element};

use crate::{available, multi, presence, register, shared, user, wait_account, CONVERGE};

/// The item for `contact` in a roster push `el` and the push's version, if `el` is one.
fn pushed_item(el: &Element, contact: &str) -> Option<(Element, String)> {
    if !el.is("iq", ns::CLIENT) || el.attr("type") != Some("set") {
        return None;
    }
    let query = el.get_child("query", ns::ROSTER)?;
    let item = query.children().find(|i| i.attr("jid") == Some(contact))?;
    Some((item.clone(), query.attr("ver")?.to_owned()))
}

/// The pushes for `contact` that `c` gets until `quiet` passes without one, in order.
async fn pushes_until_quiet(
    c: &mut Client,
    contact: &str,
    quiet: Duration,
) -> Vec<(Element, String)> {
    let mut got = Vec::new();
    while let Ok(el) = c
        .expect_within(quiet, "a roster push", |e| {
            pushed_item(e, contact).is_some()
        })
        .await
    {
        got.extend(pushed_item(&el, contact));
    }
    got
}

/// `c`'s roster item for `contact` as its DC keeps it.
async fn stored_item(c: &mut Client, contact: &str) -> Option<Element> {
    let roster = c
        .iq_ok("get", None, Element::new("query", ns::ROSTER))
        .await
        .unwrap();
    let item = roster
        .get_child("query", ns::ROSTER)?
        .children()
        .find(|i| i.attr("jid") == Some(contact))
        .cloned();
    item
}

/// Bob, at DC 2, approves Alice's request: the push Alice gets at DC 1 names DC 1's roster
/// version, so a roster get at DC 1 with that version is answered "unchanged" (RFC 6121
/// §2.6.3: an empty result) instead of the whole roster again.
#[tokio::test]
async fn a_push_for_a_change_made_at_another_dc_carries_the_version_of_the_sessions_dc() {
    let m = shared().await;
    let (a, b) = crate::accounts_apart(m.dc(1), m.dc(2)).await;
    let mut alice = available(m.dc(1), &a, "phone").await;
    let mut bob = available(m.dc(2), &b, "desk").await;
    m.wait_directory_holds(&[alice.jid(), bob.jid()], CONVERGE)
        .await
        .unwrap();
    let (aj, bj) = (alice.bare_jid().to_owned(), bob.bare_jid().to_owned());
    alice.send(&presence("subscribe", &bj)).await.unwrap();
    bob.expect("subscribe", presence_of_type(&aj, Some("subscribe")))
        .await
        .unwrap();
    bob.approve_subscription(&mut alice).await.unwrap();
    let pushes = pushes_until_quiet(&mut alice, &bj, Duration::from_secs(2)).await;
    let (item, ver) = pushes.last().expect("roster pushes for bob").clone();
    assert_eq!(item.attr("subscription"), Some("to"), "{pushes:?}");
    let answer = alice
        .iq_ok(
            "get",
            None,
            Element::new("query", ns::ROSTER).with_attr("ver", ver.clone()),
        )
        .await
        .unwrap();
    assert!(
        answer.get_child("query", ns::ROSTER).is_none(),
        "a roster get at DC 1 with the version pushed there ({ver}) is answered unchanged: {answer:?}"
    );
}

/// Alice (DC 1) asked Bob (DC 2); the DCs are cut apart; Bob approves at DC 2 while Alice
/// names him "Bobby" at DC 1. After the heal DC 1 holds both changes (each part of the item
/// from the side that changed it), and the last push Alice got says so: DC 2's push, written
/// there before it knew of the name, must not undo it on her client.
#[tokio::test]
async fn after_a_heal_the_last_push_shows_what_the_sessions_dc_holds() {
    let m = multi(2).await;
    let (a, b) = (user("alice"), user("bob"));
    register(m.dc(1), &a).await;
    register(m.dc(2), &b).await;
    wait_account(m.dc(1), &b).await;
    wait_account(m.dc(2), &a).await;
    let mut alice = available(m.dc(1), &a, "laptop").await;
    let mut bob = available(m.dc(2), &b, "phone").await;
    m.wait_directory_sessions(2, CONVERGE).await.unwrap();
    let (aj, bj) = (alice.bare_jid().to_owned(), bob.bare_jid().to_owned());
    alice.send(&presence("subscribe", &bj)).await.unwrap();
    bob.expect("subscribe", presence_of_type(&aj, Some("subscribe")))
        .await
        .unwrap();
    pushes_until_quiet(&mut alice, &bj, Duration::from_secs(1)).await;

    m.links.cut(1, 2);
    bob.send(&presence("subscribed", &aj)).await.unwrap();
    let rename = Element::new("query", ns::ROSTER).with_child(
        Element::new("item", ns::ROSTER)
            .with_attr("jid", bj.clone())
            .with_attr("name", "Bobby"),
    );
    alice.iq_ok("set", None, rename).await.unwrap();
    let before = pushes_until_quiet(&mut alice, &bj, Duration::from_secs(1)).await;
    assert_eq!(
        before
            .last()
            .and_then(|(i, _)| i.attr("name").map(str::to_owned))
            .as_deref(),
        Some("Bobby"),
        "the rename pushed at DC 1: {before:?}"
    );
    m.links.heal();
    alice
        .expect(
            "bob's approval, after the heal",
            presence_of_type(&bj, Some("subscribed")),
        )
        .await
        .unwrap();
    let after = pushes_until_quiet(&mut alice, &bj, Duration::from_secs(3)).await;
    let stored = stored_item(&mut alice, &bj)
        .await
        .expect("bob in alice's roster at DC 1");
    assert_eq!(
        (stored.attr("subscription"), stored.attr("name")),
        (Some("to"), Some("Bobby")),
        "DC 1 holds both changes"
    );
    let (last, _) = after.last().expect("a push of bob's approval");
    assert_eq!(
        (last.attr("subscription"), last.attr("name")),
        (Some("to"), Some("Bobby")),
        "the last push alice got shows what DC 1 holds; all after the heal: {after:?}"
    );
    m.stop().await.unwrap();
}
