//! Control traffic. From the other DCs (queue `meerkat.inter.control.<dc>`, origin checked):
//! snapshot requests, answered with the live local sessions, and snapshots, applied to the
//! local directory. From this DC's routers (`meerkat.control`): a resync, answered by
//! re-announcing every remote session known.

use meerkat_bus::ConsumerSpec;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Instant;

use meerkat_bus::lapin::message::Delivery;
use meerkat_bus::lapin::options::BasicAckOptions;
use meerkat_wire::{topology as names, ControlEvent, DcState, InterControl};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::streams::{Action, Outcome};
use crate::{actions, publish, Ctx};

/// Consumes `meerkat.inter.control.<dc>` until `stop`.
pub async fn run_inter(ctx: Arc<Ctx>, stop: CancellationToken, consuming: Arc<AtomicUsize>) {
    let declare_ctx = ctx.clone();
    let queue = names::inter_control_queue(&ctx.config.dc);
    let spec = ConsumerSpec::new(queue.clone(), 16, &ctx.parker, move |ch| {
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
            match InterControl::from_json(&delivery.data) {
                Ok(msg) => {
                    handle_inter(&ctx, &delivery, msg).await;
                    let _ = delivery.ack(BasicAckOptions::default()).await;
                }
                // A kind a newer DC sends, or garbage: parked, for a replay after the upgrade.
                Err(e) => {
                    let why = meerkat_bus::NotForUs::unreadable(e);
                    ctx.parker.park(&queue, &delivery, &why).await;
                }
            }
        }
    })
    .await;
}

async fn handle_inter(ctx: &Arc<Ctx>, delivery: &Delivery, msg: InterControl) {
    let claimed = match &msg {
        InterControl::SnapshotRequest { from_dc } => from_dc.clone(),
        InterControl::Snapshot { origin_dc, .. } => origin_dc.clone(),
        InterControl::Data(d) => crate::data::claimed(d).to_owned(),
    };
    if let Err(refusal) = ctx
        .origins
        .check(delivery.properties.headers().as_ref(), &claimed)
    {
        tracing::warn!(%claimed, %refusal, "inter-DC control message refused");
        ctx.metrics
            .refused
            .get_or_create(&Metrics::dc(&claimed))
            .inc();
        return;
    }
    match msg {
        InterControl::Data(d) => crate::data::handle_control(ctx, d).await,
        InterControl::SnapshotRequest { from_dc } => serve_snapshot(ctx, &from_dc).await,
        InterControl::Snapshot {
            origin_dc,
            epoch,
            seq,
            sessions,
        } => {
            let count = sessions.len();
            let (outcome, todo) =
                ctx.streams
                    .lock()
                    .on_snapshot(&origin_dc, &epoch, seq, sessions, Instant::now());
            if outcome == Outcome::Applied {
                tracing::info!(origin = %origin_dc, %epoch, seq, sessions = count, "snapshot applied");
                ctx.metrics
                    .snapshots_applied
                    .get_or_create(&Metrics::dc(&origin_dc))
                    .inc();
            } else {
                tracing::debug!(origin = %origin_dc, %epoch, seq, ?outcome, "snapshot not applied");
            }
            actions::execute(ctx, &origin_dc, todo).await;
        }
    }
}

/// Sends DC `to` a snapshot (answer to its request, or news of this start), once the local view has had its warm-up after start.
pub(crate) async fn serve_snapshot(ctx: &Ctx, to: &str) {
    tokio::time::sleep_until(ctx.warm_at).await;
    let snapshot = ctx.sequencer.lock().snapshot();
    match publish::inter_control(ctx, to, &snapshot).await {
        Ok(()) => {
            if let InterControl::Snapshot { seq, sessions, .. } = &snapshot {
                tracing::info!(to, seq, sessions = sessions.len(), "snapshot served");
            }
            ctx.metrics
                .snapshots_served
                .get_or_create(&Metrics::dc(to))
                .inc();
        }
        // The requester asks again when it hears nothing.
        Err(e) => tracing::warn!(error = %e, to, "snapshot not sent"),
    }
}

/// Consumes this instance's queue on the local `meerkat.control` until `stop`.
pub async fn run_local(ctx: Arc<Ctx>, stop: CancellationToken, consuming: Arc<AtomicUsize>) {
    let queue = names::control_queue(&ctx.instance);
    let spec = ConsumerSpec::instance(
        queue.clone(),
        names::CONTROL_EXCHANGE,
        16,
        &ctx.parker,
        || async {},
    );
    meerkat_bus::consume_events(ctx.bus.clone(), spec, stop, consuming, |event| {
        let ctx = ctx.clone();
        async move {
            match event {
                ControlEvent::Resync { requested_by } if requested_by != ctx.instance => {
                    reannounce(&ctx, &requested_by).await;
                }
                ControlEvent::Resync { .. } => {}
                ControlEvent::DcStatus { dc, state, .. } => dc_status(&ctx, &dc, state).await,
                ControlEvent::GatewayDown { .. } | ControlEvent::AccountChanged { .. } => {}
            }
        }
    })
    .await;
}

/// The health service's view of another DC: purge it when down, resync when back.
async fn dc_status(ctx: &Ctx, dc: &str, state: DcState) {
    let now = Instant::now();
    let actions = match state {
        DcState::Down => ctx.streams.lock().on_dc_down(dc, now),
        DcState::Up => ctx.streams.lock().on_dc_up(dc, now),
        DcState::Suspect => Vec::new(),
    };
    if actions.is_empty() {
        return;
    }
    match state {
        DcState::Down => {
            let purged = actions
                .iter()
                .filter(|a| matches!(a, Action::Apply(_)))
                .count();
            tracing::warn!(
                dc,
                sessions = purged,
                "DC declared down: its sessions purged"
            );
            ctx.metrics
                .purged
                .get_or_create(&Metrics::dc(dc))
                .inc_by(purged as u64);
        }
        _ => tracing::info!(dc, "DC up again: asking for its snapshot"),
    }
    actions::execute(ctx, dc, actions).await;
}

/// A local router rebuilds its directory: tell it every remote session known.
async fn reannounce(ctx: &Ctx, requested_by: &str) {
    let events = ctx.streams.lock().announcements();
    tracing::debug!(
        requested_by,
        sessions = events.len(),
        "resync: announcing remote sessions"
    );
    for event in events {
        if let Err(e) = publish::local_session_event(ctx, &event).await {
            tracing::warn!(error = %e, "remote session not re-announced");
            return;
        }
    }
}
