//! A gateway asks for a stream-managed session its client resumed there (XEP-0198) while
//! another gateway holds it (`handover` request, docs/protocol.md "Handover"): the router finds
//! the session bound to the full JID in its directory and passes the request to its gateway,
//! in this DC on the deliver exchange, in another over the inter-DC stanza exchange (that DC's
//! routers hand it to their deliver exchange). No such session: `refused` to the asking
//! gateway.

use meerkat_bus::Props;
use meerkat_wire::handover::{self, Refused, Request};
use meerkat_wire::{headers as h, topology as names, RouteKind};

use crate::Ctx;

/// Passes one `handover` request on; what cannot be read is dropped (logged).
pub async fn pass(ctx: &Ctx, body: &[u8]) -> anyhow::Result<()> {
    let req: Request = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "unreadable handover request dropped");
            return Ok(());
        }
    };
    let holder = ctx.sessions.read().session(&req.jid).cloned();
    match holder {
        Some(s) => {
            tracing::debug!(jid = %req.jid, gateway = %s.gateway, dc = %s.dc, "handover request passed on");
            send(ctx, &s.dc, &s.gateway, handover::REQUEST, body).await
        }
        None => {
            tracing::debug!(jid = %req.jid, "handover request for no session: refused");
            let refused = serde_json::to_vec(&Refused {
                request: req.request,
                too_high: None,
            })?;
            send(
                ctx,
                &req.to_dc,
                &req.to_gateway,
                handover::REFUSED,
                &refused,
            )
            .await
        }
    }
}

/// Publishes a `handover` step for `gateway` at `dc`.
async fn send(ctx: &Ctx, dc: &str, gateway: &str, step: &str, body: &[u8]) -> anyhow::Result<()> {
    let own = ctx.config.dc.as_str();
    let props = Props::stanza(RouteKind::Handover, own).str(h::HANDOVER, step);
    if dc.is_empty() || dc == own {
        ctx.publisher
            .publish(names::DELIVER_EXCHANGE, gateway, props, body)
            .await?;
    } else {
        let props = props.str(h::TARGET_DC, dc).str(h::GATEWAY, gateway);
        ctx.publisher
            .publish(names::INTER_STANZAS_EXCHANGE, dc, props, body)
            .await?;
    }
    Ok(())
}
