//! The routing core: where a stanza goes (RFC 6120 §10, RFC 6121 §8) — a session, the
//! account's resources, offline storage, a server handler, or an error back to the sender.
//! The decisions themselves are pure functions (tested below); `route` applies them.

use meerkat_wire::SessionInfo;
use meerkat_xmpp::{StanzaError, StanzaKind, StanzaType};

use crate::handlers::{self, account_exists, carbons, offline, presence, subscription, Entity};
use crate::inbound::Inbound;
use crate::jids::Addr;
use crate::metrics::Outcome;
use crate::outbox::{Outbox, Target};
use crate::reply::error;
use crate::Ctx;

/// What to do with a message addressed to a bare JID, given the account's sessions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BareMessage {
    Deliver(Vec<Target>),
    Offline,
    Drop,
    Error(StanzaError),
}

/// RFC 6121 §8.5.2: chat/normal go to the available resources with the highest non-negative
/// priority (all of them on a tie, as ejabberd does), else offline; headline to every
/// available non-negative resource, else nowhere; groupchat to a bare JID is an error.
pub fn bare_message(sessions: &[&SessionInfo], ty: StanzaType) -> BareMessage {
    let eligible: Vec<&SessionInfo> = sessions
        .iter()
        .copied()
        .filter(|s| s.available && s.priority >= 0)
        .collect();
    match ty {
        StanzaType::Chat | StanzaType::Normal => {
            let Some(top) = eligible.iter().map(|s| s.priority).max() else {
                return BareMessage::Offline;
            };
            BareMessage::Deliver(
                eligible
                    .iter()
                    .filter(|s| s.priority == top)
                    .map(|s| Target::from(*s))
                    .collect(),
            )
        }
        StanzaType::Headline if eligible.is_empty() => BareMessage::Drop,
        StanzaType::Headline => {
            BareMessage::Deliver(eligible.iter().map(|s| Target::from(*s)).collect())
        }
        StanzaType::Groupchat => BareMessage::Error(StanzaError::service_unavailable()),
        _ => BareMessage::Drop,
    }
}

/// What to do with a stanza addressed to a full JID that has no session (RFC 6121 §8.5.3.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoSession {
    AsBare,
    Drop,
    Error(StanzaError),
}

pub fn full_without_session(kind: StanzaKind, ty: StanzaType) -> NoSession {
    match (kind, ty) {
        (StanzaKind::Message, StanzaType::Chat | StanzaType::Normal) => NoSession::AsBare,
        (StanzaKind::Iq, StanzaType::Get | StanzaType::Set) => {
            NoSession::Error(StanzaError::service_unavailable())
        }
        _ => NoSession::Drop,
    }
}

/// What to do with a stanza another DC sent for one session of this DC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemoteArrival {
    /// The session is here: deliver exactly to it (the sending DC already applied the
    /// routing rules, e.g. picked this resource among the account's).
    Deliver(Target),
    /// Gone, moved, or never here: route again like a bounce, with one hop fewer (at 0 hops
    /// the RFC 6121 fallback: offline storage, an error for an iq).
    Reresolve { hops: u64 },
}

/// `entry`: the directory's entry for the target session id, if any.
pub fn remote_arrival(entry: Option<&SessionInfo>, own_dc: &str, hops: u64) -> RemoteArrival {
    match entry {
        Some(s) if s.dc == own_dc => RemoteArrival::Deliver(Target::from(s)),
        _ => RemoteArrival::Reresolve {
            hops: hops.saturating_sub(1),
        },
    }
}

/// Routes one stanza; deliveries go to `out`, then a message's carbons (handlers/carbons.rs).
pub async fn route(ctx: &Ctx, inb: &Inbound, out: &mut Outbox) -> anyhow::Result<Outcome> {
    if carbons::is_returned_copy(inb) {
        return Ok(Outcome::Dropped);
    }
    // To the MUC service, a room or an occupant: on to the room's home (muc/).
    if let Some(outcome) = crate::muc::route(ctx, inb, out).await? {
        return Ok(outcome);
    }
    // Between a user and a contact it blocks, nothing goes further: not even to the archive.
    if let Some(refused) = blocked(ctx, inb, out).await? {
        return Ok(refused);
    }
    // XEP-0153: an available presence carries the server's photo hash (handlers/avatar.rs).
    let stamped = handlers::avatar::stamp(ctx, inb).await?;
    let inb = stamped.as_ref().unwrap_or(inb);
    // Archived (and given its stanza id) before it goes anywhere (archive.rs).
    let archived = crate::archive::at_routing(ctx, inb, out.origin()).await?;
    let inb = archived.as_ref().unwrap_or(inb);
    if let Some(private) = carbons::without_private(inb) {
        return route_stanza(ctx, &private, out).await;
    }
    let outcome = route_stanza(ctx, inb, out).await?;
    carbons::copy(ctx, inb, out, outcome);
    Ok(outcome)
}

/// XEP-0191: a stanza from a blocked contact, or to one, is refused (handlers/blocking.rs).
async fn blocked(ctx: &Ctx, inb: &Inbound, out: &mut Outbox) -> anyhow::Result<Option<Outcome>> {
    let Some(addr) = inb.el.attr("to").and_then(Addr::parse) else {
        return Ok(None);
    };
    if !addr.domain.eq_ignore_ascii_case(&ctx.config.domain) {
        return Ok(None);
    }
    handlers::blocking::enforce(ctx, inb, out, &addr).await
}

async fn route_stanza(ctx: &Ctx, inb: &Inbound, out: &mut Outbox) -> anyhow::Result<Outcome> {
    let Some(to) = inb.el.attr("to") else {
        return no_to(ctx, inb, out).await;
    };
    let Some(addr) = Addr::parse(to) else {
        return Ok(error(ctx, inb, out, StanzaError::jid_malformed()));
    };
    if !addr.domain.eq_ignore_ascii_case(&ctx.config.domain) {
        // No federation yet.
        return Ok(match inb.kind {
            StanzaKind::Presence => Outcome::Dropped,
            _ => error(ctx, inb, out, StanzaError::remote_server_not_found()),
        });
    }
    match (&addr.node, &addr.resource) {
        (None, _) => to_server(ctx, inb, out).await,
        (Some(_), Some(_)) => to_full(ctx, inb, out, &addr).await,
        (Some(_), None) => to_bare(ctx, inb, out, &addr).await,
    }
}

/// No `to`: the sender's own account (RFC 6120 §10.3).
async fn no_to(ctx: &Ctx, inb: &Inbound, out: &mut Outbox) -> anyhow::Result<Outcome> {
    match inb.kind {
        StanzaKind::Presence => match inb.ty {
            StanzaType::Available | StanzaType::Unavailable => {
                let outcome = presence::broadcast(ctx, inb, out).await?;
                // Unavailable ends the presence the rooms were sent too: the user leaves them.
                crate::muc::session_ended(ctx, inb, out).await?;
                Ok(outcome)
            }
            _ => Ok(Outcome::Dropped),
        },
        StanzaKind::Iq => {
            let entity = Entity::Account {
                bare: inb.from_bare.clone(),
                own: true,
                no_to: true,
            };
            handlers::server_iq(ctx, inb, out, entity).await
        }
        StanzaKind::Message => match Addr::parse(&inb.from_bare) {
            Some(own) => to_bare(ctx, inb, out, &own).await,
            None => Ok(Outcome::Dropped),
        },
    }
}

async fn to_server(ctx: &Ctx, inb: &Inbound, out: &mut Outbox) -> anyhow::Result<Outcome> {
    match inb.kind {
        StanzaKind::Iq => handlers::server_iq(ctx, inb, out, Entity::Server).await,
        StanzaKind::Message => Ok(error(ctx, inb, out, StanzaError::service_unavailable())),
        StanzaKind::Presence => Ok(Outcome::Dropped),
    }
}

async fn to_full(
    ctx: &Ctx,
    inb: &Inbound,
    out: &mut Outbox,
    addr: &Addr,
) -> anyhow::Result<Outcome> {
    if inb.kind == StanzaKind::Presence && is_subscription_or_probe(inb.ty) {
        return to_bare(ctx, inb, out, &bare_addr(addr)).await;
    }
    // After the last hop a bounce is not re-resolved: offline handling or an error.
    let exhausted = inb.is_bounce() && inb.hops == 0;
    let session = if exhausted {
        None
    } else {
        ctx.sessions.read().session(&addr.full()).map(Target::from)
    };
    if let Some(target) = session {
        out.deliver(target, &inb.el);
        return Ok(Outcome::Delivered);
    }
    match full_without_session(inb.kind, inb.ty) {
        NoSession::AsBare => to_bare(ctx, inb, out, &bare_addr(addr)).await,
        NoSession::Drop => Ok(Outcome::Dropped),
        NoSession::Error(e) => Ok(error(ctx, inb, out, e)),
    }
}

async fn to_bare(
    ctx: &Ctx,
    inb: &Inbound,
    out: &mut Outbox,
    addr: &Addr,
) -> anyhow::Result<Outcome> {
    match inb.kind {
        StanzaKind::Iq => {
            if !inb.ty.is_request() {
                return Ok(Outcome::Dropped);
            }
            let own = addr.bare == inb.from_bare;
            if !own && !account_exists(ctx, addr).await? {
                return Ok(error(ctx, inb, out, StanzaError::service_unavailable()));
            }
            let entity = Entity::Account {
                bare: addr.bare.clone(),
                own,
                no_to: false,
            };
            handlers::server_iq(ctx, inb, out, entity).await
        }
        StanzaKind::Message => {
            let exhausted = inb.is_bounce() && inb.hops == 0;
            let sessions: Vec<SessionInfo> = if exhausted {
                Vec::new()
            } else {
                ctx.sessions
                    .read()
                    .resources(&addr.bare)
                    .into_iter()
                    .cloned()
                    .collect()
            };
            if sessions.is_empty() && !account_exists(ctx, addr).await? {
                return Ok(error(ctx, inb, out, StanzaError::service_unavailable()));
            }
            let refs: Vec<&SessionInfo> = sessions.iter().collect();
            match bare_message(&refs, inb.ty) {
                BareMessage::Deliver(targets) => {
                    for t in targets {
                        out.deliver(t, &inb.el);
                    }
                    Ok(Outcome::Delivered)
                }
                BareMessage::Offline => offline::store(ctx, inb, out, addr).await,
                BareMessage::Drop => Ok(Outcome::Dropped),
                BareMessage::Error(e) => Ok(error(ctx, inb, out, e)),
            }
        }
        StanzaKind::Presence => match inb.ty {
            StanzaType::Subscribe
            | StanzaType::Subscribed
            | StanzaType::Unsubscribe
            | StanzaType::Unsubscribed => subscription::outbound(ctx, inb, out, addr).await,
            StanzaType::Probe => presence::probe(ctx, inb, out, addr).await,
            StanzaType::Available | StanzaType::Unavailable => {
                // Directed presence to an account: all its available resources.
                let targets: Vec<Target> = ctx
                    .sessions
                    .read()
                    .available(&addr.bare)
                    .into_iter()
                    .map(Target::from)
                    .collect();
                if targets.is_empty() {
                    return Ok(Outcome::Dropped);
                }
                for t in targets {
                    out.deliver(t, &inb.el);
                }
                Ok(Outcome::Delivered)
            }
            _ => Ok(Outcome::Dropped),
        },
    }
}

fn is_subscription_or_probe(ty: StanzaType) -> bool {
    matches!(
        ty,
        StanzaType::Subscribe
            | StanzaType::Subscribed
            | StanzaType::Unsubscribe
            | StanzaType::Unsubscribed
            | StanzaType::Probe
    )
}

fn bare_addr(addr: &Addr) -> Addr {
    Addr {
        resource: None,
        ..addr.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn s(res: &str, available: bool, priority: i8) -> SessionInfo {
        SessionInfo {
            jid: format!("a@x/{res}"),
            session_id: Uuid::now_v7(),
            version: 1,
            dc: "dc1".into(),
            gateway: format!("gw-{res}"),
            available,
            priority,
            presence: None,
            interested: false,
            carbons: false,
            blocklist: false,
        }
    }

    fn gateways(d: BareMessage) -> Vec<String> {
        match d {
            BareMessage::Deliver(t) => t.into_iter().map(|t| t.gateway).collect(),
            other => panic!("expected deliver, got {other:?}"),
        }
    }

    #[test]
    fn chat_goes_to_highest_priority_resources() {
        let (a, b, c) = (s("a", true, 5), s("b", true, 5), s("c", true, 1));
        assert_eq!(
            gateways(bare_message(&[&a, &b, &c], StanzaType::Chat)),
            ["gw-a", "gw-b"]
        );
        assert_eq!(gateways(bare_message(&[&c], StanzaType::Normal)), ["gw-c"]);
    }

    #[test]
    fn chat_skips_negative_and_unavailable_resources() {
        let (neg, off) = (s("n", true, -1), s("o", false, 10));
        assert_eq!(
            bare_message(&[&neg, &off], StanzaType::Chat),
            BareMessage::Offline
        );
        assert_eq!(bare_message(&[], StanzaType::Chat), BareMessage::Offline);
    }

    #[test]
    fn headline_goes_to_all_or_nowhere() {
        let (a, c, neg) = (s("a", true, 5), s("c", true, 0), s("n", true, -1));
        assert_eq!(
            gateways(bare_message(&[&a, &c, &neg], StanzaType::Headline)),
            ["gw-a", "gw-c"]
        );
        assert_eq!(
            bare_message(&[&neg], StanzaType::Headline),
            BareMessage::Drop
        );
    }

    #[test]
    fn groupchat_and_errors_to_bare() {
        let a = s("a", true, 0);
        assert!(matches!(
            bare_message(&[&a], StanzaType::Groupchat),
            BareMessage::Error(_)
        ));
        assert_eq!(bare_message(&[&a], StanzaType::Error), BareMessage::Drop);
    }

    #[test]
    fn remote_stanza_goes_to_its_session_only_if_here() {
        let mut here = s("a", true, 0);
        here.dc = "dc2".into();
        assert_eq!(
            remote_arrival(Some(&here), "dc2", 2),
            RemoteArrival::Deliver(Target::from(&here))
        );
        // Gone: re-resolved with one hop fewer; never below zero.
        assert_eq!(
            remote_arrival(None, "dc2", 2),
            RemoteArrival::Reresolve { hops: 1 }
        );
        assert_eq!(
            remote_arrival(None, "dc2", 0),
            RemoteArrival::Reresolve { hops: 0 }
        );
        // Known, but at another DC (moved, or misrouted): re-resolved too.
        assert_eq!(
            remote_arrival(Some(&here), "dc1", 3),
            RemoteArrival::Reresolve { hops: 2 }
        );
    }

    #[test]
    fn targets_know_their_dc() {
        let mut t = Target::from(&s("a", true, 0));
        assert!(!t.is_remote("dc1"));
        t.dc = "dc2".into();
        assert!(t.is_remote("dc1"));
        t.dc = String::new();
        assert!(!t.is_remote("dc1"));
    }

    #[test]
    fn full_jid_without_session() {
        use StanzaKind::*;
        assert_eq!(
            full_without_session(Message, StanzaType::Chat),
            NoSession::AsBare
        );
        assert_eq!(
            full_without_session(Message, StanzaType::Normal),
            NoSession::AsBare
        );
        assert_eq!(
            full_without_session(Message, StanzaType::Headline),
            NoSession::Drop
        );
        assert_eq!(
            full_without_session(Message, StanzaType::Groupchat),
            NoSession::Drop
        );
        assert!(matches!(
            full_without_session(Iq, StanzaType::Get),
            NoSession::Error(_)
        ));
        assert!(matches!(
            full_without_session(Iq, StanzaType::Set),
            NoSession::Error(_)
        ));
        assert_eq!(
            full_without_session(Iq, StanzaType::Result),
            NoSession::Drop
        );
        assert_eq!(
            full_without_session(Presence, StanzaType::Available),
            NoSession::Drop
        );
    }
}
