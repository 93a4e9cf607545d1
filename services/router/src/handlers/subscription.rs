//! RFC 6121 §3 presence subscriptions between two local accounts: applies the state machine
//! (substate.rs) to both rosters, stores pending inbound requests (shown to every available
//! resource, including those no directory knew of yet, and again at every login until
//! answered: stored.rs), pushes roster changes to both users, and exchanges presence as
//! subscriptions start and end.

use meerkat_store::{RequestChange, RosterItem, SubSnapshot, Subscription};
use meerkat_xmpp::{ns, Element};

use super::roster::{item_element, push};
use super::substate::{has_from, SubState, SubType};
use crate::handlers::account_exists;
use crate::inbound::Inbound;
use crate::jids::{self, Addr};
use crate::metrics::Outcome;
use crate::outbox::{Outbox, Target};
use crate::Ctx;

/// A subscription stanza from a client to `contact` (already reduced to a bare JID).
pub async fn outbound(
    ctx: &Ctx,
    inb: &Inbound,
    out: &mut Outbox,
    contact: &Addr,
) -> anyhow::Result<Outcome> {
    let Some(t) = SubType::of(inb.ty) else {
        return Ok(Outcome::Dropped);
    };
    // RFC 6121 §3.1.2: the server stamps the user's bare JID and addresses the contact's.
    let mut stanza = inb.el.clone();
    stanza.set_attr("from", inb.from_bare.clone());
    stanza.set_attr("to", contact.bare.clone());
    send(ctx, out, &inb.from_bare, contact, t, &stanza).await
}

/// Ends every subscription between the user and a contact being removed from the roster
/// (RFC 6121 §2.5.2).
pub async fn cancel_all(
    ctx: &Ctx,
    out: &mut Outbox,
    user_bare: &str,
    item: &RosterItem,
) -> anyhow::Result<()> {
    let Some(contact) = Addr::parse(&item.jid) else {
        return Ok(());
    };
    let contact = Addr {
        resource: None,
        ..contact
    };
    let (_, state) = load(ctx, user_bare, &contact.bare).await?;
    if matches!(state.sub, Subscription::To | Subscription::Both) || state.ask_out {
        let p = presence(SubType::Unsubscribe, user_bare, &contact.bare);
        send(ctx, out, user_bare, &contact, SubType::Unsubscribe, &p).await?;
    }
    if matches!(state.sub, Subscription::From | Subscription::Both) || state.pending_in {
        let p = presence(SubType::Unsubscribed, user_bare, &contact.bare);
        send(ctx, out, user_bare, &contact, SubType::Unsubscribed, &p).await?;
    }
    Ok(())
}

/// Which stored requests [`answer_preapproved`] answers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Answering {
    /// Every one: the user's own initial presence, wherever the requests were made.
    All,
    /// Those this DC wrote (its users asked; it knows their sessions first-hand): on a nudge,
    /// when a request or a pre-approval arrived here. A request made at another DC is answered
    /// there, once the approval reaches it: right after a heal this DC may not list the
    /// requester's sessions yet, and what it told them would find nobody.
    MadeHere,
}

/// Answers, on the user's behalf, each request stored for it that its pre-approval already
/// answers (RFC 6121 §3.4): the approval and the request were made apart (at two DCs, or the
/// request routed before the approval's data) and met here. Returns whether any was.
pub async fn answer_preapproved(
    ctx: &Ctx,
    out: &mut Outbox,
    username: &str,
    which: Answering,
) -> anyhow::Result<bool> {
    let user_bare = format!("{username}@{}", ctx.config.domain);
    let mut any = false;
    for r in ctx.store.subscription_requests(username).await? {
        if which == Answering::MadeHere && r.dc != ctx.config.dc {
            continue;
        }
        let Some(contact) = Addr::parse(&jids::bare(&r.contact)) else {
            continue;
        };
        if preapproved(ctx, username, &contact.bare).await? {
            let p = presence(SubType::Subscribed, &user_bare, &contact.bare);
            send(ctx, out, &user_bare, &contact, SubType::Subscribed, &p).await?;
            any = true;
        }
    }
    Ok(any)
}

/// Whether `username` approved `contact_bare` before being asked (RFC 6121 §3.4).
async fn preapproved(ctx: &Ctx, username: &str, contact_bare: &str) -> anyhow::Result<bool> {
    Ok(ctx
        .store
        .roster_item(username, contact_bare)
        .await?
        .is_some_and(|i| i.approved))
}

/// Whether a stored request from `contact_bare` needs no answer from `username`: it is
/// pre-approved (its requester's DC answers it), or already answered (the contact has a
/// subscription from the user, RFC 6121 §3.1.3). The second covers a request read just
/// before another DC's answer was applied here: the answer removes the request and then
/// writes the item, so an item read after the request list may already show the answer.
pub async fn needs_no_answer(
    ctx: &Ctx,
    username: &str,
    contact_bare: &str,
) -> anyhow::Result<bool> {
    Ok(ctx
        .store
        .roster_item(username, contact_bare)
        .await?
        .is_some_and(|i| i.approved || has_from(i.subscription)))
}

/// `user_bare` sends `t` to `contact`: the user's side, then the contact's, then the
/// contact's server's automatic answer if any.
async fn send(
    ctx: &Ctx,
    out: &mut Outbox,
    user_bare: &str,
    contact: &Addr,
    t: SubType,
    stanza: &Element,
) -> anyhow::Result<Outcome> {
    let create = matches!(t, SubType::Subscribe | SubType::Subscribed);
    // The user's own side: an outbound stanza never makes a request pending there.
    let (step, _) = transition(ctx, out, user_bare, &contact.bare, create, None, |s| {
        s.outbound(t)
    })
    .await?;
    if !step.forward {
        return Ok(Outcome::Handled);
    }
    if !contact.domain.eq_ignore_ascii_case(&ctx.config.domain) {
        return Ok(Outcome::Dropped);
    }
    if let Some(answer) = inbound(ctx, out, &contact.bare, user_bare, t, stanza).await? {
        let p = presence(answer, &contact.bare, user_bare);
        // An answer (subscribed/unsubscribed) never asks for another one.
        inbound(ctx, out, user_bare, &contact.bare, answer, &p).await?;
    }
    Ok(Outcome::Delivered)
}

/// `user_bare` receives `t` from `contact_bare`. Returns the answer the server gives on the
/// user's behalf.
async fn inbound(
    ctx: &Ctx,
    out: &mut Outbox,
    user_bare: &str,
    contact_bare: &str,
    t: SubType,
    stanza: &Element,
) -> anyhow::Result<Option<SubType>> {
    let Some(user) = Addr::parse(user_bare) else {
        return Ok(None);
    };
    if !account_exists(ctx, &user).await? {
        // RFC 6121 §3.1.3: a request to a non-existent account is refused.
        return Ok((t == SubType::Subscribe).then_some(SubType::Unsubscribed));
    }
    let (step, request) = transition(
        ctx,
        out,
        user_bare,
        contact_bare,
        false,
        Some(stanza),
        |s| s.inbound(t),
    )
    .await?;
    if request.is_some() {
        // Stored: shown to the user's resources at this DC that the directory does not list
        // yet, and, once replicated, at every other DC (handlers/stored.rs).
        out.nudge_stored(user_bare);
    }
    if step.forward {
        let mut p = stanza.clone();
        p.set_attr("to", user_bare.to_owned());
        for target in available_targets(ctx, user_bare) {
            match request {
                // The stored request is shown at login too; a session that logs in while it
                // is being made must not see it twice.
                Some(since) => out.deliver_once(target.0, &p, &request_key(contact_bare, since)),
                None => out.deliver(target.0, &p),
            }
        }
        match t {
            // The user now sees the contact: current presence of each contact resource,
            // and the last items of the contact's PEP nodes (XEP-0163 §4.3.4).
            SubType::Subscribed => {
                send_presence_of(ctx, out, contact_bare, user_bare).await?;
                crate::pep::notify::on_subscribed(ctx, out, contact_bare, user_bare).await?;
            }
            // The user no longer sees the contact.
            SubType::Unsubscribed => send_unavailable_of(ctx, out, contact_bare, user_bare),
            // The contact no longer sees the user.
            SubType::Unsubscribe => send_unavailable_of(ctx, out, user_bare, contact_bare),
            SubType::Subscribe => {}
        }
    }
    Ok(step.auto_reply)
}

/// One side's transition: reads the owner's item and pending request for the contact, applies
/// `step_of`, and writes the result only if that side is still as read (another partition, or
/// a replicated write, may have moved it meanwhile: two users asking and approving each other
/// at once); else reads again. `contact_stanza` is the contact's stanza when the owner
/// receives one (`None` for the owner's own outbound stanza): only the contact's `subscribe`
/// is stored as the pending request. Returns the step and the `since` of a stored request.
#[allow(clippy::too_many_arguments)]
async fn transition(
    ctx: &Ctx,
    out: &mut Outbox,
    owner_bare: &str,
    contact_bare: &str,
    create: bool,
    contact_stanza: Option<&Element>,
    step_of: impl Fn(SubState) -> super::substate::Step,
) -> anyhow::Result<(super::substate::Step, Option<i64>)> {
    for _ in 0..TRANSITION_ATTEMPTS {
        let (item, state) = load(ctx, owner_bare, contact_bare).await?;
        let step = step_of(state);
        let saved = save(
            ctx,
            out,
            owner_bare,
            contact_bare,
            item,
            state,
            step.state,
            create,
            contact_stanza,
        )
        .await?;
        if let Some(request) = saved {
            return Ok((step, request));
        }
    }
    anyhow::bail!("the subscription state of {owner_bare} for {contact_bare} kept changing")
}

/// Reads of one side before a transition gives up (each retry follows a write that did land).
const TRANSITION_ATTEMPTS: usize = 8;

/// The owner's roster item for the contact and the full subscription state.
async fn load(
    ctx: &Ctx,
    owner_bare: &str,
    contact_bare: &str,
) -> anyhow::Result<(Option<RosterItem>, SubState)> {
    let owner = jids::split_bare(owner_bare).0.unwrap_or("");
    let item = ctx.store.roster_item(owner, contact_bare).await?;
    let pending_in = ctx
        .store
        .subscription_snapshot(owner, contact_bare)
        .await?
        .pending;
    let state = SubState {
        sub: item.as_ref().map_or(Subscription::None, |i| i.subscription),
        ask_out: item.as_ref().is_some_and(|i| i.ask_out),
        approved: item.as_ref().is_some_and(|i| i.approved),
        pending_in,
    };
    Ok((item, state))
}

/// Names a pending request from `contact_bare` made at `since`, for `deliver_once`.
pub fn request_key(contact_bare: &str, since: i64) -> String {
    format!("subscribe\n{contact_bare}\n{since}")
}

/// Writes a state change, if the owner's side is still as `item` and `old` say: the roster
/// item (pushed to the owner) and the pending request: the contact's `subscribe`
/// (`contact_stanza`), never the owner's own stanza (shown back to the owner as the request,
/// it would ask the owner to approve itself). `None` when that side changed meanwhile (nothing
/// written); else the pending request's `since` when one was stored.
#[allow(clippy::too_many_arguments)]
async fn save(
    ctx: &Ctx,
    out: &mut Outbox,
    owner_bare: &str,
    contact_bare: &str,
    item: Option<RosterItem>,
    old: SubState,
    new: SubState,
    create: bool,
    contact_stanza: Option<&Element>,
) -> anyhow::Result<Option<Option<i64>>> {
    let owner = jids::split_bare(owner_bare).0.unwrap_or("");
    let expected = SubSnapshot {
        item: item
            .as_ref()
            .map(|i| (i.subscription, i.ask_out, i.approved)),
        pending: old.pending_in,
    };
    let subscribe = contact_stanza.filter(|s| s.attr("type") == Some("subscribe"));
    let request = if let (true, Some(stanza)) = (new.pending_in, subscribe) {
        RequestChange::Add(stanza.to_xml())
    } else if old.pending_in && !new.pending_in {
        RequestChange::Remove
    } else {
        RequestChange::Keep
    };
    let changed = (old.sub, old.ask_out, old.approved) != (new.sub, new.ask_out, new.approved);
    let put = match item {
        _ if !changed => None,
        Some(i) => Some(i),
        None if create => Some(RosterItem {
            jid: contact_bare.to_owned(),
            name: None,
            subscription: Subscription::None,
            ask_out: false,
            approved: false,
            groups: Vec::new(),
        }),
        None => None,
    }
    .map(|i| RosterItem {
        subscription: new.sub,
        ask_out: new.ask_out,
        approved: new.approved,
        ..i
    });
    let Some((version, since)) = ctx
        .store
        .subscription_step(owner, contact_bare, expected, put.clone(), request)
        .await?
    else {
        return Ok(None);
    };
    if let (Some(item), Some(ver)) = (put, version) {
        push(ctx, out, owner_bare, item_element(&item), ver);
    }
    Ok(Some(since))
}

fn presence(t: SubType, from: &str, to: &str) -> Element {
    Element::new("presence", ns::CLIENT)
        .with_attr("type", t.as_str())
        .with_attr("from", from.to_owned())
        .with_attr("to", to.to_owned())
}

/// Available sessions of an account with their full JIDs.
pub fn available_targets(ctx: &Ctx, bare: &str) -> Vec<(Target, String)> {
    ctx.sessions
        .read()
        .available(bare)
        .into_iter()
        .map(|s| (Target::from(s), s.jid.clone()))
        .collect()
}

/// The last presence of each available session of `from_bare`, to each available session
/// of `to_bare`.
/// Each presence with the server's XEP-0153 photo hash, as every available presence of an
/// account of this domain carries (avatar.rs).
pub async fn send_presence_of(
    ctx: &Ctx,
    out: &mut Outbox,
    from_bare: &str,
    to_bare: &str,
) -> anyhow::Result<()> {
    let mut stored = [(from_bare.to_owned(), last_presences(ctx, from_bare))];
    super::avatar::stamp_stored(ctx, &mut stored).await?;
    let [(_, presences)] = stored;
    for (target, jid) in available_targets(ctx, to_bare) {
        for p in &presences {
            let mut p = p.clone();
            p.set_attr("to", jid.clone());
            out.deliver(target.clone(), &p);
        }
    }
    Ok(())
}

/// Unavailable presence from each available session of `from_bare` to `to_bare`'s sessions.
pub fn send_unavailable_of(ctx: &Ctx, out: &mut Outbox, from_bare: &str, to_bare: &str) {
    send_unavailable_to(ctx, out, from_bare, available_targets(ctx, to_bare));
}

/// Unavailable presence from each available session of `from_bare` to each of `targets`.
pub fn send_unavailable_to(
    ctx: &Ctx,
    out: &mut Outbox,
    from_bare: &str,
    targets: Vec<(Target, String)>,
) {
    let from: Vec<String> = available_targets(ctx, from_bare)
        .into_iter()
        .map(|(_, j)| j)
        .collect();
    for (target, jid) in targets {
        for f in &from {
            let p = Element::new("presence", ns::CLIENT)
                .with_attr("type", "unavailable")
                .with_attr("from", f.clone())
                .with_attr("to", jid.clone());
            out.deliver(target.clone(), &p);
        }
    }
}

/// The stored last broadcast presence of each available session of an account.
pub fn last_presences(ctx: &Ctx, bare: &str) -> Vec<Element> {
    ctx.sessions
        .read()
        .available(bare)
        .into_iter()
        .map(|s| {
            s.presence
                .as_deref()
                .and_then(|x| Element::parse(x).ok())
                .unwrap_or_else(|| {
                    Element::new("presence", ns::CLIENT).with_attr("from", s.jid.clone())
                })
        })
        .collect()
}
