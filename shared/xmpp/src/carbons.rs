//! XEP-0280 message carbons: the enable/disable request, which messages are copied
//! (`urn:xmpp:carbons:rules:0`), and the copies themselves. The gateway reads the request
//! (it keeps the session's flag), the router answers it and makes the copies.

use crate::{ns, Element, Hints, StanzaType};

/// An `<enable/>` or `<disable/>` request (XEP-0280 §4, §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Toggle {
    Enable,
    Disable,
}

impl Toggle {
    /// The carbons payload of an iq, if that is what it carries: `<enable/>` or `<disable/>`
    /// in the carbons namespace (anything else in it is not a request of ours).
    pub fn of_payload(payload: &Element) -> Option<Toggle> {
        match (payload.ns(), payload.name()) {
            (ns::CARBONS, "enable") => Some(Toggle::Enable),
            (ns::CARBONS, "disable") => Some(Toggle::Disable),
            _ => None,
        }
    }

    /// A well-formed request: an iq `set` with exactly one child, `<enable/>` or
    /// `<disable/>`. Only such a request changes the session's flag.
    pub fn of_iq(iq: &Element) -> Option<Toggle> {
        if iq.name() != "iq" || StanzaType::of(iq) != StanzaType::Set {
            return None;
        }
        let mut children = iq.children();
        match (children.next(), children.next()) {
            (Some(payload), None) => Toggle::of_payload(payload),
            _ => None,
        }
    }
}

/// Which side of the account a copy shows (XEP-0280 §6, §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// A message the account received (on another of its resources).
    Received,
    /// A message the account sent (from another of its resources).
    Sent,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Received => "received",
            Side::Sent => "sent",
        }
    }
}

/// Whether `message` is copied (`urn:xmpp:carbons:rules:0`, XEP-0280 §5 "Messages Eligible
/// for Carbons Delivery"): type chat, or normal with a body; never a message marked
/// `<private/>` or `<no-copy/>` (XEP-0334), never one that already is a carbon or is the
/// wrapper of one (a client-made `<received/>`/`<sent/>`: copying it would nest copies).
/// Errors, headlines and groupchat are not copied.
pub fn eligible(message: &Element) -> bool {
    let ty = StanzaType::of(message);
    let im = match ty {
        StanzaType::Chat => true,
        StanzaType::Normal => message.has_child("body", ns::CLIENT),
        _ => false,
    };
    im && !Hints::of(message).no_copy
        && !message
            .children()
            .any(|c| c.ns() == ns::CARBONS && matches!(c.name(), "private" | "received" | "sent"))
}

/// Whether `message` carries `<private/>` (removed before delivery, XEP-0280 §8).
pub fn is_private(message: &Element) -> bool {
    message.has_child("private", ns::CARBONS)
}

/// `message` without its `<private/>` element.
pub fn strip_private(message: &Element) -> Element {
    let mut m = message.clone();
    m.remove_children(|c| c.is("private", ns::CARBONS));
    m
}

/// Whether `message` is a copy this server made: from an account's bare JID (a client's own
/// stanza always carries its full JID, the gateway stamps it), wrapping `<received/>` or
/// `<sent/>`.
pub fn is_copy(message: &Element) -> bool {
    message.name() == "message"
        && message.attr("from").is_some_and(|f| !f.contains('/'))
        && message
            .children()
            .any(|c| c.ns() == ns::CARBONS && matches!(c.name(), "received" | "sent"))
}

/// The message a carbon carries (`<received/>` or `<sent/>`, `<forwarded/>`, `<message/>`).
pub fn forwarded(carbon: &Element) -> Option<&Element> {
    carbon
        .children()
        .find(|c| c.ns() == ns::CARBONS && matches!(c.name(), "received" | "sent"))?
        .get_child("forwarded", ns::FORWARD)?
        .get_child("message", ns::CLIENT)
}

/// The copy of `message` for the account `bare`'s resource `to` (XEP-0280 §6, §7): from the
/// bare JID, the same type, the original inside `<forwarded/>` (XEP-0297).
pub fn wrap(message: &Element, side: Side, bare: &str, to: &str) -> Element {
    let mut copy = Element::new("message", ns::CLIENT)
        .with_attr("from", bare)
        .with_attr("to", to);
    if let Some(ty) = message.attr("type") {
        copy.set_attr("type", ty);
    }
    copy.with_child(
        Element::new(side.name(), ns::CARBONS)
            .with_child(Element::new("forwarded", ns::FORWARD).with_child(message.clone())),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn el(xml: &str) -> Element {
        Element::parse(xml).unwrap()
    }

    #[test]
    fn requests_are_one_set_with_one_payload() {
        let en =
            "<iq xmlns='jabber:client' type='set' id='1'><enable xmlns='urn:xmpp:carbons:2'/></iq>";
        assert_eq!(Toggle::of_iq(&el(en)), Some(Toggle::Enable));
        let dis = "<iq xmlns='jabber:client' type='set' id='1'><disable xmlns='urn:xmpp:carbons:2'/></iq>";
        assert_eq!(Toggle::of_iq(&el(dis)), Some(Toggle::Disable));
        for bad in [
            "<iq xmlns='jabber:client' type='get' id='1'><enable xmlns='urn:xmpp:carbons:2'/></iq>",
            "<iq xmlns='jabber:client' type='set' id='1'><enable xmlns='urn:xmpp:carbons:2'/><x xmlns='y'/></iq>",
            "<iq xmlns='jabber:client' type='set' id='1'><private xmlns='urn:xmpp:carbons:2'/></iq>",
            "<iq xmlns='jabber:client' type='set' id='1'><enable xmlns='urn:xmpp:carbons:1'/></iq>",
            "<message xmlns='jabber:client' type='set'><enable xmlns='urn:xmpp:carbons:2'/></message>",
        ] {
            assert_eq!(Toggle::of_iq(&el(bad)), None, "{bad}");
        }
    }

    #[test]
    fn eligibility_follows_the_rules() {
        let yes = [
            "<message xmlns='jabber:client' type='chat'/>",
            "<message xmlns='jabber:client' type='chat'><active xmlns='http://jabber.org/protocol/chatstates'/></message>",
            "<message xmlns='jabber:client'><body>x</body></message>",
            "<message xmlns='jabber:client' type='normal'><body>x</body></message>",
        ];
        for m in yes {
            assert!(eligible(&el(m)), "{m}");
        }
        let no = [
            "<message xmlns='jabber:client'/>",
            "<message xmlns='jabber:client' type='headline'><body>x</body></message>",
            "<message xmlns='jabber:client' type='groupchat'><body>x</body></message>",
            "<message xmlns='jabber:client' type='error'><body>x</body></message>",
            "<message xmlns='jabber:client' type='chat'><body>x</body><private xmlns='urn:xmpp:carbons:2'/></message>",
            "<message xmlns='jabber:client' type='chat'><body>x</body><no-copy xmlns='urn:xmpp:hints'/></message>",
            "<message xmlns='jabber:client' type='chat'><received xmlns='urn:xmpp:carbons:2'/></message>",
            "<message xmlns='jabber:client' type='chat'><sent xmlns='urn:xmpp:carbons:2'/></message>",
        ];
        for m in no {
            assert!(!eligible(&el(m)), "{m}");
        }
    }

    #[test]
    fn a_copy_wraps_the_original_and_is_recognised() {
        let m = el("<message xmlns='jabber:client' from='b@x/1' to='a@x' type='chat'><body>hi</body></message>");
        let c = wrap(&m, Side::Received, "a@x", "a@x/2");
        assert_eq!(
            c.to_xml(),
            "<message xmlns='jabber:client' from='a@x' to='a@x/2' type='chat'>\
             <received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>\
             <message xmlns='jabber:client' from='b@x/1' to='a@x' type='chat'><body>hi</body></message>\
             </forwarded></received></message>"
        );
        assert!(is_copy(&c));
        assert_eq!(forwarded(&c), Some(&m));
        assert!(is_copy(&wrap(&m, Side::Sent, "a@x", "a@x/2")));
        assert!(!is_copy(&m));
        // A client's forgery always carries its full JID.
        let forged = el("<message xmlns='jabber:client' from='b@x/1' to='a@x'><received xmlns='urn:xmpp:carbons:2'/></message>");
        assert!(!is_copy(&forged));
    }

    #[test]
    fn private_is_removed() {
        let m = el("<message xmlns='jabber:client' type='chat'><body>x</body><private xmlns='urn:xmpp:carbons:2'/></message>");
        assert!(is_private(&m));
        let s = strip_private(&m);
        assert!(!is_private(&s));
        assert_eq!(s.child_text("body", ns::CLIENT).as_deref(), Some("x"));
    }
}
