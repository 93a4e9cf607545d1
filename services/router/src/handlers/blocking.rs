//! XEP-0191 Blocking Command: the block list requests (get, block, unblock, unblock all) with
//! their pushes to every resource that asked for the list, at every DC; and the enforcement
//! the routing core and presence broadcast call (a blocked contact's stanzas never reach the
//! user; the user's stanzas never reach a blocked contact).

use std::collections::HashSet;

use meerkat_store::StoreError;
use meerkat_xmpp::stanza::{error_reply, iq_result, iq_result_with, must_not_bounce};
use meerkat_xmpp::{ns, Element, StanzaError, StanzaKind, StanzaType};

use super::subscription::{available_targets, send_presence_of, send_unavailable_to};
use crate::blocking::BlockList;
use crate::inbound::Inbound;
use crate::jids::Addr;
use crate::metrics::Outcome;
use crate::outbox::{Outbox, Target};
use crate::reply::{error, reply};
use crate::Ctx;

/// A parsed block list request. JIDs are normalised ([`Addr::full`]), without duplicates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockingRequest {
    List,
    Block(Vec<String>),
    /// `None`: unblock everything (an empty `<unblock/>`).
    Unblock(Option<Vec<String>>),
}

impl BlockingRequest {
    /// `max_items`: the most items one request may carry.
    pub fn parse(
        ty: StanzaType,
        payload: &Element,
        max_items: usize,
    ) -> Result<BlockingRequest, StanzaError> {
        match (ty, payload.name()) {
            (StanzaType::Get, "blocklist") => Ok(BlockingRequest::List),
            (StanzaType::Set, "block") => match items(payload, max_items)? {
                Some(jids) => Ok(BlockingRequest::Block(jids)),
                None => Err(StanzaError::bad_request().text("a block carries at least one item")),
            },
            (StanzaType::Set, "unblock") => {
                Ok(BlockingRequest::Unblock(items(payload, max_items)?))
            }
            _ => Err(StanzaError::bad_request()),
        }
    }
}

/// The `<item jid/>` children, normalised; `None` when there are none.
fn items(payload: &Element, max: usize) -> Result<Option<Vec<String>>, StanzaError> {
    let mut seen = HashSet::new();
    let mut jids = Vec::new();
    for item in payload.children().filter(|c| c.is("item", ns::BLOCKING)) {
        if jids.len() == max {
            return Err(StanzaError::resource_constraint()
                .text(format!("at most {max} items in one request")));
        }
        let jid = item
            .attr("jid")
            .and_then(Addr::parse)
            .map(|a| a.full())
            .ok_or_else(StanzaError::jid_malformed)?;
        if seen.insert(jid.clone()) {
            jids.push(jid);
        }
    }
    Ok((!jids.is_empty()).then_some(jids))
}

fn item_list(name: &str, jids: &[String]) -> Element {
    let mut e = Element::new(name, ns::BLOCKING);
    for j in jids {
        e.push_child(Element::new("item", ns::BLOCKING).with_attr("jid", j.clone()));
    }
    e
}

/// Handles a block list request from the user's own session: exactly one reply.
pub async fn handle(ctx: &Ctx, inb: &Inbound, out: &mut Outbox) -> anyhow::Result<Outcome> {
    let Some(payload) = inb.el.children().next() else {
        return Ok(error(ctx, inb, out, StanzaError::bad_request()));
    };
    let max = ctx.config.max_block_request as usize;
    let req = match BlockingRequest::parse(inb.ty, payload, max) {
        Ok(r) => r,
        Err(e) => return Ok(error(ctx, inb, out, e)),
    };
    let user = inb.username();
    let written = match &req {
        BlockingRequest::List => {
            let jids = ctx.store.block_list(user).await?;
            let result = iq_result_with(&inb.el, item_list("blocklist", &jids));
            reply(ctx, inb, out, &with_to(result, inb));
            return Ok(Outcome::Handled);
        }
        BlockingRequest::Block(jids) => ctx.store.block(user, jids, ctx.config.max_blocked).await,
        BlockingRequest::Unblock(jids) => ctx.store.unblock(user, jids.as_deref()).await,
    };
    match written {
        Ok(()) => {}
        Err(StoreError::Full) => {
            let e = StanzaError::resource_constraint().text(format!(
                "a block list holds at most {} items",
                ctx.config.max_blocked
            ));
            return Ok(error(ctx, inb, out, e));
        }
        Err(e) => return Err(e.into()),
    }
    // This router routes the user's next stanza: it must not wait for the notification.
    ctx.blocking.invalidate(user);
    reply(ctx, inb, out, &with_to(iq_result(&inb.el), inb));
    let push = match &req {
        BlockingRequest::Block(jids) => {
            // §3.3: the contacts who saw the user stop seeing them at once.
            for jid in jids {
                if let Some(contact) = Addr::parse(jid).filter(|a| a.node.is_some()) {
                    if subscribed(ctx, user, &contact.bare).await? {
                        unavailable_to_blocked(ctx, out, &inb.from_bare, &contact);
                    }
                }
            }
            item_list("block", jids)
        }
        BlockingRequest::Unblock(jids) => {
            // §3.4: an unblocked contact who is subscribed sees the user again.
            for jid in jids.iter().flatten() {
                if let Some(contact) = Addr::parse(jid).filter(|a| a.node.is_some()) {
                    if subscribed(ctx, user, &contact.bare).await? {
                        send_presence_of(ctx, out, &inb.from_bare, &contact.bare).await?;
                    }
                }
            }
            item_list("unblock", jids.as_deref().unwrap_or_default())
        }
        BlockingRequest::List => unreachable!("answered above"),
    };
    push_to_interested(ctx, out, &inb.from_bare, push);
    Ok(Outcome::Handled)
}

fn with_to(mut result: Element, inb: &Inbound) -> Element {
    if result.attr("to").is_none() {
        result.set_attr("to", inb.from.clone());
    }
    result
}

/// A disco#info result without the blocking feature when block lists cannot be changed here.
pub fn advertised(ctx: &Ctx, mut result: Element) -> Element {
    if !ctx.config.blocking {
        if let Some(q) = result.get_child_mut("query", ns::DISCO_INFO) {
            q.remove_children(|f| {
                f.is("feature", ns::DISCO_INFO) && f.attr("var") == Some(ns::BLOCKING)
            });
        }
    }
    result
}

/// Unavailable presence from each available session of `user_bare` to the sessions of
/// `blocked` (all of the account's for a bare JID, that one for a full JID).
fn unavailable_to_blocked(ctx: &Ctx, out: &mut Outbox, user_bare: &str, blocked: &Addr) {
    let item = BlockList::new([blocked.full()]);
    let targets = available_targets(ctx, &blocked.bare)
        .into_iter()
        .filter(|(_, jid)| Addr::parse(jid).is_some_and(|a| item.blocks(&a)))
        .collect();
    send_unavailable_to(ctx, out, user_bare, targets);
}

/// Whether `contact` may see `user`'s presence (subscription from or both).
async fn subscribed(ctx: &Ctx, user: &str, contact: &str) -> anyhow::Result<bool> {
    use meerkat_store::Subscription::{Both, From};
    Ok(ctx
        .store
        .roster_item(user, contact)
        .await?
        .is_some_and(|i| matches!(i.subscription, From | Both)))
}

/// A blocking push to every resource of `user_bare` that has asked for the list, at any DC.
fn push_to_interested(ctx: &Ctx, out: &mut Outbox, user_bare: &str, payload: Element) {
    let sessions: Vec<(Target, String)> = ctx
        .sessions
        .read()
        .resources(user_bare)
        .into_iter()
        .filter(|s| s.blocklist)
        .map(|s| (Target::from(s), s.jid.clone()))
        .collect();
    for (target, jid) in sessions {
        let iq = Element::new("iq", ns::CLIENT)
            .with_attr("type", "set")
            .with_attr("id", format!("block-{}", uuid::Uuid::new_v4().simple()))
            .with_attr("to", jid)
            .with_child(payload.clone());
        out.deliver(target, &iq);
    }
}

/// The routing core's check of a stanza to an account of this domain, before anything else
/// is done with it. `Some`: the stanza was refused (XEP-0191 §3.5, §3.6) and is done with.
pub async fn enforce(
    ctx: &Ctx,
    inb: &Inbound,
    out: &mut Outbox,
    to: &Addr,
) -> anyhow::Result<Option<Outcome>> {
    let Some(recipient) = &to.node else {
        return Ok(None);
    };
    if to.bare == inb.from_bare {
        return Ok(None);
    }
    let mine = ctx.blocking.list(&ctx.store, inb.username()).await?;
    if mine.blocks(to) {
        // §3.6: the user's stanza to a blocked contact.
        let refusable = match inb.kind {
            StanzaKind::Presence => !matches!(inb.ty, StanzaType::Unavailable),
            _ => true,
        };
        if !refusable || must_not_bounce(&inb.el) {
            return Ok(Some(Outcome::Dropped));
        }
        let mut r = error_reply(&inb.el, &StanzaError::not_acceptable());
        if let Some(e) = r.get_child_mut("error", ns::CLIENT) {
            e.push_child(Element::new("blocked", ns::BLOCKING_ERRORS));
        }
        reply(ctx, inb, out, &with_to(r, inb));
        return Ok(Some(Outcome::Error));
    }
    let theirs = ctx.blocking.list(&ctx.store, recipient).await?;
    let from = Addr::parse(&inb.from);
    if !theirs.is_empty() && from.is_some_and(|f| theirs.blocks(&f)) {
        // §3.5: a blocked contact's stanza; nothing for presence.
        return Ok(Some(match inb.kind {
            StanzaKind::Presence => Outcome::Dropped,
            _ => error(ctx, inb, out, StanzaError::service_unavailable()),
        }));
    }
    Ok(None)
}

/// Whether presence from `from` (a full JID of this domain) may reach `to`: neither account
/// blocks the other.
pub async fn allows(ctx: &Ctx, from: &str, to: &str) -> anyhow::Result<bool> {
    let (Some(from), Some(to)) = (Addr::parse(from), Addr::parse(to)) else {
        return Ok(true);
    };
    if from.bare == to.bare {
        return Ok(true);
    }
    for (a, b) in [(&from, &to), (&to, &from)] {
        if let Some(node) = &a.node {
            if ctx.blocking.list(&ctx.store, node).await?.blocks(b) {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// The available sessions of `bare` that `from` may send presence to.
pub async fn presence_targets(
    ctx: &Ctx,
    from: &str,
    bare: &str,
) -> anyhow::Result<Vec<(Target, String)>> {
    let mut targets = Vec::new();
    for (t, jid) in available_targets(ctx, bare) {
        if allows(ctx, from, &jid).await? {
            targets.push((t, jid));
        }
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(ty: StanzaType, xml: &str) -> Result<BlockingRequest, StanzaError> {
        BlockingRequest::parse(ty, &Element::parse(xml).expect("xml"), 3)
    }

    #[test]
    fn requests_parse() {
        let b = "xmlns='urn:xmpp:blocking'";
        assert_eq!(
            parse(StanzaType::Get, &format!("<blocklist {b}/>")),
            Ok(BlockingRequest::List)
        );
        assert_eq!(
            parse(
                StanzaType::Set,
                &format!("<block {b}><item jid='Eve@Example.com'/><item jid='eve@example.com'/><item jid='evil.example'/></block>")
            ),
            Ok(BlockingRequest::Block(vec![
                "eve@example.com".into(),
                "evil.example".into()
            ]))
        );
        assert_eq!(
            parse(StanzaType::Set, &format!("<unblock {b}/>")),
            Ok(BlockingRequest::Unblock(None))
        );
        assert_eq!(
            parse(
                StanzaType::Set,
                &format!("<unblock {b}><item jid='eve@example.com/phone'/></unblock>")
            ),
            Ok(BlockingRequest::Unblock(Some(vec![
                "eve@example.com/phone".into()
            ])))
        );
    }

    #[test]
    fn bad_requests_are_refused_with_the_xep_errors() {
        let b = "xmlns='urn:xmpp:blocking'";
        let cond = |ty, xml: String| parse(ty, &xml).map_err(|e| e.condition);
        assert_eq!(
            cond(StanzaType::Set, format!("<block {b}/>")),
            Err("bad-request")
        );
        assert_eq!(
            cond(
                StanzaType::Set,
                format!("<block {b}><item jid='@x'/></block>")
            ),
            Err("jid-malformed")
        );
        assert_eq!(
            cond(StanzaType::Set, format!("<block {b}><item/></block>")),
            Err("jid-malformed")
        );
        assert_eq!(
            cond(
                StanzaType::Set,
                format!("<block {b}><item jid='a@x'/><item jid='b@x'/><item jid='c@x'/><item jid='d@x'/></block>")
            ),
            Err("resource-constraint")
        );
        assert_eq!(
            cond(
                StanzaType::Get,
                format!("<block {b}><item jid='a@x'/></block>")
            ),
            Err("bad-request")
        );
        assert_eq!(
            cond(StanzaType::Set, format!("<blocklist {b}/>")),
            Err("bad-request")
        );
        assert_eq!(
            cond(StanzaType::Get, format!("<other {b}/>")),
            Err("bad-request")
        );
    }
}
