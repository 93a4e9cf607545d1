//! A gateway asks for a stream-managed session its client resumed there (XEP-0198) while
//! another gateway holds it (`handover` request, docs/protocol.md "Handover"): the router finds
//! the session bound to the full JID in its directory and passes the request to its gateway,
//! in this DC on the deliver exchange, in another over the inter-DC stanza exchange (that DC's
//! routers hand it to their deliver exchange). No such session: `refused` to the asking
//! gateway.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use meerkat_bus::lapin::options::BasicAckOptions;
use meerkat_bus::topology::gateway_route;
use meerkat_bus::{ConsumerSpec, Props};
use meerkat_wire::handover::{self, Refused, Request};
use meerkat_wire::{headers as h, topology as names, RouteKind};
use tokio_util::sync::CancellationToken;

use crate::Ctx;

/// Consumes the DC's handover requests (`meerkat.handover.requests`; every router, no order
/// needed) until `stop`. A gateway of an older version sends its requests on the route
/// exchange instead; its partition passes them on the same way (partition.rs).
pub async fn run(ctx: Arc<Ctx>, stop: CancellationToken, consuming: Arc<AtomicUsize>) {
    let declare_ctx = ctx.clone();
    let spec = ConsumerSpec {
        queue: names::HANDOVER_REQUESTS_QUEUE.to_owned(),
        prefetch: BATCH,
        exclusive: false,
        declare: Arc::new(move |ch| {
            let ctx = declare_ctx.clone();
            Box::pin(async move {
                meerkat_bus::topology::declare_handover_requests(&ch).await?;
                // The directory must know the DC's sessions before it can find a holder.
                ctx.sessions.until_warm().await;
                Ok(())
            })
        }),
        parker: ctx.parker.clone(),
        drain_on_stop: false,
    };
    let bus = ctx.bus.clone();
    let queue = spec.queue.clone();
    // Requests need no order among themselves: what is at hand is passed on at once, each
    // request's publish confirmed beside the others', so that a burst of resumptions (a
    // network change drops a hundred phones at once) waits for one round of confirms, not for
    // a hundred in a row.
    meerkat_bus::consume_batches(bus, spec, usize::from(BATCH), stop, consuming, |batch| {
        let ctx = ctx.clone();
        let queue = queue.clone();
        async move {
            let each = batch.into_iter().map(|delivery| {
                let ctx = ctx.clone();
                let queue = queue.clone();
                async move { one(&ctx, &queue, delivery).await }
            });
            futures::future::join_all(each).await;
        }
    })
    .await;
}

/// Requests passed on together, at most (the queue's prefetch).
const BATCH: u16 = 64;

/// Passes one delivery of the request queue on and acks it; requeued if it could not be.
async fn one(ctx: &Ctx, queue: &str, delivery: meerkat_bus::lapin::message::Delivery) {
    match meerkat_bus::wire::kind(delivery.properties.headers().as_ref()) {
        Ok(RouteKind::Handover) => {}
        Ok(other) => {
            let why = meerkat_bus::NotForUs::unreadable(format!(
                "a {} message on the handover request queue",
                other.as_str()
            ));
            ctx.parker.park(queue, &delivery, &why).await;
            return;
        }
        Err(unknown) => {
            ctx.parker.park(queue, &delivery, &unknown.into()).await;
            return;
        }
    }
    match pass(ctx, &delivery.data).await {
        Ok(()) => {
            let _ = delivery.ack(BasicAckOptions::default()).await;
        }
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "handover request not passed on; requeued");
            meerkat_bus::requeue_after(&delivery, Duration::from_millis(200)).await;
        }
    }
}

/// Passes one `handover` request on; what cannot be read is dropped (logged).
pub async fn pass(ctx: &Ctx, body: &[u8]) -> anyhow::Result<()> {
    let req: Request = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "unreadable handover request dropped");
            return Ok(());
        }
    };
    let holder = ctx.sessions.read().session(&req.jid).cloned();
    match holder {
        Some(s) => {
            tracing::debug!(jid = %req.jid, gateway = %s.gateway, dc = %s.dc, "handover request passed on");
            send(
                ctx,
                &s.dc,
                &s.gateway,
                Direct::IfBound,
                handover::REQUEST,
                body,
            )
            .await
        }
        None => {
            tracing::debug!(jid = %req.jid, "handover request for no session: refused");
            let refused = serde_json::to_vec(&Refused {
                request: req.request,
                too_high: None,
            })?;
            let direct = if req.direct { Direct::Yes } else { Direct::No };
            send(
                ctx,
                &req.to_dc,
                &req.to_gateway,
                direct,
                handover::REFUSED,
                &refused,
            )
            .await
        }
    }
}

/// Whether a gateway at another DC takes steps on its own key of the inter-DC stanza exchange
/// (`meerkat_wire::topology::gateway_inter_key`, since 1.9), past the routers there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direct {
    /// It said so (`Request::direct`).
    Yes,
    /// Not known: tried, and through that DC's routers if nothing is bound for it (a gateway
    /// of 1.8 or before).
    IfBound,
    No,
}

/// Publishes a `handover` step for `gateway` at `dc`.
async fn send(
    ctx: &Ctx,
    dc: &str,
    gateway: &str,
    direct: Direct,
    step: &str,
    body: &[u8],
) -> anyhow::Result<()> {
    let own = ctx.config.dc.as_str();
    let mut props = Props::stanza(RouteKind::Handover, own).str(h::HANDOVER, step);
    if step == handover::REQUEST {
        // Dropped wherever it waits longer than its asker does (a cut link): arriving after
        // the heal, it would move a session its client has resumed elsewhere since.
        props = props.expires_after_ms(u64::from(names::HANDOVER_REQUEST_TTL_MS));
    }
    let route = gateway_route(own, dc, gateway, direct != Direct::No, props);
    if !route.inter_dc() {
        ctx.publisher
            .publish(route.exchange, &route.key, route.props, body)
            .await?;
        return Ok(());
    }
    let props = meerkat_bus::lapin::BasicProperties::from(route.props);
    let (ex, key) = (route.exchange, route.key.as_str());
    match (direct, route.via_routers) {
        (Direct::IfBound, Some(dc_key)) => {
            let once = ctx
                .publisher
                .publish_routed_within(ex, key, props.clone(), body, Duration::ZERO)
                .await;
            match once {
                Err(meerkat_bus::PublishError::Unroutable) => {
                    tracing::debug!(gateway, dc, "no key of its own: through its DC's routers");
                    ctx.publisher
                        .publish_routed(ex, &dc_key, props, body)
                        .await?;
                }
                other => other?,
            }
        }
        _ => ctx.publisher.publish_routed(ex, key, props, body).await?,
    }
    Ok(())
}
