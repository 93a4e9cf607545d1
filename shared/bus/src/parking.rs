//! The DC's parking queue, `meerkat.parked`: where a consumer puts a message it cannot take —
//! another major wire version, a kind or event its version does not know, an unreadable body —
//! instead of dropping it or failing on it. Each parked message keeps its body and properties
//! and gains the queue it came from and why; it is counted
//! (`meerkat_parked_messages_total{queue,reason}`) and logged (one line per queue and reason a
//! minute). `meerkatctl parked replay` puts parked messages back into their queues after the
//! upgrade (docs/operations.md).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::Channel;
use meerkat_wire::headers as h;
use meerkat_wire::topology::PARKED_QUEUE;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::wire::NotForUs;
use crate::{Bus, Publisher};

/// One log line per queue and reason at most this often.
const LOG_EVERY: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ParkLabels {
    pub queue: String,
    pub reason: &'static str,
}

/// (queue, reason) → when last logged and how many were parked since.
type LogLimits = HashMap<(String, &'static str), (Instant, u64)>;

/// Parks deliveries. Cheap to clone; one per service.
#[derive(Clone)]
pub struct Parker {
    inner: Arc<Inner>,
}

struct Inner {
    bus: Bus,
    publisher: Publisher,
    parked: Family<ParkLabels, Counter>,
    declared: AtomicBool,
    logged: parking_lot::Mutex<LogLimits>,
}

impl Parker {
    pub fn new(bus: Bus) -> Parker {
        Parker {
            inner: Arc::new(Inner {
                publisher: Publisher::new(bus.clone()),
                bus,
                parked: Family::default(),
                declared: AtomicBool::new(false),
                logged: parking_lot::Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Registers `meerkat_parked_messages_total` in the service's registry.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "meerkat_parked_messages",
            "Messages put in the DC's parking queue (meerkat.parked), by queue and reason",
            self.inner.parked.clone(),
        );
    }

    /// How many were parked from `queue` for `reason` (tests, admin).
    pub fn count(&self, queue: &str, reason: &'static str) -> u64 {
        self.inner
            .parked
            .get_or_create(&ParkLabels {
                queue: queue.to_owned(),
                reason,
            })
            .get()
    }

    /// Moves `delivery` (received from `queue`) to the parking queue, then acks it. If the
    /// parking queue cannot be written, the delivery goes back to its queue (after a pause):
    /// never dropped.
    pub async fn park(&self, queue: &str, delivery: &Delivery, why: &NotForUs) {
        match self.try_park(queue, delivery, why).await {
            Ok(()) => {
                self.inner
                    .parked
                    .get_or_create(&ParkLabels {
                        queue: queue.to_owned(),
                        reason: why.label(),
                    })
                    .inc();
                self.log(queue, why);
                let _ = delivery.ack(BasicAckOptions::default()).await;
            }
            Err(e) => {
                tracing::error!(queue, error = %e, reason = %why, "message not parked; requeued");
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..BasicNackOptions::default()
                    })
                    .await;
            }
        }
    }

    async fn try_park(
        &self,
        queue: &str,
        delivery: &Delivery,
        why: &NotForUs,
    ) -> anyhow::Result<()> {
        if !self.inner.declared.load(Ordering::Acquire) {
            let conn = self
                .inner
                .bus
                .connected()
                .await
                .ok_or_else(|| anyhow::anyhow!("shutting down"))?;
            let ch = conn.create_channel().await?;
            declare_parked_queue(&ch).await?;
            let _ = ch.close(200, "declared").await;
            self.inner.declared.store(true, Ordering::Release);
        }
        let props = parked_properties(delivery, queue, &why.to_string(), self.inner.bus.name());
        self.inner
            .publisher
            .publish_as_is("", PARKED_QUEUE, props, &delivery.data)
            .await?;
        Ok(())
    }

    fn log(&self, queue: &str, why: &NotForUs) {
        let mut logged = self.inner.logged.lock();
        let now = Instant::now();
        let entry = logged
            .entry((queue.to_owned(), why.label()))
            .or_insert((now - LOG_EVERY, 0));
        entry.1 += 1;
        if now.duration_since(entry.0) >= LOG_EVERY {
            tracing::warn!(
                queue,
                reason = %why,
                parked_since_last_line = entry.1,
                "message parked in {PARKED_QUEUE} (replay after the upgrade: meerkatctl parked replay)"
            );
            *entry = (now, 0);
        }
    }
}

/// The parking queue: durable, no expiry (an operator empties it by replaying or purging).
pub async fn declare_parked_queue(ch: &Channel) -> Result<(), lapin::Error> {
    ch.queue_declare(
        PARKED_QUEUE,
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .map(|_| ())
}

/// The delivery's own properties plus where it came from and why.
fn parked_properties(
    delivery: &Delivery,
    queue: &str,
    reason: &str,
    by: &str,
) -> lapin::BasicProperties {
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    for (k, v) in [
        (h::PARKED_QUEUE, queue),
        (h::PARKED_REASON, reason),
        (h::PARKED_BY, by),
    ] {
        headers.insert(
            ShortString::from(k),
            AMQPValue::LongString(LongString::from(v)),
        );
    }
    headers.insert(ShortString::from(h::PARKED_AT), AMQPValue::LongLongInt(now));
    delivery
        .properties
        .clone()
        .with_delivery_mode(2)
        .with_headers(headers)
}

/// The properties a parked message is replayed with: its own, without the parking headers.
pub fn replay_properties(parked: &lapin::BasicProperties) -> lapin::BasicProperties {
    let mut headers = parked.headers().clone().unwrap_or_default();
    let kept: std::collections::BTreeMap<ShortString, AMQPValue> = headers
        .inner()
        .iter()
        .filter(|(k, _)| {
            ![
                h::PARKED_QUEUE,
                h::PARKED_REASON,
                h::PARKED_BY,
                h::PARKED_AT,
            ]
            .contains(&k.as_str())
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    headers = FieldTable::from(kept);
    parked.clone().with_headers(headers)
}

/// What [`replay`] did, per queue the messages were parked from.
#[derive(Debug, Default)]
pub struct Replayed {
    /// Queue → messages put back into it.
    pub replayed: std::collections::BTreeMap<String, u64>,
    /// Queue → messages left parked because that queue no longer exists (a per-instance
    /// queue of an instance that is gone) or the message does not say where it came from.
    pub kept: std::collections::BTreeMap<String, u64>,
}

/// Puts the messages parked in the DC's `meerkat.parked` (those there when it starts, at most
/// `limit`) back into the queues they were taken from, through the default exchange, each
/// acked in the parking queue once the broker confirmed its return. A message whose queue is
/// gone stays parked. Run after the upgrade that makes them readable; what the services still
/// cannot read is parked again.
pub async fn replay(amqp_url: &str, limit: Option<u64>) -> anyhow::Result<Replayed> {
    use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
    use lapin::publisher_confirm::Confirmation;

    let props = lapin::ConnectionProperties::default()
        .with_connection_name("meerkatctl parked replay".into())
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    let conn = lapin::Connection::connect(amqp_url, props).await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let queue = ch
        .queue_declare(
            PARKED_QUEUE,
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let mut todo = u64::from(queue.message_count());
    if let Some(limit) = limit {
        todo = todo.min(limit);
    }
    let mut done = Replayed::default();
    // Left unacked until the end, so the next get does not hand them out again.
    let mut kept_tags = Vec::new();
    for _ in 0..todo {
        let Some(msg) = ch
            .basic_get(PARKED_QUEUE, BasicGetOptions { no_ack: false })
            .await?
        else {
            break;
        };
        let from = crate::HeaderExt::get_str(&msg.properties.headers().as_ref(), h::PARKED_QUEUE);
        let Some(from) = from else {
            *done.kept.entry("(unknown)".into()).or_default() += 1;
            kept_tags.push(msg.delivery.delivery_tag);
            continue;
        };
        let confirm = ch
            .basic_publish(
                "",
                &from,
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &msg.delivery.data,
                replay_properties(&msg.properties),
            )
            .await?
            .await?;
        match confirm {
            Confirmation::Ack(None) => {
                msg.delivery.ack(BasicAckOptions::default()).await?;
                *done.replayed.entry(from).or_default() += 1;
            }
            // Returned: no such queue any more.
            Confirmation::Ack(Some(_)) | Confirmation::Nack(_) | Confirmation::NotRequested => {
                *done.kept.entry(from).or_default() += 1;
                kept_tags.push(msg.delivery.delivery_tag);
            }
        }
    }
    for tag in kept_tags {
        ch.basic_nack(
            tag,
            BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            },
        )
        .await?;
    }
    let _ = ch.close(200, "replayed").await;
    let _ = conn.close(200, "replayed").await;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HeaderExt;

    #[test]
    fn a_replayed_message_loses_only_the_parking_headers() {
        let parked = lapin::BasicProperties::default()
            .with_message_id("m".into())
            .with_headers(
                crate::Headers::new()
                    .str(h::WIRE, "1.1")
                    .str(h::KIND, "newer")
                    .str(h::PARKED_QUEUE, "q")
                    .str(h::PARKED_REASON, "kind")
                    .str(h::PARKED_BY, "router-1")
                    .u64(h::PARKED_AT, 5)
                    .build(),
            );
        let p = replay_properties(&parked);
        let hd = p.headers().as_ref();
        assert_eq!(hd.get_str(h::WIRE).as_deref(), Some("1.1"));
        assert_eq!(hd.get_str(h::KIND).as_deref(), Some("newer"));
        for gone in [
            h::PARKED_QUEUE,
            h::PARKED_REASON,
            h::PARKED_BY,
            h::PARKED_AT,
        ] {
            assert!(hd.is_some_and(|t| !t.inner().contains_key(gone)), "{gone}");
        }
        assert_eq!(p.message_id().as_ref().map(|s| s.as_str()), Some("m"));
    }
}
