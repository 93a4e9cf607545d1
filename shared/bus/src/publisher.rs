//! Publishing with publisher confirms, retried across reconnects until confirmed or the
//! deadline passes: the sender learns of a failure, it never goes unnoticed.

use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::publisher_confirm::Confirmation;
use lapin::{BasicProperties, Channel, Connection};
use tokio::sync::Mutex;

use lapin::types::{AMQPValue, LongString, ShortString};
use meerkat_wire::{headers as h, topology as names, version, RouteKind, WireVersion};
use meerkat_xmpp::{ns, Element};

use crate::{Bus, Props};

/// A confirm-mode channel and the connection it belongs to.
type OpenChannel = (Arc<Connection>, Channel);

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("not confirmed by the broker within {0:?}")]
    Timeout(Duration),
    #[error("shutting down")]
    Shutdown,
    #[error("not published: {0}")]
    Failed(String),
    #[error("returned by the broker: nothing bound for it")]
    Unroutable,
}

/// How long [`Publisher::publish_routed`] publishes again a message the broker returns as
/// unroutable.
pub const UNROUTABLE_FOR: Duration = Duration::from_secs(5);

/// A confirm-mode channel shared by the tasks of a service. Messages published through one
/// `Publisher` by one task reach the broker in the order of the calls.
#[derive(Clone)]
pub struct Publisher {
    bus: Bus,
    channel: Arc<Mutex<Option<OpenChannel>>>,
    deadline: Duration,
    /// Stamped in `x-meerkat-wire` on everything published.
    version: WireVersion,
    /// Test only ([`Publisher::speaking_newer_minor`]).
    newer_minor: bool,
}

/// The JSON field and the header a publisher speaking a newer minor version adds (test only):
/// receivers of this version must ignore both.
pub const NEWER_MINOR_FIELD: &str = "x_newer_minor_field";
/// The `x-meerkat-kind` a router speaking a newer minor version sends besides every stanza for
/// another DC (test only): receivers of this version park it.
pub const NEWER_MINOR_KIND: &str = "newer-minor-kind";

impl Publisher {
    pub fn new(bus: Bus) -> Publisher {
        Publisher {
            bus,
            channel: Arc::new(Mutex::new(None)),
            deadline: Duration::from_secs(30),
            version: version::CURRENT,
            newer_minor: false,
        }
    }

    /// For the mixed-version test only: this publisher speaks the next minor version — it
    /// stamps `MAJOR.(MINOR+1)`, and adds a field to every JSON object and a header to every
    /// message, which receivers of this version must ignore (docs/protocol.md).
    pub fn speaking_newer_minor(mut self) -> Publisher {
        self.version = WireVersion::new(version::CURRENT.major, version::CURRENT.minor + 1);
        self.newer_minor = true;
        self
    }

    /// The version stamped on what this publisher sends.
    pub fn version(&self) -> WireVersion {
        self.version
    }

    /// Publishes and waits for the broker's confirm. Retries (a possible duplicate is what
    /// envelope ids are for) until confirmed or the deadline passes.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        props: impl Into<BasicProperties>,
        body: &[u8],
    ) -> Result<(), PublishError> {
        let (props, extended) = self.stamped(props.into(), body);
        let body = extended.as_deref().unwrap_or(body);
        self.publish_as_is(exchange, routing_key, props, body).await
    }

    /// [`Publisher::publish`] of a message that must reach a queue: published `mandatory`, and
    /// one the broker returns because nothing is bound for it yet is published again (50 ms
    /// doubling to 1 s) for at most [`UNROUTABLE_FOR`]. For the exchanges federated to other
    /// DCs: a federation link that restarts (after a lost connection, a changed upstream or
    /// policy) deletes and re-creates its bindings on the sending DC's exchange, and what is
    /// published meanwhile would be dropped with a positive confirm.
    pub async fn publish_routed(
        &self,
        exchange: &str,
        routing_key: &str,
        props: impl Into<BasicProperties>,
        body: &[u8],
    ) -> Result<(), PublishError> {
        self.publish_routed_within(exchange, routing_key, props, body, UNROUTABLE_FOR)
            .await
    }

    /// [`Publisher::publish_routed`] that publishes a returned message again only for `within`:
    /// with [`Duration::ZERO`], one that nothing is bound for is `Err(Unroutable)` at once, for
    /// a caller that has another way to send it.
    pub async fn publish_routed_within(
        &self,
        exchange: &str,
        routing_key: &str,
        props: impl Into<BasicProperties>,
        body: &[u8],
        within: Duration,
    ) -> Result<(), PublishError> {
        let (props, extended) = self.stamped(props.into(), body);
        let body = extended.as_deref().unwrap_or(body);
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(50);
        loop {
            match self
                .try_publish(exchange, routing_key, props.clone(), body, true)
                .await
            {
                Ok(()) => return Ok(()),
                Err(Retry::Shutdown) => return Err(PublishError::Shutdown),
                Err(Retry::Unroutable) if started.elapsed() >= within => {
                    if !within.is_zero() {
                        tracing::error!(exchange, routing_key, "unroutable: nothing bound for it");
                    }
                    return Err(PublishError::Unroutable);
                }
                Err(Retry::Again(_)) if started.elapsed() >= self.deadline => {
                    return Err(PublishError::Timeout(self.deadline));
                }
                Err(why) => {
                    if matches!(why, Retry::Unroutable) && pause == Duration::from_millis(50) {
                        tracing::warn!(
                            exchange,
                            routing_key,
                            "returned unroutable (a federation link restarting?); publishing again"
                        );
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// Publishes every message of `batch` (routing key, properties, body) to `exchange`, in
    /// order on one channel, then waits for all their confirms: one round trip for the batch
    /// instead of one per message. Tried once: `Err` when the channel failed or any message
    /// was not confirmed, and then any of them may have reached the broker (the caller sends
    /// the batch again; envelope ids make the copies harmless).
    pub async fn publish_all(
        &self,
        exchange: &str,
        batch: Vec<(String, BasicProperties, Vec<u8>)>,
    ) -> Result<(), PublishError> {
        let mut confirms = Vec::with_capacity(batch.len());
        {
            let mut slot = self.channel.lock().await;
            let ch = match self.channel_in(&mut slot).await {
                Ok(ch) => ch,
                Err(Retry::Shutdown) => return Err(PublishError::Shutdown),
                Err(Retry::Again(why)) => return Err(PublishError::Failed(why)),
                Err(Retry::Unroutable) => return Err(PublishError::Unroutable),
            };
            for (key, props, body) in batch {
                let (props, extended) = self.stamped(props, &body);
                let body = extended.as_deref().unwrap_or(&body);
                match ch
                    .basic_publish(exchange, &key, BasicPublishOptions::default(), body, props)
                    .await
                {
                    Ok(c) => confirms.push(c),
                    Err(e) => {
                        *slot = None;
                        return Err(PublishError::Failed(e.to_string()));
                    }
                }
            }
        }
        let deadline = tokio::time::Instant::now() + self.deadline;
        for confirm in confirms {
            match tokio::time::timeout_at(deadline, confirm).await {
                Ok(Ok(Confirmation::Ack(_) | Confirmation::NotRequested)) => {}
                Ok(Ok(Confirmation::Nack(_))) => {
                    return Err(PublishError::Failed("nacked by broker".into()))
                }
                Ok(Err(e)) => {
                    *self.channel.lock().await = None;
                    return Err(PublishError::Failed(e.to_string()));
                }
                Err(_) => return Err(PublishError::Timeout(self.deadline)),
            }
        }
        Ok(())
    }

    /// `props` with this publisher's version stamped, and for the mixed-version test the
    /// extended body (`None`: `body` as it is).
    fn stamped(&self, props: BasicProperties, body: &[u8]) -> (BasicProperties, Option<Vec<u8>>) {
        let mut headers = props.headers().clone().unwrap_or_default();
        headers.insert(
            ShortString::from(h::WIRE),
            AMQPValue::LongString(LongString::from(self.version.to_string())),
        );
        let mut extended = None;
        if self.newer_minor {
            headers.insert(
                ShortString::from(NEWER_MINOR_FIELD),
                AMQPValue::Boolean(true),
            );
            if let Ok(serde_json::Value::Object(mut o)) = serde_json::from_slice(body) {
                o.insert(NEWER_MINOR_FIELD.into(), serde_json::Value::Bool(true));
                extended = serde_json::to_vec(&o).ok();
            }
        }
        (props.with_headers(headers), extended)
    }

    /// Publishes `props` unchanged (no version stamped): a parked message being moved or put
    /// back keeps the version it was sent with.
    pub async fn publish_as_is(
        &self,
        exchange: &str,
        routing_key: &str,
        props: BasicProperties,
        body: &[u8],
    ) -> Result<(), PublishError> {
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(50);
        loop {
            match self
                .try_publish(exchange, routing_key, props.clone(), body, false)
                .await
            {
                Ok(()) => return Ok(()),
                Err(Retry::Shutdown) => return Err(PublishError::Shutdown),
                // Not mandatory: the broker returns nothing.
                Err(Retry::Unroutable) => return Ok(()),
                Err(Retry::Again(why)) => {
                    if started.elapsed() >= self.deadline {
                        tracing::error!(exchange, routing_key, error = %why, "publish failed");
                        return Err(PublishError::Timeout(self.deadline));
                    }
                    tracing::debug!(exchange, routing_key, error = %why, "publish retry");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// Sends a stanza that could not be handed to its session (`bounced`) back to this DC's
    /// routers, to be routed again without that session: what a gateway's ended session
    /// leaves, what dc-health takes from a dead gateway's queue. Under the key of its sender
    /// (else its addressee), like every stanza of that account, so it keeps its place in the
    /// account's order.
    ///
    /// `of` is the bounced delivery's message id: the bounce's id is derived from it, so a
    /// delivery bounced twice (by its gateway, then again from the queue of that gateway once
    /// dead; or by a drain whose acknowledgement was lost) is one envelope that the routers
    /// handle once.
    pub async fn bounce(
        &self,
        dc: &str,
        epoch: &str,
        body: &[u8],
        bounced: Option<uuid::Uuid>,
        of: Option<&str>,
        hops: u64,
    ) -> Result<(), PublishError> {
        let key = Element::parse(&String::from_utf8_lossy(body))
            .ok()
            .and_then(|el| {
                el.attr("from")
                    .or(el.attr("to"))
                    .map(meerkat_xmpp::addr::bare)
            })
            .unwrap_or_default();
        let props = Props::stanza(RouteKind::Bounce, dc)
            .str(h::ORIGIN_EPOCH, epoch)
            .str(
                h::BOUNCED_SESSION,
                &bounced.map(|s| s.to_string()).unwrap_or_default(),
            )
            .u64(h::HOPS, hops);
        let props = match of {
            Some(of) => props.id(bounce_id(of)),
            None => props,
        };
        self.publish(names::ROUTE_EXCHANGE, &key, props, body).await
    }

    /// Asks the routers of this DC to deliver what is stored for `bare` (offline messages,
    /// pending subscription requests) to its resources available here, if it has any:
    /// published on the routing exchange under the account's own key, so the router partition
    /// that handles its initial presence handles this too, in order with it. Sent whenever
    /// something for the account is stored at this DC (written by a router here, or applied
    /// from another DC), since it may have become available meanwhile.
    pub async fn offline_nudge(&self, origin_dc: &str, bare: &str) -> Result<(), PublishError> {
        let body = Element::new("message", ns::CLIENT)
            .with_attr("from", bare.to_owned())
            .with_attr("to", bare.to_owned())
            .to_xml();
        let props = Props::stanza(RouteKind::Offline, origin_dc).u64(h::HOPS, 0);
        self.publish(names::ROUTE_EXCHANGE, bare, props, body.as_bytes())
            .await
    }

    /// The open channel in `slot`, opened (in confirm mode) if there is none or it failed.
    async fn channel_in(&self, slot: &mut Option<OpenChannel>) -> Result<Channel, Retry> {
        let stale = match slot.as_ref() {
            Some((conn, ch)) => !conn.status().connected() || !ch.status().connected(),
            None => true,
        };
        if stale {
            *slot = None;
            let conn = self.bus.connected().await.ok_or(Retry::Shutdown)?;
            let ch = conn.create_channel().await.map_err(Retry::from)?;
            ch.confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(Retry::from)?;
            *slot = Some((conn, ch));
        }
        match slot.as_ref() {
            Some((_, ch)) => Ok(ch.clone()),
            None => Err(Retry::Again("no channel".into())),
        }
    }

    async fn try_publish(
        &self,
        exchange: &str,
        routing_key: &str,
        props: BasicProperties,
        body: &[u8],
        mandatory: bool,
    ) -> Result<(), Retry> {
        let confirm = {
            let mut slot = self.channel.lock().await;
            let ch = self.channel_in(&mut slot).await?;
            match ch
                .basic_publish(
                    exchange,
                    routing_key,
                    BasicPublishOptions {
                        mandatory,
                        ..BasicPublishOptions::default()
                    },
                    body,
                    props,
                )
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    *slot = None;
                    return Err(Retry::from(e));
                }
            }
        };
        match confirm.await {
            // A mandatory message nothing was bound for comes back before its confirm.
            Ok(Confirmation::Ack(Some(_))) if mandatory => Err(Retry::Unroutable),
            Ok(Confirmation::Ack(_)) | Ok(Confirmation::NotRequested) => Ok(()),
            Ok(Confirmation::Nack(_)) => Err(Retry::Again("nacked by broker".into())),
            Err(e) => {
                *self.channel.lock().await = None;
                Err(Retry::from(e))
            }
        }
    }
}

enum Retry {
    Again(String),
    Unroutable,
    Shutdown,
}

impl From<lapin::Error> for Retry {
    fn from(e: lapin::Error) -> Retry {
        Retry::Again(e.to_string())
    }
}

/// Namespace of bounce ids (a fixed random UUID).
const BOUNCE: uuid::Uuid = uuid::Uuid::from_u128(0x0b7e_52c1_9a44_4f3e_8d21_6c0f_e3a9_7d15);

/// The id of the bounce of the delivery whose id is `of`: the same for every bounce of it.
pub fn bounce_id(of: &str) -> String {
    uuid::Uuid::new_v5(&BOUNCE, of.as_bytes()).to_string()
}

#[cfg(test)]
mod bounce_tests {
    use super::bounce_id;

    #[test]
    fn a_delivery_bounced_twice_is_one_envelope() {
        assert_eq!(bounce_id("d1"), bounce_id("d1"));
        assert_ne!(bounce_id("d1"), bounce_id("d2"));
        // Not the bounced delivery's own id: the routers never saw that one.
        assert_ne!(bounce_id("d1"), "d1");
    }
}
