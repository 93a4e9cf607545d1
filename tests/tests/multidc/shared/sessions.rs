//! One account moving between DCs: the same full JID at another DC replaces the old session;
//! reconnecting at another DC in the middle of a message stream loses and repeats nothing.

use std::collections::HashSet;
use std::time::Duration;

use meerkat_testkit::client::Client;
use meerkat_xmpp::Element;

use crate::{available, bodies_until_quiet, online, register_everywhere, shared, user, CONVERGE};

#[tokio::test]
async fn same_full_jid_at_another_dc_gets_the_old_session_a_conflict() {
    let m = shared().await;
    let eve = user("e");
    register_everywhere(m, &eve).await;
    let mut first = available(m.dc(1), &eve, "same").await;
    let jid = first.jid().to_owned();
    m.wait_directory_holds(&[&jid], CONVERGE).await.unwrap();
    let mut second = available(m.dc(2), &eve, "same").await;
    assert_eq!(
        first.expect_stream_end().await.unwrap().as_deref(),
        Some("conflict")
    );
    // The winner stays and every DC agrees there is one session of that full JID.
    m.wait_directory_holds(&[&jid], CONVERGE).await.unwrap();
    second
        .iq_ok("get", None, Element::new("ping", meerkat_xmpp::ns::PING))
        .await
        .unwrap();
}

/// Ends `c`'s stream and returns the bodies of the messages the server still wrote until it
/// ended its own. The server must end it (RFC 6120 §4.4); on a loaded machine that may take
/// seconds, and what it writes until then is the client's: reading only until a quiet spell
/// would leave those unread, as if lost.
async fn leave(c: &mut Client) -> Vec<String> {
    c.send_raw("</stream:stream>").await.unwrap();
    c.expect_stream_end_within(Duration::from_secs(30))
        .await
        .expect("the server ends its stream");
    let mut bodies = Vec::new();
    while let Ok(el) = c.next(Duration::ZERO).await {
        if el.is("message", meerkat_xmpp::ns::CLIENT) {
            bodies.extend(el.child_text("body", meerkat_xmpp::ns::CLIENT));
        }
    }
    bodies
}

/// Where the messages in `missing` (bodies) are to be found for `user`: in each DC's archive
/// (the router handled it) and offline storage (stored, not delivered). What a failure shows.
async fn whereabouts(
    m: &meerkat_testkit::shared::SharedDcs,
    user: &str,
    missing: &[&String],
) -> String {
    let has = |stanza: &str| -> Vec<String> {
        missing
            .iter()
            .filter(|b| stanza.contains(&format!(">{b}<")))
            .map(|b| b.to_string())
            .collect()
    };
    let mut report = String::new();
    for k in 1..=2 {
        let store = crate::store(m.dc(k)).await;
        let archive = meerkat_store::ArchiveQuery::all(user, 1000);
        let archived = match store.archive_query(&archive).await {
            Ok(Some(page)) => format!(
                "{:?}",
                page.items
                    .iter()
                    .flat_map(|a| has(&a.stanza))
                    .collect::<Vec<_>>()
            ),
            other => format!("{other:?}"),
        };
        let offline = match store.offline_messages(user).await {
            Ok(stored) => format!(
                "{:?}",
                stored
                    .iter()
                    .flat_map(|o| has(&o.stanza))
                    .collect::<Vec<_>>()
            ),
            Err(e) => e.to_string(),
        };
        report.push_str(&format!(
            "\n  dc{k}: archived {archived}; in offline storage {offline}"
        ));
    }
    // The shared DCs' log (`cargo xtask test` names it): what it says of the account, and
    // every warning.
    if let Some(log) = std::env::var_os("MEERKAT_TEST_SHARED_LOG") {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.contains(" WARN ")
                    || l.contains(" ERROR ")
                    || (l.contains(user) && !l.contains(" DEBUG "))
                    || missing.iter().any(|b| l.contains(&format!("\"{b}\"")))
            })
            .collect();
        report.push_str(&format!("\n  the shared DCs' log ({} lines):", lines.len()));
        for l in lines.iter().rev().take(60).rev() {
            report.push_str("\n    ");
            report.push_str(l);
        }
    }
    report
}

#[tokio::test]
async fn reconnecting_at_another_dc_mid_stream_gets_every_message_once() {
    let m = shared().await;
    let bob = user("b");
    register_everywhere(m, &bob).await;
    let mut alice = online(m.dc(1), &user("a"), "phone").await;
    let mut at1 = available(m.dc(1), &bob, "r1").await;
    m.wait_directory_holds(&[alice.jid(), at1.jid()], CONVERGE)
        .await
        .unwrap();
    let bare = at1.bare_jid().to_owned();

    const N: usize = 200;
    let sender = tokio::spawn(async move {
        for n in 0..N {
            // The stanza id is the body: the services' debug log names it.
            let body = format!("m{n}");
            let m = meerkat_testkit::client::chat(&bare, &body).with_attr("id", body);
            alice.send(&m).await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        alice
    });
    // Leave after the first 50, mid-stream; what the server still writes before it closes the
    // stream counts as received.
    let mut got = Vec::new();
    for _ in 0..50 {
        let el = at1
            .expect("a message", |e| e.is("message", meerkat_xmpp::ns::CLIENT))
            .await
            .unwrap();
        got.extend(el.child_text("body", meerkat_xmpp::ns::CLIENT));
    }
    got.extend(leave(&mut at1).await);
    let mut at2 = available(m.dc(2), &bob, "r2").await;
    let _alice = sender.await.unwrap();
    got.extend(bodies_until_quiet(&mut at2, Duration::from_secs(3)).await);
    // Leaving, each session reads to the end of its stream: what the server still writes
    // until then was received (`close` would read and drop it).
    got.extend(leave(&mut at2).await);
    // What arrived while Bob was offline waits in the offline storage of the DC that routed
    // it (alice's), until persistent data is replicated: fetch it there.
    // Stanzas still in flight to r2 when it closed were stored at dc2: fetch there too.
    let mut again: Client = available(m.dc(1), &bob, "r3").await;
    got.extend(bodies_until_quiet(&mut again, Duration::from_secs(3)).await);
    got.extend(leave(&mut again).await);
    // What the sessions that left sent back may still be on its way between the DCs (stored
    // at one, replicated to the other, handed to the session there by a nudge): the last
    // session waits for every message, however long a loaded machine takes, and a little more
    // for duplicates. A lost message never comes.
    let mut again2: Client = available(m.dc(2), &bob, "r4").await;
    let want: HashSet<String> = (0..N).map(|n| format!("m{n}")).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let have: HashSet<&String> = got.iter().collect();
        if have.len() == want.len() || tokio::time::Instant::now() > deadline {
            break;
        }
        got.extend(bodies_until_quiet(&mut again2, Duration::from_secs(1)).await);
    }
    got.extend(bodies_until_quiet(&mut again2, Duration::from_secs(1)).await);

    let unique: HashSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), got.len(), "duplicates in {got:?}");
    let have: HashSet<String> = got.iter().cloned().collect();
    let mut missing: Vec<&String> = want.difference(&have).collect();
    missing.sort_by_key(|b| b[1..].parse::<u32>().unwrap_or(0));
    if !missing.is_empty() {
        panic!(
            "missing: {missing:?}; where they are:{}",
            whereabouts(m, &bob, &missing).await
        );
    }
}

/// As above, inline in SASL2 (XEP-0388, XEP-0198 §7.2): Bob's session at DC 1 resumes in the
/// `<authenticate/>` he sends DC 2, `<resumed/>` comes inside `<success/>` naming his full JID,
/// then what he had not acknowledged and what came meanwhile, in order, each once.
#[tokio::test]
async fn a_session_resumes_inline_in_sasl2_at_the_other_dc() {
    use meerkat_testkit::client::pred::message_with_body;
    let m = shared().await;
    let b = user("s2bob");
    crate::register_everywhere(m, &b).await;
    let mut alice = crate::online(m.dc(1), &user("s2alice"), "phone").await;
    let mut bob = crate::login(m.dc(1), &b, "phone").await;
    let previd = bob
        .enable_sm(None)
        .await
        .unwrap()
        .attr("id")
        .unwrap()
        .to_owned();
    let bob_full = bob.jid().to_owned();
    m.wait_directory_holds(&[alice.jid(), bob_full.as_str()], CONVERGE)
        .await
        .unwrap();
    for t in ["before 0", "before 1"] {
        alice.send_message(&bob_full, t).await.unwrap();
        bob.expect("a message", message_with_body(t)).await.unwrap();
    }
    bob.sm_ack(1).await.unwrap();
    bob.drop_connection();
    for t in ["meanwhile 0", "meanwhile 1"] {
        alice.send_message(&bob_full, t).await.unwrap();
    }
    let (mut bob, answer) = Client::resume_sasl2(&m.dc(2).client(), &b, "secret-pw", &previd, 1)
        .await
        .unwrap();
    assert_eq!(answer.name(), "resumed", "{answer}");
    assert_eq!(bob.jid(), bob_full, "the authorization identifier");
    for t in ["before 1", "meanwhile 0", "meanwhile 1"] {
        let got = bob
            .expect("a message", |e| e.is("message", meerkat_xmpp::ns::CLIENT))
            .await
            .unwrap();
        assert_eq!(
            got.child_text("body", meerkat_xmpp::ns::CLIENT).as_deref(),
            Some(t)
        );
    }
    bob.expect_none(std::time::Duration::from_secs(1), |e| {
        e.is("message", meerkat_xmpp::ns::CLIENT)
    })
    .await
    .unwrap();
}

/// Bob's stream-managed session is at DC 1; his connection drops and he resumes at DC 2 (DC 1
/// alive) with the same id: the session moves across. He gets the two he had not
/// acknowledged, then the three sent meanwhile, in order, each once, and the moved session
/// keeps working.
#[tokio::test]
async fn a_session_resumes_at_the_other_dc_while_the_first_is_alive() {
    use meerkat_testkit::client::pred::message_with_body;
    let m = shared().await;
    let b = user("smbob");
    let c = user("smcarol");
    crate::register_everywhere(m, &b).await;
    crate::register_everywhere(m, &c).await;
    let mut alice = crate::online(m.dc(1), &user("smalice"), "phone").await;
    let mut bob = crate::available(m.dc(1), &b, "phone").await;
    let mut carol = crate::available(m.dc(2), &c, "laptop").await;
    m.wait_directory_holds(&[alice.jid(), bob.jid(), carol.jid()], CONVERGE)
        .await
        .unwrap();
    // Contacts at both DCs: Alice where Bob starts, Carol where he moves.
    crate::befriend(&mut alice, &mut bob).await;
    crate::befriend(&mut carol, &mut bob).await;
    let previd = bob
        .enable_sm(None)
        .await
        .unwrap()
        .attr("id")
        .unwrap()
        .to_owned();
    let bob_full = bob.jid().to_owned();
    m.wait_directory_holds(&[alice.jid(), bob_full.as_str()], CONVERGE)
        .await
        .unwrap();
    let before: Vec<String> = (0..3).map(|n| format!("before {n}")).collect();
    // Bob handles the first message and no more. He acknowledges what he had counted when it
    // came: a contact's presence may still reach him after `<enabled/>`, and counts too.
    let mut handled = None;
    for t in &before {
        alice.send_message(&bob_full, t).await.unwrap();
        bob.expect("a message", message_with_body(t)).await.unwrap();
        handled = handled.or(bob.sm_received());
    }
    let handled = handled.unwrap();
    bob.sm_ack(handled).await.unwrap();
    bob.drop_connection();
    let meanwhile: Vec<String> = (0..3).map(|n| format!("meanwhile {n}")).collect();
    for t in &meanwhile {
        alice.send_message(&bob_full, t).await.unwrap();
    }

    let (mut bob, answer) = Client::resume(
        &m.dc(2).client(),
        &b,
        "secret-pw",
        &previd,
        handled,
        &bob_full,
    )
    .await
    .unwrap();
    assert_eq!(answer.name(), "resumed", "{answer}");
    assert_eq!(answer.attr("previd"), Some(previd.as_str()));
    for t in before[1..].iter().chain(&meanwhile) {
        let got = bob
            .expect("a message", |e| e.is("message", meerkat_xmpp::ns::CLIENT))
            .await
            .unwrap();
        assert_eq!(
            got.child_text("body", meerkat_xmpp::ns::CLIENT).as_deref(),
            Some(t.as_str())
        );
    }
    bob.expect_none(std::time::Duration::from_secs(1), |e| {
        e.is("message", meerkat_xmpp::ns::CLIENT)
    })
    .await
    .unwrap();
    alice
        .send_message(&bob_full, "after the move")
        .await
        .unwrap();
    // Within the time the DCs' directories take to agree under load: Alice's DC may route by
    // the old entry (the old holder forwards), by none (stored, then delivered once DC 1
    // learns of the new session) or by the new one.
    bob.expect_within(
        CONVERGE,
        "the next message",
        message_with_body("after the move"),
    )
    .await
    .unwrap();

    // Still everyone's contact, with no flap: his contacts at both DCs never saw him go, a
    // presence change after the move reaches both, and Carol's message from DC 2 finds him.
    let away = Element::new("presence", meerkat_xmpp::ns::CLIENT)
        .with_child(Element::new("show", meerkat_xmpp::ns::CLIENT).with_text("away"));
    bob.send(&away).await.unwrap();
    for contact in [&mut alice, &mut carol] {
        let seen = contact
            .expect("bob's presence", |e: &Element| {
                e.is("presence", meerkat_xmpp::ns::CLIENT)
                    && e.attr("from") == Some(bob_full.as_str())
            })
            .await
            .unwrap();
        assert_eq!(seen.attr("type"), None, "{seen}: no flap");
        assert_eq!(
            seen.child_text("show", meerkat_xmpp::ns::CLIENT).as_deref(),
            Some("away"),
            "{seen}: the first presence of his since the drop is the new one"
        );
    }
    carol.send_message(&bob_full, "from dc 2").await.unwrap();
    bob.expect("carol's message", message_with_body("from dc 2"))
        .await
        .unwrap();
}
