//! XEP-0012 Last Activity: of the server, its uptime; of an account, how long ago its last
//! resource went unavailable and with which status (0 while it has an available resource,
//! at any DC), for the account itself and for contacts with a presence subscription to it
//! (`from` or `both`); others get `forbidden` (§4). The last logout is replicated user data
//! (store `personal.rs`, kind `last`), written by every unavailable broadcast ([`logged_out`]).

use meerkat_store::{StoreError, Subscription};
use meerkat_xmpp::stanza::iq_result_with;
use meerkat_xmpp::{ns, Element, StanzaError, StanzaType};

use super::Entity;
use crate::inbound::Inbound;
use crate::jids::split_bare;
use crate::Ctx;

/// Status text kept at most, in characters (a client's unavailable presence sets it).
pub const MAX_STATUS_CHARS: usize = 1024;

fn query(seconds: u64, status: &str) -> Element {
    let mut q = Element::new("query", ns::LAST).with_attr("seconds", seconds.to_string());
    if !status.is_empty() {
        q.push_text(status);
    }
    q
}

/// Answers `<query xmlns='jabber:iq:last'/>` for `entity`.
pub async fn answer(
    ctx: &Ctx,
    inb: &Inbound,
    entity: &Entity,
    payload: &Element,
) -> anyhow::Result<Result<Element, StanzaError>> {
    if inb.ty != StanzaType::Get || payload.name() != "query" {
        return Ok(Err(StanzaError::bad_request()));
    }
    let (bare, own) = match entity {
        Entity::Server => {
            let up = ctx.started.elapsed().as_secs();
            return Ok(Ok(iq_result_with(&inb.el, query(up, ""))));
        }
        Entity::Account { bare, own, .. } => (bare, *own),
    };
    let Some(user) = split_bare(bare).0 else {
        return Ok(Err(StanzaError::service_unavailable()));
    };
    if !own {
        let allowed = ctx
            .store
            .roster_item(user, &inb.from_bare)
            .await?
            .is_some_and(|i| matches!(i.subscription, Subscription::From | Subscription::Both));
        if !allowed {
            return Ok(Err(StanzaError::forbidden()));
        }
    }
    // §5: an account with an available resource is active now.
    if !ctx.sessions.read().available(bare).is_empty() {
        return Ok(Ok(iq_result_with(&inb.el, query(0, ""))));
    }
    Ok(match ctx.store.last_activity(user).await? {
        Some(last) => {
            let now = chrono::Utc::now().timestamp_millis();
            let seconds = u64::try_from((now - last.at_ms) / 1000).unwrap_or(0);
            Ok(iq_result_with(&inb.el, query(seconds, &last.status)))
        }
        None => Err(StanzaError::item_not_found().text("no logout known")),
    })
}

/// Records the account's logout (an unavailable broadcast from one of its resources): the
/// latest one is what a contact sees once no resource is left available.
pub async fn logged_out(ctx: &Ctx, inb: &Inbound) -> anyhow::Result<()> {
    if !ctx.config.personal_data {
        return Ok(());
    }
    let status: String = inb
        .el
        .child_text("status", ns::CLIENT)
        .unwrap_or_default()
        .chars()
        .take(MAX_STATUS_CHARS)
        .collect();
    match ctx.store.set_last_activity(inb.username(), &status).await {
        // Deleted meanwhile: nothing to remember.
        Ok(()) | Err(StoreError::NoSuchAccount) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
