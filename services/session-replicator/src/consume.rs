//! A consumer loop that can stop gracefully (as the router's does): on shutdown it cancels its
//! subscription, lets the delivery in hand finish (and be acked) and closes its channel, so the
//! broker requeues only what was never started. (meerkat-bus's `spawn_consumer` stops together
//! with the connection, which would cut the in-flight ack.)

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
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
                    match next {
                        Some(Ok(delivery)) => handler(delivery).await,
                        Some(Err(e)) => {
                            tracing::warn!(queue = %spec.queue, error = %e, "consumer failed");
                            break;
                        }
                        None => break,
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
