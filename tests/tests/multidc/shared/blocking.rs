//! XEP-0191 blocking across DCs (docs/decisions.md, "Every device, every DC"): a block made at
//! one DC is pushed to the account's resources at the other and stored there, and a blocked
//! contact at one DC cannot reach the user at the other.

use meerkat_testkit::blocking::{block, blocklist, item_jids, push, wait_interest};
use meerkat_testkit::client::pred::message_with_body;
use meerkat_testkit::client::{stanza_error_condition, Client};
use meerkat_xmpp::{ns, Element};

use crate::{available, eventually, register_everywhere, shared, store, user, CONVERGE};

#[tokio::test]
async fn a_block_made_at_one_dc_is_pushed_and_listed_at_the_other() {
    let m = shared().await;
    let (alice, eve) = (user("alice"), user("eve"));
    register_everywhere(m, &alice).await;
    let mut phone = available(m.dc(1), &alice, "phone").await;
    let mut fridge = Client::login(&m.dc(2).client(), &alice, "secret-pw", Some("fridge"))
        .await
        .unwrap();
    blocklist(&mut fridge).await.unwrap();
    let routers: Vec<_> = m.dcs.iter().flat_map(|d| d.routers.clone()).collect();
    wait_interest(&routers, fridge.jid(), CONVERGE)
        .await
        .unwrap();

    let eve_bare = format!("{eve}@example.com");
    block(&mut phone, &[&eve_bare]).await.unwrap().unwrap();
    let p = fridge.expect("block push", push("block")).await.unwrap();
    assert_eq!(
        item_jids(p.get_child("block", ns::BLOCKING).unwrap()),
        [eve_bare.as_str()]
    );
    // DC 2's copy of the list has it: a fresh session there lists it.
    eventually("DC 2's block list has the item", CONVERGE, || async {
        let mut c = Client::login(&m.dc(2).client(), &alice, "secret-pw", None)
            .await
            .unwrap();
        let l = blocklist(&mut c).await.unwrap();
        let _ = c.close().await;
        l == [eve_bare.as_str()]
    })
    .await;
}

#[tokio::test]
async fn a_blocked_contact_at_another_dc_cannot_reach_the_user() {
    let m = shared().await;
    let (alice, eve) = (user("alice"), user("eve"));
    register_everywhere(m, &alice).await;
    register_everywhere(m, &eve).await;
    let mut a = available(m.dc(2), &alice, "phone").await;
    let mut e = available(m.dc(1), &eve, "desk").await;
    m.wait_directory_holds(&[a.jid(), e.jid()], CONVERGE)
        .await
        .unwrap();
    let (aj, ej) = (a.bare_jid().to_owned(), e.bare_jid().to_owned());

    block(&mut a, &[&ej]).await.unwrap().unwrap();
    // Eve's stanzas are routed at DC 1 (her partition), by DC 1's copy of the list.
    let dc1 = store(m.dc(1)).await;
    eventually("DC 1 holds the block", CONVERGE, || async {
        dc1.block_list(&alice).await.unwrap() == [ej.as_str()]
    })
    .await;

    let msg = Element::new("message", ns::CLIENT)
        .with_attr("to", aj.as_str())
        .with_attr("type", "chat")
        .with_attr("id", "blocked-1")
        .with_child(Element::new("body", ns::CLIENT).with_text("let me in"));
    e.send(&msg).await.unwrap();
    let err = e
        .expect("the message's error", |s| {
            s.is("message", ns::CLIENT) && s.attr("id") == Some("blocked-1")
        })
        .await
        .unwrap();
    assert_eq!(
        stanza_error_condition(&err).as_deref(),
        Some("service-unavailable")
    );
    let ping = e
        .iq("get", Some(a.jid()), Element::new("ping", ns::PING))
        .await
        .unwrap();
    assert_eq!(
        stanza_error_condition(&ping).as_deref(),
        Some("service-unavailable")
    );
    a.expect_none(
        std::time::Duration::from_millis(500),
        message_with_body("let me in"),
    )
    .await
    .unwrap();
}

/// slixmpp's XEP-0191 plugin (`tests/interop/slixmpp_blocking.py`): the user at DC 2 blocks a
/// contact at DC 1, who then cannot reach them.
#[tokio::test]
async fn slixmpp_a_blocked_contact_at_another_dc_cannot_reach_the_user() {
    let m = shared().await;
    let (alice, eve) = (user("sxalice"), user("sxeve"));
    register_everywhere(m, &alice).await;
    register_everywhere(m, &eve).await;
    let path = format!("{}/interop/slixmpp_blocking.py", env!("CARGO_MANIFEST_DIR"));
    let (dc1, dc2) = (m.dc(1).c2s, m.dc(2).c2s);
    let out = tokio::process::Command::new("python3")
        .arg(&path)
        .arg(dc1.ip().to_string())
        .arg(dc1.port().to_string())
        .arg(dc2.port().to_string())
        .arg("example.com")
        .arg(&alice)
        .arg(&eve)
        .arg("secret-pw")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(180), out)
        .await
        .expect("the script finished within 3 minutes")
        .expect("python3 runs (cargo xtask test installs slixmpp)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("slixmpp_blocking.py:\n{stdout}");
    assert!(
        out.status.success() && stdout.contains("all steps passed"),
        "slixmpp_blocking.py failed\nstdout:\n{stdout}\nstderr:\n{}",
        &stderr[stderr.len().saturating_sub(4000)..]
    );
}
