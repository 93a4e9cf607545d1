//! XEP-0199 XMPP Ping: the server (or an account, on its behalf) answers with a result.

use meerkat_xmpp::stanza::iq_result;
use meerkat_xmpp::{Element, StanzaError, StanzaType};

#[derive(Debug, PartialEq, Eq)]
pub struct Ping;

impl Ping {
    pub fn parse(ty: StanzaType, _payload: &Element) -> Result<Ping, StanzaError> {
        match ty {
            StanzaType::Get => Ok(Ping),
            _ => Err(StanzaError::bad_request()),
        }
    }

    pub fn answer(&self, request: &Element) -> Element {
        iq_result(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meerkat_xmpp::ns;

    #[test]
    fn get_is_answered_set_is_not() {
        let p = Element::new("ping", ns::PING);
        assert!(Ping::parse(StanzaType::Get, &p).is_ok());
        assert!(Ping::parse(StanzaType::Set, &p).is_err());
        let iq = Element::new("iq", ns::CLIENT)
            .with_attr("id", "1")
            .with_attr("from", "a@x/r");
        let r = Ping.answer(&iq);
        assert_eq!(r.attr("type"), Some("result"));
        assert_eq!(r.attr("to"), Some("a@x/r"));
    }
}
