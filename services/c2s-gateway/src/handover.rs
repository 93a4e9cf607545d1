//! XEP-0198 resumption at a gateway other than the one holding the session (docs/protocol.md
//! "Handover", docs/stream-management.md). The resuming gateway asks through the routers
//! ([`ask`]); the holder's session answers `moved`, forwards what its client has not
//! acknowledged and its mailbox, then a `fence`, and leaves ([`leave`]); the resuming
//! gateway's delivery consumer registers the new session on `moved`, so that the forwards find
//! it ([`arrived`]). Later arrivals for the old session at the old holder follow a tombstone to
//! the new one for a minute; the new holder writes what reaches it directly only after the
//! fence, and for [`SETTLE`] after it holds each such stanza [`HOLD`] ([`Settle`]), so that one
//! a lagging router sent to the old holder before it, forwarded, still goes first.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use meerkat_bus::lapin::message::Delivery;
use meerkat_bus::lapin::options::BasicAckOptions;
use meerkat_bus::topology::gateway_route;
use meerkat_bus::{HeaderExt, Props};
use meerkat_wire::handover::{self as step, Fence, Kept, Moved, Refused, Request};
use meerkat_wire::{headers as h, topology as names, RouteKind};
use parking_lot::Mutex;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::registry::{Delivered, Inbox, Mailbox, Outbound};
use crate::sm::{ResumeId, TooHigh};
use crate::Ctx;

/// How long a resuming client waits for the holder's answer before `<failed/>`.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);
/// How long after the `fence` the old holder announces the old session id closed: after the
/// new one's open has reached every router.
const CLOSE_AFTER: Duration = Duration::from_secs(1);
/// How long the new holder holds what reaches it directly without a `fence`.
pub const FENCE_WITHIN: Duration = Duration::from_secs(3);
/// After the `fence`: how long what reaches the new holder directly is still held, each
/// stanza for [`HOLD`] after it came ([`Settle`]).
pub const SETTLE: Duration = Duration::from_secs(1);
/// How long a stanza that reached the new holder directly waits, during [`SETTLE`], for one a
/// lagging router sent before it to the old holder, which forwards it.
pub const HOLD: Duration = Duration::from_millis(250);
/// How long the old holder remembers where a session went.
const TOMBSTONE_TTL: Duration = Duration::from_secs(60);

/// A session's place: the gateway (and its DC) and the session id there.
#[derive(Clone, Debug)]
pub struct Peer {
    pub dc: String,
    pub gateway: String,
    pub session: Uuid,
    /// The gateway takes steps from another DC on its own key ([`Request::direct`]).
    pub direct: bool,
}

/// Resumptions this gateway waits for, and sessions that moved away from it.
#[derive(Default)]
pub struct Handovers {
    waiting: Mutex<HashMap<Uuid, Waiting>>,
    /// Old session id → when it left, where it went, its full JID.
    tombstones: Mutex<HashMap<Uuid, (Instant, Peer, String)>>,
}

struct Waiting {
    jid: String,
    new_session: Uuid,
    credentials: u64,
    tx: oneshot::Sender<Answer>,
    /// When the request was sent (ms since the Unix epoch), for the log.
    asked_ms: u64,
    /// Copies of the request sent (to the gateway the id names, then to the routers): a
    /// refusal answers only when it is the last one's.
    copies: u8,
}

enum Answer {
    Moved(Box<Arrived>),
    Refused(Refused),
}

/// A session moved here: registered, with its mailbox, for the negotiation to start.
pub struct Arrived {
    pub moved: Moved,
    pub session: Uuid,
    pub inbox: Inbox,
    /// A session of this gateway the moved one replaces (same full JID).
    pub replaced: Option<Mailbox>,
}

/// What the holder answered.
pub enum Outcome {
    Moved(Box<Arrived>),
    TooHigh(TooHigh),
    /// Unknown, another's, or no answer in time: the client may bind.
    NotFound,
}

impl Handovers {
    /// The old session went to `peer`: later arrivals for it follow.
    pub fn tombstone(&self, old: Uuid, peer: Peer, jid: &str) {
        let mut t = self.tombstones.lock();
        t.retain(|_, (at, _, _)| at.elapsed() < TOMBSTONE_TTL);
        t.insert(old, (Instant::now(), peer, jid.to_owned()));
    }

    fn moved_to(&self, old: Uuid) -> Option<Peer> {
        let t = self.tombstones.lock();
        t.get(&old)
            .filter(|(at, _, _)| at.elapsed() < TOMBSTONE_TTL)
            .map(|(_, p, _)| p.clone())
    }

    /// Where the session bound to `jid` went last, if it left this gateway within the
    /// tombstones' time.
    fn jid_moved_to(&self, jid: &str) -> Option<Peer> {
        let t = self.tombstones.lock();
        t.values()
            .filter(|(at, _, j)| j == jid && at.elapsed() < TOMBSTONE_TTL)
            .max_by_key(|(at, _, _)| *at)
            .map(|(_, p, _)| p.clone())
    }
}

/// Asks for the session `rid` names (of account `account`, authenticated with `credentials`)
/// and waits for the holder's answer: first straight at the gateway the id names, past the
/// routers ([`ResumeId::holder`]; the session is there unless it moved since), then, if
/// nothing is bound for that gateway or it has not answered within [`HINT_WAIT`], through this
/// DC's routers, which find the session wherever it is.
pub async fn ask(ctx: &Ctx, rid: &ResumeId, account: &str, credentials: u64, h: u32) -> Outcome {
    let request = Uuid::now_v7();
    let new_session = Uuid::now_v7();
    let wait = || {
        let (tx, rx) = oneshot::channel();
        ctx.handovers.waiting.lock().insert(
            request,
            Waiting {
                jid: rid.jid.clone(),
                new_session,
                credentials,
                tx,
                asked_ms: crate::session::now_ms(),
                copies: 1,
            },
        );
        rx
    };
    let mut rx = wait();
    let mut req = Request {
        request,
        jid: rid.jid.clone(),
        new_session,
        secret: rid.secret_hex(),
        account: account.to_owned(),
        h,
        to_dc: ctx.config.dc.clone(),
        to_gateway: ctx.instance.clone(),
        sent_at_ms: crate::session::now_ms(),
        inline: true,
        direct: true,
        hinted: false,
    };
    // However the wait ends (answered, timed out, or the negotiation dropped), the request is
    // forgotten: a later answer finds nothing.
    let _forget = Forget(ctx, request);
    // Not this gateway: a session held here would have been resumed without asking.
    let hint = rid
        .holder
        .as_ref()
        .filter(|at| at.dc != ctx.config.dc || at.gateway != ctx.instance);
    let started = tokio::time::Instant::now();
    let mut hinted = false;
    if let Some(at) = hint {
        req.hinted = true;
        hinted = ask_at(ctx, at, &req).await;
        req.hinted = false;
    }
    if hinted {
        // The gateway named answers at once, or passes the request to its routers when the
        // session left it; one that is gone answers nothing, and then this DC's routers are
        // asked as well (two copies: only the second refusal is the answer).
        match tokio::time::timeout(HINT_WAIT, &mut rx).await {
            // A gateway of 1.8 refuses a session it does not hold: the routers may find it.
            Ok(Ok(Answer::Refused(Refused { too_high: None, .. }))) => {
                rx = wait();
                hinted = false;
            }
            Ok(answer) => return outcome(answer.ok()),
            Err(_) => {
                let still = match ctx.handovers.waiting.lock().get_mut(&request) {
                    Some(w) => {
                        w.copies += 1;
                        true
                    }
                    None => false,
                };
                if !still {
                    // Answered meanwhile.
                    return outcome(rx.await.ok());
                }
                tracing::info!(jid = %req.jid, "no answer from the gateway the resumption id names: asking the routers");
            }
        }
    }
    if let Err(e) = ask_routers(ctx, &req).await {
        tracing::warn!(error = %e, "handover request not sent");
        // Only a gateway named that has not answered yet may still answer.
        if !hinted {
            return Outcome::NotFound;
        }
    }
    let left = ANSWER_WITHIN.saturating_sub(started.elapsed());
    outcome(
        tokio::time::timeout(left, rx)
            .await
            .ok()
            .and_then(Result::ok),
    )
}

/// How long a resuming gateway waits for the gateway a resumption id names before it asks the
/// routers too.
const HINT_WAIT: Duration = Duration::from_secs(1);

fn outcome(answer: Option<Answer>) -> Outcome {
    match answer {
        Some(Answer::Moved(a)) => Outcome::Moved(a),
        Some(Answer::Refused(Refused {
            too_high: Some((h, sent)),
            ..
        })) => Outcome::TooHigh(TooHigh { h, sent }),
        _ => Outcome::NotFound,
    }
}

/// Sends `req` straight to the gateway `at`: on the deliver exchange in this DC, on its own
/// key of the inter-DC stanza exchange in another. False when nothing is bound for it (no such
/// gateway, or one of 1.8 or before) or it could not be sent.
async fn ask_at(ctx: &Ctx, at: &crate::sm::Holder, req: &Request) -> bool {
    let body = serde_json::to_vec(req).unwrap_or_default();
    // Dropped, as on the routers' queue, once the asker no longer waits: a gateway gone keeps
    // its queue, and its next life (same instance id) would otherwise find the request there.
    let props =
        props(ctx, step::REQUEST).expires_after_ms(u64::from(names::HANDOVER_REQUEST_TTL_MS));
    let to = gateway_route(&ctx.config.dc, &at.dc, &at.gateway, true, props);
    let sent = ctx
        .publisher
        .publish_routed_within(to.exchange, &to.key, to.props, &body, Duration::ZERO)
        .await;
    match sent {
        Ok(()) => true,
        Err(meerkat_bus::PublishError::Unroutable) => false,
        Err(e) => {
            tracing::warn!(error = %e, gateway = %at.gateway, "handover request not sent to the gateway the id names");
            false
        }
    }
}

/// Sends `req` to this DC's routers, on their own queue for requests, not a route partition:
/// a request waits behind no stanza.
async fn ask_routers(ctx: &Ctx, req: &Request) -> Result<(), meerkat_bus::PublishError> {
    let body = serde_json::to_vec(req).unwrap_or_default();
    ctx.publisher
        .publish(
            "",
            names::HANDOVER_REQUESTS_QUEUE,
            props(ctx, step::REQUEST),
            &body,
        )
        .await
}

/// Forgets a request when dropped.
struct Forget<'a>(&'a Ctx, Uuid);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0.handovers.waiting.lock().remove(&self.1);
    }
}

fn props(ctx: &Ctx, step: &str) -> Props {
    Props::stanza(RouteKind::Handover, &ctx.config.dc)
        .str(h::ORIGIN_EPOCH, &ctx.epoch)
        .str(h::HANDOVER, step)
}

/// Publishes a step for the gateway `gateway` at `dc` (`session`: the session it is for).
pub async fn send(
    ctx: &Ctx,
    to: &Peer,
    step: &str,
    session: Option<Uuid>,
    hops: u64,
    body: &[u8],
) -> bool {
    let mut props = props(ctx, step).u64(h::HOPS, hops);
    if step == step::REQUEST {
        // A request following a tombstone: dropped wherever it waits longer than its asker
        // does, as everywhere else (a cut link must not deliver it after the heal).
        props = props.expires_after_ms(u64::from(names::HANDOVER_REQUEST_TTL_MS));
    }
    if let Some(s) = session {
        props = props.str(h::SESSION, &s.to_string());
    }
    // Every step for a gateway goes the one way `to.direct` says, so they keep their order.
    let route = gateway_route(&ctx.config.dc, &to.dc, &to.gateway, to.direct, props);
    let sent = if route.inter_dc() {
        ctx.publisher
            .publish_routed(route.exchange, &route.key, route.props, body)
            .await
    } else {
        ctx.publisher
            .publish(route.exchange, &route.key, route.props, body)
            .await
    };
    if let Err(e) = &sent {
        tracing::warn!(error = %e, step, gateway = %to.gateway, "handover step not sent");
    }
    sent.is_ok()
}

/// Where the answers to `req` go.
pub fn asker(req: &Request) -> Peer {
    Peer {
        dc: req.to_dc.clone(),
        gateway: req.to_gateway.clone(),
        session: req.new_session,
        direct: req.direct,
    }
}

/// Tells the asking gateway no.
pub async fn refuse(ctx: &Ctx, req: &Request, too_high: Option<(u32, u32)>) {
    let body = serde_json::to_vec(&Refused {
        request: req.request,
        too_high,
    })
    .unwrap_or_default();
    send(ctx, &asker(req), step::REFUSED, None, 1, &body).await;
}

/// A stanza (`data`) for a session that left this gateway: on to where it went, if this
/// gateway remembers. True when it was forwarded (its delivery is then the caller's to
/// acknowledge).
pub async fn follow(ctx: &Ctx, old: Option<Uuid>, data: &[u8], hops: u64) -> bool {
    let Some(peer) = old.and_then(|id| ctx.handovers.moved_to(id)) else {
        return false;
    };
    hops > 0 && send(ctx, &peer, step::FORWARD, Some(peer.session), hops, data).await
}

/// A `handover` message on this gateway's delivery queue: every step. Acknowledges it.
pub async fn arrived(ctx: &std::sync::Arc<Ctx>, delivery: Delivery) {
    let headers = delivery.properties.headers().as_ref();
    let step = headers.get_str(h::HANDOVER).unwrap_or_default();
    let session = headers
        .get_str(h::SESSION)
        .and_then(|s| Uuid::parse_str(&s).ok());
    let hops = headers.get_u64(h::HOPS).unwrap_or(3).saturating_sub(1);
    match step.as_str() {
        step::REQUEST => {
            if let Ok(req) = serde_json::from_slice::<Request>(&delivery.data) {
                tracing::debug!(
                    since_request_ms = crate::session::now_ms().saturating_sub(req.sent_at_ms),
                    jid = %req.jid,
                    "handover request at the holder"
                );
                // The session checks the secret and the account, and answers.
                let told = ctx
                    .registry
                    .get_by_jid(&req.jid)
                    .is_some_and(|tx| tx.tell(Outbound::Handover(Box::new(req.clone()))));
                // A router that has not yet learnt that the session moved on (it went to
                // another gateway, maybe another DC, a moment ago) sent the request here:
                // it follows the session, as stanzas for it do.
                let followed = !told
                    && hops > 0
                    && match ctx.handovers.jid_moved_to(&req.jid) {
                        Some(peer) => {
                            send(ctx, &peer, step::REQUEST, None, hops, &delivery.data).await
                        }
                        None => false,
                    };
                if !told && !followed {
                    if req.hinted {
                        // Sent here by a resumption id naming this gateway, but the session
                        // left it long ago, or never was: the routers know where it is.
                        let req = Request {
                            hinted: false,
                            ..req
                        };
                        if let Err(e) = ask_routers(ctx, &req).await {
                            tracing::warn!(error = %e, "handover request not passed to the routers");
                        }
                    } else {
                        refuse(ctx, &req, None).await;
                    }
                }
            }
        }
        step::MOVED => {
            if let Ok(mut moved) = serde_json::from_slice::<Moved>(&delivery.data) {
                let kept = std::mem::take(&mut moved.kept);
                let fenced = moved.fenced;
                let session = moved_here(ctx, moved).await;
                let carried = !kept.is_empty();
                if carried {
                    took_kept(ctx, session, kept, &delivery, hops);
                }
                if fenced {
                    fence(ctx, session);
                }
                if carried {
                    // Acknowledged once every stanza it carried is safe (took_kept).
                    return;
                }
            }
        }
        step::REFUSED => {
            if let Ok(r) = serde_json::from_slice::<Refused>(&delivery.data) {
                let mut waiting = ctx.handovers.waiting.lock();
                let last = match waiting.get_mut(&r.request) {
                    // The other copy may still find the session.
                    Some(w) if w.copies > 1 && r.too_high.is_none() => {
                        w.copies -= 1;
                        false
                    }
                    Some(_) => true,
                    None => false,
                };
                if let Some(w) = last.then(|| waiting.remove(&r.request)).flatten() {
                    let _ = w.tx.send(Answer::Refused(r));
                }
            }
        }
        step::FORWARD => {
            let d = Delivered::from_broker(
                String::from_utf8_lossy(&delivery.data).into_owned(),
                delivery.acker.clone(),
                crate::delivery::message_id(&delivery),
            );
            let offered = session
                .and_then(|id| ctx.registry.get(id))
                .map(|tx| tx.offer_forwarded(d));
            if let Some(Ok(_)) = offered {
                // Acknowledged by the session once the stanza is safe.
                return;
            }
            // The resumption was given up (or the session ended): back to the routers.
            if !crate::delivery::bounce(
                ctx,
                &delivery.data,
                session,
                crate::delivery::message_id(&delivery),
                hops,
            )
            .await
            {
                meerkat_bus::requeue_after(&delivery, Duration::ZERO).await;
                return;
            }
        }
        step::FENCE => fence(ctx, session),
        // BOSH across the gateways of a DC: answered in a task of its own (it may be held
        // for `wait`), never in this consumer's way.
        step::BOSH_REQUEST => {
            tokio::spawn(crate::web::bosh::forwarded(
                ctx.clone(),
                delivery.data.clone(),
            ));
        }
        step::BOSH_REPLY => crate::web::bosh::replied(ctx, &delivery.data),
        other => tracing::warn!(step = other, "unknown handover step dropped"),
    }
    let _ = delivery.ack(BasicAckOptions::default()).await;
}

/// `moved`: registers the new session, so that the forwards that follow find it, and wakes
/// the waiting negotiation. A resumption given up meanwhile: nothing is registered, and what
/// follows is bounced to the routers.
async fn moved_here(ctx: &Ctx, moved: Moved) -> Option<Uuid> {
    let Some(w) = ctx.handovers.waiting.lock().remove(&moved.request) else {
        tracing::info!(request = %moved.request, "late handover answer: what follows goes back to the routers");
        abandoned(ctx, &moved).await;
        return None;
    };
    tracing::debug!(
        since_request_ms = crate::session::now_ms().saturating_sub(w.asked_ms),
        "moved here: the holder answered"
    );
    let (mailbox, inbox) = crate::registry::mailbox(ctx.config.max_queued_bytes);
    let replaced = ctx
        .registry
        .insert(w.new_session, &w.jid, w.credentials, mailbox);
    let arrived = Box::new(Arrived {
        moved,
        session: w.new_session,
        inbox,
        replaced,
    });
    match w.tx.send(Answer::Moved(arrived)) {
        Ok(()) => Some(w.new_session),
        Err(Answer::Moved(a)) => {
            ctx.registry.remove(a.session);
            a.inbox.close();
            if let Some(old) = a.replaced {
                old.tell(Outbound::Conflict);
            }
            abandoned(ctx, &a.moved).await;
            None
        }
        Err(Answer::Refused(_)) => None,
    }
}

/// The old holder's fence for the resumed `session`: what reached it directly may be written.
fn fence(ctx: &Ctx, session: Option<Uuid>) {
    if let Some(tx) = session.and_then(|id| ctx.registry.get(id)) {
        tx.tell(Outbound::Fence);
    }
}

/// What the old holder kept, carried in `moved` (`delivery`): into the resumed session's
/// mailbox, in order, as `forward`s would be; when the resumption was given up meanwhile
/// (`session` is `None` or gone), back to the routers. The delivery is acknowledged once every
/// one of them is safe.
fn took_kept(
    ctx: &std::sync::Arc<Ctx>,
    session: Option<Uuid>,
    kept: Vec<Kept>,
    delivery: &Delivery,
    hops: u64,
) {
    let share = crate::registry::SharedAck::new(delivery.acker.clone(), kept.len());
    let tx = session.and_then(|id| ctx.registry.get(id));
    for k in kept {
        let d = Delivered::copy(
            k.xml,
            crate::registry::BrokerAck::Shared(share.clone()),
            k.id.as_deref(),
        );
        let d = match &tx {
            Some(tx) => match tx.offer_forwarded(d) {
                Ok(_) => continue,
                Err(d) => d,
            },
            None => d,
        };
        // Bounced in a task of its own, until the broker takes it: its share stays
        // unsettled meanwhile.
        let ctx = ctx.clone();
        tokio::spawn(async move {
            while !crate::delivery::bounce(&ctx, d.xml.as_bytes(), session, d.id.as_deref(), hops)
                .await
            {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            d.settle(&ctx.acks);
        });
    }
}

/// A session that left its old holder for a resumption given up meanwhile: its old holder
/// said nothing (the session was moving), so its end is said here, as its gateway would have
/// said it — unavailable presence to its contacts and to whom it sent directed presence.
/// Without session headers: the session is gone.
async fn abandoned(ctx: &Ctx, moved: &Moved) {
    let jid = &moved.session.jid;
    let bare = meerkat_xmpp::addr::bare(jid);
    let mut presences = Vec::new();
    if moved.session.available {
        presences.push(
            meerkat_xmpp::Element::new("presence", meerkat_xmpp::ns::CLIENT)
                .with_attr("type", "unavailable")
                .with_attr("from", jid.clone()),
        );
    }
    for to in &moved.directed {
        presences.push(
            meerkat_xmpp::Element::new("presence", meerkat_xmpp::ns::CLIENT)
                .with_attr("type", "unavailable")
                .with_attr("from", jid.clone())
                .with_attr("to", to.clone()),
        );
    }
    for p in presences {
        let props = Props::stanza(RouteKind::Stanza, &ctx.config.dc)
            .id(Uuid::new_v4().to_string())
            .str(h::ORIGIN_EPOCH, &ctx.epoch)
            .u64(h::HOPS, 3)
            .str(h::SENDER, jid)
            .u64(h::RECEIVED_AT, crate::session::now_ms());
        if let Err(e) = ctx
            .publisher
            .publish(names::ROUTE_EXCHANGE, &bare, props, p.to_xml().as_bytes())
            .await
        {
            tracing::warn!(error = %e, %jid, "unavailable presence of an abandoned resumption not sent");
        }
    }
}

/// The session moved to the gateway that asked (`req`): `moved` goes there, carrying what
/// the session kept when the asker reads it ([`Request::inline`]; up to
/// [`step::KEPT_INLINE_MAX`], and then it is the fence too), else followed by a `forward` for
/// each, then the `fence`; what still reaches the session later follows the tombstone.
/// Returns [`CLOSE_AFTER`] later, for the caller to announce the old id closed. The caller has
/// stopped the session writing (`inbox` closed). `Err` with everything taken when `moved`
/// could not be sent: the asker was not told, and the session ends here as one not resumed.
pub async fn leave(
    ctx: &Ctx,
    old: Uuid,
    req: &Request,
    mut moved: Moved,
    mut kept: Vec<Delivered>,
    inbox: &Inbox,
) -> Result<(), Vec<Delivered>> {
    let to = &asker(req);
    // What waits in the mailbox now goes with what was kept; what comes meanwhile still
    // waits there, and follows `moved` as `forward`s.
    kept.extend(inbox.take_waiting());
    let mut inline = 0;
    if req.inline {
        let mut bytes = 0;
        for d in &kept {
            bytes += d.xml.len();
            if inline > 0 && bytes > step::KEPT_INLINE_MAX {
                break;
            }
            inline += 1;
        }
        moved.kept = kept[..inline]
            .iter()
            .map(|d| Kept {
                id: d.id.as_deref().map(str::to_owned),
                xml: d.xml.clone(),
            })
            .collect();
        moved.fenced = inline == kept.len();
    }
    let body = serde_json::to_vec(&moved).unwrap_or_default();
    // Two hops, as a `forward` has: what it carries may be routed again once more.
    if !send(ctx, to, step::MOVED, None, 2, &body).await {
        return Err(kept);
    }
    tracing::debug!(
        since_request_ms = crate::session::now_ms().saturating_sub(req.sent_at_ms),
        kept = inline,
        "moved sent"
    );
    // From here what reaches this gateway for the old session follows it.
    ctx.handovers.tombstone(old, to.clone(), &req.jid);
    let mut rest = kept.into_iter();
    for d in rest.by_ref().take(inline) {
        d.settle(&ctx.acks);
    }
    let mut forwarded = inline as u64;
    for d in rest.chain(std::iter::from_fn(|| inbox.drain())) {
        if send(
            ctx,
            to,
            step::FORWARD,
            Some(to.session),
            2,
            d.xml.as_bytes(),
        )
        .await
        {
            d.settle(&ctx.acks);
            forwarded += 1;
        } else if crate::delivery::bounce(ctx, d.xml.as_bytes(), Some(old), d.id.as_deref(), 2)
            .await
        {
            d.settle(&ctx.acks);
        }
    }
    ctx.registry.remove(old);
    // Everything this session held has been forwarded: the fence follows at once (unless
    // `moved` was it). What a router still routes here until it learns of the new session
    // follows the tombstone, and the new holder holds what reaches it directly a moment for
    // it ([`Settle`]).
    if !moved.fenced {
        let body = serde_json::to_vec(&Fence {
            request: req.request,
        })
        .unwrap_or_default();
        send(ctx, to, step::FENCE, Some(to.session), 1, &body).await;
    }
    // The caller then announces the old id closed. Each router must have the new session
    // before that: one that took the close first would hold no session for the full JID in
    // between, and route what comes for it as for a resource that is gone (offline storage).
    tokio::time::sleep(CLOSE_AFTER).await;
    tracing::debug!(session = %old, to = %to.gateway, forwarded, "session handed over");
    Ok(())
}

/// What reached the new holder directly after the `fence`, during [`SETTLE`]: each stanza
/// held until [`HOLD`] after it came, then written in the order they came. A router that
/// learnt of the move late routed a sender's earlier stanzas to the old holder, which
/// forwards them at once; the sender's later ones, routed here directly, wait that long for
/// them. Forwarded stanzas are never held.
pub struct Settle<T> {
    until: Instant,
    /// Each with when it is due.
    held: std::collections::VecDeque<(Instant, T)>,
}

impl<T> Settle<T> {
    /// From the fence at `now`, with what came before it (each with when it came).
    pub fn new(now: Instant, came: impl IntoIterator<Item = (Instant, T)>) -> Settle<T> {
        Settle {
            until: now + SETTLE,
            held: came.into_iter().map(|(at, d)| (at + HOLD, d)).collect(),
        }
    }

    /// A stanza that came directly at `now`: held, or `Err` with it when the settling is
    /// over (write [`Settle::due`] first).
    pub fn hold(&mut self, now: Instant, d: T) -> Result<(), T> {
        if now >= self.until {
            return Err(d);
        }
        self.held.push_back((now + HOLD, d));
        Ok(())
    }

    /// What is due at `now`, in order: every held stanza once the settling is over.
    pub fn due(&mut self, now: Instant) -> Vec<T> {
        let mut out = Vec::new();
        while let Some((at, _)) = self.held.front() {
            if *at > now && now < self.until {
                break;
            }
            out.extend(self.held.pop_front().map(|(_, d)| d));
        }
        out
    }

    /// When something is next due (nothing held: nothing to wake for).
    pub fn next(&self) -> Option<Instant> {
        self.held.front().map(|(at, _)| (*at).min(self.until))
    }

    /// Over and empty: nothing more to hold.
    pub fn over(&self, now: Instant) -> bool {
        now >= self.until && self.held.is_empty()
    }

    /// Everything held, in order (the connection is gone).
    pub fn take_all(&mut self) -> Vec<T> {
        self.held.drain(..).map(|(_, d)| d).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_the_fence_a_direct_stanza_waits_its_hold_then_goes_in_order() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // Two came before the fence (at t0 - 300 ms and t0 - 100 ms).
        let mut s = Settle::new(t0, [(t0 - ms(300), "a"), (t0 - ms(100), "b")]);
        assert_eq!(s.due(t0), ["a"], "a's hold is over, b's is not");
        assert_eq!(s.next(), Some(t0 + HOLD - ms(100)));
        assert_eq!(s.hold(t0 + ms(10), "c"), Ok(()));
        assert!(s.due(t0 + ms(100)).is_empty());
        assert_eq!(s.due(t0 + ms(150)), ["b"]);
        assert_eq!(s.due(t0 + ms(260)), ["c"]);
        assert!(s.next().is_none());
        assert!(!s.over(t0 + ms(260)));
        // Near the end of the settling a hold is cut short: all goes at its end.
        assert_eq!(s.hold(t0 + SETTLE - ms(50), "d"), Ok(()));
        assert_eq!(s.next(), Some(t0 + SETTLE));
        assert_eq!(s.due(t0 + SETTLE), ["d"]);
        assert!(s.over(t0 + SETTLE));
        assert_eq!(s.hold(t0 + SETTLE, "e"), Err("e"));
    }

    #[test]
    fn what_is_held_when_the_connection_goes_is_all_taken_in_order() {
        let t0 = Instant::now();
        let mut s = Settle::new(t0, [(t0, 1)]);
        s.hold(t0, 2).unwrap();
        assert_eq!(s.take_all(), [1, 2]);
        assert!(s.over(t0 + SETTLE));
    }

    #[test]
    fn a_tombstone_names_where_the_session_went() {
        let h = Handovers::default();
        let (old, new) = (Uuid::now_v7(), Uuid::now_v7());
        assert!(h.moved_to(old).is_none());
        h.tombstone(
            old,
            Peer {
                dc: "dc1".into(),
                gateway: "dc1-gw-2".into(),
                session: new,
                direct: true,
            },
            "a@example.com/phone",
        );
        let peer = h.moved_to(old).unwrap();
        assert_eq!((peer.gateway.as_str(), peer.session), ("dc1-gw-2", new));
        assert!(h.moved_to(new).is_none());
        let by_jid = h.jid_moved_to("a@example.com/phone").unwrap();
        assert_eq!(by_jid.session, new);
        assert!(h.jid_moved_to("a@example.com/desk").is_none());
    }
}
