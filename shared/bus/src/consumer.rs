//! Supervised consumers: on every (re)connection the consumer opens a channel, declares what
//! it needs, and consumes until the channel dies; then it waits for the next connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::Channel;
use tokio::task::JoinHandle;

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
