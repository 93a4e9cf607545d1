//! The sessions this gateway instance holds, by session id and by full JID (sorted, so an
//! account's sessions are one range), and the channel into each session's task.

use std::collections::{BTreeMap, HashMap};

use parking_lot::Mutex;
use tokio::sync::mpsc;
use uuid::Uuid;

/// What other parts of the gateway ask of a session task.
#[derive(Debug)]
pub enum Outbound {
    /// A stanza (XML) to write to the client.
    Stanza(String),
    /// Another login took this full JID: end with `<conflict/>`.
    Conflict,
    /// Publish the session's state again (a router asked for a resync).
    Announce,
    /// End the stream with this error (the account was removed or its password changed).
    End(meerkat_xmpp::StreamError),
}

/// The channel into a session's task. Boxed: a channel allocates its slots in blocks of 32,
/// and every idle session keeps its first block.
pub type Mailbox = mpsc::Sender<Box<Outbound>>;

#[derive(Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

/// One session: its full JID, the fingerprint of the credentials it authenticated with
/// (`crate::accounts`), its channel.
struct Entry {
    jid: String,
    credentials: u64,
    tx: Mailbox,
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<Uuid, Entry>,
    by_jid: BTreeMap<String, Uuid>,
}

impl Registry {
    /// Adds a session; returns the channel of a session this one replaces (same full JID).
    pub fn insert(&self, id: Uuid, jid: &str, credentials: u64, tx: Mailbox) -> Option<Mailbox> {
        let mut inner = self.inner.lock();
        let replaced = inner
            .by_jid
            .insert(jid.to_owned(), id)
            .and_then(|old| inner.by_id.remove(&old))
            .map(|e| e.tx);
        inner.by_id.insert(
            id,
            Entry {
                jid: jid.to_owned(),
                credentials,
                tx,
            },
        );
        replaced
    }

    pub fn remove(&self, id: Uuid) {
        let mut inner = self.inner.lock();
        if let Some(e) = inner.by_id.remove(&id) {
            if inner.by_jid.get(&e.jid) == Some(&id) {
                inner.by_jid.remove(&e.jid);
            }
        }
    }

    pub fn get(&self, id: Uuid) -> Option<Mailbox> {
        self.inner.lock().by_id.get(&id).map(|e| e.tx.clone())
    }

    /// The session bound to a full JID now.
    pub fn get_by_jid(&self, jid: &str) -> Option<Mailbox> {
        let inner = self.inner.lock();
        let id = inner.by_jid.get(jid)?;
        inner.by_id.get(id).map(|e| e.tx.clone())
    }

    pub fn all(&self) -> Vec<Mailbox> {
        self.inner
            .lock()
            .by_id
            .values()
            .map(|e| e.tx.clone())
            .collect()
    }

    /// The sessions of account `bare` (a normalised bare JID): fingerprint and channel.
    pub fn of_account(&self, bare: &str) -> Vec<(u64, Mailbox)> {
        let inner = self.inner.lock();
        let prefix = format!("{bare}/");
        inner
            .by_jid
            .range(prefix.clone()..)
            .take_while(|(jid, _)| jid.starts_with(&prefix))
            .filter_map(|(_, id)| inner.by_id.get(id))
            .map(|e| (e.credentials, e.tx.clone()))
            .collect()
    }

    /// How many sessions account `bare` has here, not counting `full` (a bind of a full JID
    /// already bound replaces that session rather than adding one).
    pub fn count_account(&self, bare: &str, full: &str) -> usize {
        let inner = self.inner.lock();
        let prefix = format!("{bare}/");
        inner
            .by_jid
            .range(prefix.clone()..)
            .take_while(|(jid, _)| jid.starts_with(&prefix))
            .filter(|(jid, _)| jid.as_str() != full)
            .count()
    }

    /// The session changed its own account's password: its credentials are the new ones.
    pub fn set_credentials(&self, id: Uuid, credentials: u64) {
        if let Some(e) = self.inner.lock().by_id.get_mut(&id) {
            e.credentials = credentials;
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().by_id.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_is_one_range() {
        let r = Registry::default();
        let (tx, _rx) = mpsc::channel(1);
        let ids: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
        r.insert(ids[0], "al@example.com/a", 1, tx.clone());
        r.insert(ids[1], "al@example.com/b", 2, tx.clone());
        r.insert(ids[2], "alice@example.com/a", 3, tx.clone());
        r.insert(ids[3], "al@example.co/a", 4, tx.clone());
        r.insert(ids[4], "ak@example.com/z", 5, tx.clone());
        let fps: Vec<u64> = r.of_account("al@example.com").iter().map(|s| s.0).collect();
        assert_eq!(fps, vec![1, 2]);
        assert_eq!(r.count_account("al@example.com", "al@example.com/c"), 2);
        assert_eq!(r.count_account("al@example.com", "al@example.com/a"), 1);
        r.set_credentials(ids[1], 9);
        let fps: Vec<u64> = r.of_account("al@example.com").iter().map(|s| s.0).collect();
        assert_eq!(fps, vec![1, 9]);
        r.remove(ids[0]);
        assert_eq!(r.count_account("al@example.com", ""), 1);
        assert!(r.of_account("nobody@example.com").is_empty());
    }
}
