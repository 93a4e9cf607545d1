//! Supervised consumers: on every (re)connection the consumer opens a channel, declares what
//! it needs, and consumes until the channel dies; then it waits for the next connection.
//! [`spawn_consumer`] stops with the connection; [`consume_until`] stops on its own token,
//! finishing the delivery in hand first, and counts itself while subscribed (readiness).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::Channel;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::Bus;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a consumer needs: how to declare its queue (run on every new channel) and what
/// to do with each delivery. The handler acks or rejects the delivery itself, after the work.
pub struct ConsumerSpec {
    pub queue: String,
    pub prefetch: u16,
    /// Exclusive consumer (e.g. a per-instance queue).
    pub exclusive: bool,
    pub declare: Arc<dyn Fn(Channel) -> BoxFuture<'static, Result<(), lapin::Error>> + Send + Sync>,
}

/// Runs a consumer until shutdown, surviving broker restarts.
pub fn spawn_consumer<H, F>(bus: Bus, spec: ConsumerSpec, handler: H) -> JoinHandle<()>
where
    H: Fn(Delivery) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let shutdown = bus.shutdown_token();
        loop {
            let Some(conn) = bus.connected().await else {
                return;
            };
            match open(&conn, &spec).await {
                Ok((channel, mut consumer)) => {
                    tracing::debug!(queue = %spec.queue, "consuming");
                    loop {
                        let next = tokio::select! {
                            n = consumer.next() => n,
                            _ = shutdown.cancelled() => {
                                let _ = channel.close(200, "shutdown").await;
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
                }
                Err(e) => {
                    tracing::warn!(queue = %spec.queue, error = %e, "could not start consumer");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    })
}

/// Consumes `spec.queue` one delivery at a time until `stop`, surviving reconnects. On `stop`
/// it cancels its subscription, lets the delivery in hand finish (and be acked) and closes its
/// channel, so the broker requeues only what was never started. `consuming` counts the
/// consumers currently subscribed.
pub async fn consume_until<H, F>(
    bus: Bus,
    spec: ConsumerSpec,
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
