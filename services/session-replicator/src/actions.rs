//! Carries out what the stream state decided: applies events to the local directory, sends
//! snapshot requests. A remote event that cannot be applied puts its stream on hold and asks
//! for a snapshot, since its seq is already counted as seen.

use std::time::Instant;

use meerkat_wire::InterControl;

use crate::metrics::Metrics;
use crate::streams::Action;
use crate::{publish, Ctx};

pub async fn execute(ctx: &Ctx, origin: &str, actions: Vec<Action>) {
    for action in actions {
        match action {
            Action::Apply(event) => {
                if let Err(e) = publish::local_session_event(ctx, &event).await {
                    tracing::error!(error = %e, %origin, "remote session event not applied");
                    let again = ctx.streams.lock().invalidate(origin, Instant::now());
                    if again {
                        request_snapshot(ctx, origin).await;
                    }
                    return;
                }
            }
            Action::RequestSnapshot(dc) => request_snapshot(ctx, &dc).await,
            Action::Unavailable(info) => {
                if let Err(e) = publish::local_presence(ctx, &info, false).await {
                    // The session is purged all the same.
                    tracing::warn!(error = %e, jid = %info.jid, "unavailable presence of a purged session not sent");
                }
            }
            Action::Available(info) => {
                if let Err(e) = publish::local_presence(ctx, &info, true).await {
                    tracing::warn!(error = %e, jid = %info.jid, "presence of a returning session not sent");
                }
            }
        }
    }
    update_gauges(ctx);
}

pub async fn request_snapshot(ctx: &Ctx, dc: &str) {
    let msg = InterControl::SnapshotRequest {
        from_dc: ctx.config.dc.clone(),
    };
    match publish::inter_control(ctx, dc, &msg).await {
        Ok(()) => {
            ctx.metrics
                .snapshots_requested
                .get_or_create(&Metrics::dc(dc))
                .inc();
        }
        // The stream stays on hold; the periodic retry asks again.
        Err(e) => tracing::warn!(error = %e, dc, "snapshot request not sent"),
    }
}

pub fn update_gauges(ctx: &Ctx) {
    let streams = ctx.streams.lock();
    for dc in streams.peers() {
        let n = i64::try_from(streams.known(dc)).unwrap_or(i64::MAX);
        ctx.metrics
            .remote_sessions
            .get_or_create(&Metrics::dc(dc))
            .set(n);
    }
}
