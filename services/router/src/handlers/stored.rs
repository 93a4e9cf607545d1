//! What is stored for an account because it had no available resource when it came: offline
//! messages (XEP-0160) and pending subscription requests (RFC 6121 §3.1.3), and every kind
//! added later. One rule brings each to the account's resources, whatever any DC's directory
//! knew when it was stored: each DC shows what it stores to its *own* sessions (which it
//! knows first-hand), at two moments — the session's initial presence (`at_login`), and every
//! time something for the account is stored at the DC, written here or applied from another
//! DC (`on_nudge`, through the account's partition, so in order with its initial presence).
//! Since every stored item is replicated to every DC, an item reaches a resource that was
//! already online elsewhere as soon as the item reaches that resource's DC.

use meerkat_xmpp::Element;

use super::offline;
use super::subscription::{self, Answering};
use crate::inbound::Inbound;
use crate::jids;
use crate::metrics::Outcome;
use crate::outbox::{Outbox, Target};
use crate::Ctx;

/// A session's initial presence: everything stored for its account, to it.
pub async fn at_login(
    ctx: &Ctx,
    username: &str,
    out: &mut Outbox,
    session: &Target,
) -> anyhow::Result<()> {
    offline::deliver_pending(ctx, username, out, session).await?;
    subscription::answer_preapproved(ctx, out, username, Answering::All).await?;
    requests_to(ctx, username, out, std::slice::from_ref(session)).await
}

/// Something was stored for the account in `to` of the nudge: what is stored, to its
/// resources available at this DC — offline messages to the one a message to the bare JID
/// would reach first (RFC 6121 §8.5.2.1.1), as at its initial presence; pending subscription
/// requests to every one (RFC 6121 §3.1.3). Nothing if it has none here: its other DCs do the
/// same for theirs, and its next initial presence anywhere shows what is left.
pub async fn on_nudge(ctx: &Ctx, inb: &Inbound, out: &mut Outbox) -> anyhow::Result<Outcome> {
    // A request made here that its user had approved before it could know (the approval
    // made at another DC, arriving now or before) is answered now, by the requester's DC.
    subscription::answer_preapproved(ctx, out, inb.username(), Answering::MadeHere).await?;
    let mut here: Vec<_> = {
        let dir = ctx.sessions.read();
        dir.available(&inb.from_bare)
            .into_iter()
            .filter(|s| s.dc == ctx.config.dc)
            .map(|s| (s.priority, s.session_id, Target::from(s)))
            .collect()
    };
    if here.is_empty() {
        return Ok(Outcome::Dropped);
    }
    here.sort_by_key(|(priority, id, _)| (std::cmp::Reverse(*priority), *id));
    if let Some((_, _, first)) = here.iter().find(|(priority, _, _)| *priority >= 0) {
        offline::deliver_pending(ctx, inb.username(), out, first).await?;
    }
    let all: Vec<Target> = here.into_iter().map(|(_, _, t)| t).collect();
    requests_to(ctx, inb.username(), out, &all).await?;
    Ok(Outcome::Handled)
}

/// The account's pending subscription requests, to each of `sessions`. Each is keyed by the
/// request (contact and `since`, the same at every DC), so a session shown it live, at login
/// and by a nudge sees it once (the gateway drops a message id it has delivered). A request
/// the user pre-approved is not shown (its requester's DC answers it), nor one already
/// answered.
async fn requests_to(
    ctx: &Ctx,
    username: &str,
    out: &mut Outbox,
    sessions: &[Target],
) -> anyhow::Result<()> {
    for r in ctx.store.subscription_requests(username).await? {
        let contact = jids::bare(&r.contact);
        if subscription::needs_no_answer(ctx, username, &contact).await? {
            continue;
        }
        let key = subscription::request_key(&contact, r.since);
        match Element::parse(&r.stanza) {
            Ok(p) => {
                for s in sessions {
                    out.deliver_once(s.clone(), &p, &key);
                }
            }
            Err(e) => tracing::warn!(error = %e, "unreadable stored subscription request"),
        }
    }
    Ok(())
}
