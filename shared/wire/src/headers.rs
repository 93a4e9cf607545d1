//! AMQP header names. The AMQP `message_id` property carries the envelope id (a UUID) used
//! for de-duplication; `timestamp` the publish time in seconds; `content_type` is
//! `application/xmpp+xml` for stanzas and `application/json` for events.

/// Wire format version, `MAJOR.MINOR` as a string ([`crate::WireVersion`]); a bare integer
/// (the first releases) is a major version.
pub const WIRE: &str = "x-meerkat-wire";
/// DC the message entered the system at (e.g. `dc1`).
pub const ORIGIN_DC: &str = "x-meerkat-origin-dc";
/// DC the message is addressed to (inter-DC traffic).
pub const TARGET_DC: &str = "x-meerkat-target-dc";
/// Epoch of the origin DC (changes on every DC restart).
pub const ORIGIN_EPOCH: &str = "x-meerkat-origin-epoch";
/// Hops left before a re-routed stanza falls back to RFC 6121 offline handling.
pub const HOPS: &str = "x-meerkat-hops";
/// Full JID of the sender as authenticated by the gateway.
pub const SENDER: &str = "x-meerkat-sender";
/// Session id of the sending session (route) or of the target session (deliver).
pub const SESSION: &str = "x-meerkat-session";
/// A fan-out's recipients (kind `fanout`): JSON, see [`crate::fanout`].
pub const RECIPIENTS: &str = "x-meerkat-recipients";
/// Gateway instance that owns the sending session.
pub const GATEWAY: &str = "x-meerkat-gateway";
/// Version of the sending session's entry when the stanza was sent.
pub const SESSION_VERSION: &str = "x-meerkat-session-version";
/// What a route, deliver or inter-DC stanza message is: [`crate::RouteKind`].
pub const KIND: &str = "x-meerkat-kind";
/// Set on a presence stanza that is the session's initial presence (it was unavailable).
pub const INITIAL_PRESENCE: &str = "x-meerkat-initial-presence";
/// On a bounced stanza: the session that was gone when the gateway tried to deliver.
pub const BOUNCED_SESSION: &str = "x-meerkat-bounced-session";
/// Milliseconds since the epoch when the client's stanza was read by the gateway.
pub const RECEIVED_AT: &str = "x-meerkat-received-at";
/// On a stanza sent to another DC after its sender's DC wrote persistent data: that
/// database's epoch and outbox sequence. The receiving DC routes the stanza once it has
/// applied that far (waiting a bounded time), so a stanza never overtakes the data it
/// announces (e.g. a subscription request).
pub const DATA_EPOCH: &str = "x-meerkat-data-epoch";
pub const DATA_SEQ: &str = "x-meerkat-data-seq";
/// Set by the receiving DC's inter-DC consumer on a stanza it routes once this DC had applied
/// the data named by [`DATA_EPOCH`]/[`DATA_SEQ`] (not after a wait that timed out): what this
/// DC's store says is then at least as new as what the stanza announces, so a roster push
/// can be written from it (router `handlers/roster.rs`, `as_here`).
pub const DATA_APPLIED: &str = "x-meerkat-data-applied";
/// On a [`crate::RouteKind::Handover`] message: the step (`request`, `moved`, `refused`,
/// `forward`, `fence`; [`crate::handover`]).
pub const HANDOVER: &str = "x-meerkat-handover";
/// W3C trace context.
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

// ---- On a message in a DC's parking queue (`meerkat.parked`): where it was taken from and
// why, so that `meerkatctl parked replay` can put it back.
/// The queue the message was consumed from.
pub const PARKED_QUEUE: &str = "x-meerkat-parked-queue";
/// Why it was parked (e.g. `wire 2.0`, `kind recheck`, `unreadable: ...`).
pub const PARKED_REASON: &str = "x-meerkat-parked-reason";
/// The instance that parked it.
pub const PARKED_BY: &str = "x-meerkat-parked-by";
/// Milliseconds since the Unix epoch when it was parked.
pub const PARKED_AT: &str = "x-meerkat-parked-at";

/// Namespace of the readable envelope a stanza travels in between DCs:
/// `<route xmlns='urn:xmpp:meerkat:route:1' from='dc1.example.com' to='dc2.example.com'>…</route>`.
pub const ROUTE_NS: &str = "urn:xmpp:meerkat:route:1";

pub const CONTENT_XMPP: &str = "application/xmpp+xml";
pub const CONTENT_JSON: &str = "application/json";
