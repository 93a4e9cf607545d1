//! XEP-0030 Service Discovery: the server's identity and features, and an account's
//! identities (registered account, PEP service) and features, answered by the server on the
//! account's behalf; an account's items are its PEP nodes the requester may see.

use meerkat_xmpp::stanza::iq_result_with;
use meerkat_xmpp::{ns, Element, StanzaError, StanzaType};

use super::Entity;

/// Features the server advertises.
pub const SERVER_FEATURES: &[&str] = &[
    ns::DISCO_INFO,
    ns::DISCO_ITEMS,
    ns::PING,
    ns::VERSION,
    ns::ROSTER_VER,
    ns::OFFLINE,
    ns::REGISTER,
    ns::CARBONS,
    ns::CARBONS_RULES,
    ns::BLOCKING,
    ns::PRIVATE,
    ns::VCARD,
    ns::TIME,
    ns::LAST,
];

/// Features an account advertises (the server answers for it), besides disco#info itself.
/// Last activity (XEP-0012) is answered for the account at its bare JID.
pub const ACCOUNT_FEATURES: &[&str] = &[ns::MAM, ns::MAM_EXTENDED, ns::SID, ns::LAST];

#[derive(Debug, PartialEq, Eq)]
pub struct DiscoRequest {
    pub node: Option<String>,
}

impl DiscoRequest {
    pub fn parse(ty: StanzaType, payload: &Element) -> Result<DiscoRequest, StanzaError> {
        if ty != StanzaType::Get {
            return Err(StanzaError::not_allowed());
        }
        Ok(DiscoRequest {
            node: payload.attr("node").map(str::to_owned),
        })
    }

    pub fn answer_info(
        &self,
        request: &Element,
        entity: &Entity,
        domain: &str,
    ) -> Result<Element, StanzaError> {
        if self.node.is_some() {
            return Err(StanzaError::item_not_found());
        }
        let mut q = Element::new("query", ns::DISCO_INFO);
        match entity {
            Entity::Server => {
                q.push_child(
                    Element::new("identity", ns::DISCO_INFO)
                        .with_attr("category", "server")
                        .with_attr("type", "im")
                        .with_attr("name", format!("Meerkat ({domain})")),
                );
                for f in SERVER_FEATURES {
                    q.push_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", *f));
                }
            }
            Entity::Account { .. } => {
                q.push_child(
                    Element::new("identity", ns::DISCO_INFO)
                        .with_attr("category", "account")
                        .with_attr("type", "registered"),
                );
                // XEP-0163 §1: every account is a PEP service.
                q.push_child(
                    Element::new("identity", ns::DISCO_INFO)
                        .with_attr("category", "pubsub")
                        .with_attr("type", "pep"),
                );
                for f in std::iter::once(&ns::DISCO_INFO)
                    .chain(ACCOUNT_FEATURES)
                    .chain(crate::pep::FEATURES)
                {
                    q.push_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", *f));
                }
            }
        }
        Ok(iq_result_with(request, q))
    }

    /// The items of the entity: `items` (an account's PEP nodes the requester may see).
    pub fn answer_items(
        &self,
        request: &Element,
        items: Vec<Element>,
    ) -> Result<Element, StanzaError> {
        if self.node.is_some() {
            return Err(StanzaError::item_not_found());
        }
        let mut q = Element::new("query", ns::DISCO_ITEMS);
        for i in items {
            q.push_child(i);
        }
        Ok(iq_result_with(request, q))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(reply: &Element) -> Vec<String> {
        reply
            .get_child("query", ns::DISCO_INFO)
            .map(|q| {
                q.children()
                    .filter(|c| c.name() == "feature")
                    .filter_map(|c| c.attr("var").map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn server_and_account_info() {
        let iq = Element::new("iq", ns::CLIENT).with_attr("id", "d");
        let q = Element::new("query", ns::DISCO_INFO);
        let req = DiscoRequest::parse(StanzaType::Get, &q).expect("parse");
        let server = req
            .answer_info(&iq, &Entity::Server, "example.com")
            .expect("info");
        let f = features(&server);
        for want in [
            ns::PING,
            ns::VERSION,
            ns::OFFLINE,
            ns::ROSTER_VER,
            ns::REGISTER,
            ns::PRIVATE,
            ns::VCARD,
            ns::TIME,
            ns::LAST,
        ] {
            assert!(f.iter().any(|x| x == want), "{want} missing");
        }
        let acct = Entity::Account {
            bare: "a@x".into(),
            own: false,
            no_to: false,
        };
        let account = req.answer_info(&iq, &acct, "x").expect("info");
        let f = features(&account);
        for want in [ns::DISCO_INFO, ns::MAM, ns::MAM_EXTENDED, ns::SID, ns::LAST]
            .into_iter()
            .chain(crate::pep::FEATURES.iter().copied())
        {
            assert!(f.iter().any(|x| x == want), "{want} missing on the account");
        }
        let id = account
            .get_child("query", ns::DISCO_INFO)
            .and_then(|q| q.get_child("identity", ns::DISCO_INFO))
            .expect("identity");
        assert_eq!(
            (id.attr("category"), id.attr("type")),
            (Some("account"), Some("registered"))
        );
    }

    #[test]
    fn nodes_and_sets_are_refused() {
        let q = Element::new("query", ns::DISCO_INFO).with_attr("node", "n");
        let iq = Element::new("iq", ns::CLIENT);
        let req = DiscoRequest::parse(StanzaType::Get, &q).expect("parse");
        assert!(req.answer_info(&iq, &Entity::Server, "x").is_err());
        assert!(DiscoRequest::parse(StanzaType::Set, &q).is_err());
    }
}
