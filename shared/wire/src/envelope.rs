//! The readable envelope a stanza travels in between DCs (docs/protocol.md):
//! `<route xmlns='urn:xmpp:meerkat:route:1' from='dc1.example.com' to='dc2.example.com'>STANZA</route>`,
//! the stanza inside untouched (namespace `jabber:client` declared). A conflict kick travels
//! as an empty envelope, a bundle as its `<bundle/>`. Routing metadata stays in the AMQP
//! headers; the envelope only makes the message readable in the management UI.

use crate::headers::ROUTE_NS;
use meerkat_xmpp::{Element, StanzaKind};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("not XML: {0}")]
    NotXml(String),
    #[error("not a route envelope: <{0}/> in {1}")]
    NotAnEnvelope(String, String),
    #[error("the envelope carries more than one element")]
    SeveralStanzas,
    #[error("the envelope carries <{0}/> in {1}, not a stanza")]
    NotAStanza(String, String),
}

/// Wraps `stanza` (or nothing, for a kick) for the trip from DC address `from` to `to`.
pub fn wrap(stanza: Option<&Element>, from: &str, to: &str) -> String {
    let mut route = Element::new("route", ROUTE_NS)
        .with_attr("from", from.to_owned())
        .with_attr("to", to.to_owned());
    if let Some(s) = stanza {
        route.push_child(s.clone());
    }
    route.to_xml()
}

/// The stanza inside an envelope; `None` for an empty one.
pub fn unwrap(body: &[u8]) -> Result<Option<Element>, EnvelopeError> {
    let text = std::str::from_utf8(body).map_err(|e| EnvelopeError::NotXml(e.to_string()))?;
    let route = Element::parse(text).map_err(|e| EnvelopeError::NotXml(e.to_string()))?;
    if !route.is("route", ROUTE_NS) {
        return Err(EnvelopeError::NotAnEnvelope(
            route.name().to_owned(),
            route.ns().to_owned(),
        ));
    }
    let mut children = route.children();
    let Some(stanza) = children.next() else {
        return Ok(None);
    };
    if children.next().is_some() {
        return Err(EnvelopeError::SeveralStanzas);
    }
    // A bundle (several stanzas for sessions of the receiving DC, fanout.rs) travels whole.
    if StanzaKind::of(stanza).is_none() && !stanza.is("bundle", ROUTE_NS) {
        return Err(EnvelopeError::NotAStanza(
            stanza.name().to_owned(),
            stanza.ns().to_owned(),
        ));
    }
    Ok(Some(stanza.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use meerkat_xmpp::ns;

    fn message() -> Element {
        Element::new("message", ns::CLIENT)
            .with_attr("from", "alice@example.com/phone")
            .with_attr("to", "bob@example.com/desk")
            .with_attr("type", "chat")
            .with_child(Element::new("body", ns::CLIENT).with_text("hi <there> & 'you'"))
    }

    #[test]
    fn a_bundle_travels_whole() {
        let (a, b) = (message(), message().with_attr("id", "2"));
        let bundle = crate::fanout::bundle(&[&a, &b]);
        let body = wrap(Some(&bundle), "dc1.example.com", "dc2.example.com");
        assert_eq!(unwrap(body.as_bytes()), Ok(Some(bundle)));
        let other = Element::new("other", ROUTE_NS);
        let body = wrap(Some(&other), "dc1.example.com", "dc2.example.com");
        assert!(matches!(
            unwrap(body.as_bytes()),
            Err(EnvelopeError::NotAStanza(..))
        ));
    }

    #[test]
    fn wraps_readably_and_round_trips() {
        let m = message();
        let body = wrap(Some(&m), "dc1.example.com", "dc2.example.com");
        assert!(body.starts_with(
            "<route xmlns='urn:xmpp:meerkat:route:1' from='dc1.example.com' to='dc2.example.com'><message xmlns='jabber:client' "
        ));
        assert!(body.ends_with("</message></route>"));
        assert_eq!(unwrap(body.as_bytes()), Ok(Some(m)));
    }

    #[test]
    fn empty_envelope_is_a_kick() {
        let body = wrap(None, "dc1.example.com", "dc2.example.com");
        assert_eq!(unwrap(body.as_bytes()), Ok(None));
    }

    #[test]
    fn rejects_what_is_not_an_envelope() {
        let bare = message().to_xml();
        assert!(matches!(
            unwrap(bare.as_bytes()),
            Err(EnvelopeError::NotAnEnvelope(..))
        ));
        assert!(matches!(unwrap(b"<route"), Err(EnvelopeError::NotXml(_))));
        assert!(matches!(
            unwrap(&[0xff, 0xfe]),
            Err(EnvelopeError::NotXml(_))
        ));
        let two = format!(
            "<route xmlns='{ROUTE_NS}'>{}{}</route>",
            message().to_xml(),
            message().to_xml()
        );
        assert_eq!(unwrap(two.as_bytes()), Err(EnvelopeError::SeveralStanzas));
        let odd = format!("<route xmlns='{ROUTE_NS}'><x xmlns='y'/></route>");
        assert!(matches!(
            unwrap(odd.as_bytes()),
            Err(EnvelopeError::NotAStanza(..))
        ));
    }
}
