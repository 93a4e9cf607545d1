//! What the replicator publishes: session events into the local fanout, its sequenced stream
//! and control messages to the other DCs. Each waits for the broker's confirm.

use meerkat_bus::lapin::BasicProperties;
use meerkat_bus::{Headers, PublishError};
use meerkat_wire::{
    headers as h, topology as names, InterControl, ReplicatedEvent, SessionEvent, SessionInfo,
    WIRE_VERSION,
};
use meerkat_xmpp::{ns, Element};

use crate::Ctx;

/// Properties of a replicator publication: a fresh message id, JSON, persistent, the wire
/// version, origin DC and epoch.
pub(crate) fn props(origin_dc: &str, epoch: &str) -> BasicProperties {
    BasicProperties::default()
        .with_message_id(uuid::Uuid::new_v4().to_string().into())
        .with_content_type(h::CONTENT_JSON.into())
        .with_delivery_mode(2)
        .with_headers(
            Headers::new()
                .u64(h::WIRE, u64::from(WIRE_VERSION))
                .str(h::ORIGIN_DC, origin_dc)
                .str(h::ORIGIN_EPOCH, epoch)
                .build(),
        )
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
    let bare = info
        .jid
        .split('/')
        .next()
        .unwrap_or(&info.jid)
        .to_lowercase();
    let p = BasicProperties::default()
        .with_message_id(uuid::Uuid::new_v4().to_string().into())
        .with_content_type(h::CONTENT_XMPP.into())
        .with_delivery_mode(2)
        .with_headers(
            Headers::new()
                .u64(h::WIRE, u64::from(WIRE_VERSION))
                .str(h::ORIGIN_DC, &ctx.config.dc)
                .str(h::KIND, h::kind::LOCAL_PRESENCE)
                .str(h::SENDER, &info.jid)
                .u64(h::HOPS, 0)
                .build(),
        );
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
    let p = props(&ctx.config.dc, &ctx.epoch).with_headers(
        Headers::new()
            .u64(h::WIRE, u64::from(WIRE_VERSION))
            .str(h::ORIGIN_DC, &ctx.config.dc)
            .str(h::ORIGIN_EPOCH, &ctx.epoch)
            .str(h::TARGET_DC, target)
            .build(),
    );
    ctx.publisher
        .publish(names::INTER_CONTROL_EXCHANGE, target, p, &msg.to_json())
        .await
}
