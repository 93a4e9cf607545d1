//! Archiving at routing time (XEP-0313, XEP-0359): the router handling a client's message (its
//! sender's partition) archives it in the sender's archive and in the recipient's, each copy
//! with its own id, *before* it is delivered or stored offline, and the recipient gets it with
//! `<stanza-id by='recipient' id='…'/>`: no client sees an id that was not written. And the
//! retention purge every DC runs alike.

use std::time::Duration;

use meerkat_store::{ArchiveDefault, NewArchived, Store, StoreError};
use meerkat_wire::RouteKind;
use meerkat_xmpp::{ns, Element, Hints, StanzaKind, StanzaType};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::inbound::Inbound;
use crate::jids::{self, Addr};
use crate::metrics::ArchiveMetrics;
use crate::Ctx;

/// Whether `m` is archived (before the preferences): a one-to-one chat or normal message with
/// a body (or a `<store/>` hint), not forbidden by a hint, not a carbon copy or archive result.
pub fn archivable(m: &Element, ty: StanzaType) -> bool {
    if !matches!(ty, StanzaType::Chat | StanzaType::Normal) {
        return false;
    }
    let hints = Hints::of(m);
    if !hints.allows_archive() {
        return false;
    }
    let forwarded = m.children().any(|c| {
        (c.ns() == ns::CARBONS && matches!(c.name(), "sent" | "received" | "private"))
            || c.is("result", ns::MAM)
    });
    if forwarded {
        return false;
    }
    m.has_child("body", ns::CLIENT) || hints.store
}

/// XEP-0359 §5: a `<stanza-id/>` a client put in claiming to be by this domain or one of its
/// accounts is removed (only the server may say what its archives hold).
pub fn strip_claimed_ids(m: &mut Element, domain: &str) -> bool {
    let claims = |c: &Element| {
        c.is("stanza-id", ns::SID)
            && c.attr("by").is_some_and(|by| {
                let b = jids::bare(by);
                jids::split_bare(&b).1.eq_ignore_ascii_case(domain)
            })
    };
    if !m.children().any(claims) {
        return false;
    }
    m.remove_children(claims);
    true
}

/// The message as it must be routed, when archiving changed it (`None`: route it as it is).
/// Only a client's own message is considered: a bounce, or a stanza from another DC, was
/// archived where it was first routed. `key` names the routed envelope: a handling repeated
/// after the write (a retry, a redelivery) gets the ids written the first time and archives
/// nothing more, so a client never sees one message under two stanza ids.
pub async fn at_routing(
    ctx: &Ctx,
    inb: &Inbound,
    key: Option<&str>,
) -> anyhow::Result<Option<Inbound>> {
    if inb.kind != StanzaKind::Message || inb.wire_kind != RouteKind::Stanza {
        return Ok(None);
    }
    let domain = ctx.config.domain.as_str();
    let mut el = inb.el.clone();
    let stripped = strip_claimed_ids(&mut el, domain);
    let to = inb.el.attr("to").and_then(Addr::parse);
    let recipient = to
        .as_ref()
        .filter(|a| a.domain.eq_ignore_ascii_case(domain))
        .and_then(|a| a.node.clone().map(|n| (n, a)));
    let changed = |el: Element| Some(Inbound { el, ..inb.clone() });
    let (Some((rnode, raddr)), true) = (recipient, ctx.config.archive && archivable(&el, inb.ty))
    else {
        return Ok(if stripped { changed(el) } else { None });
    };
    let stanza = el.to_xml();
    let sender = inb.username().to_owned();
    let mut entries = vec![NewArchived {
        owner: rnode.clone(),
        with: inb.from.clone(),
        stanza: stanza.clone(),
        key: key.map(str::to_owned),
    }];
    if !sender.is_empty() && raddr.bare != inb.from_bare {
        entries.push(NewArchived {
            owner: sender,
            with: raddr.full(),
            stanza,
            key: key.map(str::to_owned),
        });
    }
    let ids = ctx.archiver.write(entries).await?;
    match ids.first().cloned().flatten() {
        Some(id) => {
            el.push_child(
                Element::new("stanza-id", ns::SID)
                    .with_attr("by", raddr.bare.clone())
                    .with_attr("id", id),
            );
            Ok(changed(el))
        }
        None => Ok(if stripped { changed(el) } else { None }),
    }
}

/// Most messages' archive writes put in one transaction.
pub const MAX_BATCH: usize = 64;

type Reply = oneshot::Sender<Result<Vec<Option<String>>, StoreError>>;

/// Writes the archive entries of every partition of this router, batching those that wait
/// together into one transaction (a write per message would hold the DC's clock row, which
/// every write transaction of the DC takes, for as many round trips as there are messages).
/// A caller waits for its own write: its message is delivered only once its ids are written.
#[derive(Clone)]
pub struct Archiver {
    tx: mpsc::Sender<(Vec<NewArchived>, Reply)>,
}

impl Archiver {
    /// Starts the writing task; it ends when the last `Archiver` is dropped.
    pub fn start(store: Store, default: ArchiveDefault, metrics: ArchiveMetrics) -> Archiver {
        let (tx, mut rx) = mpsc::channel::<(Vec<NewArchived>, Reply)>(1024);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                write_batch(&store, default, &metrics, batch).await;
            }
        });
        Archiver { tx }
    }

    /// Archives `entries` (in this order); each one's id, `None` where nothing was archived.
    pub async fn write(&self, entries: Vec<NewArchived>) -> anyhow::Result<Vec<Option<String>>> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((entries, reply))
            .await
            .map_err(|_| anyhow::anyhow!("the archive writer stopped"))?;
        Ok(answer
            .await
            .map_err(|_| anyhow::anyhow!("the archive writer stopped"))??)
    }
}

async fn write_batch(
    store: &Store,
    default: ArchiveDefault,
    metrics: &ArchiveMetrics,
    batch: Vec<(Vec<NewArchived>, Reply)>,
) {
    if batch.len() > 1 {
        let all: Vec<NewArchived> = batch.iter().flat_map(|(e, _)| e.iter().cloned()).collect();
        if let Ok(mut ids) = timed(store, default, metrics, &all).await {
            for (entries, reply) in batch {
                let rest = ids.split_off(entries.len());
                let _ = reply.send(Ok(std::mem::replace(&mut ids, rest)));
            }
            return;
        }
        // One failed them all: each on its own, so that each caller gets its own answer
        // (a message the database refuses fails alone).
    }
    for (entries, reply) in batch {
        let _ = reply.send(timed(store, default, metrics, &entries).await);
    }
}

/// One transaction of the writer, its size and time recorded.
async fn timed(
    store: &Store,
    default: ArchiveDefault,
    metrics: &ArchiveMetrics,
    entries: &[NewArchived],
) -> Result<Vec<Option<String>>, StoreError> {
    metrics.batch_entries.observe(entries.len() as f64);
    let started = std::time::Instant::now();
    let written = store.archive_messages(entries, default).await;
    metrics
        .write_seconds
        .observe(started.elapsed().as_secs_f64());
    written
}

/// Every hour, deletes this DC's archived messages older than `archive_retention_days` (none
/// when 0). Every DC does the same, so nothing is replicated.
pub async fn retention(ctx: std::sync::Arc<Ctx>, shutdown: CancellationToken) {
    let days = ctx.config.archive_retention_days;
    if days == 0 {
        return;
    }
    loop {
        let cutoff = chrono::Utc::now().timestamp_millis() - i64::from(days) * 86_400_000;
        match ctx.store.archive_purge(cutoff).await {
            Ok(n) if n > 0 => tracing::info!(deleted = n, days, "archive retention"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "archive retention failed; next hour"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn m(xml: &str) -> Element {
        Element::parse(xml).unwrap()
    }

    #[test]
    fn what_is_archived() {
        let chat = m("<message xmlns='jabber:client' type='chat'><body>hi</body></message>");
        assert!(archivable(&chat, StanzaType::Chat));
        assert!(!archivable(&chat, StanzaType::Headline));
        assert!(!archivable(&chat, StanzaType::Groupchat));
        let state = m("<message xmlns='jabber:client'><active xmlns='http://jabber.org/protocol/chatstates'/></message>");
        assert!(!archivable(&state, StanzaType::Normal));
        let stored = m("<message xmlns='jabber:client'><x xmlns='y'/><store xmlns='urn:xmpp:hints'/></message>");
        assert!(archivable(&stored, StanzaType::Normal));
        for hint in ["no-store", "no-permanent-store"] {
            let h = m(&format!("<message xmlns='jabber:client'><body>x</body><{hint} xmlns='urn:xmpp:hints'/></message>"));
            assert!(!archivable(&h, StanzaType::Chat), "{hint}");
        }
        let carbon =
            m("<message xmlns='jabber:client'><sent xmlns='urn:xmpp:carbons:2'/></message>");
        assert!(!archivable(&carbon, StanzaType::Chat));
    }

    #[test]
    fn claimed_ids_are_stripped() {
        let mut el = m("<message xmlns='jabber:client'><stanza-id xmlns='urn:xmpp:sid:0' by='bob@Example.com' id='x'/>\
             <stanza-id xmlns='urn:xmpp:sid:0' by='example.com' id='y'/>\
             <stanza-id xmlns='urn:xmpp:sid:0' by='room@muc.other.org' id='z'/></message>");
        assert!(strip_claimed_ids(&mut el, "example.com"));
        let left: Vec<_> = el.children().filter_map(|c| c.attr("id")).collect();
        assert_eq!(left, ["z"]);
        assert!(!strip_claimed_ids(&mut el, "example.com"));
    }
}
