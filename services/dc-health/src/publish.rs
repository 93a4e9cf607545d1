//! What the health service publishes into its own DC: control events (`DcStatus`,
//! `GatewayDown`, `Resync`), and for the sessions of a dead gateway what the gateway would have
//! said at their end (unavailable presence to the routers, the session's close). Each waits for
//! the broker's confirm.

use meerkat_bus::{Props, PublishError};
use meerkat_wire::{
    headers as h, topology as names, ControlEvent, RouteKind, SessionEvent, SessionEventKind,
    WIRE_VERSION,
};
use meerkat_xmpp::{ns, Element};
use uuid::Uuid;

use crate::gateways::Tracked;
use crate::Ctx;

/// Hops a stanza of a dead gateway's session may be re-routed (as the gateway gives them).
pub const HOPS: u64 = 3;

/// Names the deterministic message ids of what is published for a dead gateway's sessions:
/// two health services (or one retrying) produce the same ids, which receivers de-duplicate.
const ID_NAMESPACE: Uuid = Uuid::from_u128(0x6d65_6572_6b61_742d_6865_616c_7468_0001);

/// An event on the DC's `meerkat.control` fanout.
pub async fn control(ctx: &Ctx, event: &ControlEvent) -> Result<(), PublishError> {
    let props = Props::event(&ctx.config.dc).str(h::ORIGIN_EPOCH, &ctx.epoch);
    ctx.publisher
        .publish(names::CONTROL_EXCHANGE, "", props, &event.to_json())
        .await
}

/// `<presence type='unavailable' from='FULL JID'/>` of a dead gateway's session, to the
/// routers as if its client had sent it: they tell the contacts and the user's other
/// resources. Without session or gateway headers: the session is gone.
pub async fn unavailable(ctx: &Ctx, t: &Tracked) -> Result<(), PublishError> {
    let jid = &t.info.jid;
    let bare = meerkat_xmpp::addr::bare(jid);
    let presence = Element::new("presence", ns::CLIENT)
        .with_attr("type", "unavailable")
        .with_attr("from", jid.clone());
    let id = Uuid::new_v5(
        &ID_NAMESPACE,
        format!("unavailable/{}/{}", t.info.session_id, t.info.version).as_bytes(),
    );
    let mut props = Props::stanza(RouteKind::Stanza, &ctx.config.dc)
        .id(id.to_string())
        .u64(h::HOPS, HOPS)
        .str(h::SENDER, jid)
        .u64(h::RECEIVED_AT, meerkat_bus::heartbeat::now_ms());
    meerkat_runtime::telemetry::inject_context(props.headers_mut());
    ctx.publisher
        .publish(
            names::ROUTE_EXCHANGE,
            &bare,
            props,
            presence.to_xml().as_bytes(),
        )
        .await
}

/// The close of a dead gateway's session, one version after the last one announced, under
/// the gateway life's epoch: the routers drop it, the replicator tells the other DCs.
pub async fn close(ctx: &Ctx, t: &Tracked) -> Result<(), PublishError> {
    let mut info = t.info.clone();
    info.version += 1;
    info.available = false;
    info.presence = None;
    let event = SessionEvent {
        v: WIRE_VERSION,
        kind: SessionEventKind::Close,
        epoch: t.epoch.clone(),
        session: info,
    };
    let id = Uuid::new_v5(
        &ID_NAMESPACE,
        format!("close/{}/{}", t.info.session_id, t.info.version).as_bytes(),
    );
    let props = Props::event(&ctx.config.dc)
        .id(id.to_string())
        .str(h::ORIGIN_EPOCH, &t.epoch);
    ctx.publisher
        .publish(
            names::SESSIONS_EXCHANGE,
            &event.session.dc,
            props,
            &event.to_json(),
        )
        .await
}
