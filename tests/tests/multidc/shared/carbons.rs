//! Carbons between DCs: Alice has a resource at each DC, both with carbons; Bob has one at
//! each DC too. Every message of theirs, whichever DC routes it, gives each of Alice's other
//! resources exactly one copy.

use std::time::Duration;

use meerkat_testkit::client::{chat, Client};
use meerkat_xmpp::{carbons, ns, Element};

use crate::{available, register_everywhere, shared, user, CONVERGE};

/// `msg <body>`, or `received <body>` / `sent <body>` for a carbon from the account's bare JID.
fn seen(c: &Client, el: &Element) -> String {
    let body = |m: &Element| m.child_text("body", ns::CLIENT).unwrap_or_default();
    match carbons::forwarded(el) {
        Some(inner) => {
            assert_eq!(el.attr("from"), Some(c.bare_jid()), "{el}");
            assert_eq!(el.attr("to"), Some(c.jid()), "{el}");
            let side = el
                .children()
                .find(|w| w.ns() == ns::CARBONS)
                .map(Element::name);
            format!("{} {}", side.unwrap_or_default(), body(inner))
        }
        None => format!("msg {}", body(el)),
    }
}

/// The `n` next messages `c` gets (sorted: several DCs and partitions deliver them), then
/// nothing more for a moment: no duplicates.
async fn next_messages(c: &mut Client, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    for _ in 0..n {
        let el = c
            .expect_within(CONVERGE, "a message", |e| e.is("message", ns::CLIENT))
            .await
            .unwrap();
        got.push(seen(c, &el));
    }
    c.expect_none(Duration::from_secs(1), |e| e.is("message", ns::CLIENT))
        .await
        .unwrap();
    got.sort();
    got
}

#[tokio::test]
async fn carbons_cross_dcs_each_once() {
    let m = shared().await;
    let (a, b) = (user("alice"), user("bob"));
    register_everywhere(m, &a).await;
    register_everywhere(m, &b).await;
    let mut a1 = available(m.dc(1), &a, "one").await;
    let mut a2 = available(m.dc(2), &a, "two").await;
    for c in [&mut a1, &mut a2] {
        c.iq_ok("set", None, Element::new("enable", ns::CARBONS))
            .await
            .unwrap();
    }
    let mut b1 = available(m.dc(1), &b, "one").await;
    let mut b2 = available(m.dc(2), &b, "two").await;
    let (a1j, a2j, b1j, b2j) = (
        a1.jid().to_owned(),
        a2.jid().to_owned(),
        b1.jid().to_owned(),
        b2.jid().to_owned(),
    );
    m.wait_directory_holds(&[&a1j, &a2j, &b1j, &b2j], CONVERGE)
        .await
        .unwrap();
    m.wait_directory_flag(&[&a1j, &a2j], "carbons", CONVERGE)
        .await
        .unwrap();
    let abare = a1.bare_jid().to_owned();

    // Bob at DC 1 and at DC 2 to Alice's resource at DC 1, then to her bare JID (both
    // resources have priority 0: both get it, no copy).
    b1.send(&chat(&a1j, "b1 to a1")).await.unwrap();
    b2.send(&chat(&a1j, "b2 to a1")).await.unwrap();
    b2.send(&chat(&abare, "b2 to alice")).await.unwrap();
    // Alice from each DC to Bob at the other.
    a1.send(&chat(&b2j, "a1 to b2")).await.unwrap();
    a2.send(&chat(&b1j, "a2 to b1")).await.unwrap();

    assert_eq!(
        next_messages(&mut a1, 4).await,
        [
            "msg b1 to a1",
            "msg b2 to a1",
            "msg b2 to alice",
            "sent a2 to b1"
        ]
    );
    assert_eq!(
        next_messages(&mut a2, 4).await,
        [
            "msg b2 to alice",
            "received b1 to a1",
            "received b2 to a1",
            "sent a1 to b2"
        ]
    );
    assert_eq!(next_messages(&mut b1, 1).await, ["msg a2 to b1"]);
    assert_eq!(next_messages(&mut b2, 1).await, ["msg a1 to b2"]);
}

/// The acceptance check with a stock client library: slixmpp's XEP-0280 plugin, Alice's two
/// resources at the two DCs (tests/interop/slixmpp_carbons.py).
#[tokio::test]
async fn slixmpp_carbons_across_dcs() {
    let m = shared().await;
    let (a, b) = (user("sxa"), user("sxb"));
    register_everywhere(m, &a).await;
    register_everywhere(m, &b).await;
    let (dc1, dc2) = (m.dc(1), m.dc(2));
    let path = format!("{}/interop/slixmpp_carbons.py", env!("CARGO_MANIFEST_DIR"));
    let out = tokio::process::Command::new("python3")
        .arg(&path)
        .arg(dc1.c2s.ip().to_string())
        .arg(dc1.c2s.port().to_string())
        .arg(dc2.c2s.ip().to_string())
        .arg(dc2.c2s.port().to_string())
        .arg(&dc1.domain)
        .arg(&a)
        .arg(&b)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), out)
        .await
        .expect("slixmpp_carbons.py finished within 3 minutes")
        .expect("python3 runs (cargo xtask test installs slixmpp)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("slixmpp_carbons.py:\n{stdout}");
    assert!(
        out.status.success() && stdout.contains("all steps passed"),
        "slixmpp_carbons.py failed\nstdout:\n{stdout}\nstderr:\n{}",
        &stderr[stderr.len().saturating_sub(4000)..]
    );
}
