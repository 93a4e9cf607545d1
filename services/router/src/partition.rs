//! One route partition: each sender's deliveries are handled one at a time, in order (the
//! queue has a single active consumer, which keeps each sender's stanzas in order however many
//! routers run); different senders' deliveries go side by side, each as it arrives (`consume_lanes`). A delivery is acked only after its deliveries are confirmed and its writes done, or
//! once its sender has been told it failed (failure.rs: permanent at once, transient after
//! `transient_retry_ms` of retries in place); a duplicate envelope id is dropped.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use meerkat_bus::{lapin, ConsumerSpec, Dedup, HeaderExt, NotForUs};
use meerkat_wire::headers as h;
use meerkat_wire::topology as names;
use meerkat_wire::RouteKind;
use meerkat_xmpp::stanza::must_not_bounce;
use meerkat_xmpp::StanzaError;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::failure::{self, Failure};
use crate::inbound::{Inbound, InboundError};
use crate::metrics::Outcome;
use crate::outbox::{Outbox, Target};
use crate::route::{self, RemoteArrival};
use crate::salvage;
use crate::Ctx;

const PREFETCH: u16 = 64;
/// How long a stanza waits for its sender's session event to reach this router.
const SESSION_EVENT_WAIT: Duration = Duration::from_secs(2);
/// How long a stanza from another DC waits for its target session's event (see `arrival`).
const REMOTE_TARGET_WAIT: Duration = Duration::from_millis(500);

pub async fn run(
    ctx: Arc<Ctx>,
    n: u16,
    seen: Arc<Mutex<Dedup>>,
    stop: CancellationToken,
    consuming: Arc<AtomicUsize>,
) {
    let queue = names::route_queue(n);
    let declare_ctx = ctx.clone();
    let spec = ConsumerSpec {
        queue: queue.clone(),
        prefetch: PREFETCH,
        exclusive: false,
        declare: Arc::new(move |ch| {
            let ctx = declare_ctx.clone();
            Box::pin(async move {
                meerkat_bus::topology::declare_route_partitions(&ch).await?;
                // A router that has just started routes nothing until its directory is warm
                // (sessions.rs): a stanza routed before the resync's answers arrived would
                // find its target absent and be stored offline, and the next ones, routed once
                // the target is known, would overtake it.
                ctx.sessions.until_warm().await;
                Ok(())
            })
        }),
        parker: ctx.parker.clone(),
        drain_on_stop: true,
    };
    let bus = ctx.bus.clone();
    // Lanes by routing key (the sender's or the account's key): one lane's deliveries are
    // handled one after another, so a sender's stanzas (and an account's nudges among them)
    // keep their order; lanes go side by side, as they would in two partitions, so that one
    // sender's wait (its archive write, a confirm) holds no other sender hashed here, and the
    // archive writer gets their messages together.
    let lane = |d: &Delivery| d.routing_key.as_str().to_owned();
    meerkat_bus::consume_lanes(bus, spec, stop, consuming, lane, |delivery| {
        let (ctx, seen, queue) = (ctx.clone(), seen.clone(), queue.clone());
        async move { handle_delivery(&ctx, &queue, delivery, &seen).await }
    })
    .await;
}

async fn handle_delivery(ctx: &Ctx, queue: &str, delivery: Delivery, seen: &Mutex<Dedup>) {
    let id = delivery
        .properties
        .message_id()
        .as_ref()
        .map(|s| s.as_str().to_owned());
    if let Some(id) = &id {
        if seen.lock().contains(id) {
            let _ = delivery.ack(BasicAckOptions::default()).await;
            return;
        }
    }
    let headers = delivery.properties.headers().as_ref();
    // A kind this version does not know (a newer DC's or gateway's) waits in the parking
    // queue for the upgrade; a kick belongs on a gateway's queue, not here.
    let wire_kind = match meerkat_bus::wire::kind(headers) {
        Ok(RouteKind::Conflict) => {
            let why = NotForUs::unreadable("a conflict kick on a route queue");
            ctx.parker.park(queue, &delivery, &why).await;
            return;
        }
        Ok(k) => k,
        Err(unknown) => {
            ctx.parker.park(queue, &delivery, &unknown.into()).await;
            return;
        }
    };
    // A gateway asks for a session its client resumed there: on to the holder's gateway.
    if wire_kind == RouteKind::Handover {
        match crate::handover::pass(ctx, &delivery.data).await {
            Ok(()) => done(&delivery, id.as_deref(), seen).await,
            Err(e) => {
                // The asking gateway gives up after a while; the broker is away meanwhile.
                tracing::warn!(error = %format!("{e:#}"), "handover request not passed on; requeued");
                meerkat_bus::requeue_after(&delivery, retry_pause(1)).await;
            }
        }
        return;
    }
    // Stanzas from another DC for sessions here, bundled there (fanout.rs).
    if wire_kind == RouteKind::Bundle {
        match crate::fanout::bundle_arrived(ctx, &delivery.data, headers, REMOTE_TARGET_WAIT).await
        {
            Ok(()) => done(&delivery, id.as_deref(), seen).await,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "bundle from another DC not delivered; requeued");
                meerkat_bus::requeue_after(&delivery, retry_pause(1)).await;
            }
        }
        return;
    }
    // A bounce means the gateway no longer has that session: forget it first, whether or
    // not the stanza itself can be routed again.
    if wire_kind == RouteKind::Bounce {
        ctx.metrics.bounces.inc();
        if let Some(id) = headers
            .get_str(h::BOUNCED_SESSION)
            .and_then(|s| Uuid::parse_str(&s).ok())
        {
            ctx.sessions.remove_session(id);
        }
    }
    let span = tracing::info_span!(
        "process meerkat.route",
        otel.kind = "consumer",
        messaging.system = "rabbitmq",
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = names::ROUTE_EXCHANGE,
        messaging.rabbitmq.destination.routing_key = delivery.routing_key.as_str(),
        messaging.rabbitmq.message.delivery_tag = delivery.delivery_tag,
        messaging.message.id = id.as_deref().unwrap_or(""),
    );
    meerkat_runtime::telemetry::set_parent_from_headers(&span, headers);
    let inb = match Inbound::parse(&delivery.data, headers) {
        Ok(i) => i,
        // A server's own stanza (an iq result, a roster push: no `from`) that a gateway gave
        // back because its session ended: nobody to route it to, nothing to tell (RFC 6121
        // §8.5.3.1 drops what was for a resource that is gone, when it is not a message to
        // keep). Not an unreadable delivery.
        Err(InboundError::NoFrom(kind))
            if matches!(wire_kind, RouteKind::Bounce | RouteKind::Returned) =>
        {
            tracing::debug!(
                kind = kind.as_str(),
                "a server's stanza to a session that ended: dropped"
            );
            ctx.metrics.routed(kind.as_str(), Outcome::Dropped);
            done(&delivery, id.as_deref(), seen).await;
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "unreadable delivery refused");
            ctx.metrics.failed("unreadable");
            match answer_unreadable(ctx, &delivery).await {
                Ok(()) => done(&delivery, id.as_deref(), seen).await,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "error reply not sent; requeued");
                    meerkat_bus::requeue_after(&delivery, retry_pause(1)).await;
                }
            }
            return;
        }
    };
    // A transient failure (database or broker unavailable) is retried here, holding the
    // delivery: the partition's later stanzas wait behind it, so the sender's order holds. (A
    // requeue would let the ones already prefetched overtake it.) The wait is bounded by time,
    // since every sender hashed to this partition waits too; a permanent failure is not
    // retried at all. Either way the sender is told, and the partition moves on.
    let budget = Duration::from_millis(ctx.config.transient_retry_ms);
    let started = tokio::time::Instant::now();
    let mut attempt = 0u32;
    let error = loop {
        let Err(e) = handle(ctx, &inb, id.as_deref())
            .instrument(span.clone())
            .await
        else {
            done(&delivery, id.as_deref(), seen).await;
            return;
        };
        attempt += 1;
        match failure::classify(&e) {
            Failure::Permanent(error) => {
                tracing::warn!(error = %format!("{e:#}"), from = %inb.from, "stanza refused: permanent failure");
                ctx.metrics.failed("permanent");
                break error;
            }
            Failure::Transient => {
                let pause = retry_pause(attempt);
                if started.elapsed() + pause > budget {
                    tracing::error!(error = %format!("{e:#}"), attempts = attempt, from = %inb.from, "stanza given up: failures outlasted transient_retry_ms");
                    ctx.metrics.failed("transient");
                    break failure::gave_up();
                }
                tracing::warn!(error = %format!("{e:#}"), attempt, "routing failed; retrying in place");
                tokio::time::sleep(pause).await;
            }
        }
    };
    match answer(ctx, &inb, id.as_deref(), &error)
        .instrument(span)
        .await
    {
        Ok(()) => done(&delivery, id.as_deref(), seen).await,
        Err(e) => {
            // Not even the error got out (the broker is away): the delivery goes back to the
            // queue and is tried again, never dropped unanswered.
            tracing::warn!(error = %format!("{e:#}"), "error reply not sent; requeued");
            meerkat_bus::requeue_after(&delivery, retry_pause(attempt)).await;
        }
    }
}

/// The wait before retry `attempt` (1-based): 50 ms doubling, at most 1 s.
fn retry_pause(attempt: u32) -> Duration {
    Duration::from_millis(50u64 << attempt.saturating_sub(1).min(4)).min(Duration::from_secs(1))
}

async fn done(delivery: &Delivery, id: Option<&str>, seen: &Mutex<Dedup>) {
    if let Some(id) = id {
        seen.lock().insert(id);
    }
    let _ = delivery.ack(BasicAckOptions::default()).await;
}

/// Tells the sender of `inb` that it was not handled (never an error to an error or a result,
/// RFC 6120 §8.3.1), without its payload (`failure::bare_error_reply`).
/// `id`: the envelope's, which the reply's id is derived from (apart from the ids of what a
/// failed handling of it may have sent already).
async fn answer(
    ctx: &Ctx,
    inb: &Inbound,
    id: Option<&str>,
    error: &StanzaError,
) -> anyhow::Result<()> {
    if must_not_bounce(&inb.el) {
        ctx.metrics.routed(inb.kind.as_str(), Outcome::Dropped);
        return Ok(());
    }
    let mut reply = failure::bare_error_reply(&inb.el, error);
    if reply.attr("to").is_none() {
        reply.set_attr("to", inb.from.clone());
    }
    let origin = id.map(|id| format!("{id}/error"));
    let mut out = Outbox::new(inb.hops).derived_from(origin.as_deref());
    crate::reply::reply(ctx, inb, &mut out, &reply);
    out.flush(ctx).await?;
    ctx.metrics.routed(inb.kind.as_str(), Outcome::Error);
    Ok(())
}

/// Tells the sending client of a stanza this router cannot read (`<bad-request/>`), from what
/// its start tag still says (salvage.rs). Only a client's own stanza names its session and
/// gateway; for anything else there is no one to tell (logged and counted by the caller).
async fn answer_unreadable(ctx: &Ctx, delivery: &Delivery) -> anyhow::Result<()> {
    let headers = delivery.properties.headers().as_ref();
    if meerkat_bus::wire::kind(headers) != Ok(RouteKind::Stanza) {
        return Ok(());
    }
    let (Some(session), Some(gateway), Some(sender)) = (
        headers
            .get_str(h::SESSION)
            .and_then(|s| Uuid::parse_str(&s).ok()),
        headers.get_str(h::GATEWAY),
        headers.get_str(h::SENDER),
    ) else {
        return Ok(());
    };
    let Some(head) = salvage::head(&delivery.data) else {
        return Ok(());
    };
    if matches!(head.attr("type"), Some("error" | "result")) {
        return Ok(());
    }
    let mut stanza = meerkat_xmpp::Element::new(head.name.clone(), meerkat_xmpp::ns::CLIENT);
    for (k, v) in &head.attrs {
        stanza.set_attr(k.clone(), v.clone());
    }
    // The gateway stamped the sender; the tag's own `from` is not trusted over it.
    stanza.set_attr("from", sender);
    let reply = failure::bare_error_reply(&stanza, &StanzaError::bad_request());
    let mut out = Outbox::new(0);
    out.deliver(
        Target {
            dc: String::new(),
            gateway,
            session,
        },
        &reply,
    );
    out.flush(ctx).await
}

/// Where a stanza from another DC goes. Its target session opened here before the other DC
/// could know of it, so its event has almost surely reached this router; the short wait
/// covers the rare router that lags behind.
async fn arrival(ctx: &Ctx, inb: &Inbound) -> RemoteArrival {
    if let Some(id) = inb.target_session {
        ctx.sessions.wait_seen(id, 0, REMOTE_TARGET_WAIT).await;
    }
    let entry = inb
        .target_session
        .and_then(|id| ctx.sessions.read().by_session(id).cloned());
    route::remote_arrival(entry.as_ref(), &ctx.config.dc, inb.hops)
}

/// `id`: the delivery's message id (for a stanza from another DC, its envelope's).
async fn handle(ctx: &Ctx, inb: &Inbound, id: Option<&str>) -> anyhow::Result<()> {
    // Only a client of this DC names its session; a stanza from another DC has no sender
    // session here to wait for.
    if let Some(sender) = &inb.sender {
        ctx.sessions
            .wait_seen(sender.target.session, sender.version, SESSION_EVENT_WAIT)
            .await;
    }
    // A room's reflection from its home at another DC: the row its home archived, kept here
    // too if replication has not brought it yet.
    crate::muc::kept::reflection(ctx, inb).await?;
    // One stanza for several sessions here, from another DC (a room's reflection).
    if inb.wire_kind == RouteKind::Fanout {
        return crate::fanout::arrived(ctx, inb, id, REMOTE_TARGET_WAIT).await;
    }
    let rerouted;
    let inb = if inb.wire_kind == RouteKind::Remote {
        match arrival(ctx, inb).await {
            RemoteArrival::Deliver(target) => {
                let mut out = Outbox::new(inb.hops);
                // A roster push, written from this DC's copy (roster::as_here).
                let here = if inb.data_here {
                    crate::handlers::roster::as_here(ctx, &inb.el).await?
                } else {
                    None
                };
                let el = here.as_ref().unwrap_or(&inb.el);
                // Under the envelope's id: one the other DC keyed (a subscription request)
                // stays recognisable to the gateway if this DC delivers it too (stored.rs).
                match id {
                    Some(id) => out.deliver_as(target, el, id),
                    None => out.deliver(target, el),
                }
                out.flush(ctx).await?;
                tracing::debug!(stanza = ?inb.el.attr("id"), from = %inb.from, session = ?inb.target_session, "from another DC: delivered");
                ctx.metrics.routed(inb.kind.as_str(), Outcome::Delivered);
                return Ok(());
            }
            RemoteArrival::Reresolve { hops } => {
                tracing::debug!(session = ?inb.target_session, hops, "remote stanza's session not here: re-resolved");
                rerouted = Inbound {
                    wire_kind: RouteKind::Bounce,
                    hops,
                    ..inb.clone()
                };
                &rerouted
            }
        }
    } else {
        inb
    };
    let mut out = Outbox::new(inb.hops).derived_from(id);
    let outcome = if inb.wire_kind == RouteKind::Offline {
        crate::handlers::stored::on_nudge(ctx, inb, &mut out).await?
    } else {
        route::route(ctx, inb, &mut out).await?
    };
    out.flush(ctx).await?;
    tracing::debug!(kind = inb.wire_kind.as_str(), stanza = ?inb.el.attr("id"), from = %inb.from, to = ?inb.el.attr("to"), hops = inb.hops, ?outcome, "routed");
    ctx.metrics.routed(inb.kind.as_str(), outcome);
    if let Some(at) = inb.received_at {
        let now = chrono::Utc::now().timestamp_millis();
        let ms = now.saturating_sub(i64::try_from(at).unwrap_or(now)).max(0);
        ctx.metrics.routing_latency.observe(ms as f64 / 1000.0);
    }
    if outcome == Outcome::Error {
        tracing::debug!(from = %inb.from, to = ?inb.el.attr("to"), "answered with an error");
    }
    Ok(())
}
