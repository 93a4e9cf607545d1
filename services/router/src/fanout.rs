//! A fan-out from another DC (`x-meerkat-kind: fanout`, meerkat_wire::fanout): one stanza for
//! several sessions of this DC, handled in its sender's partition (a room's, so in the room's
//! order). Each copy goes to its session as a stanza from another DC for one session would
//! (partition.rs): the copies whose session is here go on as one fan-out per gateway, under
//! their own ids; a copy whose session is gone, moved or unknown is routed again like a
//! bounce of it, with one hop fewer. A bundle from another DC (`bundle`: stanzas one
//! handling there queued, one after another, for sessions of this DC, all from one sender) is
//! handled the same way, each stanza as it came ([`bundle_arrived`]).

use std::time::Duration;

use meerkat_wire::fanout::{FanoutError, Recipient};
use meerkat_wire::RouteKind;

use crate::inbound::Inbound;
use crate::metrics::Outcome;
use crate::outbox::Outbox;
use crate::route::{self, RemoteArrival};
use crate::Ctx;

/// Delivers or routes again each copy of `inb`. `id`: the fan-out's message id.
/// `target_wait`: how long a recipient session this directory has not seen yet is waited
/// for (its event may lag behind the stanza).
pub async fn arrived(
    ctx: &Ctx,
    inb: &Inbound,
    id: Option<&str>,
    target_wait: Duration,
) -> anyhow::Result<()> {
    let copies = match inb.recipients.as_deref().map(meerkat_wire::fanout::decode) {
        Some(Ok(c)) => c,
        // A room's archive copy for this DC, where it has no occupant (partition.rs kept
        // the row): nothing to deliver.
        Some(Err(FanoutError::Empty)) => {
            ctx.metrics.routed(inb.kind.as_str(), Outcome::Handled);
            return Ok(());
        }
        Some(Err(e)) => {
            tracing::warn!(error = %e, from = %inb.from, "fan-out with unreadable recipients dropped");
            return Ok(());
        }
        None => {
            tracing::warn!(from = %inb.from, "fan-out without recipients dropped");
            return Ok(());
        }
    };
    futures::future::join_all(
        copies
            .iter()
            .map(|c| ctx.sessions.wait_seen(c.session, 0, target_wait)),
    )
    .await;
    let mut here = Vec::with_capacity(copies.len());
    let mut elsewhere = Vec::new();
    {
        let dir = ctx.sessions.read();
        for c in copies {
            match route::remote_arrival(dir.by_session(c.session), &ctx.config.dc, inb.hops) {
                RemoteArrival::Deliver(target) => here.push((target, c.to, c.id)),
                RemoteArrival::Reresolve { hops } => elsewhere.push((c, hops)),
            }
        }
    }
    let mut out = Outbox::new(inb.hops).derived_from(id);
    out.fan_out_as(ctx, &inb.el, here);
    out.flush(ctx).await?;
    for (c, hops) in elsewhere {
        tracing::debug!(session = %c.session, hops, "fan-out copy's session not here: re-resolved");
        let mut el = inb.el.clone();
        el.set_attr("to", c.to.clone());
        let copy = Inbound { el, ..inb.clone() };
        reroute(ctx, copy, &c, hops).await?;
    }
    ctx.metrics.routed(inb.kind.as_str(), Outcome::Delivered);
    Ok(())
}

/// Delivers or routes again each stanza of a bundle from another DC (`body`, its recipients in
/// `headers`), in the partition of its sender: the ones whose session is here go on as
/// deliveries of one handling (bundled again per gateway, ids kept), the others are routed
/// again like a bounce of each. An unreadable bundle is dropped (logged).
pub async fn bundle_arrived(
    ctx: &Ctx,
    body: &[u8],
    headers: Option<&meerkat_bus::lapin::types::FieldTable>,
    target_wait: Duration,
) -> anyhow::Result<()> {
    use meerkat_bus::HeaderExt;
    use meerkat_wire::headers as h;
    let pairs = headers
        .get_str(h::RECIPIENTS)
        .ok_or(FanoutError::Empty)
        .and_then(|r| meerkat_wire::fanout::decode(&r))
        .and_then(|r| meerkat_wire::fanout::unbundle(body, r));
    let pairs = match pairs {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "bundle from another DC unreadable: dropped");
            return Ok(());
        }
    };
    for (_, el) in &pairs {
        crate::muc::kept::element(ctx, el).await?;
    }
    // Roster pushes, written from this DC's copy (roster::as_here).
    let mut pairs = pairs;
    if headers.get_bool(h::DATA_APPLIED) {
        for (_, el) in &mut pairs {
            if let Some(here) = crate::handlers::roster::as_here(ctx, el).await? {
                *el = here;
            }
        }
    }
    let hops = headers.get_u64(h::HOPS).unwrap_or(0);
    futures::future::join_all(
        pairs
            .iter()
            .map(|(r, _)| ctx.sessions.wait_seen(r.session, 0, target_wait)),
    )
    .await;
    let mut out = Outbox::new(hops);
    let mut elsewhere = Vec::new();
    {
        let dir = ctx.sessions.read();
        for (r, el) in pairs {
            match route::remote_arrival(dir.by_session(r.session), &ctx.config.dc, hops) {
                RemoteArrival::Deliver(target) => out.deliver_as(target, &el, &r.id),
                RemoteArrival::Reresolve { hops } => elsewhere.push((r, el, hops)),
            }
        }
    }
    out.flush(ctx).await?;
    for (r, el, hops) in elsewhere {
        tracing::debug!(session = %r.session, hops, "bundled stanza's session not here: re-resolved");
        let Ok(copy) = Inbound::parse(el.to_xml().as_bytes(), headers) else {
            tracing::warn!(session = %r.session, "unreadable stanza in a bundle from another DC dropped");
            continue;
        };
        reroute(ctx, copy, &r, hops).await?;
    }
    Ok(())
}

/// Routes `copy`, one copy of a fan-out or one stanza of a bundle whose session (`r`) is not
/// here, again like a bounce of it, with `hops` left and under its own id.
async fn reroute(ctx: &Ctx, copy: Inbound, r: &Recipient, hops: u64) -> anyhow::Result<()> {
    let copy = Inbound {
        wire_kind: RouteKind::Bounce,
        hops,
        target_session: Some(r.session),
        recipients: None,
        ..copy
    };
    let mut out = Outbox::new(hops).derived_from(Some(&r.id));
    let outcome = route::route(ctx, &copy, &mut out).await?;
    out.flush(ctx).await?;
    ctx.metrics.routed(copy.kind.as_str(), outcome);
    Ok(())
}
