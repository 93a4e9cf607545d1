//! The other DCs' session streams (queue `meerkat.inter.sessions.<dc>`): check where each
//! event came from, then apply it in sequence to the local `meerkat.sessions`, or hold the
//! stream and ask for a snapshot.

use meerkat_bus::ConsumerSpec;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Instant;

use meerkat_bus::lapin::options::BasicAckOptions;
use meerkat_wire::{topology as names, ReplicatedEvent};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::streams::Outcome;
use crate::{actions, Ctx};

pub async fn run(ctx: Arc<Ctx>, stop: CancellationToken, consuming: Arc<AtomicUsize>) {
    let declare_ctx = ctx.clone();
    let queue = names::inter_sessions_queue(&ctx.config.dc);
    let spec = ConsumerSpec::new(queue.clone(), 256, &ctx.parker, move |ch| {
        let ctx = declare_ctx.clone();
        async move {
            meerkat_bus::topology::declare_replicator_queues(&ch, &ctx.config.dc, &ctx.peer_ids())
                .await
        }
    });
    meerkat_bus::consume(ctx.bus.clone(), spec, stop, consuming, |delivery| {
        let ctx = ctx.clone();
        let queue = queue.clone();
        async move {
            match handle(&ctx, &delivery).await {
                Ok(()) => {
                    let _ = delivery.ack(BasicAckOptions::default()).await;
                }
                Err(why) => ctx.parker.park(&queue, &delivery, &why).await,
            }
        }
    })
    .await;
}

/// `Err` for an event this version cannot read (parked by the caller).
async fn handle(
    ctx: &Ctx,
    delivery: &meerkat_bus::lapin::message::Delivery,
) -> Result<(), meerkat_bus::NotForUs> {
    let ev =
        ReplicatedEvent::from_json(&delivery.data).map_err(meerkat_bus::NotForUs::unreadable)?;
    // The topic exchange also brings this DC's own stream back to it.
    if ev.origin_dc == ctx.config.dc {
        return Ok(());
    }
    if let Err(refusal) = ctx
        .origins
        .check(delivery.properties.headers().as_ref(), &ev.origin_dc)
    {
        tracing::warn!(origin = %ev.origin_dc, seq = ev.seq, %refusal, "replicated event refused");
        ctx.metrics
            .refused
            .get_or_create(&Metrics::dc(&ev.origin_dc))
            .inc();
        return Ok(());
    }
    let origin = ev.origin_dc.clone();
    let (seq, epoch) = (ev.seq, ev.epoch.clone());
    let (outcome, todo) = ctx.streams.lock().on_event(ev, Instant::now());
    match outcome {
        Outcome::Applied => {
            ctx.metrics
                .replicated_in
                .get_or_create(&Metrics::dc(&origin))
                .inc();
        }
        Outcome::Gap => {
            tracing::info!(%origin, %epoch, seq, "gap or new epoch: asking for a snapshot");
            ctx.metrics.gaps.get_or_create(&Metrics::dc(&origin)).inc();
        }
        Outcome::UnknownDc => {
            tracing::warn!(%origin, "event from a DC that is not a peer dropped");
        }
        Outcome::Duplicate | Outcome::Stale | Outcome::Buffered => {
            tracing::debug!(%origin, %epoch, seq, ?outcome, "event not applied");
        }
    }
    actions::execute(ctx, &origin, todo).await;
    Ok(())
}
