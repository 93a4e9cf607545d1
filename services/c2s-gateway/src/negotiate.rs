//! Stream negotiation up to a bound resource (RFC 6120 §4–§7): stream header checks,
//! features, STARTTLS, SASL, in-band registration, resource binding. A negotiation error
//! ends the stream with the matching stream error; the service carries on.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use meerkat_xmpp::stanza::{error_reply, iq_result};
use meerkat_xmpp::{ns, Element, Inbound, StanzaError, StanzaType, StreamError, StreamHeader};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use crate::conn::{Socket, Transport};
use crate::handoff::{Bound, Counted, End};
use crate::link::Resumption;
use crate::register::AccountChange;
use crate::{accounts, register, sasl, session, sm, Ctx};

/// State that grows as negotiation proceeds.
pub struct Negotiated {
    /// Authenticated local part, once SASL succeeded.
    pub username: Option<String>,
    /// Fingerprint of the credentials the user authenticated with (`crate::accounts`).
    pub credentials: u64,
    /// The connection's place in the counts: it goes with the connection to its session (or
    /// to the session it resumes).
    pub counted: Option<Counted>,
}

/// How negotiation ended well.
pub enum Negotiation {
    /// A resource to bind: a new session.
    Bound(Bound),
    /// The connection resumed a session (XEP-0198) and was handed over to it.
    Resumed,
    /// The connection resumed a session another gateway held, which moved here.
    Moved(Box<session::MovedIn>),
}

/// Runs one client connection from accept to a bound resource, or to its close. A bound
/// connection's session is returned to run on its own task: this one is sized for negotiation
/// (TLS, SASL, their database queries), and a session lives far longer with far less.
pub async fn serve_connection(
    ctx: Arc<Ctx>,
    mut tcp: TcpStream,
    peer: SocketAddr,
    direct_tls: bool,
    permit: OwnedSemaphorePermit,
) -> Option<impl Future<Output = ()> + Send + 'static> {
    let counted = Counted::new(&ctx.metrics.connections, permit);
    let _ = tcp.set_nodelay(true);
    // Behind a load balancer the client's address comes in a PROXY protocol header.
    let peer =
        crate::proxy::client_address(&mut tcp, peer, &ctx.config.proxy_protocol_from).await?;
    // A client that starts TLS at once on the STARTTLS port (some try direct TLS first on any
    // port they are given) gets TLS rather than a stream that would wait forever for XML.
    let direct_tls = direct_tls || starts_with_tls_handshake(&tcp).await;
    let socket = if direct_tls {
        match tokio::time::timeout(Duration::from_secs(10), Box::pin(ctx.tls.accept(tcp))).await {
            Ok(Ok(tls)) => Socket::Tls(Box::new(tls)),
            _ => return None,
        }
    } else {
        Socket::Plain(tcp)
    };
    let transport = Transport::new(socket, ctx.limits);
    serve_counted(ctx, transport, peer, counted).await
}

/// [`serve_connection`] for a connection whose transport is ready (a WebSocket).
pub async fn serve_transport(
    ctx: Arc<Ctx>,
    transport: Transport,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
) -> Option<impl Future<Output = ()> + Send + 'static> {
    let counted = Counted::new(&ctx.metrics.connections, permit);
    serve_counted(ctx, transport, peer, counted).await
}

async fn serve_counted(
    ctx: Arc<Ctx>,
    transport: Transport,
    peer: SocketAddr,
    counted: Counted,
) -> Option<impl Future<Output = ()> + Send + 'static> {
    let deadline = Duration::from_secs(ctx.config.negotiation_timeout_secs);
    let mut state = Negotiated {
        username: None,
        credentials: 0,
        counted: Some(counted),
    };
    let mut holder = Some(transport);
    let outcome = tokio::select! {
        o = tokio::time::timeout(deadline, Box::pin(negotiate(&ctx, &mut holder, &mut state, peer))) => o,
        _ = ctx.shutdown.cancelled() => Ok(Err(End::Error(StreamError::new("system-shutdown")))),
    };
    match (outcome, holder, state.counted.take()) {
        (Ok(Ok(Negotiation::Bound(bound))), Some(transport), Some(counted)) => {
            return Some(session::start(
                ctx.clone(),
                transport,
                session::Begin::Bound(bound),
                counted,
            ));
        }
        (Ok(Ok(Negotiation::Moved(m))), Some(transport), Some(counted)) => {
            return Some(session::start(
                ctx.clone(),
                transport,
                session::Begin::Moved(m),
                counted,
            ));
        }
        (Ok(Err(end)), Some(mut transport), _) => Box::pin(finish(&ctx, &mut transport, end)).await,
        (Err(_elapsed), Some(mut transport), _) => {
            Box::pin(finish(
                &ctx,
                &mut transport,
                End::Error(StreamError::new("connection-timeout")),
            ))
            .await
        }
        _ => {}
    }
    None
}

/// Whether the first byte the client sent opens a TLS handshake record (0x16).
async fn starts_with_tls_handshake(tcp: &TcpStream) -> bool {
    let mut first = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_secs(10), tcp.peek(&mut first)).await,
        Ok(Ok(1))
    ) && first[0] == 0x16
}

/// Writes the stream error (if any) and the closing tag.
pub async fn finish(ctx: &Ctx, transport: &mut Transport, end: End) {
    match end {
        End::Error(e) => {
            tracing::debug!(error = %e, "ending stream");
            ctx.metrics
                .stream_errors
                .get_or_create(&crate::metrics::KindLabel {
                    kind: e.condition.to_owned(),
                })
                .inc();
            let _ = transport
                .write(&format!("{}</stream:stream>", e.to_xml()))
                .await;
            transport.linger().await;
        }
        End::ClientClosed => {
            let _ = transport.write("</stream:stream>").await;
        }
        End::Gone => {}
    }
}

fn header_xml(ctx: &Ctx, client: &StreamHeader) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let to = client
        .from
        .as_deref()
        .map(|f| format!(" to='{}'", meerkat_xmpp::escape_attr(f)))
        .unwrap_or_default();
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='{}' xmlns:stream='{}' id='{id}' from='{}'{to} version='1.0' xml:lang='en'>",
        ns::CLIENT,
        ns::STREAM,
        meerkat_xmpp::escape_attr(&ctx.config.domain)
    )
}

/// RFC 6120 §4.8–4.9: namespace, host and version checks on the client's header.
fn check_header(ctx: &Ctx, h: &StreamHeader) -> Result<(), StreamError> {
    if h.name != "stream" || h.stream_ns != ns::STREAM {
        return Err(StreamError::with_text(
            "invalid-namespace",
            "expected <stream:stream> in the streams namespace",
        ));
    }
    if h.default_ns.as_deref() != Some(ns::CLIENT) {
        return Err(StreamError::with_text(
            "invalid-namespace",
            "the default namespace must be jabber:client",
        ));
    }
    match h.to.as_deref() {
        Some(to) if to.eq_ignore_ascii_case(&ctx.config.domain) => {}
        Some(_) | None => {
            return Err(StreamError::with_text(
                "host-unknown",
                format!("this server serves {}", ctx.config.domain),
            ))
        }
    }
    let major = h
        .version
        .as_deref()
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse::<u32>().ok());
    if major.unwrap_or(0) < 1 {
        return Err(StreamError::with_text(
            "unsupported-version",
            "XMPP 1.0 streams only",
        ));
    }
    Ok(())
}

fn features(ctx: &Ctx, t: &Transport, state: &Negotiated) -> String {
    let secure = t.is_secure();
    let mut f = Element::new("features", ns::STREAM);
    let auth_allowed = secure || !ctx.config.tls_required;
    match &state.username {
        None => {
            if t.can_starttls() {
                let mut starttls = Element::new("starttls", ns::TLS);
                if ctx.config.tls_required {
                    starttls.push_child(Element::new("required", ns::TLS));
                }
                f.push_child(starttls);
            }
            if auth_allowed {
                let mut mechs = Element::new("mechanisms", ns::SASL);
                for m in sasl::offered(secure) {
                    mechs.push_child(Element::new("mechanism", ns::SASL).with_text(*m));
                }
                f.push_child(mechs);
                // XEP-0388, inside TLS only (its §5), with XEP-0198 resumption inline (§7.2).
                if secure && ctx.config.sasl2 {
                    let mut sasl2 = Element::new("authentication", ns::SASL2);
                    for m in sasl::offered(secure) {
                        sasl2.push_child(Element::new("mechanism", ns::SASL2).with_text(*m));
                    }
                    sasl2.push_child(
                        Element::new("inline", ns::SASL2).with_child(Element::new("sm", ns::SM)),
                    );
                    f.push_child(sasl2);
                }
                if ctx.config.registration {
                    f.push_child(Element::new("register", ns::REGISTER_FEATURE));
                }
            }
        }
        Some(_) => {
            f.push_child(Element::new("bind", ns::BIND));
            f.push_child(Element::new("sm", ns::SM));
            f.push_child(Element::new("csi", ns::CSI));
            f.push_child(
                Element::new("session", ns::SESSION)
                    .with_child(Element::new("optional", ns::SESSION)),
            );
            f.push_child(Element::new("ver", ns::ROSTER_VER));
            f.push_child(Element::new("sub", ns::PRE_APPROVAL));
        }
    }
    // Written with the conventional prefix so every client recognises it.
    let mut out = String::from("<stream:features>");
    for child in f.children() {
        child.write_to(&mut out, ns::CLIENT);
    }
    out.push_str("</stream:features>");
    out
}

async fn negotiate(
    ctx: &Ctx,
    holder: &mut Option<Transport>,
    state: &mut Negotiated,
    peer: SocketAddr,
) -> Result<Negotiation, End> {
    loop {
        // A (new) stream: header, then features.
        let t = holder.as_mut().ok_or(End::Gone)?;
        let header = match t.read().await? {
            Inbound::Open(h) => h,
            _ => return Err(End::Error(StreamError::new("not-well-formed"))),
        };
        t.write(&header_xml(ctx, &header)).await?;
        check_header(ctx, &header).map_err(End::Error)?;
        t.write(&features(ctx, t, state)).await?;

        // Stanzas and negotiation elements until a restart or a bound resource.
        loop {
            let t = holder.as_mut().ok_or(End::Gone)?;
            let el = match t.read().await? {
                Inbound::Stanza(el) => el,
                Inbound::Close => return Err(End::ClientClosed),
                Inbound::Open(_) => return Err(End::Error(StreamError::new("not-well-formed"))),
            };
            match (el.ns(), el.name()) {
                (ns::TLS, "starttls") => {
                    if !t.can_starttls() || state.username.is_some() {
                        t.write(
                            "<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:stream>",
                        )
                        .await?;
                        return Err(End::Gone);
                    }
                    t.write("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
                        .await?;
                    let plain = holder.take().ok_or(End::Gone)?;
                    let secured = plain.starttls(&ctx.tls).await.map_err(|e| {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        End::Gone
                    })?;
                    *holder = Some(secured);
                    break;
                }
                (ns::SASL, "auth") => {
                    if state.username.is_some() {
                        return Err(End::Error(StreamError::with_text(
                            "policy-violation",
                            "already authenticated",
                        )));
                    }
                    let allowed = t.is_secure() || !ctx.config.tls_required;
                    let profile = sasl::Profile::Rfc6120;
                    match sasl::authenticate(ctx, t, &el, peer, allowed, profile).await? {
                        Some(done) => {
                            // What the session holds against later account changes: the
                            // credentials the proof was checked against. A change since that
                            // read is caught by the check after binding (or resuming), which
                            // reads the account again (accounts::check).
                            state.credentials = done.credentials;
                            state.username = Some(done.user);
                            let t = holder.take().ok_or(End::Gone)?;
                            *holder = Some(t.restart());
                            break;
                        }
                        None => continue,
                    }
                }
                // XEP-0388: no restart; `<success/>` carries what inline features answered,
                // and the features of the authenticated stream follow it, unless the session
                // was resumed (XEP-0198 §7.2).
                (ns::SASL2, "authenticate") if ctx.config.sasl2 => {
                    if state.username.is_some() {
                        return Err(End::Error(StreamError::with_text(
                            "policy-violation",
                            "already authenticated",
                        )));
                    }
                    let allowed = t.is_secure();
                    let profile = sasl::Profile::Sasl2;
                    let Some(done) =
                        sasl::authenticate(ctx, t, &el, peer, allowed, profile).await?
                    else {
                        continue;
                    };
                    state.credentials = done.credentials;
                    let bare = meerkat_xmpp::addr::account(&done.user, &ctx.config.domain);
                    state.username = Some(done.user);
                    let inline = match el.get_child("resume", ns::SM) {
                        Some(r) => {
                            let sasl2 = Some(done.additional.clone());
                            if let Some(resumed) = try_resume(ctx, holder, state, r, sasl2).await? {
                                return Ok(resumed);
                            }
                            ctx.metrics.sm_failed.inc();
                            sm::failed("item-not-found", None)
                        }
                        None => String::new(),
                    };
                    let t = holder.as_mut().ok_or(End::Gone)?;
                    let success = sasl::sasl2_success(done.additional.as_deref(), &bare, &inline);
                    t.write(&format!("{success}{}", features(ctx, t, state)))
                        .await?;
                }
                (ns::CLIENT, "iq") => {
                    if let Some(bound) = pre_session_iq(ctx, t, el, state, peer).await? {
                        return Ok(Negotiation::Bound(bound));
                    }
                }
                (ns::SM, "resume") if state.username.is_some() => {
                    if let Some(done) = resume(ctx, holder, state, &el).await? {
                        return Ok(done);
                    }
                }
                // Stream management before a resource is bound (XEP-0198 §3: `<enable/>`
                // comes after binding; `<resume/>` after authentication).
                (ns::SM, "enable" | "resume") => {
                    t.write(&sm::failed("unexpected-request", None)).await?;
                }
                (ns::CLIENT, "message" | "presence") => {
                    return Err(End::Error(StreamError::with_text(
                        "not-authorized",
                        "authenticate and bind a resource first",
                    )));
                }
                _ => {
                    return Err(End::Error(StreamError::with_text(
                        "unsupported-stanza-type",
                        format!("<{}/> in {} is not supported here", el.name(), el.ns()),
                    )))
                }
            }
        }
    }
}

/// `<resume/>` after authentication: the connection goes to the session it names, if this
/// gateway holds it for this account and the id carries its secret; if another gateway holds
/// it, the session moves here (crate::handover); otherwise
/// `<failed><item-not-found/></failed>`, alike for every reason, and the client may bind.
async fn resume(
    ctx: &Ctx,
    holder: &mut Option<Transport>,
    state: &mut Negotiated,
    el: &Element,
) -> Result<Option<Negotiation>, End> {
    if let Some(resumed) = try_resume(ctx, holder, state, el, None).await? {
        return Ok(Some(resumed));
    }
    ctx.metrics.sm_failed.inc();
    let t = holder.as_mut().ok_or(End::Gone)?;
    t.write(&sm::failed("item-not-found", None)).await?;
    Ok(None)
}

/// The resumption `el` asks for, answered as `sasl2` says ([`sm::ResumedAs`]); `None` when
/// there is nothing to resume (nothing written: the caller says `<failed/>`).
async fn try_resume(
    ctx: &Ctx,
    holder: &mut Option<Transport>,
    state: &mut Negotiated,
    el: &Element,
    sasl2: Option<Option<String>>,
) -> Result<Option<Negotiation>, End> {
    let h = sm::h_of(el).map_err(End::Error)?;
    let previd = el.attr("previd").unwrap_or_default().to_owned();
    let user = state.username.as_deref().unwrap_or_default();
    let bare = meerkat_xmpp::addr::account(user, &ctx.config.domain);
    let rid = sm::ResumeId::parse(&previd);
    let slot = rid
        .as_ref()
        .and_then(|rid| ctx.registry.resumable(rid, &bare));
    // Not held here: another gateway may hold it (this account's only, not bound here now).
    let elsewhere = rid.filter(|rid| {
        slot.is_none() && rid.account() == bare && ctx.registry.get_by_jid(&rid.jid).is_none()
    });
    if let Some(rid) = elsewhere {
        match crate::handover::ask(ctx, &rid, &bare, state.credentials, h).await {
            crate::handover::Outcome::Moved(arrived) => {
                return Ok(Some(Negotiation::Moved(Box::new(session::MovedIn {
                    arrived,
                    rid,
                    resumed: sm::ResumedAs { previd, sasl2 },
                    h,
                    username: user.to_owned(),
                    credentials: state.credentials,
                }))));
            }
            crate::handover::Outcome::TooHigh(t) => {
                let t_xml = sm::too_high(&t);
                let tr = holder.as_mut().ok_or(End::Gone)?;
                tr.write(&t_xml).await?;
                return Err(End::Gone);
            }
            crate::handover::Outcome::NotFound => {}
        }
    }
    let taken = slot.and_then(|tx| Some((tx, holder.take()?, state.counted.take()?)));
    if let Some((tx, transport, counted)) = taken {
        let handed = Box::new(Resumption {
            transport,
            counted,
            h,
            resumed: sm::ResumedAs { previd, sasl2 },
        });
        match tx.try_send(handed) {
            Ok(()) => return Ok(Some(Negotiation::Resumed)),
            Err(e) => {
                // The session is ending, or another connection is resuming it right now.
                let back = e.into_inner();
                *holder = Some(back.transport);
                state.counted = Some(back.counted);
            }
        }
    }
    Ok(None)
}

/// An iq before a resource is bound: registration before or after auth, bind, session.
async fn pre_session_iq(
    ctx: &Ctx,
    t: &mut Transport,
    iq: Element,
    state: &mut Negotiated,
    peer: SocketAddr,
) -> Result<Option<Bound>, End> {
    let ty = StanzaType::of(&iq);
    if !ty.is_request() {
        return Ok(None);
    }
    let payload = iq.children().next().cloned();
    let Some(payload) = payload else {
        t.write(&error_reply(&iq, &StanzaError::bad_request()).to_client_xml())
            .await?;
        return Ok(None);
    };
    match (&state.username, payload.ns()) {
        (None, ns::REGISTER) => {
            let reply = register::before_auth(ctx, t.is_secure(), peer, &iq, &payload).await;
            t.write(&reply.to_client_xml()).await?;
            Ok(None)
        }
        (None, _) => Err(End::Error(StreamError::with_text(
            "not-authorized",
            "authenticate first",
        ))),
        (Some(user), ns::BIND) if ty == StanzaType::Set => {
            let requested = payload
                .child_text("resource", ns::BIND)
                .filter(|r| !r.trim().is_empty());
            let resource = requested.unwrap_or_else(|| {
                format!(
                    "meerkat-{}",
                    &uuid::Uuid::new_v4().simple().to_string()[..10]
                )
            });
            let full = format!("{user}@{}/{resource}", ctx.config.domain);
            match meerkat_xmpp::FullJid::new(&full) {
                Ok(jid) => {
                    // RFC 6120 §7.6.2.1: too many resources bound for the account. Counted on
                    // this gateway (docs/security/accounts-and-links.md says why).
                    let jid = jid.to_string();
                    let bare = meerkat_xmpp::addr::bare(&jid);
                    let cap = ctx.config.max_sessions_per_account;
                    if ctx.registry.count_account(&bare, &jid) >= cap {
                        let e = StanzaError::resource_constraint()
                            .text(format!("at most {cap} sessions per account"));
                        t.write(&error_reply(&iq, &e).to_client_xml()).await?;
                        return Ok(None);
                    }
                    Ok(Some(Bound {
                        username: user.clone(),
                        jid,
                        credentials: state.credentials,
                        bind_request: iq,
                    }))
                }
                Err(_) => {
                    t.write(
                        &error_reply(&iq, &StanzaError::bad_request().text("invalid resource"))
                            .to_client_xml(),
                    )
                    .await?;
                    Ok(None)
                }
            }
        }
        (Some(_), ns::SESSION) => {
            t.write(&iq_result(&iq).to_client_xml()).await?;
            Ok(None)
        }
        (Some(user), ns::REGISTER) => {
            let (reply, change) = register::after_auth(ctx, user, &iq, &payload).await;
            t.write(&reply.to_client_xml()).await?;
            match change {
                AccountChange::None => Ok(None),
                AccountChange::Removed => {
                    accounts::announce(ctx, user).await;
                    Err(End::Error(StreamError::with_text(
                        "not-authorized",
                        "account removed",
                    )))
                }
                AccountChange::Credentials(fp) => {
                    state.credentials = fp;
                    accounts::announce(ctx, user).await;
                    Ok(None)
                }
            }
        }
        (Some(_), _) => {
            let reply = error_reply(
                &iq,
                &StanzaError::not_allowed().text("bind a resource first"),
            );
            t.write(&reply.to_client_xml()).await?;
            Ok(None)
        }
    }
}
