//! PEP across DCs (issue 17): Alice at DC 1 publishes an avatar (XEP-0084), bookmarks with
//! publish-options (XEP-0402) and an OMEMO device list open to anyone (XEP-0384); Bob at DC 2,
//! whose caps (verified at DC 2, replicated to DC 1) ask for them, gets the notifications and
//! fetches the items at DC 2 at once — the notification waited at DC 2 for DC 1's data — and
//! so does Alice's other resource at DC 2.

use std::time::{Duration, Instant};

use base64::Engine as _;
use meerkat_testkit::pep::{
    avatar_metadata, items, notified, publish, result_items, Caps, BOOKMARK_OPTIONS,
};
use meerkat_testkit::personal::vcard_name;
use meerkat_xmpp::{ns, Element};

use crate::{befriend, login, register_everywhere, shared, user, CONVERGE};

const AVATAR_DATA: &str = "urn:xmpp:avatar:data";
const AVATAR_META: &str = "urn:xmpp:avatar:metadata";
const BOOKMARKS: &str = "urn:xmpp:bookmarks:1";
const DEVICES: &str = "eu.siacs.conversations.axolotl.devicelist";
const OMEMO: &str = "eu.siacs.conversations.axolotl";

#[tokio::test]
async fn what_alice_publishes_at_dc1_reaches_and_is_read_at_dc2() {
    let m = shared().await;
    let (alice, bob) = (user("alice"), user("bob"));
    register_everywhere(m, &alice).await;
    register_everywhere(m, &bob).await;
    let wants = [AVATAR_META, BOOKMARKS, DEVICES];
    let mut phone = login(m.dc(1), &alice, "phone").await;
    let mut desk = login(m.dc(2), &bob, "desk").await;
    let mut laptop = login(m.dc(2), &alice, "laptop").await;
    for c in [&mut phone, &mut desk, &mut laptop] {
        c.iq_ok("get", None, Element::new("query", ns::ROSTER))
            .await
            .unwrap();
        Caps::new(&wants).announce(c).await.unwrap();
    }
    m.wait_directory_holds(&[phone.jid(), desk.jid(), laptop.jid()], CONVERGE)
        .await
        .unwrap();
    befriend(&mut phone, &mut desk).await;
    let aj = phone.bare_jid().to_owned();
    let bj = desk.bare_jid().to_owned();

    // DC 2 verified the caps of Bob's desk and Alice's laptop; DC 1 decides who is notified
    // of Alice's publishes, so it needs them: once DC 1 shows a vCard Bob set at DC 2 after
    // his caps, DC 2's data stream (caps included) has been applied at DC 1.
    let card = Element::new("vCard", ns::VCARD)
        .with_child(Element::new("FN", ns::VCARD).with_text("caps sent"));
    desk.iq_ok("set", None, card).await.unwrap();
    let deadline = Instant::now() + CONVERGE;
    loop {
        let r = phone
            .iq_ok("get", Some(&bj), Element::new("vCard", ns::VCARD))
            .await
            .unwrap();
        if vcard_name(&r).as_deref() == Some("caps sent") {
            break;
        }
        assert!(Instant::now() < deadline, "Bob's vCard never reached DC 1");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // At DC 1: an avatar (data, then metadata), two bookmarks, the device list.
    let b64 = base64::engine::general_purpose::STANDARD.encode(vec![7u8; 128 * 1024]);
    let data = Element::new("data", AVATAR_DATA).with_text(b64.clone());
    phone
        .iq_ok("set", None, publish(AVATAR_DATA, "h1", data, &[]))
        .await
        .unwrap();
    let meta = avatar_metadata("h1", 128 * 1024);
    phone
        .iq_ok("set", None, publish(AVATAR_META, "h1", meta, &[]))
        .await
        .unwrap();
    let opts = BOOKMARK_OPTIONS;
    for room in ["a@muc.example.com", "b@muc.example.com"] {
        let conf = Element::new("conference", BOOKMARKS).with_attr("autojoin", "true");
        phone
            .iq_ok("set", None, publish(BOOKMARKS, room, conf, &opts))
            .await
            .unwrap();
    }
    let list = Element::new("list", OMEMO)
        .with_child(Element::new("device", OMEMO).with_attr("id", "4711"));
    phone
        .iq_ok(
            "set",
            None,
            publish(DEVICES, "current", list, &[("pubsub#access_model", "open")]),
        )
        .await
        .unwrap();

    // Bob at DC 2: notified, then reads at once (no retry): the items are there.
    notified(&mut desk, AVATAR_META, "h1").await.unwrap();
    let r = desk
        .iq_ok("get", Some(&aj), items(AVATAR_DATA))
        .await
        .unwrap();
    let got = result_items(&r);
    assert_eq!(got.len(), 1, "{r}");
    assert_eq!(got[0].1.text(), b64);
    notified(&mut desk, DEVICES, "current").await.unwrap();
    let r = desk.iq_ok("get", Some(&aj), items(DEVICES)).await.unwrap();
    assert_eq!(
        result_items(&r)[0]
            .1
            .children()
            .next()
            .and_then(|d| d.attr("id")),
        Some("4711")
    );
    // Bookmarks are Alice's alone.
    desk.expect_none(Duration::from_millis(300), |s| {
        s.is("message", ns::CLIENT) && s.to_xml().contains(BOOKMARKS)
    })
    .await
    .unwrap();

    // Alice's laptop at DC 2: all of it, bookmarks included.
    for (node, id) in [
        (AVATAR_META, "h1"),
        (BOOKMARKS, "a@muc.example.com"),
        (BOOKMARKS, "b@muc.example.com"),
        (DEVICES, "current"),
    ] {
        notified(&mut laptop, node, id).await.unwrap();
    }
    let r = laptop.iq_ok("get", None, items(BOOKMARKS)).await.unwrap();
    let ids: Vec<String> = result_items(&r).into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, vec!["a@muc.example.com", "b@muc.example.com"], "{r}");
}

/// The same with a stock client library: slixmpp's PEP, avatar, bookmarks and pubsub plugins
/// (tests/interop/slixmpp_pep.py): an avatar notified and fetched across the DCs, an open
/// OMEMO device list read by a stranger at the other DC, contradicting publish-options
/// refused, an XEP-0402 bookmark seen at the other DC by a native and a legacy client.
#[tokio::test]
async fn slixmpp_pep_avatars_omemo_and_bookmarks_across_dcs() {
    let m = shared().await;
    let (a, b, c) = (user("spa"), user("spb"), user("spc"));
    for u in [&a, &b, &c] {
        register_everywhere(m, u).await;
    }
    let (dc1, dc2) = (m.dc(1), m.dc(2));
    let path = format!("{}/interop/slixmpp_pep.py", env!("CARGO_MANIFEST_DIR"));
    let out = tokio::process::Command::new("python3")
        .arg(&path)
        .arg(dc1.c2s.ip().to_string())
        .arg(dc1.c2s.port().to_string())
        .arg(dc2.c2s.ip().to_string())
        .arg(dc2.c2s.port().to_string())
        .arg(&dc1.domain)
        .args([&a, &b, &c])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), out)
        .await
        .expect("slixmpp_pep.py finished within 3 minutes")
        .expect("python3 runs (cargo xtask test installs slixmpp)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("slixmpp_pep.py:\n{stdout}");
    assert!(
        out.status.success() && stdout.contains("all steps passed"),
        "slixmpp_pep.py failed\nstdout:\n{stdout}\nstderr:\n{}",
        &stderr[stderr.len().saturating_sub(4000)..]
    );
}
