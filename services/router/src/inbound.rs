//! One route-queue delivery, read into what the handlers need.

use meerkat_bus::lapin::types::FieldTable;
use meerkat_bus::HeaderExt;
use meerkat_wire::headers as h;
use meerkat_xmpp::{Element, StanzaKind, StanzaType};
use uuid::Uuid;

use crate::jids;
use crate::outbox::Target;

#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    #[error("body is not a stanza: {0}")]
    NotAStanza(String),
    #[error("stanza without a from")]
    NoFrom,
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
    /// Came back from a gateway that no longer had the target session (or, re-resolved, a
    /// stanza from another DC whose target session is not here).
    pub is_bounce: bool,
    /// Came from another DC (`x-meerkat-kind=remote`) for one session here.
    pub is_remote: bool,
    /// Presence this DC made for a session of another DC declared down or back
    /// (`x-meerkat-kind=local-presence`): for this DC's sessions only.
    pub local_only: bool,
    /// Offline messages of the account in `to` came from another DC while it is available here
    /// (`x-meerkat-kind=offline`): deliver them.
    pub offline_nudge: bool,
    /// On a stanza from another DC: the intended target session (`x-meerkat-session`).
    pub target_session: Option<Uuid>,
    /// Hops left for re-routing.
    pub hops: u64,
    /// Milliseconds since the epoch when the gateway read it.
    pub received_at: Option<u64>,
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
        let kind_header = headers.get_str(h::KIND);
        let bounce = kind_header.as_deref() == Some(h::kind::BOUNCE);
        let remote = kind_header.as_deref() == Some(h::kind::REMOTE);
        let local_only = kind_header.as_deref() == Some(h::kind::LOCAL_PRESENCE);
        let offline_nudge = kind_header.as_deref() == Some(h::kind::OFFLINE);
        // A stanza that expired on its way to another DC is routed again like a new one of its
        // sender's, without a sending session (its sender may well be online; nothing waits).
        let returned = kind_header.as_deref() == Some(h::kind::RETURNED);
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
            .ok_or(InboundError::NoFrom)?;
        // Only a client's own stanza names its sending session; on a stanza from another DC
        // x-meerkat-session is the target, and the sender's session lives elsewhere.
        let sender = if bounce || remote || returned || local_only || offline_nudge {
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
            is_bounce: bounce,
            is_remote: remote,
            local_only,
            offline_nudge,
            target_session: if remote { session_header } else { None },
            hops: headers.get_u64(h::HOPS).unwrap_or(3),
            received_at: headers.get_u64(h::RECEIVED_AT),
            el,
        })
    }

    /// The sender's username (node of the bare JID).
    pub fn username(&self) -> &str {
        jids::split_bare(&self.from_bare).0.unwrap_or("")
    }
}
