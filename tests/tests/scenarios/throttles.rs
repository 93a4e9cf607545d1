//! Registration and login throttles that hold across connections, gateways and a load
//! balancer (PROXY protocol), and fake SCRAM salts that every gateway agrees on: what an
//! attacker tries, over real sockets, with the production limits (the harness relaxes them
//! for loopback unless `production_throttles`).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use base64::Engine as _;
use meerkat_testkit::client::{Client, ClientConfig, Mechanism};
use meerkat_testkit::stack::{Dc, StackOptions};
use meerkat_xmpp::ns;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::user;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A DC whose gateways keep the production throttles for loopback too, with `change` made to
/// their configuration (limits under test, PROXY protocol).
async fn strict_dc(change: Option<fn(&mut c2s_gateway::Config)>) -> Dc {
    let mut gateway = c2s_gateway::Config::default();
    if let Some(change) = change {
        change(&mut gateway);
    }
    Dc::start(StackOptions {
        production_throttles: true,
        gateway: Some(gateway),
        ..StackOptions::default()
    })
    .await
    .expect("start DC")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("an address")
}

/// A TCP connection to `to` from the loopback address `from` (127/8 is all loopback: each
/// address is another client as far as the gateway can tell), after sending `preamble`.
async fn tcp_from(from: &str, to: SocketAddr, preamble: &[u8]) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(ip(from), 0))
        .expect("bind a loopback address");
    let mut tcp = socket.connect(to).await.expect("connect");
    tcp.write_all(preamble).await.expect("send the preamble");
    tcp
}

async fn client_from(cfg: &ClientConfig, from: &str, preamble: &[u8]) -> Client {
    let tcp = tcp_from(from, cfg.addr, preamble).await;
    Client::connect_on(cfg, tcp).await.expect("connect")
}

async fn register_from(
    cfg: &ClientConfig,
    from: &str,
    preamble: &[u8],
    name: &str,
) -> Result<(), String> {
    let mut c = client_from(cfg, from, preamble).await;
    c.register(name, "pw-for-throttles")
        .await
        .expect("register io")
}

/// A v2 PROXY header for a client at `source`, as HAProxy's `send-proxy-v2` sends it.
fn header_for(source: &str, gateway: SocketAddr) -> Vec<u8> {
    c2s_gateway::proxy::v2_header(source.parse().expect("a socket address"), gateway)
}

/// Whether the server closes the connection without sending a byte, within 5 s.
async fn closed_without_a_word(mut tcp: TcpStream) -> bool {
    let _ = tcp
        .write_all(b"<?xml version='1.0'?><stream:stream to='example.com' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")
        .await;
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn a_second_registration_from_one_address_is_refused_with_resource_constraint() {
    let dc = strict_dc(None).await;
    let cfg = dc.client();
    let first = user("first");
    assert_eq!(register_from(&cfg, "127.0.0.1", b"", &first).await, Ok(()));
    // Another connection, same address: refused, type wait, for the next 10 minutes.
    let mut c = client_from(&cfg, "127.0.0.1", b"").await;
    let query = meerkat_xmpp::Element::new("query", ns::REGISTER)
        .with_child(meerkat_xmpp::Element::new("username", ns::REGISTER).with_text(user("second")))
        .with_child(meerkat_xmpp::Element::new("password", ns::REGISTER).with_text("pw"));
    let reply = c.iq("set", None, query).await.unwrap();
    let error = reply
        .get_child("error", ns::CLIENT)
        .expect("an error reply");
    assert_eq!(error.attr("type"), Some("wait"), "{reply}");
    assert!(
        error.has_child("resource-constraint", ns::STANZAS_ERR),
        "{reply}"
    );

    // A registration that fails (the name is taken) is not counted against its address.
    assert_eq!(
        register_from(&cfg, "127.0.0.2", b"", &first).await,
        Err("conflict".to_owned())
    );
    assert_eq!(
        register_from(&cfg, "127.0.0.2", b"", &user("third")).await,
        Ok(())
    );
    assert_eq!(
        register_from(&cfg, "127.0.0.2", b"", &user("fourth")).await,
        Err("resource-constraint".to_owned())
    );
    dc.stop().await.unwrap();
}

#[tokio::test]
async fn parallel_wrong_guesses_on_one_account_are_counted_before_they_are_verified() {
    let dc = strict_dc(None).await;
    let cfg = dc.client();
    let victim = user("victim");
    register_from(&cfg, "127.0.0.1", b"", &victim)
        .await
        .unwrap();
    let per_account = c2s_gateway::Config::default().auth_max_failures_per_account;

    // 40 guesses at once, each on its own connection from its own address (so the address
    // limit does not stop them first), each with another wrong password.
    let started = Instant::now();
    let guesses = (0..40u8).map(|i| {
        let cfg = cfg.clone();
        let victim = victim.clone();
        tokio::spawn(async move {
            let mut c = client_from(&cfg, &format!("127.0.1.{}", i + 1), b"").await;
            c.authenticate(Mechanism::ScramSha256, &victim, &format!("guess-{i}"))
                .await
                .expect("sasl io")
        })
    });
    let mut verified = 0;
    let mut refused = 0;
    for g in guesses {
        match g.await.unwrap() {
            Err(c) if c == "not-authorized" => verified += 1,
            Err(c) if c == "temporary-auth-failure" => refused += 1,
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    let took = started.elapsed();
    eprintln!("40 parallel guesses: {verified} verified, {refused} refused, in {took:?}");
    assert!(
        verified <= per_account as usize,
        "{verified} guesses verified, the limit is {per_account}"
    );
    assert_eq!(verified + refused, 40);
    assert!(took < Duration::from_secs(60), "answered in {took:?}");

    // The account is locked for everyone, whatever their address, until the window ends:
    // even the right password is not verified.
    let mut owner = client_from(&cfg, "127.0.2.1", b"").await;
    assert_eq!(
        owner
            .authenticate(Mechanism::ScramSha256, &victim, "pw-for-throttles")
            .await
            .unwrap(),
        Err("temporary-auth-failure".to_owned())
    );
    // Other accounts are not affected.
    let other = user("other");
    register_from(&cfg, "127.0.2.2", b"", &other).await.unwrap();
    let mut c = client_from(&cfg, "127.0.2.2", b"").await;
    assert_eq!(
        c.authenticate(Mechanism::Plain, &other, "pw-for-throttles")
            .await
            .unwrap(),
        Ok(())
    );
    dc.stop().await.unwrap();
}

#[tokio::test]
async fn a_login_to_ones_own_account_does_not_clear_the_address_failures() {
    let dc = strict_dc(Some(|c| {
        c.auth_max_failures_per_address = 4;
        // No delays: this test is about counting.
        c.auth_failures_before_delay = 100;
    }))
    .await;
    let cfg = dc.client();
    let own = user("own");
    register_from(&cfg, "127.0.0.3", b"", &own).await.unwrap();
    let guess = |n: u32| {
        let cfg = cfg.clone();
        async move {
            let mut c = client_from(&cfg, "127.0.0.3", b"").await;
            c.authenticate(Mechanism::ScramSha1, &format!("target{n}"), "guess")
                .await
                .unwrap()
        }
    };
    for n in 0..3 {
        assert_eq!(guess(n).await, Err("not-authorized".to_owned()));
    }
    let mut c = client_from(&cfg, "127.0.0.3", b"").await;
    assert_eq!(
        c.authenticate(Mechanism::ScramSha256, &own, "pw-for-throttles")
            .await
            .unwrap(),
        Ok(())
    );
    // The success is taken back off its answer's path; let it land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    // One failure left for the address (3 of 4 used), not four.
    assert_eq!(guess(3).await, Err("not-authorized".to_owned()));
    assert_eq!(guess(4).await, Err("temporary-auth-failure".to_owned()));
    // Another address is not affected.
    let mut c = client_from(&cfg, "127.0.0.4", b"").await;
    assert_eq!(
        c.authenticate(Mechanism::ScramSha1, "target5", "guess")
            .await
            .unwrap(),
        Err("not-authorized".to_owned())
    );
    dc.stop().await.unwrap();
}

#[tokio::test]
async fn two_gateways_of_a_dc_share_the_throttles() {
    let mut dc = strict_dc(Some(|c| c.auth_max_failures_per_account = 2)).await;
    let first = dc.client();
    let second = dc.start_gateway_on_own_port().await.unwrap();
    assert_ne!(first.addr, second.addr);
    assert_eq!(
        register_from(&first, "127.0.0.5", b"", &user("a")).await,
        Ok(())
    );
    assert_eq!(
        register_from(&second, "127.0.0.5", b"", &user("b")).await,
        Err("resource-constraint".to_owned())
    );
    // Guesses on one account at two gateways count together.
    for cfg in [&first, &second] {
        let mut c = client_from(cfg, "127.0.0.6", b"").await;
        assert_eq!(
            c.authenticate(Mechanism::Plain, "shared", "guess")
                .await
                .unwrap(),
            Err("not-authorized".to_owned())
        );
    }
    let mut c = client_from(&first, "127.0.0.7", b"").await;
    assert_eq!(
        c.authenticate(Mechanism::Plain, "shared", "guess")
            .await
            .unwrap(),
        Err("temporary-auth-failure".to_owned())
    );
    dc.stop().await.unwrap();
}

/// The gateway trusts 127.0.0.2 as its load balancer.
fn behind_a_balancer(c: &mut c2s_gateway::Config) {
    c.proxy_protocol_from = "127.0.0.2".parse().expect("an address");
}

#[tokio::test]
async fn a_proxy_protocol_header_carries_the_client_address() {
    let dc = strict_dc(Some(behind_a_balancer)).await;
    let cfg = dc.client();
    let gw = cfg.addr;
    // Two clients behind the balancer: each has its own registration allowance.
    let a = header_for("198.51.100.1:40001", gw);
    assert_eq!(
        register_from(&cfg, "127.0.0.2", &a, &user("a")).await,
        Ok(())
    );
    let a_again = header_for("198.51.100.1:40002", gw);
    assert_eq!(
        register_from(&cfg, "127.0.0.2", &a_again, &user("b")).await,
        Err("resource-constraint".to_owned())
    );
    let b = header_for("198.51.100.2:40003", gw);
    assert_eq!(
        register_from(&cfg, "127.0.0.2", &b, &user("c")).await,
        Ok(())
    );
    // Version 1, the text form.
    let v1 = format!("PROXY TCP4 198.51.100.3 127.0.0.1 40004 {}\r\n", gw.port());
    assert_eq!(
        register_from(&cfg, "127.0.0.2", v1.as_bytes(), &user("d")).await,
        Ok(())
    );
    // A v2 LOCAL header (the balancer's health check) stands for the balancer itself.
    let mut local = c2s_gateway::proxy::V2_SIGNATURE.to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0, 0]);
    let check = client_from(&cfg, "127.0.0.2", &local).await;
    assert!(check.features().has_child("mechanisms", ns::SASL));
    // Direct clients (not from the balancer) need no header.
    assert_eq!(
        register_from(&cfg, "127.0.0.1", b"", &user("e")).await,
        Ok(())
    );
    dc.stop().await.unwrap();
}

#[tokio::test]
async fn untrusted_or_malformed_proxy_headers_close_the_connection() {
    let dc = strict_dc(Some(behind_a_balancer)).await;
    let cfg = dc.client();
    let gw = cfg.addr;
    // A header from a source that is not the balancer: someone forging their address.
    let forged = tcp_from("127.0.0.1", gw, &header_for("203.0.113.1:1", gw)).await;
    assert!(closed_without_a_word(forged).await, "forged v2 header");
    let forged = tcp_from("127.0.0.1", gw, b"PROXY TCP4 203.0.113.1 127.0.0.1 1 2\r\n").await;
    assert!(closed_without_a_word(forged).await, "forged v1 header");
    // From the balancer: no header, a malformed one, a truncated one.
    let none = tcp_from("127.0.0.2", gw, b"").await;
    assert!(
        closed_without_a_word(none).await,
        "no header from the balancer"
    );
    let bad = tcp_from(
        "127.0.0.2",
        gw,
        b"PROXY TCP4 203.0.113.999 127.0.0.1 1 2\r\n",
    )
    .await;
    assert!(closed_without_a_word(bad).await, "malformed v1");
    let mut v2 = header_for("203.0.113.1:1", gw);
    v2[12] = 0x23;
    let bad = tcp_from("127.0.0.2", gw, &v2).await;
    assert!(closed_without_a_word(bad).await, "bad v2 command");
    // The gateway serves on.
    let mut c = client_from(&cfg, "127.0.0.1", b"").await;
    assert_eq!(c.register(&user("ok"), "pw").await.unwrap(), Ok(()));
    dc.stop().await.unwrap();
}

/// The salt and iteration count a gateway answers to a SCRAM-SHA-256 client-first for `name`.
async fn scram_salt(cfg: &ClientConfig, name: &str) -> String {
    let mut c = Client::connect(cfg).await.expect("connect");
    let first = format!("n,,n={name},r=fixednonce");
    c.send_raw(&format!(
        "<auth xmlns='{}' mechanism='SCRAM-SHA-256'>{}</auth>",
        ns::SASL,
        B64.encode(first)
    ))
    .await
    .expect("send auth");
    let challenge = c.next(Duration::from_secs(10)).await.expect("a challenge");
    assert!(challenge.is("challenge", ns::SASL), "{challenge}");
    let data = B64.decode(challenge.text().trim()).expect("base64");
    let text = String::from_utf8(data).expect("UTF-8");
    // r=<nonce>,s=<salt>,i=<iterations>: the nonce differs per exchange, the rest must not.
    text.split(',').skip(1).collect::<Vec<_>>().join(",")
}

#[tokio::test]
async fn every_gateway_answers_the_same_fake_salt_for_an_unknown_user() {
    let mut dc = Dc::start(StackOptions::default()).await.unwrap();
    let first = dc.client();
    let second = dc.start_gateway_on_own_port().await.unwrap();
    let ghost = user("ghost");
    let a = scram_salt(&first, &ghost).await;
    let b = scram_salt(&second, &ghost).await;
    assert!(a.starts_with("s=") && a.contains(",i="), "{a}");
    assert_eq!(a, b, "two gateways, one answer");
    assert_eq!(
        a,
        scram_salt(&first, &ghost).await,
        "and the same every time"
    );
    assert_ne!(a, scram_salt(&first, &user("ghost")).await, "per user");
    dc.stop().await.unwrap();
}
