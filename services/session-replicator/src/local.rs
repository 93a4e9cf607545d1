//! This DC's session events (queue `meerkat.sessions.replicator.<dc>`): sequence the local
//! gateways' events and send them to the other DCs; confirmed, then acked. Every
//! (re)subscription asks the local gateways to re-announce, which rebuilds the local view
//! after a start without losing a session.

use meerkat_bus::ConsumerSpec;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use meerkat_bus::lapin::options::BasicAckOptions;
use meerkat_wire::{topology as names, ControlEvent, SessionEvent};
use tokio_util::sync::CancellationToken;

use crate::{publish, Ctx};

pub async fn run(ctx: Arc<Ctx>, stop: CancellationToken, consuming: Arc<AtomicUsize>) {
    let declare_ctx = ctx.clone();
    let queue = names::replicator_sessions_queue(&ctx.config.dc);
    let spec = ConsumerSpec {
        queue: queue.clone(),
        prefetch: 256,
        exclusive: false,
        declare: Arc::new(move |ch| {
            let ctx = declare_ctx.clone();
            Box::pin(async move {
                meerkat_bus::topology::declare_replicator_queues(
                    &ch,
                    &ctx.config.dc,
                    &ctx.peer_ids(),
                )
                .await?;
                request_local_resync(&ctx);
                Ok(())
            })
        }),
        parker: ctx.parker.clone(),
        drain_on_stop: false,
    };
    meerkat_bus::consume(ctx.bus.clone(), spec, stop, consuming, |delivery| {
        let ctx = ctx.clone();
        let queue = queue.clone();
        async move {
            let event = match SessionEvent::from_json(&delivery.data) {
                Ok(e) => e,
                Err(e) => {
                    let why = meerkat_bus::NotForUs::unreadable(e);
                    ctx.parker.park(&queue, &delivery, &why).await;
                    return;
                }
            };
            // Remote sessions (our own republications) are not ours to replicate.
            let replicated = {
                let mut seq = ctx.sequencer.lock();
                let r = seq.sequence(event);
                ctx.metrics
                    .local_sessions
                    .set(i64::try_from(seq.live_sessions()).unwrap_or(i64::MAX));
                r
            };
            if let Some(r) = replicated {
                if let Err(e) = publish::replicated(&ctx, &r).await {
                    // Its seq is spent: the other DCs will see a gap and ask for a snapshot.
                    tracing::error!(error = %e, seq = r.seq, "replicated event not published");
                    meerkat_bus::requeue_after(&delivery, std::time::Duration::ZERO).await;
                    return;
                }
                ctx.metrics.replicated_out.inc();
            }
            let _ = delivery.ack(BasicAckOptions::default()).await;
        }
    })
    .await;
}

/// Asks every local gateway to announce its sessions again.
fn request_local_resync(ctx: &Arc<Ctx>) {
    let event = ControlEvent::Resync {
        requested_by: ctx.instance.clone(),
    };
    let props = meerkat_bus::control_event_properties(&ctx.config.dc);
    // Spawned: the publisher may need the connection this declare runs on.
    let publisher = ctx.publisher.clone();
    tokio::spawn(async move {
        if let Err(e) = publisher
            .publish(names::CONTROL_EXCHANGE, "", props, &event.to_json())
            .await
        {
            tracing::warn!(error = %e, "resync request not published");
        }
    });
}
