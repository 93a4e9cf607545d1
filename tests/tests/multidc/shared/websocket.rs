//! A WebSocket session (RFC 7395) is a session like any other: a web user at DC 1 and a TCP
//! user at DC 2 chat both ways, and a web user whose connection drops resumes at the other DC.
//! A real browser: two Converse.js users in headless Chromium, one over WebSocket at DC 1 (found
//! by XEP-0156 discovery), one over BOSH at DC 2, add each other and chat.

use meerkat_testkit::client::pred::message_with_body;
use meerkat_testkit::client::{Client, Mechanism};

use crate::{login, online, register_everywhere, shared, user, CONVERGE};

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

/// Where the browser test keeps its screenshots: `target/browser-screenshots/`
/// (`$CARGO_TARGET_DIR/browser-screenshots/` when that is set).
fn screenshot_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("browser-screenshots")
}

/// The subscription `name` (a bare JID) has in `c`'s roster, as the server keeps it.
async fn subscription(c: &mut Client, name: &str) -> Option<String> {
    use meerkat_xmpp::{ns, Element};
    let roster = c
        .iq_ok("get", None, Element::new("query", ns::ROSTER))
        .await
        .unwrap();
    let query = roster.children().next()?;
    let item = query.children().find(|i| i.attr("jid") == Some(name))?;
    item.attr("subscription").map(str::to_owned)
}

/// Two Converse.js users (npm `converse.js`) in a real headless Chromium (Debian's `chromium`,
/// driven by `puppeteer-core`; `cargo xtask test` installs them), each in a browser context of
/// its own: A at DC 1 over WebSocket, its endpoint found by XEP-0156 discovery (the browser
/// resolves the XMPP domain to DC 1's HTTPS listener, which serves host-meta), B at DC 2 over
/// BOSH. A adds B, B accepts in Converse's dialog (and asks A back, which A's Converse
/// approves by itself); each types a message the other's page shows
/// (`tests/interop/browser/converse.mjs`). Screenshots of both pages go to
/// `target/browser-screenshots/`. Both rosters must end `both`, in the pages and as the server
/// keeps them (read over TCP at the other DC).
#[tokio::test]
async fn converse_over_websocket_at_dc1_and_over_bosh_at_dc2_befriend_and_chat() {
    let m = shared().await;
    let (a, b) = (user("conva"), user("convb"));
    register_everywhere(m, &a).await;
    register_everywhere(m, &b).await;
    let domain = m.dc(1).domain.clone();
    let discover_at = m.dc(1).https.expect("an HTTPS port at DC 1").to_string();
    let bosh = format!(
        "https://{}/http-bind",
        m.dc(2).https.expect("an HTTPS port at DC 2")
    );
    let shots = screenshot_dir();
    let script = format!(
        "{}/interop/browser/converse.mjs",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = tokio::process::Command::new("node")
        .arg(&script)
        .args([&domain, &discover_at, &bosh, &a, &b, PW])
        .arg(&shots)
        .kill_on_drop(true)
        .output()
        .await
        .expect("node runs (cargo xtask test installs Chromium and Converse.js)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("Converse.js in Chromium:\n{stdout}");
    assert!(
        out.status.success() && stdout.contains("all steps passed"),
        "Converse.js failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    println!("screenshots in {}", shots.display());

    // What the browsers did is what the server keeps, at either DC.
    let (ja, jb) = (format!("{a}@{domain}"), format!("{b}@{domain}"));
    let mut at2 = login(m.dc(2), &a, "check").await;
    let mut at1 = login(m.dc(1), &b, "check").await;
    let deadline = tokio::time::Instant::now() + CONVERGE;
    loop {
        let seen = (
            subscription(&mut at2, &jb).await,
            subscription(&mut at1, &ja).await,
        );
        if seen.0.as_deref() == Some("both") && seen.1.as_deref() == Some("both") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rosters as the other DCs keep them (A's at DC 2, B's at DC 1): {seen:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Runs a stock client (`node SCRIPT ARGS…`, its message says `hello`) that logs in as `name`
/// and chats with `tcp` (a TCP user, possibly at another DC): `tcp` waits for the message,
/// checks it came from `name`, and answers `hello back`, which the client must receive.
async fn stock_client_chats(
    m: &meerkat_testkit::shared::SharedDcs,
    tcp: &mut Client,
    name: &str,
    what: &str,
    hello: &str,
    script: &str,
    args: &[&str],
) {
    let run = tokio::process::Command::new("node")
        .arg(format!("{}/interop/{script}", env!("CARGO_MANIFEST_DIR")))
        .args(args)
        // The test DCs' certificates are self-signed.
        .env("NODE_TLS_REJECT_UNAUTHORIZED", "0")
        .kill_on_drop(true)
        .output();
    let answer = async {
        let got = tcp
            .expect_within(
                std::time::Duration::from_secs(60),
                "the stock client's message",
                message_with_body(hello),
            )
            .await
            .map_err(|e| format!("{e:#}"))?;
        let from = got.attr("from").unwrap_or_default().to_owned();
        if !from.starts_with(&format!("{name}@{}/", m.dc(1).domain)) {
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
    let out = out.expect("node runs (cargo xtask test installs the npm packages)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{what}:\n{stdout}");
    assert!(
        out.status.success() && stdout.contains("all steps passed"),
        "{what} failed (our side: {answered:?})\nstdout:\n{stdout}\nstderr:\n{}",
        &stderr[stderr.len().saturating_sub(4000)..]
    );
}

/// xmpp.js (`@xmpp/client`, npm) at DC 1 finds the WebSocket endpoint with its own XEP-0156
/// resolver (`@xmpp/resolve`, host-meta on DC 1's HTTPS listener), logs in and chats both ways
/// with a TCP user at DC 2 (`tests/interop/xmppjs/websocket.mjs`).
#[tokio::test]
async fn xmppjs_found_by_discovery_at_dc1_chats_with_a_tcp_user_at_dc2() {
    let m = shared().await;
    let w = user("xjs");
    register_everywhere(m, &w).await;
    let mut tcp = online(m.dc(2), &user("tcp"), "desk").await;
    m.wait_directory_holds(&[tcp.jid()], CONVERGE)
        .await
        .unwrap();
    let peer = tcp.jid().to_owned();
    let host = m.dc(1).https.expect("an HTTPS port at DC 1").to_string();
    let domain = m.dc(1).domain.clone();
    stock_client_chats(
        m,
        &mut tcp,
        &w,
        "xmpp.js over WebSocket",
        "hello from xmpp.js",
        "xmppjs/websocket.mjs",
        &[&host, &domain, &w, PW, &peer],
    )
    .await;
}

/// Strophe.js (npm `strophe.js`, its Node build) at DC 2 finds the BOSH endpoint by XEP-0156
/// (host-meta.json on DC 2's HTTPS listener), logs in over BOSH and chats both ways with a TCP
/// user at DC 1 (`tests/interop/strophe/bosh.mjs`).
#[tokio::test]
async fn strophe_over_bosh_found_by_discovery_at_dc2_chats_with_a_tcp_user_at_dc1() {
    let m = shared().await;
    let w = user("stro");
    register_everywhere(m, &w).await;
    let mut tcp = online(m.dc(1), &user("tcp"), "desk").await;
    m.wait_directory_holds(&[tcp.jid()], CONVERGE)
        .await
        .unwrap();
    let peer = tcp.jid().to_owned();
    let host = m.dc(2).https.expect("an HTTPS port at DC 2").to_string();
    let jid = format!("{w}@{}", m.dc(2).domain);
    stock_client_chats(
        m,
        &mut tcp,
        &w,
        "Strophe.js over BOSH",
        "hello from Strophe.js",
        "strophe/bosh.mjs",
        &[&host, &jid, PW, &peer],
    )
    .await;
}
