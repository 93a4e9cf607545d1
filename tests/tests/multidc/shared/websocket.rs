//! A WebSocket session (RFC 7395) is a session like any other: a web user at DC 1 and a TCP
//! user at DC 2 chat both ways, and a web user whose connection drops resumes at the other DC.

use meerkat_testkit::client::pred::message_with_body;
use meerkat_testkit::client::{Client, Mechanism};

use crate::{online, register_everywhere, shared, user, CONVERGE};

const PW: &str = "secret-pw";

/// Logged in over WebSocket (SCRAM-SHA-256) at `cfg`, available.
async fn web_login(cfg: &meerkat_testkit::client::ClientConfig, name: &str) -> Client {
    let mut c = Client::connect(cfg).await.unwrap();
    c.authenticate(Mechanism::ScramSha256, name, PW)
        .await
        .unwrap()
        .expect("authenticated over WebSocket");
    c.bind(Some("browser")).await.unwrap();
    c.send_presence().await.unwrap();
    c
}

#[tokio::test]
async fn a_web_user_at_dc1_chats_with_a_tcp_user_at_dc2_both_ways() {
    let m = shared().await;
    let w = user("web");
    register_everywhere(m, &w).await;
    let mut web = web_login(&m.dc(1).client_websocket(), &w).await;
    let mut tcp = online(m.dc(2), &user("tcp"), "desk").await;
    m.wait_directory_holds(&[web.jid(), tcp.jid()], CONVERGE)
        .await
        .unwrap();
    let (wj, tj) = (web.jid().to_owned(), tcp.jid().to_owned());
    for n in 0..5 {
        web.send_message(&tj, &format!("w{n}")).await.unwrap();
    }
    for n in 0..5 {
        let got = tcp
            .expect_within(
                CONVERGE,
                "the web user's message",
                message_with_body(&format!("w{n}")),
            )
            .await
            .unwrap();
        assert_eq!(got.attr("from"), Some(wj.as_str()));
    }
    for n in 0..5 {
        tcp.send_message(&wj, &format!("t{n}")).await.unwrap();
    }
    for n in 0..5 {
        let got = web
            .expect_within(
                CONVERGE,
                "the tcp user's message",
                message_with_body(&format!("t{n}")),
            )
            .await
            .unwrap();
        assert_eq!(got.attr("from"), Some(tj.as_str()));
    }
}

/// The web client's DC goes away for it (here: its connection drops); it resumes its session
/// over WebSocket at the other DC and gets what was sent meanwhile.
#[tokio::test]
async fn a_web_session_resumes_over_websocket_at_the_other_dc() {
    let m = shared().await;
    let w = user("web");
    register_everywhere(m, &w).await;
    let mut web = web_login(&m.dc(1).client_websocket(), &w).await;
    let enabled = web.enable_sm(None).await.unwrap();
    let previd = enabled.attr("id").unwrap().to_owned();
    let mut tcp = online(m.dc(2), &user("tcp"), "desk").await;
    let wj = web.jid().to_owned();
    m.wait_directory_holds(&[&wj, tcp.jid()], CONVERGE)
        .await
        .unwrap();
    let h = web.sm_received().unwrap();
    web.drop_connection();
    tcp.send_message(&wj, "while moving").await.unwrap();

    let (mut web, answer) = Client::resume(&m.dc(2).client_websocket(), &w, PW, &previd, h, &wj)
        .await
        .unwrap();
    assert_eq!(answer.name(), "resumed", "{answer}");
    web.expect_within(
        CONVERGE,
        "what came meanwhile",
        message_with_body("while moving"),
    )
    .await
    .unwrap();
    web.send_message(tcp.jid(), "moved").await.unwrap();
    tcp.expect_within(
        CONVERGE,
        "the moved session's message",
        message_with_body("moved"),
    )
    .await
    .unwrap();
}
