//! A room across a partition: both sides keep the room going, each with its own occupants,
//! and the heal brings it back together: every DC holds one archive (every message of both
//! sides, in one order) and one room state, the occupants of each side see those of the other
//! again, and a nick taken on both sides stays with the occupant that took it first.

use std::collections::BTreeSet;
use std::time::Duration;

use meerkat_testkit::client::Client;
use meerkat_testkit::mam;
use meerkat_testkit::muc::{codes, create, groupchat, is_groupchat_from, join};
use meerkat_xmpp::{ns, Element};

use crate::{available, multi, register, room_homed_at, user, CONVERGE};

/// Detection bound plus delivery, with room for a loaded machine (a deadline).
const TOLD: Duration = Duration::from_secs(20);

/// The heal's detection, the data catch-up and the reconciliation (a deadline).
const SETTLED: Duration = Duration::from_secs(40);

/// The occupants one user sees in a room: the nicks of the room's presences it got, in order
/// (an unavailable one removes the nick).
struct View {
    room: String,
    present: BTreeSet<String>,
    /// The real JID last shown for each nick (to a moderator, in a semi-anonymous room).
    jids: std::collections::BTreeMap<String, String>,
}

impl View {
    fn new(room: &str, own: &str) -> View {
        View {
            room: room.to_owned(),
            present: BTreeSet::from([own.to_owned()]),
            jids: std::collections::BTreeMap::new(),
        }
    }

    /// The nicks present once the room's presences `c` has already received are read.
    async fn now(&mut self, c: &mut Client) -> Vec<String> {
        let prefix = format!("{}/", self.room);
        while let Ok(p) = c
            .expect_within(Duration::ZERO, "a presence from the room", |e| {
                e.is("presence", ns::CLIENT)
                    && e.attr("from").is_some_and(|f| f.starts_with(&prefix))
            })
            .await
        {
            self.feed(&p);
        }
        self.present.iter().cloned().collect()
    }

    fn feed(&mut self, p: &Element) {
        let nick = p.attr("from").unwrap_or_default()[self.room.len() + 1..].to_owned();
        if p.attr("type") == Some("unavailable") {
            self.present.remove(&nick);
            self.jids.remove(&nick);
        } else {
            let jid = meerkat_testkit::muc::item(p).and_then(|i| i.attr("jid"));
            if let Some(jid) = jid {
                self.jids.insert(nick.clone(), jid.to_owned());
            }
            self.present.insert(nick);
        }
    }

    /// Reads the room's presences at `c` until the nicks present are `want`.
    async fn until(&mut self, c: &mut Client, want: &[&str], within: Duration) {
        let want: BTreeSet<String> = want.iter().map(|s| (*s).to_owned()).collect();
        let prefix = format!("{}/", self.room);
        let until = tokio::time::Instant::now() + within;
        while self.present != want {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            let p = c
                .expect_within(left, "a presence from the room", |e| {
                    e.is("presence", ns::CLIENT)
                        && e.attr("from").is_some_and(|f| f.starts_with(&prefix))
                })
                .await
                .unwrap_or_else(|e| {
                    panic!("{}: sees {:?}, not {want:?}: {e:#}", c.jid(), self.present)
                });
            self.feed(&p);
        }
    }
}

/// `c` says `body` in the room and gets its reflection.
async fn say(c: &mut Client, room: &str, body: &str) {
    c.send(&groupchat(room, body)).await.unwrap();
    c.expect("own reflection", |e| {
        is_groupchat_from(room)(e) && e.child_text("body", ns::CLIENT).as_deref() == Some(body)
    })
    .await
    .unwrap();
}

fn subject(room: &str, text: &str) -> Element {
    Element::new("message", ns::CLIENT)
        .with_attr("to", room)
        .with_attr("type", "groupchat")
        .with_child(Element::new("subject", ns::CLIENT).with_text(text))
}

/// The room's subject as disco#info shows it (XEP-0045 §6.4, `muc#roominfo_subject`).
async fn shown_subject(c: &mut Client, room: &str) -> String {
    let info = c
        .iq_ok("get", Some(room), Element::new("query", ns::DISCO_INFO))
        .await
        .unwrap();
    let q = info.get_child("query", ns::DISCO_INFO).unwrap();
    q.get_child("x", ns::DATA_FORMS)
        .and_then(|x| {
            x.children()
                .find(|f| f.attr("var") == Some("muc#roominfo_subject"))
        })
        .and_then(|f| f.child_text("value", ns::DATA_FORMS))
        .unwrap_or_default()
}

#[tokio::test]
async fn muc_a_room_cut_in_two_goes_on_at_both_sides_and_heals_into_one() {
    let m = multi(2).await;
    let (a, b) = crate::accounts_apart(m.dc(1), m.dc(2)).await;
    let (c, d, e) = (user("carol"), user("dave"), user("eve"));
    register(m.dc(1), &c).await;
    register(m.dc(2), &d).await;
    register(m.dc(1), &e).await;
    let mut alice = available(m.dc(1), &a, "phone").await;
    let mut bob = available(m.dc(2), &b, "car").await;
    let mut carol = available(m.dc(1), &c, "desk").await;
    let mut dave = available(m.dc(2), &d, "pad").await;
    let mut eve = available(m.dc(1), &e, "laptop").await;
    m.wait_directory_sessions(5, CONVERGE).await.unwrap();

    // Alice (DC 1) creates a room homed at DC 2; Bob (DC 2) joins; one message.
    let room = room_homed_at("dc2");
    create(&mut alice, &room, "alice").await.unwrap();
    join(&mut bob, &room, "bob").await.unwrap();
    let (mut va, mut vb) = (View::new(&room, "alice"), View::new(&room, "bob"));
    va.until(&mut alice, &["alice", "bob"], CONVERGE).await;
    vb.until(&mut bob, &["alice", "bob"], CONVERGE).await;
    say(&mut alice, &room, "before").await;

    // The cut: each side declares the other down; each user sees the other leave (333).
    m.links.cut(1, 2);
    va.until(&mut alice, &["alice"], TOLD).await;
    vb.until(&mut bob, &["bob"], TOLD).await;

    // Both sides keep the room: messages on each, the subject set at DC 1, one nick taken on
    // both sides (first by Carol at DC 1, then by Dave at DC 2), and Bob's nick taken at DC 1,
    // where Bob is away, by Eve.
    say(&mut alice, &room, "dc1 one").await;
    say(&mut bob, &room, "dc2 one").await;
    alice.send(&subject(&room, "set at dc1")).await.unwrap();
    alice
        .expect("the subject", |e| e.has_child("subject", ns::CLIENT))
        .await
        .unwrap();
    join(&mut carol, &room, "dup").await.unwrap();
    let mut vc = View::new(&room, "dup");
    va.until(&mut alice, &["alice", "dup"], CONVERGE).await;
    vc.until(&mut carol, &["alice", "dup"], CONVERGE).await;
    join(&mut dave, &room, "dup").await.unwrap();
    vb.until(&mut bob, &["bob", "dup"], CONVERGE).await;
    say(&mut dave, &room, "dave at dc2").await;
    join(&mut eve, &room, "bob").await.unwrap();
    va.until(&mut alice, &["alice", "bob", "dup"], CONVERGE)
        .await;
    assert_eq!(va.jids.get("bob").map(String::as_str), Some(eve.jid()));
    say(&mut alice, &room, "dc1 two").await;
    say(&mut bob, &room, "dc2 two").await;

    // The heal: Dave and Eve, who took their nicks later, are removed (110, 333); everyone
    // else sees the same three occupants, Carol and Bob holding the nicks.
    m.links.heal();
    for (c, nick) in [(&mut dave, "dup"), (&mut eve, "bob")] {
        let occupant = format!("{room}/{nick}");
        let gone = c
            .expect_within(SETTLED, "removed", |e| {
                e.attr("from") == Some(occupant.as_str()) && e.attr("type") == Some("unavailable")
            })
            .await
            .unwrap();
        assert!(
            codes(&gone).contains(&110) && codes(&gone).contains(&333),
            "{gone}"
        );
    }
    let all = ["alice", "bob", "dup"];
    va.until(&mut alice, &all, SETTLED).await;
    vb.until(&mut bob, &all, SETTLED).await;
    vc.until(&mut carol, &all, SETTLED).await;
    // One room state: the subject set at DC 1 is what both sides show.
    assert_eq!(shown_subject(&mut bob, &room).await, "set at dc1");
    assert_eq!(shown_subject(&mut alice, &room).await, "set at dc1");
    let (s1, s2) = (crate::store(m.dc(1)).await, crate::store(m.dc(2)).await);
    crate::eventually("one room state at both DCs", SETTLED, || async {
        s1.muc_room(&room).await.unwrap() == s2.muc_room(&room).await.unwrap()
            && s1.muc_occupants(&room).await.unwrap() == s2.muc_occupants(&room).await.unwrap()
    })
    .await;
    let occupants: Vec<String> = s1
        .muc_occupants(&room)
        .await
        .unwrap()
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    assert_eq!(occupants.len(), 3, "{occupants:?}");
    assert!(
        occupants
            .iter()
            .any(|k| k.starts_with("dup\n") && k.contains(&c)),
        "{occupants:?}"
    );

    // One archive: every message of both sides, once, in one order, at both DCs, and what
    // MAM on the room answers a user of each side.
    let ids_at = |s: &meerkat_store::Store| {
        let s = s.clone();
        let room = room.clone();
        async move {
            let q = meerkat_store::ArchiveQuery::all(&room, 100);
            let page = s.archive_query(&q).await.unwrap().unwrap();
            page.items.into_iter().map(|i| i.id).collect::<Vec<_>>()
        }
    };
    crate::eventually("one archive at both DCs", SETTLED, || async {
        let (x, y) = (ids_at(&s1).await, ids_at(&s2).await);
        x.len() == 6 && x == y
    })
    .await;
    let from_alice = mam::run_at(&mut alice, Some(&room), mam::query("qa", &[], &[]))
        .await
        .unwrap();
    let from_bob = mam::run_at(&mut bob, Some(&room), mam::query("qb", &[], &[]))
        .await
        .unwrap();
    assert_eq!(from_alice.ids(), ids_at(&s1).await);
    assert_eq!(from_bob.ids(), from_alice.ids());
    let mut bodies = from_alice.bodies();
    bodies.sort();
    assert_eq!(
        bodies,
        [
            "before",
            "dave at dc2",
            "dc1 one",
            "dc1 two",
            "dc2 one",
            "dc2 two"
        ]
    );
    assert_eq!(from_alice.bodies()[0], "before");

    // The room goes on as one: a message after the heal reaches every occupant.
    say(&mut bob, &room, "together again").await;
    for c in [&mut alice, &mut carol] {
        c.expect_within(CONVERGE, "the message after the heal", |e| {
            is_groupchat_from(&room)(e)
                && e.child_text("body", ns::CLIENT).as_deref() == Some("together again")
        })
        .await
        .unwrap();
    }
    // And nothing received meanwhile changed anyone's list; the moderator Alice sees who
    // holds each nick.
    assert_eq!(va.now(&mut alice).await, all);
    assert_eq!(va.jids.get("bob").map(String::as_str), Some(bob.jid()));
    assert_eq!(va.jids.get("dup").map(String::as_str), Some(carol.jid()));
    assert_eq!(vb.now(&mut bob).await, all);
    assert_eq!(vc.now(&mut carol).await, all);
    m.stop().await.unwrap();
}

#[tokio::test]
async fn muc_a_dead_home_returns_clears_its_gone_occupants_and_serves_the_whole_room() {
    let mut m = multi(2).await;
    let (a, b) = crate::accounts_apart(m.dc(1), m.dc(2)).await;
    let mut alice = available(m.dc(1), &a, "phone").await;
    let mut bob = available(m.dc(2), &b, "car").await;
    m.wait_directory_sessions(2, CONVERGE).await.unwrap();
    let room = room_homed_at("dc2");
    create(&mut alice, &room, "alice").await.unwrap();
    join(&mut bob, &room, "bob").await.unwrap();
    let mut va = View::new(&room, "alice");
    va.until(&mut alice, &["alice", "bob"], CONVERGE).await;
    say(&mut alice, &room, "before").await;

    // The home dies with Bob's session: Alice sees him leave; DC 1 keeps his row aside.
    m.kill_dc(2);
    drop(bob);
    va.until(&mut alice, &["alice"], TOLD).await;
    say(&mut alice, &room, "while dc2 is gone").await;
    let (s1, s2) = (crate::store(m.dc(1)).await, crate::store(m.dc(2)).await);
    let rows = s1.muc_occupants(&room).await.unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");

    // DC 2 returns (a new life): its routers say none of its old occupants is there, and the
    // row goes at both DCs; Alice's stays.
    m.links.heal();
    m.dc_mut(2).revive().await.unwrap();
    crate::eventually("only alice's row at both DCs", SETTLED, || async {
        let (r1, r2) = (
            s1.muc_occupants(&room).await.unwrap(),
            s2.muc_occupants(&room).await.unwrap(),
        );
        r1 == r2 && r1.len() == 1 && r1[0].0.starts_with("alice\n")
    })
    .await;

    // The room is back at DC 2 and has everything: Bob logs in again there and joins, gets
    // both messages as history, and his message is archived by DC 2, after them.
    let mut bob = available(m.dc(2), &b, "car").await;
    m.wait_directory_sessions(2, CONVERGE).await.unwrap();
    join(&mut bob, &room, "bob").await.unwrap();
    let mut history = Vec::new();
    for _ in 0..2 {
        let h = bob
            .expect("history", |e| {
                is_groupchat_from(&room)(e) && e.has_child("delay", ns::DELAY)
            })
            .await
            .unwrap();
        history.push(h.child_text("body", ns::CLIENT).unwrap_or_default());
    }
    assert_eq!(history, ["before", "while dc2 is gone"]);
    va.until(&mut alice, &["alice", "bob"], CONVERGE).await;
    bob.send(&groupchat(&room, "back")).await.unwrap();
    let back = alice
        .expect_within(CONVERGE, "bob's message", |e| {
            is_groupchat_from(&room)(e)
                && e.child_text("body", ns::CLIENT).as_deref() == Some("back")
        })
        .await
        .unwrap();
    assert!(
        mam::stanza_id(&back, &room).is_some_and(|id| id.ends_with("-dc2")),
        "{back}"
    );
    let page = mam::run_at(&mut alice, Some(&room), mam::query("q", &[], &[]))
        .await
        .unwrap();
    assert_eq!(page.bodies(), ["before", "while dc2 is gone", "back"]);
    m.stop().await.unwrap();
}

#[tokio::test]
async fn muc_a_returning_home_serves_its_rooms_only_once_it_has_caught_up() {
    use meerkat_testkit::client::pred::presence_of_type;
    use meerkat_testkit::client::stanza_error_condition;
    use meerkat_testkit::muc::{config, join_presence, presence_with};

    let mut m = multi(2).await;
    let (a, b) = crate::accounts_apart(m.dc(1), m.dc(2)).await;
    let mut alice = available(m.dc(1), &a, "phone").await;
    let mut bob = available(m.dc(2), &b, "car").await;
    m.wait_directory_sessions(2, CONVERGE).await.unwrap();
    crate::befriend(&mut alice, &mut bob).await;
    // A persistent room homed at DC 2, which Alice creates and leaves: nobody is in it.
    let room = room_homed_at("dc2");
    create(&mut alice, &room, "alice").await.unwrap();
    alice
        .iq_ok(
            "set",
            Some(&room),
            config(&[("muc#roomconfig_persistentroom", "1")]),
        )
        .await
        .unwrap();
    let own = format!("{room}/alice");
    alice
        .send(
            &Element::new("presence", ns::CLIENT)
                .with_attr("to", own.clone())
                .with_attr("type", "unavailable"),
        )
        .await
        .unwrap();
    alice
        .expect("own leave", presence_with(&own, 110))
        .await
        .unwrap();

    // The home dies (Alice sees Bob go); DC 1 serves the room meanwhile, and there Alice, its
    // owner, makes it members-only.
    let bob_full = bob.jid().to_owned();
    m.kill_dc(2);
    drop(bob);
    alice
        .expect_within(
            TOLD,
            "bob gone",
            presence_of_type(&bob_full, Some("unavailable")),
        )
        .await
        .unwrap();
    alice
        .iq_ok(
            "set",
            Some(&room),
            config(&[("muc#roomconfig_membersonly", "1")]),
        )
        .await
        .unwrap();

    // DC 2 returns, its replication held back a moment: the room is its again, and its copy
    // of it is open to all. Bob, no member, asks to join there; the answer waits for DC 2 to
    // catch up.
    m.links.heal();
    m.dc_mut(2).revive_without_replicator().await.unwrap();
    let mut bob = available(m.dc(2), &b, "car").await;
    let occupant = format!("{room}/bob");
    bob.send(&join_presence(&occupant, None, &[]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    m.dc_mut(2).start_replicator().await.unwrap();
    // Served from the caught-up copy: members-only, so Bob is refused (XEP-0045 §7.2.7).
    let answer = bob
        .expect_within(SETTLED, "the room's answer", |e| {
            e.is("presence", ns::CLIENT) && e.attr("from") == Some(occupant.as_str())
        })
        .await
        .unwrap();
    assert_eq!(answer.attr("type"), Some("error"), "{answer}");
    assert_eq!(
        stanza_error_condition(&answer).as_deref(),
        Some("registration-required"),
        "{answer}"
    );
    m.stop().await.unwrap();
}
