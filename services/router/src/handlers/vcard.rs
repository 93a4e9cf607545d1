//! XEP-0054 vcard-temp: an account sets its own vCard; anyone may read an account's. An
//! account without one has an empty `<vCard/>` (as ejabberd and Prosody answer); an unknown
//! account is refused before this (route.rs: service-unavailable). Stored and replicated as
//! the kind `vcard` (store `personal.rs`).

use meerkat_store::StoreError;
use meerkat_xmpp::stanza::{iq_result, iq_result_with};
use meerkat_xmpp::{ns, Element, StanzaError, StanzaType};

use super::Entity;
use crate::inbound::Inbound;
use crate::jids::split_bare;
use crate::Ctx;

/// A parsed vCard request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VcardRequest {
    Get,
    /// The new vCard; `None` (an empty `<vCard/>`) deletes it.
    Set(Option<String>),
}

impl VcardRequest {
    /// `max_bytes`: the most a stored vCard may take (serialised).
    pub fn parse(
        ty: StanzaType,
        payload: &Element,
        max_bytes: usize,
    ) -> Result<VcardRequest, StanzaError> {
        if payload.name() != "vCard" {
            return Err(StanzaError::bad_request());
        }
        match ty {
            StanzaType::Get => Ok(VcardRequest::Get),
            StanzaType::Set => {
                if payload.children().next().is_none() && payload.text().trim().is_empty() {
                    return Ok(VcardRequest::Set(None));
                }
                let xml = payload.to_xml();
                if xml.len() > max_bytes {
                    return Err(StanzaError::not_acceptable()
                        .text(format!("a vCard holds at most {max_bytes} bytes")));
                }
                Ok(VcardRequest::Set(Some(xml)))
            }
            _ => Err(StanzaError::bad_request()),
        }
    }
}

fn empty() -> Element {
    Element::new("vCard", ns::VCARD)
}

/// Answers a vCard request for `entity`.
pub async fn answer(
    ctx: &Ctx,
    inb: &Inbound,
    entity: &Entity,
    payload: &Element,
) -> anyhow::Result<Result<Element, StanzaError>> {
    let max = ctx.config.max_vcard_bytes as usize;
    let req = match VcardRequest::parse(inb.ty, payload, max) {
        Ok(r) => r,
        Err(e) => return Ok(Err(e)),
    };
    let (account, own) = match entity {
        Entity::Account { bare, own, .. } => (split_bare(bare).0.map(str::to_owned), *own),
        Entity::Server => (None, false),
    };
    match (req, account) {
        // The server has no vCard of its own: an empty one.
        (VcardRequest::Get, None) => Ok(Ok(iq_result_with(&inb.el, empty()))),
        (VcardRequest::Get, Some(user)) => {
            let stored = ctx.store.vcard(&user).await?;
            let vcard = stored
                .and_then(|xml| Element::parse(&xml).ok())
                .unwrap_or_else(empty);
            Ok(Ok(iq_result_with(&inb.el, vcard)))
        }
        (VcardRequest::Set(vcard), Some(user)) if own => {
            if !ctx.config.personal_data {
                return Ok(Err(StanzaError::service_unavailable()));
            }
            match ctx.store.set_vcard(&user, vcard.as_deref()).await {
                Ok(()) => Ok(Ok(iq_result(&inb.el))),
                Err(StoreError::NoSuchAccount) => Ok(Err(StanzaError::item_not_found())),
                Err(e) => Err(e.into()),
            }
        }
        (VcardRequest::Set(_), _) => Ok(Err(StanzaError::forbidden())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(ty: StanzaType, xml: &str, max: usize) -> Result<VcardRequest, &'static str> {
        VcardRequest::parse(ty, &Element::parse(xml).expect("xml"), max).map_err(|e| e.condition)
    }

    #[test]
    fn sets_keep_the_vcard_and_an_empty_one_deletes() {
        let v = "xmlns='vcard-temp'";
        assert_eq!(
            parse(StanzaType::Get, &format!("<vCard {v}/>"), 10),
            Ok(VcardRequest::Get)
        );
        assert_eq!(
            parse(StanzaType::Set, &format!("<vCard {v}/>"), 10),
            Ok(VcardRequest::Set(None))
        );
        let Ok(VcardRequest::Set(Some(xml))) = parse(
            StanzaType::Set,
            &format!("<vCard {v}><FN>Alice</FN></vCard>"),
            1000,
        ) else {
            panic!("a set")
        };
        let back = Element::parse(&xml).expect("stored xml parses");
        assert!(back.is("vCard", ns::VCARD));
        assert_eq!(back.child_text("FN", ns::VCARD).as_deref(), Some("Alice"));
    }

    #[test]
    fn big_vcards_and_other_elements_are_refused() {
        let v = "xmlns='vcard-temp'";
        let big = format!("<vCard {v}><FN>{}</FN></vCard>", "x".repeat(100));
        assert_eq!(parse(StanzaType::Set, &big, 100), Err("not-acceptable"));
        assert_eq!(
            parse(StanzaType::Get, &format!("<card {v}/>"), 100),
            Err("bad-request")
        );
        assert_eq!(
            parse(StanzaType::Result, &format!("<vCard {v}/>"), 100),
            Err("bad-request")
        );
    }
}
