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
//! handled).

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
    loop {
        let conn = tokio::select! {
            c = bus.connected() => c,
            _ = stop.cancelled() => return,
        };
        let Some(conn) = conn else { return };
        match open(&conn, &spec).await {
            Ok((channel, mut consumer)) => {
                tracing::debug!(queue = %spec.queue, "consuming");
                consuming.fetch_add(1, Ordering::AcqRel);
                let mut draining: Option<Instant> = None;
                loop {
                    let next = match draining {
                        None => tokio::select! {
                            n = consumer.next() => n,
                            _ = stop.cancelled() => {
                                if spec.drain_on_stop {
                                    draining = Some(Instant::now() + DRAIN_MAX);
                                    continue;
                                }
                                finish(&channel, &consumer, &consuming).await;
                                return;
                            }
                        },
                        Some(until) => {
                            match drained_next(&channel, &mut consumer, &spec.queue, until).await {
                                Some(n) => n,
                                None => {
                                    finish(&channel, &consumer, &consuming).await;
                                    return;
                                }
                            }
                        }
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
                    match end {
                        None => {}
                        Some(End::Failed(e)) => {
                            tracing::warn!(queue = %spec.queue, error = %e, "consumer failed");
                            break;
                        }
                        Some(End::Closed) => break,
                    }
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
