//! Declares the DC's exchanges and queues. Idempotent: every service declares what it uses
//! whenever it (re)connects, so a broker that lost its definitions is rebuilt by the services.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};
use meerkat_wire::topology as names;

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    }
}

/// The exchanges every service of a DC publishes to.
pub async fn declare_exchanges(ch: &Channel) -> Result<(), lapin::Error> {
    ch.exchange_declare(
        names::ROUTE_EXCHANGE,
        ExchangeKind::Custom("x-consistent-hash".into()),
        durable_exchange(),
        FieldTable::default(),
    )
    .await?;
    ch.exchange_declare(
        names::DELIVER_EXCHANGE,
        ExchangeKind::Direct,
        durable_exchange(),
        FieldTable::default(),
    )
    .await?;
    ch.exchange_declare(
        names::SESSIONS_EXCHANGE,
        ExchangeKind::Fanout,
        durable_exchange(),
        FieldTable::default(),
    )
    .await?;
    ch.exchange_declare(
        names::CONTROL_EXCHANGE,
        ExchangeKind::Fanout,
        durable_exchange(),
        FieldTable::default(),
    )
    .await?;
    // Declared up front so operators find it (empty) in the management UI.
    crate::parking::declare_parked_queue(ch).await?;
    Ok(())
}

/// The route partition queues: durable, single active consumer, equal weight.
pub async fn declare_route_partitions(ch: &Channel) -> Result<(), lapin::Error> {
    declare_exchanges(ch).await?;
    for n in 0..names::ROUTE_PARTITIONS {
        let mut args = FieldTable::default();
        args.insert(
            ShortString::from("x-single-active-consumer"),
            AMQPValue::Boolean(true),
        );
        let queue = names::route_queue(n);
        ch.queue_declare(
            &queue,
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await?;
        // For the consistent-hash exchange the binding key is the partition's weight.
        ch.queue_bind(
            &queue,
            names::ROUTE_EXCHANGE,
            "1",
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    Ok(())
}

/// A gateway's delivery queue: durable so a broker restart keeps what was in flight, and
/// expiring once its gateway has been gone for a while. Bound on the deliver exchange with the
/// instance id, and on the inter-DC stanza exchange with the gateway's own key there, for the
/// handover steps of another DC ([`names::gateway_inter_key`]).
pub async fn declare_gateway_queue(
    ch: &Channel,
    dc: &str,
    instance: &str,
) -> Result<String, lapin::Error> {
    declare_exchanges(ch).await?;
    declare_inter_stanzas_exchange(ch).await?;
    let queue = names::gateway_queue(instance);
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("x-expires"),
        AMQPValue::LongUInt(names::GATEWAY_QUEUE_EXPIRES_MS),
    );
    ch.queue_declare(
        &queue,
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        args,
    )
    .await?;
    ch.queue_bind(
        &queue,
        names::DELIVER_EXCHANGE,
        instance,
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    ch.queue_bind(
        &queue,
        names::INTER_STANZAS_EXCHANGE,
        &names::gateway_inter_key(dc, instance),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    Ok(queue)
}

/// The DC's queue of handover requests, published on the default exchange by the gateways and
/// consumed by every router.
pub async fn declare_handover_requests(ch: &Channel) -> Result<(), lapin::Error> {
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("x-message-ttl"),
        AMQPValue::LongUInt(names::HANDOVER_REQUEST_TTL_MS),
    );
    ch.queue_declare(
        names::HANDOVER_REQUESTS_QUEUE,
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        args,
    )
    .await?;
    Ok(())
}

/// A per-instance queue on a fanout exchange that lives as long as the instance's connection.
pub async fn declare_instance_queue(
    ch: &Channel,
    queue: &str,
    exchange: &str,
) -> Result<(), lapin::Error> {
    declare_exchanges(ch).await?;
    ch.queue_declare(
        queue,
        QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await?;
    ch.queue_bind(
        queue,
        exchange,
        "",
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    Ok(())
}

/// The federated exchange of stanzas between DCs (direct, routing key = target DC). The
/// federation setup declares it with the same arguments; declaring it here too lets a router
/// publish before (or without) that setup.
pub async fn declare_inter_stanzas_exchange(ch: &Channel) -> Result<(), lapin::Error> {
    declare_federated(ch, names::INTER_STANZAS_EXCHANGE).await
}

/// Declares federated exchange `name` with the type `meerkat_wire::federation` gives it (the
/// type the federation setup declares it with).
async fn declare_federated(ch: &Channel, name: &str) -> Result<(), lapin::Error> {
    let kind = meerkat_wire::federation::FEDERATED_EXCHANGES
        .iter()
        .find(|e| e.name == name)
        .map_or(ExchangeKind::Topic, |e| match e.kind {
            "direct" => ExchangeKind::Direct,
            "topic" => ExchangeKind::Topic,
            other => ExchangeKind::Custom(other.to_owned()),
        });
    ch.exchange_declare(name, kind, durable_exchange(), FieldTable::default())
        .await
}

/// A DC's inbound queue of stanzas from the other DCs: durable, single active consumer (one
/// router of the DC at a time, so each sender's stanzas keep their order), bound to the inter
/// stanza exchange with the DC's own id. Returns the queue name.
pub async fn declare_inter_stanzas_queue(ch: &Channel, dc: &str) -> Result<String, lapin::Error> {
    declare_inter_stanzas_exchange(ch).await?;
    let queue = names::inter_stanzas_queue(dc);
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("x-single-active-consumer"),
        AMQPValue::Boolean(true),
    );
    ch.queue_declare(
        &queue,
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        args,
    )
    .await?;
    ch.queue_bind(
        &queue,
        names::INTER_STANZAS_EXCHANGE,
        dc,
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    Ok(queue)
}

/// The federated exchanges of the session replicators: sequenced session events (topic,
/// routing key = origin DC) and snapshot requests/snapshots (direct, routing key = target DC).
/// Same arguments as the federation setup declares them with.
pub async fn declare_inter_replication_exchanges(ch: &Channel) -> Result<(), lapin::Error> {
    for name in [
        names::INTER_SESSIONS_EXCHANGE,
        names::INTER_CONTROL_EXCHANGE,
        names::INTER_DATA_EXCHANGE,
    ] {
        declare_federated(ch, name).await?;
    }
    Ok(())
}

/// A DC's queue of the other DCs' persistent-data changes, `meerkat.inter.data.<dc>` bound
/// with each peer's id (durable; declared only where data replication runs, or it would fill
/// unread).
pub async fn declare_data_queue(
    ch: &Channel,
    dc: &str,
    peers: &[String],
) -> Result<(), lapin::Error> {
    declare_inter_replication_exchanges(ch).await?;
    let queue = names::inter_data_queue(dc);
    ch.queue_declare(
        &queue,
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await?;
    bind_peers(ch, &queue, names::INTER_DATA_EXCHANGE, peers).await
}

/// Binds `queue` to the federated topic exchange `exchange` (routing key = origin DC) with
/// each peer's id, so that it gets what the other DCs publish and not what its own DC does:
/// each DC's own stream would otherwise come back to it, to be stored, delivered, read and
/// dropped. Queues of versions before 1.7 were bound with `#`: that binding is removed.
async fn bind_peers(
    ch: &Channel,
    queue: &str,
    exchange: &str,
    peers: &[String],
) -> Result<(), lapin::Error> {
    for peer in peers {
        ch.queue_bind(
            queue,
            exchange,
            peer,
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    ch.queue_unbind(queue, exchange, "#", FieldTable::default())
        .await
}

/// A DC's replicator queues: `meerkat.inter.sessions.<dc>` bound with each peer's id (the other
/// DCs' streams), `meerkat.inter.control.<dc>` bound with the DC's id, and
/// `meerkat.sessions.replicator.<dc>` on the local session fanout. All durable: what arrives
/// while the replicator restarts waits for it.
pub async fn declare_replicator_queues(
    ch: &Channel,
    dc: &str,
    peers: &[String],
) -> Result<(), lapin::Error> {
    declare_exchanges(ch).await?;
    declare_inter_replication_exchanges(ch).await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let sessions = names::inter_sessions_queue(dc);
    ch.queue_declare(&sessions, durable, FieldTable::default())
        .await?;
    bind_peers(ch, &sessions, names::INTER_SESSIONS_EXCHANGE, peers).await?;
    let bindings = [
        (
            names::inter_control_queue(dc),
            names::INTER_CONTROL_EXCHANGE,
            dc,
        ),
        (
            names::replicator_sessions_queue(dc),
            names::SESSIONS_EXCHANGE,
            "",
        ),
    ];
    for (queue, exchange, key) in bindings {
        ch.queue_declare(&queue, durable, FieldTable::default())
            .await?;
        ch.queue_bind(
            &queue,
            exchange,
            key,
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    Ok(())
}

/// The heartbeat exchanges: `meerkat.inter.health` (federated, topic, routing key = origin DC)
/// and the DC's own `meerkat.health` (topic, gateways' beats).
pub async fn declare_health_exchanges(ch: &Channel) -> Result<(), lapin::Error> {
    declare_federated(ch, names::INTER_HEALTH_EXCHANGE).await?;
    ch.exchange_declare(
        names::HEALTH_EXCHANGE,
        ExchangeKind::Topic,
        durable_exchange(),
        FieldTable::default(),
    )
    .await
}

/// How long a heartbeat waits in a health service's queue: an older beat is noise, and a
/// health service that restarts must not read a backlog of them. Part of the queues'
/// arguments, so it cannot change without deleting the queues.
pub const HEALTH_QUEUE_TTL_MS: u32 = 3_000;

/// The queues of a DC's health service, durable with a message TTL: `meerkat.inter.health.<dc>`
/// bound with `#` (every DC's beats; its own are ignored by the consumer) and
/// `meerkat.health.<dc>` bound with `gateway.*` (the DC's gateways).
pub async fn declare_health_queues(ch: &Channel, dc: &str) -> Result<(), lapin::Error> {
    declare_health_exchanges(ch).await?;
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("x-message-ttl"),
        AMQPValue::LongUInt(HEALTH_QUEUE_TTL_MS),
    );
    let bindings = [
        (
            names::inter_health_queue(dc),
            names::INTER_HEALTH_EXCHANGE,
            "#".to_owned(),
        ),
        (
            names::health_queue(dc),
            names::HEALTH_EXCHANGE,
            names::gateway_heartbeat_key("*"),
        ),
    ];
    for (queue, exchange, key) in bindings {
        ch.queue_declare(
            &queue,
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            args.clone(),
        )
        .await?;
        ch.queue_bind(
            &queue,
            exchange,
            &key,
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    Ok(())
}

/// The dead-letter exchange of the federation queues towards other DCs (fanout) and the DC's
/// durable queue of what comes back through it, `meerkat.inter.returned.<dc>`. Declared by
/// the routers (which consume it) and by the federation setup, so that nothing that expires
/// is dropped for want of a queue.
pub async fn declare_returned_queue(ch: &Channel, dc: &str) -> Result<String, lapin::Error> {
    ch.exchange_declare(
        names::INTER_RETURNED_EXCHANGE,
        ExchangeKind::Fanout,
        durable_exchange(),
        FieldTable::default(),
    )
    .await?;
    let queue = names::inter_returned_queue(dc);
    ch.queue_declare(
        &queue,
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await?;
    ch.queue_bind(
        &queue,
        names::INTER_RETURNED_EXCHANGE,
        "",
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    Ok(queue)
}

/// Makes a header value a long string (for callers building tables by hand).
pub fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// Where a message for the gateway `gateway` at DC `dc` (a handover step) is published, seen
/// from DC `own`: built by [`gateway_route`].
pub struct GatewayRoute {
    pub exchange: &'static str,
    pub key: String,
    /// For a gateway at another DC reached on its own key: that DC's key, through its routers,
    /// for when nothing is bound on the gateway's (a gateway of 1.8 or before).
    pub via_routers: Option<String>,
    /// `props` given, with the target headers another DC's routers read.
    pub props: crate::Props,
}

impl GatewayRoute {
    /// Whether it crosses to another DC (over federation, where a publish is made mandatory).
    pub fn inter_dc(&self) -> bool {
        self.exchange == names::INTER_STANZAS_EXCHANGE
    }
}

/// The one rule for reaching a gateway: in DC `own`, the deliver exchange with its instance
/// id; at another DC, the inter-DC stanza exchange, with the gateway's own key when `direct`
/// (past the routers of both DCs, [`names::gateway_inter_key`]) or else with its DC's key, and
/// the headers naming the target DC and gateway.
pub fn gateway_route(
    own: &str,
    dc: &str,
    gateway: &str,
    direct: bool,
    props: crate::Props,
) -> GatewayRoute {
    use meerkat_wire::headers as h;
    if dc.is_empty() || dc == own {
        return GatewayRoute {
            exchange: names::DELIVER_EXCHANGE,
            key: gateway.to_owned(),
            via_routers: None,
            props,
        };
    }
    let props = props.str(h::TARGET_DC, dc).str(h::GATEWAY, gateway);
    let (key, via_routers) = if direct {
        (names::gateway_inter_key(dc, gateway), Some(dc.to_owned()))
    } else {
        (dc.to_owned(), None)
    };
    GatewayRoute {
        exchange: names::INTER_STANZAS_EXCHANGE,
        key,
        via_routers,
        props,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gateway_is_reached_by_one_rule() {
        let props = || crate::Props::stanza(meerkat_wire::RouteKind::Handover, "dc1");
        let here = gateway_route("dc1", "dc1", "gw-a", true, props());
        assert_eq!(
            (here.exchange, here.key.as_str()),
            (names::DELIVER_EXCHANGE, "gw-a")
        );
        assert!(!here.inter_dc() && here.via_routers.is_none());
        let unnamed = gateway_route("dc1", "", "gw-a", false, props());
        assert_eq!(unnamed.exchange, names::DELIVER_EXCHANGE);
        let straight = gateway_route("dc1", "dc2", "gw-b", true, props());
        assert!(straight.inter_dc());
        assert_eq!(straight.key, names::gateway_inter_key("dc2", "gw-b"));
        assert_eq!(straight.via_routers.as_deref(), Some("dc2"));
        let routed = gateway_route("dc1", "dc2", "gw-b", false, props());
        assert_eq!((routed.key.as_str(), routed.via_routers), ("dc2", None));
        use crate::HeaderExt;
        let props = lapin::BasicProperties::from(routed.props);
        let headers = props.headers().as_ref();
        assert_eq!(
            headers.get_str(meerkat_wire::headers::TARGET_DC).as_deref(),
            Some("dc2")
        );
        assert_eq!(
            headers.get_str(meerkat_wire::headers::GATEWAY).as_deref(),
            Some("gw-b")
        );
    }
}
