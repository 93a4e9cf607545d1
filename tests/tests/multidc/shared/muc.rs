//! Multi-user chat across DCs (issue 19): Alice at DC 1 and Bob at DC 2 in one room, whose
//! home is DC 2 (so Alice's stanzas travel to it and its reflections back): both see every
//! message in one order with the same stanza ids; a nick taken at DC 1 conflicts at DC 2;
//! the room's archive and its occupants are the same in both DCs' databases.

use std::time::Duration;

use meerkat_store::ArchiveQuery;
use meerkat_testkit::client::stanza_error_condition;
use meerkat_testkit::mam;
use meerkat_testkit::muc::{create, error_from, groupchat, is_groupchat_from, join};
use meerkat_xmpp::{ns, Element};

use crate::{eventually, login, register_everywhere, room_homed_at, shared, store, user, CONVERGE};

#[tokio::test]
async fn users_at_two_dcs_share_one_room_in_one_order() {
    let m = shared().await;
    let (a, b) = (user("alice"), user("bob"));
    register_everywhere(m, &a).await;
    register_everywhere(m, &b).await;
    let mut alice = login(m.dc(1), &a, "phone").await;
    let mut bob = login(m.dc(2), &b, "desk").await;
    m.wait_directory_holds(&[alice.jid(), bob.jid()], CONVERGE)
        .await
        .unwrap();
    let room = room_homed_at("dc2");

    create(&mut alice, &room, "alice").await.unwrap();
    join(&mut bob, &room, "bob").await.unwrap();
    // Alice's nick, taken at DC 1, is refused at DC 2.
    let mut bob2 = login(m.dc(2), &b, "laptop").await;
    m.wait_directory_holds(&[bob2.jid()], CONVERGE)
        .await
        .unwrap();
    let taken = format!("{room}/alice");
    bob2.send(&meerkat_testkit::muc::join_presence(&taken, None, &[]))
        .await
        .unwrap();
    let e = bob2.expect("conflict", error_from(&taken)).await.unwrap();
    assert_eq!(stanza_error_condition(&e).as_deref(), Some("conflict"));

    // Both speak, interleaved; both see the same order with the same ids.
    for i in 0..5 {
        alice
            .send(&groupchat(&room, &format!("a{i}")))
            .await
            .unwrap();
        bob.send(&groupchat(&room, &format!("b{i}"))).await.unwrap();
    }
    let mut seen = Vec::new();
    for c in [&mut alice, &mut bob] {
        let mut got = Vec::new();
        for _ in 0..10 {
            let msg = c
                .expect("a message", is_groupchat_from(&room))
                .await
                .unwrap();
            got.push((
                msg.child_text("body", ns::CLIENT).unwrap_or_default(),
                mam::stanza_id(&msg, &room).expect("stanza id"),
            ));
        }
        seen.push(got);
    }
    assert_eq!(seen[0], seen[1], "one order at both DCs");
    // Each sender's own order holds.
    let bodies: Vec<&str> = seen[0].iter().map(|(b, _)| b.as_str()).collect();
    let of = |p: char| {
        bodies
            .iter()
            .filter(|b| b.starts_with(p))
            .copied()
            .collect::<Vec<_>>()
    };
    assert_eq!(of('a'), ["a0", "a1", "a2", "a3", "a4"]);
    assert_eq!(of('b'), ["b0", "b1", "b2", "b3", "b4"]);

    // MAM on the room, asked at DC 1: the same ids in the same order.
    let page = mam::run_at(&mut alice, Some(&room), mam::query("q", &[], &[]))
        .await
        .unwrap();
    let ids: Vec<String> = seen[0].iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(page.ids(), ids);

    // Both DCs' databases hold the same archive and the same occupants.
    let (s1, s2) = (store(m.dc(1)).await, store(m.dc(2)).await);
    eventually("the room converged at both DCs", CONVERGE, || async {
        let q = ArchiveQuery::all(&room, 100);
        let a1 = s1.archive_query(&q).await.unwrap().unwrap();
        let a2 = s2.archive_query(&q).await.unwrap().unwrap();
        let o1 = s1.muc_occupants(&room).await.unwrap();
        let o2 = s2.muc_occupants(&room).await.unwrap();
        a1 == a2 && a1.items.len() == 10 && o1 == o2 && o1.len() == 2
    })
    .await;

    // Self-ping at DC 1 for a room homed at DC 2.
    alice
        .iq_ok(
            "get",
            Some(&format!("{room}/alice")),
            Element::new("ping", ns::PING),
        )
        .await
        .unwrap();
}

/// The same with a stock client library: slixmpp's MUC, MAM and stanza-id plugins
/// (tests/interop/slixmpp_muc.py) in a room homed at DC 2, created at DC 1: one order and the
/// same ids for occupants at both DCs, a nick change (303), a kick (307), the room's archive
/// read at both DCs, and join history at DC 2.
#[tokio::test]
async fn slixmpp_muc_across_dcs() {
    let m = shared().await;
    let (a, b, c, d) = (user("sma"), user("smb"), user("smc"), user("smd"));
    for u in [&a, &b, &c, &d] {
        register_everywhere(m, u).await;
    }
    let room = room_homed_at("dc2");
    let (dc1, dc2) = (m.dc(1), m.dc(2));
    let path = format!("{}/interop/slixmpp_muc.py", env!("CARGO_MANIFEST_DIR"));
    let out = tokio::process::Command::new("python3")
        .arg(&path)
        .arg(dc1.c2s.ip().to_string())
        .arg(dc1.c2s.port().to_string())
        .arg(dc2.c2s.ip().to_string())
        .arg(dc2.c2s.port().to_string())
        .arg(&dc1.domain)
        .arg(&room)
        .args([&a, &b, &c, &d])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), out)
        .await
        .expect("slixmpp_muc.py finished within 3 minutes")
        .expect("python3 runs (cargo xtask test installs slixmpp)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("slixmpp_muc.py:\n{stdout}");
    assert!(
        out.status.success() && stdout.contains("all steps passed"),
        "slixmpp_muc.py failed\nstdout:\n{stdout}\nstderr:\n{}",
        &stderr[stderr.len().saturating_sub(4000)..]
    );
}
