//! The message archive (XEP-0313) with stanza ids (XEP-0359): what two users see of their
//! conversation, paging both ways, the filters, the preferences and hints, and what a client
//! that asks wrongly is told.

use std::time::Duration;

use meerkat_testkit::client::{stanza_error_condition, Client};
use meerkat_testkit::mam::{query, run, stanza_id};
use meerkat_xmpp::{ns, Element};

use meerkat_testkit::stack::{Dc, StackOptions};

use crate::{online, user};

/// A DC with the archive on.
async fn dc() -> Dc {
    Dc::start(StackOptions {
        archive: true,
        ..StackOptions::default()
    })
    .await
    .expect("start DC")
}

fn message(to: &str, body: &str, extra: Option<Element>) -> Element {
    let mut m = Element::new("message", ns::CLIENT)
        .with_attr("to", to)
        .with_attr("type", "chat")
        .with_child(Element::new("body", ns::CLIENT).with_text(body));
    if let Some(e) = extra {
        m.push_child(e);
    }
    m
}

async fn receive(c: &mut Client, body: &str) -> Element {
    let want = body.to_owned();
    c.expect(body, move |e| {
        e.child_text("body", ns::CLIENT).as_deref() == Some(want.as_str())
    })
    .await
    .expect("the message")
}

#[tokio::test]
async fn both_sides_archive_the_conversation_with_the_ids_the_recipient_saw() {
    let dc = dc().await;
    let (a, b) = (user("alice"), user("bob"));
    let mut alice = online(&dc, &a, "phone").await;
    let mut bob = online(&dc, &b, "desk").await;
    alice.send_presence().await.unwrap();
    bob.send_presence().await.unwrap();
    let (aj, bj) = (format!("{a}@example.com"), format!("{b}@example.com"));

    // A client's own stanza-id claiming to be the server's is removed (XEP-0359 §5).
    let forged = Element::new("stanza-id", ns::SID)
        .with_attr("by", bj.clone())
        .with_attr("id", "forged");
    let mut bob_saw = Vec::new();
    for i in 0..5 {
        let extra = (i == 0).then(|| forged.clone());
        alice
            .send(&message(&bj, &format!("a{i}"), extra))
            .await
            .unwrap();
        let m = receive(&mut bob, &format!("a{i}")).await;
        let ids: Vec<_> = m
            .children()
            .filter(|c| c.is("stanza-id", ns::SID))
            .collect();
        assert_eq!(ids.len(), 1, "one stanza id, the server's: {m}");
        bob_saw.push(stanza_id(&m, &bj).expect("stanza-id by bob"));
    }
    // What hints keep out of the archive is delivered without a stanza id.
    for hint in ["no-store", "no-permanent-store"] {
        alice
            .send(&message(&bj, hint, Some(Element::new(hint, ns::HINTS))))
            .await
            .unwrap();
        let m = receive(&mut bob, hint).await;
        assert_eq!(stanza_id(&m, &bj), None, "{m}");
    }
    for i in 0..2 {
        bob.send_message(&aj, &format!("b{i}")).await.unwrap();
        receive(&mut alice, &format!("b{i}")).await;
    }
    let all = ["a0", "a1", "a2", "a3", "a4", "b0", "b1"];

    // Both archives hold the conversation in order; Bob's ids are the ones he was given.
    let bob_all = run(&mut bob, query("all", &[], &[])).await.unwrap();
    assert_eq!(bob_all.bodies(), all);
    assert_eq!(bob_all.ids()[..5], bob_saw[..]);
    assert!(bob_all.complete());
    let alice_all = run(&mut alice, query("all", &[], &[])).await.unwrap();
    assert_eq!(alice_all.bodies(), all);
    assert!(alice_all.ids().iter().all(|id| !bob_saw.contains(id)));
    assert!(bob_all.items.iter().all(|i| i.stamp.ends_with('Z')));

    // Forward paging: three, three, one (complete).
    let p1 = run(&mut bob, query("p1", &[], &[("max", "3")]))
        .await
        .unwrap();
    assert_eq!(p1.bodies(), ["a0", "a1", "a2"]);
    assert!(!p1.complete());
    let last = p1.first_last().1.unwrap();
    let p2 = run(
        &mut bob,
        query("p2", &[], &[("max", "3"), ("after", last.as_str())]),
    )
    .await
    .unwrap();
    assert_eq!(p2.bodies(), ["a3", "a4", "b0"]);
    let last = p2.first_last().1.unwrap();
    let p3 = run(
        &mut bob,
        query("p3", &[], &[("max", "3"), ("after", last.as_str())]),
    )
    .await
    .unwrap();
    assert_eq!(p3.bodies(), ["b1"]);
    assert!(p3.complete());

    // Backward paging from the end: an empty <before/> is the last page.
    let l1 = run(&mut bob, query("l1", &[], &[("max", "4"), ("before", "")]))
        .await
        .unwrap();
    assert_eq!(l1.bodies(), ["a3", "a4", "b0", "b1"]);
    assert!(!l1.complete());
    let first = l1.first_last().0.unwrap();
    let l2 = run(
        &mut bob,
        query("l2", &[], &[("max", "4"), ("before", first.as_str())]),
    )
    .await
    .unwrap();
    assert_eq!(l2.bodies(), ["a0", "a1", "a2"]);
    assert!(l2.complete());

    // Filters: with (bare, full), ids, after-id/before-id, start/end.
    let with = run(&mut bob, query("w", &[("with", aj.as_str())], &[]))
        .await
        .unwrap();
    assert_eq!(with.bodies(), all);
    let full = format!("{aj}/phone");
    let with_full = run(&mut bob, query("wf", &[("with", full.as_str())], &[]))
        .await
        .unwrap();
    assert_eq!(with_full.bodies(), ["a0", "a1", "a2", "a3", "a4"]);
    let nobody = run(
        &mut bob,
        query("wn", &[("with", "nobody@example.com")], &[]),
    )
    .await
    .unwrap();
    assert!(nobody.items.is_empty() && nobody.complete());
    let ids = run(
        &mut bob,
        query(
            "ids",
            &[("ids", bob_saw[1].as_str()), ("ids", bob_saw[3].as_str())],
            &[],
        ),
    )
    .await
    .unwrap();
    assert_eq!(ids.bodies(), ["a1", "a3"]);
    let between = run(
        &mut bob,
        query(
            "between",
            &[
                ("after-id", bob_saw[0].as_str()),
                ("before-id", bob_saw[4].as_str()),
            ],
            &[],
        ),
    )
    .await
    .unwrap();
    assert_eq!(between.bodies(), ["a1", "a2", "a3"]);
    let future = run(
        &mut bob,
        query("future", &[("start", "2999-01-01T00:00:00Z")], &[]),
    )
    .await
    .unwrap();
    assert!(future.items.is_empty());
    let past = run(
        &mut bob,
        query("past", &[("end", "2000-01-01T00:00:00Z")], &[]),
    )
    .await
    .unwrap();
    assert!(past.items.is_empty());
    let since = run(
        &mut bob,
        query("since", &[("start", "2000-01-01T00:00:00Z")], &[]),
    )
    .await
    .unwrap();
    assert_eq!(since.bodies(), all);

    // The archive's metadata: its first and last message.
    let meta = bob
        .iq_ok("get", None, Element::new("metadata", ns::MAM))
        .await
        .unwrap();
    let meta = meta.get_child("metadata", ns::MAM).unwrap();
    let ends: Vec<_> = ["start", "end"]
        .iter()
        .map(|n| {
            meta.get_child(n, ns::MAM)
                .and_then(|e| e.attr("id"))
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ends, [bob_all.ids()[0].clone(), bob_all.ids()[6].clone()]);
}

#[tokio::test]
async fn offline_messages_keep_their_stanza_id_and_disco_shows_the_archive() {
    let dc = dc().await;
    let (a, b) = (user("alice"), user("bob"));
    let mut alice = online(&dc, &a, "phone").await;
    Client::register_account(&dc.client(), &b, "secret-pw")
        .await
        .unwrap();
    let bj = format!("{b}@example.com");
    alice.send_message(&bj, "while away").await.unwrap();
    // Alice's next stanza is handled after her message (one partition per sender, in order):
    // once it is answered, the message is archived and stored.
    alice
        .iq_ok("get", None, Element::new("ping", ns::PING))
        .await
        .unwrap();
    let mut bob = Client::login(&dc.client(), &b, "secret-pw", Some("desk"))
        .await
        .unwrap();
    let archived = run(&mut bob, query("q", &[], &[])).await.unwrap();
    assert_eq!(archived.bodies(), ["while away"]);
    bob.send_presence().await.unwrap();
    let m = receive(&mut bob, "while away").await;
    assert_eq!(stanza_id(&m, &bj), Some(archived.ids()[0].clone()));

    let info = bob
        .iq_ok("get", Some(&bj), Element::new("query", ns::DISCO_INFO))
        .await
        .unwrap();
    let features: Vec<_> = info
        .get_child("query", ns::DISCO_INFO)
        .unwrap()
        .children()
        .filter_map(|f| f.attr("var").map(str::to_owned))
        .collect();
    for f in [ns::MAM, ns::MAM_EXTENDED, ns::SID] {
        assert!(features.iter().any(|x| x == f), "{f} in {features:?}");
    }
    // The search form lists the fields a query may use.
    let form = bob
        .iq_ok("get", None, Element::new("query", ns::MAM))
        .await
        .unwrap();
    let vars: Vec<_> = form
        .get_child("query", ns::MAM)
        .and_then(|q| q.get_child("x", ns::DATA_FORMS))
        .unwrap()
        .children()
        .filter_map(|f| f.attr("var").map(str::to_owned))
        .collect();
    assert_eq!(
        vars,
        [
            "FORM_TYPE",
            "with",
            "start",
            "end",
            "after-id",
            "before-id",
            "ids"
        ]
    );
}

/// Alice writes to Bob and to Carol (one message each), and both receive.
async fn send_both(alice: &mut Client, bob: &mut Client, carol: &mut Client, round: &mut u32) {
    *round += 1;
    let (to_b, to_c) = (format!("r{round}-bob"), format!("r{round}-carol"));
    alice
        .send_message(bob.bare_jid(), &to_b)
        .await
        .expect("sent");
    alice
        .send_message(carol.bare_jid(), &to_c)
        .await
        .expect("sent");
    receive(bob, &to_b).await;
    receive(carol, &to_c).await;
}

#[tokio::test]
async fn preferences_decide_what_is_archived() {
    let dc = dc().await;
    let (a, b, c) = (user("alice"), user("bob"), user("carol"));
    let mut alice = online(&dc, &a, "phone").await;
    let mut bob = online(&dc, &b, "desk").await;
    let mut carol = online(&dc, &c, "tab").await;
    for x in [&mut alice, &mut bob, &mut carol] {
        x.send_presence().await.unwrap();
    }
    let (bj, cj) = (format!("{b}@example.com"), format!("{c}@example.com"));

    // The server's default until Alice sets hers.
    let prefs = alice
        .iq_ok("get", None, Element::new("prefs", ns::MAM))
        .await
        .unwrap();
    assert_eq!(
        prefs
            .get_child("prefs", ns::MAM)
            .and_then(|p| p.attr("default")),
        Some("always")
    );

    let set = |default: &str, always: &[&str], never: &[&str]| {
        let list = |name: &str, jids: &[&str]| {
            let mut l = Element::new(name, ns::MAM);
            for j in jids {
                l.push_child(Element::new("jid", ns::MAM).with_text(*j));
            }
            l
        };
        Element::new("prefs", ns::MAM)
            .with_attr("default", default)
            .with_child(list("always", always))
            .with_child(list("never", never))
    };
    let mut round = 0;
    // never, except Carol.
    alice
        .iq_ok("set", None, set("never", &[cj.as_str()], &[]))
        .await
        .unwrap();
    send_both(&mut alice, &mut bob, &mut carol, &mut round).await;
    // always, except Carol.
    alice
        .iq_ok("set", None, set("always", &[], &[cj.as_str()]))
        .await
        .unwrap();
    send_both(&mut alice, &mut bob, &mut carol, &mut round).await;
    // roster: Bob is in Alice's roster, Carol is not.
    alice
        .iq_ok(
            "set",
            None,
            Element::new("query", ns::ROSTER)
                .with_child(Element::new("item", ns::ROSTER).with_attr("jid", bj.clone())),
        )
        .await
        .unwrap();
    alice
        .iq_ok("set", None, set("roster", &[], &[]))
        .await
        .unwrap();
    send_both(&mut alice, &mut bob, &mut carol, &mut round).await;

    let got = run(&mut alice, query("q", &[], &[])).await.unwrap();
    assert_eq!(got.bodies(), ["r1-carol", "r2-bob", "r3-bob"]);
    // The recipients' own archives follow their own (default) preferences.
    let carol_has = run(&mut carol, query("q", &[], &[])).await.unwrap();
    assert_eq!(carol_has.bodies(), ["r1-carol", "r2-carol", "r3-carol"]);
    let now = alice
        .iq_ok("get", None, Element::new("prefs", ns::MAM))
        .await
        .unwrap();
    assert_eq!(
        now.get_child("prefs", ns::MAM)
            .and_then(|p| p.attr("default")),
        Some("roster")
    );
}

#[tokio::test]
async fn wrong_archive_requests_are_refused_and_a_large_max_is_clamped() {
    let dc = dc().await;
    let (a, b) = (user("alice"), user("bob"));
    let mut alice = online(&dc, &a, "phone").await;
    let mut bob = online(&dc, &b, "desk").await;
    bob.send_presence().await.unwrap();
    let bj = format!("{b}@example.com");
    let cond = |r: &Element| stanza_error_condition(r).unwrap_or_default();

    // Someone else's archive.
    let other = alice
        .iq("set", Some(&bj), query("x", &[], &[]))
        .await
        .unwrap();
    assert_eq!(cond(&other), "forbidden");
    for (q, want) in [
        (query("x", &[("start", "yesterday")], &[]), "bad-request"),
        (
            query("x", &[("colour", "red")], &[]),
            "feature-not-implemented",
        ),
        (query("x", &[], &[("max", "many")]), "bad-request"),
        (
            query("x", &[], &[("after", "no-such-id")]),
            "item-not-found",
        ),
        (
            query("x", &[("after-id", "no-such-id")], &[]),
            "item-not-found",
        ),
        (
            query("x", &[], &[("before", "no-such-id")]),
            "item-not-found",
        ),
    ] {
        let r = alice.iq("set", None, q.clone()).await.unwrap();
        assert_eq!(cond(&r), want, "{q}");
    }
    let r = alice
        .iq(
            "set",
            None,
            Element::new("prefs", ns::MAM).with_attr("default", "sometimes"),
        )
        .await
        .unwrap();
    assert_eq!(cond(&r), "bad-request");

    // 260 messages: a max of 1000 gives 250, not complete.
    for i in 0..260 {
        let mut m = message(&bj, &format!("m{i}"), None);
        m.set_attr("type", "normal");
        alice.send(&m).await.unwrap();
    }
    receive(&mut bob, "m259").await;
    let page = run(&mut alice, query("big", &[], &[("max", "1000")]))
        .await
        .unwrap();
    assert_eq!(page.items.len(), 250);
    assert!(!page.complete());
    assert_eq!(page.items[249].body(), "m249");
    // Nothing else came: each result once, before its iq result.
    alice
        .expect_none(Duration::from_millis(200), |e| {
            e.get_child("result", ns::MAM).is_some()
        })
        .await
        .unwrap();
}

/// A DC alone runs its replicator too, which keeps its outbox (a copy of every change, kept
/// for the other DCs) empty: with nobody to ship to, it reads only the account changes (and
/// announces them: a password changed in the database ends the sessions) and what it has
/// passed over goes at its next trim. Without it the outbox grew by a whole stanza per
/// archived copy, for ever. The archive itself keeps the conversation.
#[tokio::test]
async fn a_dc_alone_keeps_no_outbox_but_its_archive() {
    let dc = Dc::start(StackOptions {
        archive: true,
        replicator: true,
        data_status_ms: Some(100),
        ..StackOptions::default()
    })
    .await
    .expect("start DC");
    let mut alice = online(&dc, &user("alice"), "a").await;
    let mut bob = online(&dc, &user("bob"), "b").await;
    alice.send_presence().await.unwrap();
    bob.send_presence().await.unwrap();
    let bj = bob.bare_jid().to_owned();
    let sent: Vec<String> = (0..5).map(|i| format!("kept {i}")).collect();
    for body in &sent {
        alice.send(&message(&bj, body, None)).await.unwrap();
        receive(&mut bob, body).await;
    }

    let store = meerkat_store::Store::connect(&dc.database_url)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = store.outbox_page(0, 100).await.unwrap().entries.len();
        if left == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the outbox still holds {left} entries after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all = run(&mut bob, query("all", &[], &[])).await.unwrap();
    assert_eq!(all.bodies(), sent);
    // Written after the trim: trimmed in turn.
    alice.send(&message(&bj, "later", None)).await.unwrap();
    receive(&mut bob, "later").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !store.outbox_page(0, 100).await.unwrap().entries.is_empty() {
        assert!(std::time::Instant::now() < deadline, "not trimmed again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The account changes in it are still read: a password changed in the database only (as
    // `meerkatctl user passwd` does) ends Bob's session, which must log in again.
    let bob_name = bj.split('@').next().unwrap().to_owned();
    let creds = meerkat_auth::Credentials::derive("another-pw", 4096).unwrap();
    assert!(store.set_credentials(&bob_name, &creds).await.unwrap());
    assert_eq!(
        bob.expect_stream_end().await.unwrap().as_deref(),
        Some("reset")
    );
    dc.stop().await.unwrap();
}
