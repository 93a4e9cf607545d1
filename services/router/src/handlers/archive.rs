//! XEP-0313 queries of the user's own archive: the search form, queries with paging
//! (results as messages to the querying resource, then the iq result with `<fin/>`, in that
//! order on the same route), the archive's metadata, and the preferences.

use meerkat_store::{ArchiveQuery, StoreError};
use meerkat_xmpp::stanza::{iq_result, iq_result_with};
use meerkat_xmpp::{ns, Element, StanzaError};

use super::Entity;
use crate::inbound::Inbound;
use crate::mam::{self, MamRequest};
use crate::metrics::Outcome;
use crate::outbox::Outbox;
use crate::reply::{error, reply};
use crate::Ctx;

/// A page whose newest message is younger than this may still change: another DC's message
/// written up to this long before it may not have been replicated here yet and would sort
/// before it (`stable='false'`).
pub const SETTLE_MS: i64 = 10_000;

fn stamp(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub async fn handle(
    ctx: &Ctx,
    inb: &Inbound,
    out: &mut Outbox,
    entity: &Entity,
    payload: &Element,
) -> anyhow::Result<Outcome> {
    let owner = match entity {
        Entity::Account {
            own: true, bare, ..
        } => crate::jids::split_bare(bare).0.unwrap_or("").to_owned(),
        Entity::Account { .. } => return Ok(error(ctx, inb, out, StanzaError::forbidden())),
        Entity::Server => return Ok(error(ctx, inb, out, StanzaError::service_unavailable())),
    };
    let req = match MamRequest::parse(inb.ty, payload) {
        Ok(r) => r,
        Err(e) => return Ok(error(ctx, inb, out, e)),
    };
    let answer = match req {
        MamRequest::Form => iq_result_with(&inb.el, mam::form_element()),
        MamRequest::PrefsGet => {
            let prefs =
                ctx.store
                    .archive_prefs(&owner)
                    .await?
                    .unwrap_or(meerkat_store::ArchivePrefs {
                        default: ctx.config.archive_default(),
                        always: Vec::new(),
                        never: Vec::new(),
                    });
            iq_result_with(&inb.el, mam::prefs_element(&prefs))
        }
        MamRequest::PrefsSet(prefs) => {
            if !ctx.config.archive {
                return Ok(error(ctx, inb, out, StanzaError::service_unavailable()));
            }
            match ctx.store.set_archive_prefs(&owner, &prefs).await {
                Ok(()) => iq_result_with(&inb.el, mam::prefs_element(&prefs)),
                Err(StoreError::NoSuchAccount) => {
                    return Ok(error(ctx, inb, out, StanzaError::item_not_found()))
                }
                Err(e) => return Err(e.into()),
            }
        }
        MamRequest::Metadata => {
            let mut m = Element::new("metadata", ns::MAM);
            if let Some((first, last)) = ctx.store.archive_bounds(&owner).await? {
                for (name, a) in [("start", first), ("end", last)] {
                    m.push_child(
                        Element::new(name, ns::MAM)
                            .with_attr("id", a.id)
                            .with_attr("timestamp", stamp(a.at_ms)),
                    );
                }
            }
            iq_result_with(&inb.el, m)
        }
        MamRequest::Query(q) => {
            let from = inb.from_bare.clone();
            return query(ctx, inb, out, owner, &from, q).await;
        }
    };
    let mut answer = answer;
    if answer.attr("to").is_none() {
        answer.set_attr("to", inb.from.clone());
    }
    reply(ctx, inb, out, &answer);
    Ok(Outcome::Handled)
}

/// Answers query `q` of `owner`'s archive; the result messages come from `from` (the
/// archive's JID: the user's bare JID, or a room's).
pub async fn query(
    ctx: &Ctx,
    inb: &Inbound,
    out: &mut Outbox,
    owner: String,
    from: &str,
    q: mam::Query,
) -> anyhow::Result<Outcome> {
    let aq = ArchiveQuery { owner, ..q.search };
    let Some(page) = ctx.store.archive_query(&aq).await? else {
        return Ok(error(ctx, inb, out, StanzaError::item_not_found()));
    };
    let now = chrono::Utc::now().timestamp_millis();
    let stable = page.items.last().is_none_or(|a| now - a.at_ms >= SETTLE_MS);
    for a in &page.items {
        let Ok(archived) = Element::parse(&a.stanza) else {
            tracing::warn!(id = %a.id, "unreadable archived message skipped");
            continue;
        };
        let mut result = Element::new("result", ns::MAM).with_attr("id", a.id.clone());
        if let Some(qid) = &q.queryid {
            result.set_attr("queryid", qid.clone());
        }
        result.push_child(
            Element::new("forwarded", ns::FORWARD)
                .with_child(Element::new("delay", ns::DELAY).with_attr("stamp", stamp(a.at_ms)))
                .with_child(archived),
        );
        let msg = Element::new("message", ns::CLIENT)
            .with_attr("to", inb.from.clone())
            .with_attr("from", from)
            .with_attr("id", uuid::Uuid::new_v4().to_string())
            .with_child(result);
        reply(ctx, inb, out, &msg);
    }
    let mut set = Element::new("set", ns::RSM);
    if let (Some(first), Some(last)) = (page.items.first(), page.items.last()) {
        set.push_child(Element::new("first", ns::RSM).with_text(first.id.clone()));
        set.push_child(Element::new("last", ns::RSM).with_text(last.id.clone()));
    }
    let mut fin = Element::new("fin", ns::MAM).with_child(set);
    if page.complete {
        fin.set_attr("complete", "true");
    }
    if !stable {
        fin.set_attr("stable", "false");
    }
    let mut result = iq_result(&inb.el);
    result.push_child(fin);
    if result.attr("to").is_none() {
        result.set_attr("to", inb.from.clone());
    }
    reply(ctx, inb, out, &result);
    Ok(Outcome::Handled)
}
