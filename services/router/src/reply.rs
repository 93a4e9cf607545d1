//! Answers to the sender of the stanza being handled: a reply, or a stanza error. Used by the
//! routing core (route.rs) and by every handler, so it is neither's.

use meerkat_xmpp::stanza::{error_reply, must_not_bounce};
use meerkat_xmpp::{Element, StanzaError};

use crate::inbound::Inbound;
use crate::jids;
use crate::metrics::Outcome;
use crate::outbox::{Outbox, Target};
use crate::Ctx;

/// Sends `stanza` to the sender of `inb`: its session when known, else whatever session
/// holds the reply's `to` (a bounce has no sending session).
pub fn reply(ctx: &Ctx, inb: &Inbound, out: &mut Outbox, stanza: &Element) {
    if let Some(sender) = &inb.sender {
        out.deliver(sender.target.clone(), stanza);
        return;
    }
    let to = stanza.attr("to").unwrap_or(&inb.from);
    if jids::resource(to).is_none() {
        return;
    }
    let target = ctx.sessions.read().session(to).map(Target::from);
    if let Some(t) = target {
        out.deliver(t, stanza);
    }
}

/// Answers `inb` with a stanza error (never an error to an error or a result).
pub fn error(ctx: &Ctx, inb: &Inbound, out: &mut Outbox, err: StanzaError) -> Outcome {
    if must_not_bounce(&inb.el) {
        return Outcome::Dropped;
    }
    let mut r = error_reply(&inb.el, &err);
    if r.attr("to").is_none() {
        r.set_attr("to", inb.from.clone());
    }
    reply(ctx, inb, out, &r);
    Outcome::Error
}
