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

/// Session events (open / presence / close) from the gateways of this DC: fanout, each router
/// binds its own queue and rebuilds its in-memory directory from it.
pub const SESSIONS_EXCHANGE: &str = "meerkat.sessions";

/// The session-event queue of one router instance.
pub fn router_sessions_queue(instance: &str) -> String {
    format!("meerkat.sessions.{instance}")
}

/// Control requests to every gateway of the DC (e.g. "announce your sessions again" when a
/// router starts): fanout, each gateway binds its own queue.
pub const CONTROL_EXCHANGE: &str = "meerkat.control";

/// The control queue of one gateway instance.
pub fn gateway_control_queue(instance: &str) -> String {
    format!("meerkat.control.{instance}")
}

/// An idle gateway queue (its gateway gone for good) is removed after this long.
pub const GATEWAY_QUEUE_EXPIRES_MS: u32 = 10 * 60 * 1000;
