//! The other DCs' heartbeats (`meerkat.inter.health.<dc>`): each is checked to have come
//! through the federation link of the DC it claims, then fed to the detector.

use std::sync::Arc;
use std::time::Instant;

use meerkat_bus::lapin::message::Delivery;
use meerkat_bus::lapin::options::BasicAckOptions;
use meerkat_bus::{ConsumerSpec, NotForUs};
use meerkat_wire::{topology as names, Heartbeat};
use tokio_util::sync::CancellationToken;

use crate::detector::Heard;
use crate::metrics::Metrics;
use crate::{watch, Ctx};

pub async fn run(ctx: Arc<Ctx>, stop: CancellationToken) {
    let declare_ctx = ctx.clone();
    let queue = names::inter_health_queue(&ctx.config.dc);
    let spec = ConsumerSpec {
        queue: queue.clone(),
        prefetch: 64,
        exclusive: false,
        declare: Arc::new(move |ch| {
            let ctx = declare_ctx.clone();
            Box::pin(async move {
                ctx.peers_ear.subscribing();
                meerkat_bus::topology::declare_health_queues(&ch, &ctx.config.dc).await
            })
        }),
        parker: ctx.parker.clone(),
        drain_on_stop: false,
    };
    let subscribed = ctx.peers_ear.subscribed.clone();
    meerkat_bus::consume(ctx.bus.clone(), spec, stop, subscribed, |delivery| {
        let ctx = ctx.clone();
        let queue = queue.clone();
        async move {
            match Heartbeat::from_json(&delivery.data) {
                Ok(hb) => {
                    handle(&ctx, &delivery, hb);
                    let _ = delivery.ack(BasicAckOptions::default()).await;
                }
                // Parked: it keeps its expiry there, so a beat goes away after a few intervals.
                Err(e) => {
                    ctx.parker
                        .park(&queue, &delivery, &NotForUs::unreadable(e))
                        .await
                }
            }
        }
    })
    .await;
}

fn handle(ctx: &Ctx, delivery: &Delivery, hb: Heartbeat) {
    // The exchange carries this DC's own beats too (it binds `#`).
    if hb.dc == ctx.config.dc {
        return;
    }
    if let Err(refusal) = ctx
        .origins
        .check(delivery.properties.headers().as_ref(), &hb.dc)
    {
        tracing::warn!(claimed = %hb.dc, %refusal, "heartbeat refused");
        ctx.metrics
            .heartbeats_refused
            .get_or_create(&Metrics::dc(&hb.dc))
            .inc();
        return;
    }
    let heard = ctx.detector.lock().on_beat(&hb, Instant::now());
    match heard {
        Heard::Fresh(change) => {
            ctx.metrics
                .heartbeats_received
                .get_or_create(&Metrics::dc(&hb.dc))
                .inc();
            if let Some(c) = change {
                watch::report(ctx, &c);
            }
        }
        Heard::Stale => {
            tracing::debug!(dc = %hb.dc, epoch = %hb.epoch, seq = hb.seq, "stale heartbeat ignored")
        }
        Heard::Unknown => tracing::warn!(dc = %hb.dc, "heartbeat of a DC that is not a peer"),
    }
}
