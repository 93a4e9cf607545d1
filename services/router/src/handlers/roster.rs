//! RFC 6121 §2 roster management: get (with versioning), set, remove, and the roster pushes
//! to every interested resource of the user.

use std::collections::HashSet;

use meerkat_store::{RosterItem, Subscription};
use meerkat_xmpp::stanza::{iq_result, iq_result_with};
use meerkat_xmpp::{ns, Element, StanzaError, StanzaType};

use super::subscription;
use crate::inbound::Inbound;
use crate::jids::{self, Addr};
use crate::metrics::Outcome;
use crate::outbox::{Outbox, Target};
use crate::reply::{error, reply};
use crate::Ctx;

/// A parsed roster request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RosterRequest {
    Get {
        ver: Option<String>,
    },
    Set {
        jid: String,
        name: Option<String>,
        groups: Vec<String>,
    },
    Remove {
        jid: String,
    },
}

impl RosterRequest {
    pub fn parse(ty: StanzaType, query: &Element) -> Result<RosterRequest, StanzaError> {
        if ty == StanzaType::Get {
            return Ok(RosterRequest::Get {
                ver: query.attr("ver").map(str::to_owned),
            });
        }
        let mut items = query.children().filter(|c| c.is("item", ns::ROSTER));
        let (Some(item), None) = (items.next(), items.next()) else {
            return Err(StanzaError::bad_request().text("a roster set carries exactly one item"));
        };
        let jid = item
            .attr("jid")
            .and_then(Addr::parse)
            .map(|a| a.full())
            .ok_or_else(|| StanzaError::bad_request().text("item jid missing or invalid"))?;
        if item.attr("subscription") == Some("remove") {
            return Ok(RosterRequest::Remove { jid });
        }
        let mut groups = Vec::new();
        let mut seen = HashSet::new();
        for g in item.children().filter(|c| c.is("group", ns::ROSTER)) {
            let name = g.text();
            if name.trim().is_empty() {
                return Err(StanzaError::not_acceptable().text("empty group name"));
            }
            if !seen.insert(name.clone()) {
                return Err(StanzaError::bad_request().text("duplicate group"));
            }
            groups.push(name);
        }
        Ok(RosterRequest::Set {
            jid,
            name: item
                .attr("name")
                .filter(|n| !n.is_empty())
                .map(str::to_owned),
            groups,
        })
    }
}

/// `<item/>` as it appears in a roster result or push.
pub fn item_element(item: &RosterItem) -> Element {
    let mut e = Element::new("item", ns::ROSTER)
        .with_attr("jid", item.jid.clone())
        .with_attr("subscription", item.subscription.as_str());
    if let Some(name) = &item.name {
        e.set_attr("name", name.clone());
    }
    if item.ask_out {
        e.set_attr("ask", "subscribe");
    }
    // RFC 6121 §2.1.2.1: shown since the server advertises pre-approval.
    if item.approved {
        e.set_attr("approved", "true");
    }
    for g in &item.groups {
        e.push_child(Element::new("group", ns::ROSTER).with_text(g.clone()));
    }
    e
}

/// The roster version as clients see it. Each DC numbers its copy of a roster on its own,
/// so the version names the DC: a client that moves to another DC with a cached version gets
/// the full roster there instead of a wrong "unchanged".
fn ver_string(ctx: &Ctx, version: i64) -> String {
    format!("{}-{version}", ctx.config.dc)
}

/// Pushes one changed item (or a removal) to every interested resource of `user_bare`.
pub fn push(ctx: &Ctx, out: &mut Outbox, user_bare: &str, item: Element, ver: i64) {
    let sessions: Vec<(Target, String)> = ctx
        .sessions
        .read()
        .resources(user_bare)
        .into_iter()
        .filter(|s| s.interested)
        .map(|s| (Target::from(s), s.jid.clone()))
        .collect();
    for (target, jid) in sessions {
        let iq = Element::new("iq", ns::CLIENT)
            .with_attr("type", "set")
            .with_attr("id", format!("push-{}", uuid::Uuid::new_v4().simple()))
            .with_attr("to", jid)
            .with_child(
                Element::new("query", ns::ROSTER)
                    .with_attr("ver", ver_string(ctx, ver))
                    .with_child(item.clone()),
            );
        out.deliver(target, &iq);
    }
}

/// A roster push that another DC's router sent to a session here, written again from this
/// DC's copy of the roster: the item as stored here now, and this DC's version. `None` for
/// anything else. Call it only once this DC has applied what the other DC wrote before
/// sending it (`x-meerkat-data-applied`): the copy here is then at least as new as the push.
///
/// Why: a session here gets pushes from this DC's routers and from other DCs', by paths that
/// do not keep one order. A change made here in answer to a change made there (Alice
/// approves, at DC 1, the request Bob made at DC 2 right after approving hers; she learnt of
/// it from DC 1's stored-request nudge) could reach the client before the push of the change
/// it answers, which would then undo it on the client (`to` after `both`). Written from here,
/// every push a session gets carries this DC's version, which orders them: the gateway drops
/// a push for an item older than one it already wrote (c2s-gateway `roster_order.rs`), and a
/// roster get with the push's version is answered "unchanged" (RFC 6121 §2.6).
pub async fn as_here(ctx: &Ctx, el: &Element) -> anyhow::Result<Option<Element>> {
    let Some((owner, contact)) = pushed_item(ctx, el) else {
        return Ok(None);
    };
    let (version, item) = ctx.store.roster_item_versioned(&owner, &contact).await?;
    let item = match item {
        Some(i) => item_element(&i),
        None => Element::new("item", ns::ROSTER)
            .with_attr("jid", contact)
            .with_attr("subscription", "remove"),
    };
    let mut push = Element::new("iq", ns::CLIENT);
    for (k, v) in el.attrs() {
        push.set_attr(k, v);
    }
    push.push_child(
        Element::new("query", ns::ROSTER)
            .with_attr("ver", ver_string(ctx, version))
            .with_child(item),
    );
    Ok(Some(push))
}

/// The owner (username) and contact of a server's roster push to an account of this domain.
fn pushed_item(ctx: &Ctx, el: &Element) -> Option<(String, String)> {
    if !el.is("iq", ns::CLIENT) || el.attr("type") != Some("set") || el.attr("from").is_some() {
        return None;
    }
    let query = el.get_child("query", ns::ROSTER)?;
    let mut items = query.children();
    let (Some(item), None) = (items.next(), items.next()) else {
        return None;
    };
    let contact = jids::bare(item.attr("jid")?);
    let to = Addr::parse(el.attr("to")?)?;
    if !to.domain.eq_ignore_ascii_case(&ctx.config.domain) {
        return None;
    }
    Some((to.node?, contact))
}

pub async fn handle(ctx: &Ctx, inb: &Inbound, out: &mut Outbox) -> anyhow::Result<Outcome> {
    let Some(query) = inb.el.get_child("query", ns::ROSTER) else {
        return Ok(error(ctx, inb, out, StanzaError::bad_request()));
    };
    let req = match RosterRequest::parse(inb.ty, query) {
        Ok(r) => r,
        Err(e) => return Ok(error(ctx, inb, out, e)),
    };
    let user = inb.username().to_owned();
    let user_bare = inb.from_bare.clone();
    let result = match req {
        RosterRequest::Get { ver } => {
            let (version, items) = ctx.store.roster(&user).await?;
            let current = ver_string(ctx, version);
            if ver.as_deref() == Some(current.as_str()) {
                iq_result(&inb.el)
            } else {
                let mut q = Element::new("query", ns::ROSTER).with_attr("ver", current);
                for item in &items {
                    q.push_child(item_element(item));
                }
                iq_result_with(&inb.el, q)
            }
        }
        RosterRequest::Set { jid, name, groups } => {
            if jids::bare(&jid) == user_bare {
                return Ok(error(ctx, inb, out, StanzaError::not_allowed()));
            }
            let existing = ctx.store.roster_item(&user, &jid).await?;
            let item = RosterItem {
                jid: jid.clone(),
                name,
                groups,
                subscription: existing
                    .as_ref()
                    .map_or(Subscription::None, |e| e.subscription),
                ask_out: existing.as_ref().is_some_and(|e| e.ask_out),
                approved: existing.as_ref().is_some_and(|e| e.approved),
            };
            let ver = ctx.store.put_roster_item(&user, &item).await?;
            push(ctx, out, &user_bare, item_element(&item), ver);
            iq_result(&inb.el)
        }
        RosterRequest::Remove { jid } => {
            let Some(item) = ctx.store.roster_item(&user, &jid).await? else {
                return Ok(error(ctx, inb, out, StanzaError::item_not_found()));
            };
            subscription::cancel_all(ctx, out, &user_bare, &item).await?;
            if let Some(ver) = ctx.store.remove_roster_item(&user, &jid).await? {
                let gone = Element::new("item", ns::ROSTER)
                    .with_attr("jid", jid)
                    .with_attr("subscription", "remove");
                push(ctx, out, &user_bare, gone, ver);
            }
            iq_result(&inb.el)
        }
    };
    let mut result = result;
    if result.attr("to").is_none() {
        result.set_attr("to", inb.from.clone());
    }
    reply(ctx, inb, out, &result);
    Ok(Outcome::Handled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(xml: &str) -> Element {
        Element::parse(xml).expect("xml")
    }

    #[test]
    fn parses_get_set_remove() {
        let q = query("<query xmlns='jabber:iq:roster' ver='3'/>");
        assert_eq!(
            RosterRequest::parse(StanzaType::Get, &q),
            Ok(RosterRequest::Get {
                ver: Some("3".into())
            })
        );
        let q = query("<query xmlns='jabber:iq:roster'><item jid='Bob@Example.com' name='B'><group>F</group></item></query>");
        assert_eq!(
            RosterRequest::parse(StanzaType::Set, &q),
            Ok(RosterRequest::Set {
                jid: "bob@example.com".into(),
                name: Some("B".into()),
                groups: vec!["F".into()]
            })
        );
        let q = query(
            "<query xmlns='jabber:iq:roster'><item jid='b@x' subscription='remove'/></query>",
        );
        assert_eq!(
            RosterRequest::parse(StanzaType::Set, &q),
            Ok(RosterRequest::Remove { jid: "b@x".into() })
        );
    }

    #[test]
    fn rejects_bad_sets() {
        let two =
            query("<query xmlns='jabber:iq:roster'><item jid='a@x'/><item jid='b@x'/></query>");
        assert!(RosterRequest::parse(StanzaType::Set, &two).is_err());
        let none = query("<query xmlns='jabber:iq:roster'/>");
        assert!(RosterRequest::parse(StanzaType::Set, &none).is_err());
        let bad = query("<query xmlns='jabber:iq:roster'><item jid='@x'/></query>");
        assert!(RosterRequest::parse(StanzaType::Set, &bad).is_err());
        let dup = query("<query xmlns='jabber:iq:roster'><item jid='a@x'><group>G</group><group>G</group></item></query>");
        assert_eq!(
            RosterRequest::parse(StanzaType::Set, &dup).map_err(|e| e.condition),
            Err("bad-request")
        );
        let empty =
            query("<query xmlns='jabber:iq:roster'><item jid='a@x'><group></group></item></query>");
        assert_eq!(
            RosterRequest::parse(StanzaType::Set, &empty).map_err(|e| e.condition),
            Err("not-acceptable")
        );
    }

    #[test]
    fn item_xml() {
        let item = RosterItem {
            jid: "b@x".into(),
            name: Some("B".into()),
            subscription: Subscription::None,
            ask_out: true,
            approved: false,
            groups: vec!["G".into()],
        };
        assert_eq!(
            item_element(&item).to_xml(),
            "<item xmlns='jabber:iq:roster' jid='b@x' subscription='none' name='B' ask='subscribe'><group>G</group></item>"
        );
    }
}
