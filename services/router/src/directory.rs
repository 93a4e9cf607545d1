//! The in-memory session directory: every live session of the DC, rebuilt from the gateways'
//! session events, so routing a stanza needs no database round trip.
//!
//! Versioning rules (docs/protocol.md): per full JID the entry with the largest session id
//! (UUIDv7, time ordered) wins; for one session the largest version wins; a close removes the
//! entry only if its session id matches and its version is >= the entry's. Closed session ids
//! are remembered for a while so a late open or update cannot bring a session back.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use meerkat_wire::{SessionEvent, SessionEventKind, SessionInfo};
use uuid::Uuid;

use crate::jids;

/// How long a closed session id is remembered.
const CLOSED_TTL: Duration = Duration::from_secs(600);
/// At most this many closed ids are remembered (oldest forgotten first).
const CLOSED_MAX: usize = 200_000;

/// What applying an event did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Stale, duplicate or for a closed session: nothing changed.
    Ignored,
    Added,
    Updated,
    Removed,
    /// A newer session took the full JID; the old one must be told to go (conflict).
    Replaced(SessionInfo),
    /// The event is of a session older than the one holding its full JID, seen here for the
    /// first time (events of two DCs arrive in any order): it lost, and must be told to go.
    Lost(SessionInfo),
}

#[derive(Default)]
pub struct Directory {
    /// Full JID (bare part lowercased) -> the winning session.
    sessions: HashMap<String, SessionInfo>,
    /// Bare JID -> its full JIDs in `sessions`.
    by_bare: HashMap<String, BTreeSet<String>>,
    /// Session id -> full JID key, for bounces that name only the session.
    by_id: HashMap<Uuid, String>,
    closed: HashSet<Uuid>,
    closed_order: VecDeque<(Instant, Uuid)>,
}

impl Directory {
    pub fn new() -> Directory {
        Directory::default()
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    pub fn apply(&mut self, event: &SessionEvent) -> Applied {
        let info = &event.session;
        match event.kind {
            SessionEventKind::Open | SessionEventKind::Update | SessionEventKind::Announce => {
                self.upsert(info)
            }
            SessionEventKind::Close => self.close(info),
            SessionEventKind::Purge => self.purge(info),
        }
    }

    /// Removes the session (any version) without remembering it as closed.
    fn purge(&mut self, info: &SessionInfo) -> Applied {
        let key = jids::full(&info.jid);
        match self.sessions.get(&key) {
            Some(e) if e.session_id == info.session_id => {
                self.remove_key(&key);
                Applied::Removed
            }
            _ => Applied::Ignored,
        }
    }

    fn upsert(&mut self, info: &SessionInfo) -> Applied {
        if self.closed.contains(&info.session_id) {
            return Applied::Ignored;
        }
        let key = jids::full(&info.jid);
        match self.sessions.get(&key) {
            None => {
                self.insert(key, info.clone());
                Applied::Added
            }
            Some(e) if e.session_id == info.session_id => {
                if info.version > e.version {
                    self.insert(key, info.clone());
                    Applied::Updated
                } else {
                    Applied::Ignored
                }
            }
            Some(e) if e.session_id < info.session_id => {
                let old = e.clone();
                self.by_id.remove(&old.session_id);
                self.remember_closed(old.session_id);
                self.insert(key, info.clone());
                Applied::Replaced(old)
            }
            Some(_) => {
                self.remember_closed(info.session_id);
                Applied::Lost(info.clone())
            }
        }
    }

    fn close(&mut self, info: &SessionInfo) -> Applied {
        let key = jids::full(&info.jid);
        match self.sessions.get(&key) {
            Some(e) if e.session_id == info.session_id => {
                if info.version >= e.version {
                    self.remove_key(&key);
                    self.remember_closed(info.session_id);
                    Applied::Removed
                } else {
                    Applied::Ignored
                }
            }
            // Not (or no longer) the winner for that JID: remember it so it can't come back.
            _ => {
                self.remember_closed(info.session_id);
                Applied::Ignored
            }
        }
    }

    /// Forgets a session a gateway reported gone (bounce). True if it was there.
    pub fn remove_session(&mut self, id: Uuid) -> bool {
        self.remember_closed(id);
        match self.by_id.get(&id).cloned() {
            Some(key) => {
                self.remove_key(&key);
                true
            }
            None => false,
        }
    }

    /// The session bound to a full JID.
    pub fn session(&self, full_jid: &str) -> Option<&SessionInfo> {
        self.sessions.get(&jids::full(full_jid))
    }

    /// The session with that id, if it holds its full JID.
    pub fn by_session(&self, id: Uuid) -> Option<&SessionInfo> {
        self.by_id.get(&id).and_then(|k| self.sessions.get(k))
    }

    /// Every live session, local and remote, in no particular order.
    pub fn all(&self) -> impl Iterator<Item = &SessionInfo> {
        self.sessions.values()
    }

    /// Every session of an account (available or not), in resource order.
    pub fn resources(&self, bare: &str) -> Vec<&SessionInfo> {
        self.by_bare
            .get(&jids::bare(bare))
            .map(|set| set.iter().filter_map(|k| self.sessions.get(k)).collect())
            .unwrap_or_default()
    }

    /// The available sessions of an account.
    pub fn available(&self, bare: &str) -> Vec<&SessionInfo> {
        let mut v = self.resources(bare);
        v.retain(|s| s.available);
        v
    }

    /// Whether the directory has seen `version` (or later) of session `id`, or its end.
    pub fn has_seen(&self, id: Uuid, version: u64) -> bool {
        if self.closed.contains(&id) {
            return true;
        }
        self.by_id
            .get(&id)
            .and_then(|k| self.sessions.get(k))
            .is_some_and(|s| s.version >= version)
    }

    fn insert(&mut self, key: String, info: SessionInfo) {
        self.by_id.insert(info.session_id, key.clone());
        self.by_bare
            .entry(jids::bare(&key))
            .or_default()
            .insert(key.clone());
        self.sessions.insert(key, info);
    }

    fn remove_key(&mut self, key: &str) {
        if let Some(old) = self.sessions.remove(key) {
            self.by_id.remove(&old.session_id);
        }
        let bare = jids::bare(key);
        if let Some(set) = self.by_bare.get_mut(&bare) {
            set.remove(key);
            if set.is_empty() {
                self.by_bare.remove(&bare);
            }
        }
    }

    fn remember_closed(&mut self, id: Uuid) {
        let now = Instant::now();
        while let Some((at, old)) = self.closed_order.front().copied() {
            if now.duration_since(at) > CLOSED_TTL || self.closed_order.len() >= CLOSED_MAX {
                self.closed_order.pop_front();
                self.closed.remove(&old);
            } else {
                break;
            }
        }
        if self.closed.insert(id) {
            self.closed_order.push_back((now, id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(jid: &str, id: Uuid, version: u64, available: bool) -> SessionInfo {
        SessionInfo {
            jid: jid.into(),
            session_id: id,
            version,
            dc: "dc1".into(),
            gateway: "gw1".into(),
            available,
            priority: 0,
            presence: None,
            interested: false,
            carbons: false,
            blocklist: false,
        }
    }

    fn ev(kind: SessionEventKind, s: SessionInfo) -> SessionEvent {
        SessionEvent {
            v: 1,
            kind,
            epoch: "e".into(),
            session: s,
        }
    }

    use SessionEventKind::{Announce, Close, Open, Purge, Update};

    #[test]
    fn a_purged_session_can_come_back() {
        let mut d = Directory::new();
        let id = Uuid::now_v7();
        d.apply(&ev(Open, info("a@x/r", id, 2, true)));
        // Another session's purge removes nothing.
        assert_eq!(
            d.apply(&ev(Purge, info("a@x/r", Uuid::now_v7(), 9, false))),
            Applied::Ignored
        );
        assert_eq!(
            d.apply(&ev(Purge, info("a@x/r", id, 2, true))),
            Applied::Removed
        );
        assert!(d.is_empty());
        assert!(!d.has_seen(id, 1));
        // The DC's snapshot after a healed partition announces it again.
        assert_eq!(
            d.apply(&ev(Announce, info("a@x/r", id, 2, true))),
            Applied::Added
        );
        assert_eq!(d.available("a@x").len(), 1);
    }

    #[test]
    fn open_update_close() {
        let mut d = Directory::new();
        let id = Uuid::now_v7();
        assert_eq!(
            d.apply(&ev(Open, info("a@x/r", id, 1, false))),
            Applied::Added
        );
        assert_eq!(
            d.apply(&ev(Update, info("a@x/r", id, 2, true))),
            Applied::Updated
        );
        assert_eq!(d.available("a@x").len(), 1);
        assert!(d.has_seen(id, 2));
        assert!(!d.has_seen(id, 3));
        assert_eq!(
            d.apply(&ev(Close, info("a@x/r", id, 3, false))),
            Applied::Removed
        );
        assert!(d.is_empty());
        assert!(d.resources("a@x").is_empty());
        assert!(d.has_seen(id, 99));
    }

    #[test]
    fn stale_versions_never_overwrite() {
        let mut d = Directory::new();
        let id = Uuid::now_v7();
        d.apply(&ev(Open, info("a@x/r", id, 1, false)));
        d.apply(&ev(Update, info("a@x/r", id, 3, true)));
        assert_eq!(
            d.apply(&ev(Update, info("a@x/r", id, 2, false))),
            Applied::Ignored
        );
        assert_eq!(
            d.apply(&ev(Announce, info("a@x/r", id, 3, false))),
            Applied::Ignored
        );
        assert!(d
            .session("a@x/r")
            .is_some_and(|s| s.available && s.version == 3));
        // A close for an older version of the same session does not remove it.
        assert_eq!(
            d.apply(&ev(Close, info("a@x/r", id, 2, false))),
            Applied::Ignored
        );
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn newer_session_replaces_and_older_is_ignored() {
        let mut d = Directory::new();
        let old = Uuid::now_v7();
        let new = Uuid::now_v7();
        assert!(old < new);
        d.apply(&ev(Open, info("a@x/r", old, 5, true)));
        match d.apply(&ev(Open, info("a@x/r", new, 1, false))) {
            Applied::Replaced(s) => assert_eq!(s.session_id, old),
            other => panic!("expected replaced, got {other:?}"),
        }
        // The old session's late update or close cannot touch the new entry.
        assert_eq!(
            d.apply(&ev(Update, info("a@x/r", old, 9, true))),
            Applied::Ignored
        );
        assert_eq!(
            d.apply(&ev(Close, info("a@x/r", old, 9, false))),
            Applied::Ignored
        );
        assert_eq!(d.session("a@x/r").map(|s| s.session_id), Some(new));
        // An open older than the entry lost (it must be kicked), once.
        let mut d = Directory::new();
        d.apply(&ev(Open, info("a@x/r", new, 1, false)));
        assert!(matches!(
            d.apply(&ev(Open, info("a@x/r", old, 1, false))),
            Applied::Lost(s) if s.session_id == old
        ));
        assert_eq!(
            d.apply(&ev(Update, info("a@x/r", old, 2, true))),
            Applied::Ignored
        );
        assert_eq!(d.by_session(new).map(|s| s.version), Some(1));
        assert!(d.by_session(old).is_none());
    }

    #[test]
    fn closed_sessions_are_not_resurrected() {
        let mut d = Directory::new();
        let id = Uuid::now_v7();
        d.apply(&ev(Open, info("a@x/r", id, 1, false)));
        d.apply(&ev(Close, info("a@x/r", id, 2, false)));
        assert_eq!(
            d.apply(&ev(Update, info("a@x/r", id, 5, true))),
            Applied::Ignored
        );
        // A close that arrives before its open also wins.
        let late = Uuid::now_v7();
        d.apply(&ev(Close, info("a@x/s", late, 2, false)));
        assert_eq!(
            d.apply(&ev(Open, info("a@x/s", late, 1, false))),
            Applied::Ignored
        );
        assert!(d.is_empty());
    }

    #[test]
    fn bounce_removes_by_session_id() {
        let mut d = Directory::new();
        let id = Uuid::now_v7();
        d.apply(&ev(Open, info("A@X/r", id, 1, true)));
        assert!(d.session("a@x/r").is_some());
        assert!(d.remove_session(id));
        assert!(d.is_empty());
        assert_eq!(
            d.apply(&ev(Update, info("a@x/r", id, 2, true))),
            Applied::Ignored
        );
    }

    #[test]
    fn resources_of_one_account() {
        let mut d = Directory::new();
        d.apply(&ev(Open, info("a@x/one", Uuid::now_v7(), 1, true)));
        d.apply(&ev(Open, info("a@x/two", Uuid::now_v7(), 1, false)));
        d.apply(&ev(Open, info("b@x/one", Uuid::now_v7(), 1, true)));
        assert_eq!(d.resources("a@x").len(), 2);
        assert_eq!(d.available("A@X").len(), 1);
    }
}
