//! The sessions this gateway instance holds, by session id and by full JID, and the channel
//! into each session's task.

use std::collections::HashMap;

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
}

/// The channel into a session's task. Boxed: a channel allocates its slots in blocks of 32,
/// and every idle session keeps its first block.
pub type Mailbox = mpsc::Sender<Box<Outbound>>;

#[derive(Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<Uuid, (String, Mailbox)>,
    by_jid: HashMap<String, Uuid>,
}

impl Registry {
    /// Adds a session; returns the channel of a session this one replaces (same full JID).
    pub fn insert(&self, id: Uuid, jid: &str, tx: Mailbox) -> Option<Mailbox> {
        let mut inner = self.inner.lock();
        let replaced = inner
            .by_jid
            .insert(jid.to_owned(), id)
            .and_then(|old| inner.by_id.remove(&old))
            .map(|(_, tx)| tx);
        inner.by_id.insert(id, (jid.to_owned(), tx));
        replaced
    }

    pub fn remove(&self, id: Uuid) {
        let mut inner = self.inner.lock();
        if let Some((jid, _)) = inner.by_id.remove(&id) {
            if inner.by_jid.get(&jid) == Some(&id) {
                inner.by_jid.remove(&jid);
            }
        }
    }

    pub fn get(&self, id: Uuid) -> Option<Mailbox> {
        self.inner.lock().by_id.get(&id).map(|(_, tx)| tx.clone())
    }

    /// The session bound to a full JID now.
    pub fn get_by_jid(&self, jid: &str) -> Option<Mailbox> {
        let inner = self.inner.lock();
        let id = inner.by_jid.get(jid)?;
        inner.by_id.get(id).map(|(_, tx)| tx.clone())
    }

    pub fn all(&self) -> Vec<Mailbox> {
        self.inner
            .lock()
            .by_id
            .values()
            .map(|(_, tx)| tx.clone())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.inner.lock().by_id.len()
    }
}
