//! What a stanza message on the route, deliver or inter-DC stanza exchanges is: the
//! `x-meerkat-kind` header. One enum, so a receiver matches on it instead of comparing strings;
//! a value it does not know (a kind added by a newer minor version) is an error, and the
//! message is parked (docs/protocol.md, "Compatibility").
//!
//! Adding a kind: a variant here, its name in [`RouteKind::ALL`], and its handling where it is
//! consumed; older receivers park it until they are upgraded.

use std::fmt;

/// The value of `x-meerkat-kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouteKind {
    /// A stanza sent by a client of this DC (route), or one to hand to a session (deliver).
    Stanza,
    /// A stanza the gateway could not hand to its session (session gone): route it again.
    Bounce,
    /// Route: a stanza that came from another DC for a session here (or one that was here).
    Remote,
    /// Deliver: close the target session with a `<conflict/>` stream error (replaced).
    Conflict,
    /// Route: a stanza for another DC that expired in the federation queue towards it (the
    /// queue's dead-letter exchange brought it back): route it again; the target session is
    /// not forgotten (its DC may be slow, not dead).
    Returned,
    /// Route: presence this DC made for a session of another DC — unavailable when that DC
    /// is declared down, its last presence when it is back — broadcast to the contacts'
    /// sessions at this DC only (every DC does its own).
    LocalPresence,
    /// Route (local to a DC): something was stored for this account (an offline message, a
    /// pending subscription request; written here or applied from another DC): deliver what
    /// is stored to its resources available here, if any. The body is
    /// `<message from='BARE' to='BARE'/>`, naming the account. (The value `offline` predates
    /// the subscription requests; it is kept so that routers of both versions understand it.)
    Offline,
    /// Deliver (gateway to gateway, through the routers of the target's DC when it is another):
    /// a step of handing a stream-managed session over to the gateway where its client resumed
    /// ([`crate::handover`]). Since wire 1.1.
    Handover,
    /// Route: a stanza for a multi-user chat room (or one of its occupants) on its way to the
    /// room's home DC, published by the router that took it from its sender, routing key =
    /// the room's bare JID: the room's partition at its home handles the room's stanzas one at
    /// a time (docs/muc.md). `x-meerkat-session`/`-session-version` name the sender's session.
    /// Since issue 19.
    Room,
    /// Deliver, or route when it came from another DC: one stanza for several sessions, each
    /// copy addressed and identified on its own ([`crate::fanout`]): to a gateway, which
    /// hands each copy to its session; to another DC, whose router delivers each copy to its
    /// session there or routes it again. Since wire 1.5.
    Fanout,
    /// Deliver: several stanzas for sessions of one gateway in one message, each with its own
    /// session and id ([`crate::fanout`]): what one handling queued, in order. Since wire 1.5.
    Bundle,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown x-meerkat-kind {0:?}")]
pub struct UnknownKind(pub String);

impl RouteKind {
    /// Every kind this version knows.
    pub const ALL: [RouteKind; 11] = [
        RouteKind::Stanza,
        RouteKind::Bounce,
        RouteKind::Remote,
        RouteKind::Conflict,
        RouteKind::Returned,
        RouteKind::LocalPresence,
        RouteKind::Offline,
        RouteKind::Handover,
        RouteKind::Room,
        RouteKind::Fanout,
        RouteKind::Bundle,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RouteKind::Stanza => "stanza",
            RouteKind::Bounce => "bounce",
            RouteKind::Remote => "remote",
            RouteKind::Conflict => "conflict",
            RouteKind::Returned => "returned",
            RouteKind::LocalPresence => "local-presence",
            RouteKind::Offline => "offline",
            RouteKind::Handover => "handover",
            RouteKind::Room => "room",
            RouteKind::Fanout => "fanout",
            RouteKind::Bundle => "bundle",
        }
    }

    /// Reads a header value. An absent header is [`RouteKind::Stanza`] (what a gateway's
    /// first releases sent), for the caller to decide.
    pub fn parse(s: &str) -> Result<RouteKind, UnknownKind> {
        RouteKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownKind(s.chars().take(64).collect()))
    }
}

impl fmt::Display for RouteKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_and_others_are_unknown() {
        for k in RouteKind::ALL {
            assert_eq!(RouteKind::parse(k.as_str()), Ok(k));
        }
        assert_eq!(
            RouteKind::parse("recheck"),
            Err(UnknownKind("recheck".into()))
        );
        assert!(RouteKind::parse("").is_err());
        assert!(RouteKind::parse("Stanza").is_err());
    }
}
