//! A hostile client against the stream reader, over real sockets: characters and names that
//! would break the recipient's stream, and stanzas built to cost the gateway memory or CPU
//! before and after authentication. Each is refused with the RFC 6120 stream error while
//! other users carry on.

use std::time::{Duration, Instant};

use meerkat_testkit::client::Client;
use meerkat_xmpp::{ns, Element};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{dc, online, user};

const HEADER: &str = "<?xml version='1.0'?><stream:stream to='example.com' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";

fn body_of(el: &Element) -> Option<String> {
    el.child_text("body", ns::CLIENT)
}

/// What the attacker tried: a character reference, raw control characters, a non-character
/// and a name that is no XML name, each in a message to `to`.
fn poisons(to: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "char ref &#1;",
            format!("<message to='{to}' type='chat'><body>a&#1;b</body></message>"),
        ),
        (
            "raw U+0001",
            format!("<message to='{to}' type='chat'><body>a\u{1}b</body></message>"),
        ),
        (
            "raw NUL",
            format!("<message to='{to}' type='chat'><body>a\u{0}b</body></message>"),
        ),
        (
            "&#xFFFE;",
            format!("<message to='{to}' type='chat'><body>&#xFFFE;</body></message>"),
        ),
        (
            "element name a<b",
            format!("<message to='{to}' type='chat'><a<b/><body>x</body></message>"),
        ),
        (
            "attribute name a<b",
            format!("<message to='{to}' type='chat' a<b='1'><body>x</body></message>"),
        ),
        (
            "NUL in an attribute",
            format!("<message to='{to}' type='chat' id='a\u{0}'><body>x</body></message>"),
        ),
    ]
}

#[tokio::test]
async fn poison_characters_are_refused_and_never_reach_the_recipient() {
    let dc = dc().await;
    let (a, b, c) = (user("alice"), user("bob"), user("carol"));
    drop(online(&dc, &a, "setup").await);
    let mut bob = online(&dc, &b, "r").await;
    bob.send_presence().await.unwrap();
    // carol exists but is offline: a poison must not wait for her in offline storage either.
    drop(online(&dc, &c, "r").await);
    let (bob_jid, carol_jid) = (format!("{b}@example.com"), format!("{c}@example.com"));

    for to in [&bob_jid, &carol_jid] {
        for (what, poison) in poisons(to) {
            let mut alice = Client::login(&dc.client(), &a, "secret-pw", Some("attacker"))
                .await
                .unwrap();
            alice.send_raw(&poison).await.unwrap();
            assert_eq!(
                alice.expect_stream_end().await.unwrap().as_deref(),
                Some("not-well-formed"),
                "{what} to {to}"
            );
        }
    }
    // Bob's stream is intact: the next thing he reads is a normal message (his client, like the
    // test client, refuses a stream carrying any of the above).
    let mut alice = Client::login(&dc.client(), &a, "secret-pw", Some("phone"))
        .await
        .unwrap();
    alice.send_message(&bob_jid, "still friends").await.unwrap();
    let got = bob.next(Duration::from_secs(10)).await.unwrap();
    assert_eq!(body_of(&got).as_deref(), Some("still friends"), "{got}");
    alice.send_message(&carol_jid, "hello carol").await.unwrap();
    ping(&mut alice).await;
    let mut carol = Client::login(&dc.client(), &c, "secret-pw", Some("r"))
        .await
        .unwrap();
    carol.send_presence().await.unwrap();
    let got = carol
        .expect("the offline message", |e| e.name() == "message")
        .await
        .unwrap();
    assert_eq!(body_of(&got).as_deref(), Some("hello carol"), "{got}");
    carol
        .expect_none(Duration::from_millis(500), |e| e.name() == "message")
        .await
        .unwrap();
    dc.stop().await.unwrap();
}

async fn ping(c: &mut Client) {
    let reply = c
        .iq("get", Some("example.com"), Element::new("ping", ns::PING))
        .await
        .expect("ping");
    assert_eq!(reply.attr("type"), Some("result"), "{reply}");
}

/// Opens a plain TCP stream (no TLS, no authentication), writes `payload` after the header
/// and returns everything the server wrote until it closed the connection.
async fn unauthenticated(c2s: std::net::SocketAddr, payload: &[u8]) -> String {
    unauthenticated_for(c2s, payload, Duration::from_secs(20)).await
}

/// [`unauthenticated`], reading for at most `wait` (for input that does not end the stream).
async fn unauthenticated_for(c2s: std::net::SocketAddr, payload: &[u8], wait: Duration) -> String {
    let mut raw = tokio::net::TcpStream::connect(c2s).await.expect("connect");
    raw.write_all(HEADER.as_bytes()).await.expect("header");
    // The server may stop reading (and close) before all of it is written.
    let _ = raw.write_all(payload).await;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(wait, raw.read_to_end(&mut got)).await;
    String::from_utf8_lossy(&got).into_owned()
}

fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The issue's memory attack: 256 KB that declare a 64 KiB namespace once and then hold
/// tens of thousands of empty children (about 4 GiB once each child had its own copy).
fn namespace_bomb() -> Vec<u8> {
    let ns = "n".repeat(64 * 1024);
    let mut s = format!("<iq type='get' id='x'><q xmlns='{ns}'>");
    while s.len() < 250 * 1024 {
        s.push_str("<c/>");
    }
    s.push_str("</q></iq>");
    s.into_bytes()
}

/// 28,000 attributes in about 222 KB (quadratic duplicate checks took seconds per stanza).
fn attribute_bomb() -> Vec<u8> {
    let attrs: String = (0..28_000).map(|i| format!(" a{i}=''")).collect();
    format!("<iq type='get' id='x'{attrs}/>").into_bytes()
}

#[tokio::test]
async fn stanzas_built_to_exhaust_memory_or_cpu_are_refused_while_others_log_in() {
    let dc = dc().await;
    let mut bystander = online(&dc, &user("by"), "r").await;
    let before = resident_bytes();

    // Before authentication: 20 attackers at once, half with each bomb.
    let started = Instant::now();
    let attacks: Vec<_> = (0..20)
        .map(|i| {
            let payload = if i % 2 == 0 {
                namespace_bomb()
            } else {
                attribute_bomb()
            };
            let c2s = dc.c2s;
            tokio::spawn(async move { unauthenticated(c2s, &payload).await })
        })
        .collect();
    // Meanwhile another user's whole login (STARTTLS, SCRAM, bind) and a ping go through.
    let login = Instant::now();
    let name = user("meanwhile");
    let mut other = online(&dc, &name, "r").await;
    ping(&mut other).await;
    let login_took = login.elapsed();
    for attack in attacks {
        let answer = attack.await.unwrap();
        assert!(answer.contains("<policy-violation"), "{answer}");
    }
    let refused_in = started.elapsed();
    ping(&mut bystander).await;
    let grown = resident_bytes().saturating_sub(before);
    eprintln!(
        "20 unauthenticated bombs refused in {refused_in:?}; a login meanwhile took {login_took:?}; \
         resident memory grew by {} KiB",
        grown / 1024
    );
    // Generous bounds: the attacks cost gigabytes and seconds before the limits.
    assert!(login_took < Duration::from_secs(10), "{login_took:?}");
    assert!(grown < 200 * 1024 * 1024, "grew by {grown} bytes");

    // After authentication the same stanzas fit the size limit, and are refused for what they
    // hold: a namespace too long, too many attributes.
    for bomb in [namespace_bomb(), attribute_bomb()] {
        let mut attacker = online(&dc, &user("atk"), "r").await;
        let at = Instant::now();
        attacker
            .send_raw(std::str::from_utf8(&bomb).unwrap())
            .await
            .unwrap();
        assert_eq!(
            attacker.expect_stream_end().await.unwrap().as_deref(),
            Some("policy-violation")
        );
        assert!(at.elapsed() < Duration::from_secs(5), "{:?}", at.elapsed());
        ping(&mut bystander).await;
    }
    dc.stop().await.unwrap();
}

#[tokio::test]
async fn a_large_stanza_before_authentication_is_a_policy_violation() {
    let dc = dc().await;
    // 32 KB took the gateway from 13 to 42 MiB; before authentication 10 KiB is the limit.
    let big = format!(
        "<iq type='set' id='r'><query xmlns='jabber:iq:register'><username>{}</username></query></iq>",
        "u".repeat(32 * 1024)
    );
    let answer = unauthenticated(dc.c2s, big.as_bytes()).await;
    assert!(answer.contains("<policy-violation"), "{answer}");
    // A small one is answered as usual (not-authorized: no stanzas before authentication,
    // or the registration form): the limit is about size only.
    let answer = unauthenticated_for(
        dc.c2s,
        b"<iq type='get' id='f'><query xmlns='jabber:iq:register'/></iq>",
        Duration::from_secs(3),
    )
    .await;
    assert!(answer.contains("<stream:features"), "{answer}");
    assert!(!answer.contains("<policy-violation"), "{answer}");
    dc.stop().await.unwrap();
}
