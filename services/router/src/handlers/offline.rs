//! Offline storage (RFC 6121 §8.5.2.1.1, XEP-0160): messages for an account with no
//! available resource are stored with a XEP-0203 delay stamp and delivered at the next
//! initial presence; they are deleted only once that delivery is confirmed.

use meerkat_store::StoreError;
use meerkat_xmpp::stanza::delay;
use meerkat_xmpp::{ns, Element, Hints, StanzaError};

use crate::inbound::Inbound;
use crate::jids::Addr;
use crate::metrics::Outcome;
use crate::outbox::{Outbox, Target};
use crate::reply::error;
use crate::Ctx;

/// Adds the delay stamp unless one from this server is there already (a message stored,
/// delivered, then bounced back keeps its original time).
pub fn stamp(message: &Element, domain: &str, now: chrono::DateTime<chrono::Utc>) -> Element {
    let mut m = message.clone();
    let stamped = m
        .children()
        .any(|c| c.is("delay", ns::DELAY) && c.attr("from") == Some(domain));
    if !stamped {
        m.push_child(delay(domain, now));
    }
    m
}

pub async fn store(
    ctx: &Ctx,
    inb: &Inbound,
    out: &mut Outbox,
    to: &Addr,
) -> anyhow::Result<Outcome> {
    let Some(user) = &to.node else {
        return Ok(Outcome::Dropped);
    };
    if !Hints::of(&inb.el).allows_offline() {
        // XEP-0334 `no-store`: not stored. RFC 6121 §8.5.2.2.1 lets the server drop it or
        // answer service-unavailable: a message with a body gets the error (the sender learns
        // it was not delivered), a body-less one (a chat state) is dropped.
        return Ok(if inb.el.has_child("body", ns::CLIENT) {
            error(ctx, inb, out, StanzaError::service_unavailable())
        } else {
            Outcome::Dropped
        });
    }
    let stanza = stamp(&inb.el, &ctx.config.domain, chrono::Utc::now());
    // Keyed by the envelope: a handling retried after this write stores it once.
    match ctx
        .store
        .store_offline_keyed(user, &stanza.to_xml(), ctx.config.max_offline, out.origin())
        .await
    {
        Ok(()) => {
            tracing::debug!(user, stanza = ?inb.el.attr("id"), "stored offline");
            // The account's initial presence is handled by its own partition, which may have
            // just delivered what was stored before this: if it is available by now, that
            // partition delivers this one too (stored.rs).
            let bare = to.bare.as_str();
            if bare != inb.from_bare {
                out.nudge_stored(bare);
            }
            Ok(Outcome::Offline)
        }
        Err(StoreError::Full) => Ok(error(ctx, inb, out, StanzaError::resource_constraint())),
        Err(StoreError::NoSuchAccount) => {
            Ok(error(ctx, inb, out, StanzaError::service_unavailable()))
        }
        Err(e) => Err(e.into()),
    }
}

/// Delivers the user's stored messages to the session that just became available, and
/// deletes them once the deliveries are confirmed.
pub async fn deliver_pending(
    ctx: &Ctx,
    username: &str,
    out: &mut Outbox,
    session: &Target,
) -> anyhow::Result<()> {
    let stored = ctx.store.offline_messages(username).await?;
    if stored.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::with_capacity(stored.len());
    for m in stored {
        match Element::parse(&m.stanza) {
            // Keyed by the stored row: shown at a login and by a nudge, or by a handling
            // retried before the row was deleted, the session sees it once.
            Ok(el) => out.deliver_once(session.clone(), &el, &format!("offline {}", m.id)),
            Err(e) => tracing::warn!(id = m.id, error = %e, "unreadable offline message deleted"),
        }
        ids.push(m.id);
    }
    out.flush(ctx).await?;
    tracing::debug!(username, session = %session.session, dc = %session.dc, ?ids, "offline messages delivered");
    ctx.store.delete_offline(username, &ids).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_once() {
        let m = Element::new("message", ns::CLIENT).with_attr("type", "chat");
        let now = chrono::Utc::now();
        let once = stamp(&m, "example.com", now);
        let twice = stamp(&once, "example.com", now);
        assert_eq!(once, twice);
        let d = once.get_child("delay", ns::DELAY).expect("delay");
        assert_eq!(d.attr("from"), Some("example.com"));
        assert!(d.attr("stamp").is_some_and(|s| s.ends_with('Z')));
    }
}
