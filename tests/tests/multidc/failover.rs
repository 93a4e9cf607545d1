//! A DC dies, stops or is cut off: its users' contacts are told within the detection bound,
//! what is sent to its users meanwhile waits (offline storage, or the user's new session),
//! its users resume at another DC, and when it returns or the partition heals the directories
//! converge without resurrecting anything.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use meerkat_testkit::client::pred::presence_of_type;
use meerkat_testkit::client::Client;
use meerkat_testkit::multi::MultiDc;
use meerkat_xmpp::{ns, Element};

use crate::{available, befriend, multi, register, room_homed_at, user, CONVERGE};

/// Detection bound (the tests' fast timers: 2.5 s; production's: 5 s) plus the time for the
/// purge to reach a client, with room for a loaded machine. A deadline: the test goes on as
/// soon as the client is told.
const TOLD: Duration = Duration::from_secs(20);

/// Longer than a stanza may wait in the federation queue towards a dead DC (the fast timers:
/// 5 s; production's: 10 s) plus the detection bound: by then everything sent to the dead
/// DC's users has been routed again. A deadline too.
const SETTLED: Duration = Duration::from_secs(40);

/// How many times each body arrived at `c`, until `want` are all there (or `within` passes),
/// then for `quiet` more (a duplicate would show up meanwhile).
async fn collect(
    c: &mut Client,
    want: &[String],
    within: Duration,
    quiet: Duration,
) -> BTreeMap<String, usize> {
    let mut got: BTreeMap<String, usize> = BTreeMap::new();
    let until = Instant::now() + within;
    loop {
        let complete = want.iter().all(|w| got.contains_key(w));
        let left = if complete {
            quiet
        } else {
            until.saturating_duration_since(Instant::now())
        };
        if left.is_zero() {
            return got;
        }
        match c
            .expect_within(left, "a message", |e| e.is("message", ns::CLIENT))
            .await
        {
            Ok(m) => {
                if let Some(body) = m.child_text("body", ns::CLIENT) {
                    *got.entry(body).or_default() += 1;
                }
            }
            Err(_) => return got,
        }
    }
}

/// `from` writes `body` to `to`'s bare JID; `to` gets it once (within [`CONVERGE`]).
async fn delivered_once(from: &mut Client, to: &mut Client, body: &str) {
    from.send_message(to.bare_jid(), body).await.unwrap();
    let got = collect(to, &[body.to_owned()], CONVERGE, Duration::ZERO).await;
    assert_eq!(got.get(body), Some(&1), "{body}: {got:?}");
}

/// Alice at DC 1 (resource `phone`) and Bob at DC 2 (resource `bob_resource`), each
/// account known at both DCs, both sessions in every directory, subscribed to each other.
async fn friends(m: &MultiDc, bob_resource: &str) -> (Client, Client) {
    let (a, b) = crate::accounts_apart(m.dc(1), m.dc(2)).await;
    let mut alice = available(m.dc(1), &a, "phone").await;
    let mut bob = available(m.dc(2), &b, bob_resource).await;
    m.wait_directory_sessions(2, CONVERGE).await.unwrap();
    befriend(&mut alice, &mut bob).await;
    (alice, bob)
}

/// The account name of `c`'s user.
fn local_part(c: &Client) -> String {
    c.bare_jid()
        .split('@')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Cuts the links between DC 1 and DC 2; each side declares the other down and tells its
/// own user (Alice at DC 1, Bob at DC 2) that the other is gone.
async fn cut_and_told(m: &MultiDc, alice: &mut Client, bob: &mut Client) {
    let (aj, bj) = (alice.jid().to_owned(), bob.jid().to_owned());
    m.links.cut(1, 2);
    alice
        .expect_within(
            TOLD,
            "bob unavailable",
            presence_of_type(&bj, Some("unavailable")),
        )
        .await
        .unwrap();
    bob.expect_within(
        TOLD,
        "alice unavailable",
        presence_of_type(&aj, Some("unavailable")),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_dead_dcs_users_resume_elsewhere_and_nothing_sent_to_them_is_lost() {
    let mut m = multi(2).await;
    let (mut alice, mut bob) = friends(&m, "car").await;
    let b = local_part(&bob);
    let (bob_bare, bob_full) = (bob.bare_jid().to_owned(), bob.jid().to_owned());

    // Traffic before: delivered at DC 2.
    let before: Vec<String> = (0..5).map(|i| format!("before-{i}")).collect();
    for body in &before {
        alice.send_message(&bob_bare, body).await.unwrap();
    }
    let got = collect(&mut bob, &before, CONVERGE, Duration::ZERO).await;
    assert!(
        before.iter().all(|b| got.contains_key(b)),
        "before: {got:?}"
    );

    // DC 2 loses power; Alice keeps writing to Bob throughout the detection time (24
    // messages spread over the detection bound and half a second more).
    let pace = (m.dc(1).options.timers.detection_bound() + Duration::from_millis(500)) / 24;
    let killed = Instant::now();
    m.kill_dc(2);
    let after: Vec<String> = (0..24).map(|i| format!("after-{i}")).collect();
    for body in &after {
        alice.send_message(&bob_bare, body).await.unwrap();
        tokio::time::sleep(pace).await;
    }
    alice
        .expect_within(
            TOLD.saturating_sub(killed.elapsed()),
            "bob unavailable",
            presence_of_type(&bob_full, Some("unavailable")),
        )
        .await
        .unwrap();
    println!(
        "alice told bob is gone {:?} after the kill",
        killed.elapsed()
    );

    // Bob's device reconnects to DC 1 and gets every one of them, once; Alice sees him back.
    let mut bob = available(m.dc(1), &b, "car").await;
    alice
        .expect("bob back", presence_of_type(&bob_full, None))
        .await
        .unwrap();
    let got = collect(&mut bob, &after, SETTLED, Duration::from_secs(2)).await;
    let missing: Vec<&String> = after.iter().filter(|w| !got.contains_key(*w)).collect();
    assert!(missing.is_empty(), "lost: {missing:?} (got {got:?})");
    let twice: Vec<(&String, &usize)> = got.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    // Those sent before DC 1 knew came back from the federation queue towards DC 2.
    let returned = crate::metric(m.dc(1).routers[0].admin, "meerkat_router_returned_total").await;
    assert!(
        returned > 0.0,
        "no stanza came back from the queue towards DC 2"
    );

    // DC 2 returns (new life): nothing of its previous life comes back, and it serves again.
    m.links.heal();
    m.dc_mut(2).revive().await.unwrap();
    m.wait_directory_sessions(2, CONVERGE).await.unwrap();
    let c = user("carol");
    register(m.dc(2), &c).await;
    let mut carol = available(m.dc(2), &c, "tablet").await;
    m.wait_directory_sessions(3, CONVERGE).await.unwrap();
    delivered_once(&mut carol, &mut alice, "from the returned DC").await;
    // At most a message that DC 2's gateway had written to Bob's old connection but not yet
    // acknowledged when it died comes again (at-least-once); nothing sent after the kill does.
    let late = collect(&mut bob, &[], Duration::ZERO, Duration::from_secs(2)).await;
    assert!(
        late.keys().all(|body| before.contains(body)),
        "bob got again after DC 2 returned: {late:?}"
    );
    m.stop().await.unwrap();
}

#[tokio::test]
async fn a_partition_heals_into_one_session_per_full_jid() {
    let m = multi(2).await;
    let (mut alice, mut bob) = friends(&m, "desk").await;
    let b = local_part(&bob);
    let bj = bob.jid().to_owned();

    // Cut: each side declares the other down and tells its own users.
    cut_and_told(&m, &mut alice, &mut bob).await;

    // Both sides keep serving: Bob's desk reconnects on DC 1's side (its old connection to DC 2
    // still open) and chats with Alice.
    let mut bob1 = available(m.dc(1), &b, "desk").await;
    alice
        .expect("bob at DC 1", presence_of_type(&bj, None))
        .await
        .unwrap();
    delivered_once(&mut alice, &mut bob1, "during the partition").await;

    // Heal: the directories converge; the full JID online on both sides ends up in one session,
    // the later one; the other gets a conflict.
    m.links.heal();
    let end = bob.expect_stream_end_within(SETTLED).await.unwrap();
    assert_eq!(end.as_deref(), Some("conflict"));
    m.wait_directory_sessions(2, SETTLED).await.unwrap();
    // Bob (at DC 1) sees Alice again, and still gets her messages.
    delivered_once(&mut alice, &mut bob1, "after the heal").await;
    m.stop().await.unwrap();
}

#[tokio::test]
async fn a_dc_stopped_gracefully_says_goodbye_and_comes_back_under_a_new_epoch() {
    let mut m = multi(2).await;
    let (mut alice, mut bob) = friends(&m, "desk").await;
    let b = local_part(&bob);
    let bob_full = bob.jid().to_owned();

    // A graceful stop: Bob is told, and so is Alice at once (not after a detection time).
    m.dc_mut(2).shutdown().await.unwrap();
    assert_eq!(
        bob.expect_stream_end().await.unwrap().as_deref(),
        Some("system-shutdown")
    );
    alice
        .expect(
            "bob unavailable",
            presence_of_type(&bob_full, Some("unavailable")),
        )
        .await
        .unwrap();
    crate::eventually("DC 1's directory without bob", CONVERGE, || async {
        crate::metric(
            m.dc(1).routers[0].admin,
            "meerkat_router_directory_sessions",
        )
        .await
            == 1.0
    })
    .await;

    // Back under a new epoch: Bob logs in there again, Alice sees him, they chat.
    m.dc_mut(2).revive().await.unwrap();
    // `revive` returns once DC 2 is ready, its replicator holding DC 1's snapshot; the wait
    // below checks that its routers' directories hold Alice's session too before Bob's
    // presence goes out (a broadcast before that would miss her).
    let mut bob = crate::login(m.dc(2), &b, "desk").await;
    m.wait_directory_sessions(2, CONVERGE).await.unwrap();
    bob.iq_ok("get", None, Element::new("query", ns::ROSTER))
        .await
        .unwrap();
    bob.send_presence().await.unwrap();
    alice
        .expect_within(CONVERGE, "bob back", presence_of_type(&bob_full, None))
        .await
        .unwrap();
    delivered_once(&mut alice, &mut bob, "welcome back").await;
    delivered_once(&mut bob, &mut alice, "thanks").await;
    m.stop().await.unwrap();
}

#[tokio::test]
async fn messages_sent_across_a_partition_arrive_when_it_heals() {
    let m = multi(2).await;
    let (mut alice, mut bob) = friends(&m, "desk").await;
    let aj = alice.jid().to_owned();

    cut_and_told(&m, &mut alice, &mut bob).await;
    // Each side believes the other offline: what they write is stored on their own side.
    let to_bob: Vec<String> = (0..3).map(|i| format!("to bob while apart {i}")).collect();
    for body in &to_bob {
        alice.send_message(bob.bare_jid(), body).await.unwrap();
    }
    let to_alice = vec!["to alice while apart".to_owned()];
    bob.send_message(alice.bare_jid(), &to_alice[0])
        .await
        .unwrap();

    // The heal: both see each other again and get what was written, without logging in again.
    m.links.heal();
    bob.expect_within(SETTLED, "alice back", presence_of_type(&aj, None))
        .await
        .unwrap();
    let got = collect(&mut bob, &to_bob, SETTLED, Duration::from_secs(1)).await;
    assert!(
        to_bob.iter().all(|w| got.get(w) == Some(&1)),
        "bob got {got:?}"
    );
    let got = collect(&mut alice, &to_alice, SETTLED, Duration::from_secs(1)).await;
    assert_eq!(got.get(&to_alice[0]), Some(&1), "alice got {got:?}");
    m.stop().await.unwrap();
}

#[tokio::test]
async fn a_rooms_home_dies_and_the_room_goes_on_at_the_other_dc() {
    use meerkat_testkit::mam;
    use meerkat_testkit::muc::{codes, create, groupchat, is_groupchat_from, join};

    let mut m = multi(2).await;
    let (a, b) = crate::accounts_apart(m.dc(1), m.dc(2)).await;
    let mut alice = available(m.dc(1), &a, "phone").await;
    let mut bob = available(m.dc(2), &b, "car").await;
    m.wait_directory_sessions(2, CONVERGE).await.unwrap();
    let room = room_homed_at("dc2");
    create(&mut alice, &room, "alice").await.unwrap();
    join(&mut bob, &room, "bob").await.unwrap();
    alice.send(&groupchat(&room, "before")).await.unwrap();
    alice
        .expect("reflection", is_groupchat_from(&room))
        .await
        .unwrap();
    bob.expect("message", is_groupchat_from(&room))
        .await
        .unwrap();
    // DC 1 has the room's state and archive (replicated from its home, DC 2).
    let s1 = crate::store(m.dc(1)).await;
    crate::eventually("the archive reached DC 1", CONVERGE, || async {
        let q = meerkat_store::ArchiveQuery::all(&room, 10);
        s1.archive_query(&q).await.unwrap().unwrap().items.len() == 1
    })
    .await;

    // A room where only Bob, at the home, is an occupant: DC 1 takes no reflection of it.
    let quiet = room_homed_at("dc2");
    create(&mut bob, &quiet, "bob").await.unwrap();

    // The home's replication stops: what it archives from now on never ships. Each DC keeps
    // the archived row from the room's message it takes instead (muc/kept.rs): DC 1 from
    // Alice's reflection, and from an archive copy for the room it has no occupant of.
    m.dc_mut(2).stop_replicator().await.unwrap();
    alice.send(&groupchat(&room, "unshipped")).await.unwrap();
    let unshipped = alice
        .expect(
            "reflection of the unshipped message",
            is_groupchat_from(&room),
        )
        .await
        .unwrap();
    bob.expect("the unshipped message", is_groupchat_from(&room))
        .await
        .unwrap();
    bob.send(&groupchat(&quiet, "lonely")).await.unwrap();
    bob.expect("reflection in the quiet room", is_groupchat_from(&quiet))
        .await
        .unwrap();
    let bodies_at_dc1 = |room: String| {
        let s1 = &s1;
        async move {
            let q = meerkat_store::ArchiveQuery::all(&room, 10);
            let page = s1
                .archive_query(&q)
                .await
                .unwrap()
                .unwrap_or(meerkat_store::ArchivePage {
                    items: Vec::new(),
                    complete: true,
                });
            page.items
                .iter()
                .map(|a| {
                    Element::parse(&a.stanza)
                        .ok()
                        .and_then(|e| e.child_text("body", ns::CLIENT))
                        .unwrap_or_default()
                })
                .collect::<Vec<_>>()
        }
    };
    crate::eventually("DC 1 kept the quiet room's message", CONVERGE, || async {
        bodies_at_dc1(quiet.clone()).await == ["lonely"]
    })
    .await;
    assert_eq!(bodies_at_dc1(room.clone()).await, ["before", "unshipped"]);

    // The home dies: Alice sees Bob (at the dead DC) leave with 333; the room goes on at DC 1.
    m.kill_dc(2);
    let bob_occ = format!("{room}/bob");
    let left = alice
        .expect_within(TOLD, "bob removed", |e| {
            e.attr("from") == Some(bob_occ.as_str()) && e.attr("type") == Some("unavailable")
        })
        .await
        .unwrap();
    assert!(codes(&left).contains(&333), "{left}");
    alice.send(&groupchat(&room, "after")).await.unwrap();
    let after = alice
        .expect_within(SETTLED, "reflection from the new home", |e| {
            is_groupchat_from(&room)(e)
                && e.child_text("body", ns::CLIENT).as_deref() == Some("after")
        })
        .await
        .unwrap();
    assert!(mam::stanza_id(&after, &room).is_some_and(|id| id.ends_with("-dc1")));
    // The archive keeps what was reflected before, what the home never shipped included, under
    // the id Alice saw, and goes on after it.
    let page = mam::run_at(&mut alice, Some(&room), mam::query("q", &[], &[]))
        .await
        .unwrap();
    assert_eq!(page.bodies(), ["before", "unshipped", "after"]);
    assert_eq!(
        Some(page.ids()[1].clone()),
        mam::stanza_id(&unshipped, &room)
    );
}
