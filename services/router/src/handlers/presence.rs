//! RFC 6121 §4: broadcast presence (to contacts who may see it and to the user's other
//! resources), the initial-presence duties (probe answers, offline messages, pending
//! subscription requests) and probes.

use meerkat_store::Subscription;
use meerkat_xmpp::{ns, Element, StanzaType};

use super::stored;
use super::subscription::last_presences;
use crate::inbound::Inbound;
use crate::jids::{self, Addr};
use crate::metrics::Outcome;
use crate::outbox::Outbox;
use crate::Ctx;

/// Presence without `to` from a client: available or unavailable.
pub async fn broadcast(ctx: &Ctx, inb: &Inbound, out: &mut Outbox) -> anyhow::Result<Outcome> {
    if inb.ty == StanzaType::Unavailable {
        super::last::logged_out(ctx, inb).await?;
    }
    let (_, items) = ctx.store.roster(inb.username()).await?;
    let mut recipients: Vec<String> = items
        .iter()
        .filter(|i| matches!(i.subscription, Subscription::From | Subscription::Both))
        .map(|i| jids::bare(&i.jid))
        .collect();
    recipients.push(inb.from_bare.clone());
    for bare in &recipients {
        for (target, jid) in super::blocking::presence_targets(ctx, &inb.from, bare).await? {
            // Made here for a session of a DC declared down or back: each DC tells its own.
            if jid == inb.from
                || (inb.wire_kind == meerkat_wire::RouteKind::LocalPresence
                    && target.is_remote(&ctx.config.dc))
            {
                continue;
            }
            let mut p = inb.el.clone();
            p.set_attr("to", jid);
            out.deliver(target, &p);
        }
    }
    if inb.initial && inb.ty == StanzaType::Available {
        if let Some(sender) = &inb.sender {
            // Probe answers: who the user may see (to/both), and the user's other resources.
            let mut watched: Vec<String> = items
                .iter()
                .filter(|i| matches!(i.subscription, Subscription::To | Subscription::Both))
                .map(|i| jids::bare(&i.jid))
                .collect();
            watched.push(inb.from_bare.clone());
            let mut stored: Vec<(String, Vec<Element>)> = watched
                .into_iter()
                .map(|bare| {
                    let presences = last_presences(ctx, &bare);
                    (bare, presences)
                })
                .collect();
            super::avatar::stamp_stored(ctx, &mut stored).await?;
            for (_, presences) in stored {
                for mut p in presences {
                    let from = p.attr("from").map(jids::full).unwrap_or_default();
                    if from == inb.from || !super::blocking::allows(ctx, &from, &inb.from).await? {
                        continue;
                    }
                    p.set_attr("to", inb.from.clone());
                    out.deliver(sender.target.clone(), &p);
                }
            }
            stored::at_login(ctx, inb.username(), out, &sender.target).await?;
        }
    }
    // XEP-0163: the caps of an available presence, and the last items it wants.
    crate::pep::notify::on_presence(ctx, inb, out, &items).await?;
    Ok(Outcome::Delivered)
}

/// A probe from a client to `contact`: answered by the server if the sender may see the
/// contact's presence (RFC 6121 §4.3.2).
pub async fn probe(
    ctx: &Ctx,
    inb: &Inbound,
    out: &mut Outbox,
    contact: &Addr,
) -> anyhow::Result<Outcome> {
    let Some(node) = &contact.node else {
        return Ok(Outcome::Dropped);
    };
    let allowed = ctx
        .store
        .roster_item(node, &inb.from_bare)
        .await?
        .is_some_and(|i| matches!(i.subscription, Subscription::From | Subscription::Both));
    if !allowed {
        return Ok(Outcome::Dropped);
    }
    let mut stored = [(contact.bare.clone(), last_presences(ctx, &contact.bare))];
    super::avatar::stamp_stored(ctx, &mut stored).await?;
    let [(_, mut answers)] = stored;
    if answers.is_empty() {
        answers.push(
            Element::new("presence", ns::CLIENT)
                .with_attr("type", "unavailable")
                .with_attr("from", contact.bare.clone()),
        );
    }
    for mut p in answers {
        p.set_attr("to", inb.from.clone());
        crate::reply::reply(ctx, inb, out, &p);
    }
    Ok(Outcome::Handled)
}
