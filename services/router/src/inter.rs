//! The DC's inbound stanzas from other DCs: `meerkat.inter.stanzas.<dc>` (durable, single
//! active consumer across the DC's routers, so each sender's stanzas keep their order). Each
//! envelope is unwrapped and republished into the local route exchange with routing key =
//! the sender's bare JID (the sender's partition, so per-sender order holds from there on),
//! `x-meerkat-kind=remote`, keeping the target session, hops and origin; the partition then
//! delivers it or re-resolves it (partition.rs). A conflict kick is turned into a local kick
//! straight away. Acked after the republish is confirmed; envelope ids already handled are
//! dropped (federation is at-least-once).

use meerkat_bus::ConsumerSpec;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use lapin::types::FieldTable;
use meerkat_bus::{lapin, HeaderExt, NotForUs, Props};
use meerkat_wire::{envelope, headers as h, topology as names, RouteKind};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::metrics::ReasonLabel;
use crate::outbox::{Outbox, Target};
use crate::{jids, Ctx};
use meerkat_bus::origin::{Origins, Refusal};
use meerkat_bus::Dedup;

const PREFETCH: u16 = 64;

/// Consumes this DC's inter-DC stanza queue until `stop`.
pub async fn run(ctx: Arc<Ctx>, stop: CancellationToken, consuming: Arc<AtomicUsize>) {
    let dc = ctx.config.dc.clone();
    let queue = names::inter_stanzas_queue(&dc);
    let declare_ctx = ctx.clone();
    let spec = ConsumerSpec {
        queue: queue.clone(),
        prefetch: PREFETCH,
        exclusive: false,
        declare: Arc::new(move |ch| {
            let dc = dc.clone();
            let ctx = declare_ctx.clone();
            Box::pin(async move {
                meerkat_bus::topology::declare_route_partitions(&ch).await?;
                meerkat_bus::topology::declare_inter_stanzas_queue(&ch, &dc).await?;
                // Declared at once (its binding must reach the other DCs); consumed once the
                // directory is warm.
                ctx.sessions.until_warm().await;
                Ok(())
            })
        }),
        parker: ctx.parker.clone(),
        drain_on_stop: true,
    };
    let seen = Arc::new(Mutex::new(Dedup::new(65_536)));
    // Stanzas wait for their data and are forwarded by one task of their own, batch after
    // batch in queue order, so that the consumer goes on taking what comes meanwhile: a
    // handover step behind them is forwarded at once (a client waits for its `<resumed/>`).
    // What the task holds is bounded by the prefetch (unacked).
    let (to_worker, from_consumer) = tokio::sync::mpsc::unbounded_channel();
    let worker = tokio::spawn(forward_stanzas(
        ctx.clone(),
        from_consumer,
        seen.clone(),
        AppliedView::default(),
    ));
    let bus = ctx.bus.clone();
    meerkat_bus::consume_batches(bus, spec, usize::from(PREFETCH), stop, consuming, |batch| {
        let ctx = ctx.clone();
        let seen = seen.clone();
        let queue = queue.clone();
        let to_worker = to_worker.clone();
        async move {
            let stanzas = handle_batch(&ctx, &queue, batch, &seen).await;
            if !stanzas.is_empty() {
                // The task ends only when every sender is gone, after this loop.
                let _ = to_worker.send(stanzas);
            }
        }
    })
    .await;
    // What the task still holds is forwarded before the router stops.
    drop(to_worker);
    let _ = worker.await;
}

/// A delivery of the inter-DC queue with its envelope id and when the consumer took it.
type Arrived = (Delivery, Option<String>, tokio::time::Instant);

/// Forwards each batch of stanzas handed over by the consumer, in order (see
/// [`forward_batch`]), until the consumer is gone.
async fn forward_stanzas(
    ctx: Arc<Ctx>,
    mut batches: tokio::sync::mpsc::UnboundedReceiver<Vec<Arrived>>,
    seen: Arc<Mutex<Dedup>>,
    applied: AppliedView,
) {
    let applied = Mutex::new(applied);
    while let Some(batch) = batches.recv().await {
        forward_batch(&ctx, batch, &seen, &applied).await;
    }
}

/// Consumes this DC's queue of stanzas returned by the dead-letter exchange of the federation
/// queues towards other DCs (they expired there: the other DC is dead, cut off or too slow),
/// until `stop`. Each is routed again as its sender's (`x-meerkat-kind=returned`): to the
/// target session if its DC is still believed up (it goes back into the queue), else by
/// RFC 6121 as if the user were offline there — offline storage, other resources, an error.
pub async fn run_returned(ctx: Arc<Ctx>, stop: CancellationToken, consuming: Arc<AtomicUsize>) {
    let dc = ctx.config.dc.clone();
    let queue = names::inter_returned_queue(&dc);
    let declare_ctx = ctx.clone();
    let spec = ConsumerSpec {
        queue: queue.clone(),
        prefetch: PREFETCH,
        exclusive: false,
        declare: Arc::new(move |ch| {
            let dc = dc.clone();
            let ctx = declare_ctx.clone();
            Box::pin(async move {
                meerkat_bus::topology::declare_route_partitions(&ch).await?;
                meerkat_bus::topology::declare_returned_queue(&ch, &dc).await?;
                ctx.sessions.until_warm().await;
                Ok(())
            })
        }),
        parker: ctx.parker.clone(),
        drain_on_stop: true,
    };
    let bus = ctx.bus.clone();
    meerkat_bus::consume(bus, spec, stop, consuming, |delivery| {
        let ctx = ctx.clone();
        let queue = queue.clone();
        async move {
            let id = delivery
                .properties
                .message_id()
                .as_ref()
                .map(|s| s.as_str().to_owned());
            let headers = delivery.properties.headers().as_ref();
            let result = match read(&delivery.data, headers) {
                Arrival::Stanza(r) if r.sender.is_some() => {
                    ctx.metrics.returned.inc();
                    let hops = r.hops.saturating_add(1).min(ROUTE_HOPS);
                    let r = RouteIn {
                        hops,
                        origin_dc: Some(ctx.config.dc.clone()),
                        ..r
                    };
                    match r.recipients.clone() {
                        // A fan-out: each copy again, as if it had been sent alone.
                        Some(list) => return_copies(&ctx, &r, &list).await,
                        None => {
                            republish(&ctx, &r, RouteKind::Returned, id.as_deref(), false).await
                        }
                    }
                }
                Arrival::Park(why) => {
                    ctx.parker.park(&queue, &delivery, &why).await;
                    return;
                }
                // A kick for a session of a DC that does not answer, or a server-made stanza
                // (a roster push) for one: moot once that DC is declared down.
                other => {
                    tracing::debug!(?other, "returned message without a sender dropped");
                    Ok(())
                }
            };
            match result {
                Ok(()) => {
                    let _ = delivery.ack(BasicAckOptions::default()).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "returned stanza not routed again; requeued");
                    meerkat_bus::requeue_after(&delivery, RETRY_PAUSE).await;
                }
            }
        }
    })
    .await;
}

/// A fan-out or a bundle that came back from a DC that did not take it: each copy routed again
/// as a returned stanza of its own (its `to`, its target session, its id). Unreadable
/// recipients: nothing to route (logged).
async fn return_copies(ctx: &Ctx, r: &RouteIn, recipients: &str) -> anyhow::Result<()> {
    let copies = match meerkat_wire::fanout::decode(recipients) {
        Ok(c) => c,
        // A room's archive copy: nobody to route it to.
        Err(meerkat_wire::fanout::FanoutError::Empty) => return Ok(()),
        Err(e) => {
            tracing::warn!(error = %e, "returned fan-out with unreadable recipients dropped");
            return Ok(());
        }
    };
    let stanza = meerkat_xmpp::Element::parse(&r.body)?;
    let pairs = if stanza.is("bundle", meerkat_wire::headers::ROUTE_NS) {
        match meerkat_wire::fanout::unbundle(r.body.as_bytes(), copies) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "returned bundle unreadable: dropped");
                return Ok(());
            }
        }
    } else {
        copies
            .into_iter()
            .map(|c| {
                let mut el = stanza.clone();
                el.set_attr("to", c.to.clone());
                (c, el)
            })
            .collect()
    };
    for (c, el) in pairs {
        let copy = RouteIn {
            body: el.to_xml(),
            target: Some(c.session),
            recipients: None,
            ..r.clone()
        };
        republish(ctx, &copy, RouteKind::Returned, Some(&c.id), false).await?;
    }
    Ok(())
}

/// Hops a stanza starts with (as the gateways stamp it).
const ROUTE_HOPS: u64 = 3;

/// How long a stanza from another DC may wait for the data its sender's DC wrote before it.
const DATA_WAIT: Duration = Duration::from_secs(3);

/// How long a delivery that could not be handled waits before it goes back to the queue.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// What is known here of how far each origin's data stream has been applied.
#[derive(Default)]
struct AppliedView {
    /// origin → (epoch, seq) applied, as last read.
    applied: std::collections::HashMap<String, (String, i64)>,
    /// origin → the applied seq at which a wait last timed out: while replication makes no
    /// progress, later stanzas do not wait again.
    stalled: std::collections::HashMap<String, i64>,
}

/// Holds a stanza until this DC has applied the data its origin wrote before sending it
/// (headers `x-meerkat-data-epoch`/`-seq`), until `DATA_WAIT` after it was taken from the
/// queue (`taken`); nothing applied from the origin yet counts as behind. Without those
/// headers, for another life of the origin's database, or while replication is stalled: no
/// wait. The bound counts from `taken`, not from the start of this wait: stanzas wait one
/// after another, and a wait each just under the bound, replication falling further behind
/// all the while, used to add up to a delay without bound. Returns whether this DC has
/// applied that data (not when the stanza names none, is of another life, or the wait gave up).
async fn wait_for_data(
    ctx: &Ctx,
    headers: Option<&FieldTable>,
    view: &Mutex<AppliedView>,
    taken: tokio::time::Instant,
) -> bool {
    let (Some(origin), Some(epoch), Some(seq)) = (
        headers.get_str(h::ORIGIN_DC),
        headers.get_str(h::DATA_EPOCH),
        headers.get_u64(h::DATA_SEQ),
    ) else {
        return false;
    };
    let seq = i64::try_from(seq).unwrap_or(i64::MAX);
    // Whether to wait no longer, and whether the data is here.
    let caught_up = |view: &AppliedView| match view.applied.get(&origin) {
        Some((e, s)) if *e == epoch && *s >= seq => Some(true),
        Some((e, s)) if *e != epoch || view.stalled.get(&origin) == Some(s) => Some(false),
        _ => None,
    };
    if let Some(here) = caught_up(&view.lock()) {
        return here;
    }
    let deadline = taken + DATA_WAIT;
    loop {
        match ctx.store.applied().await {
            Ok(all) => {
                // Nothing applied from that origin yet (a fresh mesh, a DC just added): as
                // far behind as can be in the stanza's own epoch. Returning at once here let
                // a subscription answer at this DC overtake the request it answers, written
                // a moment before at the origin, right after a fresh start.
                let (a_epoch, a_seq) = all
                    .get(&origin)
                    .map_or((epoch.clone(), 0), |a| (a.epoch.clone(), a.seq));
                let mut v = view.lock();
                v.applied.insert(origin.clone(), (a_epoch, a_seq));
                if let Some(here) = caught_up(&v) {
                    return here;
                }
                if tokio::time::Instant::now() >= deadline {
                    tracing::warn!(%origin, want = seq, have = a_seq, "data replication behind: routing without waiting");
                    v.stalled.insert(origin.clone(), a_seq);
                    return false;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "applied positions unreadable");
                return false;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Takes a batch of envelopes (those that piled up while the previous batch was in flight):
/// drops what was seen or is not believed, parks unknown kinds, forwards handover steps at
/// once, and returns the stanzas, in queue order, for [`forward_batch`].
async fn handle_batch(
    ctx: &Ctx,
    queue: &str,
    batch: Vec<Delivery>,
    seen: &Mutex<Dedup>,
) -> Vec<Arrived> {
    let (mut steps, mut stanzas) = (Vec::new(), Vec::with_capacity(batch.len()));
    let batch_len = batch.len();
    let taken = tokio::time::Instant::now();
    for delivery in batch {
        let id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.as_str().to_owned());
        if id.as_deref().is_some_and(|id| seen.lock().contains(id)) {
            tracing::debug!(message = ?id, "from another DC again: dropped");
            let _ = delivery.ack(BasicAckOptions::default()).await;
            continue;
        }
        tracing::debug!(message = ?id, batch = batch_len, "from another DC");
        if let Err(refusal) = check_origin(&ctx.origins, delivery.properties.headers().as_ref()) {
            tracing::warn!(%refusal, message_id = id.as_deref().unwrap_or(""), "message from another DC refused: not from the DC it claims");
            ctx.metrics
                .inter_refused
                .get_or_create(&ReasonLabel {
                    reason: refusal.reason(),
                })
                .inc();
            let _ = delivery.ack(BasicAckOptions::default()).await;
            continue;
        }
        match meerkat_bus::wire::kind(delivery.properties.headers().as_ref()) {
            Err(unknown) => {
                ctx.parker.park(queue, &delivery, &unknown.into()).await;
                continue;
            }
            // A step of a session moving between gateways reads no data its DC wrote, and
            // must not wait behind stanzas that wait for theirs (a client is waiting for its
            // `<resumed/>`): on at once. Its steps keep their order among themselves, and the
            // new holder holds what reaches it directly until the old one's fence.
            Ok(RouteKind::Handover) => {
                steps.push((delivery, id));
                continue;
            }
            Ok(_) => {}
        }
        stanzas.push((delivery, id, taken));
    }
    // The steps first, together: started in queue order on one channel, so each session's
    // steps keep theirs, and a burst of resumptions costs one round of confirms.
    let steps = steps.into_iter().map(|(delivery, id)| async move {
        handover_now(ctx, delivery, id.as_deref(), seen).await
    });
    futures::future::join_all(steps).await;
    stanzas
}

/// Forwards a batch of stanzas: each waits in turn for its data, then all are republished at
/// once — started in queue order on one channel, so the broker keeps that order — and acked
/// as their confirms come back. One stanza at a time would cap this DC's inbound rate at one
/// per confirm round trip.
async fn forward_batch(
    ctx: &Ctx,
    stanzas: Vec<Arrived>,
    seen: &Mutex<Dedup>,
    applied: &Mutex<AppliedView>,
) {
    let mut todo = Vec::with_capacity(stanzas.len());
    for (delivery, id, taken) in stanzas {
        let here = wait_for_data(ctx, delivery.properties.headers().as_ref(), applied, taken).await;
        todo.push((delivery, id, here));
    }
    let forwards = todo.iter().map(|(delivery, id, here)| {
        let headers = delivery.properties.headers().as_ref();
        // Its parent is the other DC's router's publish: the federation link forwards the
        // headers.
        let span = tracing::info_span!(
            "process meerkat.inter.stanzas",
            otel.kind = "consumer",
            messaging.system = "rabbitmq",
            messaging.operation.type = "process",
            messaging.operation.name = "process",
            messaging.destination.name = names::INTER_STANZAS_EXCHANGE,
            messaging.rabbitmq.destination.routing_key = delivery.routing_key.as_str(),
            messaging.rabbitmq.message.delivery_tag = delivery.delivery_tag,
            messaging.message.id = id.as_deref().unwrap_or(""),
        );
        meerkat_runtime::telemetry::set_parent_from_headers(&span, headers);
        forward(ctx, &delivery.data, headers, id.as_deref(), *here).instrument(span)
    });
    let results = futures::future::join_all(forwards).await;
    let mut requeue = false;
    for ((delivery, id, _), result) in todo.into_iter().zip(results) {
        match result {
            Ok(()) => {
                if let Some(id) = &id {
                    seen.lock().insert(id);
                }
                ctx.metrics.inter_in.inc();
                let _ = delivery.ack(BasicAckOptions::default()).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "stanza from another DC not forwarded; requeued");
                // The first one pauses; the rest of the batch goes back at once.
                let pause = if requeue { Duration::ZERO } else { RETRY_PAUSE };
                requeue = true;
                meerkat_bus::requeue_after(&delivery, pause).await;
            }
        }
    }
}

/// Forwards one handover step to its gateway and acks it (requeued if the broker refused).
async fn handover_now(ctx: &Ctx, delivery: Delivery, id: Option<&str>, seen: &Mutex<Dedup>) {
    let headers = delivery.properties.headers().as_ref();
    match forward(ctx, &delivery.data, headers, id, false).await {
        Ok(()) => {
            if let Some(id) = id {
                seen.lock().insert(id);
            }
            ctx.metrics.inter_in.inc();
            let _ = delivery.ack(BasicAckOptions::default()).await;
        }
        Err(e) => {
            tracing::warn!(error = %e, "handover step from another DC not forwarded; requeued");
            meerkat_bus::requeue_after(&delivery, RETRY_PAUSE).await;
        }
    }
}

/// Why a message on the inter-DC queue is not believed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OriginRefusal {
    #[error("no {} header", h::ORIGIN_DC)]
    NoOrigin,
    #[error(transparent)]
    Link(#[from] Refusal),
}

impl OriginRefusal {
    /// The metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            OriginRefusal::NoOrigin => "no-origin",
            OriginRefusal::Link(Refusal::UnknownDc(_)) => "unknown-dc",
            OriginRefusal::Link(Refusal::NotFederated(_)) => "not-federated",
            OriginRefusal::Link(Refusal::WrongLink { .. }) => "wrong-link",
        }
    }
}

/// A message on this DC's inter-DC queue must have come through the federation link of the DC
/// it names in `x-meerkat-origin-dc` (the last `x-received-from` entry names that link), as
/// session events, data and heartbeats must: otherwise one DC could speak for another (kick
/// its users' sessions, send as its users). One published in this DC's own broker, which no
/// link marked, is refused too.
pub fn check_origin(origins: &Origins, headers: Option<&FieldTable>) -> Result<(), OriginRefusal> {
    let claimed = headers
        .get_str(h::ORIGIN_DC)
        .ok_or(OriginRefusal::NoOrigin)?;
    origins.check(headers, &claimed)?;
    Ok(())
}

/// What a message on the inter-DC queue asks for, read from its headers and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// Close this DC's session with a `<conflict/>` stream error.
    Kick(Uuid),
    /// Route this stanza (as `remote`) into the local partition of `key`.
    Stanza(RouteIn),
    /// Unusable (logged and dropped).
    Invalid(String),
    /// Of a kind this version does not know: parked.
    Park(NotForUs),
    /// A gateway of another DC hands a session over to (or from) a gateway here: on to that
    /// gateway unchanged.
    Handover { gateway: String },
}

/// A stanza to republish into the local route exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteIn {
    /// Routing key: the sender's bare JID.
    pub key: String,
    pub body: String,
    pub target: Option<Uuid>,
    pub sender: Option<String>,
    pub hops: u64,
    pub origin_dc: Option<String>,
    /// A fan-out's recipients (`x-meerkat-recipients`, meerkat_wire::fanout), as they came.
    pub recipients: Option<String>,
}

/// Reads one inter-DC message (pure: tested below).
pub fn read(body: &[u8], headers: Option<&FieldTable>) -> Arrival {
    let target = headers
        .get_str(h::SESSION)
        .and_then(|s| Uuid::parse_str(&s).ok());
    match meerkat_bus::wire::kind(headers) {
        Ok(RouteKind::Conflict) => {
            return match target {
                Some(id) => Arrival::Kick(id),
                None => Arrival::Invalid("conflict kick without a session".into()),
            };
        }
        Ok(RouteKind::Handover) => {
            return match headers.get_str(h::GATEWAY) {
                Some(gateway) if !gateway.is_empty() => Arrival::Handover { gateway },
                _ => Arrival::Invalid("handover without a gateway".into()),
            };
        }
        Ok(_) => {}
        Err(unknown) => return Arrival::Park(unknown.into()),
    }
    let stanza = match envelope::unwrap(body) {
        Ok(Some(s)) => s,
        Ok(None) => return Arrival::Invalid("empty envelope".into()),
        Err(e) => return Arrival::Invalid(e.to_string()),
    };
    let sender = headers
        .get_str(h::SENDER)
        .or_else(|| stanza.attr("from").map(str::to_owned));
    // For a room: the room's partition (muc/). No sender (a server-made stanza such as a
    // roster push): the recipient's partition.
    let for_room = meerkat_bus::wire::kind(headers) == Ok(RouteKind::Room);
    let room_key = stanza.attr("to").filter(|_| for_room).map(str::to_owned);
    let Some(key) = room_key
        .or_else(|| sender.clone())
        .or_else(|| stanza.attr("to").map(str::to_owned))
        .map(|j| jids::bare(&j))
    else {
        return Arrival::Invalid("stanza with neither sender nor recipient".into());
    };
    // A fan-out's or a bundle's copies travel on (fanout.rs).
    let fanout = matches!(
        meerkat_bus::wire::kind(headers),
        Ok(RouteKind::Fanout | RouteKind::Bundle)
    );
    Arrival::Stanza(RouteIn {
        key,
        body: stanza.to_xml(),
        target,
        sender,
        hops: headers.get_u64(h::HOPS).unwrap_or(0),
        origin_dc: headers.get_str(h::ORIGIN_DC),
        recipients: headers.get_str(h::RECIPIENTS).filter(|_| fanout),
    })
}

/// `data_here`: this DC has applied the data the stanza's DC wrote before sending it.
async fn forward(
    ctx: &Ctx,
    body: &[u8],
    headers: Option<&FieldTable>,
    id: Option<&str>,
    data_here: bool,
) -> anyhow::Result<()> {
    match read(body, headers) {
        Arrival::Invalid(why) => {
            tracing::warn!(why, "unusable message from another DC dropped");
            Ok(())
        }
        // Parked before (handle_batch); not reached.
        Arrival::Park(why) => {
            tracing::warn!(%why, "message of an unknown kind from another DC dropped");
            Ok(())
        }
        Arrival::Kick(session) => {
            let target = ctx
                .sessions
                .read()
                .by_session(session)
                .filter(|s| s.dc == ctx.config.dc)
                .map(Target::from);
            // Unknown here: already gone, or this DC's routers will kick it themselves once
            // they see both sessions (the directory rule is the same everywhere).
            let Some(target) = target else {
                tracing::debug!(%session, "conflict kick for a session not here: nothing to do");
                return Ok(());
            };
            let mut out = Outbox::new(0);
            out.kick(target);
            out.flush(ctx).await
        }
        Arrival::Stanza(r) => {
            let kind = match meerkat_bus::wire::kind(headers) {
                Ok(RouteKind::Room) => RouteKind::Room,
                Ok(RouteKind::Fanout) => RouteKind::Fanout,
                Ok(RouteKind::Bundle) => RouteKind::Bundle,
                _ => RouteKind::Remote,
            };
            republish(ctx, &r, kind, id, data_here).await
        }
        Arrival::Handover { gateway } => {
            // The headers travel on as they came (the step, the session, the origin).
            let mut props = lapin::BasicProperties::default()
                .with_content_type(h::CONTENT_XMPP.into())
                .with_delivery_mode(2);
            if let Some(id) = id {
                props = props.with_message_id(id.into());
            }
            if let Some(headers) = headers {
                props = props.with_headers(headers.clone());
            }
            ctx.publisher
                .publish(names::DELIVER_EXCHANGE, &gateway, props, body)
                .await?;
            Ok(())
        }
    }
}

/// Publishes `r` into the local route exchange, partition of its key, as `kind`.
async fn republish(
    ctx: &Ctx,
    r: &RouteIn,
    kind: RouteKind,
    id: Option<&str>,
    data_here: bool,
) -> anyhow::Result<()> {
    // The envelope id travels on, so the partition also drops a duplicate republish.
    let message_id = id.map_or_else(|| Uuid::new_v4().to_string(), str::to_owned);
    let mut props = Props::stanza(kind, r.origin_dc.as_deref().unwrap_or(&ctx.config.dc))
        .id(message_id.clone())
        .u64(h::HOPS, r.hops)
        .opt_str(h::SESSION, r.target.map(|t| t.to_string()).as_deref())
        .opt_str(h::SENDER, r.sender.as_deref())
        .opt_str(h::RECIPIENTS, r.recipients.as_deref());
    if data_here {
        props = props.bool(h::DATA_APPLIED, true);
    }
    let span = tracing::info_span!(
        "publish meerkat.route",
        otel.kind = "producer",
        messaging.system = "rabbitmq",
        messaging.operation.type = "publish",
        messaging.operation.name = "publish",
        messaging.destination.name = names::ROUTE_EXCHANGE,
        messaging.rabbitmq.destination.routing_key = r.key.as_str(),
        messaging.message.id = message_id.as_str(),
    );
    span.in_scope(|| meerkat_runtime::telemetry::inject_context(props.headers_mut()));
    ctx.publisher
        .publish(names::ROUTE_EXCHANGE, &r.key, props, r.body.as_bytes())
        .instrument(span)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use meerkat_bus::Headers;
    use meerkat_xmpp::{ns, Element};

    fn stanza() -> Element {
        Element::new("message", ns::CLIENT)
            .with_attr("from", "Alice@Example.com/phone")
            .with_attr("to", "bob@example.com/desk")
            .with_attr("type", "chat")
    }

    fn wrapped(s: &Element) -> String {
        envelope::wrap(Some(s), "dc1.example.com", "dc2.example.com")
    }

    #[test]
    fn a_stanza_goes_to_its_senders_partition_with_its_metadata() {
        let target = Uuid::now_v7();
        let headers = Headers::new()
            .str(h::KIND, RouteKind::Stanza.as_str())
            .str(h::SESSION, &target.to_string())
            .str(h::SENDER, "Alice@Example.com/phone")
            .str(h::ORIGIN_DC, "dc1")
            .u64(h::HOPS, 2)
            .build();
        let s = stanza();
        assert_eq!(
            read(wrapped(&s).as_bytes(), Some(&headers)),
            Arrival::Stanza(RouteIn {
                key: "alice@example.com".into(),
                body: s.to_xml(),
                target: Some(target),
                sender: Some("Alice@Example.com/phone".into()),
                hops: 2,
                origin_dc: Some("dc1".into()),
                recipients: None,
            })
        );
    }

    #[test]
    fn without_sender_header_the_stanza_says_who() {
        let s = stanza();
        let Arrival::Stanza(r) = read(wrapped(&s).as_bytes(), None) else {
            panic!("expected a stanza");
        };
        assert_eq!(r.key, "alice@example.com");
        assert_eq!((r.hops, r.target), (0, None));
        let mut push = stanza();
        push.remove_attr("from");
        let Arrival::Stanza(r) = read(wrapped(&push).as_bytes(), None) else {
            panic!("expected a stanza");
        };
        assert_eq!((r.key, r.sender), ("bob@example.com".into(), None));
    }

    fn via(uri: &str) -> Headers {
        let mut hop = FieldTable::default();
        hop.insert(
            "uri".into(),
            lapin::types::AMQPValue::LongString(uri.into()),
        );
        let mut headers = Headers::new();
        headers.table().insert(
            meerkat_bus::origin::RECEIVED_FROM.into(),
            lapin::types::AMQPValue::FieldArray(
                vec![lapin::types::AMQPValue::FieldTable(hop)].into(),
            ),
        );
        headers
    }

    #[test]
    fn only_the_claimed_dcs_link_is_believed() {
        let origins = Origins::new([
            ("dc2", "amqp://u:p@127.0.0.1:5672/dc2"),
            ("dc3", "amqp://127.0.0.1:5672/dc3"),
        ]);
        let genuine = via("amqp://127.0.0.1:5672/dc2")
            .str(h::ORIGIN_DC, "dc2")
            .build();
        assert_eq!(check_origin(&origins, Some(&genuine)), Ok(()));
        let reason =
            |headers: FieldTable| check_origin(&origins, Some(&headers)).map_err(|e| e.reason());
        // dc3 speaking for dc2.
        assert_eq!(
            reason(
                via("amqp://127.0.0.1:5672/dc3")
                    .str(h::ORIGIN_DC, "dc2")
                    .build()
            ),
            Err("wrong-link")
        );
        // Published here, claiming dc2.
        assert_eq!(
            reason(Headers::new().str(h::ORIGIN_DC, "dc2").build()),
            Err("not-federated")
        );
        assert_eq!(
            reason(
                via("amqp://127.0.0.1:5672/dc2")
                    .str(h::ORIGIN_DC, "dc9")
                    .build()
            ),
            Err("unknown-dc")
        );
        assert_eq!(
            reason(via("amqp://127.0.0.1:5672/dc2").build()),
            Err("no-origin")
        );
        assert_eq!(
            check_origin(&origins, None).map_err(|e| e.reason()),
            Err("no-origin")
        );
    }

    #[test]
    fn conflicts_and_garbage() {
        let id = Uuid::now_v7();
        let kick = Headers::new()
            .str(h::KIND, RouteKind::Conflict.as_str())
            .str(h::SESSION, &id.to_string())
            .build();
        let body = envelope::wrap(None, "dc1.example.com", "dc2.example.com");
        assert_eq!(read(body.as_bytes(), Some(&kick)), Arrival::Kick(id));
        let no_id = Headers::new()
            .str(h::KIND, RouteKind::Conflict.as_str())
            .build();
        assert!(matches!(
            read(body.as_bytes(), Some(&no_id)),
            Arrival::Invalid(_)
        ));
        assert!(matches!(read(body.as_bytes(), None), Arrival::Invalid(_)));
        assert!(matches!(read(b"<message/>", None), Arrival::Invalid(_)));
        // A kind a newer DC sends is parked, whatever its body.
        let newer = Headers::new().str(h::KIND, "newer-kind").build();
        assert!(matches!(
            read(wrapped(&stanza()).as_bytes(), Some(&newer)),
            Arrival::Park(NotForUs::Kind(_))
        ));
    }
}
