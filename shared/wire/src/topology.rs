//! Exchange, queue and routing-key names. Every service declares what it uses idempotently.

/// Client stanzas on their way to a router: a consistent-hash exchange whose routing key is
/// the sender's bare JID, so one sender's stanzas always land in the same partition queue.
pub const ROUTE_EXCHANGE: &str = "meerkat.route";
/// Number of route partitions (queues bound to [`ROUTE_EXCHANGE`]). Each has a single active
/// consumer, which keeps per-sender order however many routers run. Fixed per deployment.
pub const ROUTE_PARTITIONS: u16 = 8;

/// The partition queue `n` of the route exchange.
pub fn route_queue(n: u16) -> String {
    format!("meerkat.route.p{n:02}")
}

/// Stanzas to deliver to a gateway: direct exchange, routing key = gateway instance id.
pub const DELIVER_EXCHANGE: &str = "meerkat.deliver";

/// The delivery queue of one gateway instance.
pub fn gateway_queue(instance: &str) -> String {
    format!("meerkat.gateway.{instance}")
}

/// Handover requests (XEP-0198 resumption at another gateway) from this DC's gateways, on the
/// default exchange (routing key = this name): every router consumes it, in no particular
/// order, apart from the route partitions, so a request never waits behind stanzas. A request
/// older than [`HANDOVER_REQUEST_TTL_MS`] is dropped: its gateway gave up on it.
pub const HANDOVER_REQUESTS_QUEUE: &str = "meerkat.handover.requests";

/// How long a handover request waits in [`HANDOVER_REQUESTS_QUEUE`] (the resuming gateway
/// waits 5 s for the answer).
pub const HANDOVER_REQUEST_TTL_MS: u32 = 5_000;

/// Session events (open / presence / close) from the gateways of this DC: fanout, each router
/// binds its own queue and rebuilds its in-memory directory from it.
pub const SESSIONS_EXCHANGE: &str = "meerkat.sessions";

/// The session-event queue of one router instance.
pub fn router_sessions_queue(instance: &str) -> String {
    format!("meerkat.sessions.{instance}")
}

/// Control events of the DC (`meerkat_wire::ControlEvent`: "announce your sessions again" when
/// a router starts, DC status, a gateway gone): fanout, each interested instance binds its own
/// queue ([`control_queue`]).
pub const CONTROL_EXCHANGE: &str = "meerkat.control";

/// An idle gateway queue (its gateway gone for good) is removed after this long.
pub const GATEWAY_QUEUE_EXPIRES_MS: u32 = 10 * 60 * 1000;

// ---- Between DCs (federated exchanges; each DC's broker federates them from every other DC,
// max-hops 1, ack-mode on-confirm). Bindings propagate upstream, so a DC's broker only buffers
// what another DC has bound.

/// Stanzas for sessions at another DC: direct exchange, routing key = target DC id.
pub const INTER_STANZAS_EXCHANGE: &str = "meerkat.inter.stanzas";

/// A DC's inbound queue of stanzas from other DCs, bound with its own DC id; single active
/// consumer, so stanzas of one sender keep their order into the route partitions.
pub fn inter_stanzas_queue(dc: &str) -> String {
    format!("meerkat.inter.stanzas.{dc}")
}

/// A gateway's own routing key on [`INTER_STANZAS_EXCHANGE`] (since 1.9): its delivery queue is
/// bound with it too, so that a handover step from another DC reaches it straight, past the
/// routers of both DCs. The DC is in it, since instance ids are unique only within a DC.
pub fn gateway_inter_key(dc: &str, instance: &str) -> String {
    format!("gateway.{dc}.{instance}")
}

/// Sequenced session events of every DC: topic exchange, routing key = origin DC id.
pub const INTER_SESSIONS_EXCHANGE: &str = "meerkat.inter.sessions";

/// A DC's queue of the other DCs' session events (its replicator consumes it).
pub fn inter_sessions_queue(dc: &str) -> String {
    format!("meerkat.inter.sessions.{dc}")
}

/// Persistent-data changes of every DC (`meerkat_wire::data::DataChange`): topic exchange,
/// routing key = origin DC id.
pub const INTER_DATA_EXCHANGE: &str = "meerkat.inter.data";

/// A DC's queue of the other DCs' data changes (its replicator applies them).
pub fn inter_data_queue(dc: &str) -> String {
    format!("meerkat.inter.data.{dc}")
}

/// Snapshot requests and snapshots between replicators: direct, routing key = target DC id.
pub const INTER_CONTROL_EXCHANGE: &str = "meerkat.inter.control";

/// A DC's queue of control messages from other DCs.
pub fn inter_control_queue(dc: &str) -> String {
    format!("meerkat.inter.control.{dc}")
}

/// Heartbeats of every DC's health service (`meerkat_wire::Heartbeat`): topic exchange,
/// routing key = origin DC id. Federated; its upstream queues keep a beat a few seconds only.
pub const INTER_HEALTH_EXCHANGE: &str = "meerkat.inter.health";

/// A DC's queue of the other DCs' heartbeats (its health service consumes it).
pub fn inter_health_queue(dc: &str) -> String {
    format!("meerkat.inter.health.{dc}")
}

/// Heartbeats of the DC's own processes (gateways: routing key [`gateway_heartbeat_key`]):
/// topic exchange, not federated.
pub const HEALTH_EXCHANGE: &str = "meerkat.health";

/// Routing key of a gateway's heartbeats on [`HEALTH_EXCHANGE`].
pub fn gateway_heartbeat_key(instance: &str) -> String {
    format!("gateway.{instance}")
}

/// The local heartbeat queue of a DC's health service.
pub fn health_queue(dc: &str) -> String {
    format!("meerkat.health.{dc}")
}

/// Dead-letter exchange of the federation queues that carry stanzas towards other DCs (a
/// policy on the sending broker sets it, with a message TTL): fanout, not federated. What
/// expires there because the other DC does not take it comes back to this DC's routers.
pub const INTER_RETURNED_EXCHANGE: &str = "meerkat.inter.returned";

/// A DC's queue of stanzas returned by [`INTER_RETURNED_EXCHANGE`] (durable; its routers
/// consume it).
pub fn inter_returned_queue(dc: &str) -> String {
    format!("meerkat.inter.returned.{dc}")
}

/// The control queue of any instance that listens to [`CONTROL_EXCHANGE`] (exclusive).
pub fn control_queue(instance: &str) -> String {
    format!("meerkat.control.{instance}")
}

/// The local session events queue of a DC's session replicator (durable: events that arrive
/// while it restarts wait for it).
pub fn replicator_sessions_queue(dc: &str) -> String {
    format!("meerkat.sessions.replicator.{dc}")
}

/// The XMPP address of a DC: `dc1` serving `example.com` is `dc1.example.com`.
pub fn dc_address(dc: &str, domain: &str) -> String {
    format!("{dc}.{domain}")
}

/// A DC's parking queue: messages its services received but could not handle — another major
/// wire version, a kind or event this version does not know, an unreadable body — kept
/// (durable, visible in the management UI) until `meerkatctl parked replay` puts them back
/// into the queues they came from, after the upgrade. Published through the default exchange.
pub const PARKED_QUEUE: &str = "meerkat.parked";
