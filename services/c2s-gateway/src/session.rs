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
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::conn::{Activity, Reader, Transport};
use crate::handoff::{bind_result, Bound, Counted, End};
pub use crate::link::Resumption;
use crate::link::{Conn, Link};
use crate::register::AccountChange;
use crate::registry::{Delivered, Inbox, Next, Outbound, Resumable};
use crate::shaper::{Rates, Shaper};
use crate::sm::{self, Resume, ResumeId, Sm};
use crate::{accounts, events, register, Ctx};

/// Hops a stanza may be re-routed after a bounce before offline handling takes over.
const HOPS: u64 = 3;

struct State {
    info: SessionInfo,
    username: String,
    bare: String,
    /// JIDs this session sent directed available presence to (RFC 6121 §4.6).
    directed: HashSet<String>,
    /// Where connections resuming the session arrive, once it is resumable.
    resume_rx: Option<mpsc::Receiver<Box<Resumption>>>,
    /// The id this session had at the gateway it moved here from (`None`: bound here). The
    /// request that made that session was made for it (its `new_session`), and a late copy of
    /// it is ignored here as there.
    before: Option<Uuid>,
    /// The client resumed at another gateway, which this session moves to.
    moved: Option<
        Box<(
            meerkat_wire::handover::Request,
            meerkat_wire::handover::Moved,
        )>,
    >,
}

/// How a session begins.
pub enum Begin {
    /// A resource was bound.
    Bound(Bound),
    /// The client resumed a session another gateway held, which moved here.
    Moved(Box<MovedIn>),
}

/// A session moved here from another gateway, and the connection that resumed it.
pub struct MovedIn {
    pub arrived: Box<crate::handover::Arrived>,
    /// The resumption id: the client keeps it, and this gateway inherits its secret.
    pub rid: ResumeId,
    pub resumed: sm::ResumedAs,
    /// The client's `h`: what it got.
    pub h: u32,
    pub username: String,
    pub credentials: u64,
}

/// What the session writes first.
enum First {
    /// The bind result.
    Bind(String),
    /// `<resumed/>` (the `previd` to echo), then what the previous holder forwards.
    Resumed(sm::ResumedAs),
}

/// Sets up the session of a bound connection and returns it, to run on its own task. What is
/// done before it runs is done here, outside the future: an idle session's future is most of
/// what the connection's task keeps (an `async fn` keeps its arguments twice), and is sized
/// for the session's loop only.
pub fn start(
    ctx: Arc<Ctx>,
    transport: Transport,
    begin: Begin,
    counted: Counted,
) -> impl Future<Output = ()> + Send + 'static {
    let (mut st, credentials, inbox, replaced, first, sm) = match begin {
        Begin::Bound(bound) => {
            let id = Uuid::now_v7();
            // The route partition key of every stanza of this session (meerkat_xmpp::addr).
            let bare = meerkat_xmpp::addr::account(&bound.username, &ctx.config.domain);
            let st = State {
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
                    carbons: false,
                    blocklist: false,
                },
                username: bound.username,
                bare,
                directed: HashSet::new(),
                resume_rx: None,
                before: None,
                moved: None,
            };
            let bind_xml = bind_result(&bound.bind_request, &st.info.jid).to_client_xml();
            let (mailbox, inbox) = crate::registry::mailbox(ctx.config.max_queued_bytes);
            let replaced = ctx
                .registry
                .insert(id, &st.info.jid, bound.credentials, mailbox);
            (
                st,
                bound.credentials,
                inbox,
                replaced,
                First::Bind(bind_xml),
                None,
            )
        }
        Begin::Moved(m) => {
            let MovedIn {
                arrived,
                rid,
                resumed,
                h,
                username,
                credentials,
            } = *m;
            let crate::handover::Arrived {
                moved,
                session,
                inbox,
                replaced,
            } = *arrived;
            // The same session to every directory (full JID, presence, priority), under a new
            // id that replaces the old entry: no presence flap.
            let mut info = moved.session;
            let before = Some(info.session_id);
            info.session_id = session;
            info.version += 1;
            info.dc = ctx.config.dc.clone();
            info.gateway = ctx.instance.clone();
            let bare = meerkat_xmpp::addr::account(&username, &ctx.config.domain);
            let (tx, rx) = mpsc::channel(1);
            ctx.registry.set_resumable(
                session,
                Resumable {
                    id: rid.clone(),
                    tx,
                },
            );
            let st = State {
                info,
                username,
                bare,
                directed: moved.directed.into_iter().collect(),
                resume_rx: Some(rx),
                before,
                moved: None,
            };
            let mut sm = Sm::moved_in(moved.handled, h);
            sm.resume = Some(Resume {
                id: rid,
                max: moved.max_secs.min(ctx.config.sm_resume_max_secs),
            });
            (
                st,
                credentials,
                inbox,
                replaced,
                First::Resumed(resumed),
                Some(sm),
            )
        }
    };
    let id = st.info.session_id;
    ctx.metrics.sessions.inc();
    let conn = Conn::open(&ctx, transport, counted);
    let mut link = Link::new(&ctx, conn);
    link.sm = sm;
    async move {
        if let Some(old) = replaced {
            old.tell(Outbound::Conflict);
        }
        // The account is checked again now that the session is registered: a change made
        // since authentication ends it here, one made from now on reaches it. The session is
        // announced meanwhile (a check that fails ends it, and its end is announced after).
        // A new session's bind result waits for the announcement's confirm too: until the
        // routers have it, nothing reaches the session. A moved one is reachable before (the
        // routers still name the old holder, whose tombstone forwards here), so its
        // `<resumed/>` and what the old holder kept wait for the check only; the session
        // goes on once the announcement is confirmed, and ends if it is not.
        let began = std::time::Instant::now();
        let info = st.info.clone();
        let mut first = Some(first);
        let ((valid, checked, mut said), (announced, confirmed)) = tokio::join!(
            async {
                let valid = accounts::check(&ctx, &st.username, credentials).await;
                let checked = began.elapsed().as_millis();
                let mut said = Ok(());
                // A moved session speaks once checked: it is reachable already.
                let speaks_now = |f: &mut First| valid.is_ok() && matches!(f, First::Resumed(_));
                if let Some(f) = first.take_if(speaks_now) {
                    said = Box::pin(first_words(&ctx, &mut st, &mut link, &inbox, f)).await;
                }
                (valid, checked, said)
            },
            async {
                let announced = events::publish(&ctx, SessionEventKind::Open, &info).await;
                (announced, began.elapsed().as_millis())
            }
        );
        tracing::debug!(
            jid = %st.info.jid,
            checked_ms = checked,
            announced_ms = confirmed,
            "session checked and announced"
        );
        // A new session's bind result, once it is announced.
        if let Some(f) = first.take_if(|_| valid.is_ok() && announced) {
            said = Box::pin(first_words(&ctx, &mut st, &mut link, &inbox, f)).await;
        }
        let mut end = if let Err(e) = valid {
            End::Error(e)
        } else if !announced {
            End::Error(StreamError::with_text(
                "internal-server-error",
                "session directory unavailable",
            ))
        } else if let Err(end) = said {
            end
        } else {
            tracing::debug!(jid = %st.info.jid, session = %id, "session bound");
            Box::pin(serve(&ctx, &mut st, &mut link, &inbox)).await
        };

        // Stop writing; everything kept for the client (unacknowledged, or not written), then
        // whatever still arrives until the mailbox is empty, goes back to the routers in the
        // order it came. Only then does the session leave the registry: a stanza for it after
        // that is bounced by whoever holds it, behind these.
        inbox.close();
        refuse_resumptions(&ctx, &mut st).await;
        let mut kept = link.take_kept();
        if let Some(to) = st.moved.take() {
            // Moved to another gateway: what was kept goes there, not back to the routers,
            // and the contacts see no change (the new holder announces the same presence).
            if let Some(conn) = link.conn.take() {
                let end = std::mem::replace(&mut end, End::Gone);
                Box::pin(conn.finish(&ctx, end)).await;
            }
            let (req, moved) = *to;
            match Box::pin(crate::handover::leave(&ctx, id, &req, moved, kept, &inbox)).await {
                Ok(()) => {
                    st.info.available = false;
                    st.info.presence = None;
                    st.info.version += 1;
                    events::publish(&ctx, SessionEventKind::Close, &st.info).await;
                    ctx.metrics.sessions.dec();
                    return;
                }
                // The asking gateway was not told: it gives up, its client binds afresh, and
                // the session ends here as one that was not resumed.
                Err(back) => kept = back,
            }
        }
        let bounced = Box::pin(bounce_kept(&ctx, id, kept, &inbox)).await;
        if bounced > 0 {
            tracing::info!(jid = %st.info.jid, session = %id, bounced, "undelivered stanzas sent back to the routers");
        }
        ctx.registry.remove(id);
        Box::pin(end_session(&ctx, &mut st)).await;
        if let Some(conn) = link.conn.take() {
            Box::pin(conn.finish(&ctx, end)).await;
        }
        ctx.metrics.sessions.dec();
        tracing::debug!(jid = %st.info.jid, session = %id, "session ended");
    }
}

/// The session's first words: the bind result, or `<resumed/>` and what the previous holder
/// forwards.
async fn first_words(
    ctx: &Ctx,
    st: &mut State,
    link: &mut Link,
    inbox: &Inbox,
    first: First,
) -> Result<(), End> {
    match first {
        First::Bind(xml) => link.raw(&xml).await,
        First::Resumed(resumed) => moved_in(ctx, st, link, inbox, &resumed).await,
    }
}

/// A session moved here, announced already (the routers replace the old holder's entry):
/// `<resumed/>`, then what the old holder forwards (what the client had not acknowledged, then
/// what reached the old holder meanwhile), and only after its `fence` (or
/// [`crate::handover::FENCE_WITHIN`]) what reached this gateway directly, each such stanza
/// held a moment more for what a lagging router sent the old holder before it
/// ([`crate::handover::Settle`]): the order holds.
async fn moved_in(
    ctx: &Ctx,
    st: &mut State,
    link: &mut Link,
    inbox: &Inbox,
    resumed: &sm::ResumedAs,
) -> Result<(), End> {
    let handled = link.sm.as_ref().map_or(0, |sm| sm.handled);
    link.raw(&resumed.xml(handled, &st.info.jid)).await?;
    ctx.metrics.sm_resumed.inc();
    let mut held = Vec::new();
    let fence = tokio::time::sleep(crate::handover::FENCE_WITHIN);
    tokio::pin!(fence);
    loop {
        tokio::select! {
            next = inbox.next() => match next {
                Next::Item(Outbound::Forwarded(d)) => {
                    ctx.metrics.sm_resent.inc();
                    link.stanza(d).await?;
                }
                Next::Item(Outbound::Stanza(d)) => held.push((std::time::Instant::now(), d)),
                Next::Item(Outbound::Fence) => {
                    // What came directly is held a moment more, and what comes directly for
                    // a second after (handover::Settle).
                    link.settle(std::mem::take(&mut held)).await?;
                    break;
                }
                Next::Item(other) => {
                    // Written what came so far first: a move on goes with it.
                    for (_, d) in held.drain(..) {
                        link.stanza(d).await?;
                    }
                    control(ctx, st, link, other).await?;
                }
                Next::Overflowed { bytes } => return Err(overflowed(bytes)),
            },
            () = &mut fence => {
                tracing::info!(jid = %st.info.jid, "no fence from the previous holder: writing what came here");
                break;
            }
        }
    }
    for (_, d) in held {
        link.stanza(d).await?;
    }
    tracing::debug!(jid = %st.info.jid, session = %st.info.session_id, "session moved here");
    Ok(())
}

/// Serves the session until it ends: while a connection is attached, and with stream
/// management between connections (detached, waiting for the client to resume).
async fn serve(ctx: &Ctx, st: &mut State, link: &mut Link, inbox: &Inbox) -> End {
    loop {
        let end = match Box::pin(attached(ctx, st, link, inbox)).await {
            Attached::Resumed(r) => {
                if let Err(end) = Box::pin(resume(ctx, st, link, r)).await {
                    return end;
                }
                continue;
            }
            Attached::Ended(end) => end,
        };
        let resumable = link.sm.as_ref().is_some_and(|sm| sm.resume.is_some());
        if !resumable || !detaches(&end) {
            return end;
        }
        // The connection is lost, not the session: contacts see no change while the client
        // may come back.
        link.release_held();
        if let Some(conn) = link.conn.take() {
            Box::pin(conn.finish(ctx, end)).await;
        }
        tracing::debug!(jid = %st.info.jid, session = %st.info.session_id, "session detached");
        ctx.metrics.sm_detached.inc();
        let outcome = Box::pin(detached(ctx, st, link, inbox)).await;
        ctx.metrics.sm_detached.dec();
        match outcome {
            Ok(r) => {
                if let Err(end) = Box::pin(resume(ctx, st, link, r)).await {
                    return end;
                }
            }
            Err(end) => return end,
        }
    }
}

/// How a connection's service ended.
enum Attached {
    Ended(End),
    /// Another connection resumed the session: this one is superseded.
    Resumed(Box<Resumption>),
}

/// Whether a connection's end leaves the session waiting for resumption: the connection was
/// lost or stopped answering, rather than closed by the client or ended for cause.
fn detaches(end: &End) -> bool {
    match end {
        End::Gone => true,
        End::Error(e) => e.condition == "connection-timeout",
        End::ClientClosed => false,
    }
}

/// The session with a connection: the client's input, the mailbox, pings.
async fn attached(ctx: &Ctx, st: &mut State, link: &mut Link, inbox: &Inbox) -> Attached {
    let idle_limit = Duration::from_secs(ctx.config.idle_timeout_secs);
    // A silent client is pinged after two thirds of the limit; it has the rest to answer.
    let ping_after = idle_limit * 2 / 3;
    let mut tick = tokio::time::interval(
        Duration::from_secs(1).min(ping_after.max(Duration::from_millis(100))),
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = loop {
        let release = link.next_release();
        // Nothing more is written while the client has yet to acknowledge half of what may
        // be kept for it: it is asked (Link::write), and writing goes on as its acks come.
        let paused = link.awaits_acks();
        let Some(conn) = link.conn.as_mut() else {
            break End::Gone;
        };
        tokio::select! {
            inbound = conn.input.recv() => match inbound.map(|b| *b) {
                Some(Ok(Inbound::Stanza(el))) => {
                    conn.pinged = false;
                    let done = if el.ns() == ns::SM {
                        Box::pin(sm_element(ctx, st, link, &el)).await
                    } else if el.ns() == ns::CSI {
                        Box::pin(csi_element(link, &el)).await
                    } else {
                        let r = Box::pin(client_stanza(ctx, st, link, el)).await;
                        if let Some(sm) = &mut link.sm {
                            sm.handled = sm.handled.wrapping_add(1);
                        }
                        r
                    };
                    if let Err(end) = done {
                        break end;
                    }
                }
                Some(Ok(Inbound::Close)) => break End::ClientClosed,
                Some(Ok(Inbound::Open(_))) => break End::Error(StreamError::new("not-well-formed")),
                Some(Err(ReadError::Stream(e))) => break End::Error(e),
                Some(Err(_)) | None => break End::Gone,
            },
            next = async {
                if paused {
                    inbox.next_urgent().await
                } else {
                    inbox.next().await
                }
            } => match next {
                Next::Item(Outbound::Stanza(d)) => {
                    if let Err(end) = write_out(link, inbox, d, true).await {
                        break end;
                    }
                    ctx.metrics.stanzas_out.inc();
                }
                Next::Item(Outbound::Forwarded(d)) => {
                    if let Err(end) = write_out(link, inbox, d, false).await {
                        break end;
                    }
                    ctx.metrics.stanzas_out.inc();
                }
                Next::Item(other) => {
                    if let Err(end) = Box::pin(control(ctx, st, link, other)).await {
                        break end;
                    }
                }
                Next::Overflowed { bytes } => break overflowed(bytes),
            },
            () = until(release) => {
                if let Err(end) = link.release_due().await {
                    break end;
                }
            }
            r = resumption(&mut st.resume_rx) => return Attached::Resumed(r),
            _ = tick.tick() => {
                let idle = conn.activity.idle_for();
                if idle > idle_limit {
                    break End::Error(StreamError::with_text("connection-timeout", "no answer to the server's ping"));
                }
                let silent = idle > ping_after;
                if !silent {
                    conn.pinged = false;
                }
                // An idle session with nothing to ask does nothing more (no allocation).
                let waiting = link.sm.as_ref().is_some_and(|sm| sm.unacked_len() > 0);
                if silent || waiting {
                    if let Err(end) = Box::pin(keepalive(link, silent)).await {
                        break end;
                    }
                }
            }
            _ = ctx.shutdown.cancelled() => break End::Error(StreamError::new("system-shutdown")),
        }
    };
    Attached::Ended(end)
}

/// Writes `d` to the client (`direct`: it reached this gateway directly, not forwarded by an
/// old holder, and may be held a moment after a move: handover::Settle). A write that waits on
/// a client not reading is cut by the write deadline, or sooner when the mailbox overflows
/// meanwhile.
async fn write_out(link: &mut Link, inbox: &Inbox, d: Delivered, direct: bool) -> Result<(), End> {
    tokio::select! {
        r = async {
            if direct {
                link.direct(d).await
            } else {
                link.stanza(d).await
            }
        } => r,
        bytes = inbox.overflowed() => Err(overflowed(bytes)),
    }
}

/// Sleeps until `at`, or forever.
async fn until(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// On every tick: asks a quiet client for an ack of what waits for one, and pings a silent
/// one (with stream management its `<r/>` is the ping: any answer counts).
async fn keepalive(link: &mut Link, silent: bool) -> Result<(), End> {
    let Some(conn) = link.conn.as_mut() else {
        return Ok(());
    };
    if !silent {
        conn.pinged = false;
    }
    match &mut link.sm {
        Some(sm) => {
            // Ask when something waits for an ack (again if the last request went unanswered
            // for a while), or as the ping of a silent client.
            let idle_request = sm.requested.is_none() || sm.request_unanswered_for(REASK_AFTER);
            let ask = (sm.unacked_len() > 0 && idle_request) || (silent && !conn.pinged);
            if silent {
                conn.pinged = true;
            }
            if ask {
                sm.requested = Some(std::time::Instant::now());
                conn.send(&sm::request()).await?;
            }
            Ok(())
        }
        None if silent && !conn.pinged => {
            conn.pinged = true;
            let ping = format!(
                "<iq type='get' id='{PING_ID_PREFIX}{}'><ping xmlns='{}'/></iq>",
                &Uuid::new_v4().simple().to_string()[..12],
                ns::PING
            );
            conn.send(&ping).await
        }
        None => Ok(()),
    }
}

/// An `<r/>` unanswered this long is asked again while stanzas wait for an ack.
const REASK_AFTER: Duration = Duration::from_secs(10);

/// The ids of the gateway's pings to its clients; their answers end here.
const PING_ID_PREFIX: &str = "meerkat-ping-";

/// A request that is not a stanza, from another part of the gateway.
async fn control(ctx: &Ctx, st: &mut State, link: &mut Link, what: Outbound) -> Result<(), End> {
    match what {
        Outbound::Conflict => Err(End::Error(StreamError::with_text(
            "conflict",
            "replaced by a new connection",
        ))),
        Outbound::End(e) => Err(End::Error(e)),
        Outbound::Announce => {
            Box::pin(events::publish(ctx, SessionEventKind::Announce, &st.info)).await;
            Ok(())
        }
        Outbound::Handover(req) => hand_over(ctx, st, link, req).await,
        // Stanzas are the caller's; a fence after the session began says nothing more.
        Outbound::Stanza(_) | Outbound::Forwarded(_) | Outbound::Fence => Ok(()),
    }
}

/// The client resumed at another gateway, which asks for the session: checked (the secret
/// and the account), the client's `h` applied; the session then ends here (closing a
/// connection still open with `<conflict/>`) and sends `moved` with what it kept
/// (crate::handover::leave). Refused: the session goes on.
async fn hand_over(
    ctx: &Ctx,
    st: &mut State,
    link: &mut Link,
    req: Box<meerkat_wire::handover::Request>,
) -> Result<(), End> {
    use meerkat_wire::handover::Moved;
    if req.new_session == st.info.session_id || Some(req.new_session) == st.before {
        // The request that made this session, or the one before it (the session moved on
        // again since), delivered again: a router or a gateway that stopped before
        // acknowledging it passes it on twice, or it went both to the gateway the resumption
        // id names and to the routers; it follows the session here. Its asker is this
        // session, or was the one before: nobody waits for an answer.
        tracing::debug!(request = %req.request, "a repeated handover request ignored");
        return Ok(());
    }
    let Some(sm) = link.sm.as_mut() else {
        crate::handover::refuse(ctx, &req, None).await;
        return Ok(());
    };
    let window = match &sm.resume {
        Some(r) if r.id.secret_is_hex(&req.secret) && req.account == st.bare => r.max,
        _ => {
            // Counted where the client is refused (the asking gateway).
            crate::handover::refuse(ctx, &req, None).await;
            return Ok(());
        }
    };
    match sm.acked(req.h) {
        Ok(done) => {
            for d in done {
                d.settle(&ctx.acks);
            }
        }
        Err(t) => {
            crate::handover::refuse(ctx, &req, Some((t.h, t.sent))).await;
            return Ok(());
        }
    }
    let moved = Moved {
        request: req.request,
        session: st.info.clone(),
        directed: st.directed.iter().cloned().collect(),
        handled: sm.handled,
        max_secs: window,
        kept: Vec::new(),
        fenced: false,
    };
    // Sent once the session has stopped, with what it kept (crate::handover::leave).
    st.moved = Some(Box::new((*req, moved)));
    Err(End::Error(StreamError::with_text(
        "conflict",
        "the session was resumed at another gateway",
    )))
}

/// The next connection handed over to resume this session, if it is resumable.
async fn resumption(rx: &mut Option<mpsc::Receiver<Box<Resumption>>>) -> Box<Resumption> {
    match rx {
        Some(rx) => match rx.recv().await {
            Some(r) => r,
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// A detached session: what arrives is kept as if written to the lost connection, until the
/// client resumes (`Ok`) or the window passes, the session is replaced or the gateway stops
/// (`Err`: the session ends, and what it kept goes back to the routers).
async fn detached(
    ctx: &Ctx,
    st: &mut State,
    link: &mut Link,
    inbox: &Inbox,
) -> Result<Box<Resumption>, End> {
    let window = link
        .sm
        .as_ref()
        .and_then(|sm| sm.resume.as_ref())
        .map_or(0, |r| r.max);
    let expiry = tokio::time::sleep(Duration::from_secs(window));
    tokio::pin!(expiry);
    loop {
        tokio::select! {
            r = resumption(&mut st.resume_rx) => return Ok(r),
            next = inbox.next() => match next {
                Next::Item(Outbound::Stanza(d) | Outbound::Forwarded(d)) => link.stanza(d).await?,
                Next::Item(other) => Box::pin(control(ctx, st, link, other)).await?,
                Next::Overflowed { bytes } => return Err(overflowed(bytes)),
            },
            () = &mut expiry => {
                ctx.metrics.sm_expired.inc();
                tracing::debug!(jid = %st.info.jid, session = %st.info.session_id, "resumption window passed");
                return Err(End::Gone);
            }
            _ = ctx.shutdown.cancelled() => return Err(End::Gone),
        }
    }
}

/// Takes a resuming connection: the client's `h` releases what it got, `<resumed/>` says what
/// the gateway handled, and everything still unacknowledged is written again, in order. The
/// connection it replaces, if still open, is closed.
async fn resume(ctx: &Ctx, st: &mut State, link: &mut Link, r: Box<Resumption>) -> Result<(), End> {
    let Resumption {
        transport,
        counted,
        h,
        resumed,
    } = *r;
    let mut conn = Conn::open(ctx, transport, counted);
    if let Some(old) = link.conn.take() {
        let end = End::Error(StreamError::with_text(
            "conflict",
            "the session was resumed on another connection",
        ));
        Box::pin(old.finish(ctx, end)).await;
    }
    let Some(sm) = link.sm.as_mut() else {
        return Err(End::Gone);
    };
    match sm.acked(h) {
        Ok(done) => {
            for d in done {
                d.settle(&ctx.acks);
            }
        }
        Err(too_high) => {
            // This connection ends with the XEP's stream error; the session stays detached,
            // as when the count is refused at another gateway (crate::handover): the client
            // may resume with the count it really has, within the same window.
            let _ = conn.send(&sm::too_high(&too_high)).await;
            conn.finish(ctx, End::Gone).await;
            return Ok(());
        }
    }
    sm.requested = None;
    conn.send(&resumed.xml(sm.handled, &st.info.jid)).await?;
    let mut resent = 0u64;
    for d in sm.unacked() {
        conn.send(&d.xml).await?;
        resent += 1;
    }
    if resent > 0 {
        sm.requested = Some(std::time::Instant::now());
        conn.send(&sm::request()).await?;
    }
    link.conn = Some(conn);
    ctx.metrics.sm_resumed.inc();
    ctx.metrics.sm_resent.inc_by(resent);
    tracing::debug!(jid = %st.info.jid, session = %st.info.session_id, resent, "session resumed");
    Ok(())
}

/// A stream management element from the client (XEP-0198).
async fn sm_element(ctx: &Ctx, st: &mut State, link: &mut Link, el: &Element) -> Result<(), End> {
    match el.name() {
        "enable" if link.sm.is_none() => {
            let mut sm = Sm::default();
            let mut resume = None;
            if sm::wants_resume(el) {
                let id = ResumeId::new(&st.info.jid, &ctx.config.dc, &ctx.instance);
                let max = sm::window(el, ctx.config.sm_resume_max_secs);
                let (tx, rx) = mpsc::channel(1);
                ctx.registry
                    .set_resumable(st.info.session_id, Resumable { id: id.clone(), tx });
                st.resume_rx = Some(rx);
                resume = Some(Resume { id, max });
            }
            let answer = sm::enabled(resume.as_ref().map(|r| (&r.id, r.max)));
            sm.resume = resume;
            link.sm = Some(sm);
            ctx.metrics.sm_enabled.inc();
            link.raw(&answer).await
        }
        // Enabled twice, or a resumption on a bound stream.
        "enable" | "resume" => link.raw(&sm::failed("unexpected-request", None)).await,
        "r" if link.sm.is_some() => {
            let h = link.sm.as_ref().map_or(0, |sm| sm.handled);
            link.raw(&sm::ack(h)).await
        }
        "a" if link.sm.is_some() => {
            let h = sm::h_of(el).map_err(End::Error)?;
            let Some(sm) = link.sm.as_mut() else {
                return Ok(());
            };
            sm.requested = None;
            match sm.acked(h) {
                Ok(done) => {
                    for d in done {
                        d.settle(&ctx.acks);
                    }
                    Ok(())
                }
                Err(too_high) => {
                    let _ = link.raw(&sm::too_high(&too_high)).await;
                    Err(End::Gone)
                }
            }
        }
        other => Err(End::Error(StreamError::with_text(
            "unsupported-stanza-type",
            format!("<{other}/> of stream management before <enable/>, or unknown"),
        ))),
    }
}

/// A client state indication (XEP-0352).
async fn csi_element(link: &mut Link, el: &Element) -> Result<(), End> {
    match el.name() {
        "inactive" => {
            link.inactive();
            Ok(())
        }
        "active" => link.active().await,
        other => Err(End::Error(StreamError::with_text(
            "unsupported-stanza-type",
            format!("<{other}/> in {} is not a client state", ns::CSI),
        ))),
    }
}

/// The session's end when its mailbox overflowed: its client does not read what it is sent
/// (RFC 6120 §4.9.3.14: a local service policy).
fn overflowed(bytes: usize) -> End {
    End::Error(StreamError::with_text(
        "policy-violation",
        format!("too much waiting to be written ({bytes} bytes): the client does not read"),
    ))
}

/// The session ends: a connection handed over to resume it meanwhile is told it cannot.
async fn refuse_resumptions(ctx: &Ctx, st: &mut State) {
    let Some(mut rx) = st.resume_rx.take() else {
        return;
    };
    rx.close();
    while let Ok(r) = rx.try_recv() {
        ctx.metrics.sm_failed.inc();
        let mut conn = Conn::open(ctx, r.transport, r.counted);
        let _ = conn.send(&sm::failed("item-not-found", None)).await;
        conn.finish(ctx, End::ClientClosed).await;
    }
}

/// Reads the client's stanzas into `tx`, boxed: a channel allocates its slots in blocks of 32,
/// and 32 unboxed parse results cost every connection about 5 KiB while it idles.
/// (A plain function returning the loop: an `async fn` would keep its reader twice.)
///
/// Past the session's byte or stanza rate it stops reading for as long as the excess takes to
/// pay back: the client's bytes wait in its socket and TCP slows it down.
#[allow(clippy::manual_async_fn)]
pub(crate) fn read_loop(
    mut reader: Reader,
    tx: mpsc::Sender<Box<Result<Inbound, ReadError>>>,
    linger: CancellationToken,
    activity: Activity,
    rates: Rates,
    throttled: prometheus_client::metrics::counter::Counter,
) -> impl Future<Output = ()> + Send + 'static {
    async move {
        let mut shaper = Shaper::new(rates, Instant::now());
        let mut charged = activity.bytes_read();
        // Whether the client is owed a stream error: then what it still sends is read and
        // discarded for a moment, so that it can read the error before the socket closes.
        let owed = loop {
            let item = tokio::select! {
                _ = linger.cancelled() => break true,
                item = reader.next() => item,
            };
            let failed = matches!(item, Err(ReadError::Stream(_)));
            let stop = !matches!(item, Ok(Inbound::Stanza(_)));
            tokio::select! {
                _ = linger.cancelled() => break true,
                sent = tx.send(Box::new(item)) => {
                    if sent.is_err() {
                        return;
                    }
                }
            }
            if stop {
                break failed;
            }
            let read = activity.bytes_read();
            let pause = shaper.charge(read.saturating_sub(charged), 1, Instant::now());
            charged = read;
            if !pause.is_zero() {
                throttled.inc();
                tokio::select! {
                    _ = linger.cancelled() => break true,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        };
        if owed {
            reader.drain().await;
        }
    }
}

/// One stanza from the client.
async fn client_stanza(
    ctx: &Ctx,
    st: &mut State,
    w: &mut Link,
    mut el: Element,
) -> Result<(), End> {
    let Some(kind) = StanzaKind::of(&el) else {
        return Err(End::Error(StreamError::with_text(
            "unsupported-stanza-type",
            format!("<{}/> in {} is not a stanza", el.name(), el.ns()),
        )));
    };
    // The answer to the gateway's own ping ends here.
    if kind == StanzaKind::Iq
        && el.attr("to").is_none()
        && matches!(el.attr("type"), Some("result" | "error"))
        && el
            .attr("id")
            .is_some_and(|id| id.starts_with(PING_ID_PREFIX))
    {
        return Ok(());
    }
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
                    w.stanza(Delivered::own(reply.to_client_xml())).await?;
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
                    return w.stanza(Delivered::own(reply.to_client_xml())).await;
                }
                if payload.ns() == ns::REGISTER {
                    let (reply, change) =
                        register::after_auth(ctx, &st.username, &el, &payload).await;
                    w.stanza(Delivered::own(reply.to_client_xml())).await?;
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
                // Carbons: the flag is set here, the router answers once it has seen it.
                if let Some(toggle) = meerkat_xmpp::carbons::Toggle::of_iq(&el) {
                    let on = toggle == meerkat_xmpp::carbons::Toggle::Enable;
                    if st.info.carbons != on {
                        st.info.carbons = on;
                        update(ctx, st).await;
                    }
                }
                if payload.ns() == ns::ROSTER && ty == StanzaType::Get && !st.info.interested {
                    st.info.interested = true;
                    update(ctx, st).await;
                }
                if payload.is("blocklist", ns::BLOCKING)
                    && ty == StanzaType::Get
                    && !st.info.blocklist
                {
                    st.info.blocklist = true;
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

/// Sends back to the routers, in order, what the session kept for its client (unacknowledged
/// or not written) and everything left in the mailbox, until it is empty and marked gone; each
/// delivery is acknowledged to the broker once its bounce is. Returns how many.
async fn bounce_kept(ctx: &Ctx, id: Uuid, kept: Vec<Delivered>, inbox: &Inbox) -> usize {
    let mut n = 0;
    let rerouted = kept.len() as u64;
    // A message the client may have seen already goes on stamped with its time (XEP-0198
    // §4, XEP-0203), wherever it is routed now: another resource or offline storage.
    let kept = kept.into_iter().map(|d| stamped(ctx, d));
    for d in kept.chain(std::iter::from_fn(|| inbox.drain())) {
        if crate::delivery::bounce(ctx, d.xml.as_bytes(), Some(id), d.id.as_deref(), HOPS - 1).await
        {
            d.settle(&ctx.acks);
        } else {
            // Left unacknowledged: the broker gives it back when this gateway's channel ends.
            tracing::error!(session = %id, "could not send an undelivered stanza back to the routers");
        }
        n += 1;
    }
    ctx.metrics.sm_rerouted.inc_by(rerouted);
    n
}

/// `d` with a delay stamp of the time the gateway got it, if it is a message without one from
/// this server.
fn stamped(ctx: &Ctx, mut d: Delivered) -> Delivered {
    let Ok(mut el) = Element::parse(&d.xml) else {
        return d;
    };
    let domain = ctx.config.domain.as_str();
    let has = el
        .children()
        .any(|c| c.is("delay", ns::DELAY) && c.attr("from") == Some(domain));
    if el.name() == "message" && !has {
        el.push_child(meerkat_xmpp::stanza::delay(
            domain,
            chrono::DateTime::<chrono::Utc>::from(d.at),
        ));
        d.xml = el.to_xml();
    }
    d
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
