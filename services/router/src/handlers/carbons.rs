//! XEP-0280 message carbons. The gateway keeps each session's flag (`SessionInfo::carbons`,
//! published with the session's events, so every DC's directory knows it); the router answers
//! the `<enable/>`/`<disable/>` request once its directory has that change (partition.rs
//! waits for the sender's session version before handling its stanza), and copies every
//! eligible message where it is routed: in the sender's partition, which sees both accounts'
//! sessions at every DC. A copy is delivered, never routed, so it is never copied again; a
//! copy that comes back from a session gone is dropped.

use meerkat_wire::{RouteKind, SessionInfo};
use meerkat_xmpp::carbons::{self, Side, Toggle};
use meerkat_xmpp::stanza::iq_result;
use meerkat_xmpp::{Element, StanzaError, StanzaType};
use uuid::Uuid;

use super::Entity;
use crate::inbound::Inbound;
use crate::jids::{self, Addr};
use crate::metrics::Outcome;
use crate::outbox::{Outbox, Target};
use crate::Ctx;

/// Answers `<enable/>` / `<disable/>` (the gateway already set the session's flag).
pub fn answer(
    request: &Element,
    ty: StanzaType,
    payload: &Element,
    entity: &Entity,
) -> Result<Element, StanzaError> {
    if ty != StanzaType::Set || Toggle::of_payload(payload).is_none() {
        return Err(StanzaError::bad_request());
    }
    match entity {
        // XEP-0280 §5: another account's carbons are not the sender's to change.
        Entity::Account { own: false, .. } => Err(StanzaError::not_allowed()),
        _ => Ok(iq_result(request)),
    }
}

/// One copy to deliver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Copy {
    pub side: Side,
    /// Full JID of the resource that gets it.
    pub to: String,
    pub target: Target,
}

/// Who gets which copy of a message (XEP-0280 §6, §7): every available carbons-enabled
/// resource of the recipient that did not get the message itself gets `<received/>`; every
/// available carbons-enabled resource of the sender but the sending one gets `<sent/>`; each
/// resource at most one copy (a message between two resources of one account: `received`).
/// `recipient`: the recipient account's sessions (empty if not an account of this domain);
/// `delivered`: the sessions the message itself went to.
pub fn plan(
    sender_jid: &str,
    sender: &[&SessionInfo],
    recipient: &[&SessionInfo],
    delivered: &[Uuid],
) -> Vec<Copy> {
    let sender_jid = jids::full(sender_jid);
    let mut copies: Vec<Copy> = Vec::new();
    let sides = [(Side::Received, recipient), (Side::Sent, sender)];
    for (side, sessions) in sides {
        for s in sessions {
            let wanted = s.carbons
                && s.available
                && !delivered.contains(&s.session_id)
                && jids::full(&s.jid) != sender_jid
                && !copies.iter().any(|c| c.target.session == s.session_id);
            if wanted {
                copies.push(Copy {
                    side,
                    to: s.jid.clone(),
                    target: Target::from(*s),
                });
            }
        }
    }
    copies
}

/// A client's message marked `<private/>`, without that element: it is routed without it
/// (XEP-0280 §8, the receiving server removes it) and copied to no one.
pub fn without_private(inb: &Inbound) -> Option<Inbound> {
    (inb.kind == meerkat_xmpp::StanzaKind::Message && carbons::is_private(&inb.el)).then(|| {
        Inbound {
            el: carbons::strip_private(&inb.el),
            ..inb.clone()
        }
    })
}

/// A copy that came back (its session was gone): dropped, never delivered as a message nor
/// stored (XEP-0280 §9.3, no error for a copy either).
pub fn is_returned_copy(inb: &Inbound) -> bool {
    inb.wire_kind != RouteKind::Stanza && carbons::is_copy(&inb.el)
}

/// After a client's message was routed (`outcome`): its copies, queued in `out` after the
/// message itself. A bounce or a stanza from another DC was copied where it was first routed.
pub fn copy(ctx: &Ctx, inb: &Inbound, out: &mut Outbox, outcome: Outcome) {
    let routed = matches!(outcome, Outcome::Delivered | Outcome::Offline);
    if inb.wire_kind != RouteKind::Stanza || !routed || !carbons::eligible(&inb.el) {
        return;
    }
    let recipient_bare = match inb.el.attr("to") {
        None => Some(inb.from_bare.clone()),
        Some(to) => Addr::parse(to)
            .filter(|a| a.node.is_some() && a.domain.eq_ignore_ascii_case(&ctx.config.domain))
            .map(|a| a.bare),
    };
    let delivered = out.delivered_sessions();
    let copies = {
        let dir = ctx.sessions.read();
        let sender = dir.resources(&inb.from_bare);
        let recipient = match &recipient_bare {
            Some(bare) if *bare != inb.from_bare => dir.resources(bare),
            Some(_) => sender.clone(),
            None => Vec::new(),
        };
        plan(&inb.from, &sender, &recipient, &delivered)
    };
    for c in copies {
        let bare = match c.side {
            Side::Received => recipient_bare.as_deref().unwrap_or(&inb.from_bare),
            Side::Sent => inb.from_bare.as_str(),
        };
        out.deliver(c.target, &carbons::wrap(&inb.el, c.side, bare, &c.to));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(jid: &str, available: bool, carbons: bool) -> SessionInfo {
        SessionInfo {
            jid: jid.into(),
            session_id: Uuid::now_v7(),
            version: 1,
            dc: "dc1".into(),
            gateway: "gw".into(),
            available,
            priority: 0,
            presence: None,
            interested: false,
            carbons,
            blocklist: false,
        }
    }

    fn who(copies: &[Copy]) -> Vec<(Side, &str)> {
        copies.iter().map(|c| (c.side, c.to.as_str())).collect()
    }

    #[test]
    fn received_goes_to_enabled_resources_that_did_not_get_the_message() {
        let a1 = s("a@x/1", true, true);
        let a2 = s("a@x/2", true, true);
        let a3 = s("a@x/3", true, false);
        let a4 = s("a@x/4", false, true);
        let b1 = s("b@x/1", true, true);
        let recipient = [&a1, &a2, &a3, &a4];
        // To a@x/1 (or the bare JID, delivered to 1 only): a copy to 2; 3 has carbons off,
        // 4 is not available.
        let c = plan("b@x/1", &[&b1], &recipient, &[a1.session_id]);
        assert_eq!(who(&c), [(Side::Received, "a@x/2")]);
        // Delivered to both 1 and 2 (a tie on priority): no copy.
        let c = plan("b@x/1", &[&b1], &recipient, &[a1.session_id, a2.session_id]);
        assert!(c.is_empty());
        // Stored offline: nothing delivered and no resource available, no copy.
        let c = plan("b@x/1", &[], &[&a4], &[]);
        assert!(c.is_empty());
    }

    #[test]
    fn sent_goes_to_the_senders_other_enabled_resources() {
        let a1 = s("a@x/1", true, true);
        let a2 = s("a@x/2", true, true);
        let a3 = s("a@x/3", true, false);
        let b1 = s("b@x/1", true, true);
        let c = plan("a@x/1", &[&a1, &a2, &a3], &[&b1], &[b1.session_id]);
        assert_eq!(who(&c), [(Side::Sent, "a@x/2")]);
        // The sender's own flag does not matter, and the JID compares normalised.
        let c = plan("A@X/2", &[&a1, &a2], &[&b1], &[b1.session_id]);
        assert_eq!(who(&c), [(Side::Sent, "a@x/1")]);
    }

    #[test]
    fn between_resources_of_one_account_each_gets_one_copy() {
        let a1 = s("a@x/1", true, true);
        let a2 = s("a@x/2", true, true);
        let a3 = s("a@x/3", true, true);
        let mine = [&a1, &a2, &a3];
        let c = plan("a@x/1", &mine, &mine, &[a2.session_id]);
        assert_eq!(who(&c), [(Side::Received, "a@x/3")]);
    }

    fn inbound(xml: &str, wire_kind: RouteKind) -> Inbound {
        let el = Element::parse(xml).expect("stanza");
        let from = el.attr("from").unwrap_or("").to_owned();
        Inbound {
            kind: meerkat_xmpp::StanzaKind::of(&el).expect("kind"),
            ty: StanzaType::of(&el),
            from_bare: jids::bare(&from),
            from,
            sender: None,
            initial: false,
            wire_kind,
            target_session: None,
            hops: 3,
            received_at: None,
            recipients: None,
            data_here: false,
            el,
        }
    }

    #[test]
    fn a_copy_that_comes_back_is_dropped_and_private_is_removed() {
        let original = Element::parse(
            "<message xmlns='jabber:client' from='b@x/1' to='a@x' type='chat'><body>hi</body></message>",
        )
        .expect("message");
        let copy = carbons::wrap(&original, Side::Received, "a@x", "a@x/2").to_xml();
        for kind in [RouteKind::Bounce, RouteKind::Returned, RouteKind::Remote] {
            assert!(is_returned_copy(&inbound(&copy, kind)), "{kind}");
        }
        // A client's message carrying <received/> is its own (full JID): routed as usual.
        let forged = "<message xmlns='jabber:client' from='b@x/1' to='a@x' type='chat'>\
                      <received xmlns='urn:xmpp:carbons:2'/></message>";
        assert!(!is_returned_copy(&inbound(forged, RouteKind::Bounce)));
        assert!(!is_returned_copy(&inbound(forged, RouteKind::Stanza)));
        let private = "<message xmlns='jabber:client' from='b@x/1' to='a@x' type='chat'>\
                       <body>x</body><private xmlns='urn:xmpp:carbons:2'/></message>";
        let stripped = without_private(&inbound(private, RouteKind::Stanza)).expect("private");
        assert!(!carbons::is_private(&stripped.el));
        assert!(without_private(&inbound(&original.to_xml(), RouteKind::Stanza)).is_none());
    }

    #[test]
    fn requests_answered() {
        let iq = Element::parse(
            "<iq xmlns='jabber:client' type='set' id='e' from='a@x/1'><enable xmlns='urn:xmpp:carbons:2'/></iq>",
        )
        .expect("iq");
        let payload = iq.children().next().expect("payload").clone();
        let own = Entity::Account {
            bare: "a@x".into(),
            own: true,
            no_to: true,
        };
        let reply = answer(&iq, StanzaType::Set, &payload, &own).expect("result");
        assert_eq!(reply.attr("type"), Some("result"));
        assert!(answer(&iq, StanzaType::Set, &payload, &Entity::Server).is_ok());
        let err = |r: Result<Element, StanzaError>| r.expect_err("error").condition;
        assert_eq!(
            err(answer(&iq, StanzaType::Get, &payload, &own)),
            "bad-request"
        );
        let other = Entity::Account {
            bare: "b@x".into(),
            own: false,
            no_to: false,
        };
        assert_eq!(
            err(answer(&iq, StanzaType::Set, &payload, &other)),
            "not-allowed"
        );
        let private = Element::new("private", meerkat_xmpp::ns::CARBONS);
        assert_eq!(
            err(answer(&iq, StanzaType::Set, &private, &own)),
            "bad-request"
        );
    }
}
