//! XMPP over WebSocket (RFC 7395) and XEP-0156 discovery on the gateway's HTTP listener: a web
//! client logs in with SCRAM and chats with a TCP client; stream management resumes over it;
//! the upgrade's checks (subprotocol, origins); bad messages end the stream with the RFC's
//! error and harm nobody else; host-meta names the endpoint a client then logs in at.

use std::time::Duration;

use meerkat_testkit::client::pred::message_with_body;
use meerkat_testkit::client::ws::{Handshake, WsConn};
use meerkat_testkit::client::{Client, ClientConfig, Mechanism};
use meerkat_testkit::stack::{Dc, StackOptions};
use meerkat_xmpp::{ns, Element};

use crate::{dc, online, user};

const PW: &str = "secret-pw";

/// Registers `name` and logs in over WebSocket at `cfg` with SCRAM-SHA-256.
async fn web_online(cfg: &ClientConfig, name: &str, resource: &str) -> Client {
    Client::register_account(cfg, name, PW)
        .await
        .expect("register over WebSocket");
    let mut c = Client::connect(cfg).await.expect("connect over WebSocket");
    c.authenticate(Mechanism::ScramSha256, name, PW)
        .await
        .expect("authenticate io")
        .expect("authenticated");
    c.bind(Some(resource)).await.expect("bind");
    c
}

#[tokio::test]
async fn a_web_client_logs_in_with_scram_and_chats_with_a_tcp_client() {
    let dc = dc().await;
    let cfg = dc.client_websocket();
    let web = Client::connect(&cfg).await.unwrap();
    assert!(web.is_encrypted());
    // TLS is the HTTPS listener's: no STARTTLS over WebSocket; inside TLS, PLAIN too.
    assert!(!web.features().has_child("starttls", ns::TLS));
    let mechanisms = web.mechanisms();
    for m in ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"] {
        assert!(mechanisms.iter().any(|x| x == m), "{mechanisms:?}");
    }
    assert_eq!(web.stream_header().from.as_deref(), Some("example.com"));
    drop(web);

    let (w, t) = (user("web"), user("tcp"));
    let mut web = web_online(&cfg, &w, "browser").await;
    let mut tcp = online(&dc, &t, "desk").await;
    let (wj, tj) = (web.jid().to_owned(), tcp.jid().to_owned());
    assert!(wj.ends_with("/browser"), "{wj}");

    web.send_message(&tj, "from the browser").await.unwrap();
    let got = tcp
        .expect("the web message", message_with_body("from the browser"))
        .await
        .unwrap();
    assert_eq!(got.attr("from"), Some(wj.as_str()));
    tcp.send_message(&wj, "to the browser").await.unwrap();
    let got = web
        .expect("the tcp message", message_with_body("to the browser"))
        .await
        .unwrap();
    assert_eq!(got.attr("from"), Some(tj.as_str()));

    // An iq answered by the server, and a WebSocket ping answered with a pong.
    web.iq_ok("get", Some("example.com"), Element::new("ping", ns::PING))
        .await
        .unwrap();
    web.websocket()
        .unwrap()
        .ping(b"are you there", Duration::from_secs(5))
        .await
        .unwrap();
    web.close().await.unwrap();
    dc.stop().await.unwrap();
}

/// Plain HTTP is treated like unencrypted TCP (the gateway's `tls_required` default): nothing
/// to authenticate with there, and no STARTTLS to get out of it.
#[tokio::test]
async fn plain_http_follows_the_policy_of_unencrypted_tcp() {
    let dc = dc().await;
    let mut web = Client::connect(&dc.client_websocket_plain()).await.unwrap();
    assert!(!web.is_encrypted());
    assert!(!web.features().has_child("starttls", ns::TLS));
    assert!(web.mechanisms().is_empty(), "{:?}", web.mechanisms());
    let refused = web
        .authenticate(Mechanism::ScramSha256, "nobody", PW)
        .await
        .unwrap();
    assert_eq!(refused, Err("encryption-required".to_owned()));
    dc.stop().await.unwrap();
}

#[tokio::test]
async fn the_upgrade_needs_the_xmpp_subprotocol_and_an_allowed_origin() {
    let gateway = c2s_gateway::Config {
        websocket_origins: "https://chat.example.com".parse().unwrap(),
        ..c2s_gateway::Config::default()
    };
    let dc = Dc::start(StackOptions {
        gateway: Some(gateway),
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let https = dc.https.unwrap();
    let attempt = |protocol: Option<&'static str>, origin: Option<&'static str>| async move {
        let tcp = tokio::net::TcpStream::connect(https).await.unwrap();
        let conn = meerkat_testkit::client::conn_tls(tcp, "example.com")
            .await
            .unwrap();
        WsConn::connect(conn, &https.to_string(), &Handshake { protocol, origin }).await
    };
    let refused = attempt(None, Some("https://chat.example.com"))
        .await
        .err()
        .unwrap();
    assert!(format!("{refused:#}").contains("400"), "{refused:#}");
    let refused = attempt(Some("chat, superchat"), Some("https://chat.example.com"))
        .await
        .err()
        .unwrap();
    assert!(format!("{refused:#}").contains("400"), "{refused:#}");
    let refused = attempt(Some("xmpp"), Some("https://evil.example"))
        .await
        .err()
        .unwrap();
    assert!(format!("{refused:#}").contains("403"), "{refused:#}");
    attempt(Some("xmpp"), Some("https://chat.example.com"))
        .await
        .unwrap();
    dc.stop().await.unwrap();
}

/// Each bad message ends its own stream with the error RFC 7395 and RFC 6120 prescribe; a
/// bystander's session over WebSocket goes on, and the gateway takes new logins.
#[tokio::test]
async fn bad_messages_end_the_stream_with_the_rfc_error_and_harm_nobody_else() {
    let dc = dc().await;
    let cfg = dc.client_websocket();
    let by = user("by");
    let mut bystander = web_online(&cfg, &by, "web").await;
    let bj = bystander.jid().to_owned();
    let two_kib = "x".repeat(2048);
    let cases: Vec<(&str, String)> = vec![
        // Larger than the stanza limit before authentication (10 KiB).
        (
            "policy-violation",
            format!(
                "<iq type='get' id='a'><query xmlns='jabber:iq:register'><x>{}</x></query></iq>",
                two_kib.repeat(6)
            ),
        ),
        // Larger than max_stanza_bytes (256 KiB).
        (
            "policy-violation",
            format!("<message><body>{}</body></message>", two_kib.repeat(140)),
        ),
        ("not-well-formed", "<message><body>half".to_owned()),
        ("not-well-formed", "<message/><message/>".to_owned()),
        ("not-well-formed", "<presence/>trailing text".to_owned()),
        ("not-well-formed", "just text".to_owned()),
        (
            "not-well-formed",
            format!("<?xml version='1.0'?><message to='{bj}'/>"),
        ),
        ("restricted-xml", "<!-- a comment --><presence/>".to_owned()),
    ];
    for (want, frame) in &cases {
        let mut c = Client::connect(&cfg).await.unwrap();
        c.websocket().unwrap().send_frame(frame).await.unwrap();
        let end = c.expect_stream_end().await.unwrap();
        assert_eq!(
            end.as_deref(),
            Some(*want),
            "{}",
            &frame[..frame.len().min(80)]
        );
    }
    // Far larger: the WebSocket layer refuses it from its frame header, before buffering it;
    // the client may be cut off while it still writes.
    let mut c = Client::connect(&cfg).await.unwrap();
    let huge = format!("<message><body>{}</body></message>", two_kib.repeat(1024));
    let sent = c.websocket().unwrap().send_frame(&huge).await;
    match c.expect_stream_end().await.unwrap() {
        Some(condition) => assert_eq!(condition, "policy-violation"),
        // Reset before the client read the error: only while it was still writing.
        None => assert!(sent.is_err(), "closed without a stream error"),
    }
    // After authentication too: several elements in one message, addressed to the bystander.
    let a = user("a");
    let mut attacker = web_online(&cfg, &a, "web").await;
    attacker
        .websocket()
        .unwrap()
        .send_frame(&format!(
            "<message to='{bj}'><body>one</body></message><message to='{bj}'><body>two</body></message>"
        ))
        .await
        .unwrap();
    assert_eq!(
        attacker.expect_stream_end().await.unwrap().as_deref(),
        Some("not-well-formed")
    );
    // Binary messages are not XMPP.
    let mut c = Client::connect(&cfg).await.unwrap();
    c.websocket()
        .unwrap()
        .send_binary(b"<presence/>")
        .await
        .unwrap();
    assert_eq!(
        c.expect_stream_end().await.unwrap().as_deref(),
        Some("unsupported-encoding")
    );

    // The bystander got none of it, and goes on; a new user logs in.
    bystander
        .expect_none(Duration::from_millis(500), |e| e.is("message", ns::CLIENT))
        .await
        .unwrap();
    bystander
        .iq_ok("get", Some("example.com"), Element::new("ping", ns::PING))
        .await
        .unwrap();
    let mut later = web_online(&cfg, &user("later"), "web").await;
    later.send_message(&bj, "still here").await.unwrap();
    bystander
        .expect("a normal message", message_with_body("still here"))
        .await
        .unwrap();
    dc.stop().await.unwrap();
}

/// XEP-0198 over WebSocket: the connection drops, a message comes meanwhile, the client
/// resumes on a new WebSocket and gets it.
#[tokio::test]
async fn stream_management_resumes_over_websocket() {
    let dc = dc().await;
    let cfg = dc.client_websocket();
    let w = user("w");
    let mut web = web_online(&cfg, &w, "browser").await;
    let enabled = web.enable_sm(None).await.unwrap();
    let previd = enabled.attr("id").unwrap().to_owned();
    let wj = web.jid().to_owned();
    let mut tcp = online(&dc, &user("t"), "desk").await;
    tcp.send_message(&wj, "before").await.unwrap();
    web.expect("before", message_with_body("before"))
        .await
        .unwrap();
    let h = web.sm_received().unwrap();
    web.drop_connection();

    tcp.send_message(&wj, "while away").await.unwrap();
    let (mut web, answer) = Client::resume(&cfg, &w, PW, &previd, h, &wj).await.unwrap();
    assert_eq!(answer.name(), "resumed", "{answer}");
    web.expect("what came meanwhile", message_with_body("while away"))
        .await
        .unwrap();
    web.send_message(tcp.jid(), "back").await.unwrap();
    tcp.expect("the resumed session's message", message_with_body("back"))
        .await
        .unwrap();
    dc.stop().await.unwrap();
}

/// XEP-0156: host-meta (XRD and JSON) names the WebSocket endpoint; a client that knows only
/// the HTTPS address finds it there and logs in.
#[tokio::test]
async fn host_meta_names_the_websocket_endpoint_a_client_logs_in_at() {
    let dc = dc().await;
    let https = dc.https.unwrap();
    let http = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let want = format!("wss://{https}/xmpp-websocket");
    let xrd = http
        .get(format!("https://{https}/.well-known/host-meta"))
        .send()
        .await
        .unwrap();
    assert_eq!(xrd.status(), 200);
    assert_eq!(
        xrd.headers()["access-control-allow-origin"]
            .to_str()
            .unwrap(),
        "*"
    );
    let xrd = Element::parse(&xrd.text().await.unwrap()).unwrap();
    let link = xrd
        .children()
        .find(|l| l.attr("rel") == Some("urn:xmpp:alt-connections:websocket"))
        .expect("a websocket link");
    assert_eq!(link.attr("href"), Some(want.as_str()));
    let json: serde_json::Value = http
        .get(format!("https://{https}/.well-known/host-meta.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let href = json["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["rel"] == "urn:xmpp:alt-connections:websocket")
        .expect("a websocket link")["href"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(href, want);

    // Connect where discovery said.
    let authority = href
        .strip_prefix("wss://")
        .and_then(|r| r.strip_suffix("/xmpp-websocket"))
        .unwrap();
    let cfg = ClientConfig::websocket(authority.parse().unwrap(), "example.com", true);
    let mut c = web_online(&cfg, &user("found"), "web").await;
    c.iq_ok("get", Some("example.com"), Element::new("ping", ns::PING))
        .await
        .unwrap();
    dc.stop().await.unwrap();
}
