//! The one consumer loop of every service. On every (re)connection it opens a channel, declares
//! what it needs, and consumes until the channel dies; then it waits for the next connection.
//! It stops on its own token: it cancels its subscription, lets the delivery in hand finish
//! (and be acked) and closes its channel, so the broker requeues only what was never started.
//! A consumer that drains on stop ([`ConsumerSpec::drain_on_stop`]) first goes on handling
//! what is queued until the queue has stayed empty for [`DRAIN_QUIET`] (at most
//! [`DRAIN_MAX`]): what the other services said at their own end (a gateway's last unavailable
//! presences, in a DC stopping as a whole) is handled rather than left for the next start.
//! It counts itself while subscribed (readiness).
//!
//! Every delivery's wire version is checked before the handler sees it: a major version this
//! build does not speak, or a version it cannot read, is parked (parking.rs). A kind or event
//! the handler does not know it parks itself, through [`ConsumerSpec::parker`].
//!
//! With [`consume_batches`] the handler gets every delivery already at hand (opportunistic
//! batching: one when the queue is quiet, more as they pile up while the previous batch is
//! handled). With [`consume_lanes`] each delivery is handled on its own as soon as it arrives,
//! after those of its key before it and beside those of other keys.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt as _, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::Channel;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{Bus, Parker};

/// How long a draining consumer's queue must stay empty before it stops.
pub const DRAIN_QUIET: Duration = Duration::from_millis(250);
/// The longest a consumer drains after its stop (below the service's own drain limit).
pub const DRAIN_MAX: Duration = Duration::from_secs(3);

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Run on every new channel before consuming (declare the queue, announce ourselves).
pub type Declare =
    Arc<dyn Fn(Channel) -> BoxFuture<'static, Result<(), lapin::Error>> + Send + Sync>;

/// What a consumer needs. The handler acks or rejects each delivery itself, after the work.
pub struct ConsumerSpec {
    pub queue: String,
    pub prefetch: u16,
    /// Exclusive consumer (e.g. a per-instance queue).
    pub exclusive: bool,
    pub declare: Declare,
    /// Where deliveries this version cannot take go.
    pub parker: Parker,
    /// On stop, go on handling what is queued until the queue stays empty (see the module
    /// docs) instead of leaving it to the next consumer.
    pub drain_on_stop: bool,
}

impl ConsumerSpec {
    /// A consumer of `queue` (shared with the other instances of the service) that runs
    /// `declare` on every new channel before consuming.
    pub fn new<D, F>(queue: impl Into<String>, prefetch: u16, parker: &Parker, declare: D) -> Self
    where
        D: Fn(Channel) -> F + Send + Sync + 'static,
        F: Future<Output = Result<(), lapin::Error>> + Send + 'static,
    {
        ConsumerSpec {
            queue: queue.into(),
            prefetch,
            exclusive: false,
            declare: Arc::new(move |ch| Box::pin(declare(ch))),
            parker: parker.clone(),
            drain_on_stop: false,
        }
    }

    /// This instance's own queue on `exchange` (`meerkat.control.<instance>`,
    /// `meerkat.sessions.<instance>`): exclusive, declared with
    /// [`declare_instance_queue`](crate::topology::declare_instance_queue), then `after` runs
    /// (e.g. a resync request, once the queue is there to receive the answers).
    pub fn instance<A, F>(
        queue: impl Into<String>,
        exchange: &'static str,
        prefetch: u16,
        parker: &Parker,
        after: A,
    ) -> Self
    where
        A: Fn() -> F + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let queue = queue.into();
        let declared = queue.clone();
        let after = Arc::new(after);
        let mut spec = ConsumerSpec::new(queue, prefetch, parker, move |ch| {
            let q = declared.clone();
            let after = after.clone();
            async move {
                crate::topology::declare_instance_queue(&ch, &q, exchange).await?;
                after().await;
                Ok(())
            }
        });
        spec.exclusive = true;
        spec
    }
}

/// Runs a consumer until the bus shuts down, surviving broker restarts.
pub fn spawn_consumer<H, F>(bus: Bus, spec: ConsumerSpec, handler: H) -> JoinHandle<()>
where
    H: Fn(Delivery) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let stop = bus.shutdown_token();
    tokio::spawn(consume(
        bus,
        spec,
        stop,
        Arc::new(AtomicUsize::new(0)),
        handler,
    ))
}

/// [`consume`] for a queue of JSON events of type `E`: each delivery is read as one, handed to
/// `handler`, and acked when the handler is done; one that does not read as `E` (an event this
/// version does not know, a broken body) is parked as unreadable instead.
pub async fn consume_events<E, H, F>(
    bus: Bus,
    spec: ConsumerSpec,
    stop: CancellationToken,
    consuming: Arc<AtomicUsize>,
    handler: H,
) where
    E: serde::de::DeserializeOwned,
    H: Fn(E) -> F,
    F: Future<Output = ()>,
{
    let queue = spec.queue.clone();
    let parker = spec.parker.clone();
    consume(bus, spec, stop, consuming, |delivery| {
        let work = serde_json::from_slice::<E>(&delivery.data).map(&handler);
        let (queue, parker) = (queue.clone(), parker.clone());
        async move {
            match work {
                Ok(work) => work.await,
                Err(e) => {
                    parker
                        .park(&queue, &delivery, &crate::NotForUs::unreadable(e))
                        .await;
                    return;
                }
            }
            let _ = delivery
                .ack(lapin::options::BasicAckOptions::default())
                .await;
        }
    })
    .await;
}

/// Consumes `spec.queue` one delivery at a time until `stop`, surviving reconnects.
/// `consuming` counts the consumers currently subscribed (for readiness).
pub async fn consume<H, F>(
    bus: Bus,
    spec: ConsumerSpec,
    stop: CancellationToken,
    consuming: Arc<AtomicUsize>,
    handler: H,
) where
    H: Fn(Delivery) -> F,
    F: Future<Output = ()>,
{
    consume_batches(bus, spec, 1, stop, consuming, |batch| {
        let handled = batch.into_iter().next().map(&handler);
        async move {
            if let Some(handled) = handled {
                handled.await;
            }
        }
    })
    .await;
}

/// Like [`consume`], but hands the handler every delivery already at hand (at least one, at
/// most `max`, in queue order).
pub async fn consume_batches<H, F>(
    bus: Bus,
    spec: ConsumerSpec,
    max: usize,
    stop: CancellationToken,
    consuming: Arc<AtomicUsize>,
    handler: H,
) where
    H: Fn(Vec<Delivery>) -> F,
    F: Future<Output = ()>,
{
    let max = max.max(1);
    let (spec, stop, handler) = (&spec, &stop, &handler);
    subscribed(
        &bus,
        spec,
        stop,
        &consuming,
        |channel, mut consumer| async move {
            let mut draining: Option<Instant> = None;
            loop {
                let Some(next) =
                    next_delivery(&channel, &mut consumer, spec, stop, &mut draining).await
                else {
                    return Some((channel, consumer));
                };
                let (gathered, end) = match next {
                    Some(Ok(first)) => gather(&mut consumer, first, max),
                    Some(Err(e)) => (Vec::new(), Some(End::Failed(e))),
                    None => (Vec::new(), Some(End::Closed)),
                };
                let mut batch = Vec::with_capacity(gathered.len());
                for delivery in gathered {
                    match crate::wire::check(delivery.properties.headers().as_ref()) {
                        Ok(_) => batch.push(delivery),
                        Err(why) => spec.parker.park(&spec.queue, &delivery, &why).await,
                    }
                }
                if !batch.is_empty() {
                    handler(batch).await;
                }
                if let Some(end) = end {
                    end.log(&spec.queue);
                    return None;
                }
            }
        },
    )
    .await;
}

/// Like [`consume_batches`] with every delivery its own batch, but with no batch's end to wait
/// for: the deliveries with the same `key` are handled one after another, in queue order, and
/// those with different keys side by side, each as soon as it arrives. What is in hand at once
/// is bounded by the prefetch (the handler acks). When the stream ends or the consumer stops,
/// what is in hand is handled first.
pub async fn consume_lanes<K, H, F>(
    bus: Bus,
    spec: ConsumerSpec,
    stop: CancellationToken,
    consuming: Arc<AtomicUsize>,
    key: K,
    handler: H,
) where
    K: Fn(&Delivery) -> String,
    H: Fn(Delivery) -> F,
    F: Future<Output = ()>,
{
    let run = |k: String, d: Delivery| {
        let handled = handler(d);
        async move {
            handled.await;
            k
        }
    };
    // The next delivery of lane `k` once the one before is done, if any waits.
    let next_of = |k: String, lanes: &mut HashMap<String, VecDeque<Delivery>>| match lanes
        .get_mut(&k)
        .and_then(VecDeque::pop_front)
    {
        Some(d) => Some(run(k, d)),
        None => {
            lanes.remove(&k);
            None
        }
    };
    let (spec, stop, key, next_of) = (&spec, &stop, &key, &next_of);
    subscribed(
        &bus,
        spec,
        stop,
        &consuming,
        |channel, mut consumer| async move {
            let mut draining: Option<Instant> = None;
            let mut running = futures::stream::FuturesUnordered::new();
            // The keys being handled, each with what waits behind the one in hand.
            let mut lanes: HashMap<String, VecDeque<Delivery>> = HashMap::new();
            let end = loop {
                let next = tokio::select! {
                    biased;
                    Some(k) = running.next(), if !running.is_empty() => {
                        running.extend(next_of(k, &mut lanes));
                        continue;
                    }
                    n = next_delivery(&channel, &mut consumer, spec, stop, &mut draining) => n,
                };
                let delivery = match next {
                    None => break None,
                    Some(Some(Ok(d))) => d,
                    Some(Some(Err(e))) => break Some(End::Failed(e)),
                    Some(None) => break Some(End::Closed),
                };
                if let Err(why) = crate::wire::check(delivery.properties.headers().as_ref()) {
                    spec.parker.park(&spec.queue, &delivery, &why).await;
                    continue;
                }
                let k = key(&delivery);
                match lanes.get_mut(&k) {
                    Some(behind) => behind.push_back(delivery),
                    None => {
                        lanes.insert(k.clone(), VecDeque::new());
                        running.push(run(k, delivery));
                    }
                }
            };
            while let Some(k) = running.next().await {
                running.extend(next_of(k, &mut lanes));
            }
            match end {
                None => Some((channel, consumer)),
                Some(end) => {
                    end.log(&spec.queue);
                    None
                }
            }
        },
    )
    .await;
}

/// Subscribes on every (re)connection and runs `session` on the subscription, until a session
/// ends with the consumer stopped (it hands back its channel and subscription, to be finished)
/// rather than with its stream broken (`None`: subscribed again on the next connection).
async fn subscribed<S, F>(
    bus: &Bus,
    spec: &ConsumerSpec,
    stop: &CancellationToken,
    consuming: &AtomicUsize,
    mut session: S,
) where
    S: FnMut(Channel, lapin::Consumer) -> F,
    F: Future<Output = Option<(Channel, lapin::Consumer)>>,
{
    loop {
        let conn = tokio::select! {
            c = bus.connected() => c,
            _ = stop.cancelled() => return,
        };
        let Some(conn) = conn else { return };
        match open(&conn, spec).await {
            Ok((channel, consumer)) => {
                tracing::debug!(queue = %spec.queue, "consuming");
                consuming.fetch_add(1, Ordering::AcqRel);
                if let Some((channel, consumer)) = session(channel, consumer).await {
                    finish(&channel, &consumer, consuming).await;
                    return;
                }
                consuming.fetch_sub(1, Ordering::AcqRel);
            }
            Err(e) => tracing::warn!(queue = %spec.queue, error = %e, "could not start consumer"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// The consumer's next item; `None` when it is to finish: stopped (and not draining), or
/// drained.
async fn next_delivery(
    channel: &Channel,
    consumer: &mut lapin::Consumer,
    spec: &ConsumerSpec,
    stop: &CancellationToken,
    draining: &mut Option<Instant>,
) -> Option<Option<Result<Delivery, lapin::Error>>> {
    loop {
        match *draining {
            None => tokio::select! {
                n = consumer.next() => return Some(n),
                _ = stop.cancelled() => {
                    if !spec.drain_on_stop {
                        return None;
                    }
                    *draining = Some(Instant::now() + DRAIN_MAX);
                }
            },
            Some(until) => return drained_next(channel, consumer, &spec.queue, until).await,
        }
    }
}

/// Cancels the subscription and closes the channel (the broker requeues whatever was
/// delivered and not acked); the consumer no longer counts.
async fn finish(channel: &Channel, consumer: &lapin::Consumer, consuming: &AtomicUsize) {
    let _ = channel
        .basic_cancel(consumer.tag().as_str(), BasicCancelOptions::default())
        .await;
    let _ = channel.close(200, "shutdown").await;
    consuming.fetch_sub(1, Ordering::AcqRel);
}

/// While draining: the next delivery, or `None` once the drain is over (the queue stayed
/// empty for [`DRAIN_QUIET`], or `until` passed).
async fn drained_next(
    channel: &Channel,
    consumer: &mut lapin::Consumer,
    queue: &str,
    until: Instant,
) -> Option<Option<Result<Delivery, lapin::Error>>> {
    loop {
        let now = Instant::now();
        if now >= until {
            return None;
        }
        match tokio::time::timeout(DRAIN_QUIET.min(until - now), consumer.next()).await {
            Ok(n) => return Some(n),
            Err(_) if queue_is_empty(channel, queue).await => return None,
            Err(_) => {}
        }
    }
}

/// Whether `queue` holds no message ready for delivery (an unanswerable broker counts as
/// empty: there is nothing more to drain from it).
async fn queue_is_empty(channel: &Channel, queue: &str) -> bool {
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue, passive, FieldTable::default())
        .await
        .map_or(true, |q| q.message_count() == 0)
}

/// Why a consumer stream ended.
enum End {
    Failed(lapin::Error),
    Closed,
}

impl End {
    fn log(&self, queue: &str) {
        if let End::Failed(e) = self {
            tracing::warn!(queue, error = %e, "consumer failed");
        }
    }
}

/// `first` and the deliveries that are ready now, up to `max` in all; and the end of the
/// stream if it came meanwhile.
fn gather(
    consumer: &mut lapin::Consumer,
    first: Delivery,
    max: usize,
) -> (Vec<Delivery>, Option<End>) {
    let mut batch = vec![first];
    while batch.len() < max {
        match consumer.next().now_or_never() {
            Some(Some(Ok(d))) => batch.push(d),
            Some(Some(Err(e))) => return (batch, Some(End::Failed(e))),
            Some(None) => return (batch, Some(End::Closed)),
            None => break,
        }
    }
    (batch, None)
}

async fn open(
    conn: &lapin::Connection,
    spec: &ConsumerSpec,
) -> Result<(Channel, lapin::Consumer), lapin::Error> {
    let channel = conn.create_channel().await?;
    (spec.declare)(channel.clone()).await?;
    channel
        .basic_qos(spec.prefetch, BasicQosOptions::default())
        .await?;
    let consumer = channel
        .basic_consume(
            &spec.queue,
            "",
            BasicConsumeOptions {
                exclusive: spec.exclusive,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok((channel, consumer))
}

/// Gives a delivery back to its queue after `pause`: what could not be handled because
/// something it needs is away (a broker, a database) is tried again, never dropped; the
/// pause keeps a consumer from spinning on it meanwhile. `Duration::ZERO` gives it back at
/// once (a batch's later deliveries, after its first one paused).
pub async fn requeue_after(delivery: &Delivery, pause: Duration) {
    if !pause.is_zero() {
        tokio::time::sleep(pause).await;
    }
    let _ = delivery
        .nack(lapin::options::BasicNackOptions {
            requeue: true,
            ..lapin::options::BasicNackOptions::default()
        })
        .await;
}
