//! Consumes this gateway's delivery queue and hands each stanza to its session's mailbox,
//! without ever waiting on a session. A stanza for a session that is gone goes back to the
//! routers as a bounce, never dropped. A stanza's delivery is acknowledged by its session once
//! the stanza is safe (registry.rs `Delivered`), so the consumer takes whatever the broker
//! sends (no prefetch limit): what sessions hold is bounded by their own caps.

use std::sync::Arc;

use lapin::options::BasicAckOptions;
use meerkat_bus::lapin;
use meerkat_bus::{spawn_consumer, ConsumerSpec, Dedup, HeaderExt};
use meerkat_wire::{headers as h, topology as names, RouteKind};
use meerkat_xmpp::Element;
use parking_lot::Mutex;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::registry::{BrokerAck, Delivered, Mailbox, Outbound, SharedAck};
use crate::Ctx;

pub async fn run(ctx: Arc<Ctx>) {
    let instance = ctx.instance.clone();
    let dc = ctx.config.dc.clone();
    let queue = names::gateway_queue(&ctx.instance);
    let spec = ConsumerSpec {
        queue: queue.clone(),
        prefetch: 0,
        exclusive: false,
        declare: Arc::new(move |ch| {
            let (dc, instance) = (dc.clone(), instance.clone());
            Box::pin(async move {
                // The partitions too: what clients send waits in them while no router runs.
                meerkat_bus::topology::declare_route_partitions(&ch).await?;
                // And the routers' queue of handover requests, which this gateway sends to.
                meerkat_bus::topology::declare_handover_requests(&ch).await?;
                meerkat_bus::topology::declare_gateway_queue(&ch, &dc, &instance)
                    .await
                    .map(|_| ())
            })
        }),
        parker: ctx.parker.clone(),
        drain_on_stop: false,
    };
    let dedup = Arc::new(Mutex::new(Dedup::new(65_536)));
    let handler_ctx = ctx.clone();
    let task = spawn_consumer(ctx.bus.clone(), spec, move |delivery| {
        let ctx = handler_ctx.clone();
        let dedup = dedup.clone();
        let queue = queue.clone();
        // The last hop of the stanza's trace: its parent (and link) came in the AMQP headers.
        let span = tracing::info_span!(
            "process meerkat.deliver",
            otel.kind = "consumer",
            messaging.system = "rabbitmq",
            messaging.operation.type = "process",
            messaging.operation.name = "process",
            messaging.destination.name = names::DELIVER_EXCHANGE,
            messaging.rabbitmq.destination.routing_key = delivery.routing_key.as_str(),
            messaging.rabbitmq.message.delivery_tag = delivery.delivery_tag,
            messaging.message.id = delivery
                .properties
                .message_id()
                .as_ref()
                .map_or("", |id| id.as_str()),
        );
        meerkat_runtime::telemetry::set_parent_from_headers(
            &span,
            delivery.properties.headers().as_ref(),
        );
        async move {
            let headers = delivery.properties.headers().as_ref();
            // A fan-out or a bundle is deduplicated copy by copy (fan_out).
            let fanout = matches!(
                meerkat_bus::wire::kind(headers),
                Ok(RouteKind::Fanout | RouteKind::Bundle)
            );
            if let (Some(id), false) = (delivery.properties.message_id(), fanout) {
                if !dedup.lock().first_time(id.as_str()) {
                    tracing::debug!(message = %id, "duplicate delivery dropped");
                    let _ = delivery.ack(BasicAckOptions::default()).await;
                    return;
                }
            }
            let session = headers
                .get_str(h::SESSION)
                .and_then(|s| Uuid::parse_str(&s).ok());
            // A kind this version does not know (a newer router's) waits for the upgrade.
            let kind = match meerkat_bus::wire::kind(headers) {
                Ok(k) => k,
                Err(unknown) => {
                    ctx.parker.park(&queue, &delivery, &unknown.into()).await;
                    return;
                }
            };
            // Straight from another DC comes only a handover step: a stanza from there goes
            // through this DC's routers, which route it.
            if delivery.exchange.as_str() == names::INTER_STANZAS_EXCHANGE
                && kind != RouteKind::Handover
            {
                let why = meerkat_bus::NotForUs::unreadable(format!(
                    "a {} message straight from another DC",
                    kind.as_str()
                ));
                ctx.parker.park(&queue, &delivery, &why).await;
                return;
            }
            // A step of a session moving between gateways (XEP-0198 resumption elsewhere).
            if kind == RouteKind::Handover {
                crate::handover::arrived(&ctx, delivery).await;
                return;
            }
            // One stanza for several sessions of this gateway (a room's reflection), or
            // several stanzas for its sessions in one message.
            if matches!(kind, RouteKind::Fanout | RouteKind::Bundle) {
                fan_out(&ctx, &queue, delivery, &dedup, kind).await;
                return;
            }
            let kind_is_stanza = kind != RouteKind::Conflict;
            // A stanza for a session replaced meanwhile (same full JID, newer login at this
            // gateway) goes to the session now bound to that JID, as it would on one server.
            let tx = session.and_then(|id| ctx.registry.get(id)).or_else(|| {
                if !kind_is_stanza {
                    return None;
                }
                let el = Element::parse(&String::from_utf8_lossy(&delivery.data)).ok()?;
                ctx.registry.get_by_jid(el.attr("to")?)
            });
            // Handing over never waits: this consumer serves every session of the gateway.
            // A session that cannot take more ends and sends back what waited for it.
            match (kind, tx) {
                (RouteKind::Conflict, Some(tx)) => {
                    tx.tell(Outbound::Conflict);
                    let _ = delivery.ack(BasicAckOptions::default()).await;
                    return;
                }
                (RouteKind::Conflict, None) => {
                    let _ = delivery.ack(BasicAckOptions::default()).await;
                    return;
                }
                // The session acknowledges the delivery once the stanza is safe (written, or
                // acknowledged by its client under stream management).
                (_, Some(tx)) => {
                    let handed = Delivered::from_broker(
                        String::from_utf8_lossy(&delivery.data).into_owned(),
                        delivery.acker.clone(),
                        message_id(&delivery),
                    );
                    let taken = hand_to(&tx, handed, false).await.is_none();
                    tracing::debug!(?session, message = ?delivery.properties.message_id(), taken, "handed to its session");
                    if taken {
                        return;
                    }
                }
                (_, None) => {}
            }
            let hops = headers.get_u64(h::HOPS).unwrap_or(3).saturating_sub(1);
            // A session that moved to another gateway a moment ago: there.
            if crate::handover::follow(&ctx, session, &delivery.data, hops).await {
                let _ = delivery.ack(BasicAckOptions::default()).await;
                return;
            }
            tracing::debug!(?session, hops, message = ?delivery.properties.message_id(), "no such session here: bounced");
            if bounce(&ctx, &delivery.data, session, message_id(&delivery), hops).await {
                let _ = delivery.ack(BasicAckOptions::default()).await;
            } else {
                meerkat_bus::requeue_after(&delivery, std::time::Duration::ZERO).await;
            }
        }
        .instrument(span)
    });
    let _ = task.await;
}

/// Hands `d` to a session's mailbox; gives it back if the session is gone. A session more
/// than half full gets to write before the next hand-off. `paced`: `d` is one of a batch sent
/// at once (a bundle: a login's offline backlog, say), which waits in the mailbox behind what
/// its session has yet to take rather than count against its cap ([`Mailbox::offer_paced`]):
/// a session busy for a moment (waiting for the broker to confirm its presence) is not cut by
/// its own backlog. Every hand-off goes on at once: one session never slows the others.
async fn hand_to(tx: &Mailbox, d: Delivered, paced: bool) -> Option<Delivered> {
    let offered = if paced {
        tx.offer_paced(d)
    } else {
        tx.offer(d)
    };
    match offered {
        Ok(backing_up) => {
            if backing_up {
                tokio::task::yield_now().await;
            }
            None
        }
        Err(d) => Some(d),
    }
}

/// A fan-out or a bundle (meerkat_wire::fanout): each copy (a fan-out's stanza addressed to
/// its recipient; a bundle's stanza as it is) to its session as a delivery of its own would
/// go (or on to where the session moved, or back to the routers). The broker's delivery is
/// acknowledged once every copy is safe. A copy id already handed over (the message given
/// again) is not handed over twice.
async fn fan_out(
    ctx: &Arc<Ctx>,
    queue: &str,
    delivery: lapin::message::Delivery,
    dedup: &Mutex<Dedup>,
    kind: RouteKind,
) {
    let headers = delivery.properties.headers().as_ref();
    let read = headers
        .get_str(h::RECIPIENTS)
        .ok_or_else(|| "no recipients".to_owned())
        .and_then(|v| meerkat_wire::fanout::decode(&v).map_err(|e| e.to_string()))
        .and_then(|r| {
            if kind == RouteKind::Bundle {
                return meerkat_wire::fanout::unbundle(&delivery.data, r)
                    .map_err(|e| e.to_string());
            }
            let stanza = Element::parse(&String::from_utf8_lossy(&delivery.data))
                .map_err(|e| e.to_string())?;
            Ok(r.into_iter()
                .map(|r| {
                    let mut el = stanza.clone();
                    el.set_attr("to", r.to.clone());
                    (r, el)
                })
                .collect())
        });
    let copies = match read {
        Ok(copies) => copies,
        Err(why) => {
            ctx.parker
                .park(queue, &delivery, &meerkat_bus::NotForUs::unreadable(why))
                .await;
            return;
        }
    };
    let hops = headers.get_u64(h::HOPS).unwrap_or(3).saturating_sub(1);
    let fresh: Vec<_> = {
        let seen = dedup.lock();
        copies
            .into_iter()
            .filter(|(r, _)| !seen.contains(&r.id))
            .collect()
    };
    if fresh.is_empty() {
        let _ = delivery.ack(BasicAckOptions::default()).await;
        return;
    }
    let share = SharedAck::new(delivery.acker.clone(), fresh.len());
    for (r, el) in fresh {
        let copy = Delivered::copy(el.to_xml(), BrokerAck::Shared(share.clone()), Some(&r.id));
        dedup.lock().insert(&r.id);
        let tx = ctx
            .registry
            .get(r.session)
            .or_else(|| ctx.registry.get_by_jid(&r.to));
        let copy = match tx {
            Some(tx) => match hand_to(&tx, copy, kind == RouteKind::Bundle).await {
                None => continue,
                Some(copy) => copy,
            },
            None => copy,
        };
        tracing::debug!(session = %r.session, message = %r.id, "fan-out copy: no such session here");
        let ctx = ctx.clone();
        let session = r.session;
        // Forwarded or bounced in its own task: a broker that refuses the publication for a
        // while holds up that copy only (its share stays unsettled until it is sent).
        tokio::spawn(async move {
            let data = copy.xml.as_bytes();
            loop {
                if crate::handover::follow(&ctx, Some(session), data, hops).await
                    || bounce(&ctx, data, Some(session), copy.id.as_deref(), hops).await
                {
                    copy.settle(&ctx.acks);
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        });
    }
}

/// Sends an undeliverable stanza back to the routers to be routed again without that session;
/// `of`: the id of the broker delivery it came in (one bounce per delivery, however often).
pub async fn bounce(
    ctx: &Ctx,
    body: &[u8],
    session: Option<Uuid>,
    of: Option<&str>,
    hops: u64,
) -> bool {
    let sent = ctx
        .publisher
        .bounce(&ctx.config.dc, &ctx.epoch, body, session, of, hops)
        .await
        .is_ok();
    if sent {
        ctx.metrics.bounced.inc();
    }
    sent
}

/// The broker delivery's message id.
pub fn message_id(delivery: &lapin::message::Delivery) -> Option<&str> {
    delivery
        .properties
        .message_id()
        .as_ref()
        .map(|id| id.as_str())
}
