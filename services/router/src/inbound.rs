//! One route-queue delivery, read into what the handlers need.

use meerkat_bus::lapin::types::FieldTable;
use meerkat_bus::HeaderExt;
use meerkat_wire::headers as h;
use meerkat_wire::RouteKind;
use meerkat_xmpp::{Element, StanzaKind, StanzaType};
use uuid::Uuid;

use crate::jids;
use crate::outbox::Target;

#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    #[error("body is not a stanza: {0}")]
    NotAStanza(String),
    #[error("stanza without a from")]
    NoFrom(StanzaKind),
    #[error("a {0} message on a route queue")]
    NotRoutable(RouteKind),
}

/// A stanza to route.
#[derive(Clone, Debug)]
pub struct Inbound {
    pub el: Element,
    pub kind: StanzaKind,
    pub ty: StanzaType,
    /// `from` as stamped by the gateway (full JID of the sender), bare part lowercased.
    pub from: String,
    /// Bare JID of `from`.
    pub from_bare: String,
    /// The sending session, when the stanza comes straight from a client.
    pub sender: Option<Sender>,
    /// x-meerkat-initial-presence.
    pub initial: bool,
    /// What the message is (`x-meerkat-kind`): a client's stanza, a bounce (or, re-resolved,
    /// a stanza from another DC whose target session is not here), a stanza from another DC
    /// for one session here, presence for this DC's sessions only, an offline nudge, ...
    pub wire_kind: RouteKind,
    /// On a stanza from another DC: the intended target session (`x-meerkat-session`).
    pub target_session: Option<Uuid>,
    /// Hops left for re-routing.
    pub hops: u64,
    /// Milliseconds since the epoch when the gateway read it.
    pub received_at: Option<u64>,
    /// A fan-out from another DC: its recipients as they came (`x-meerkat-recipients`,
    /// read by fanout.rs).
    pub recipients: Option<String>,
    /// A stanza from another DC routed once this DC had applied the data its DC wrote
    /// before sending it (`x-meerkat-data-applied`).
    pub data_here: bool,
}

#[derive(Clone, Debug)]
pub struct Sender {
    pub target: Target,
    pub version: u64,
}

impl Inbound {
    pub fn parse(body: &[u8], headers: Option<&FieldTable>) -> Result<Inbound, InboundError> {
        let text = String::from_utf8_lossy(body);
        let el = Element::parse(&text).map_err(|e| InboundError::NotAStanza(e.to_string()))?;
        let kind = StanzaKind::of(&el)
            .ok_or_else(|| InboundError::NotAStanza(format!("<{}/> in {}", el.name(), el.ns())))?;
        let ty = StanzaType::of(&el);
        let wire_kind = meerkat_bus::wire::kind(headers)
            .map_err(|e| InboundError::NotAStanza(e.to_string()))?;
        if wire_kind == RouteKind::Conflict {
            return Err(InboundError::NotRoutable(wire_kind));
        }
        let remote = wire_kind == RouteKind::Remote;
        let session_header = headers
            .get_str(h::SESSION)
            .and_then(|s| Uuid::parse_str(&s).ok());
        let from = el
            .attr("from")
            .map(jids::full)
            .or_else(|| headers.get_str(h::SENDER).map(|s| jids::full(&s)))
            // A server-made stanza from another DC (a roster push) speaks for the account
            // it is addressed to.
            .or_else(|| remote.then(|| el.attr("to").map(jids::bare)).flatten())
            .ok_or(InboundError::NoFrom(kind))?;
        // Only a client's own stanza names its sending session; on a stanza from another DC
        // x-meerkat-session is the target, and the sender's session lives elsewhere.
        // A returned stanza is routed again like a new one of its sender's, without a sending
        // session (its sender may well be online; nothing waits).
        let sender = if wire_kind != RouteKind::Stanza {
            None
        } else {
            let gateway = headers.get_str(h::GATEWAY);
            match (session_header, gateway) {
                (Some(session), Some(gateway)) => Some(Sender {
                    target: Target {
                        dc: String::new(),
                        gateway,
                        session,
                    },
                    version: headers.get_u64(h::SESSION_VERSION).unwrap_or(0),
                }),
                _ => None,
            }
        };
        Ok(Inbound {
            from_bare: jids::bare(&from),
            from,
            kind,
            ty,
            sender,
            initial: headers.get_bool(h::INITIAL_PRESENCE),
            wire_kind,
            // On a stanza for a room: its sender's session (muc/).
            target_session: if remote || wire_kind == RouteKind::Room {
                session_header
            } else {
                None
            },
            hops: headers.get_u64(h::HOPS).unwrap_or(3),
            received_at: headers.get_u64(h::RECEIVED_AT),
            recipients: headers
                .get_str(h::RECIPIENTS)
                .filter(|_| wire_kind == RouteKind::Fanout),
            data_here: remote && headers.get_bool(h::DATA_APPLIED),
            el,
        })
    }

    /// A bounce (re-resolved, with one hop fewer).
    pub fn is_bounce(&self) -> bool {
        self.wire_kind == RouteKind::Bounce
    }

    /// The sender's username (node of the bare JID).
    pub fn username(&self) -> &str {
        jids::split_bare(&self.from_bare).0.unwrap_or("")
    }
}
