//! Multi-user chat at one DC (XEP-0045, issue 19), as clients use it: a room created (201,
//! instant), joined, chatted in with stanza ids, history on join and MAM on the room, nick
//! change and conflict, subject, private messages, self-ping (XEP-0410), kick, ban,
//! destruction; and the refusals XEP-0045 prescribes.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]

use meerkat_testkit::client::{stanza_error_condition, Client};
use meerkat_testkit::mam;
use meerkat_testkit::muc::{
    admin, codes, config, create, error_from, groupchat, is_groupchat_from, item, join,
    join_presence, presence_with, OWNER, USER,
};
use meerkat_xmpp::{ns, Element};

use crate::{dc, online, user};

fn room_jid() -> String {
    format!("{}@conference.example.com", user("room"))
}

fn ping() -> Element {
    Element::new("ping", ns::PING)
}

async fn error_of(c: &mut Client, from: &str) -> String {
    let e = c.expect("an error", error_from(from)).await.unwrap();
    stanza_error_condition(&e).unwrap_or_default()
}

#[tokio::test]
async fn a_room_is_created_joined_chatted_in_archived_and_destroyed() {
    let dc = dc().await;
    let mut alice = online(&dc, &user("alice"), "phone").await;
    let mut bob = online(&dc, &user("bob"), "desk").await;
    let mut carol = online(&dc, &user("carol"), "pad").await;
    let room = room_jid();

    // The service is listed by the domain and describes itself.
    let items = alice
        .iq_ok(
            "get",
            Some("example.com"),
            Element::new("query", ns::DISCO_ITEMS),
        )
        .await
        .unwrap();
    assert!(
        items.to_string().contains("conference.example.com"),
        "{items}"
    );

    // Created: 110 and 201, locked until the owner accepts the instant room.
    create(&mut alice, &room, "alice").await.unwrap();
    let info = alice
        .iq_ok("get", Some(&room), Element::new("query", ns::DISCO_INFO))
        .await
        .unwrap();
    for f in [
        "http://jabber.org/protocol/muc",
        "urn:xmpp:mam:2",
        "muc_temporary",
        "muc_open",
    ] {
        assert!(info.to_string().contains(f), "{f} in {info}");
    }

    // Bob joins: he sees Alice, then himself; Alice sees him; he gets the (empty) subject.
    let own = join(&mut bob, &room, "bob").await.unwrap();
    assert!(
        codes(&own).contains(&110) && codes(&own).contains(&170),
        "{own}"
    );
    let b = format!("{room}/bob");
    alice
        .expect("bob's presence", |e| {
            e.is("presence", ns::CLIENT) && e.attr("from") == Some(b.as_str())
        })
        .await
        .unwrap();
    let a = format!("{room}/alice");
    assert!(bob.buffered().any(|e| e.attr("from") == Some(a.as_str())));
    bob.expect("the subject", |e| e.has_child("subject", ns::CLIENT))
        .await
        .unwrap();

    // A message: both get it, with the same stanza id by the room.
    alice.send(&groupchat(&room, "hello")).await.unwrap();
    let m1 = alice
        .expect("reflection", is_groupchat_from(&room))
        .await
        .unwrap();
    let m2 = bob
        .expect("message", is_groupchat_from(&room))
        .await
        .unwrap();
    let id = mam::stanza_id(&m1, &room).expect("stanza id");
    assert_eq!(mam::stanza_id(&m2, &room).as_deref(), Some(id.as_str()));
    assert_eq!(m2.attr("from"), Some(a.as_str()));

    // Nick change: taken → 409; free → 303 then the new presence.
    bob.send(&Element::new("presence", ns::CLIENT).with_attr("to", a.clone()))
        .await
        .unwrap();
    assert_eq!(error_of(&mut bob, &a).await, "conflict");
    let bobby = format!("{room}/bobby");
    bob.send(&Element::new("presence", ns::CLIENT).with_attr("to", bobby.clone()))
        .await
        .unwrap();
    let gone = alice
        .expect("303", presence_with(&format!("{room}/bob"), 303))
        .await
        .unwrap();
    assert_eq!(item(&gone).and_then(|i| i.attr("nick")), Some("bobby"));
    bob.expect("own new presence", presence_with(&bobby, 110))
        .await
        .unwrap();

    // Subject (the owner is a moderator).
    let subject = Element::new("message", ns::CLIENT)
        .with_attr("to", room.clone())
        .with_attr("type", "groupchat")
        .with_child(Element::new("subject", ns::CLIENT).with_text("plans"));
    alice.send(&subject).await.unwrap();
    let s = bob
        .expect("subject", |e| {
            e.child_text("subject", ns::CLIENT).as_deref() == Some("plans")
        })
        .await
        .unwrap();
    assert_eq!(s.attr("from"), Some(a.as_str()));

    // A private message through the room.
    let pm = Element::new("message", ns::CLIENT)
        .with_attr("to", a.clone())
        .with_attr("type", "chat")
        .with_child(Element::new("body", ns::CLIENT).with_text("psst"));
    bob.send(&pm).await.unwrap();
    let got = alice
        .expect("pm", |e| {
            e.child_text("body", ns::CLIENT).as_deref() == Some("psst")
        })
        .await
        .unwrap();
    assert_eq!(got.attr("from"), Some(bobby.as_str()));
    assert!(got.has_child("x", USER));

    // Self-ping (XEP-0410): joined → result; not joined → not-acceptable.
    bob.iq_ok("get", Some(&bobby), ping()).await.unwrap();
    let r = carol
        .iq("get", Some(&format!("{room}/carol")), ping())
        .await
        .unwrap();
    assert_eq!(
        stanza_error_condition(&r).as_deref(),
        Some("not-acceptable")
    );
    // A non-occupant's message: not-acceptable.
    carol.send(&groupchat(&room, "let me in")).await.unwrap();
    assert_eq!(error_of(&mut carol, &room).await, "not-acceptable");

    // Carol joins with one message of history: "hello", delayed, with its id.
    let carol_occ = format!("{room}/carol");
    carol
        .send(&join_presence(&carol_occ, None, &[("maxstanzas", "1")]))
        .await
        .unwrap();
    carol
        .expect("own presence", presence_with(&carol_occ, 110))
        .await
        .unwrap();
    let h = carol
        .expect("history", is_groupchat_from(&room))
        .await
        .unwrap();
    assert_eq!(h.child_text("body", ns::CLIENT).as_deref(), Some("hello"));
    assert!(h.has_child("delay", ns::DELAY));
    assert_eq!(mam::stanza_id(&h, &room).as_deref(), Some(id.as_str()));
    // MAM on the room: the same message and id.
    let page = mam::run_at(&mut carol, Some(&room), mam::query("q1", &[], &[]))
        .await
        .unwrap();
    assert_eq!(page.bodies(), ["hello"]);
    assert_eq!(page.ids(), vec![id.clone()]);

    // Kick (307) and ban (301); the banned cannot come back.
    alice
        .iq_ok(
            "set",
            Some(&room),
            admin(&[("nick", "carol"), ("role", "none")]),
        )
        .await
        .unwrap();
    carol
        .expect("kicked", presence_with(&carol_occ, 307))
        .await
        .unwrap();
    let bob_bare = bob.bare_jid().to_owned();
    alice
        .iq_ok(
            "set",
            Some(&room),
            admin(&[("jid", &bob_bare), ("affiliation", "outcast")]),
        )
        .await
        .unwrap();
    bob.expect("banned", presence_with(&bobby, 301))
        .await
        .unwrap();
    bob.send(&join_presence(&bobby, None, &[])).await.unwrap();
    assert_eq!(error_of(&mut bob, &bobby).await, "forbidden");

    // The owner destroys the room: her unavailable presence carries <destroy/>.
    let destroy = Element::new("query", OWNER).with_child(
        Element::new("destroy", OWNER).with_child(Element::new("reason", OWNER).with_text("done")),
    );
    alice.iq_ok("set", Some(&room), destroy).await.unwrap();
    let p = alice
        .expect("destroyed", |e| {
            e.attr("from") == Some(a.as_str())
                && e.get_child("x", USER)
                    .is_some_and(|x| x.has_child("destroy", USER))
        })
        .await
        .unwrap();
    assert_eq!(p.attr("type"), Some("unavailable"));
    let r = alice
        .iq("get", Some(&room), Element::new("query", ns::DISCO_INFO))
        .await
        .unwrap();
    assert_eq!(
        stanza_error_condition(&r).as_deref(),
        Some("item-not-found")
    );
}

#[tokio::test]
async fn a_room_refuses_what_xep_0045_says_it_must() {
    let dc = dc().await;
    let mut alice = online(&dc, &user("alice"), "phone").await;
    let mut bob = online(&dc, &user("bob"), "desk").await;
    let room = room_jid();
    create(&mut alice, &room, "alice").await.unwrap();
    let bob_occ = format!("{room}/bob");

    // A malformed form: bad-request, nothing applied.
    for bad in [
        config(&[("muc#roomconfig_membersonly", "maybe")]),
        config(&[("muc#roomconfig_no_such_field", "1")]),
        config(&[("muc#roomconfig_passwordprotectedroom", "1")]),
    ] {
        let r = alice.iq("set", Some(&room), bad).await.unwrap();
        assert_eq!(stanza_error_condition(&r).as_deref(), Some("bad-request"));
    }
    // Members-only: registration-required.
    alice
        .iq_ok(
            "set",
            Some(&room),
            config(&[("muc#roomconfig_membersonly", "1")]),
        )
        .await
        .unwrap();
    bob.send(&join_presence(&bob_occ, None, &[])).await.unwrap();
    assert_eq!(error_of(&mut bob, &bob_occ).await, "registration-required");
    // A password: not-authorized without it or with a wrong one, in with the right one.
    alice
        .iq_ok(
            "set",
            Some(&room),
            config(&[
                ("muc#roomconfig_membersonly", "0"),
                ("muc#roomconfig_passwordprotectedroom", "1"),
                ("muc#roomconfig_roomsecret", "sesame"),
                ("muc#roomconfig_moderatedroom", "1"),
            ]),
        )
        .await
        .unwrap();
    bob.send(&join_presence(&bob_occ, Some("wrong"), &[]))
        .await
        .unwrap();
    assert_eq!(error_of(&mut bob, &bob_occ).await, "not-authorized");
    bob.send(&join_presence(&bob_occ, Some("sesame"), &[]))
        .await
        .unwrap();
    let own = bob
        .expect("joined", presence_with(&bob_occ, 110))
        .await
        .unwrap();
    // Moderated: Bob is a visitor, and a visitor may not speak.
    assert_eq!(item(&own).and_then(|i| i.attr("role")), Some("visitor"));
    bob.send(&groupchat(&room, "may I?")).await.unwrap();
    assert_eq!(error_of(&mut bob, &room).await, "forbidden");
    // Voice: a participant speaks.
    alice
        .iq_ok(
            "set",
            Some(&room),
            admin(&[("nick", "bob"), ("role", "participant")]),
        )
        .await
        .unwrap();
    bob.send(&groupchat(&room, "thanks")).await.unwrap();
    alice
        .expect("bob speaks", is_groupchat_from(&room))
        .await
        .unwrap();
    // Bob is no admin: no configuration form for him.
    let r = bob
        .iq("get", Some(&room), Element::new("query", OWNER))
        .await
        .unwrap();
    assert_eq!(stanza_error_condition(&r).as_deref(), Some("forbidden"));
    // The last owner cannot leave the room without one.
    let alice_bare = alice.bare_jid().to_owned();
    let r = alice
        .iq(
            "set",
            Some(&room),
            admin(&[("jid", &alice_bare), ("affiliation", "member")]),
        )
        .await
        .unwrap();
    assert_eq!(stanza_error_condition(&r).as_deref(), Some("conflict"));
    // Full: a room of one more occupant than it holds refuses.
    alice
        .iq_ok(
            "set",
            Some(&room),
            config(&[("muc#roomconfig_maxusers", "2")]),
        )
        .await
        .unwrap();
    let mut carol = online(&dc, &user("carol"), "pad").await;
    let carol_occ = format!("{room}/carol");
    carol
        .send(&join_presence(&carol_occ, Some("sesame"), &[]))
        .await
        .unwrap();
    assert_eq!(
        error_of(&mut carol, &carol_occ).await,
        "service-unavailable"
    );
    // Malformed input: an admin query without items, an empty nick.
    let r = alice
        .iq(
            "set",
            Some(&room),
            Element::new("query", meerkat_testkit::muc::ADMIN),
        )
        .await
        .unwrap();
    assert_eq!(stanza_error_condition(&r).as_deref(), Some("bad-request"));
    // Leaving: the others see it; a temporary room whose last occupant leaves is gone.
    bob.send(
        &Element::new("presence", ns::CLIENT)
            .with_attr("type", "unavailable")
            .with_attr("to", bob_occ.clone()),
    )
    .await
    .unwrap();
    alice
        .expect("bob left", |e| {
            e.attr("from") == Some(bob_occ.as_str()) && e.attr("type") == Some("unavailable")
        })
        .await
        .unwrap();
}

/// A room with the rest of the server: an occupant whose connection drops under stream
/// management stays in the room (nobody sees it leave) and, resumed, gets what the room said
/// meanwhile, in order, then what follows; a bookmark with autojoin (XEP-0402) that one of the
/// user's clients stored tells another which room to join and under which nick.
#[tokio::test]
async fn a_room_works_with_stream_management_and_bookmarks() {
    const BOOKMARKS: &str = "urn:xmpp:bookmarks:1";
    let dc = dc().await;
    let a = user("alice");
    let mut alice = online(&dc, &a, "phone").await;
    let mut bob = online(&dc, &user("bob"), "desk").await;
    let room = room_jid();
    create(&mut alice, &room, "alice").await.unwrap();
    join(&mut bob, &room, "bob").await.unwrap();

    // Alice's phone keeps a bookmark of the room, to join at every login.
    let conference = Element::new("conference", BOOKMARKS)
        .with_attr("name", "The room")
        .with_attr("autojoin", "true")
        .with_child(Element::new("nick", BOOKMARKS).with_text("al"));
    alice
        .iq_ok(
            "set",
            None,
            meerkat_testkit::pep::publish(
                BOOKMARKS,
                &room,
                conference,
                &[
                    ("pubsub#persist_items", "true"),
                    ("pubsub#access_model", "whitelist"),
                ],
            ),
        )
        .await
        .unwrap();

    // The phone's connection drops; the session waits for it, still in the room.
    let enabled = alice.enable_sm(None).await.unwrap();
    let previd = enabled.attr("id").unwrap().to_owned();
    let handled = alice.sm_received().unwrap();
    let alice_full = alice.jid().to_owned();
    alice.drop_connection();
    for body in ["while away 1", "while away 2"] {
        bob.send(&groupchat(&room, body)).await.unwrap();
        bob.expect("own reflection", |e| {
            is_groupchat_from(&room)(e) && e.child_text("body", ns::CLIENT).as_deref() == Some(body)
        })
        .await
        .unwrap();
    }
    let (mut alice, answer) =
        Client::resume(&dc.client(), &a, "secret-pw", &previd, handled, &alice_full)
            .await
            .unwrap();
    assert_eq!(answer.name(), "resumed", "{answer}");
    let mut got = Vec::new();
    while got.len() < 2 {
        let m = alice
            .expect("a message of the room", is_groupchat_from(&room))
            .await
            .unwrap();
        got.push(m.child_text("body", ns::CLIENT).unwrap_or_default());
    }
    assert_eq!(got, ["while away 1", "while away 2"]);
    bob.send(&groupchat(&room, "after")).await.unwrap();
    alice
        .expect("the message after", |e| {
            is_groupchat_from(&room)(e)
                && e.child_text("body", ns::CLIENT).as_deref() == Some("after")
        })
        .await
        .unwrap();
    // Bob never saw Alice leave: what he got from her occupant JID is no unavailable presence.
    let alice_occupant = format!("{room}/alice");
    let left = bob
        .expect_within(std::time::Duration::ZERO, "alice leaving", |e| {
            e.is("presence", ns::CLIENT)
                && e.attr("from") == Some(alice_occupant.as_str())
                && e.attr("type") == Some("unavailable")
        })
        .await;
    assert!(left.is_err(), "bob saw alice leave: {left:?}");

    // Her laptop reads the bookmarks and joins as they say.
    let mut laptop = Client::login(&dc.client(), &a, "secret-pw", Some("laptop"))
        .await
        .unwrap();
    let reply = laptop
        .iq_ok("get", None, meerkat_testkit::pep::items(BOOKMARKS))
        .await
        .unwrap();
    let items = meerkat_testkit::pep::result_items(&reply);
    let (id, conf) = items.first().expect("the bookmark");
    assert_eq!(id, &room);
    assert!(conf.is("conference", BOOKMARKS), "{conf}");
    assert_eq!(conf.attr("autojoin"), Some("true"));
    let nick = conf.child_text("nick", BOOKMARKS).unwrap();
    join(&mut laptop, &room, &nick).await.unwrap();
    let laptop_occupant = format!("{room}/{nick}");
    bob.expect("the laptop joining", |e| {
        e.is("presence", ns::CLIENT) && e.attr("from") == Some(laptop_occupant.as_str())
    })
    .await
    .unwrap();
    dc.stop().await.unwrap();
}
