//! A stock client library (slixmpp, installed by `cargo xtask test`) completes the whole
//! user journey: register, login, subscribe, presence, chat, offline delivery, ping, disco;
//! and with its XEP-0198 plugin, a dropped connection resumed with nothing lost, at the same
//! gateway, at another gateway of the DC, and back (at another DC: multidc `shared::interop`).

use crate::{dc, user};

#[tokio::test]
async fn slixmpp_completes_the_user_journey() {
    run_script("slixmpp_flow.py", false).await;
}

#[tokio::test]
async fn slixmpp_resumes_a_dropped_stream_and_misses_nothing() {
    run_script("slixmpp_sm.py", true).await;
}

/// Runs `tests/interop/<script>` against a fresh DC (with `second_gateway`, the port of a
/// second gateway of the DC goes last); it must print "all steps passed".
async fn run_script(script: &str, second_gateway: bool) {
    let mut dc = dc().await;
    let path = format!("{}/interop/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut cmd = tokio::process::Command::new("python3");
    cmd.arg(&path)
        .arg(dc.c2s.ip().to_string())
        .arg(dc.c2s.port().to_string())
        .arg("example.com")
        .arg(user("sx"))
        .kill_on_drop(true);
    if second_gateway {
        let other = dc
            .start_gateway_on_own_port()
            .await
            .expect("a second gateway");
        cmd.arg(other.addr.port().to_string());
    }
    let out = cmd.output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), out)
        .await
        .expect("slixmpp flow finished within 2 minutes")
        .expect("python3 runs (cargo xtask test installs slixmpp)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{script}:\n{stdout}");
    assert!(
        out.status.success() && stdout.contains("all steps passed"),
        "{script} failed\nstdout:\n{stdout}\nstderr:\n{}",
        &stderr[stderr.len().saturating_sub(4000)..]
    );
    dc.stop().await.expect("stop the DC");
}

/// xmpp.js over `wss://` (SASL2, stream management) loses its connection without a close
/// and resumes by itself, inline in SASL2 (`tests/interop/xmppjs/resume.mjs`): the three
/// messages a TCP user sent meanwhile arrive once each and in order, and its answer reaches
/// the TCP user from the same full JID.
#[tokio::test]
async fn xmppjs_drops_its_connection_and_resumes_inline_in_sasl2() {
    use meerkat_testkit::client::pred::message_with_body;
    use meerkat_testkit::client::Client;

    let dc = dc().await;
    let web = user("jsr");
    Client::register_account(&dc.client(), &web, "secret-pw")
        .await
        .expect("register");
    let mut tcp = crate::online(&dc, &user("tcpr"), "desk").await;
    let peer = tcp.jid().to_owned();
    let dir = format!("{}/interop/xmppjs", env!("CARGO_MANIFEST_DIR"));
    let url = format!("wss://{}/xmpp-websocket", dc.https.expect("an HTTPS port"));
    let run = tokio::process::Command::new("node")
        .arg(format!("{dir}/resume.mjs"))
        .args([
            url.as_str(),
            "example.com",
            web.as_str(),
            "secret-pw",
            peer.as_str(),
            "3",
        ])
        .env("NODE_TLS_REJECT_UNAUTHORIZED", "0")
        .kill_on_drop(true)
        .output();
    let peer_side = async {
        let wait = std::time::Duration::from_secs(60);
        let ready = tcp
            .expect_within(wait, "xmpp.js ready", message_with_body("ready"))
            .await
            .map_err(|e| format!("{e:#}"))?;
        let from = ready.attr("from").unwrap_or_default().to_owned();
        // After its drop (300 ms after "ready"), before or after the gateway notices it.
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        for i in 0..3 {
            tcp.send_message(&from, &format!("away {i}"))
                .await
                .map_err(|e| format!("{e:#}"))?;
        }
        let ok = tcp
            .expect_within(wait, "xmpp.js resumed", message_with_body("resumed ok"))
            .await
            .map_err(|e| format!("{e:#}"))?;
        if ok.attr("from") != Some(from.as_str()) {
            return Err(format!("resumed ok from {:?}, not {from}", ok.attr("from")));
        }
        Ok(())
    };
    tokio::pin!(run);
    let (answered, out) = tokio::select! {
        a = peer_side => (Some(a), run.await),
        out = &mut run => (None, out),
    };
    let out = out.expect("node runs (cargo xtask test installs xmpp.js)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("xmpp.js:\n{stdout}");
    assert!(
        out.status.success() && stdout.contains("all steps passed"),
        "xmpp.js failed (our side: {answered:?})\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(matches!(answered, Some(Ok(())) | None), "{answered:?}");
    dc.stop().await.expect("stop the DC");
}

/// A stock XMPP-over-WebSocket client (xmpp.js, `@xmpp/client` from npm, installed by `cargo
/// xtask test`) logs in with SCRAM over `wss://` and chats with a TCP user both ways.
#[tokio::test]
async fn xmppjs_logs_in_over_websocket_and_chats_with_a_tcp_user() {
    use meerkat_testkit::client::pred::message_with_body;
    use meerkat_testkit::client::Client;

    let dc = dc().await;
    let web = user("js");
    Client::register_account(&dc.client(), &web, "secret-pw")
        .await
        .expect("register");
    let mut tcp = crate::online(&dc, &user("tcp"), "desk").await;
    // Its full JID: a bare JID would go to offline storage (no available resource).
    let peer = tcp.jid().to_owned();
    let dir = format!("{}/interop/xmppjs", env!("CARGO_MANIFEST_DIR"));
    let url = format!("wss://{}/xmpp-websocket", dc.https.expect("an HTTPS port"));
    let run = tokio::process::Command::new("node")
        .arg(format!("{dir}/websocket.mjs"))
        .args([
            url.as_str(),
            "example.com",
            web.as_str(),
            "secret-pw",
            peer.as_str(),
        ])
        // The test DC's certificate is self-signed.
        .env("NODE_TLS_REJECT_UNAUTHORIZED", "0")
        .kill_on_drop(true)
        .output();
    let answer = async {
        let hello = tcp
            .expect_within(
                std::time::Duration::from_secs(60),
                "xmpp.js's message",
                message_with_body("hello from xmpp.js"),
            )
            .await
            .map_err(|e| format!("{e:#}"))?;
        let from = hello.attr("from").unwrap_or_default().to_owned();
        if !from.starts_with(&format!("{web}@example.com/")) {
            return Err(format!("the message came from {from}"));
        }
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
    let out = out.expect("node runs (cargo xtask test installs xmpp.js)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("xmpp.js:\n{stdout}");
    assert!(
        out.status.success() && stdout.contains("all steps passed"),
        "xmpp.js failed (our side: {answered:?})\nstdout:\n{stdout}\nstderr:\n{}",
        &stderr[stderr.len().saturating_sub(4000)..]
    );
    dc.stop().await.expect("stop the DC");
}
