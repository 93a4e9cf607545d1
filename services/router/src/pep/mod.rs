//! PEP (XEP-0163 on the XEP-0060 subset it needs): every account is a pubsub service at its
//! bare JID. This module owns the protocol pieces — requests (`request.rs`), data forms
//! (`form.rs`), node configuration and publish-options (`config.rs`), entity capabilities
//! (`caps.rs`) — and who gets what: the access model (`may_read`) and the notifications
//! (`notify.rs`). The iq handler is `handlers/pep.rs`. Nodes and items are replicated user
//! data (store `pep.rs`); notifications are stanzas, delivered to sessions at any DC like
//! messages and never waiting for the data to replicate (the receiving DC holds them until
//! it has applied the publishing DC's data up to the publish: docs/pep.md).

pub mod caps;
pub mod config;
pub mod form;
pub mod notify;
pub mod request;

use meerkat_store::{RosterItem, Subscription};
use meerkat_xmpp::{Element, StanzaError};

use self::config::{Access, NodeConfig};
use self::request::{pubsub_error, PUBSUB};
use crate::Ctx;

/// Items one retract or retrieve-by-id request may name.
pub const MAX_REQUEST_ITEMS: usize = 64;

/// The features a PEP service advertises (XEP-0060 §10), besides the identity
/// pubsub/pep: only what works.
pub const FEATURES: &[&str] = &[
    PUBSUB,
    "http://jabber.org/protocol/pubsub#publish",
    "http://jabber.org/protocol/pubsub#publish-options",
    "http://jabber.org/protocol/pubsub#auto-create",
    "http://jabber.org/protocol/pubsub#create-nodes",
    "http://jabber.org/protocol/pubsub#access-presence",
    "http://jabber.org/protocol/pubsub#access-open",
    "http://jabber.org/protocol/pubsub#access-roster",
    "http://jabber.org/protocol/pubsub#access-whitelist",
    "http://jabber.org/protocol/pubsub#retrieve-items",
    "http://jabber.org/protocol/pubsub#retract-items",
    "http://jabber.org/protocol/pubsub#purge-nodes",
    "http://jabber.org/protocol/pubsub#delete-nodes",
    "http://jabber.org/protocol/pubsub#config-node",
    "http://jabber.org/protocol/pubsub#persistent-items",
    "http://jabber.org/protocol/pubsub#last-published",
    "http://jabber.org/protocol/pubsub#item-ids",
    "http://jabber.org/protocol/pubsub#retrieve-default",
    "http://jabber.org/protocol/pubsub#presence-notifications",
    "http://jabber.org/protocol/pubsub#filtered-notifications",
    // XEP-0411: XEP-0048 bookmarks in private storage are the XEP-0402 ones.
    crate::handlers::bookmarks::COMPAT,
];

/// Whether `requester` (a bare JID, not the owner) may retrieve items of a node configured
/// `cfg`, given the owner's roster item for them; the XEP-0060 §6.5.9 error if not.
pub fn may_read(cfg: &NodeConfig, item: Option<&RosterItem>) -> Result<(), StanzaError> {
    match cfg.access_model {
        Access::Open => Ok(()),
        Access::Presence => {
            if item
                .is_some_and(|i| matches!(i.subscription, Subscription::From | Subscription::Both))
            {
                Ok(())
            } else {
                Err(pubsub_error(
                    StanzaError::not_authorized(),
                    "presence-subscription-required",
                ))
            }
        }
        Access::Roster => {
            if item.is_some_and(|i| i.groups.iter().any(|g| cfg.roster_groups.contains(g))) {
                Ok(())
            } else {
                Err(pubsub_error(
                    StanzaError::not_authorized(),
                    "not-in-roster-group",
                ))
            }
        }
        Access::Whitelist => Err(pubsub_error(StanzaError::not_allowed(), "closed-node")),
    }
}

/// Whether `requester` may read the node of `owner` (a username) configured `cfg`.
pub async fn allowed(
    ctx: &Ctx,
    owner: &str,
    owner_bare: &str,
    requester_bare: &str,
    cfg: &NodeConfig,
) -> anyhow::Result<Result<(), StanzaError>> {
    if owner_bare == requester_bare || cfg.access_model == Access::Open {
        return Ok(Ok(()));
    }
    let item = ctx.store.roster_item(owner, requester_bare).await?;
    Ok(may_read(cfg, item.as_ref()))
}

/// The item of a notification (pubsub#event namespace) from a stored `<item/>`.
pub fn event_item(stored: &Element) -> Element {
    let mut item = Element::new("item", request::PUBSUB_EVENT);
    if let Some(id) = stored.attr("id") {
        item.set_attr("id", id);
    }
    for c in stored.children() {
        item.push_child(c.clone());
    }
    item
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(sub: Subscription, groups: &[&str]) -> RosterItem {
        RosterItem {
            jid: "b@x".into(),
            name: None,
            subscription: sub,
            ask_out: false,
            approved: false,
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        }
    }

    fn cond(r: Result<(), StanzaError>) -> Option<(&'static str, String)> {
        r.err().map(|e| {
            (
                e.condition,
                e.app.map(|a| a.name().to_owned()).unwrap_or_default(),
            )
        })
    }

    #[test]
    fn access_models() {
        let mut cfg = NodeConfig::default_pep();
        assert_eq!(
            cond(may_read(&cfg, Some(&item(Subscription::From, &[])))),
            None
        );
        assert_eq!(
            cond(may_read(&cfg, Some(&item(Subscription::To, &[])))),
            Some(("not-authorized", "presence-subscription-required".into()))
        );
        assert!(may_read(&cfg, None).is_err());
        cfg.access_model = Access::Open;
        assert!(may_read(&cfg, None).is_ok());
        cfg.access_model = Access::Roster;
        cfg.roster_groups = vec!["friends".into()];
        assert!(may_read(&cfg, Some(&item(Subscription::None, &["friends"]))).is_ok());
        assert_eq!(
            cond(may_read(&cfg, Some(&item(Subscription::Both, &["work"])))),
            Some(("not-authorized", "not-in-roster-group".into()))
        );
        cfg.access_model = Access::Whitelist;
        assert_eq!(
            cond(may_read(&cfg, Some(&item(Subscription::Both, &[])))),
            Some(("not-allowed", "closed-node".into()))
        );
    }
}
