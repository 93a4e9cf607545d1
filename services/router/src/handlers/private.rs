//! XEP-0049 Private XML Storage (`jabber:iq:private`): an account keeps XML elements on the
//! server, each keyed by its name and namespace, readable and writable by the account only.
//! Stored and replicated per item (store `personal.rs`, kind `private`).

use meerkat_store::StoreError;
use meerkat_xmpp::stanza::{iq_result, iq_result_with};
use meerkat_xmpp::{ns, Element, StanzaError, StanzaType};

use super::{bookmarks, Entity};
use crate::inbound::Inbound;
use crate::outbox::Outbox;
use crate::Ctx;

/// A parsed private storage request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrivateRequest {
    /// The item of this name and namespace.
    Get { name: String, ns: String },
    /// Items to store, one per key (the last of a key in the request wins), with their
    /// keys.
    Set(Vec<(String, Element)>),
}

/// The storage key of an element: `{namespace}name`.
pub fn key(name: &str, ns: &str) -> String {
    format!("{{{ns}}}{name}")
}

impl PrivateRequest {
    /// `max_item`: the most bytes one stored element may take (serialised).
    pub fn parse(
        ty: StanzaType,
        payload: &Element,
        max_item: usize,
    ) -> Result<PrivateRequest, StanzaError> {
        if payload.name() != "query" {
            return Err(StanzaError::bad_request());
        }
        let children: Vec<&Element> = payload.children().collect();
        if children.is_empty() {
            return Err(StanzaError::not_acceptable().text("a query names at least one element"));
        }
        // XEP-0049 §3: these namespaces are the protocol's own, not storage.
        if let Some(c) = children
            .iter()
            .find(|c| matches!(c.ns(), ns::PRIVATE | ns::CLIENT | ns::SERVER | ""))
        {
            return Err(StanzaError::not_acceptable()
                .text(format!("the namespace {:?} cannot be stored", c.ns())));
        }
        match ty {
            StanzaType::Get => match children.as_slice() {
                [one] => Ok(PrivateRequest::Get {
                    name: one.name().to_owned(),
                    ns: one.ns().to_owned(),
                }),
                _ => Err(StanzaError::bad_request().text("a get names one element")),
            },
            StanzaType::Set => {
                let mut items: Vec<(String, Element)> = Vec::with_capacity(children.len());
                for c in children {
                    if c.to_xml().len() > max_item {
                        return Err(StanzaError::not_acceptable()
                            .text(format!("a stored element holds at most {max_item} bytes")));
                    }
                    let k = key(c.name(), c.ns());
                    items.retain(|(other, _)| *other != k);
                    items.push((k, c.clone()));
                }
                Ok(PrivateRequest::Set(items))
            }
            _ => Err(StanzaError::bad_request()),
        }
    }
}

/// Answers a private storage request: the account's own (or no `to`) only.
pub async fn answer(
    ctx: &Ctx,
    inb: &Inbound,
    out: &mut Outbox,
    entity: &Entity,
    payload: &Element,
) -> anyhow::Result<Result<Element, StanzaError>> {
    match entity {
        Entity::Account { own: true, .. } => {}
        // XEP-0049 §3: forbidden (preferred to service-unavailable).
        Entity::Account { own: false, .. } => return Ok(Err(StanzaError::forbidden())),
        Entity::Server => return Ok(Err(StanzaError::service_unavailable())),
    }
    let max_item = ctx.config.max_private_item_bytes as usize;
    let req = match PrivateRequest::parse(inb.ty, payload, max_item) {
        Ok(r) => r,
        Err(e) => return Ok(Err(e)),
    };
    let user = inb.username();
    match req {
        PrivateRequest::Get { name, ns: ns_ } => {
            let k = key(&name, &ns_);
            let stored = ctx
                .store
                .private_item(user, &k)
                .await?
                .and_then(|xml| Element::parse(&xml).ok());
            // XEP-0411: the legacy bookmarks are the PEP bookmarks when those exist.
            let compat = if k == bookmarks::LEGACY_KEY {
                bookmarks::get(ctx, user, stored.as_ref()).await?
            } else {
                None
            };
            let item = compat.or(stored).unwrap_or_else(|| Element::new(name, ns_));
            let query = Element::new("query", ns::PRIVATE).with_child(item);
            Ok(Ok(iq_result_with(&inb.el, query)))
        }
        PrivateRequest::Set(items) => {
            if !ctx.config.personal_data {
                return Ok(Err(StanzaError::service_unavailable()));
            }
            let legacy = items
                .iter()
                .find(|(k, _)| k == bookmarks::LEGACY_KEY)
                .map(|(_, e)| e.clone());
            if let Some(storage) = legacy.as_ref().filter(|_| ctx.config.pep) {
                if let Err(e) = bookmarks::check(ctx, user, storage).await? {
                    return Ok(Err(e));
                }
            }
            let items: Vec<(String, String)> =
                items.into_iter().map(|(k, e)| (k, e.to_xml())).collect();
            let max_total = ctx.config.max_private_bytes;
            match ctx.store.set_private(user, &items, max_total).await {
                Ok(()) => match legacy {
                    // XEP-0411: the PEP bookmarks become the legacy ones.
                    Some(storage) if ctx.config.pep => {
                        Ok(bookmarks::set(ctx, out, &inb.from_bare, &storage)
                            .await?
                            .map(|()| iq_result(&inb.el)))
                    }
                    _ => Ok(Ok(iq_result(&inb.el))),
                },
                Err(StoreError::Full) => Ok(Err(StanzaError::resource_constraint().text(format!(
                    "an account's private storage holds at most {max_total} bytes"
                )))),
                Err(e) => Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(ty: StanzaType, xml: &str) -> Result<PrivateRequest, String> {
        PrivateRequest::parse(ty, &Element::parse(xml).expect("xml"), 100)
            .map_err(|e| e.condition.to_owned())
    }

    #[test]
    fn gets_and_sets_parse_by_name_and_namespace() {
        let q = "xmlns='jabber:iq:private'";
        assert_eq!(
            parse(
                StanzaType::Get,
                &format!("<query {q}><storage xmlns='storage:bookmarks'/></query>")
            ),
            Ok(PrivateRequest::Get {
                name: "storage".into(),
                ns: "storage:bookmarks".into()
            })
        );
        let set = parse(
            StanzaType::Set,
            &format!(
                "<query {q}><a xmlns='x:1'>one</a><b xmlns='x:2'/><a xmlns='x:1'>two</a></query>"
            ),
        )
        .expect("set");
        let PrivateRequest::Set(items) = set else {
            panic!("not a set")
        };
        let keys: Vec<&str> = items.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["{x:2}b", "{x:1}a"]);
        assert_eq!(items[1].1.text(), "two");
    }

    #[test]
    fn reserved_namespaces_empty_queries_and_big_items_are_not_acceptable() {
        let q = "xmlns='jabber:iq:private'";
        for ty in [StanzaType::Get, StanzaType::Set] {
            assert_eq!(
                parse(ty, &format!("<query {q}/>")),
                Err("not-acceptable".into())
            );
            for reserved in ["jabber:iq:private", "jabber:client", "jabber:server"] {
                assert_eq!(
                    parse(ty, &format!("<query {q}><x xmlns='{reserved}'/></query>")),
                    Err("not-acceptable".into()),
                    "{reserved}"
                );
            }
            // A child without a namespace of its own is in jabber:iq:private.
            assert_eq!(
                parse(ty, &format!("<query {q}><x/></query>")),
                Err("not-acceptable".into())
            );
        }
        let big = "y".repeat(100);
        assert_eq!(
            parse(
                StanzaType::Set,
                &format!("<query {q}><x xmlns='a'>{big}</x></query>")
            ),
            Err("not-acceptable".into())
        );
        assert_eq!(
            parse(
                StanzaType::Get,
                &format!("<query {q}><a xmlns='x'/><b xmlns='x'/></query>")
            ),
            Err("bad-request".into())
        );
        assert_eq!(
            parse(
                StanzaType::Get,
                &format!("<other {q}><a xmlns='x'/></other>")
            ),
            Err("bad-request".into())
        );
    }
}
