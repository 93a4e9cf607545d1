//! Which DC is a room's home. Every router follows the DC's health service's view of the
//! other DCs (`DcStatus` on the control exchange) and computes the same home from it: the
//! first DC, in the room's rendezvous-hash order over the mesh (this DC and its peers), not
//! declared down. When a DC is declared down, the rooms this DC is now home for that have
//! occupants at the dead DC get a purge order (their occupants there leave with status 333).

use std::collections::HashSet;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use meerkat_bus::ConsumerSpec;
use meerkat_wire::{topology as names, ControlEvent, DcState};
use meerkat_xmpp::{ns, Element};
use parking_lot::RwLock;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::Ctx;

/// The DCs this router's DC believes down.
#[derive(Default)]
pub struct Liveness {
    down: RwLock<HashSet<String>>,
}

impl Liveness {
    pub fn is_down(&self, dc: &str) -> bool {
        self.down.read().contains(dc)
    }

    /// Records `dc`'s state; whether it changed.
    fn set(&self, dc: &str, state: DcState) -> bool {
        let mut down = self.down.write();
        match state {
            DcState::Down => down.insert(dc.to_owned()),
            DcState::Up => down.remove(dc),
            DcState::Suspect => false,
        }
    }
}

/// Namespace of the rendezvous hash (a fixed random UUID).
const RENDEZVOUS: Uuid = Uuid::from_u128(0x6f1e_2a90_c3b7_4d58_9a0e_71c4_5b2d_e83f);

/// The room's DCs in its rendezvous order (pure: the same at every DC).
pub fn order<'a>(room: &str, dcs: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut dcs: Vec<(u128, &str)> = dcs
        .into_iter()
        .map(|dc| {
            let h = Uuid::new_v5(&RENDEZVOUS, format!("{room}\n{dc}").as_bytes()).as_u128();
            (h, dc)
        })
        .collect();
    dcs.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    dcs.dedup_by(|a, b| a.1 == b.1);
    dcs.into_iter().map(|(_, dc)| dc).collect()
}

/// The room's home as this router sees the mesh now.
pub fn home(ctx: &Ctx, room: &str) -> String {
    let own = ctx.config.dc.as_str();
    let dcs = std::iter::once(own).chain(ctx.config.peers.iter().map(|p| p.dc.as_str()));
    order(room, dcs)
        .into_iter()
        .find(|dc| *dc == own || !ctx.muc_liveness.is_down(dc))
        .unwrap_or(own)
        .to_owned()
}

/// Follows the DC's control exchange until `stop`. Once its directory is warm, the router
/// also tells the homes of its DC's rooms which occupants it still holds (a DC that returns
/// under a new life holds none of its old ones, which the other DCs kept away).
pub async fn run(ctx: Arc<Ctx>, stop: CancellationToken, consuming: Arc<AtomicUsize>) {
    if ctx.config.muc {
        let ctx = ctx.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = ctx.sessions.until_warm() => {}
                () = stop.cancelled() => return,
            }
            if let Err(e) = reconcile(&ctx, true).await {
                tracing::warn!(error = %format!("{e:#}"), "MUC: start-up reconcile orders not sent");
            }
        });
    }
    let queue = format!("{}.muc", names::control_queue(&ctx.instance));
    let spec = ConsumerSpec::instance(queue, names::CONTROL_EXCHANGE, 16, &ctx.parker, || async {});
    meerkat_bus::consume_events(ctx.bus.clone(), spec, stop, consuming, |event| {
        let ctx = ctx.clone();
        async move {
            if let ControlEvent::DcStatus { dc, state, .. } = event {
                if dc == ctx.config.dc || !ctx.muc_liveness.set(&dc, state) {
                    return;
                }
                tracing::info!(dc, state = state.as_str(), "MUC: homes follow the DC's state");
                if state == DcState::Down {
                    if let Err(e) = purge(&ctx, &dc).await {
                        tracing::warn!(error = %format!("{e:#}"), dc, "MUC: purge of a dead DC's occupants not sent");
                    }
                }
                if state == DcState::Up {
                    // It may have served rooms of this DC meanwhile: this DC's rooms wait
                    // for its data (catchup.rs).
                    ctx.muc_catch_up.behind();
                    if let Err(e) = reconcile(&ctx, false).await {
                        tracing::warn!(error = %format!("{e:#}"), dc, "MUC: reconcile orders not sent");
                    }
                }
            }
        }
    })
    .await;
}

/// Orders each room this DC is now home for to remove its occupants at `dead`.
async fn purge(ctx: &Ctx, dead: &str) -> anyhow::Result<()> {
    for room in ctx.store.muc_rooms_with_occupants_at(dead).await? {
        let home = home(ctx, &room);
        if home != ctx.config.dc {
            continue;
        }
        let order = Element::new("presence", ns::CLIENT)
            .with_attr("type", "unavailable")
            .with_attr("from", room.clone())
            .with_attr("to", room.clone())
            .with_child(Element::new("purge", super::NS_PURGE).with_attr("dc", dead));
        super::send_to_home(ctx, &order, None, &room, &home, 0, None).await?;
    }
    Ok(())
}

/// A DC is back (a partition healed, a DC returned): tells the home of every room with
/// occupants of this DC (in the room's view or away) which of them still have their session
/// here. Sent over the inter-DC path, the order waits at the home for the data this DC wrote
/// before it (the rooms' rows of its side of a partition).
async fn reconcile(ctx: &Ctx, quiet: bool) -> anyhow::Result<()> {
    let own = ctx.config.dc.as_str();
    for room in ctx.store.muc_rooms_with_occupants_at(own).await? {
        let mut order = Element::new("reconcile", super::NS_PURGE).with_attr("dc", own);
        if quiet {
            order.set_attr("quiet", "1");
        }
        for (_, body) in ctx.store.muc_occupants(&room).await? {
            let Ok(o) = serde_json::from_str::<super::room::Occupant>(&body) else {
                continue;
            };
            let here = ctx
                .sessions
                .read()
                .session(&o.jid)
                .filter(|s| s.dc == own)
                .map(|s| s.session_id);
            if let (true, Some(session)) = (o.dc == own, here) {
                order.push_child(
                    Element::new("occupant", super::NS_PURGE)
                        .with_attr("jid", o.jid)
                        .with_attr("session", session.to_string()),
                );
            }
        }
        let order = Element::new("presence", ns::CLIENT)
            .with_attr("type", "unavailable")
            .with_attr("from", room.clone())
            .with_attr("to", room.clone())
            .with_child(order);
        let home = home(ctx, &room);
        tracing::debug!(room, home, quiet, "MUC: reconcile order sent");
        super::send_to_home(ctx, &order, None, &room, &home, 1, None).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dc_computes_one_order_and_rooms_spread() {
        let a = order("r@conference.x", ["dc1", "dc2", "dc3"]);
        let b = order("r@conference.x", ["dc3", "dc1", "dc2"]);
        assert_eq!(a, b);
        assert_eq!(a.len(), 3);
        let firsts: HashSet<&str> = (0..64)
            .map(|i| order(&format!("room{i}@conference.x"), ["dc1", "dc2", "dc3"])[0])
            .collect();
        assert_eq!(firsts.len(), 3, "rooms spread over the DCs");
    }
}
