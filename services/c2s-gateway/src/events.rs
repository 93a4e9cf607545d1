//! Session events to the routers, and the control requests from them.

use std::sync::Arc;

use meerkat_bus::lapin;
use meerkat_bus::{spawn_consumer, ConsumerSpec, NotForUs, Props};
use meerkat_wire::{
    headers as h, topology as names, ControlEvent, SessionEvent, SessionEventKind, SessionInfo,
    WIRE_VERSION,
};

use crate::registry::Outbound;
use crate::Ctx;

/// Publishes one session event and waits for the broker's confirm.
pub async fn publish(ctx: &Ctx, kind: SessionEventKind, info: &SessionInfo) -> bool {
    let event = SessionEvent {
        v: WIRE_VERSION,
        kind,
        epoch: ctx.epoch.clone(),
        session: info.clone(),
    };
    let props = Props::event(&ctx.config.dc).str(h::ORIGIN_EPOCH, &ctx.epoch);
    match ctx
        .publisher
        .publish(names::SESSIONS_EXCHANGE, &info.dc, props, &event.to_json())
        .await
    {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, jid = %info.jid, "session event not published");
            false
        }
    }
}

/// Answers resync requests by asking every session to announce itself again.
pub async fn run_control(ctx: Arc<Ctx>) {
    let queue = names::control_queue(&ctx.instance);
    let spec = ConsumerSpec::instance(
        queue.clone(),
        names::CONTROL_EXCHANGE,
        16,
        &ctx.parker,
        || async {},
    );
    let handler_ctx = ctx.clone();
    let task = spawn_consumer(ctx.bus.clone(), spec, move |delivery| {
        let ctx = handler_ctx.clone();
        let queue = queue.clone();
        async move {
            match ControlEvent::from_json(&delivery.data) {
                Ok(ControlEvent::Resync { requested_by }) => {
                    tracing::debug!(
                        requested_by,
                        sessions = ctx.registry.len(),
                        "resync: announcing sessions"
                    );
                    for tx in ctx.registry.all() {
                        tx.tell(Outbound::Announce);
                    }
                }
                Ok(ControlEvent::AccountChanged { username, .. }) => {
                    crate::accounts::end_stale(&ctx, &username).await;
                }
                // DC status and gateway loss are the routers' and replicator's business.
                Ok(ControlEvent::DcStatus { .. } | ControlEvent::GatewayDown { .. }) => {}
                Err(e) => {
                    ctx.parker
                        .park(&queue, &delivery, &NotForUs::unreadable(e))
                        .await;
                    return;
                }
            }
            let _ = delivery
                .ack(lapin::options::BasicAckOptions::default())
                .await;
        }
    });
    let _ = task.await;
}
