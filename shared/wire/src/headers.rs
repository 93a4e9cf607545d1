//! AMQP header names. The AMQP `message_id` property carries the envelope id (a UUID) used
//! for de-duplication; `timestamp` the publish time in seconds; `content_type` is
//! `application/xmpp+xml` for stanzas and `application/json` for events.

/// Wire format version (u32).
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
/// Gateway instance that owns the sending session.
pub const GATEWAY: &str = "x-meerkat-gateway";
/// Version of the sending session's entry when the stanza was sent.
pub const SESSION_VERSION: &str = "x-meerkat-session-version";
/// What a route or deliver message is: see [`kind`].
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
/// W3C trace context.
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

pub mod kind {
    /// A stanza sent by a client of this DC.
    pub const STANZA: &str = "stanza";
    /// A stanza the gateway could not hand to its session (session gone): route it again.
    pub const BOUNCE: &str = "bounce";
    /// Route: a stanza that came from another DC for a session here (or one that was here).
    pub const REMOTE: &str = "remote";
    /// Deliver: close the target session with a `<conflict/>` stream error (replaced).
    pub const CONFLICT: &str = "conflict";
    /// Route: a stanza for another DC that expired in the federation queue towards it (the
    /// queue's dead-letter exchange brought it back): route it again; the target session is
    /// not forgotten (its DC may be slow, not dead).
    pub const RETURNED: &str = "returned";
    /// Route: presence this DC made for a session of another DC — unavailable when that DC
    /// is declared down, its last presence when it is back — broadcast to the contacts'
    /// sessions at this DC only (every DC does its own).
    pub const LOCAL_PRESENCE: &str = "local-presence";
    /// Route (local to a DC): something was stored for this account (an offline message, a
    /// pending subscription request; written here or applied from another DC): deliver what
    /// is stored to its resources available here, if any. The body is
    /// `<message from='BARE' to='BARE'/>`, naming the account. (The value predates the
    /// subscription requests; it is kept so that routers of both versions understand it.)
    pub const OFFLINE: &str = "offline";
}

/// Namespace of the readable envelope a stanza travels in between DCs:
/// `<route xmlns='urn:xmpp:meerkat:route:1' from='dc1.example.com' to='dc2.example.com'>…</route>`.
pub const ROUTE_NS: &str = "urn:xmpp:meerkat:route:1";

pub const CONTENT_XMPP: &str = "application/xmpp+xml";
pub const CONTENT_JSON: &str = "application/json";
