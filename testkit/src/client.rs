//! The XMPP client every end-to-end test drives: real sockets, STARTTLS or direct TLS, its
//! own SASL (SCRAM verified against the server's signature, PLAIN), in-band registration,
//! resource binding, and a stanza buffer so a test can wait for one stanza without losing
//! the others that arrive around it.

mod conn;
pub mod pred;
pub mod scram;
pub mod ws;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use meerkat_xmpp::{escape_attr, ns, Element, Inbound, ReadError, StreamHeader};

pub use conn::Conn;
use conn::{Wire, XmlConn};
use scram::{ScramClient, ScramHash};

/// How long `expect` and the negotiation steps wait by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS connection over `tcp` that accepts any certificate, for handshakes a test makes by
/// hand ([`ws::WsConn::connect`]).
pub async fn conn_tls(tcp: tokio::net::TcpStream, domain: &str) -> anyhow::Result<Conn> {
    Conn::Plain(tcp).into_tls(domain).await
}

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub addr: SocketAddr,
    /// The XMPP domain (stream `to`, TLS server name).
    pub domain: String,
    /// TLS from the first byte (XEP-0368) instead of STARTTLS.
    pub direct_tls: bool,
    /// Negotiate STARTTLS when offered on a plain connection.
    pub starttls: bool,
    /// XMPP over WebSocket (RFC 7395) at `addr`'s `/xmpp-websocket` (an HTTP port; with
    /// `direct_tls`, the HTTPS one).
    pub websocket: bool,
}

impl ClientConfig {
    /// Plain TCP with STARTTLS.
    pub fn new(addr: SocketAddr, domain: impl Into<String>) -> ClientConfig {
        ClientConfig {
            addr,
            domain: domain.into(),
            direct_tls: false,
            starttls: true,
            websocket: false,
        }
    }

    /// XMPP over WebSocket at `addr`: `wss://` when `tls` (the HTTPS port), else `ws://`.
    pub fn websocket(addr: SocketAddr, domain: impl Into<String>, tls: bool) -> ClientConfig {
        ClientConfig {
            websocket: true,
            direct_tls: tls,
            starttls: false,
            ..ClientConfig::new(addr, domain)
        }
    }

    /// Direct TLS (the 5223-style port).
    pub fn direct_tls(addr: SocketAddr, domain: impl Into<String>) -> ClientConfig {
        ClientConfig {
            direct_tls: true,
            ..ClientConfig::new(addr, domain)
        }
    }

    /// Plain TCP that never upgrades (for "encryption-required" tests).
    pub fn without_tls(addr: SocketAddr, domain: impl Into<String>) -> ClientConfig {
        ClientConfig {
            starttls: false,
            ..ClientConfig::new(addr, domain)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    ScramSha1,
    ScramSha256,
    Plain,
}

impl Mechanism {
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::ScramSha1 => "SCRAM-SHA-1",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::Plain => "PLAIN",
        }
    }
}

/// One connected XML stream.
pub struct Client {
    conn: Option<Wire>,
    domain: String,
    header: StreamHeader,
    features: Element,
    /// Bound full JID, or the bare JID once authenticated, or empty.
    jid: String,
    /// Stanzas read while looking for something else.
    buffer: VecDeque<Element>,
    /// Set once the server ended the stream: `Some(condition)` for a stream error.
    ended: Option<Option<String>>,
    next_id: u64,
    /// With stream management: the stanzas received since it was enabled (XEP-0198 `h`).
    sm_h: Option<u32>,
}

impl Client {
    /// TCP connect, open the stream, read features; STARTTLS (if configured and offered) and
    /// restart. No authentication yet.
    pub async fn connect(cfg: &ClientConfig) -> anyhow::Result<Client> {
        let tcp = tokio::net::TcpStream::connect(cfg.addr)
            .await
            .with_context(|| format!("connect to {}", cfg.addr))?;
        Client::connect_on(cfg, tcp).await
    }

    /// [`Client::connect`] over a TCP connection the caller opened (from a chosen local
    /// address, or after a PROXY protocol header, as a load balancer would).
    pub async fn connect_on(
        cfg: &ClientConfig,
        tcp: tokio::net::TcpStream,
    ) -> anyhow::Result<Client> {
        let _ = tcp.set_nodelay(true);
        let mut conn = Conn::Plain(tcp);
        if cfg.direct_tls {
            conn = conn.into_tls(&cfg.domain).await?;
        }
        let wire = if cfg.websocket {
            let host = cfg.addr.to_string();
            Wire::Ws(ws::WsConn::connect(conn, &host, &ws::Handshake::default()).await?)
        } else {
            Wire::Xml(XmlConn::new(conn))
        };
        let mut client = Client {
            conn: Some(wire),
            domain: cfg.domain.clone(),
            header: StreamHeader::default(),
            features: Element::new("features", ns::STREAM),
            jid: String::new(),
            buffer: VecDeque::new(),
            ended: None,
            next_id: 0,
            sm_h: None,
        };
        client.open_stream().await?;
        let offered = client.features.has_child("starttls", ns::TLS);
        if cfg.starttls && !client.is_encrypted() && offered {
            client
                .send_raw(&format!("<starttls xmlns='{}'/>", ns::TLS))
                .await?;
            let reply = client.read_nonza(DEFAULT_TIMEOUT).await?;
            if !reply.is("proceed", ns::TLS) {
                bail!("STARTTLS refused: {reply}");
            }
            let Some(Wire::Xml(plain)) = client.conn.take() else {
                bail!("STARTTLS on a WebSocket");
            };
            client.conn = Some(Wire::Xml(plain.starttls(&cfg.domain).await?));
            client.open_stream().await?;
        }
        Ok(client)
    }

    /// The last `<stream:features/>` received.
    pub fn features(&self) -> &Element {
        &self.features
    }

    /// The server's last stream header (its `from`, `id`, `version`).
    pub fn stream_header(&self) -> &StreamHeader {
        &self.header
    }

    /// SASL mechanisms in the current features.
    pub fn mechanisms(&self) -> Vec<String> {
        self.features
            .get_child("mechanisms", ns::SASL)
            .map(|m| {
                m.children()
                    .filter(|c| c.is("mechanism", ns::SASL))
                    .map(Element::text)
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn is_encrypted(&self) -> bool {
        self.conn.as_ref().is_some_and(Wire::is_tls)
    }

    /// XEP-0077 registration before authentication. `Ok(Err(condition))` when the server
    /// refuses (e.g. "conflict", "not-acceptable", "not-allowed").
    pub async fn register(
        &mut self,
        username: &str,
        password: &str,
    ) -> anyhow::Result<Result<(), String>> {
        let form = self
            .iq("get", None, Element::new("query", ns::REGISTER))
            .await?;
        if let Some(cond) = stanza_error_condition(&form) {
            return Ok(Err(cond));
        }
        let query = Element::new("query", ns::REGISTER)
            .with_child(Element::new("username", ns::REGISTER).with_text(username))
            .with_child(Element::new("password", ns::REGISTER).with_text(password));
        let reply = self.iq("set", None, query).await?;
        Ok(match stanza_error_condition(&reply) {
            Some(cond) => Err(cond),
            None => Ok(()),
        })
    }

    /// SASL authentication. On success the stream restarts and new features are read;
    /// `Ok(Err(condition))` on `<failure/>` (e.g. "not-authorized", "invalid-mechanism",
    /// "encryption-required"). A server that fails to prove it knows the password (SCRAM)
    /// is an `Err`.
    pub async fn authenticate(
        &mut self,
        mech: Mechanism,
        username: &str,
        password: &str,
    ) -> anyhow::Result<Result<(), String>> {
        let (mut scram, initial) = sasl_start(mech, username, password)?;
        self.send_raw(&format!(
            "<auth xmlns='{}' mechanism='{}'>{}</auth>",
            ns::SASL,
            mech.name(),
            B64.encode(initial)
        ))
        .await?;
        let mut answered_first = false;
        loop {
            let el = self.read_nonza(DEFAULT_TIMEOUT).await?;
            if el.ns() != ns::SASL {
                bail!("unexpected element during SASL: {el}");
            }
            match el.name() {
                "failure" => {
                    let cond = el
                        .children()
                        .find(|c| c.name() != "text")
                        .map(|c| c.name().to_owned())
                        .unwrap_or_default();
                    return Ok(Err(cond));
                }
                "challenge" => {
                    let data = decode_sasl(&el)?;
                    let scram = scram
                        .as_mut()
                        .ok_or_else(|| anyhow!("unexpected challenge for PLAIN"))?;
                    let response = if !answered_first {
                        answered_first = true;
                        scram.client_final(&data)?
                    } else {
                        // server-final sent as a challenge (RFC 6120 §6.3.10 allows it).
                        scram.verify_server_final(&data)?;
                        String::new()
                    };
                    self.send_raw(&format!(
                        "<response xmlns='{}'>{}</response>",
                        ns::SASL,
                        B64.encode(response)
                    ))
                    .await?;
                }
                "success" => {
                    if let Some(scram) = &scram {
                        let data = decode_sasl(&el)?;
                        if !data.is_empty() || answered_first {
                            // An empty success after a server-final challenge is fine.
                            if !data.is_empty() {
                                scram.verify_server_final(&data)?;
                            }
                        } else {
                            bail!("SASL success without server-final");
                        }
                    }
                    self.jid = format!("{}@{}", username.to_lowercase(), self.domain);
                    self.conn_mut()?.restart()?;
                    self.open_stream().await?;
                    return Ok(Ok(()));
                }
                other => bail!("unexpected SASL element <{other}/>"),
            }
        }
    }

    /// SASL2 authentication (XEP-0388) with `inline` requests in `<authenticate/>` (e.g. an
    /// XEP-0198 `<resume/>`). On success returns `<success/>` (its additional data checked as
    /// SCRAM's server-final); unless it holds `<resumed/>`, the stream features that follow it
    /// (no restart) become the client's. `Ok(Err(condition))` on `<failure/>`.
    pub async fn authenticate_sasl2(
        &mut self,
        mech: Mechanism,
        username: &str,
        password: &str,
        inline: &[Element],
    ) -> anyhow::Result<Result<Element, String>> {
        let (mut scram, initial) = sasl_start(mech, username, password)?;
        let mut authenticate = Element::new("authenticate", ns::SASL2)
            .with_attr("mechanism", mech.name())
            .with_child(Element::new("initial-response", ns::SASL2).with_text(B64.encode(initial)))
            .with_child(
                Element::new("user-agent", ns::SASL2)
                    .with_attr("id", uuid::Uuid::new_v4().to_string())
                    .with_child(Element::new("software", ns::SASL2).with_text("meerkat-testkit")),
            );
        for el in inline {
            authenticate.push_child(el.clone());
        }
        self.send(&authenticate).await?;
        loop {
            let el = self.read_nonza(DEFAULT_TIMEOUT).await?;
            if el.ns() != ns::SASL2 {
                bail!("unexpected element during SASL2: {el}");
            }
            match el.name() {
                "failure" => {
                    let cond = el
                        .children()
                        .find(|c| c.ns() == ns::SASL)
                        .map(|c| c.name().to_owned())
                        .unwrap_or_default();
                    return Ok(Err(cond));
                }
                "challenge" => {
                    let data = decode_sasl(&el)?;
                    let scram = scram
                        .as_mut()
                        .ok_or_else(|| anyhow!("unexpected challenge for PLAIN"))?;
                    let response = scram.client_final(&data)?;
                    self.send_raw(&format!(
                        "<response xmlns='{}'>{}</response>",
                        ns::SASL2,
                        B64.encode(response)
                    ))
                    .await?;
                }
                "success" => {
                    if let Some(scram) = &scram {
                        let data = el
                            .get_child("additional-data", ns::SASL2)
                            .ok_or_else(|| anyhow!("SASL2 success without server-final: {el}"))?;
                        scram.verify_server_final(&decode_sasl(data)?)?;
                    }
                    let aid = el
                        .child_text("authorization-identifier", ns::SASL2)
                        .ok_or_else(|| anyhow!("SASL2 success without an identifier: {el}"))?;
                    self.jid = aid;
                    if !el.has_child("resumed", ns::SM) {
                        let features = self.read_nonza(DEFAULT_TIMEOUT).await?;
                        if !features.is("features", ns::STREAM) {
                            bail!("no stream features after SASL2 success: {features}");
                        }
                        self.features = features;
                    }
                    return Ok(Ok(el));
                }
                other => bail!("unexpected SASL2 element <{other}/>"),
            }
        }
    }

    /// Binds a resource (`None`: the server picks one) and returns the full JID. Also sends
    /// the legacy `<session/>` request when the server advertises it.
    pub async fn bind(&mut self, resource: Option<&str>) -> anyhow::Result<String> {
        let mut bind = Element::new("bind", ns::BIND);
        if let Some(r) = resource {
            bind.push_child(Element::new("resource", ns::BIND).with_text(r));
        }
        let reply = self.iq("set", None, bind).await?;
        if let Some(cond) = stanza_error_condition(&reply) {
            bail!("bind failed: {cond}");
        }
        let jid = reply
            .get_child("bind", ns::BIND)
            .and_then(|b| b.child_text("jid", ns::BIND))
            .ok_or_else(|| anyhow!("bind result without jid: {reply}"))?;
        self.jid = jid.clone();
        if self.features.has_child("session", ns::SESSION) {
            let reply = self
                .iq("set", None, Element::new("session", ns::SESSION))
                .await?;
            if let Some(cond) = stanza_error_condition(&reply) {
                bail!("session establishment failed: {cond}");
            }
        }
        Ok(jid)
    }

    /// Connect, SCRAM-SHA-256, bind.
    pub async fn login(
        cfg: &ClientConfig,
        username: &str,
        password: &str,
        resource: Option<&str>,
    ) -> anyhow::Result<Client> {
        let mut client = Client::connect(cfg).await?;
        if let Err(cond) = client
            .authenticate(Mechanism::ScramSha256, username, password)
            .await?
        {
            bail!("authentication of {username} failed: {cond}");
        }
        client.bind(resource).await?;
        Ok(client)
    }

    /// Registers the account on a connection of its own (a `conflict` counts as done), then
    /// logs in.
    pub async fn register_and_login(
        cfg: &ClientConfig,
        username: &str,
        password: &str,
        resource: Option<&str>,
    ) -> anyhow::Result<Client> {
        Client::register_account(cfg, username, password).await?;
        Client::login(cfg, username, password, resource).await
    }

    /// Registers an account on a connection of its own; an existing account (`conflict`) is
    /// not an error.
    pub async fn register_account(
        cfg: &ClientConfig,
        username: &str,
        password: &str,
    ) -> anyhow::Result<()> {
        let mut reg = Client::connect(cfg).await?;
        match reg.register(username, password).await? {
            Ok(()) => {}
            Err(cond) if cond == "conflict" => {}
            Err(cond) => bail!("registration of {username} failed: {cond}"),
        }
        reg.close().await
    }

    /// The bound full JID (the bare JID between authentication and binding).
    pub fn jid(&self) -> &str {
        &self.jid
    }

    /// The bare part of [`Client::jid`].
    pub fn bare_jid(&self) -> &str {
        self.jid.split('/').next().unwrap_or_default()
    }

    pub async fn send(&mut self, stanza: &Element) -> anyhow::Result<()> {
        self.send_raw(&stanza.to_client_xml()).await
    }

    /// Writes bytes as they are (for malformed-input tests).
    pub async fn send_raw(&mut self, xml: &str) -> anyhow::Result<()> {
        self.conn_mut()?.write(xml).await
    }

    /// The next stanza (buffered ones first) within `timeout`. A stream error or the end of
    /// the stream is an `Err`.
    pub async fn next(&mut self, timeout: Duration) -> anyhow::Result<Element> {
        if let Some(el) = self.buffer.pop_front() {
            return Ok(el);
        }
        match self.read_stanza(timeout).await? {
            Some(el) => Ok(el),
            None => bail!("no stanza within {timeout:?}"),
        }
    }

    /// The first stanza matching `pred` within [`DEFAULT_TIMEOUT`], searching the buffer
    /// first; others stay buffered. `what` names it in the failure message.
    pub async fn expect(
        &mut self,
        what: &str,
        pred: impl Fn(&Element) -> bool,
    ) -> anyhow::Result<Element> {
        self.expect_within(DEFAULT_TIMEOUT, what, pred).await
    }

    /// [`Client::expect`] with a chosen timeout.
    pub async fn expect_within(
        &mut self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Element) -> bool,
    ) -> anyhow::Result<Element> {
        if let Some(pos) = self.buffer.iter().position(&pred) {
            if let Some(el) = self.buffer.remove(pos) {
                return Ok(el);
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let el = self
                .read_stanza(left)
                .await
                .with_context(|| format!("{} waiting for {what}", self.jid))?;
            match el {
                Some(el) if pred(&el) => return Ok(el),
                Some(el) => self.buffer.push_back(el),
                None => bail!(
                    "{}: no {what} within {timeout:?}; buffered: [{}]",
                    self.jid,
                    self.buffered_summary()
                ),
            }
        }
    }

    /// Fails if a stanza matching `pred` is buffered or arrives within `quiet`.
    pub async fn expect_none(
        &mut self,
        quiet: Duration,
        pred: impl Fn(&Element) -> bool,
    ) -> anyhow::Result<()> {
        if let Some(el) = self.buffer.iter().find(|e| pred(e)) {
            bail!("{}: unexpected stanza {el}", self.jid);
        }
        let deadline = tokio::time::Instant::now() + quiet;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            match self.read_stanza(left).await? {
                Some(el) if pred(&el) => bail!("{}: unexpected stanza {el}", self.jid),
                Some(el) => self.buffer.push_back(el),
                None => return Ok(()),
            }
        }
    }

    /// Stanzas received but not yet taken by `next`/`expect`.
    pub fn buffered(&self) -> impl Iterator<Item = &Element> {
        self.buffer.iter()
    }

    /// Sends an iq with a fresh id and waits for its `result` or `error` (returned as is;
    /// see [`stanza_error_condition`]).
    pub async fn iq(
        &mut self,
        iq_type: &str,
        to: Option<&str>,
        payload: Element,
    ) -> anyhow::Result<Element> {
        let id = self.fresh_id();
        let mut iq = Element::new("iq", ns::CLIENT)
            .with_attr("type", iq_type)
            .with_attr("id", id.clone())
            .with_child(payload);
        if let Some(to) = to {
            iq.set_attr("to", to);
        }
        self.send(&iq).await?;
        self.expect(&format!("iq reply to {id}"), |e| {
            e.is("iq", ns::CLIENT)
                && e.attr("id") == Some(id.as_str())
                && matches!(e.attr("type"), Some("result") | Some("error"))
        })
        .await
    }

    /// Like [`Client::iq`] but an error reply is an `Err` naming its condition.
    pub async fn iq_ok(
        &mut self,
        iq_type: &str,
        to: Option<&str>,
        payload: Element,
    ) -> anyhow::Result<Element> {
        let reply = self.iq(iq_type, to, payload).await?;
        match stanza_error_condition(&reply) {
            Some(cond) => bail!("iq {iq_type} failed with {cond}: {reply}"),
            None => Ok(reply),
        }
    }

    /// A `type='chat'` message with a fresh id.
    pub async fn send_message(&mut self, to: &str, body: &str) -> anyhow::Result<()> {
        let id = self.fresh_id();
        self.send(&chat(to, body).with_attr("id", id)).await
    }

    /// Initial available presence.
    pub async fn send_presence(&mut self) -> anyhow::Result<()> {
        self.send(&Element::new("presence", ns::CLIENT)).await
    }

    /// This user approves `asker`'s pending subscription request (`subscribed`); `asker` is
    /// told (`subscribed`, from the bare JID) and then gets this session's presence.
    pub async fn approve_subscription(&mut self, asker: &mut Client) -> anyhow::Result<()> {
        let (me, them) = (self.bare_jid().to_owned(), asker.bare_jid().to_owned());
        let session = self.jid().to_owned();
        self.send(
            &Element::new("presence", ns::CLIENT)
                .with_attr("type", "subscribed")
                .with_attr("to", &them),
        )
        .await?;
        asker
            .expect(
                "subscribed",
                pred::presence_of_type(&me, Some("subscribed")),
            )
            .await?;
        asker
            .expect(
                "the contact's presence",
                pred::presence_of_type(&session, None),
            )
            .await?;
        Ok(())
    }

    /// Waits (up to [`DEFAULT_TIMEOUT`]) for the server to end the stream: the stream error
    /// condition if it sent one, `None` for a plain close. Stanzas before the end are kept
    /// in the buffer.
    pub async fn expect_stream_end(&mut self) -> anyhow::Result<Option<String>> {
        self.expect_stream_end_within(DEFAULT_TIMEOUT).await
    }

    /// [`Client::expect_stream_end`] with a chosen timeout.
    pub async fn expect_stream_end_within(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<Option<String>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(end) = &self.ended {
                return Ok(end.clone());
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read_stanza(left).await {
                Ok(Some(el)) => self.buffer.push_back(el),
                Ok(None) => bail!("{}: the server did not end the stream", self.jid),
                Err(e) if self.ended.is_some() => drop(e),
                Err(e) => return Err(e),
            }
        }
    }

    /// Closes our stream and waits briefly for the server's close.
    pub async fn close(mut self) -> anyhow::Result<()> {
        if self.ended.is_none() {
            self.send_raw("</stream:stream>").await?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while self.ended.is_none() {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                match self.read_stanza(left).await {
                    Ok(Some(_)) => {}
                    Ok(None) => bail!("{}: the server did not close its stream", self.jid),
                    Err(_) => break,
                }
            }
        }
        if let Some(conn) = self.conn.as_mut() {
            conn.shutdown().await;
        }
        Ok(())
    }

    /// Enables stream management (XEP-0198) with resumption, asking for a window of `max`
    /// seconds (`None`: the server's), and returns the `<enabled/>` answer.
    pub async fn enable_sm(&mut self, max: Option<u64>) -> anyhow::Result<Element> {
        let max = max.map(|m| format!(" max='{m}'")).unwrap_or_default();
        self.send_raw(&format!("<enable xmlns='{}' resume='true'{max}/>", ns::SM))
            .await?;
        self.expect("<enabled/>", |e| e.ns() == ns::SM && e.name() != "r")
            .await
    }

    /// Stanzas received since stream management was enabled (or since the `h` a resumption
    /// started from), as XEP-0198 counts them; `None` without it.
    pub fn sm_received(&self) -> Option<u32> {
        self.sm_h
    }

    /// Acknowledges `h` stanzas (XEP-0198 `<a/>`).
    pub async fn sm_ack(&mut self, h: u32) -> anyhow::Result<()> {
        self.send_raw(&format!("<a xmlns='{}' h='{h}'/>", ns::SM))
            .await
    }

    /// Connects, authenticates and asks to resume `previd`, saying it handled `h` stanzas;
    /// returns the client and the server's answer (`<resumed/>` or `<failed/>`). After
    /// `<resumed/>` the client is bound to the resumed session's full JID.
    pub async fn resume(
        cfg: &ClientConfig,
        username: &str,
        password: &str,
        previd: &str,
        h: u32,
        full_jid: &str,
    ) -> anyhow::Result<(Client, Element)> {
        let mut client = Client::connect(cfg).await?;
        if let Err(cond) = client
            .authenticate(Mechanism::ScramSha256, username, password)
            .await?
        {
            bail!("authentication of {username} failed: {cond}");
        }
        client
            .send_raw(&format!(
                "<resume xmlns='{}' previd='{}' h='{h}'/>",
                ns::SM,
                escape_attr(previd)
            ))
            .await?;
        let answer = client
            .expect("<resumed/> or <failed/>", |e| {
                e.ns() == ns::SM && matches!(e.name(), "resumed" | "failed")
            })
            .await?;
        if answer.name() == "resumed" {
            full_jid.clone_into(&mut client.jid);
            client.sm_h = Some(h);
        }
        Ok((client, answer))
    }

    /// As [`Client::resume`], inline in SASL2's `<authenticate/>` (XEP-0198 §7.2): returns
    /// the client and what `<success/>` answered (`<resumed/>` or `<failed/>`).
    pub async fn resume_sasl2(
        cfg: &ClientConfig,
        username: &str,
        password: &str,
        previd: &str,
        h: u32,
    ) -> anyhow::Result<(Client, Element)> {
        let mut client = Client::connect(cfg).await?;
        let resume = Element::new("resume", ns::SM)
            .with_attr("previd", previd)
            .with_attr("h", h.to_string());
        let success = match client
            .authenticate_sasl2(Mechanism::ScramSha256, username, password, &[resume])
            .await?
        {
            Ok(s) => s,
            Err(cond) => bail!("SASL2 authentication of {username} failed: {cond}"),
        };
        let answer = success
            .children()
            .find(|e| e.ns() == ns::SM && matches!(e.name(), "resumed" | "failed"))
            .cloned()
            .ok_or_else(|| anyhow!("no <resumed/> or <failed/> in {success}"))?;
        if answer.name() == "resumed" {
            client.sm_h = Some(h);
        }
        Ok((client, answer))
    }

    /// Drops the connection without closing the stream, as a lost network does.
    pub fn drop_connection(mut self) {
        self.conn.take();
    }

    /// A new stanza id, unique within this client.
    pub fn fresh_id(&mut self) -> String {
        self.next_id += 1;
        format!("t{}", self.next_id)
    }

    /// The WebSocket connection of a client in WebSocket mode, for messages sent as they are.
    pub fn websocket(&mut self) -> anyhow::Result<&mut ws::WsConn> {
        match self.conn_mut()? {
            Wire::Ws(w) => Ok(w),
            Wire::Xml(_) => bail!("not a WebSocket client"),
        }
    }

    fn conn_mut(&mut self) -> anyhow::Result<&mut Wire> {
        self.conn.as_mut().context("connection lost")
    }

    /// Sends our stream header and reads the server's header and features.
    async fn open_stream(&mut self) -> anyhow::Result<()> {
        let header = format!(
            "<?xml version='1.0'?><stream:stream xmlns='{}' xmlns:stream='{}' to='{}' version='1.0' xml:lang='en'>",
            ns::CLIENT,
            ns::STREAM,
            escape_attr(&self.domain)
        );
        self.send_raw(&header).await?;
        match self.read_event(DEFAULT_TIMEOUT).await? {
            Some(Inbound::Open(h)) => self.header = h,
            Some(other) => bail!("expected the server's stream header, got {other:?}"),
            None => bail!("no stream header from the server"),
        }
        let features = self.read_nonza(DEFAULT_TIMEOUT).await?;
        if !features.is("features", ns::STREAM) {
            bail!("expected <stream:features/>, got {features}");
        }
        self.features = features;
        Ok(())
    }

    /// The next top-level element, whatever its namespace; a stream error or end is an `Err`.
    async fn read_nonza(&mut self, timeout: Duration) -> anyhow::Result<Element> {
        self.read_stanza(timeout)
            .await?
            .ok_or_else(|| anyhow!("nothing from the server within {timeout:?}"))
    }

    /// The next top-level element, `None` on timeout. Records and reports the stream's end.
    async fn read_stanza(&mut self, timeout: Duration) -> anyhow::Result<Option<Element>> {
        match self.read_event(timeout).await? {
            None => Ok(None),
            Some(Inbound::Stanza(el)) if el.is("error", ns::STREAM) => {
                let cond = el
                    .children()
                    .find(|c| c.ns() == ns::STREAMS_ERR && c.name() != "text")
                    .map(|c| c.name().to_owned())
                    .unwrap_or_default();
                let text = el.child_text("text", ns::STREAMS_ERR).unwrap_or_default();
                self.ended = Some(Some(cond.clone()));
                bail!("stream error {cond} {text}")
            }
            Some(Inbound::Stanza(el)) => {
                if let Some(h) = &mut self.sm_h {
                    if el.ns() == ns::CLIENT && matches!(el.name(), "message" | "presence" | "iq") {
                        *h = h.wrapping_add(1);
                    }
                }
                if el.is("enabled", ns::SM) {
                    self.sm_h = Some(0);
                }
                Ok(Some(el))
            }
            Some(Inbound::Open(h)) => bail!("unexpected second stream header {h:?}"),
            Some(Inbound::Close) => {
                self.ended.get_or_insert(None);
                bail!("the server closed the stream")
            }
        }
    }

    async fn read_event(&mut self, timeout: Duration) -> anyhow::Result<Option<Inbound>> {
        if self.ended.is_some() {
            bail!("the stream has ended");
        }
        match self.conn_mut()?.read(timeout).await? {
            None => Ok(None),
            Some(Ok(inbound)) => Ok(Some(inbound)),
            Some(Err(ReadError::Eof)) => {
                self.ended = Some(None);
                bail!("the server closed the connection")
            }
            Some(Err(e)) => {
                self.ended = Some(None);
                bail!("reading from the server: {e}")
            }
        }
    }

    fn buffered_summary(&self) -> String {
        self.buffer
            .iter()
            .map(Element::to_client_xml)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A `type='chat'` message with a body (to add payloads to before sending).
pub fn chat(to: &str, body: &str) -> Element {
    Element::new("message", ns::CLIENT)
        .with_attr("to", to)
        .with_attr("type", "chat")
        .with_child(Element::new("body", ns::CLIENT).with_text(body))
}

/// The defined condition of a stanza of `type='error'`, e.g. "item-not-found".
pub fn stanza_error_condition(stanza: &Element) -> Option<String> {
    if stanza.attr("type") != Some("error") {
        return None;
    }
    let error = stanza.get_child("error", ns::CLIENT)?;
    error
        .children()
        .find(|c| c.ns() == ns::STANZAS_ERR && c.name() != "text")
        .map(|c| c.name().to_owned())
        .or_else(|| Some(String::new()))
}

/// The SCRAM client of `mech` (none for PLAIN) and the initial response.
fn sasl_start(
    mech: Mechanism,
    username: &str,
    password: &str,
) -> anyhow::Result<(Option<ScramClient>, String)> {
    let scram = match mech {
        Mechanism::ScramSha1 => Some(ScramClient::new(ScramHash::Sha1, username, password)?),
        Mechanism::ScramSha256 => Some(ScramClient::new(ScramHash::Sha256, username, password)?),
        Mechanism::Plain => None,
    };
    let initial = match &scram {
        Some(s) => s.client_first(),
        None => format!("\0{username}\0{password}"),
    };
    Ok((scram, initial))
}

fn decode_sasl(el: &Element) -> anyhow::Result<String> {
    let text = el.text();
    let text = text.trim();
    if text.is_empty() || text == "=" {
        return Ok(String::new());
    }
    let bytes = B64.decode(text).context("SASL data is not base64")?;
    String::from_utf8(bytes).context("SASL data is not UTF-8")
}

#[cfg(test)]
mod tests;
