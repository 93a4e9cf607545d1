//! XEP-0411 bookmarks compatibility: one list of group chats for XEP-0048 clients (private
//! storage, `<storage xmlns='storage:bookmarks'/>`) and XEP-0402 clients (the PEP node
//! `urn:xmpp:bookmarks:1`, one item per room). The PEP node is the truth: a private-storage
//! get of the bookmarks is built from it when it exists (with the `<url/>`s, which XEP-0402
//! cannot hold, from the stored private copy), and a private-storage set of them replaces the
//! node's items (one transaction) and notifies the owner's resources as a publish would.

use meerkat_store::{PepChange, PepItem, StoreError};
use meerkat_xmpp::{Element, StanzaError};

use crate::jids::split_bare;
use crate::outbox::Outbox;
use crate::pep::config::{Access, NodeConfig, SendLast};
use crate::pep::request::{PUBSUB, PUBSUB_EVENT};
use crate::pep::{event_item, notify};
use crate::Ctx;

/// XEP-0048's namespace.
pub const LEGACY: &str = "storage:bookmarks";
/// XEP-0402's node and namespace.
pub const NODE: &str = "urn:xmpp:bookmarks:1";
/// The private storage key of the legacy bookmarks.
pub const LEGACY_KEY: &str = "{storage:bookmarks}storage";
/// The disco feature of the compatibility (XEP-0411 §4).
pub const COMPAT: &str = "urn:xmpp:bookmarks:1#compat";

/// The legacy `<storage/>` of these XEP-0402 items, with the legacy `<url/>`s of `stored`.
pub fn to_legacy(items: &[PepItem], stored: Option<&Element>) -> Element {
    let mut storage = Element::new("storage", LEGACY);
    for it in items {
        let Ok(item) = Element::parse(&it.body) else {
            continue;
        };
        let Some(conf) = item.get_child("conference", NODE) else {
            continue;
        };
        let mut c = Element::new("conference", LEGACY).with_attr("jid", it.id.clone());
        if let Some(name) = conf.attr("name") {
            c.set_attr("name", name);
        }
        let autojoin = matches!(conf.attr("autojoin"), Some("true") | Some("1"));
        c.set_attr("autojoin", if autojoin { "true" } else { "false" });
        for child in ["nick", "password"] {
            if let Some(t) = conf.child_text(child, NODE) {
                c.push_child(Element::new(child, LEGACY).with_text(t));
            }
        }
        storage.push_child(c);
    }
    for url in stored
        .into_iter()
        .flat_map(|s| s.children().filter(|c| c.is("url", LEGACY)))
    {
        storage.push_child(url.clone());
    }
    storage
}

/// The XEP-0402 items (room JID, `<item/>`) of a legacy `<storage/>`; conferences without a
/// `jid` are skipped (nothing to key them by), a room named twice keeps its last entry.
pub fn from_legacy(storage: &Element) -> Vec<(String, Element)> {
    let mut items: Vec<(String, Element)> = Vec::new();
    for c in storage.children().filter(|c| c.is("conference", LEGACY)) {
        let Some(jid) = c.attr("jid").filter(|j| !j.is_empty() && j.len() <= 256) else {
            continue;
        };
        let autojoin = matches!(c.attr("autojoin"), Some("true") | Some("1"));
        let mut conf = Element::new("conference", NODE)
            .with_attr("autojoin", if autojoin { "true" } else { "false" });
        if let Some(name) = c.attr("name") {
            conf.set_attr("name", name);
        }
        for child in ["nick", "password"] {
            if let Some(t) = c.child_text(child, LEGACY) {
                conf.push_child(Element::new(child, NODE).with_text(t));
            }
        }
        items.retain(|(id, _)| id != jid);
        let item = Element::new("item", PUBSUB)
            .with_attr("id", jid)
            .with_child(conf);
        items.push((jid.to_owned(), item));
    }
    items
}

/// The bookmarks node's configuration when a legacy set creates it (XEP-0402 §3: the
/// owner's alone, kept, as many as allowed, never sent on presence).
fn new_node(cap: u32) -> NodeConfig {
    NodeConfig {
        access_model: Access::Whitelist,
        max_items: cap,
        persist_items: true,
        send_last: SendLast::Never,
        roster_groups: Vec::new(),
    }
}

/// A private-storage get of the legacy bookmarks: built from the PEP node if it exists.
pub async fn get(
    ctx: &Ctx,
    user: &str,
    stored: Option<&Element>,
) -> anyhow::Result<Option<Element>> {
    if ctx.store.pep_node(user, NODE).await?.is_none() {
        return Ok(None);
    }
    let items = ctx.store.pep_items(user, NODE, None, None).await?;
    Ok(Some(to_legacy(&items, stored)))
}

/// Whether a private-storage set of `storage` can be mirrored to the PEP node: checked
/// before anything is written, so a refused set writes neither copy. Too many conferences,
/// or a new node past the account's nodes: resource-constraint.
pub async fn check(
    ctx: &Ctx,
    user: &str,
    storage: &Element,
) -> anyhow::Result<Result<(), StanzaError>> {
    let cap = ctx.config.max_pep_items;
    if from_legacy(storage).len() > cap as usize {
        return Ok(Err(
            StanzaError::resource_constraint().text(format!("at most {cap} bookmarks"))
        ));
    }
    if ctx.store.pep_node(user, NODE).await?.is_none()
        && ctx.store.pep_nodes(user).await?.len() >= ctx.config.max_pep_nodes as usize
    {
        return Ok(Err(StanzaError::resource_constraint().text(format!(
            "an account has at most {} nodes",
            ctx.config.max_pep_nodes
        ))));
    }
    Ok(Ok(()))
}

/// A private-storage set of the legacy bookmarks (already stored as private XML): the PEP
/// node becomes its conferences; the owner's resources are told (new items, and retractions of
/// those gone). Too many conferences: resource-constraint, nothing written.
pub async fn set(
    ctx: &Ctx,
    out: &mut Outbox,
    owner_bare: &str,
    storage: &Element,
) -> anyhow::Result<Result<(), StanzaError>> {
    let Some(user) = split_bare(owner_bare).0 else {
        return Ok(Ok(()));
    };
    let cap = ctx.config.max_pep_items;
    let items = from_legacy(storage);
    if items.len() > cap as usize {
        return Ok(Err(
            StanzaError::resource_constraint().text(format!("at most {cap} bookmarks"))
        ));
    }
    let cfg = match ctx.store.pep_node(user, NODE).await? {
        Some(body) => NodeConfig::from_json(&body),
        None => new_node(cap),
    };
    let before: Vec<String> = ctx
        .store
        .pep_items(user, NODE, None, None)
        .await?
        .into_iter()
        .map(|i| i.id)
        .collect();
    let change = PepChange::Publish {
        node: NODE.to_owned(),
        config: cfg.to_json(),
        items: items
            .iter()
            .map(|(id, it)| (id.clone(), it.to_xml()))
            .collect(),
        max_items: cfg.kept().max(items.len() as u32),
        max_nodes: ctx.config.max_pep_nodes,
        replace: true,
    };
    match ctx.store.pep(user, change).await {
        Ok(_) => {}
        Err(StoreError::Full) => {
            return Ok(Err(StanzaError::resource_constraint().text(format!(
                "an account has at most {} nodes",
                ctx.config.max_pep_nodes
            ))))
        }
        Err(e) => return Err(e.into()),
    }
    let mut event = Element::new("items", PUBSUB_EVENT).with_attr("node", NODE);
    for (_, it) in &items {
        event.push_child(event_item(it));
    }
    for gone in before
        .iter()
        .filter(|id| !items.iter().any(|(i, _)| i == *id))
    {
        event.push_child(Element::new("retract", PUBSUB_EVENT).with_attr("id", gone.clone()));
    }
    notify::broadcast(ctx, out, user, owner_bare, NODE, &cfg, &event).await?;
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_and_pep_bookmarks_convert_both_ways() {
        let legacy = Element::parse(
            "<storage xmlns='storage:bookmarks'>\
             <conference name='Council' autojoin='true' jid='council@conference.example.com'>\
             <nick>Elsinore</nick><password>p</password></conference>\
             <conference jid='other@conference.example.com'/>\
             <conference name='no jid'/>\
             <url name='Site' url='https://example.com/'/></storage>",
        )
        .expect("xml");
        let items = from_legacy(&legacy);
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].0, "council@conference.example.com");
        let conf = items[0]
            .1
            .get_child("conference", NODE)
            .expect("conference");
        assert_eq!(conf.attr("autojoin"), Some("true"));
        assert_eq!(conf.child_text("nick", NODE).as_deref(), Some("Elsinore"));
        let stored: Vec<PepItem> = items
            .iter()
            .map(|(id, it)| PepItem {
                id: id.clone(),
                body: it.to_xml(),
            })
            .collect();
        let back = to_legacy(&stored, Some(&legacy));
        let confs: Vec<&Element> = back
            .children()
            .filter(|c| c.is("conference", LEGACY))
            .collect();
        assert_eq!(confs.len(), 2);
        assert_eq!(confs[0].attr("name"), Some("Council"));
        assert_eq!(
            confs[0].child_text("password", LEGACY).as_deref(),
            Some("p")
        );
        assert_eq!(confs[1].attr("autojoin"), Some("false"));
        assert!(back.children().any(|c| c.is("url", LEGACY)), "urls kept");
    }
}
