//! The shared directory and the consumer of the gateways' session events that keeps it.
//! On every (re)subscription the router asks the gateways to re-announce their sessions,
//! since its exclusive queue missed whatever happened while it was gone.
//!
//! A router that starts has an empty directory: the gateways' and the replicator's answers to
//! its first resync fill it. Until `directory_warmup_ms` after that resync was requested the
//! directory is not *warm*, and the router consumes none of the queues it routes from (route
//! partitions, inter-DC, returned): those stanzas wait in their durable queues, in order.
//! After a reconnect the directory is kept, and stays warm.

use meerkat_bus::ConsumerSpec;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lapin::options::BasicAckOptions;
use meerkat_bus::lapin;
use meerkat_wire::{topology as names, ControlEvent, SessionEvent};
use parking_lot::{RwLock, RwLockReadGuard};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::directory::{Applied, Directory};
use crate::outbox::Outbox;
use crate::Ctx;

pub struct Sessions {
    dir: RwLock<Directory>,
    /// Bumped on every change, so a stanza can wait for its sender's event.
    changed: watch::Sender<u64>,
    /// True once the first resync's answers had their time (see the module's documentation).
    warm: watch::Sender<bool>,
    /// The warm-up has begun (the first resync was requested).
    warming: AtomicBool,
}

impl Default for Sessions {
    fn default() -> Sessions {
        Sessions {
            dir: RwLock::new(Directory::new()),
            changed: watch::channel(0).0,
            warm: watch::channel(false).0,
            warming: AtomicBool::new(false),
        }
    }
}

impl Sessions {
    pub fn read(&self) -> RwLockReadGuard<'_, Directory> {
        self.dir.read()
    }

    pub fn apply(&self, event: &SessionEvent) -> Applied {
        let applied = self.dir.write().apply(event);
        if applied != Applied::Ignored {
            self.changed.send_modify(|n| *n += 1);
        }
        applied
    }

    pub fn remove_session(&self, id: Uuid) -> bool {
        let removed = self.dir.write().remove_session(id);
        self.changed.send_modify(|n| *n += 1);
        removed
    }

    /// Waits until the directory is warm.
    pub async fn until_warm(&self) {
        let mut rx = self.warm.subscribe();
        let _ = rx.wait_for(|warm| *warm).await;
    }

    /// Waits (bounded) until the directory has seen `version` of session `id`. The gateway
    /// publishes a session's event before the stanza it caused, but on another queue.
    pub async fn wait_seen(&self, id: Uuid, version: u64, limit: Duration) {
        let mut rx = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + limit;
        while !self.read().has_seen(id, version) {
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => {
                    tracing::debug!(session = %id, version, "session event not seen in time");
                    return;
                }
            }
        }
    }
}

/// Consumes this router's session-event queue until `stop`.
pub async fn run(ctx: Arc<Ctx>, stop: CancellationToken, consuming: Arc<AtomicUsize>) {
    let queue = names::router_sessions_queue(&ctx.instance);
    let declare_ctx = ctx.clone();
    let spec = ConsumerSpec::instance(
        queue.clone(),
        names::SESSIONS_EXCHANGE,
        256,
        &ctx.parker,
        move || {
            let ctx = declare_ctx.clone();
            async move {
                request_resync(&ctx).await;
                warm_up(&ctx);
            }
        },
    );
    let bus = ctx.bus.clone();
    meerkat_bus::consume(bus, spec, stop, consuming, |delivery| {
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
            let applied = ctx.sessions.apply(&event);
            ctx.metrics
                .directory_sessions
                .set(i64::try_from(ctx.sessions.read().len()).unwrap_or(i64::MAX));
            if let Applied::Replaced(old) | Applied::Lost(old) = applied {
                // A session of another DC is kicked through its DC's router.
                tracing::debug!(jid = %old.jid, session = %old.session_id, dc = %old.dc, "session replaced: kick");
                let mut out = Outbox::new(0);
                out.kick(&old);
                if let Err(e) = out.flush(&ctx).await {
                    tracing::warn!(error = %e, "conflict kick not published");
                    meerkat_bus::requeue_after(&delivery, Duration::ZERO).await;
                    return;
                }
            }
            let _ = delivery.ack(BasicAckOptions::default()).await;
        }
    })
    .await;
}

/// After the first resync request: the directory is warm `directory_warmup_ms` later.
fn warm_up(ctx: &Arc<Ctx>) {
    if ctx.sessions.warming.swap(true, Ordering::AcqRel) {
        return;
    }
    let after = Duration::from_millis(ctx.config.directory_warmup_ms);
    let ctx = ctx.clone();
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        ctx.sessions.warm.send_replace(true);
        tracing::debug!(
            warmup_ms = after.as_millis(),
            sessions = ctx.sessions.read().len(),
            "directory warm: routing"
        );
    });
}

/// Asks every gateway to announce its sessions again.
async fn request_resync(ctx: &Ctx) {
    let event = ControlEvent::Resync {
        requested_by: ctx.instance.clone(),
    };
    let props = meerkat_bus::control_event_properties(&ctx.config.dc);
    // Spawned: the publisher may need the connection this declare runs on.
    let publisher = ctx.publisher.clone();
    let body = event.to_json();
    tokio::spawn(async move {
        if let Err(e) = publisher
            .publish(names::CONTROL_EXCHANGE, "", props, &body)
            .await
        {
            tracing::warn!(error = %e, "resync request not published");
        }
    });
}
