//! What the replicator publishes: session events into the local fanout, its sequenced stream
//! and control messages to the other DCs. Each waits for the broker's confirm.

use meerkat_bus::{Props, PublishError};
use meerkat_wire::{
    headers as h, topology as names, InterControl, ReplicatedEvent, RouteKind, SessionEvent,
    SessionInfo,
};
use meerkat_xmpp::{ns, Element};

use crate::Ctx;

/// Properties of a replicator publication: an event from `origin_dc` in `epoch`.
pub(crate) fn props(origin_dc: &str, epoch: &str) -> Props {
    Props::event(origin_dc).str(h::ORIGIN_EPOCH, epoch)
}

/// A (remote) session event into this DC's `meerkat.sessions`, unchanged, as the gateways
/// publish theirs. New properties: nothing of the federation headers is carried over.
pub async fn local_session_event(ctx: &Ctx, event: &SessionEvent) -> Result<(), PublishError> {
    let p = props(&event.session.dc, &event.epoch);
    ctx.publisher
        .publish(
            names::SESSIONS_EXCHANGE,
            &event.session.dc,
            p,
            &event.to_json(),
        )
        .await
}

/// Presence of a session of another DC into the local route exchange (the session's
/// partition): unavailable when its DC was declared down, its last presence when the DC is
/// back. The routers broadcast it to its contacts' sessions at this DC only
/// (`x-meerkat-kind=local-presence`), as every other DC does for its own.
pub async fn local_presence(
    ctx: &Ctx,
    info: &SessionInfo,
    available: bool,
) -> Result<(), PublishError> {
    let last = info
        .presence
        .as_deref()
        .and_then(|p| Element::parse(p).ok())
        .filter(|p| p.attr("type").is_none());
    let presence = match last {
        Some(p) if available => p,
        _ if available => Element::new("presence", ns::CLIENT),
        _ => Element::new("presence", ns::CLIENT).with_attr("type", "unavailable"),
    }
    .with_attr("from", info.jid.clone());
    let bare = meerkat_xmpp::addr::bare(&info.jid);
    let p = Props::stanza(RouteKind::LocalPresence, &ctx.config.dc)
        .str(h::SENDER, &info.jid)
        .u64(h::HOPS, 0);
    ctx.publisher
        .publish(
            names::ROUTE_EXCHANGE,
            &bare,
            p,
            presence.to_xml().as_bytes(),
        )
        .await
}

/// One event of this DC's stream to every other DC.
pub async fn replicated(ctx: &Ctx, event: &ReplicatedEvent) -> Result<(), PublishError> {
    let p = props(&ctx.config.dc, &event.epoch);
    ctx.publisher
        .publish(
            names::INTER_SESSIONS_EXCHANGE,
            &ctx.config.dc,
            p,
            &event.to_json(),
        )
        .await
}

/// A control message to DC `target`.
pub async fn inter_control(
    ctx: &Ctx,
    target: &str,
    msg: &InterControl,
) -> Result<(), PublishError> {
    let p = props(&ctx.config.dc, &ctx.epoch).str(h::TARGET_DC, target);
    ctx.publisher
        .publish(names::INTER_CONTROL_EXCHANGE, target, p, &msg.to_json())
        .await
}
