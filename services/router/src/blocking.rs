//! Block lists (XEP-0191) as the router enforces them: the pure matching rule
//! ([`BlockList::blocks`]) and a per-router cache of the lists, so that routing a stanza
//! reads no database. The cache is kept true by the `meerkat_blocking` notification that
//! every change of the `blocked_jids` table sends at commit, whether the change was made at
//! this DC or applied from another (docs/decisions.md, "Every device, every DC"). While the
//! notification channel is down the cache is bypassed: every look-up reads the database.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use meerkat_store::{Store, StoreError};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::jids::Addr;
use crate::Ctx;

/// Lists kept at most; past it the cache starts again empty (a list costs one query to load).
const MAX_CACHED: usize = 100_000;

/// One account's blocked JIDs, normalised as [`Addr::full`] writes them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlockList {
    items: HashSet<String>,
}

impl BlockList {
    pub fn new(items: impl IntoIterator<Item = String>) -> BlockList {
        BlockList {
            items: items.into_iter().collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Whether the list blocks `jid` (XEP-0191 §3.2, XEP-0016 §2.1's JID matching): an item
    /// `user@domain/resource` blocks that resource only, `user@domain` every resource of the
    /// account, `domain/resource` that JID only, `domain` the domain and every JID at it.
    pub fn blocks(&self, jid: &Addr) -> bool {
        if self.items.is_empty() {
            return false;
        }
        let resource = jid.resource.as_deref();
        self.items.contains(&jid.domain)
            || self.items.contains(&jid.bare)
            || resource.is_some_and(|r| self.items.contains(&format!("{}/{r}", jid.bare)))
    }
}

/// The router's cache of block lists, by username.
#[derive(Debug, Default)]
pub struct Cache {
    lists: Mutex<HashMap<String, Arc<BlockList>>>,
    /// Grows on every invalidation: a list read before one is not kept.
    generation: AtomicU64,
    /// The notification channel is up: cached lists are kept and trusted.
    live: AtomicBool,
}

impl Cache {
    /// `username`'s list, from the cache or the database.
    pub async fn list(&self, store: &Store, username: &str) -> Result<Arc<BlockList>, StoreError> {
        let live = self.live.load(Ordering::Acquire);
        if live {
            if let Some(l) = self.lists.lock().get(username) {
                return Ok(l.clone());
            }
        }
        let generation = self.generation.load(Ordering::Acquire);
        let list = Arc::new(BlockList::new(store.block_list(username).await?));
        if live {
            let mut lists = self.lists.lock();
            if self.generation.load(Ordering::Acquire) == generation {
                if lists.len() >= MAX_CACHED {
                    lists.clear();
                }
                lists.insert(username.to_owned(), list.clone());
            }
        }
        Ok(list)
    }

    /// `username`'s list changed.
    pub fn invalidate(&self, username: &str) {
        let mut lists = self.lists.lock();
        self.generation.fetch_add(1, Ordering::AcqRel);
        lists.remove(username);
    }

    /// Forgets every list; `live`: whether to cache from now on.
    fn reset(&self, live: bool) {
        let mut lists = self.lists.lock();
        self.generation.fetch_add(1, Ordering::AcqRel);
        lists.clear();
        self.live.store(live, Ordering::Release);
    }
}

/// Follows the `meerkat_blocking` notifications until `shutdown`: each names an account whose
/// list changed. Notifications sent while the channel was down are lost, so the cache is
/// emptied and bypassed until the channel is back.
pub async fn listen(ctx: Arc<Ctx>, shutdown: CancellationToken) {
    let cache = &ctx.blocking;
    loop {
        let listener = async {
            // A connection of its own, not one of the pool's (which it would hold for good).
            let url = ctx.config.database.database_url.expose();
            let mut l = sqlx::postgres::PgListener::connect(url).await?;
            l.listen("meerkat_blocking").await?;
            Ok::<_, sqlx::Error>(l)
        };
        let mut listener = tokio::select! {
            _ = shutdown.cancelled() => return,
            l = listener => match l {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "block list notifications unavailable: cache off");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            },
        };
        cache.reset(true);
        loop {
            let n = tokio::select! {
                _ = shutdown.cancelled() => return,
                n = listener.try_recv() => n,
            };
            match n {
                Ok(Some(n)) => cache.invalidate(n.payload()),
                // The connection was lost (and with it what was sent meanwhile).
                Ok(None) | Err(_) => break,
            }
        }
        cache.reset(false);
        tracing::warn!("block list notifications lost: cache off until they are back");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Addr {
        Addr::parse(s).expect("jid")
    }

    fn list(items: &[&str]) -> BlockList {
        BlockList::new(items.iter().map(|i| a(i).full()))
    }

    #[test]
    fn bare_item_blocks_every_resource() {
        let l = list(&["Eve@Example.com"]);
        assert!(l.blocks(&a("eve@example.com")));
        assert!(l.blocks(&a("eve@example.com/phone")));
        assert!(!l.blocks(&a("bob@example.com/phone")));
        assert!(!l.blocks(&a("example.com")));
    }

    #[test]
    fn full_item_blocks_that_resource_only() {
        let l = list(&["eve@example.com/phone"]);
        assert!(l.blocks(&a("eve@example.com/phone")));
        assert!(!l.blocks(&a("eve@example.com/laptop")));
        assert!(!l.blocks(&a("eve@example.com")));
    }

    #[test]
    fn domain_item_blocks_everyone_there() {
        let l = list(&["evil.example"]);
        assert!(l.blocks(&a("evil.example")));
        assert!(l.blocks(&a("evil.example/res")));
        assert!(l.blocks(&a("eve@evil.example/phone")));
        assert!(!l.blocks(&a("eve@example.com")));
        assert!(!l.blocks(&a("evil.example.org")));
    }

    #[test]
    fn domain_resource_item_blocks_that_jid_only() {
        let l = list(&["evil.example/bot"]);
        assert!(l.blocks(&a("evil.example/bot")));
        assert!(!l.blocks(&a("eve@evil.example/bot")));
        assert!(!l.blocks(&a("eve@evil.example/phone")));
        assert!(!l.blocks(&a("evil.example")));
    }

    #[test]
    fn empty_list_blocks_nothing() {
        assert!(!BlockList::default().blocks(&a("eve@example.com/x")));
    }

    #[test]
    fn invalidation_drops_the_list_and_reset_turns_caching_off() {
        let c = Cache::default();
        c.reset(true);
        c.lists
            .lock()
            .insert("alice".into(), Arc::new(list(&["eve@example.com"])));
        c.invalidate("alice");
        assert!(c.lists.lock().is_empty());
        c.lists.lock().insert("bob".into(), Arc::default());
        c.reset(false);
        assert!(c.lists.lock().is_empty());
        assert!(!c.live.load(Ordering::Acquire));
    }
}
