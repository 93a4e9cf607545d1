//! The message archive at every DC (XEP-0313): a conversation held at one DC is found, with
//! the same ids in the same order, by a query at the other; an account deleted at one DC
//! takes its archive with it at both.

use meerkat_testkit::client::Client;
use meerkat_testkit::mam::{query, run, stanza_id};
use meerkat_xmpp::{ns, Element};

use crate::{available, eventually, metric, register_everywhere, shared, store, user, CONVERGE};

#[tokio::test]
async fn a_conversation_at_dc1_is_in_the_archive_at_dc2_with_the_same_ids_in_order() {
    let m = shared().await;
    let (a, b) = (user("alice"), user("bob"));
    register_everywhere(m, &a).await;
    register_everywhere(m, &b).await;
    let mut alice = available(m.dc(1), &a, "phone").await;
    let mut bob = available(m.dc(1), &b, "desk").await;
    let bj = format!("{b}@example.com");
    let dc1_shipped = || async { shipped(m.dc(1).replicators[0]).await };
    let (changes_before, messages_before) = dc1_shipped().await;
    let mut seen = Vec::new();
    for i in 0..6 {
        let body = format!("m{i}");
        if i % 2 == 0 {
            alice.send_message(&bj, &body).await.unwrap();
        } else {
            bob.send_message(&format!("{a}@example.com"), &body)
                .await
                .unwrap();
        }
        let rx = if i % 2 == 0 { &mut bob } else { &mut alice };
        let got = rx
            .expect(&body, |e| {
                e.child_text("body", ns::CLIENT).as_deref() == Some(body.as_str())
            })
            .await
            .unwrap();
        if i % 2 == 0 {
            seen.push(stanza_id(&got, &bj).expect("stanza-id"));
        }
    }
    let at_dc1 = run(&mut bob, query("q", &[], &[])).await.unwrap();
    assert_eq!(at_dc1.bodies(), ["m0", "m1", "m2", "m3", "m4", "m5"]);

    // At DC 2 once replication brought it: the same messages, ids and order.
    let dc2 = store(m.dc(2)).await;
    let last = at_dc1.ids()[5].clone();
    eventually("DC 2 holds Bob's archive", CONVERGE, || async {
        let q = meerkat_store::ArchiveQuery {
            ids: vec![last.clone()],
            ..meerkat_store::ArchiveQuery::all(&b, 1)
        };
        dc2.archive_query(&q)
            .await
            .unwrap()
            .is_some_and(|p| p.items.len() == 1)
    })
    .await;
    // Each message's two archive rows (one per owner) were written together, and crossed to
    // DC 2 in one message: DC 1 shipped fewer messages than changes (wire 1.7, batches).
    let (changes, messages) = dc1_shipped().await;
    let (changes, messages) = (changes - changes_before, messages - messages_before);
    assert!(
        changes >= 12.0,
        "{changes} changes shipped for 12 archive rows"
    );
    assert!(
        messages < changes,
        "{messages} messages for {changes} changes: not batched"
    );
    let mut bob2 = available(m.dc(2), &b, "tablet").await;
    let at_dc2 = run(&mut bob2, query("q", &[], &[])).await.unwrap();
    assert_eq!(at_dc2.bodies(), at_dc1.bodies());
    assert_eq!(at_dc2.ids(), at_dc1.ids());
    let bob_ids: Vec<String> = at_dc2.ids().into_iter().step_by(2).collect();
    assert_eq!(bob_ids, seen);
    // Paged backward at DC 2 too.
    let last_two = run(&mut bob2, query("l", &[], &[("max", "2"), ("before", "")]))
        .await
        .unwrap();
    assert_eq!(last_two.bodies(), ["m4", "m5"]);

    // Alice deletes her account at DC 2 (XEP-0077 §3.2): her archive goes at both DCs.
    let mut alice2 = available(m.dc(2), &a, "tablet").await;
    let before = run(&mut alice2, query("q", &[], &[])).await.unwrap();
    assert_eq!(before.items.len(), 6);
    let _ = alice2
        .iq(
            "set",
            None,
            Element::new("query", ns::REGISTER).with_child(Element::new("remove", ns::REGISTER)),
        )
        .await;
    drop(alice);
    let dc1 = store(m.dc(1)).await;
    for (s, dc) in [(&dc1, 1), (&dc2, 2)] {
        eventually(
            &format!("Alice's archive gone at DC {dc}"),
            CONVERGE,
            || async {
                let q = meerkat_store::ArchiveQuery {
                    owner: a.clone(),
                    with: None,
                    start_ms: None,
                    end_ms: None,
                    after_id: None,
                    before_id: None,
                    ids: Vec::new(),
                    page: meerkat_store::Page::First,
                    max: 10,
                };
                s.archive_query(&q)
                    .await
                    .unwrap()
                    .is_some_and(|p| p.items.is_empty())
            },
        )
        .await;
    }
    // Bob keeps his.
    let still = run(&mut bob2, query("s", &[], &[])).await.unwrap();
    assert_eq!(still.items.len(), 6);
    let _ = Client::close(bob2).await;
}

/// A replicator's outbox entries shipped, and the messages they went in.
async fn shipped(replicator: std::net::SocketAddr) -> (f64, f64) {
    (
        metric(replicator, "meerkat_replicator_data_shipped_total").await,
        metric(replicator, "meerkat_replicator_data_messages_shipped_total").await,
    )
}

/// The acceptance check with a stock client library: slixmpp's XEP-0313 plugin, chatting at
/// DC 1 and reading the archive, paged, at DC 2 (tests/interop/slixmpp_mam.py).
#[tokio::test]
async fn slixmpp_reads_at_dc2_the_archive_of_a_chat_at_dc1() {
    let m = shared().await;
    let (dc1, dc2) = (m.dc(1).client().addr, m.dc(2).client().addr);
    let path = format!("{}/interop/slixmpp_mam.py", env!("CARGO_MANIFEST_DIR"));
    let out = tokio::process::Command::new("python3")
        .arg(&path)
        .arg(dc1.ip().to_string())
        .arg(dc1.port().to_string())
        .arg(dc2.port().to_string())
        .arg(&m.dc(1).domain)
        .arg(user("sx"))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), out)
        .await
        .expect("slixmpp finished within 2 minutes")
        .expect("python3 runs (cargo xtask test installs slixmpp)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("slixmpp_mam.py:\n{stdout}");
    assert!(
        out.status.success() && stdout.contains("all steps passed"),
        "slixmpp_mam.py failed\nstdout:\n{stdout}\nstderr:\n{}",
        &stderr[stderr.len().saturating_sub(4000)..]
    );
}
