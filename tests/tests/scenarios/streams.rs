//! Stream-level behaviour: bad input ends only the offending stream with the right error,
//! conflicts, shutdown and idle timeouts.

use std::time::Duration;

use meerkat_testkit::client::Client;
use meerkat_testkit::stack::{Dc, StackOptions};
use meerkat_xmpp::{ns, Element};

use crate::{dc, online, user};

async fn ping_server(c: &mut Client) {
    let reply = c
        .iq("get", Some("example.com"), Element::new("ping", ns::PING))
        .await
        .expect("ping");
    assert_eq!(reply.attr("type"), Some("result"), "{reply}");
}

/// Opens a raw stream (after TLS, authenticated and bound) and sends `bad`; returns the
/// stream error condition the server ends the stream with.
async fn condition_after(dc: &Dc, bad: &str) -> Option<String> {
    let name = user("bad");
    let mut c = online(dc, &name, "r").await;
    c.send_raw(bad).await.expect("send");
    c.expect_stream_end().await.expect("stream ends")
}

#[tokio::test]
async fn bad_input_ends_that_stream_with_the_right_error_and_others_carry_on() {
    let dc = Dc::start(StackOptions {
        max_stanza_bytes: 16 * 1024,
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let mut bystander = online(&dc, &user("by"), "r").await;
    ping_server(&mut bystander).await;

    let cases: [(&str, String); 8] = [
        ("not-well-formed", "<message><body>unclosed</message>".to_owned()),
        ("restricted-xml", "<!DOCTYPE x [<!ENTITY a 'b'>]>".to_owned()),
        (
            "restricted-xml",
            "<!DOCTYPE lolz [<!ENTITY lol 'lol'><!ENTITY lol2 '&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;'><!ENTITY lol3 '&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;'>]><message><body>&lol3;</body></message>".to_owned(),
        ),
        ("not-well-formed", "<message><body>&lol9;</body></message>".to_owned()),
        ("restricted-xml", "<?evil processing-instruction?>".to_owned()),
        ("policy-violation", format!("<message>{}", "<x>".repeat(100))),
        ("policy-violation", format!("<message to='x@example.com'><body>{}</body></message>", "a".repeat(64 * 1024))),
        ("unsupported-stanza-type", "<foo xmlns='jabber:client'/>".to_owned()),
    ];
    for (want, input) in cases {
        let got = condition_after(&dc, &input).await;
        assert_eq!(
            got.as_deref(),
            Some(want),
            "input {}",
            &input[..input.len().min(60)]
        );
        ping_server(&mut bystander).await;
    }
    dc.stop().await.unwrap();
}

#[tokio::test]
async fn stream_header_errors() {
    let dc = dc().await;
    // Wrong host.
    let cfg = meerkat_testkit::client::ClientConfig {
        domain: "elsewhere.org".into(),
        ..dc.client()
    };
    let err = Client::connect(&cfg)
        .await
        .err()
        .expect("wrong host refused");
    assert!(format!("{err:#}").contains("host-unknown"), "{err:#}");
    // Wrong default namespace.
    let mut raw = tokio::net::TcpStream::connect(dc.c2s).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    raw.write_all(b"<?xml version='1.0'?><stream:stream to='example.com' version='1.0' xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'>").await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut got)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("<invalid-namespace"), "{text}");
    dc.stop().await.unwrap();
}

#[tokio::test]
async fn stanzas_before_authentication_are_not_authorized() {
    let dc = dc().await;
    let mut c = Client::connect(&dc.client()).await.unwrap();
    c.send_raw("<message to='a@example.com'><body>hi</body></message>")
        .await
        .unwrap();
    assert_eq!(
        c.expect_stream_end().await.unwrap().as_deref(),
        Some("not-authorized")
    );
    dc.stop().await.unwrap();
}

#[tokio::test]
async fn binding_an_online_full_jid_replaces_the_old_session() {
    let dc = dc().await;
    let name = user("dup");
    let mut first = online(&dc, &name, "same").await;
    let mut second = Client::login(&dc.client(), &name, "secret-pw", Some("same"))
        .await
        .unwrap();
    assert_eq!(
        first.expect_stream_end().await.unwrap().as_deref(),
        Some("conflict")
    );
    ping_server(&mut second).await;
    dc.stop().await.unwrap();
}

#[tokio::test]
async fn binding_an_online_full_jid_at_another_gateway_replaces_the_old_session() {
    let dc = Dc::start(StackOptions {
        gateways: 2,
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let name = user("dup2");
    // Connections are spread over the gateways by the kernel; open several until one
    // pair lands on different gateways is not deterministic, so log in repeatedly: each new
    // login must end the previous one wherever it is.
    let mut prev = online(&dc, &name, "same").await;
    for _ in 0..4 {
        let mut next = Client::login(&dc.client(), &name, "secret-pw", Some("same"))
            .await
            .unwrap();
        assert_eq!(
            prev.expect_stream_end().await.unwrap().as_deref(),
            Some("conflict")
        );
        ping_server(&mut next).await;
        prev = next;
    }
    dc.stop().await.unwrap();
}

#[tokio::test]
async fn idle_connections_time_out() {
    let dc = Dc::start(StackOptions {
        idle_timeout_secs: 2,
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let mut c = online(&dc, &user("idle"), "r").await;
    assert_eq!(
        c.expect_stream_end().await.unwrap().as_deref(),
        Some("connection-timeout")
    );
    dc.stop().await.unwrap();
}

#[tokio::test]
async fn gateway_shutdown_sends_system_shutdown() {
    let mut dc = dc().await;
    let mut c = online(&dc, &user("bye"), "r").await;
    dc.gateways[0].stop().await.unwrap();
    assert_eq!(
        c.expect_stream_end().await.unwrap().as_deref(),
        Some("system-shutdown")
    );
    dc.stop().await.unwrap();
}
