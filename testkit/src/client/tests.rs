//! The client against a scripted in-process server: STARTTLS, PLAIN, bind, buffering and
//! stream-error detection. (SCRAM is checked against the RFC vectors in `scram`.)

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use meerkat_xmpp::{ns, Element, Inbound, Limits, StreamReader};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use super::{Client, ClientConfig, Mechanism};

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type ServerReader = StreamReader<BufReader<Box<dyn Io>>>;

async fn write(r: &mut ServerReader, s: &str) {
    let io = r.get_mut().get_mut();
    io.write_all(s.as_bytes()).await.unwrap();
    io.flush().await.unwrap();
}

async fn stanza(r: &mut ServerReader) -> Element {
    match r.next().await.unwrap() {
        Inbound::Stanza(el) => el,
        other => panic!("server expected a stanza, got {other:?}"),
    }
}

async fn open(r: &mut ServerReader, features: &str) {
    assert!(
        matches!(r.next().await.unwrap(), Inbound::Open(h) if h.to.as_deref() == Some("example.com"))
    );
    write(
        r,
        &format!("<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' from='example.com' id='s1' version='1.0'><stream:features>{features}</stream:features>"),
    )
    .await;
}

fn acceptor() -> tokio_rustls::TlsAcceptor {
    let cert = rcgen::generate_simple_self_signed(vec!["example.com".to_owned()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// Plays one session: STARTTLS, PLAIN, bind + session, two pushed stanzas, then a
/// `conflict` stream error once the client has sent a message.
async fn scripted_server(listener: TcpListener) {
    let (tcp, _) = listener.accept().await.unwrap();
    let mut r: ServerReader = StreamReader::new(
        BufReader::new(Box::new(tcp) as Box<dyn Io>),
        Limits::default(),
    );
    open(
        &mut r,
        "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>",
    )
    .await;
    assert!(stanza(&mut r).await.is("starttls", ns::TLS));
    write(&mut r, "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>").await;
    let tcp = r.into_inner().into_inner();
    let tls = acceptor().accept(tcp).await.unwrap();
    let mut r: ServerReader = StreamReader::new(
        BufReader::new(Box::new(tls) as Box<dyn Io>),
        Limits::default(),
    );
    open(&mut r, "<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-256</mechanism><mechanism>PLAIN</mechanism></mechanisms>").await;

    let auth = stanza(&mut r).await;
    assert_eq!(auth.attr("mechanism"), Some("PLAIN"));
    let creds = base64::engine::general_purpose::STANDARD
        .decode(auth.text())
        .unwrap();
    assert_eq!(creds, b"\0alice\0secret");
    write(
        &mut r,
        "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>",
    )
    .await;
    let mut r = r.restart();
    open(&mut r, "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/><session xmlns='urn:ietf:params:xml:ns:xmpp-session'><optional/></session>").await;

    let bind = stanza(&mut r).await;
    let id = bind.attr("id").unwrap().to_owned();
    assert_eq!(
        bind.get_child("bind", ns::BIND)
            .and_then(|b| b.child_text("resource", ns::BIND))
            .as_deref(),
        Some("phone")
    );
    write(&mut r, &format!("<iq type='result' id='{id}'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>alice@example.com/phone</jid></bind></iq>")).await;
    let session = stanza(&mut r).await;
    assert!(session.has_child("session", ns::SESSION));
    let id = session.attr("id").unwrap().to_owned();
    write(&mut r, &format!("<iq type='result' id='{id}'/>")).await;

    write(&mut r, "<message from='bob@example.com/x' type='chat'><body>hi</body></message> <presence from='bob@example.com/x'/>").await;
    let msg = stanza(&mut r).await;
    assert_eq!(msg.child_text("body", ns::CLIENT).as_deref(), Some("bye"));
    write(&mut r, "<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>replaced</text></stream:error></stream:stream>").await;
}

#[tokio::test]
async fn negotiates_buffers_and_detects_stream_errors() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cfg = ClientConfig::new(listener.local_addr().unwrap(), "example.com");
    let server = tokio::spawn(scripted_server(listener));

    let mut c = Client::connect(&cfg).await.unwrap();
    assert!(c.is_encrypted());
    assert_eq!(c.mechanisms(), ["SCRAM-SHA-256", "PLAIN"]);
    assert_eq!(
        c.authenticate(Mechanism::Plain, "alice", "secret")
            .await
            .unwrap(),
        Ok(())
    );
    assert_eq!(
        c.bind(Some("phone")).await.unwrap(),
        "alice@example.com/phone"
    );
    assert_eq!(c.jid(), "alice@example.com/phone");
    assert_eq!(c.bare_jid(), "alice@example.com");

    // The presence arrives after the message: the message waits in the buffer.
    c.expect("presence", |e| e.name() == "presence")
        .await
        .unwrap();
    c.expect_none(Duration::from_millis(200), |e| e.name() == "presence")
        .await
        .unwrap();
    let msg = c.next(Duration::from_secs(1)).await.unwrap();
    assert_eq!(msg.child_text("body", ns::CLIENT).as_deref(), Some("hi"));
    assert!(c.next(Duration::from_millis(100)).await.is_err());

    c.send_message("bob@example.com", "bye").await.unwrap();
    assert_eq!(
        c.expect_stream_end().await.unwrap().as_deref(),
        Some("conflict")
    );
    server.await.unwrap();
}

#[test]
fn client_can_move_between_tasks() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Client>();
}
