//! A bound session: announces itself, relays the client's stanzas to the routers (with the
//! authenticated `from` stamped), writes what is delivered to it, keeps the routing-relevant
//! state (presence, priority, roster interest, directed presence), and on its end tells the
//! routers and the contacts.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meerkat_bus::Props;
use meerkat_wire::{headers as h, topology as names, RouteKind, SessionEventKind, SessionInfo};
use meerkat_xmpp::stanza::{error_reply, iq_result};
use meerkat_xmpp::{
    ns, Element, Inbound, ReadError, StanzaError, StanzaKind, StanzaType, StreamError,
};
use tokio::sync::mpsc;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::conn::{Activity, Reader, Transport};
use crate::handoff::{bind_result, Bound, Counted, End};
use crate::register::AccountChange;
use crate::registry::{Inbox, Next, Outbound};
use crate::shaper::{Rates, Shaper};
use crate::{accounts, events, register, Ctx};

/// Hops a stanza may be re-routed after a bounce before offline handling takes over.
const HOPS: u64 = 3;

struct State {
    info: SessionInfo,
    username: String,
    bare: String,
    /// JIDs this session sent directed available presence to (RFC 6121 §4.6).
    directed: HashSet<String>,
}

/// Sets up the session of a bound connection and returns it, to run on its own task. What is
/// done before it runs is done here, outside the future: an idle session's future is most of
/// what the connection's task keeps (an `async fn` keeps its arguments twice), and is sized
/// for the session's loop only.
pub fn start(
    ctx: Arc<Ctx>,
    transport: Transport,
    bound: Bound,
    counted: Counted,
) -> impl Future<Output = ()> + Send + 'static {
    let id = Uuid::now_v7();
    // The route partition key of every stanza of this session (meerkat_xmpp::addr).
    let bare = meerkat_xmpp::addr::account(&bound.username, &ctx.config.domain);
    let mut st = State {
        info: SessionInfo {
            jid: bound.jid,
            session_id: id,
            version: 1,
            dc: ctx.config.dc.clone(),
            gateway: ctx.instance.clone(),
            available: false,
            priority: 0,
            presence: None,
            interested: false,
        },
        username: bound.username,
        bare,
        directed: HashSet::new(),
    };
    let bind_xml = bind_result(&bound.bind_request, &st.info.jid).to_client_xml();
    let (mailbox, inbox) = crate::registry::mailbox(ctx.config.max_queued_bytes);
    let credentials = bound.credentials;
    let replaced = ctx.registry.insert(id, &st.info.jid, credentials, mailbox);
    ctx.metrics.sessions.inc();
    let activity = transport.activity();
    let (reader, mut writer) = transport.into_parts();
    // What the client sends waits in the channel until the session is announced.
    let (in_tx, mut in_rx) = mpsc::channel(64);
    let read_task = tokio::spawn(read_loop(
        reader,
        in_tx,
        activity.clone(),
        ctx.config.client_rates(),
        ctx.metrics.throttled.clone(),
    ));
    async move {
        let _counted = counted;
        if let Some(old) = replaced {
            old.tell(Outbound::Conflict);
        }
        let mut w = Writer {
            inner: &mut writer,
            timeout: Duration::from_secs(ctx.config.write_timeout_secs.get()),
        };
        // A stanza taken from the mailbox whose write did not complete: bounced before the rest.
        let mut unwritten = None;
        // The account is checked again now that the session is registered: a change made
        // since authentication ends it here, one made from now on reaches it.
        let valid = accounts::check(&ctx, &st.username, credentials).await;
        let end = if let Err(e) = valid {
            End::Error(e)
        } else if let Err(end) = Box::pin(announce(&ctx, &st.info, &mut w, bind_xml)).await {
            end
        } else {
            tracing::debug!(jid = %st.info.jid, session = %id, "session bound");
            let idle_limit = Duration::from_secs(ctx.config.idle_timeout_secs);
            let mut tick = tokio::time::interval(Duration::from_secs(1).min(idle_limit));
            loop {
                tokio::select! {
                    inbound = in_rx.recv() => match inbound.map(|b| *b) {
                        Some(Ok(Inbound::Stanza(el))) => {
                            if let Err(end) = Box::pin(client_stanza(&ctx, &mut st, &mut w, el)).await {
                                break end;
                            }
                        }
                        Some(Ok(Inbound::Close)) => break End::ClientClosed,
                        Some(Ok(Inbound::Open(_))) => break End::Error(StreamError::new("not-well-formed")),
                        Some(Err(ReadError::Stream(e))) => break End::Error(e),
                        Some(Err(_)) | None => break End::Gone,
                    },
                    next = inbox.next() => match next {
                        Next::Item(Outbound::Stanza(xml)) => {
                            // A write that waits on a client not reading is cut by the write
                            // deadline, or sooner when the mailbox overflows meanwhile.
                            let written = tokio::select! {
                                r = w.send(&xml) => r,
                                bytes = inbox.overflowed() => Err(overflowed(bytes)),
                            };
                            if let Err(end) = written {
                                unwritten = Some(xml);
                                break end;
                            }
                            ctx.metrics.stanzas_out.inc();
                        }
                        Next::Item(Outbound::Conflict) => break End::Error(StreamError::with_text("conflict", "replaced by a new connection")),
                        Next::Item(Outbound::End(e)) => break End::Error(e),
                        Next::Item(Outbound::Announce) => {
                            Box::pin(events::publish(&ctx, SessionEventKind::Announce, &st.info)).await;
                        }
                        Next::Overflowed { bytes } => break overflowed(bytes),
                    },
                    _ = tick.tick() => {
                        if activity.idle_for() > idle_limit {
                            break End::Error(StreamError::with_text("connection-timeout", "idle for too long"));
                        }
                    }
                    _ = ctx.shutdown.cancelled() => break End::Error(StreamError::new("system-shutdown")),
                }
            }
        };
        read_task.abort();

        // Stop writing; everything not written, and whatever still arrives until the mailbox
        // is empty, goes back to the routers in the order it came. Only then does the session
        // leave the registry: a stanza for it after that is bounced by whoever holds it, behind
        // these.
        inbox.close();
        let bounced = Box::pin(bounce_unwritten(&ctx, id, unwritten, &inbox)).await;
        if bounced > 0 {
            tracing::info!(jid = %st.info.jid, session = %id, bounced, "undelivered stanzas sent back to the routers");
        }
        ctx.registry.remove(id);
        Box::pin(end_session(&ctx, &mut st)).await;
        let mut transport_end = TransportEnd {
            writer: &mut writer,
        };
        Box::pin(transport_end.finish(&ctx, end)).await;
        ctx.metrics.sessions.dec();
        tracing::debug!(jid = %st.info.jid, session = %id, "session ended");
    }
}

/// Tells the routers the session is open, then answers the bind request.
async fn announce(
    ctx: &Ctx,
    info: &SessionInfo,
    w: &mut Writer<'_>,
    bind_xml: String,
) -> Result<(), End> {
    if !events::publish(ctx, SessionEventKind::Open, info).await {
        return Err(End::Error(StreamError::with_text(
            "internal-server-error",
            "session directory unavailable",
        )));
    }
    w.send(&bind_xml).await
}

/// The session's end when its mailbox overflowed: its client does not read what it is sent
/// (RFC 6120 §4.9.3.14: a local service policy).
fn overflowed(bytes: usize) -> End {
    End::Error(StreamError::with_text(
        "policy-violation",
        format!("too much waiting to be written ({bytes} bytes): the client does not read"),
    ))
}

/// The write half, with a deadline on every write; errors become the session's end.
struct Writer<'a> {
    inner: &'a mut tokio::io::WriteHalf<crate::conn::Socket>,
    /// Longest one write may take: past it the client has stopped reading.
    timeout: Duration,
}

impl Writer<'_> {
    async fn send(&mut self, xml: &str) -> Result<(), End> {
        use tokio::io::AsyncWriteExt;
        let write = async {
            self.inner.write_all(xml.as_bytes()).await?;
            self.inner.flush().await
        };
        match tokio::time::timeout(self.timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Gone),
            // RFC 6120 §4.9.3.4: the other party seems to have lost the ability to communicate.
            Err(_) => Err(End::Error(StreamError::with_text(
                "connection-timeout",
                "the client does not read what it is sent",
            ))),
        }
    }
}

struct TransportEnd<'a> {
    writer: &'a mut tokio::io::WriteHalf<crate::conn::Socket>,
}

impl TransportEnd<'_> {
    async fn finish(&mut self, ctx: &Ctx, end: End) {
        use tokio::io::AsyncWriteExt;
        let text = match &end {
            End::Error(e) => {
                ctx.metrics
                    .stream_errors
                    .get_or_create(&crate::metrics::KindLabel {
                        kind: e.condition.to_owned(),
                    })
                    .inc();
                format!("{}</stream:stream>", e.to_xml())
            }
            End::ClientClosed => "</stream:stream>".to_owned(),
            End::Gone => return,
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = self.writer.write_all(text.as_bytes()).await;
            let _ = self.writer.flush().await;
            let _ = self.writer.shutdown().await;
        })
        .await;
    }
}

/// Reads the client's stanzas into `tx`, boxed: a channel allocates its slots in blocks of 32,
/// and 32 unboxed parse results cost every connection about 5 KiB while it idles.
/// (A plain function returning the loop: an `async fn` would keep its reader twice.)
///
/// Past the session's byte or stanza rate it stops reading for as long as the excess takes to
/// pay back: the client's bytes wait in its socket and TCP slows it down.
#[allow(clippy::manual_async_fn)]
fn read_loop(
    mut reader: Reader,
    tx: mpsc::Sender<Box<Result<Inbound, ReadError>>>,
    activity: Activity,
    rates: Rates,
    throttled: prometheus_client::metrics::counter::Counter,
) -> impl Future<Output = ()> + Send + 'static {
    async move {
        let mut shaper = Shaper::new(rates, Instant::now());
        let mut charged = activity.bytes_read();
        loop {
            let item = reader.next().await;
            let stop = !matches!(item, Ok(Inbound::Stanza(_)));
            if tx.send(Box::new(item)).await.is_err() || stop {
                return;
            }
            let read = activity.bytes_read();
            let pause = shaper.charge(read.saturating_sub(charged), 1, Instant::now());
            charged = read;
            if !pause.is_zero() {
                throttled.inc();
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// One stanza from the client.
async fn client_stanza(
    ctx: &Ctx,
    st: &mut State,
    w: &mut Writer<'_>,
    mut el: Element,
) -> Result<(), End> {
    let Some(kind) = StanzaKind::of(&el) else {
        return Err(End::Error(StreamError::with_text(
            "unsupported-stanza-type",
            format!("<{}/> in {} is not a stanza", el.name(), el.ns()),
        )));
    };
    ctx.metrics
        .stanzas_in
        .get_or_create(&crate::metrics::KindLabel {
            kind: kind.as_str().to_owned(),
        })
        .inc();
    // RFC 6120 §8.1.2.1: the server stamps the full JID the client is bound to.
    el.set_attr("from", st.info.jid.clone());
    let ty = StanzaType::of(&el);
    if let Some(to) = el.attr("to") {
        match meerkat_xmpp::Jid::new(to) {
            Ok(jid) => {
                let normalized = jid.to_string();
                el.set_attr("to", normalized);
            }
            Err(_) => {
                if kind != StanzaKind::Presence && !meerkat_xmpp::stanza::must_not_bounce(&el) {
                    let reply = error_reply(&el, &StanzaError::jid_malformed());
                    w.send(&reply.to_client_xml()).await?;
                }
                return Ok(());
            }
        }
    }
    let to_self = match el.attr("to") {
        None => true,
        Some(to) => to == st.bare || to.eq_ignore_ascii_case(&ctx.config.domain),
    };
    let mut initial = false;
    match kind {
        StanzaKind::Iq if to_self && ty.is_request() => {
            if let Some(payload) = el.children().next().cloned() {
                if payload.ns() == ns::SESSION {
                    let reply = iq_result(&el);
                    return w.send(&reply.to_client_xml()).await;
                }
                if payload.ns() == ns::REGISTER {
                    let (reply, change) =
                        register::after_auth(ctx, &st.username, &el, &payload).await;
                    w.send(&reply.to_client_xml()).await?;
                    return match change {
                        AccountChange::None => Ok(()),
                        AccountChange::Removed => {
                            accounts::announce(ctx, &st.username).await;
                            Err(End::Error(StreamError::with_text(
                                "not-authorized",
                                "account removed",
                            )))
                        }
                        AccountChange::Credentials(fp) => {
                            // This session keeps going with the new password (as Prosody).
                            ctx.registry.set_credentials(st.info.session_id, fp);
                            accounts::announce(ctx, &st.username).await;
                            Ok(())
                        }
                    };
                }
                if payload.ns() == ns::ROSTER && ty == StanzaType::Get && !st.info.interested {
                    st.info.interested = true;
                    update(ctx, st).await;
                }
            }
        }
        StanzaKind::Presence if el.attr("to").is_none() => match ty {
            StanzaType::Available => {
                initial = !st.info.available;
                st.info.available = true;
                st.info.priority = el
                    .child_text("priority", ns::CLIENT)
                    .and_then(|p| p.trim().parse::<i8>().ok())
                    .unwrap_or(0);
                st.info.presence = Some(el.to_xml());
                update(ctx, st).await;
            }
            StanzaType::Unavailable => {
                let was = st.info.available;
                st.info.available = false;
                st.info.presence = None;
                update(ctx, st).await;
                if was {
                    route(ctx, st, &el, false).await?;
                    directed_unavailable(ctx, st).await;
                }
                return Ok(());
            }
            _ => {}
        },
        StanzaKind::Presence => {
            if let Some(to) = el.attr("to") {
                match ty {
                    StanzaType::Available => {
                        st.directed.insert(to.to_owned());
                    }
                    StanzaType::Unavailable => {
                        st.directed.remove(to);
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
    route(ctx, st, &el, initial).await
}

async fn update(ctx: &Ctx, st: &mut State) {
    st.info.version += 1;
    events::publish(ctx, SessionEventKind::Update, &st.info).await;
}

/// Publishes a client stanza to the routers (confirmed before the next one, keeping order).
/// The span is the root of the stanza's trace and its creation context: it travels in the AMQP
/// headers. Named and attributed by the OpenTelemetry messaging conventions (docs/observability.md).
async fn route(ctx: &Ctx, st: &State, el: &Element, initial: bool) -> Result<(), End> {
    let message_id = Uuid::new_v4().to_string();
    let span = tracing::info_span!(
        "publish meerkat.route",
        otel.kind = "producer",
        messaging.system = "rabbitmq",
        messaging.operation.type = "publish",
        messaging.operation.name = "publish",
        messaging.destination.name = names::ROUTE_EXCHANGE,
        messaging.rabbitmq.destination.routing_key = %st.bare,
        messaging.message.id = %message_id,
        xmpp.stanza = el.name(),
    );
    route_in_span(ctx, st, el, initial, message_id)
        .instrument(span)
        .await
}

async fn route_in_span(
    ctx: &Ctx,
    st: &State,
    el: &Element,
    initial: bool,
    message_id: String,
) -> Result<(), End> {
    let mut props = Props::stanza(RouteKind::Stanza, &ctx.config.dc)
        .id(message_id)
        .str(h::ORIGIN_EPOCH, &ctx.epoch)
        .u64(h::HOPS, HOPS)
        .str(h::SENDER, &st.info.jid)
        .str(h::SESSION, &st.info.session_id.to_string())
        .str(h::GATEWAY, &ctx.instance)
        .u64(h::SESSION_VERSION, st.info.version)
        .u64(h::RECEIVED_AT, now_ms());
    if initial {
        props = props.bool(h::INITIAL_PRESENCE, true);
    }
    meerkat_runtime::telemetry::inject_context(props.headers_mut());
    ctx.publisher
        .publish(
            names::ROUTE_EXCHANGE,
            &st.bare,
            props,
            el.to_xml().as_bytes(),
        )
        .await
        .map_err(|_| {
            End::Error(StreamError::with_text(
                "internal-server-error",
                "routing unavailable",
            ))
        })
}

async fn directed_unavailable(ctx: &Ctx, st: &mut State) {
    for to in std::mem::take(&mut st.directed) {
        let p = Element::new("presence", ns::CLIENT)
            .with_attr("type", "unavailable")
            .with_attr("from", st.info.jid.clone())
            .with_attr("to", to);
        let _ = route(ctx, st, &p, false).await;
    }
}

/// Tells contacts and routers that the session is over.
async fn end_session(ctx: &Ctx, st: &mut State) {
    if st.info.available {
        st.info.available = false;
        st.info.presence = None;
        let p = Element::new("presence", ns::CLIENT)
            .with_attr("type", "unavailable")
            .with_attr("from", st.info.jid.clone());
        let _ = route(ctx, st, &p, false).await;
    }
    directed_unavailable(ctx, st).await;
    st.info.version += 1;
    events::publish(ctx, SessionEventKind::Close, &st.info).await;
}

/// Sends back to the routers, in order, the stanza whose write did not complete and everything
/// left in the mailbox, until it is empty and marked gone. Returns how many.
async fn bounce_unwritten(ctx: &Ctx, id: Uuid, unwritten: Option<String>, inbox: &Inbox) -> usize {
    let mut n = 0;
    for xml in unwritten
        .into_iter()
        .chain(std::iter::from_fn(|| inbox.drain()))
    {
        if !crate::delivery::bounce(ctx, xml.as_bytes(), Some(id), HOPS - 1).await {
            tracing::error!(session = %id, "could not send an undelivered stanza back to the routers");
        }
        n += 1;
    }
    n
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
