//! The presence subscription state machine of RFC 6121 §3 and Appendix A, as pure functions:
//! given one side's state for a contact and a subscription stanza, the new state and whether
//! the stanza goes on (outbound) or reaches the user (inbound). With pre-approval (RFC 6121
//! §3.4, advertised in the stream features): a `subscribed` with no request to answer is kept
//! as `approved`, which answers the request when it comes.

use meerkat_store::Subscription;
use meerkat_xmpp::StanzaType;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubType {
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
}

impl SubType {
    pub fn of(ty: StanzaType) -> Option<SubType> {
        match ty {
            StanzaType::Subscribe => Some(SubType::Subscribe),
            StanzaType::Subscribed => Some(SubType::Subscribed),
            StanzaType::Unsubscribe => Some(SubType::Unsubscribe),
            StanzaType::Unsubscribed => Some(SubType::Unsubscribed),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SubType::Subscribe => "subscribe",
            SubType::Subscribed => "subscribed",
            SubType::Unsubscribe => "unsubscribe",
            SubType::Unsubscribed => "unsubscribed",
        }
    }
}

/// One user's view of one contact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubState {
    pub sub: Subscription,
    /// We asked for the contact's presence (ask='subscribe').
    pub ask_out: bool,
    /// The contact asked for ours and we have not answered.
    pub pending_in: bool,
    /// We pre-approved the contact's request.
    pub approved: bool,
}

impl Default for SubState {
    fn default() -> SubState {
        SubState {
            sub: Subscription::None,
            ask_out: false,
            pending_in: false,
            approved: false,
        }
    }
}

/// The result of one transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    pub state: SubState,
    /// Outbound: route the stanza to the contact. Inbound: deliver it to the user.
    pub forward: bool,
    /// Inbound only: what the server answers on the user's behalf.
    pub auto_reply: Option<SubType>,
}

fn has_to(s: Subscription) -> bool {
    matches!(s, Subscription::To | Subscription::Both)
}

pub(super) fn has_from(s: Subscription) -> bool {
    matches!(s, Subscription::From | Subscription::Both)
}

fn add_from(s: Subscription) -> Subscription {
    match s {
        Subscription::None | Subscription::From => Subscription::From,
        Subscription::To | Subscription::Both => Subscription::Both,
    }
}

fn add_to(s: Subscription) -> Subscription {
    match s {
        Subscription::None | Subscription::To => Subscription::To,
        Subscription::From | Subscription::Both => Subscription::Both,
    }
}

fn drop_from(s: Subscription) -> Subscription {
    match s {
        Subscription::None | Subscription::From => Subscription::None,
        Subscription::To | Subscription::Both => Subscription::To,
    }
}

fn drop_to(s: Subscription) -> Subscription {
    match s {
        Subscription::None | Subscription::To => Subscription::None,
        Subscription::From | Subscription::Both => Subscription::From,
    }
}

impl SubState {
    /// The user sends `t` to the contact (RFC 6121 A.2).
    pub fn outbound(self, t: SubType) -> Step {
        let mut s = self;
        let forward = match t {
            SubType::Subscribe => {
                if !has_to(s.sub) {
                    s.ask_out = true;
                }
                true
            }
            SubType::Unsubscribe => {
                s.sub = drop_to(s.sub);
                s.ask_out = false;
                true
            }
            SubType::Subscribed => {
                if s.pending_in {
                    s.sub = add_from(s.sub);
                    s.pending_in = false;
                    // A pre-approval is used up once the subscription exists.
                    s.approved = false;
                    true
                } else {
                    // RFC 6121 §3.4: no request to answer, a pre-approval instead (kept, not
                    // sent). Across DCs this is also an answer that overtook the request it
                    // answers: the request, once stored here, is answered from it (stored.rs).
                    if !has_from(s.sub) {
                        s.approved = true;
                    }
                    false
                }
            }
            SubType::Unsubscribed => {
                if s.pending_in || has_from(s.sub) {
                    s.sub = drop_from(s.sub);
                    s.pending_in = false;
                    s.approved = false;
                    true
                } else {
                    false
                }
            }
        };
        Step {
            state: s,
            forward,
            auto_reply: None,
        }
    }

    /// The contact sent `t` to the user (RFC 6121 A.3).
    pub fn inbound(self, t: SubType) -> Step {
        let mut s = self;
        let mut auto_reply = None;
        let forward = match t {
            SubType::Subscribe => {
                if has_from(s.sub) {
                    auto_reply = Some(SubType::Subscribed);
                    false
                } else if s.approved {
                    s.sub = add_from(s.sub);
                    s.approved = false;
                    auto_reply = Some(SubType::Subscribed);
                    false
                } else {
                    s.pending_in = true;
                    true
                }
            }
            SubType::Subscribed => {
                if s.ask_out && !has_to(s.sub) {
                    s.sub = add_to(s.sub);
                    s.ask_out = false;
                    true
                } else {
                    false
                }
            }
            SubType::Unsubscribe => {
                if has_from(s.sub) || s.pending_in {
                    s.sub = drop_from(s.sub);
                    s.pending_in = false;
                    true
                } else {
                    false
                }
            }
            SubType::Unsubscribed => {
                if has_to(s.sub) || s.ask_out {
                    s.sub = drop_to(s.sub);
                    s.ask_out = false;
                    true
                } else {
                    false
                }
            }
        };
        Step {
            state: s,
            forward,
            auto_reply,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Subscription::{Both, From, None as Nothing, To};

    fn st(sub: Subscription, ask_out: bool, pending_in: bool) -> SubState {
        SubState {
            sub,
            ask_out,
            pending_in,
            approved: false,
        }
    }

    #[test]
    fn full_handshake_reaches_both() {
        // Alice subscribes to Bob.
        let alice = SubState::default().outbound(SubType::Subscribe);
        assert!(alice.forward);
        assert_eq!(alice.state, st(Nothing, true, false));
        let bob = SubState::default().inbound(SubType::Subscribe);
        assert!(bob.forward);
        assert_eq!(bob.state, st(Nothing, false, true));
        // Bob approves.
        let bob = bob.state.outbound(SubType::Subscribed);
        assert!(bob.forward);
        assert_eq!(bob.state, st(From, false, false));
        let alice = alice.state.inbound(SubType::Subscribed);
        assert!(alice.forward);
        assert_eq!(alice.state, st(To, false, false));
        // Bob subscribes back; Alice approves.
        let bob = bob.state.outbound(SubType::Subscribe);
        assert_eq!(bob.state, st(From, true, false));
        let alice = alice.state.inbound(SubType::Subscribe);
        assert_eq!(alice.state, st(To, false, true));
        let alice = alice.state.outbound(SubType::Subscribed);
        assert_eq!(alice.state, st(Both, false, false));
        let bob = bob.state.inbound(SubType::Subscribed);
        assert_eq!(bob.state, st(Both, false, false));
    }

    #[test]
    fn already_approved_subscribe_is_auto_answered() {
        let step = st(From, false, false).inbound(SubType::Subscribe);
        assert!(!step.forward);
        assert_eq!(step.auto_reply, Some(SubType::Subscribed));
        let pre = SubState {
            approved: true,
            ..SubState::default()
        }
        .inbound(SubType::Subscribe);
        assert_eq!(pre.auto_reply, Some(SubType::Subscribed));
        assert_eq!(pre.state.sub, From);
        assert!(!pre.state.approved);
    }

    #[test]
    fn an_unsolicited_approval_is_kept_as_a_pre_approval() {
        let step = SubState::default().outbound(SubType::Subscribed);
        assert!(!step.forward);
        assert!(step.state.approved);
        // The request it answers, once it arrives: subscribed from, the pre-approval gone.
        let answered = SubState {
            pending_in: true,
            ..step.state
        }
        .outbound(SubType::Subscribed);
        assert!(answered.forward);
        assert_eq!(answered.state.sub, From);
        assert!(!answered.state.approved);
        // Already subscribed from: nothing to pre-approve.
        assert!(
            !st(From, false, false)
                .outbound(SubType::Subscribed)
                .state
                .approved
        );
    }

    #[test]
    fn unsolicited_answers_are_ignored() {
        assert!(!SubState::default().outbound(SubType::Subscribed).forward);
        assert!(!SubState::default().outbound(SubType::Unsubscribed).forward);
        assert!(!SubState::default().inbound(SubType::Subscribed).forward);
        assert!(!st(To, false, false).inbound(SubType::Subscribed).forward);
        assert!(!SubState::default().inbound(SubType::Unsubscribe).forward);
        assert!(!SubState::default().inbound(SubType::Unsubscribed).forward);
    }

    #[test]
    fn unsubscribe_and_cancel() {
        // Unsubscribe: Both -> From on the user's side, Both -> To on the contact's.
        assert_eq!(
            st(Both, false, false)
                .outbound(SubType::Unsubscribe)
                .state
                .sub,
            From
        );
        assert_eq!(
            st(Both, false, false)
                .inbound(SubType::Unsubscribe)
                .state
                .sub,
            To
        );
        // Cancel (unsubscribed): Both -> To on the user's side, Both -> From on the contact's.
        assert_eq!(
            st(Both, false, false)
                .outbound(SubType::Unsubscribed)
                .state
                .sub,
            To
        );
        assert_eq!(
            st(Both, false, false)
                .inbound(SubType::Unsubscribed)
                .state
                .sub,
            From
        );
        // Denying a pending request.
        let deny = st(Nothing, false, true).outbound(SubType::Unsubscribed);
        assert!(deny.forward);
        assert_eq!(deny.state, st(Nothing, false, false));
        let asked = st(Nothing, true, false).inbound(SubType::Unsubscribed);
        assert!(asked.forward);
        assert_eq!(asked.state, st(Nothing, false, false));
        // Withdrawing a request before it is answered.
        let withdraw = st(Nothing, true, false).outbound(SubType::Unsubscribe);
        assert_eq!(withdraw.state, st(Nothing, false, false));
        let pending = st(Nothing, false, true).inbound(SubType::Unsubscribe);
        assert!(pending.forward);
        assert_eq!(pending.state, st(Nothing, false, false));
    }

    #[test]
    fn subscribe_when_already_subscribed_keeps_state() {
        let step = st(Both, false, false).outbound(SubType::Subscribe);
        assert!(step.forward);
        assert_eq!(step.state, st(Both, false, false));
    }
}
