//! A pubsub iq (XEP-0060, the PEP subset) read into a typed request, with the XEP's errors
//! for what is malformed (bad-request with the pubsub-specific condition) or not offered
//! (feature-not-implemented with `<unsupported/>`).

use meerkat_xmpp::{Element, ErrorType, StanzaError, StanzaType};

use super::form::Form;

pub const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
pub const PUBSUB_OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
pub const PUBSUB_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
pub const PUBSUB_ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";

/// Bytes a node name or an item id may take.
pub const MAX_NAME: usize = 256;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PubsubRequest {
    /// §7.1 (one item; the id is the service's when absent) with §7.1.5 options.
    Publish {
        node: String,
        id: Option<String>,
        item: Element,
        options: Option<Form>,
    },
    /// §7.2.
    Retract {
        node: String,
        ids: Vec<String>,
        notify: bool,
    },
    /// §6.5: all, by id, or the `max` newest.
    Items {
        node: String,
        ids: Option<Vec<String>>,
        max: Option<u32>,
    },
    /// §8.1 (with an optional configure form).
    Create { node: String, config: Option<Form> },
    /// §8.2: get the form, or submit one.
    Configure { node: String, form: Option<Form> },
    /// §8.3.
    Default,
    /// §8.4.
    Delete { node: String },
    /// §8.5.
    Purge { node: String },
}

/// A stanza error with a pubsub-specific condition (XEP-0060 §7 ff.).
pub fn pubsub_error(base: StanzaError, condition: &str) -> StanzaError {
    base.app(Element::new(condition, PUBSUB_ERRORS))
}

fn bad(condition: &str) -> StanzaError {
    pubsub_error(StanzaError::bad_request(), condition)
}

/// feature-not-implemented with `<unsupported feature='…'/>` (§5.1).
pub fn unsupported(feature: &str) -> StanzaError {
    StanzaError::new(ErrorType::Cancel, "feature-not-implemented")
        .app(Element::new("unsupported", PUBSUB_ERRORS).with_attr("feature", feature))
}

fn name(el: &Element, attr: &str) -> Result<Option<String>, StanzaError> {
    match el.attr(attr) {
        None => Ok(None),
        Some(v) if v.is_empty() || v.len() > MAX_NAME || v.chars().any(char::is_control) => {
            Err(StanzaError::bad_request().text(format!(
                "{attr}: 1 to {MAX_NAME} bytes, no control characters"
            )))
        }
        Some(v) => Ok(Some(v.to_owned())),
    }
}

fn node(el: &Element) -> Result<String, StanzaError> {
    name(el, "node")?.ok_or_else(|| bad("nodeid-required"))
}

fn one_form(el: &Element) -> Result<Option<Form>, StanzaError> {
    let mut forms = el
        .children()
        .filter(|c| c.is("x", meerkat_xmpp::ns::DATA_FORMS));
    match (forms.next(), forms.next()) {
        (None, _) => Ok(None),
        (Some(x), None) => Form::parse(x).map(Some),
        _ => Err(StanzaError::bad_request().text("one data form at most")),
    }
}

impl PubsubRequest {
    /// Reads a `<pubsub/>` payload of namespace `pubsub` or `pubsub#owner`.
    pub fn parse(ty: StanzaType, payload: &Element) -> Result<PubsubRequest, StanzaError> {
        if payload.name() != "pubsub" {
            return Err(StanzaError::bad_request());
        }
        let owner = payload.ns() == PUBSUB_OWNER;
        let ns = payload.ns();
        let mut verbs = payload.children().filter(|c| {
            c.ns() == ns && !matches!(c.name(), "publish-options" | "configure" if !owner)
        });
        let Some(verb) = verbs.next() else {
            return Err(StanzaError::bad_request().text("no pubsub verb"));
        };
        let extra = verbs.next();
        match (owner, ty, verb.name()) {
            (false, StanzaType::Set, "publish") => {
                let options = match payload.get_child("publish-options", PUBSUB) {
                    Some(po) => Some(one_form(po)?.unwrap_or_default()),
                    None => None,
                };
                let node = node(verb)?;
                let mut items = verb.children().filter(|c| c.is("item", PUBSUB));
                let item = match (items.next(), items.next()) {
                    (Some(i), None) => i,
                    (None, _) => return Err(bad("item-required")),
                    (Some(_), Some(_)) => return Err(bad("invalid-payload")),
                };
                let mut payloads = item.children();
                match (payloads.next(), payloads.next()) {
                    (Some(_), None) => {}
                    (None, _) => return Err(bad("payload-required")),
                    _ => return Err(bad("invalid-payload")),
                }
                Ok(PubsubRequest::Publish {
                    node,
                    id: name(item, "id")?,
                    item: item.clone(),
                    options,
                })
            }
            (false, StanzaType::Set, "create") if extra.is_none_or(|e| e.name() == "configure") => {
                let config = match payload.get_child("configure", PUBSUB) {
                    Some(c) => one_form(c)?,
                    None => None,
                };
                Ok(PubsubRequest::Create {
                    node: node(verb)?,
                    config,
                })
            }
            (false, StanzaType::Set, "retract") => {
                let mut ids = Vec::new();
                for item in verb.children().filter(|c| c.is("item", PUBSUB)) {
                    ids.push(name(item, "id")?.ok_or_else(|| bad("item-required"))?);
                }
                if ids.is_empty() {
                    return Err(bad("item-required"));
                }
                if ids.len() > super::MAX_REQUEST_ITEMS {
                    return Err(StanzaError::not_acceptable().text("too many items"));
                }
                Ok(PubsubRequest::Retract {
                    node: node(verb)?,
                    ids,
                    notify: matches!(verb.attr("notify"), Some("1") | Some("true")),
                })
            }
            (false, StanzaType::Get, "items") => {
                let max =
                    match verb.attr("max_items") {
                        None => None,
                        Some(m) => Some(m.parse::<u32>().map_err(|_| {
                            StanzaError::bad_request().text("max_items: an integer")
                        })?),
                    };
                let mut ids = Vec::new();
                for item in verb.children().filter(|c| c.is("item", PUBSUB)) {
                    ids.push(name(item, "id")?.ok_or_else(|| bad("item-required"))?);
                }
                if ids.len() > super::MAX_REQUEST_ITEMS {
                    return Err(StanzaError::not_acceptable().text("too many items"));
                }
                Ok(PubsubRequest::Items {
                    node: node(verb)?,
                    ids: (!ids.is_empty()).then_some(ids),
                    max,
                })
            }
            (false, _, "subscribe" | "unsubscribe" | "options") => Err(unsupported("subscribe")),
            (false, _, "subscriptions") => Err(unsupported("retrieve-subscriptions")),
            (false, _, "affiliations") => Err(unsupported("retrieve-affiliations")),
            (true, StanzaType::Get, "configure") => Ok(PubsubRequest::Configure {
                node: node(verb)?,
                form: None,
            }),
            (true, StanzaType::Set, "configure") => match one_form(verb)? {
                Some(form) => Ok(PubsubRequest::Configure {
                    node: node(verb)?,
                    form: Some(form),
                }),
                None => Err(StanzaError::bad_request().text("a configure set needs a form")),
            },
            (true, StanzaType::Get, "default") => Ok(PubsubRequest::Default),
            (true, StanzaType::Set, "delete") => Ok(PubsubRequest::Delete { node: node(verb)? }),
            (true, StanzaType::Set, "purge") => Ok(PubsubRequest::Purge { node: node(verb)? }),
            (true, _, "subscriptions") => Err(unsupported("manage-subscriptions")),
            (true, _, "affiliations") => Err(unsupported("modify-affiliations")),
            _ => Err(StanzaError::bad_request().text(format!("<{}/> in a {ty:?}", verb.name()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(ty: StanzaType, inner: &str, owner: bool) -> Result<PubsubRequest, String> {
        let ns = if owner { PUBSUB_OWNER } else { PUBSUB };
        let xml = format!("<pubsub xmlns='{ns}'>{inner}</pubsub>");
        PubsubRequest::parse(ty, &Element::parse(&xml).expect("xml")).map_err(|e| {
            let app = e
                .app
                .as_ref()
                .map(|a| a.name().to_owned())
                .unwrap_or_default();
            format!("{} {app} {}", e.condition, e.text.unwrap_or_default())
        })
    }

    #[test]
    fn publish_with_options() {
        let r = parse(
            StanzaType::Set,
            "<publish node='urn:xmpp:bookmarks:1'><item id='r@c'><conference xmlns='urn:xmpp:bookmarks:1'/></item></publish>\
             <publish-options><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>\
             <value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
             <field var='pubsub#persist_items'><value>true</value></field></x></publish-options>",
            false,
        )
        .expect("publish");
        let PubsubRequest::Publish {
            node, id, options, ..
        } = r
        else {
            panic!("{r:?}")
        };
        assert_eq!(node, "urn:xmpp:bookmarks:1");
        assert_eq!(id.as_deref(), Some("r@c"));
        assert_eq!(options.expect("options").fields.len(), 1);
    }

    #[test]
    fn malformed_publishes_are_bad_requests_with_their_condition() {
        for (inner, cond) in [
            ("<publish><item><a xmlns='x'/></item></publish>", "nodeid-required"),
            ("<publish node='n'/>", "item-required"),
            ("<publish node='n'><item/></publish>", "payload-required"),
            ("<publish node='n'><item><a xmlns='x'/><b xmlns='x'/></item></publish>", "invalid-payload"),
            ("<publish node='n'><item><a xmlns='x'/></item><item><a xmlns='x'/></item></publish>", "invalid-payload"),
        ] {
            let e = parse(StanzaType::Set, inner, false).expect_err(inner);
            assert!(e.starts_with(&format!("bad-request {cond}")), "{inner}: {e}");
        }
        let long = "n".repeat(MAX_NAME + 1);
        let e = parse(
            StanzaType::Set,
            &format!("<publish node='{long}'><item><a xmlns='x'/></item></publish>"),
            false,
        )
        .expect_err("long");
        assert!(e.starts_with("bad-request"), "{e}");
        assert!(parse(StanzaType::Get, "<publish node='n'/>", false).is_err());
        assert!(parse(StanzaType::Set, "", false).is_err());
    }

    #[test]
    fn items_retract_and_owner_verbs() {
        assert_eq!(
            parse(StanzaType::Get, "<items node='n' max_items='2'/>", false),
            Ok(PubsubRequest::Items {
                node: "n".into(),
                ids: None,
                max: Some(2)
            })
        );
        assert_eq!(
            parse(
                StanzaType::Get,
                "<items node='n'><item id='a'/></items>",
                false
            ),
            Ok(PubsubRequest::Items {
                node: "n".into(),
                ids: Some(vec!["a".into()]),
                max: None
            })
        );
        assert_eq!(
            parse(
                StanzaType::Set,
                "<retract node='n' notify='true'><item id='a'/></retract>",
                false
            ),
            Ok(PubsubRequest::Retract {
                node: "n".into(),
                ids: vec!["a".into()],
                notify: true
            })
        );
        assert_eq!(
            parse(StanzaType::Set, "<purge node='n'/>", true),
            Ok(PubsubRequest::Purge { node: "n".into() })
        );
        assert_eq!(
            parse(StanzaType::Set, "<delete node='n'/>", true),
            Ok(PubsubRequest::Delete { node: "n".into() })
        );
        assert!(
            parse(StanzaType::Set, "<subscribe node='n' jid='a@b'/>", false)
                .expect_err("unsupported")
                .starts_with("feature-not-implemented")
        );
    }

    #[test]
    fn the_pubsub_condition_is_a_child_of_the_error() {
        let iq = Element::new("iq", meerkat_xmpp::ns::CLIENT).with_attr("type", "set");
        let r = meerkat_xmpp::stanza::error_reply(&iq, &bad("item-required"));
        let err = r
            .get_child("error", meerkat_xmpp::ns::CLIENT)
            .expect("error");
        assert!(err.has_child("bad-request", meerkat_xmpp::ns::STANZAS_ERR));
        assert!(err.has_child("item-required", PUBSUB_ERRORS));
    }
}
