//! A consumer loop that can stop gracefully: on shutdown it cancels its subscription, lets the
//! delivery in hand finish (and be acked) and closes its channel, so the broker requeues only
//! what was never started. (meerkat-bus's `spawn_consumer` stops together with the
//! connection, which would cut the in-flight ack.)

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt as _, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::Channel;
use meerkat_bus::consumer::BoxFuture;
use meerkat_bus::{lapin, Bus};
use tokio_util::sync::CancellationToken;

pub type Declare =
    Arc<dyn Fn(Channel) -> BoxFuture<'static, Result<(), lapin::Error>> + Send + Sync>;

pub struct Spec {
    pub queue: String,
    pub prefetch: u16,
    pub exclusive: bool,
    /// Run on every new channel before consuming (declare the queue, announce ourselves).
    pub declare: Declare,
}

/// Consumes `spec.queue` one delivery at a time until `stop`, surviving reconnects.
/// `consuming` counts the consumers currently subscribed (for readiness).
pub async fn run<H, F>(
    bus: Bus,
    spec: Spec,
    stop: CancellationToken,
    consuming: Arc<AtomicUsize>,
    handler: H,
) where
    H: Fn(Delivery) -> F,
    F: Future<Output = ()>,
{
    run_batches(bus, spec, 1, stop, consuming, |batch| {
        let handled = batch.into_iter().next().map(&handler);
        async move {
            if let Some(handled) = handled {
                handled.await;
            }
        }
    })
    .await;
}

/// Like [`run`], but hands the handler every delivery already at hand (at least one, at most
/// `max`, in queue order): one when the queue is quiet, more as they pile up while the
/// previous batch is handled. The handler acks or nacks each.
pub async fn run_batches<H, F>(
    bus: Bus,
    spec: Spec,
    max: usize,
    stop: CancellationToken,
    consuming: Arc<AtomicUsize>,
    handler: H,
) where
    H: Fn(Vec<Delivery>) -> F,
    F: Future<Output = ()>,
{
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
                loop {
                    let next = tokio::select! {
                        n = consumer.next() => n,
                        _ = stop.cancelled() => {
                            let _ = channel
                                .basic_cancel(consumer.tag().as_str(), BasicCancelOptions::default())
                                .await;
                            let _ = channel.close(200, "shutdown").await;
                            consuming.fetch_sub(1, Ordering::AcqRel);
                            return;
                        }
                    };
                    let (batch, end) = match next {
                        Some(Ok(first)) => gather(&mut consumer, first, max),
                        Some(Err(e)) => (Vec::new(), Some(End::Failed(e))),
                        None => (Vec::new(), Some(End::Closed)),
                    };
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
    spec: &Spec,
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
