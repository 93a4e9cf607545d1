//! A WebSocket session (RFC 7395) is a session like any other: a web user at DC 1 and a TCP
//! user at DC 2 chat both ways, and a web user whose connection drops resumes at the other DC.
//! A real browser: Converse.js in headless Chromium logs in at DC 1 and chats with a TCP user at
//! DC 2.

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

/// Converse.js (npm `converse.js`) in a real headless Chromium (Debian's `chromium`, driven by
/// `puppeteer-core`; `cargo xtask test` installs them) logs in over `wss://` at DC 1, and its
/// user types a message to a TCP user at DC 2 into the chat box; the TCP user's reply shows in
/// the browser's chat (`tests/interop/browser/converse.mjs`).
#[tokio::test]
async fn converse_in_a_browser_at_dc1_chats_with_a_tcp_user_at_dc2() {
    let m = shared().await;
    let w = user("conv");
    register_everywhere(m, &w).await;
    let mut tcp = online(m.dc(2), &user("tcp"), "desk").await;
    let contact = tcp.jid().split('/').next().unwrap_or_default().to_owned();
    m.wait_directory_holds(&[tcp.jid()], CONVERGE)
        .await
        .unwrap();
    let web = format!("{w}@{}", m.dc(1).domain);
    let url = format!(
        "wss://{}/xmpp-websocket",
        m.dc(1).https.expect("an HTTPS port at DC 1")
    );
    let script = format!(
        "{}/interop/browser/converse.mjs",
        env!("CARGO_MANIFEST_DIR")
    );
    let run = tokio::process::Command::new("node")
        .args([script.as_str(), &url, &web, PW, &contact])
        .kill_on_drop(true)
        .output();
    let answer = async {
        let hello = tcp
            .expect_within(
                std::time::Duration::from_secs(90),
                "the browser's message",
                message_with_body("hello from Converse.js"),
            )
            .await
            .map_err(|e| format!("{e:#}"))?;
        let from = hello.attr("from").unwrap_or_default().to_owned();
        if !from.starts_with(&format!("{web}/")) {
            return Err(format!("the message came from {from}"));
        }
        m.wait_directory_holds(&[&from], CONVERGE)
            .await
            .map_err(|e| format!("{e:#}"))?;
        tcp.send_message(&from, "hello back")
            .await
            .map_err(|e| format!("{e:#}"))
    };
    // Until node ends: a failure on its side says why in its output.
    tokio::pin!(run);
    let (answered, out) = tokio::select! {
        a = answer => (Some(a), run.await),
        out = &mut run => (None, out),
    };
    let out = out.expect("node runs (cargo xtask test installs Chromium and Converse.js)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("Converse.js in Chromium:\n{stdout}");
    assert!(
        out.status.success() && stdout.contains("all steps passed"),
        "Converse.js failed (our side: {answered:?})\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
}
