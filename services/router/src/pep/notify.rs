//! Who hears of what is published (XEP-0163 §4.3, XEP-0060 §9 filtered notifications): the
//! owner's available resources and every available resource of the contacts the access
//! model allows (with a presence subscription to the owner: implicit PEP subscriptions) whose
//! verified caps say `<node>+notify` — at any DC, from the directory. And the last published
//! item of each node a session wants, when it comes online or its caps are verified.

use std::sync::Arc;

use meerkat_store::{RosterItem, Subscription};
use meerkat_wire::{RouteKind, SessionInfo};
use meerkat_xmpp::{ns, Element, StanzaType};

use super::caps::{self, CapsRef};
use super::config::{Access, NodeConfig, SendLast};
use super::request::PUBSUB_EVENT;
use crate::inbound::Inbound;
use crate::jids::{self, split_bare};
use crate::metrics::Outcome;
use crate::outbox::{Outbox, Target};
use crate::Ctx;

/// The verified features of `ver`: this router's memory, else the replicated cache.
pub async fn features(ctx: &Ctx, ver: &str) -> anyhow::Result<Option<Arc<Vec<String>>>> {
    if let Some(f) = ctx.caps.get(ver) {
        return Ok(Some(f));
    }
    let Some(body) = ctx.store.caps(&caps::key(ver)).await? else {
        return Ok(None);
    };
    let f: Arc<Vec<String>> = Arc::new(body.lines().map(str::to_owned).collect());
    ctx.caps.put(ver, f.clone());
    Ok(Some(f))
}

/// The verified features of a session's current presence.
async fn session_features(ctx: &Ctx, s: &SessionInfo) -> anyhow::Result<Option<Arc<Vec<String>>>> {
    let Some(c) = s
        .presence
        .as_deref()
        .and_then(|x| Element::parse(x).ok())
        .and_then(|p| CapsRef::of_presence(&p))
    else {
        return Ok(None);
    };
    features(ctx, &c.ver).await
}

fn wants(features: &[String], node: &str) -> bool {
    let want = format!("{node}+notify");
    features.contains(&want)
}

/// Whether a contact with this roster item (in the owner's roster) is notified.
fn contact_notified(cfg: &NodeConfig, item: &RosterItem) -> bool {
    if !matches!(item.subscription, Subscription::From | Subscription::Both) {
        return false;
    }
    match cfg.access_model {
        Access::Open | Access::Presence => true,
        Access::Roster => item.groups.iter().any(|g| cfg.roster_groups.contains(g)),
        Access::Whitelist => false,
    }
}

/// A notification message from `owner_bare` carrying `event` (a child of `<event/>`).
fn message(owner_bare: &str, to: &str, event: &Element) -> Element {
    Element::new("message", ns::CLIENT)
        .with_attr("from", owner_bare)
        .with_attr("to", to)
        .with_attr("type", "headline")
        .with_attr("id", uuid::Uuid::new_v4().to_string())
        .with_child(Element::new("event", PUBSUB_EVENT).with_child(event.clone()))
}

/// Sends `event` (`<items/>`, `<delete/>`, `<purge/>` of `node`) to everyone who hears of
/// the owner's node configured `cfg`.
pub async fn broadcast(
    ctx: &Ctx,
    out: &mut Outbox,
    owner: &str,
    owner_bare: &str,
    node: &str,
    cfg: &NodeConfig,
    event: &Element,
) -> anyhow::Result<()> {
    let (_, roster) = ctx.store.roster(owner).await?;
    let mut bares: Vec<String> = roster
        .iter()
        .filter(|i| contact_notified(cfg, i))
        .map(|i| jids::bare(&i.jid))
        .collect();
    bares.push(owner_bare.to_owned());
    for bare in bares {
        let sessions: Vec<SessionInfo> = ctx
            .sessions
            .read()
            .available(&bare)
            .into_iter()
            .cloned()
            .collect();
        for s in sessions {
            let Some(f) = session_features(ctx, &s).await? else {
                continue;
            };
            if !wants(&f, node)
                || !crate::handlers::blocking::allows(ctx, owner_bare, &s.jid).await?
            {
                continue;
            }
            out.deliver(Target::from(&s), &message(owner_bare, &s.jid, event));
        }
    }
    Ok(())
}

/// The `<items/>` event of a node's last published item (`None`: a stored item this version
/// cannot read).
fn last_event(last: &meerkat_store::LastPublished) -> Option<Element> {
    let stored = Element::parse(&last.item).ok()?;
    Some(
        Element::new("items", PUBSUB_EVENT)
            .with_attr("node", last.node.clone())
            .with_child(super::event_item(&stored)),
    )
}

/// The last published item of every node the session `full` (of account `user`, with the
/// roster `roster` and the verified `features`) hears of: its own nodes and those of the
/// contacts it is subscribed to, where the node sends it on presence (XEP-0163 §4.3.4).
async fn last_items(
    ctx: &Ctx,
    out: &mut Outbox,
    user_bare: &str,
    full: &str,
    target: &Target,
    features: &[String],
    roster: &[RosterItem],
) -> anyhow::Result<()> {
    let mut owners: Vec<String> = roster
        .iter()
        .filter(|i| matches!(i.subscription, Subscription::To | Subscription::Both))
        .map(|i| jids::bare(&i.jid))
        .collect();
    owners.push(user_bare.to_owned());
    let names: Vec<String> = owners
        .iter()
        .filter_map(|b| {
            let (node, domain) = split_bare(b);
            node.filter(|_| domain.eq_ignore_ascii_case(&ctx.config.domain))
                .map(str::to_owned)
        })
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    for last in ctx.store.pep_last_published(&names).await? {
        let cfg = NodeConfig::from_json(&last.config);
        if cfg.send_last != SendLast::OnSubAndPresence || !wants(features, &last.node) {
            continue;
        }
        let owner_bare = format!("{}@{}", last.username, ctx.config.domain);
        if owner_bare != user_bare {
            if cfg.access_model == Access::Roster || cfg.access_model == Access::Whitelist {
                let item = ctx.store.roster_item(&last.username, user_bare).await?;
                if super::may_read(&cfg, item.as_ref()).is_err() {
                    continue;
                }
            }
            if !crate::handlers::blocking::allows(ctx, &owner_bare, full).await? {
                continue;
            }
        }
        if let Some(event) = last_event(&last) {
            out.deliver(target.clone(), &message(&owner_bare, full, &event));
        }
    }
    Ok(())
}

/// An available presence broadcast by a client: if its caps are unknown, ask the client
/// (the answer is [`caps_result`]); if known and the presence is initial, send the last items.
pub async fn on_presence(
    ctx: &Ctx,
    inb: &Inbound,
    out: &mut Outbox,
    roster: &[RosterItem],
) -> anyhow::Result<()> {
    if inb.ty != StanzaType::Available || inb.wire_kind != RouteKind::Stanza {
        return Ok(());
    }
    let (Some(sender), Some(c)) = (&inb.sender, CapsRef::of_presence(&inb.el)) else {
        return Ok(());
    };
    match features(ctx, &c.ver).await? {
        Some(f) if inb.initial => {
            last_items(
                ctx,
                out,
                &inb.from_bare,
                &inb.from,
                &sender.target,
                &f,
                roster,
            )
            .await
        }
        Some(_) => Ok(()),
        None if ctx.config.pep => {
            out.deliver(
                sender.target.clone(),
                &c.query(&ctx.config.domain, &inb.from),
            );
            Ok(())
        }
        None => Ok(()),
    }
}

/// A client's answer to the server's disco#info query ([`CapsRef::query`]): believed only
/// if its hash is the ver asked, and that ver is the one the client's presence announces
/// now (so a client cannot fill the cache with answers nobody asked for). Then stored for
/// every DC, and the session gets the last items it now turns out to want.
pub async fn caps_result(ctx: &Ctx, inb: &Inbound, out: &mut Outbox) -> anyhow::Result<Outcome> {
    let Some(ver) = inb
        .el
        .attr("id")
        .and_then(|id| id.strip_prefix(caps::QUERY_ID))
    else {
        return Ok(Outcome::Dropped);
    };
    let session = ctx.sessions.read().session(&inb.from).cloned();
    let Some(session) = session else {
        return Ok(Outcome::Dropped);
    };
    let announced = session
        .presence
        .as_deref()
        .and_then(|x| Element::parse(x).ok())
        .and_then(|p| CapsRef::of_presence(&p));
    let query = inb.el.get_child("query", ns::DISCO_INFO);
    let (Some(announced), Some(query), true) = (announced, query, inb.ty == StanzaType::Result)
    else {
        return Ok(Outcome::Dropped);
    };
    if announced.ver != ver || !ctx.config.pep {
        return Ok(Outcome::Dropped);
    }
    let Some(verified) = caps::verify(ver, query) else {
        tracing::debug!(jid = %inb.from, ver, "caps hash does not match its disco#info: not trusted");
        return Ok(Outcome::Dropped);
    };
    if features(ctx, ver).await?.is_none() {
        ctx.store
            .put_caps(&caps::key(ver), &verified.features.join("\n"))
            .await?;
        ctx.caps.put(ver, Arc::new(verified.features.clone()));
    }
    let (_, roster) = ctx.store.roster(inb.username()).await?;
    last_items(
        ctx,
        out,
        &inb.from_bare,
        &inb.from,
        &Target::from(&session),
        &verified.features,
        &roster,
    )
    .await?;
    Ok(Outcome::Handled)
}

/// `subscriber_bare` was just granted a presence subscription to `owner_bare` (a local
/// account): each of the subscriber's available resources gets the owner's last published
/// items it wants, of nodes that send them on subscription (XEP-0163 §4.3.4 "on_sub").
pub async fn on_subscribed(
    ctx: &Ctx,
    out: &mut Outbox,
    owner_bare: &str,
    subscriber_bare: &str,
) -> anyhow::Result<()> {
    let (Some(owner), domain) = split_bare(owner_bare) else {
        return Ok(());
    };
    if !domain.eq_ignore_ascii_case(&ctx.config.domain) {
        return Ok(());
    }
    let sessions: Vec<SessionInfo> = ctx
        .sessions
        .read()
        .available(subscriber_bare)
        .into_iter()
        .cloned()
        .collect();
    if sessions.is_empty() {
        return Ok(());
    }
    let lasts = ctx.store.pep_last_published(&[owner.to_owned()]).await?;
    for last in lasts {
        let cfg = NodeConfig::from_json(&last.config);
        if cfg.send_last == SendLast::Never {
            continue;
        }
        if cfg.access_model != Access::Open {
            let item = ctx.store.roster_item(owner, subscriber_bare).await?;
            if super::may_read(&cfg, item.as_ref()).is_err() {
                continue;
            }
        }
        let Some(event) = last_event(&last) else {
            continue;
        };
        for s in &sessions {
            let Some(f) = session_features(ctx, s).await? else {
                continue;
            };
            if wants(&f, &last.node) {
                out.deliver(Target::from(s), &message(owner_bare, &s.jid, &event));
            }
        }
    }
    Ok(())
}
