//! A lean XMPP client for load: STARTTLS, SASL PLAIN (or SCRAM-SHA-256 keeping its salted
//! password for the next login, [`Sasl`]), bind, roster get, initial presence;
//! then a writer half that sends timestamped chat messages and a reader half that yields
//! their timestamps. With stream management (XEP-0198, [`BenchClient::login_with`]) the
//! reader counts the stanzas it receives and answers the server's `<r/>` with `<a h/>`
//! through the writer, which every 50th message asks for an ack itself; a session can be
//! resumed on a new connection ([`BenchClient::resume`]).
//!
//! Over WebSocket (RFC 7395, [`LoginOpts::websocket`]) the client is the same: what it writes
//! as TCP text is cut into messages and what comes is put back into a TCP stream by a bridge
//! task ([`websocket`]), so every workload runs unchanged over either transport.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context as _};
use base64::Engine as _;
use meerkat_testkit::client::scram::{SaltedPassword, ScramClient, ScramHash};
use meerkat_xmpp::{ns, Inbound, Limits, StreamReader};
use tokio::io::{AsyncWriteExt, BufReader, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

type Tls = crate::websocket::Io;

pub struct BenchClient {
    reader: StreamReader<BufReader<ReadHalf<Tls>>>,
    writer: WriteHalf<Tls>,
    sm: Option<Sm>,
    /// How it authenticated (with SCRAM: the salted password to reuse next time).
    sasl: Sasl,
}

/// How a resuming client comes back: over direct TLS (XEP-0368) rather than STARTTLS, and
/// with the resumption inline in SASL2 (XEP-0388) rather than after RFC 6120 SASL.
#[derive(Clone, Copy, Debug, Default)]
pub struct ResumeVia {
    pub direct_tls: bool,
    pub sasl2: bool,
}

/// When a resuming connection passed its steps before `<resume/>`.
#[derive(Clone, Copy, Debug)]
pub struct Phases {
    /// TCP connected, STARTTLS done, the TLS stream's features read.
    pub secure: Instant,
    /// SASL succeeded and the stream restarted.
    pub authenticated: Instant,
}

/// How a client authenticates.
#[derive(Clone, Debug, Default)]
pub enum Sasl {
    /// SASL PLAIN: the server derives the password's SCRAM keys to check it (one PBKDF2 per
    /// login, on the server).
    #[default]
    Plain,
    /// SCRAM-SHA-256, reusing the salted password of the previous login when there is one, as
    /// mobile clients do: then neither side runs PBKDF2.
    Scram(Option<SaltedPassword>),
}

/// What a login does besides authenticating.
#[derive(Clone, Debug)]
pub struct LoginOpts {
    pub resource: String,
    /// Enable stream management with resumption after binding.
    pub sm: bool,
    pub sasl: Sasl,
    /// Log in over WebSocket (RFC 7395, `wss://` this address `/xmpp-websocket`: a gateway's
    /// HTTPS listener) instead of TCP.
    pub websocket: Option<SocketAddr>,
}

impl LoginOpts {
    pub fn resource(resource: &str) -> LoginOpts {
        LoginOpts {
            resource: resource.to_owned(),
            sm: false,
            sasl: Sasl::Plain,
            websocket: None,
        }
    }
}

/// A stream-management session: its resumption id and the stanzas handled so far (mod 2^32).
#[derive(Clone, Debug)]
pub struct Sm {
    pub id: String,
    pub h: u32,
}

/// The writing half, shared with the reader (which answers `<r/>` through it).
type SharedWriter = Arc<tokio::sync::Mutex<WriteHalf<Tls>>>;

pub struct Reader {
    stream: StreamReader<BufReader<ReadHalf<Tls>>>,
    writer: SharedWriter,
    sm: Option<Sm>,
    /// Answers the server's `<r/>` (stream management); off for a client that never
    /// acknowledges ([`Reader::never_acknowledge`]).
    answers: bool,
}

pub struct Writer {
    half: SharedWriter,
    sm: bool,
    messages: u64,
}

/// Every this many messages a writer with stream management asks for an ack.
const REQUEST_EVERY: u64 = 50;

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0' to='";

async fn next_el<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut StreamReader<R>,
) -> anyhow::Result<meerkat_xmpp::Element> {
    loop {
        match r.next().await? {
            Inbound::Stanza(el) => return Ok(el),
            Inbound::Open(_) => continue,
            Inbound::Close => bail!("stream closed"),
        }
    }
}

/// The send timestamp in a bench message's body (`t=<µs>;<run>;…`), if it is of this run
/// (messages of an earlier run, e.g. stored offline, are not).
pub(crate) fn bench_stamp(body: &str, run: &str) -> Option<u64> {
    let mut fields = body.split(';');
    let ts = fields.next()?.strip_prefix("t=")?;
    (fields.next() == Some(run)).then(|| ts.parse().ok())?
}

/// Logs users `0..n` in, 20 at a time, each registered in-band first (an existing account is
/// fine) and logged in as `args` says (transport, stream management, SASL); with `--to-addr` the
/// odd users log in there. `name` gives user `i`'s name.
pub async fn login_many(
    args: &crate::Args,
    n: usize,
    name: fn(&crate::Args, usize) -> String,
) -> anyhow::Result<Vec<BenchClient>> {
    let mut clients = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(20) {
        let mut batch = Vec::new();
        for &i in chunk {
            let args = args.clone();
            batch.push(tokio::spawn(async move {
                let addr = match args.to_addr {
                    Some(to) if i % 2 == 1 => to,
                    _ => args.addr,
                };
                let user = name(&args, i);
                let opts = args.login_opts();
                BenchClient::login_with(addr, &args.domain, &user, &args.password, true, &opts)
                    .await
            }));
        }
        for b in batch {
            clients.push(b.await??);
        }
    }
    Ok(clients)
}

impl BenchClient {
    pub async fn login(
        addr: SocketAddr,
        domain: &str,
        user: &str,
        password: &str,
        register: bool,
    ) -> anyhow::Result<BenchClient> {
        BenchClient::login_as(addr, domain, user, password, register, "bench").await
    }

    /// [`BenchClient::login`] with a chosen resource.
    pub async fn login_as(
        addr: SocketAddr,
        domain: &str,
        user: &str,
        password: &str,
        register: bool,
        resource: &str,
    ) -> anyhow::Result<BenchClient> {
        let opts = LoginOpts::resource(resource);
        BenchClient::login_with(addr, domain, user, password, register, &opts).await
    }

    /// [`BenchClient::login_as`] authenticating as `opts` says, and enabling stream management
    /// with resumption right after binding (waiting for `<enabled/>`) when `opts.sm`.
    pub async fn login_with(
        addr: SocketAddr,
        domain: &str,
        user: &str,
        password: &str,
        register: bool,
        opts: &LoginOpts,
    ) -> anyhow::Result<BenchClient> {
        let mut c = match opts.websocket {
            Some(at) => BenchClient::connect_websocket(at, domain).await?,
            None => BenchClient::connect(addr, domain).await?,
        };
        if register {
            c.write(&format!(
                "<iq type='set' id='reg'><query xmlns='jabber:iq:register'><username>{user}</username><password>{password}</password></query></iq>"
            ))
            .await?;
            let _ = next_el(&mut c.reader).await?; // result or conflict: both fine
        }
        c.sasl = opts.sasl.clone();
        let mut c = c
            .authenticate_and_bind(domain, user, password, &opts.resource)
            .await?;
        if opts.sm {
            c.enable_sm(user).await?;
        }
        c.write("<iq type='get' id='roster'><query xmlns='jabber:iq:roster'/></iq><presence/>")
            .await?;
        Ok(c)
    }

    /// One turn of the login loop: connect, STARTTLS, SASL PLAIN, bind (waiting for the
    /// answer), close.
    pub async fn login_and_close(
        addr: SocketAddr,
        domain: &str,
        user: &str,
        password: &str,
    ) -> anyhow::Result<()> {
        let mut c = BenchClient::connect(addr, domain)
            .await?
            .authenticate_and_bind(domain, user, password, "loop")
            .await?;
        let _ = c.write("</stream:stream>").await;
        Ok(())
    }

    /// Sends an iq (`xml`, whose id is `id`) and waits for its result, skipping everything
    /// else that arrives meanwhile; an error answer fails.
    pub async fn iq(&mut self, id: &str, xml: &str) -> anyhow::Result<meerkat_xmpp::Element> {
        self.iq_counting(id, xml, |_| {}).await
    }

    /// [`BenchClient::iq`], handing everything else that arrives before the answer to `other`.
    pub async fn iq_counting(
        &mut self,
        id: &str,
        xml: &str,
        other: impl FnMut(&meerkat_xmpp::Element),
    ) -> anyhow::Result<meerkat_xmpp::Element> {
        let el = self.iq_answer(id, xml, other).await?;
        if el.attr("type") != Some("result") {
            bail!("iq {id} failed: {el}");
        }
        Ok(el)
    }

    /// Sends an iq and returns its answer, result or error, handing everything else that
    /// arrives before it to `other`.
    async fn iq_answer(
        &mut self,
        id: &str,
        xml: &str,
        mut other: impl FnMut(&meerkat_xmpp::Element),
    ) -> anyhow::Result<meerkat_xmpp::Element> {
        self.write(xml).await?;
        loop {
            let el = next_el(&mut self.reader).await?;
            if el.name() == "iq" && el.attr("id") == Some(id) {
                return Ok(el);
            }
            other(&el);
        }
    }

    /// XEP-0280: carbons on for this resource.
    pub async fn enable_carbons(&mut self) -> anyhow::Result<()> {
        let xml = format!(
            "<iq type='set' id='carbons'><enable xmlns='{}'/></iq>",
            ns::CARBONS
        );
        self.iq("carbons", &xml).await.map(drop)
    }

    /// XEP-0313: this account's messages are archived (`always`) or not (`never`) from now on.
    /// A server with its archive disabled (`service-unavailable`) archives nothing either way:
    /// not an error.
    pub async fn archive_default(&mut self, mode: &str) -> anyhow::Result<()> {
        let xml = format!(
            "<iq type='set' id='prefs'><prefs xmlns='{}' default='{mode}'/></iq>",
            ns::MAM
        );
        let el = self.iq_answer("prefs", &xml, |_| {}).await?;
        let no_archive = el
            .get_child("error", ns::CLIENT)
            .is_some_and(|e| e.has_child("service-unavailable", ns::STANZAS_ERR));
        if el.attr("type") != Some("result") && !no_archive {
            bail!("iq prefs failed: {el}");
        }
        Ok(())
    }

    /// XEP-0198 `<enable resume='true'/>`, waiting for `<enabled/>`.
    async fn enable_sm(&mut self, user: &str) -> anyhow::Result<()> {
        self.write(&format!("<enable xmlns='{}' resume='true'/>", ns::SM))
            .await?;
        // A stanza may come first (what a session this login replaced had not delivered):
        // it is before the enabling, so outside the counts.
        let mut reply = next_el(&mut self.reader).await?;
        while ["message", "presence", "iq"].contains(&reply.name()) && reply.attr("to").is_some() {
            reply = next_el(&mut self.reader).await?;
        }
        if !reply.is("enabled", ns::SM) {
            bail!("{user}: stream management refused: {reply}");
        }
        let id = reply
            .attr("id")
            .with_context(|| format!("{user}: <enabled/> without a resumption id: {reply}"))?;
        self.sm = Some(Sm {
            id: id.to_owned(),
            h: 0,
        });
        Ok(())
    }

    /// How this client authenticated (with SCRAM, the salted password to reuse).
    pub fn sasl(&self) -> &Sasl {
        &self.sasl
    }

    /// A new connection that resumes the stream-management session `sm` (XEP-0198
    /// `<resume/>` after authentication as `sasl` says, instead of binding); returns once
    /// `<resumed/>` came.
    /// With `direct_tls`, `addr` is a direct TLS port (XEP-0368).
    pub async fn resume(
        addr: SocketAddr,
        via: ResumeVia,
        domain: &str,
        user: &str,
        password: &str,
        sm: Sm,
        sasl: Sasl,
    ) -> anyhow::Result<(BenchClient, Phases)> {
        let ResumeVia { direct_tls, sasl2 } = via;
        let mut c = if direct_tls {
            BenchClient::connect_direct_tls(addr, domain).await?
        } else {
            BenchClient::connect(addr, domain).await?
        };
        let secure = Instant::now();
        c.sasl = sasl;
        if sasl2 {
            let c = c.resume_in_sasl2(user, password, sm).await?;
            let authenticated = Instant::now();
            return Ok((
                c,
                Phases {
                    secure,
                    authenticated,
                },
            ));
        }
        let mut c = c.authenticate(domain, user, password).await?;
        let authenticated = Instant::now();
        c.write(&format!(
            "<resume xmlns='{}' previd='{}' h='{}'/>",
            ns::SM,
            sm.id,
            sm.h
        ))
        .await?;
        let reply = next_el(&mut c.reader).await?;
        if !reply.is("resumed", ns::SM) {
            bail!("{user}: resumption refused: {reply}");
        }
        c.sm = Some(sm);
        Ok((
            c,
            Phases {
                secure,
                authenticated,
            },
        ))
    }

    /// SCRAM-SHA-256 in SASL2 (XEP-0388) with the resumption inline (XEP-0198 §7.2): no
    /// stream restart, `<resumed/>` inside `<success/>`.
    async fn resume_in_sasl2(
        mut self,
        user: &str,
        password: &str,
        sm: Sm,
    ) -> anyhow::Result<BenchClient> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let Sasl::Scram(cached) = self.sasl.clone() else {
            bail!("SASL2 resumption needs --scram");
        };
        let mut scram = ScramClient::new(ScramHash::Sha256, user, password)?.with_cached(cached);
        self.write(&format!(
            "<authenticate xmlns='{}' mechanism='SCRAM-SHA-256'><initial-response>{}</initial-response><resume xmlns='{}' previd='{}' h='{}'/></authenticate>",
            ns::SASL2,
            b64.encode(scram.client_first()),
            ns::SM,
            sm.id,
            sm.h
        ))
        .await?;
        let challenge = next_el(&mut self.reader).await?;
        if !challenge.is("challenge", ns::SASL2) {
            bail!("{user}: SASL2 authentication failed: {challenge}");
        }
        let server_first = String::from_utf8(b64.decode(challenge.text().trim())?)?;
        let fin = scram.client_final(&server_first)?;
        self.write(&format!(
            "<response xmlns='{}'>{}</response>",
            ns::SASL2,
            b64.encode(fin)
        ))
        .await?;
        let success = next_el(&mut self.reader).await?;
        if !success.is("success", ns::SASL2) {
            bail!("{user}: SASL2 authentication failed: {success}");
        }
        let additional = success
            .child_text("additional-data", ns::SASL2)
            .unwrap_or_default();
        scram.verify_server_final(&String::from_utf8(b64.decode(additional.trim())?)?)?;
        if !success.has_child("resumed", ns::SM) {
            bail!("{user}: resumption refused: {success}");
        }
        self.sasl = Sasl::Scram(scram.salted().cloned());
        self.sm = Some(sm);
        Ok(self)
    }

    async fn authenticate_and_bind(
        self,
        domain: &str,
        user: &str,
        password: &str,
        resource: &str,
    ) -> anyhow::Result<BenchClient> {
        let mut c = self.authenticate(domain, user, password).await?;
        c.write(&format!("<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>")).await?;
        let bound = next_el(&mut c.reader).await?;
        if bound.attr("type") != Some("result") {
            bail!("{user}: bind failed: {bound}");
        }
        Ok(c)
    }

    /// SASL ([`Sasl`]) and the stream restart after it (up to the new stream's features).
    async fn authenticate(
        self,
        domain: &str,
        user: &str,
        password: &str,
    ) -> anyhow::Result<BenchClient> {
        let mut c = self;
        let b64 = base64::engine::general_purpose::STANDARD;
        match c.sasl.clone() {
            Sasl::Plain => {
                let token = b64.encode(format!("\0{user}\0{password}"));
                c.write(&format!(
                    "<auth xmlns='{}' mechanism='PLAIN'>{token}</auth>",
                    ns::SASL
                ))
                .await?;
                let reply = next_el(&mut c.reader).await?;
                if reply.name() != "success" {
                    bail!("{user}: authentication failed: {reply}");
                }
            }
            Sasl::Scram(cached) => {
                let mut scram =
                    ScramClient::new(ScramHash::Sha256, user, password)?.with_cached(cached);
                c.write(&format!(
                    "<auth xmlns='{}' mechanism='SCRAM-SHA-256'>{}</auth>",
                    ns::SASL,
                    b64.encode(scram.client_first())
                ))
                .await?;
                let challenge = next_el(&mut c.reader).await?;
                if challenge.name() != "challenge" {
                    bail!("{user}: authentication failed: {challenge}");
                }
                let server_first = String::from_utf8(b64.decode(challenge.text().trim())?)?;
                let fin = scram.client_final(&server_first)?;
                c.write(&format!(
                    "<response xmlns='{}'>{}</response>",
                    ns::SASL,
                    b64.encode(fin)
                ))
                .await?;
                let reply = next_el(&mut c.reader).await?;
                if reply.name() != "success" {
                    bail!("{user}: authentication failed: {reply}");
                }
                scram.verify_server_final(&String::from_utf8(b64.decode(reply.text().trim())?)?)?;
                c.sasl = Sasl::Scram(scram.salted().cloned());
            }
        }
        c.reader = c.reader.restart();
        c.write(&format!("{HEADER}{domain}'>")).await?;
        let _features = next_el(&mut c.reader).await?;
        Ok(c)
    }

    /// In-band registration (XEP-0077) on a connection of its own, closed after the answer;
    /// false when the server refuses (e.g. the name exists).
    pub async fn register(
        addr: SocketAddr,
        domain: &str,
        user: &str,
        password: &str,
    ) -> anyhow::Result<bool> {
        let mut c = BenchClient::connect(addr, domain).await?;
        c.write(&format!(
            "<iq type='set' id='reg'><query xmlns='jabber:iq:register'><username>{user}</username><password>{password}</password></query></iq>"
        ))
        .await?;
        let reply = next_el(&mut c.reader).await?;
        let _ = c.write("</stream:stream>").await;
        Ok(reply.attr("type") == Some("result"))
    }

    async fn connect(addr: SocketAddr, domain: &str) -> anyhow::Result<BenchClient> {
        let mut tcp = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect {addr}"))?;
        tcp.set_nodelay(true)?;
        tcp.write_all(format!("{HEADER}{domain}'>").as_bytes())
            .await?;
        {
            let mut plain = StreamReader::new(BufReader::new(&mut tcp), Limits::default());
            let _features = next_el(&mut plain).await?;
            plain
                .get_mut()
                .get_mut()
                .write_all(format!("<starttls xmlns='{}'/>", ns::TLS).as_bytes())
                .await?;
            let proceed = next_el(&mut plain).await?;
            if proceed.name() != "proceed" {
                bail!("STARTTLS refused");
            }
        }
        let tls = BenchClient::tls_connect(tcp, domain).await?;
        BenchClient::over(crate::websocket::Io::Tls(Box::new(tls)), domain).await
    }

    /// Direct TLS (XEP-0368): TLS at once on `addr`, then the stream, up to its features.
    async fn connect_direct_tls(addr: SocketAddr, domain: &str) -> anyhow::Result<BenchClient> {
        let tcp = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect {addr}"))?;
        tcp.set_nodelay(true)?;
        let tls = BenchClient::tls_connect(tcp, domain).await?;
        BenchClient::over(crate::websocket::Io::Tls(Box::new(tls)), domain).await
    }

    /// A WebSocket to `wss://at/xmpp-websocket`, up to the stream's features.
    async fn connect_websocket(at: SocketAddr, domain: &str) -> anyhow::Result<BenchClient> {
        let io = crate::websocket::connect(at, domain).await?;
        BenchClient::over(io, domain).await
    }

    /// Opens the stream on a secure connection and reads its features.
    async fn over(io: Tls, domain: &str) -> anyhow::Result<BenchClient> {
        let (r, w) = tokio::io::split(io);
        let mut c = BenchClient {
            reader: StreamReader::new(BufReader::new(r), Limits::default()),
            writer: w,
            sm: None,
            sasl: Sasl::Plain,
        };
        c.write(&format!("{HEADER}{domain}'>")).await?;
        let _features = next_el(&mut c.reader).await?;
        Ok(c)
    }

    /// TLS on `tcp` (any certificate: benchmarks run against test certificates), SNI `domain`.
    pub(crate) async fn tls_connect(
        tcp: TcpStream,
        domain: &str,
    ) -> anyhow::Result<TlsStream<TcpStream>> {
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny))
        .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(domain.to_owned())?;
        Ok(tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?)
    }

    /// Writes and flushes (see [`Writer::send`]).
    async fn write(&mut self, s: &str) -> anyhow::Result<()> {
        self.writer.write_all(s.as_bytes()).await?;
        self.writer.flush().await?;
        Ok(())
    }

    pub fn split(self) -> (Reader, Writer) {
        let half = Arc::new(tokio::sync::Mutex::new(self.writer));
        let writer = Writer {
            half: half.clone(),
            sm: self.sm.is_some(),
            messages: 0,
        };
        let reader = Reader {
            stream: self.reader,
            writer: half,
            sm: self.sm,
            answers: true,
        };
        (reader, writer)
    }
}

impl Reader {
    /// The next stanza (`message`, `presence`, `iq`); None when the stream ends. With stream
    /// management it counts each and answers the server's `<r/>` with `<a h/>`.
    pub async fn next_stanza(&mut self) -> Option<meerkat_xmpp::Element> {
        loop {
            let el = match self.stream.next().await {
                Ok(Inbound::Stanza(el)) => el,
                Ok(Inbound::Open(_)) => continue,
                Ok(Inbound::Close) | Err(_) => return None,
            };
            if el.ns() == ns::SM {
                if el.name() == "r"
                    && self.answers
                    && self.sm.is_some()
                    && self.ack().await.is_err()
                {
                    return None;
                }
                continue;
            }
            if let Some(sm) = &mut self.sm {
                if matches!(el.name(), "message" | "presence" | "iq") {
                    sm.h = sm.h.wrapping_add(1);
                }
            }
            return Some(el);
        }
    }

    /// `<a h/>` with what was handled so far (unsolicited, or the answer to `<r/>`).
    pub async fn ack(&mut self) -> anyhow::Result<()> {
        let Some(sm) = &self.sm else {
            bail!("no stream management on this stream");
        };
        let xml = format!("<a xmlns='{}' h='{}'/>", ns::SM, sm.h);
        let mut w = self.writer.lock().await;
        w.write_all(xml.as_bytes()).await?;
        w.flush().await?;
        Ok(())
    }

    /// Writes `xml` (an answer to what was read) through the stream's writing half.
    pub async fn reply(&mut self, xml: &str) -> anyhow::Result<()> {
        let mut w = self.writer.lock().await;
        w.write_all(xml.as_bytes()).await?;
        w.flush().await?;
        Ok(())
    }

    /// From now on the server's `<r/>` goes unanswered: everything the gateway writes stays
    /// unacknowledged, as with a phone whose acks never make it out.
    pub fn never_acknowledge(&mut self) {
        self.answers = false;
    }

    /// The stream-management session (its id and what was handled), if enabled.
    pub fn sm(&self) -> Option<&Sm> {
        self.sm.as_ref()
    }
}

impl Reader {
    /// The send timestamp (µs) of the next bench message received; None when the stream ends.
    pub async fn next_bench_message(&mut self, run: &str) -> anyhow::Result<Option<u64>> {
        Ok(self.next_bench(run).await?.map(|(us, _)| us))
    }

    /// The send timestamp (µs) of the next carbon copy (XEP-0280 `<sent/>` or `<received/>`)
    /// of a bench message of this run; None when the stream ends.
    pub async fn next_bench_carbon(&mut self, run: &str) -> anyhow::Result<Option<u64>> {
        loop {
            let Some(el) = self.next_stanza().await else {
                return Ok(None);
            };
            let inner = el
                .children()
                .find(|c| c.ns() == ns::CARBONS && matches!(c.name(), "sent" | "received"))
                .and_then(|c| c.get_child("forwarded", ns::FORWARD))
                .and_then(|f| f.get_child("message", ns::CLIENT));
            let Some(body) = inner.and_then(|m| m.child_text("body", ns::CLIENT)) else {
                continue;
            };
            if let Some(us) = bench_stamp(&body, run) {
                return Ok(Some(us));
            }
        }
    }

    /// [`Reader::next_bench_message`], and whether the message came with a XEP-0203 delay
    /// (it was stored offline on its way).
    pub async fn next_bench(&mut self, run: &str) -> anyhow::Result<Option<(u64, bool)>> {
        loop {
            let Some(el) = self.next_stanza().await else {
                return Ok(None);
            };
            if el.name() != "message" {
                continue;
            }
            if let Some(us) = el
                .child_text("body", ns::CLIENT)
                .and_then(|body| bench_stamp(&body, run))
            {
                return Ok(Some((us, el.has_child("delay", ns::DELAY))));
            }
        }
    }
}

impl Reader {
    /// The id of the next iq result or error received; None when the stream ends.
    pub async fn next_iq_reply(&mut self) -> Option<String> {
        loop {
            let el = self.next_stanza().await?;
            if el.name() == "iq" && matches!(el.attr("type"), Some("result" | "error")) {
                if let Some(id) = el.attr("id") {
                    return Some(id.to_owned());
                }
            }
        }
    }

    /// The id of the next iq answer and whether it is a result (not an error); None when the
    /// stream ends.
    pub async fn next_iq_answer(&mut self) -> Option<(String, bool)> {
        loop {
            let el = self.next_stanza().await?;
            let ok = match (el.name(), el.attr("type")) {
                ("iq", Some("result")) => true,
                ("iq", Some("error")) => false,
                _ => continue,
            };
            if let Some(id) = el.attr("id") {
                return Some((id.to_owned(), ok));
            }
        }
    }

    /// The timestamp (µs) in the id `<prefix><µs>` of the next iq request so named; None when
    /// the stream ends.
    pub async fn next_iq_request(&mut self, prefix: &str) -> Option<u64> {
        loop {
            let el = self.next_stanza().await?;
            if el.name() != "iq" {
                continue;
            }
            if let Some(us) = el
                .attr("id")
                .and_then(|id| id.strip_prefix(prefix))
                .and_then(|us| us.parse().ok())
            {
                return Some(us);
            }
        }
    }
}

impl Writer {
    /// An XMPP ping (XEP-0199) to `to` with the given id.
    pub async fn send_ping(&mut self, to: &str, id: &str) -> anyhow::Result<()> {
        let xml = format!("<iq to='{to}' type='get' id='{id}'><ping xmlns='urn:xmpp:ping'/></iq>");
        self.send(&xml).await
    }

    /// A chat message with a 64-byte body carrying the send time; with stream management,
    /// every 50th followed by `<r/>`.
    pub async fn send_chat(&mut self, to: &str, run: &str, micros: u64) -> anyhow::Result<()> {
        self.send_typed(to, "chat", run, micros).await
    }

    /// A message of type `kind` with a 64-byte body carrying the send time.
    pub async fn send_typed(
        &mut self,
        to: &str,
        kind: &str,
        run: &str,
        micros: u64,
    ) -> anyhow::Result<()> {
        let mut body = format!("t={micros};{run};");
        while body.len() < 64 {
            body.push('x');
        }
        let mut xml = format!("<message to='{to}' type='{kind}'><body>{body}</body></message>");
        self.messages += 1;
        if self.sm && self.messages.is_multiple_of(REQUEST_EVERY) {
            xml.push_str(&format!("<r xmlns='{}'/>", ns::SM));
        }
        self.send(&xml).await
    }

    pub async fn close(&mut self) -> anyhow::Result<()> {
        self.send("</stream:stream>").await
    }

    /// Writes and flushes. A TLS write alone may leave the data encrypted in the TLS
    /// session's buffer: tokio-rustls accepts it and reports success whenever the socket is
    /// not ready, which includes the task having used up its cooperative budget (about 128
    /// socket operations without yielding, e.g. 200 pipelined pings). Only a flush waits
    /// until it is on the socket; without one, those stanzas sit there until the next write.
    /// Writes `xml` as it is (one or more complete stanzas).
    pub async fn send(&mut self, xml: &str) -> anyhow::Result<()> {
        let mut w = self.half.lock().await;
        w.write_all(xml.as_bytes()).await?;
        w.flush().await?;
        Ok(())
    }
}

/// Load runs against self-signed development certificates.
#[derive(Debug)]
struct AcceptAny;

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt as _;

    /// A TLS server on loopback that counts the stanzas (`</iq>`) it receives.
    async fn counting_server() -> (SocketAddr, tokio::sync::watch::Receiver<usize>) {
        let cert = rcgen::generate_simple_self_signed(vec!["example.com".to_owned()]).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (count_tx, count) = tokio::sync::watch::channel(0);
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(tcp).await.unwrap();
            let (mut seen, mut buf) = (Vec::new(), [0u8; 4096]);
            while let Ok(n @ 1..) = tls.read(&mut buf).await {
                seen.extend_from_slice(&buf[..n]);
                let stanzas = seen.windows(5).filter(|w| w == b"</iq>").count();
                count_tx.send_replace(stanzas);
            }
        });
        (addr, count)
    }

    async fn tls_writer(addr: SocketAddr) -> (Reader, Writer) {
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny))
        .with_no_client_auth();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("example.com").unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap();
        let (r, w) = tokio::io::split(crate::websocket::Io::Tls(Box::new(tls)));
        BenchClient {
            reader: StreamReader::new(BufReader::new(r), Limits::default()),
            writer: w,
            sm: None,
            sasl: Sasl::Plain,
        }
        .split()
    }

    /// Many stanzas written without the writer ever waiting (more than a task's cooperative
    /// budget of socket operations) all reach the server before anything else is written.
    #[tokio::test]
    async fn pipelined_pings_all_reach_the_server() {
        const PINGS: usize = 400;
        let (addr, mut count) = counting_server().await;
        let (_reader, mut writer) = tls_writer(addr).await;
        for i in 0..PINGS {
            writer
                .send_ping("someone@example.com", &format!("p{i}"))
                .await
                .unwrap();
        }
        let arrived = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            count.wait_for(|n| *n == PINGS),
        )
        .await
        .is_ok();
        assert!(arrived, "only {} of {PINGS} pings arrived", *count.borrow());
    }
}
