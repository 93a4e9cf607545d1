//! Three DCs: one account with a resource at each, reached through its bare JID from any DC,
//! and chat between the first and the third DC.

use meerkat_testkit::client::pred::message_with_body;
use meerkat_xmpp::ns;

use crate::{available, multi, online, register, user, wait_account, CONVERGE};

#[tokio::test]
async fn bare_jid_reaches_resources_at_three_dcs_and_dc3_chats_with_dc1() {
    let m = multi(3).await;
    let carol = user("c");
    // Registered once and brought to the other DCs by data replication: registered at each,
    // one DC's record would replace another's when it arrives, and reset a session logged in
    // with the first ("the account's password changed").
    register(m.dc(1), &carol).await;
    for k in 2..=3 {
        wait_account(m.dc(k), &carol).await;
    }
    let mut at1 = available(m.dc(1), &carol, "one").await;
    let mut at2 = available(m.dc(2), &carol, "two").await;
    let mut at3 = available(m.dc(3), &carol, "three").await;
    let mut dave = online(m.dc(3), &user("d"), "x").await;
    m.wait_directory_sessions(4, CONVERGE).await.unwrap();

    let bare = at1.bare_jid().to_owned();
    dave.send_message(&bare, "to all of carol").await.unwrap();
    for (c, what) in [
        (&mut at1, "at dc1"),
        (&mut at2, "at dc2"),
        (&mut at3, "at dc3"),
    ] {
        c.expect(what, message_with_body("to all of carol"))
            .await
            .unwrap();
    }

    // dc3 → dc1 and back, in order.
    let (dj, cj) = (dave.jid().to_owned(), at1.jid().to_owned());
    for n in 0..20 {
        dave.send_message(&cj, &format!("d{n}")).await.unwrap();
    }
    for n in 0..20 {
        let got = at1
            .expect("dave's message", |e| e.is("message", ns::CLIENT))
            .await
            .unwrap();
        assert_eq!(got.child_text("body", ns::CLIENT), Some(format!("d{n}")));
        assert_eq!(got.attr("from"), Some(dj.as_str()));
    }
    at1.send_message(&dj, "back from dc1").await.unwrap();
    dave.expect("carol's answer", message_with_body("back from dc1"))
        .await
        .unwrap();
    // Nothing reached the other resources twice or by mistake.
    for c in [&mut at2, &mut at3] {
        c.expect_none(std::time::Duration::from_millis(300), |e| {
            e.is("message", ns::CLIENT)
        })
        .await
        .unwrap();
    }
    m.stop().await.unwrap();
}
