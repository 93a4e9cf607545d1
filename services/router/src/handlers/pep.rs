//! XEP-0163 PEP: the pubsub iq of an account's service (its bare JID), answered by the
//! server on the account's behalf. Parsing and configuration are `pep/`'s; this applies a
//! request: the owner writes (publish with auto-create and publish-options, retract, create,
//! configure, delete, purge), anyone the access model allows reads. A write is one store
//! transaction; its notifications are queued after it (`pep/notify.rs`), so nothing is
//! announced that was not written.

use meerkat_store::{PepChange, PepItem, StoreError};
use meerkat_xmpp::stanza::{iq_result, iq_result_with};
use meerkat_xmpp::{Element, StanzaError};

use super::Entity;
use crate::inbound::Inbound;
use crate::jids::split_bare;
use crate::metrics::Outcome;
use crate::outbox::Outbox;
use crate::pep::config::NodeConfig;
use crate::pep::request::{pubsub_error, PubsubRequest, PUBSUB, PUBSUB_EVENT, PUBSUB_OWNER};
use crate::pep::{allowed, event_item, notify};
use crate::reply::{error, reply};
use crate::Ctx;

/// Bytes of items one retrieval returns at most (but always the newest item).
pub const MAX_RESULT_BYTES: usize = 1024 * 1024;

/// Answers a `<pubsub/>` iq to `entity`: exactly one reply.
pub async fn handle(
    ctx: &Ctx,
    inb: &Inbound,
    out: &mut Outbox,
    entity: &Entity,
    payload: &Element,
) -> anyhow::Result<Outcome> {
    let Entity::Account { bare, own, .. } = entity else {
        // The domain itself is no pubsub service.
        return Ok(error(ctx, inb, out, StanzaError::service_unavailable()));
    };
    let Some(owner) = split_bare(bare).0.map(str::to_owned) else {
        return Ok(error(ctx, inb, out, StanzaError::service_unavailable()));
    };
    let req = match PubsubRequest::parse(inb.ty, payload) {
        Ok(r) => r,
        Err(e) => return Ok(error(ctx, inb, out, e)),
    };
    let svc = Service {
        ctx,
        owner: &owner,
        owner_bare: bare,
        own: *own,
    };
    let mut notes = Vec::new();
    let answer = svc.apply(inb, req, &mut notes).await?;
    Ok(match answer {
        Ok(mut result) => {
            if result.attr("to").is_none() {
                result.set_attr("to", inb.from.clone());
            }
            reply(ctx, inb, out, &result);
            for (node, cfg, event) in notes {
                notify::broadcast(ctx, out, &owner, bare, &node, &cfg, &event).await?;
            }
            Outcome::Handled
        }
        Err(e) => error(ctx, inb, out, e),
    })
}

/// A notification to send once the reply is queued: node, its configuration, the event.
type Note = (String, NodeConfig, Element);

struct Service<'a> {
    ctx: &'a Ctx,
    owner: &'a str,
    owner_bare: &'a str,
    /// The requester is the owner.
    own: bool,
}

fn pubsub(ns: &str, child: Element) -> Element {
    Element::new("pubsub", ns).with_child(child)
}

impl Service<'_> {
    fn cap(&self) -> u32 {
        self.ctx.config.max_pep_items
    }

    async fn node(&self, node: &str) -> anyhow::Result<Option<NodeConfig>> {
        Ok(self
            .ctx
            .store
            .pep_node(self.owner, node)
            .await?
            .map(|b| NodeConfig::from_json(&b)))
    }

    /// Writes go to the owner's own service only, and only where PEP writes are switched on.
    fn may_write(&self) -> Result<(), StanzaError> {
        if !self.own {
            return Err(StanzaError::forbidden());
        }
        if !self.ctx.config.pep {
            return Err(StanzaError::service_unavailable());
        }
        Ok(())
    }

    async fn write(
        &self,
        change: PepChange,
    ) -> anyhow::Result<Result<meerkat_store::Outcome, StanzaError>> {
        match self.ctx.store.pep(self.owner, change).await {
            Ok(o) => Ok(Ok(o)),
            Err(StoreError::Full) => Ok(Err(pubsub_error(
                StanzaError::resource_constraint(),
                "max-nodes-exceeded",
            )
            .text(format!(
                "an account has at most {} nodes",
                self.ctx.config.max_pep_nodes
            )))),
            Err(StoreError::NoSuchAccount) => Ok(Err(StanzaError::item_not_found())),
            Err(e) => Err(e.into()),
        }
    }

    async fn apply(
        &self,
        inb: &Inbound,
        req: PubsubRequest,
        notes: &mut Vec<Note>,
    ) -> anyhow::Result<Result<Element, StanzaError>> {
        match req {
            PubsubRequest::Publish {
                node,
                id,
                item,
                options,
            } => self.publish(inb, node, id, item, options, notes).await,
            PubsubRequest::Items { node, ids, max } => self.items(inb, node, ids, max).await,
            PubsubRequest::Retract { node, ids, notify } => {
                if let Err(e) = self.may_write() {
                    return Ok(Err(e));
                }
                let Some(cfg) = self.node(&node).await? else {
                    return Ok(Err(StanzaError::item_not_found()));
                };
                let change = PepChange::Retract {
                    node: node.clone(),
                    ids: ids.clone(),
                };
                match self.write(change).await? {
                    Ok(meerkat_store::Outcome::Existed(false)) => {
                        return Ok(Err(StanzaError::item_not_found()))
                    }
                    Ok(_) => {}
                    Err(e) => return Ok(Err(e)),
                }
                if notify {
                    let mut items =
                        Element::new("items", PUBSUB_EVENT).with_attr("node", node.clone());
                    for id in ids {
                        items.push_child(Element::new("retract", PUBSUB_EVENT).with_attr("id", id));
                    }
                    notes.push((node, cfg, items));
                }
                Ok(Ok(iq_result(&inb.el)))
            }
            PubsubRequest::Create { node, config } => {
                if let Err(e) = self.may_write() {
                    return Ok(Err(e));
                }
                if self.node(&node).await?.is_some() {
                    return Ok(Err(StanzaError::conflict()));
                }
                let cfg = match config {
                    Some(form) => match NodeConfig::default_pep().configure(&form, self.cap()) {
                        Ok(c) => c,
                        Err(e) => return Ok(Err(e)),
                    },
                    None => NodeConfig::default_pep(),
                };
                let change = PepChange::Publish {
                    node,
                    config: cfg.to_json(),
                    items: Vec::new(),
                    max_items: cfg.kept(),
                    max_nodes: self.ctx.config.max_pep_nodes,
                    replace: false,
                };
                Ok(self.write(change).await?.map(|_| iq_result(&inb.el)))
            }
            PubsubRequest::Configure { node, form } => {
                if !self.own {
                    return Ok(Err(StanzaError::forbidden()));
                }
                let Some(cfg) = self.node(&node).await? else {
                    return Ok(Err(StanzaError::item_not_found()));
                };
                let Some(form) = form else {
                    let configure = Element::new("configure", PUBSUB_OWNER)
                        .with_attr("node", node)
                        .with_child(cfg.to_form(self.cap()));
                    return Ok(Ok(iq_result_with(&inb.el, pubsub(PUBSUB_OWNER, configure))));
                };
                if let Err(e) = self.may_write() {
                    return Ok(Err(e));
                }
                let new = match cfg.configure(&form, self.cap()) {
                    Ok(c) => c,
                    Err(e) => return Ok(Err(e)),
                };
                let change = PepChange::Configure {
                    node,
                    config: new.to_json(),
                    max_items: new.kept(),
                };
                match self.write(change).await? {
                    Ok(meerkat_store::Outcome::Existed(false)) => {
                        Ok(Err(StanzaError::item_not_found()))
                    }
                    Ok(_) => Ok(Ok(iq_result(&inb.el))),
                    Err(e) => Ok(Err(e)),
                }
            }
            PubsubRequest::Default => {
                let default = Element::new("default", PUBSUB_OWNER)
                    .with_child(NodeConfig::default_pep().to_form(self.cap()));
                Ok(Ok(iq_result_with(&inb.el, pubsub(PUBSUB_OWNER, default))))
            }
            PubsubRequest::Delete { node } => self.remove(inb, node, true, notes).await,
            PubsubRequest::Purge { node } => self.remove(inb, node, false, notes).await,
        }
    }

    /// Deletes the node (`delete`) or purges its items, and tells those who hear of it.
    async fn remove(
        &self,
        inb: &Inbound,
        node: String,
        delete: bool,
        notes: &mut Vec<Note>,
    ) -> anyhow::Result<Result<Element, StanzaError>> {
        if let Err(e) = self.may_write() {
            return Ok(Err(e));
        }
        let Some(cfg) = self.node(&node).await? else {
            return Ok(Err(StanzaError::item_not_found()));
        };
        let (change, event) = if delete {
            (
                PepChange::Delete { node: node.clone() },
                Element::new("delete", PUBSUB_EVENT).with_attr("node", node.clone()),
            )
        } else {
            (
                PepChange::Purge { node: node.clone() },
                Element::new("purge", PUBSUB_EVENT).with_attr("node", node.clone()),
            )
        };
        if let Err(e) = self.write(change).await? {
            return Ok(Err(e));
        }
        notes.push((node, cfg, event));
        Ok(Ok(iq_result(&inb.el)))
    }

    async fn publish(
        &self,
        inb: &Inbound,
        node: String,
        id: Option<String>,
        mut item: Element,
        options: Option<crate::pep::form::Form>,
        notes: &mut Vec<Note>,
    ) -> anyhow::Result<Result<Element, StanzaError>> {
        if let Err(e) = self.may_write() {
            return Ok(Err(e));
        }
        let id = id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        item.set_attr("id", id.clone());
        let body = item.to_xml();
        let max = self.ctx.config.max_pep_item_bytes as usize;
        if body.len() > max {
            return Ok(Err(pubsub_error(
                StanzaError::not_acceptable(),
                "payload-too-big",
            )
            .text(format!("an item holds at most {max} bytes"))));
        }
        let cfg = match (self.node(&node).await?, options) {
            (Some(cfg), Some(opts)) => match cfg.with_options(&opts, self.cap()) {
                Ok(wanted) if wanted == cfg => cfg,
                Ok(_) => {
                    return Ok(Err(crate::pep::config::precondition(
                        "the node's configuration differs from the publish-options",
                    )))
                }
                Err(e) => return Ok(Err(e)),
            },
            (Some(cfg), None) => cfg,
            (None, Some(opts)) => match NodeConfig::default_pep().with_options(&opts, self.cap()) {
                Ok(c) => c,
                Err(e) => return Ok(Err(e)),
            },
            (None, None) => NodeConfig::default_pep(),
        };
        let change = PepChange::Publish {
            node: node.clone(),
            config: cfg.to_json(),
            items: vec![(id.clone(), body)],
            max_items: cfg.kept(),
            max_nodes: self.ctx.config.max_pep_nodes,
            replace: false,
        };
        if let Err(e) = self.write(change).await? {
            return Ok(Err(e));
        }
        let event = Element::new("items", PUBSUB_EVENT)
            .with_attr("node", node.clone())
            .with_child(event_item(&item));
        notes.push((node.clone(), cfg, event));
        let publish = Element::new("publish", PUBSUB)
            .with_attr("node", node)
            .with_child(Element::new("item", PUBSUB).with_attr("id", id));
        Ok(Ok(iq_result_with(&inb.el, pubsub(PUBSUB, publish))))
    }

    async fn items(
        &self,
        inb: &Inbound,
        node: String,
        ids: Option<Vec<String>>,
        max: Option<u32>,
    ) -> anyhow::Result<Result<Element, StanzaError>> {
        let Some(cfg) = self.node(&node).await? else {
            return Ok(Err(StanzaError::item_not_found()));
        };
        if let Err(e) = allowed(self.ctx, self.owner, self.owner_bare, &inb.from_bare, &cfg).await?
        {
            return Ok(Err(e));
        }
        let max = max.map(|m| m.min(self.cap()));
        let stored = self
            .ctx
            .store
            .pep_items(self.owner, &node, ids.as_deref(), max)
            .await?;
        let mut items = Element::new("items", PUBSUB).with_attr("node", node);
        for s in newest_within(&stored, MAX_RESULT_BYTES) {
            if let Ok(el) = Element::parse(&s.body) {
                items.push_child(el);
            }
        }
        Ok(Ok(iq_result_with(&inb.el, pubsub(PUBSUB, items))))
    }
}

/// The newest of `items` (oldest first) whose bodies fit in `budget` bytes, at least one,
/// oldest first: a node of many large items is answered in a size a client and the broker
/// take (XEP-0060 §6.5.7 lets the service return a subset; the client asks for the rest by
/// id).
fn newest_within(items: &[PepItem], budget: usize) -> &[PepItem] {
    let mut left = budget;
    let mut start = items.len();
    while start > 0 {
        let len = items[start - 1].body.len();
        if start < items.len() && len > left {
            break;
        }
        left = left.saturating_sub(len);
        start -= 1;
    }
    &items[start..]
}

/// disco#items of an account (XEP-0060 §5.2): the nodes `requester_bare` may read.
pub async fn node_items(
    ctx: &Ctx,
    owner_bare: &str,
    requester_bare: &str,
) -> anyhow::Result<Vec<Element>> {
    let Some(owner) = split_bare(owner_bare).0 else {
        return Ok(Vec::new());
    };
    let mut items = Vec::new();
    for (name, body) in ctx.store.pep_nodes(owner).await? {
        let cfg = NodeConfig::from_json(&body);
        if allowed(ctx, owner, owner_bare, requester_bare, &cfg)
            .await?
            .is_ok()
        {
            items.push(
                Element::new("item", meerkat_xmpp::ns::DISCO_ITEMS)
                    .with_attr("jid", owner_bare)
                    .with_attr("node", name),
            );
        }
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, len: usize) -> PepItem {
        PepItem {
            id: id.to_owned(),
            body: "x".repeat(len),
        }
    }

    #[test]
    fn a_retrieval_keeps_the_newest_items_that_fit_and_at_least_one() {
        let items = [item("a", 40), item("b", 30), item("c", 50)];
        let ids = |v: &[PepItem]| v.iter().map(|i| i.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(newest_within(&items, 1000)), ["a", "b", "c"]);
        assert_eq!(ids(newest_within(&items, 80)), ["b", "c"]);
        assert_eq!(ids(newest_within(&items, 10)), ["c"]);
        assert!(newest_within(&[], 10).is_empty());
    }
}
