//! This DC's own traffic: the gateways' heartbeats (`meerkat.health.<dc>`), and the DC's
//! session events (an exclusive queue on `meerkat.sessions`; on every subscription a resync is
//! requested, so the gateways announce their live sessions again).

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Instant;

use meerkat_bus::lapin::options::BasicAckOptions;
use meerkat_bus::{ConsumerSpec, NotForUs};
use meerkat_wire::{topology as names, ControlEvent, Heartbeat, SessionEvent};
use tokio_util::sync::CancellationToken;

use crate::{publish, Ctx};

/// Consumes the gateways' heartbeats until `stop`.
pub async fn run_beats(ctx: Arc<Ctx>, stop: CancellationToken) {
    let declare_ctx = ctx.clone();
    let queue = names::health_queue(&ctx.config.dc);
    let spec = ConsumerSpec {
        queue: queue.clone(),
        prefetch: 64,
        exclusive: false,
        declare: Arc::new(move |ch| {
            let ctx = declare_ctx.clone();
            Box::pin(async move {
                ctx.gateways_ear.subscribing();
                meerkat_bus::topology::declare_health_queues(&ch, &ctx.config.dc).await
            })
        }),
        parker: ctx.parker.clone(),
        drain_on_stop: false,
    };
    let subscribed = ctx.gateways_ear.subscribed.clone();
    meerkat_bus::consume(ctx.bus.clone(), spec, stop, subscribed, |delivery| {
        let ctx = ctx.clone();
        let queue = queue.clone();
        async move {
            match Heartbeat::from_json(&delivery.data) {
                Ok(hb) if hb.dc == ctx.config.dc => {
                    let loss = ctx
                        .gateways
                        .lock()
                        .on_beat(&hb.instance, &hb.epoch, Instant::now());
                    if let Some(loss) = loss {
                        let _ = ctx.losses.send(loss);
                    }
                }
                Ok(hb) => tracing::warn!(dc = %hb.dc, "heartbeat of another DC's gateway ignored"),
                // Parked: it keeps its expiry there, so a beat goes away after a few intervals.
                Err(e) => {
                    ctx.parker
                        .park(&queue, &delivery, &NotForUs::unreadable(e))
                        .await;
                    return;
                }
            }
            let _ = delivery.ack(BasicAckOptions::default()).await;
        }
    })
    .await;
}

/// Consumes the DC's session events until `stop`.
pub async fn run_sessions(ctx: Arc<Ctx>, stop: CancellationToken, consuming: Arc<AtomicUsize>) {
    // Named like a router's: one exclusive queue per listening instance.
    let queue = names::router_sessions_queue(&ctx.instance);
    let declare_ctx = ctx.clone();
    let spec = ConsumerSpec::instance(
        queue.clone(),
        names::SESSIONS_EXCHANGE,
        256,
        &ctx.parker,
        move || {
            let ctx = declare_ctx.clone();
            // Spawned: the publisher may need the connection this declare runs on.
            tokio::spawn(async move {
                let event = ControlEvent::Resync {
                    requested_by: ctx.instance.clone(),
                };
                if let Err(e) = publish::control(&ctx, &event).await {
                    tracing::warn!(error = %e, "resync request not published");
                }
            });
            async {}
        },
    );
    meerkat_bus::consume(ctx.bus.clone(), spec, stop, consuming, |delivery| {
        let ctx = ctx.clone();
        let queue = queue.clone();
        async move {
            match SessionEvent::from_json(&delivery.data) {
                Ok(event) => ctx.gateways.lock().on_session(&event, Instant::now()),
                Err(e) => {
                    ctx.parker
                        .park(&queue, &delivery, &NotForUs::unreadable(e))
                        .await;
                    return;
                }
            }
            let _ = delivery.ack(BasicAckOptions::default()).await;
        }
    })
    .await;
}

/// Consumes this instance's control queue until `stop`: a service that asks for a resync (it
/// starts with an empty view) gets the DC status view at once.
pub async fn run_control(ctx: Arc<Ctx>, stop: CancellationToken, consuming: Arc<AtomicUsize>) {
    let queue = names::control_queue(&ctx.instance);
    let spec = ConsumerSpec::instance(
        queue.clone(),
        names::CONTROL_EXCHANGE,
        16,
        &ctx.parker,
        || async {},
    );
    meerkat_bus::consume_events(ctx.bus.clone(), spec, stop, consuming, |event| {
        if let ControlEvent::Resync { requested_by } = event {
            if requested_by != ctx.instance {
                crate::watch::repeat_view(&ctx);
            }
        }
        async {}
    })
    .await;
}
