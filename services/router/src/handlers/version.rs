//! XEP-0092 Software Version of the server.

use meerkat_xmpp::stanza::iq_result_with;
use meerkat_xmpp::{ns, Element, StanzaError, StanzaType};

pub const NAME: &str = "Meerkat";
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, PartialEq, Eq)]
pub struct VersionRequest;

impl VersionRequest {
    pub fn parse(ty: StanzaType, _payload: &Element) -> Result<VersionRequest, StanzaError> {
        match ty {
            StanzaType::Get => Ok(VersionRequest),
            _ => Err(StanzaError::not_allowed()),
        }
    }

    pub fn answer(&self, request: &Element) -> Element {
        iq_result_with(
            request,
            Element::new("query", ns::VERSION)
                .with_child(Element::new("name", ns::VERSION).with_text(NAME))
                .with_child(Element::new("version", ns::VERSION).with_text(VERSION)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_name_and_version() {
        let iq = Element::new("iq", ns::CLIENT).with_attr("id", "v");
        let r = VersionRequest.answer(&iq);
        let q = r.get_child("query", ns::VERSION).expect("query");
        assert_eq!(
            q.child_text("name", ns::VERSION).as_deref(),
            Some("Meerkat")
        );
        assert_eq!(
            q.child_text("version", ns::VERSION).as_deref(),
            Some(VERSION)
        );
        assert!(VersionRequest::parse(StanzaType::Set, &iq).is_err());
    }
}
