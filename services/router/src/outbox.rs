//! Deliveries produced while handling one stanza, published together (confirmed) before the
//! stanza is acked. Publishing through one channel in call order keeps per-recipient order.

use lapin::BasicProperties;
use meerkat_bus::{lapin, Headers};
use meerkat_wire::{headers as h, topology as names, SessionInfo, WIRE_VERSION};
use meerkat_xmpp::Element;
use uuid::Uuid;

use crate::Ctx;

/// A session to deliver to: the gateway that holds it and its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub gateway: String,
    pub session: Uuid,
}

impl From<&SessionInfo> for Target {
    fn from(s: &SessionInfo) -> Target {
        Target {
            gateway: s.gateway.clone(),
            session: s.session_id,
        }
    }
}

#[derive(Debug)]
struct Out {
    target: Target,
    kind: &'static str,
    body: String,
}

#[derive(Debug, Default)]
pub struct Outbox {
    items: Vec<Out>,
    /// Hops left, carried on deliveries so a bounce decrements it.
    hops: u64,
}

impl Outbox {
    pub fn new(hops: u64) -> Outbox {
        Outbox {
            items: Vec::new(),
            hops,
        }
    }

    /// Queues a stanza for one session, exactly as the recipient must see it.
    pub fn deliver(&mut self, target: impl Into<Target>, stanza: &Element) {
        self.items.push(Out {
            target: target.into(),
            kind: h::kind::STANZA,
            body: stanza.to_xml(),
        });
    }

    /// Queues a kick: the gateway closes the session with a `<conflict/>` stream error.
    pub fn kick(&mut self, target: impl Into<Target>) {
        self.items.push(Out {
            target: target.into(),
            kind: h::kind::CONFLICT,
            body: String::new(),
        });
    }

    /// Publishes everything queued and waits for every confirm.
    pub async fn flush(&mut self, ctx: &Ctx) -> anyhow::Result<()> {
        let items = std::mem::take(&mut self.items);
        // Started in order: the publisher's channel lock is fair, so the broker sees them in
        // this order; the confirms are awaited together.
        let publishes = items.iter().map(|o| {
            let mut headers = Headers::new()
                .u64(h::WIRE, u64::from(WIRE_VERSION))
                .str(h::ORIGIN_DC, &ctx.config.dc)
                .str(h::SESSION, &o.target.session.to_string())
                .str(h::KIND, o.kind)
                .u64(h::HOPS, self.hops);
            meerkat_runtime::telemetry::inject_context(headers.table());
            let props = BasicProperties::default()
                .with_message_id(Uuid::new_v4().to_string().into())
                .with_content_type(h::CONTENT_XMPP.into())
                .with_delivery_mode(2)
                .with_headers(headers.build());
            ctx.publisher.publish(
                names::DELIVER_EXCHANGE,
                &o.target.gateway,
                props,
                o.body.as_bytes(),
            )
        });
        for r in futures::future::join_all(publishes).await {
            r?;
        }
        Ok(())
    }
}
