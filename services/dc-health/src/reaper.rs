//! What happens when a gateway life is over: for each of its sessions, unavailable presence to
//! the routers (the contacts are told) and the session's close (the directories drop it, the
//! replicator tells the other DCs); then `GatewayDown` on the control exchange; then whatever
//! waits in the gateway's delivery queue goes back to the routers as bounces, so nothing
//! queued for those sessions is lost.

use std::sync::Arc;
use std::time::Duration;

use meerkat_bus::lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicNackOptions, QueueDeclareOptions,
};
use meerkat_bus::lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use meerkat_bus::lapin::types::FieldTable;
use meerkat_bus::{lapin, HeaderExt};
use meerkat_wire::{headers as h, topology as names, ControlEvent};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::gateways::{Loss, Why};
use crate::{publish, Ctx};

/// How often a dead gateway's queue is looked at again (routers that have not yet applied the
/// closes still deliver there), and for how long.
const DRAIN_EVERY: Duration = Duration::from_secs(2);
const DRAIN_FOR: Duration = Duration::from_secs(30);

/// Handles the losses in the order they come, until `stop`.
pub async fn run(
    ctx: Arc<Ctx>,
    mut losses: mpsc::UnboundedReceiver<Loss>,
    stop: CancellationToken,
) {
    loop {
        let loss = tokio::select! {
            l = losses.recv() => l,
            _ = stop.cancelled() => return,
        };
        let Some(loss) = loss else { return };
        // Stanzas for sessions made from now on belong to a later life.
        let declared = Uuid::now_v7();
        end_life(&ctx, &loss).await;
        let ctx = ctx.clone();
        let stop = stop.clone();
        tokio::spawn(async move { drain(&ctx, &loss.instance, declared, &stop).await });
    }
}

async fn end_life(ctx: &Ctx, loss: &Loss) {
    match &loss.why {
        Why::Silent(silence) => tracing::warn!(
            gateway = %loss.instance, epoch = %loss.epoch, silent_ms = silence.as_millis(),
            sessions = loss.sessions.len(), "gateway down: silent; closing its sessions"
        ),
        Why::Restarted { new_epoch } => tracing::warn!(
            gateway = %loss.instance, epoch = %loss.epoch, %new_epoch,
            sessions = loss.sessions.len(), "gateway restarted; closing the sessions of its previous life"
        ),
    }
    ctx.metrics.gateways_down.inc();
    for t in &loss.sessions {
        if t.info.available {
            if let Err(e) = publish::unavailable(ctx, t).await {
                tracing::error!(error = %e, jid = %t.info.jid, "unavailable presence not published");
            }
        }
        match publish::close(ctx, t).await {
            Ok(()) => {
                ctx.metrics.gateway_sessions_closed.inc();
                tracing::debug!(jid = %t.info.jid, session = %t.info.session_id, "session closed");
            }
            Err(e) => tracing::error!(error = %e, jid = %t.info.jid, "session close not published"),
        }
    }
    let event = ControlEvent::GatewayDown {
        instance: loss.instance.clone(),
        epoch: loss.epoch.clone(),
        reported_by: ctx.instance.clone(),
    };
    if let Err(e) = publish::control(ctx, &event).await {
        tracing::error!(error = %e, gateway = %loss.instance, "GatewayDown not published");
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Drained {
    /// No such queue (expired, or never made).
    Gone,
    /// Someone consumes it: a later life of the gateway, which bounces what is not its own.
    Consumed,
    /// Emptied, after taking this many.
    Emptied(u64),
}

/// Empties the gateway's queue now and again for a while, as long as nobody consumes it.
async fn drain(ctx: &Ctx, instance: &str, declared: Uuid, stop: &CancellationToken) {
    let queue = names::gateway_queue(instance);
    let until = tokio::time::Instant::now() + DRAIN_FOR;
    let mut total = 0;
    loop {
        match drain_once(ctx, &queue, declared).await {
            Ok(Drained::Emptied(n)) => total += n,
            Ok(Drained::Gone) | Ok(Drained::Consumed) => break,
            Err(e) => tracing::warn!(%queue, error = %e, "dead gateway's queue not drained"),
        }
        if tokio::time::Instant::now() >= until {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(DRAIN_EVERY) => {}
            _ = stop.cancelled() => break,
        }
    }
    if total > 0 {
        tracing::info!(%queue, stanzas = total, "dead gateway's queue drained into the routers");
    }
}

async fn drain_once(ctx: &Ctx, queue: &str, declared: Uuid) -> Result<Drained, lapin::Error> {
    let Some(conn) = ctx.bus.connected().await else {
        return Ok(Drained::Gone);
    };
    let ch = conn.create_channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let q = match ch
        .queue_declare(queue, passive, FieldTable::default())
        .await
    {
        Ok(q) => q,
        Err(lapin::Error::ProtocolError(e))
            if *e.kind() == AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND) =>
        {
            return Ok(Drained::Gone);
        }
        Err(e) => return Err(e),
    };
    if q.consumer_count() > 0 {
        let _ = ch.close(200, "consumed").await;
        return Ok(Drained::Consumed);
    }
    let mut taken = 0;
    let outcome = loop {
        let Some(msg) = ch
            .basic_get(queue, BasicGetOptions { no_ack: false })
            .await?
        else {
            break Drained::Emptied(taken);
        };
        let delivery = msg.delivery;
        let headers = delivery.properties.headers().as_ref();
        let session = headers
            .get_str(h::SESSION)
            .and_then(|s| Uuid::parse_str(&s).ok());
        if session.is_some_and(|s| s > declared) {
            // A session of a later life under the same instance id: its gateway takes it.
            delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                })
                .await?;
            break Drained::Consumed;
        }
        if meerkat_bus::wire::kind(headers) == Ok(meerkat_wire::RouteKind::Conflict) {
            // "Close that session": it is closed already.
            delivery.ack(BasicAckOptions::default()).await?;
            continue;
        }
        let hops = headers
            .get_u64(h::HOPS)
            .unwrap_or(publish::HOPS)
            .saturating_sub(1);
        let id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str().to_owned());
        // Back to the routers as the gateway itself bounces what it cannot hand to a session:
        // a stanza, or the stanzas a session's old holder sent in its `moved` (wire 1.8). The
        // other handover steps carry none.
        let stanzas = match meerkat_bus::wire::kind(headers) {
            Ok(meerkat_wire::RouteKind::Handover) => handover_stanzas(headers, &delivery.data, id),
            _ => vec![(delivery.data.clone(), id)],
        };
        let mut refused = None;
        for (data, id) in &stanzas {
            if let Err(e) = ctx
                .publisher
                .bounce(
                    &ctx.config.dc,
                    &ctx.epoch,
                    data,
                    session,
                    id.as_deref(),
                    hops,
                )
                .await
            {
                refused = Some(e);
                break;
            }
        }
        match refused {
            None => {
                delivery.ack(BasicAckOptions::default()).await?;
                let n = u64::try_from(stanzas.len()).unwrap_or(u64::MAX);
                taken += n;
                ctx.metrics.gateway_stanzas_rerouted.inc_by(n);
            }
            Some(e) => {
                // What went already goes again with the rest: the routers drop a bounce they
                // saw (its id).
                tracing::warn!(error = %e, "stanza of a dead gateway not re-routed; left queued");
                delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..BasicNackOptions::default()
                    })
                    .await?;
                break Drained::Emptied(taken);
            }
        }
    };
    let _ = ch.close(200, "drained").await;
    Ok(outcome)
}

/// The stanzas a `handover` message in a dead gateway's queue carries, with their ids: a
/// `forward`'s one, a `moved`'s `kept` (what a session's old holder handed to this gateway,
/// which died before its client had them); none in the other steps.
fn handover_stanzas(
    headers: Option<&FieldTable>,
    data: &[u8],
    id: Option<String>,
) -> Vec<(Vec<u8>, Option<String>)> {
    use meerkat_wire::handover as step;
    match headers.get_str(h::HANDOVER).as_deref() {
        Some(step::FORWARD) => vec![(data.to_vec(), id)],
        Some(step::MOVED) => serde_json::from_slice::<step::Moved>(data)
            .map(|m| {
                m.kept
                    .into_iter()
                    .map(|k| (k.xml.into_bytes(), k.id))
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}
