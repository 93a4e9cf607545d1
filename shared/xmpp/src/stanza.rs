//! Helpers over the three stanza kinds: classification, replies and errors (RFC 6120 §8).

use crate::{ns, Element, StanzaError};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StanzaKind {
    Message,
    Presence,
    Iq,
}

impl StanzaKind {
    /// The kind of a first-level `jabber:client` element, if it is a stanza.
    pub fn of(el: &Element) -> Option<StanzaKind> {
        if el.ns() != ns::CLIENT {
            return None;
        }
        match el.name() {
            "message" => Some(StanzaKind::Message),
            "presence" => Some(StanzaKind::Presence),
            "iq" => Some(StanzaKind::Iq),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StanzaKind::Message => "message",
            StanzaKind::Presence => "presence",
            StanzaKind::Iq => "iq",
        }
    }
}

/// The `type` attribute, normalised per kind (a missing type means `normal` for messages and
/// available for presence).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StanzaType {
    // message
    Chat,
    Normal,
    Groupchat,
    Headline,
    // presence
    Available,
    Unavailable,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
    Probe,
    // iq
    Get,
    Set,
    Result,
    // all
    Error,
    /// A value the RFC does not define for that kind.
    Invalid,
}

impl StanzaType {
    pub fn of(el: &Element) -> StanzaType {
        let t = el.attr("type");
        match (StanzaKind::of(el), t) {
            (_, Some("error")) => StanzaType::Error,
            (Some(StanzaKind::Message), None | Some("normal")) => StanzaType::Normal,
            (Some(StanzaKind::Message), Some("chat")) => StanzaType::Chat,
            (Some(StanzaKind::Message), Some("groupchat")) => StanzaType::Groupchat,
            (Some(StanzaKind::Message), Some("headline")) => StanzaType::Headline,
            (Some(StanzaKind::Presence), None) => StanzaType::Available,
            (Some(StanzaKind::Presence), Some("unavailable")) => StanzaType::Unavailable,
            (Some(StanzaKind::Presence), Some("subscribe")) => StanzaType::Subscribe,
            (Some(StanzaKind::Presence), Some("subscribed")) => StanzaType::Subscribed,
            (Some(StanzaKind::Presence), Some("unsubscribe")) => StanzaType::Unsubscribe,
            (Some(StanzaKind::Presence), Some("unsubscribed")) => StanzaType::Unsubscribed,
            (Some(StanzaKind::Presence), Some("probe")) => StanzaType::Probe,
            (Some(StanzaKind::Iq), Some("get")) => StanzaType::Get,
            (Some(StanzaKind::Iq), Some("set")) => StanzaType::Set,
            (Some(StanzaKind::Iq), Some("result")) => StanzaType::Result,
            _ => StanzaType::Invalid,
        }
    }

    pub fn is_request(self) -> bool {
        matches!(self, StanzaType::Get | StanzaType::Set)
    }
}

/// An empty `result` reply to an iq request, with `from`/`to` swapped.
pub fn iq_result(request: &Element) -> Element {
    let mut reply = Element::new("iq", ns::CLIENT).with_attr("type", "result");
    copy_reply_addressing(request, &mut reply);
    reply
}

/// An iq `result` carrying one payload element.
pub fn iq_result_with(request: &Element, payload: Element) -> Element {
    iq_result(request).with_child(payload)
}

/// The error reply to a stanza (RFC 6120 §8.3.1): same kind and id, `from`/`to` swapped,
/// `type='error'`, the original payload kept so the sender can tell what failed.
pub fn error_reply(stanza: &Element, error: &StanzaError) -> Element {
    let mut reply = Element::new(stanza.name(), ns::CLIENT).with_attr("type", "error");
    copy_reply_addressing(stanza, &mut reply);
    for child in stanza.children() {
        if !child.is("error", ns::CLIENT) {
            reply.push_child(child.clone());
        }
    }
    reply.push_child(error.to_element());
    reply
}

fn copy_reply_addressing(request: &Element, reply: &mut Element) {
    if let Some(id) = request.attr("id") {
        reply.set_attr("id", id);
    }
    if let Some(to) = request.attr("to") {
        reply.set_attr("from", to);
    }
    if let Some(from) = request.attr("from") {
        reply.set_attr("to", from);
    }
}

/// Whether the stanza must never be answered with an error (RFC 6120 §8.3.1: no error in
/// reply to an error, and iq results are not answered either).
pub fn must_not_bounce(stanza: &Element) -> bool {
    matches!(
        StanzaType::of(stanza),
        StanzaType::Error | StanzaType::Result
    )
}

/// XEP-0203 `<delay/>` element.
pub fn delay(from: &str, stamp: chrono::DateTime<chrono::Utc>) -> Element {
    Element::new("delay", ns::DELAY)
        .with_attr("from", from)
        .with_attr(
            "stamp",
            stamp.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_reply_swaps_addresses_and_keeps_payload() {
        let iq = Element::parse(
            "<iq xmlns='jabber:client' type='get' id='1' from='a@x/r' to='x'><query xmlns='urn:q'/></iq>",
        )
        .expect("parse");
        let reply = error_reply(&iq, &StanzaError::service_unavailable());
        assert_eq!(
            reply.to_client_xml(),
            "<iq type='error' id='1' from='x' to='a@x/r'><query xmlns='urn:q'/><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
        );
    }

    #[test]
    fn classifies_types() {
        let p = Element::new("presence", ns::CLIENT);
        assert_eq!(StanzaType::of(&p), StanzaType::Available);
        let m = Element::new("message", ns::CLIENT);
        assert_eq!(StanzaType::of(&m), StanzaType::Normal);
        let iq = Element::new("iq", ns::CLIENT).with_attr("type", "bogus");
        assert_eq!(StanzaType::of(&iq), StanzaType::Invalid);
    }
}
