//! The detector's clock: every check tick, silence turns into state changes (peers) and losses
//! (gateways); the whole view is repeated now and then. Every change is logged, counted, and
//! told to the DC as a `DcStatus` control event.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meerkat_wire::{ControlEvent, DcState};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::CHECK_TICK;
use crate::detector::{self, Change};
use crate::metrics::{Metrics, TransitionLabel};
use crate::{publish, Ctx, Ear};

pub async fn run(ctx: Arc<Ctx>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(CHECK_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let repeat = Duration::from_millis(ctx.config.status_repeat_ms);
    let mut next_repeat = Instant::now() + repeat;
    let (mut peers_heard, mut gateways_heard) = (0, 0);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let now = Instant::now();
        match hearing(&ctx, &ctx.peers_ear, &mut peers_heard) {
            Hearing::Deaf => {}
            Hearing::Again => {
                tracing::info!("listening to the other DCs: each counts as heard now");
                ctx.detector.lock().heard_all(now);
            }
            Hearing::Listening => {
                let changes = ctx.detector.lock().tick(now);
                for c in &changes {
                    report(&ctx, c);
                }
            }
        }
        match hearing(&ctx, &ctx.gateways_ear, &mut gateways_heard) {
            Hearing::Deaf => {}
            Hearing::Again => ctx.gateways.lock().heard_all(now),
            Hearing::Listening => {
                let losses = ctx.gateways.lock().tick(now);
                for loss in losses {
                    let _ = ctx.losses.send(loss);
                }
            }
        }
        if now >= next_repeat {
            repeat_view(&ctx);
            next_repeat = now + repeat;
        }
        update_gauges(&ctx, now);
    }
}

enum Hearing {
    /// Not subscribed: silence means nothing, nobody is judged.
    Deaf,
    /// Subscribed anew since the last tick: every clock starts again.
    Again,
    Listening,
}

fn hearing(ctx: &Ctx, ear: &Ear, seen: &mut u64) -> Hearing {
    if !ctx.bus.is_connected() || !ear.listens() {
        return Hearing::Deaf;
    }
    let now = ear.subscriptions.load(Ordering::Acquire);
    if std::mem::replace(seen, now) != now {
        Hearing::Again
    } else {
        Hearing::Listening
    }
}

/// Logs, counts and announces one change.
pub fn report(ctx: &Ctx, c: &Change) {
    let silence_ms = c.silence.as_millis();
    match (c.from, c.to) {
        (_, DcState::Down) => tracing::warn!(
            dc = %c.dc, epoch = ?c.epoch, silence_ms, "DC down: no heartbeat within the bound"
        ),
        (_, DcState::Suspect) => {
            tracing::warn!(dc = %c.dc, silence_ms, "DC suspect: heartbeats late")
        }
        (DcState::Up, DcState::Up) if c.previous_epoch.is_none() => {
            tracing::info!(dc = %c.dc, epoch = ?c.epoch, "DC heard: up")
        }
        (DcState::Up, DcState::Up) => tracing::info!(
            dc = %c.dc, epoch = ?c.epoch, previous = ?c.previous_epoch, "DC up under a new epoch"
        ),
        (from, DcState::Up) => tracing::info!(
            dc = %c.dc, epoch = ?c.epoch, was = from.as_str(), silence_ms, "DC up again"
        ),
    }
    if c.from != c.to {
        ctx.metrics
            .transitions
            .get_or_create(&TransitionLabel {
                dc: c.dc.clone(),
                state: c.to.as_str().to_owned(),
            })
            .inc();
    }
    if c.to == DcState::Down {
        ctx.metrics
            .detection_seconds
            .get_or_create(&Metrics::dc(&c.dc))
            .set(c.silence.as_secs_f64());
    }
    ctx.metrics
        .peer_state
        .get_or_create(&Metrics::dc(&c.dc))
        .set(detector::gauge(c.to));
    announce(ctx, &c.dc, c.to, c.epoch.clone());
}

/// The state of every peer whose state is known, again.
pub fn repeat_view(ctx: &Ctx) {
    let known: Vec<(String, DcState, Option<String>)> = ctx
        .detector
        .lock()
        .known()
        .map(|(dc, v)| (dc.clone(), v.state, v.epoch.clone()))
        .collect();
    for (dc, state, epoch) in known {
        announce(ctx, &dc, state, epoch);
    }
}

fn announce(ctx: &Ctx, dc: &str, state: DcState, epoch: Option<String>) {
    let _ = ctx.announce.send(ControlEvent::DcStatus {
        dc: dc.to_owned(),
        state,
        epoch,
        reported_by: ctx.instance.clone(),
    });
}

/// Publishes the announcements in the order made, until `stop`.
pub async fn announcer(
    ctx: Arc<Ctx>,
    mut events: mpsc::UnboundedReceiver<ControlEvent>,
    stop: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            _ = stop.cancelled() => return,
        };
        let Some(event) = event else { return };
        if let Err(e) = publish::control(&ctx, &event).await {
            tracing::error!(error = %e, ?event, "DC status not published");
        }
    }
}

fn update_gauges(ctx: &Ctx, now: Instant) {
    for (dc, v) in ctx.detector.lock().peers() {
        let label = Metrics::dc(dc);
        ctx.metrics
            .heartbeat_age
            .get_or_create(&label)
            .set(now.saturating_duration_since(v.last_heard).as_secs_f64());
        ctx.metrics
            .peer_state
            .get_or_create(&label)
            .set(detector::gauge(v.state));
    }
    let tracked = ctx.gateways.lock().count();
    ctx.metrics
        .gateways_tracked
        .set(i64::try_from(tracked).unwrap_or(i64::MAX));
}
