//! Multi-user chat (XEP-0045, issue 19; docs/muc.md). The service is `muc_host`
//! (`conference.<domain>`). Each room is served by one DC at a time, its *home*: the first DC
//! in the room's rendezvous-hash order over the mesh that dc-health has not declared down
//! (`health.rs`). A stanza for a room or an occupant JID is taken by the router that gets it
//! from its sender and sent on to the home (`x-meerkat-kind=room`, routing key = the room's
//! bare JID): at the home, one route partition handles the room's stanzas one at a time
//! (`serve.rs`), writes the room's replicated state and archive, and sends reflections and
//! broadcasts as ordinary stanzas to each occupant's session, wherever it is.

pub mod catchup;
pub mod health;
pub mod kept;
pub mod request;
pub mod room;
mod serve;

use meerkat_bus::Props;
use meerkat_wire::{envelope, headers as h, topology as names, RouteKind};
use meerkat_xmpp::{StanzaKind, StanzaType};
use uuid::Uuid;

use crate::inbound::Inbound;
use crate::jids::Addr;
use crate::metrics::Outcome;
use crate::outbox::Outbox;
use crate::Ctx;

pub const NS_MUC: &str = "http://jabber.org/protocol/muc";
pub const NS_USER: &str = "http://jabber.org/protocol/muc#user";
pub const NS_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
pub const NS_OWNER: &str = "http://jabber.org/protocol/muc#owner";
/// XEP-0410 §4: the service answers a self-ping itself.
pub const NS_SELF_PING: &str = "http://jabber.org/protocol/muc#self-ping-optimization";
/// The router's own orders to a room's home: remove the occupants of a DC declared down
/// (`<purge dc=…/>`), reconcile those of a DC back (`<reconcile dc=…><occupant jid=…/>…`).
pub const NS_PURGE: &str = "urn:xmpp:meerkat:muc:purge:0";

/// Namespace of the ids of stanzas sent on to a room's home (a fixed random UUID).
const FORWARDED: Uuid = Uuid::from_u128(0x0c4b_9f3e_52a1_4d7c_8e60_1b2d_93f7_a4c5);

/// Takes a stanza addressed to the MUC service, a room or an occupant; `None` when it is
/// addressed elsewhere (or MUC is off here).
pub async fn route(ctx: &Ctx, inb: &Inbound, out: &mut Outbox) -> anyhow::Result<Option<Outcome>> {
    if !ctx.config.muc {
        return Ok(None);
    }
    let Some(addr) = inb.el.attr("to").and_then(Addr::parse) else {
        return Ok(None);
    };
    if addr.domain != ctx.config.muc_domain() {
        return Ok(None);
    }
    if addr.node.is_none() {
        return serve::service(ctx, inb, out, &addr).await.map(Some);
    }
    let room = addr.bare.clone();
    let home = health::home(ctx, &room);
    if inb.wire_kind == RouteKind::Room && (home == ctx.config.dc || inb.hops == 0) {
        // The sender's session may be at another DC and its event still on its way.
        if let Some(id) = inb.target_session {
            ctx.sessions
                .wait_seen(id, 0, std::time::Duration::from_secs(2))
                .await;
        }
        // A room that was served elsewhere meanwhile is served from an up-to-date copy.
        catchup::wait(ctx).await;
        return serve::room(ctx, inb, out, &addr).await.map(Some);
    }
    let hops = if inb.wire_kind == RouteKind::Room {
        inb.hops.saturating_sub(1)
    } else {
        inb.hops
    };
    forward(ctx, inb, out, &room, &home, hops).await?;
    Ok(Some(Outcome::Handled))
}

/// Sends `inb` on to the room's home: into the room's partition here, or to the home DC.
async fn forward(
    ctx: &Ctx,
    inb: &Inbound,
    out: &Outbox,
    room: &str,
    home: &str,
    hops: u64,
) -> anyhow::Result<()> {
    let mut el = inb.el.clone();
    el.set_attr("from", inb.from.clone());
    send_to_home(ctx, &el, out.origin(), room, home, hops, session_of(inb)).await
}

/// The sending session of a stanza for a room (a client's own, or named by the router that
/// sent it on).
fn session_of(inb: &Inbound) -> Option<Uuid> {
    inb.sender
        .as_ref()
        .map(|s| s.target.session)
        .or(inb.target_session)
}

/// Publishes `el` (its `from` already the sender's full JID) for the room's home. `origin`:
/// the id of the envelope being handled, which the published id is derived from (a retried
/// handling publishes the same id, and the home drops the copy).
pub(crate) async fn send_to_home(
    ctx: &Ctx,
    el: &meerkat_xmpp::Element,
    origin: Option<&str>,
    room: &str,
    home: &str,
    hops: u64,
    session: Option<Uuid>,
) -> anyhow::Result<()> {
    let own = ctx.config.dc.as_str();
    let id = match origin {
        Some(o) => Uuid::new_v5(&FORWARDED, format!("{o}\n{room}").as_bytes()),
        None => Uuid::new_v4(),
    }
    .to_string();
    let mut props = Props::stanza(RouteKind::Room, own)
        .id(id)
        .u64(h::HOPS, hops)
        .opt_str(h::SENDER, el.attr("from"))
        .opt_str(h::SESSION, session.map(|s| s.to_string()).as_deref());
    if home == own {
        ctx.publisher
            .publish(names::ROUTE_EXCHANGE, room, props, el.to_xml().as_bytes())
            .await?;
        return Ok(());
    }
    props = props.str(h::TARGET_DC, home);
    if let Some((epoch, seq)) = ctx.store.written_mark() {
        props = props
            .str(h::DATA_EPOCH, &epoch)
            .u64(h::DATA_SEQ, u64::try_from(seq).unwrap_or(0));
    }
    let body = envelope::wrap(
        Some(el),
        &names::dc_address(own, &ctx.config.domain),
        &names::dc_address(home, &ctx.config.domain),
    );
    ctx.metrics.inter_out.inc();
    ctx.publisher
        .publish_routed(names::INTER_STANZAS_EXCHANGE, home, props, body.as_bytes())
        .await?;
    Ok(())
}

/// A user's session ended (its unavailable presence broadcast): it leaves every room it was
/// in, as if it had sent them its unavailable presence (RFC 6121 §4.6.3 directed presence).
///
/// Not for the unavailable presence this DC makes for the sessions of a DC declared down
/// (`local-presence`): those may still be there behind a partition, and the room's home keeps
/// them aside (its purge order) until their DC says. Leaving here deleted their rows instead,
/// whenever that presence reached the home before the purge order: after the heal they were
/// out of the room without knowing it.
pub async fn session_ended(ctx: &Ctx, inb: &Inbound, out: &Outbox) -> anyhow::Result<()> {
    if !ctx.config.muc
        || inb.kind != StanzaKind::Presence
        || inb.ty != StanzaType::Unavailable
        || inb.wire_kind == meerkat_wire::RouteKind::LocalPresence
    {
        return Ok(());
    }
    let rooms = ctx.store.muc_rooms_of(&inb.from).await?;
    for (room, key) in rooms {
        let nick = room::nick_of_key(&key);
        let mut el = meerkat_xmpp::Element::new("presence", meerkat_xmpp::ns::CLIENT)
            .with_attr("type", "unavailable")
            .with_attr("from", inb.from.clone())
            .with_attr("to", format!("{room}/{nick}"));
        if let Some(status) = inb.el.get_child("status", meerkat_xmpp::ns::CLIENT) {
            el.push_child(status.clone());
        }
        let home = health::home(ctx, &room);
        send_to_home(ctx, &el, out.origin(), &room, &home, 3, session_of(inb)).await?;
    }
    Ok(())
}
