//! The local side: turns this DC's session events into one sequenced stream (epoch, seq) and
//! keeps the live local sessions, which is what a snapshot serves. Pure state; the caller
//! publishes.

use std::collections::{HashMap, HashSet, VecDeque};

use meerkat_wire::{
    InterControl, ReplicatedEvent, SessionEvent, SessionEventKind, SessionInfo, WIRE_VERSION,
};
use uuid::Uuid;

/// Closed session ids remembered, so a late announce cannot bring one back into the view.
const CLOSED_MEMORY: usize = 65_536;

pub struct Sequencer {
    dc: String,
    epoch: String,
    /// Last seq handed out (0 = none yet; the first event gets 1).
    seq: u64,
    live: HashMap<Uuid, SessionInfo>,
    closed: HashSet<Uuid>,
    closed_order: VecDeque<Uuid>,
}

impl Sequencer {
    pub fn new(dc: &str, epoch: &str) -> Sequencer {
        Sequencer {
            dc: dc.to_owned(),
            epoch: epoch.to_owned(),
            seq: 0,
            live: HashMap::new(),
            closed: HashSet::new(),
            closed_order: VecDeque::new(),
        }
    }

    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    pub fn live_sessions(&self) -> usize {
        self.live.len()
    }

    /// Whether the account `bare` (normalised, `meerkat_xmpp::addr::bare`) has an available session here.
    pub fn is_available(&self, bare: &str) -> bool {
        self.live
            .values()
            .any(|s| s.available && bare_part(&s.jid) == bare)
    }

    /// Whether the account `bare` (normalised, `meerkat_xmpp::addr::bare`) has any session here.
    pub fn has_session(&self, bare: &str) -> bool {
        self.live.values().any(|s| bare_part(&s.jid) == bare)
    }

    /// The next event of the stream, and the view updated by it. Every event from a local
    /// gateway gets a seq (receivers' directories sort out stale versions); an event of a
    /// session of another DC is not ours to replicate (`None`).
    pub fn sequence(&mut self, event: SessionEvent) -> Option<ReplicatedEvent> {
        if event.session.dc != self.dc {
            return None;
        }
        self.apply(&event);
        self.seq += 1;
        Some(ReplicatedEvent {
            v: WIRE_VERSION,
            origin_dc: self.dc.clone(),
            epoch: self.epoch.clone(),
            seq: self.seq,
            event,
        })
    }

    fn apply(&mut self, event: &SessionEvent) {
        let info = &event.session;
        let id = info.session_id;
        match event.kind {
            SessionEventKind::Close => {
                if self.live.get(&id).is_none_or(|e| info.version >= e.version) {
                    self.live.remove(&id);
                    self.remember_closed(id);
                }
            }
            // Only sessions of a DC declared down are purged, never this DC's own.
            SessionEventKind::Purge => {}
            SessionEventKind::Open | SessionEventKind::Update | SessionEventKind::Announce => {
                if self.closed.contains(&id) {
                    return;
                }
                match self.live.get(&id) {
                    Some(e) if e.version > info.version => {}
                    _ => {
                        self.live.insert(id, info.clone());
                    }
                }
            }
        }
    }

    fn remember_closed(&mut self, id: Uuid) {
        if self.closed.insert(id) {
            self.closed_order.push_back(id);
            if self.closed_order.len() > CLOSED_MEMORY {
                if let Some(old) = self.closed_order.pop_front() {
                    self.closed.remove(&old);
                }
            }
        }
    }

    /// Every live local session as of the last seq handed out: events after it follow on
    /// the stream.
    pub fn snapshot(&self) -> InterControl {
        let mut sessions: Vec<SessionInfo> = self.live.values().cloned().collect();
        sessions.sort_by_key(|s| s.session_id);
        InterControl::Snapshot {
            origin_dc: self.dc.clone(),
            epoch: self.epoch.clone(),
            seq: self.seq,
            sessions,
        }
    }
}

/// The bare part of a session's JID. A session's JID is normalised once, by its gateway at bind
/// (`meerkat_xmpp::FullJid`), so its bare part is already what `meerkat_xmpp::addr::bare` gives:
/// comparing it needs no second parse per session and look-up.
fn bare_part(jid: &str) -> &str {
    jid.split('/').next().unwrap_or(jid)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn info(dc: &str, n: u128, version: u64) -> SessionInfo {
        SessionInfo {
            jid: format!("u{n}@example.com/r"),
            session_id: Uuid::from_u128(n),
            version,
            dc: dc.into(),
            gateway: format!("{dc}-gw"),
            available: true,
            priority: 0,
            presence: None,
            interested: false,
            carbons: false,
            blocklist: false,
        }
    }

    pub fn event(kind: SessionEventKind, session: SessionInfo) -> SessionEvent {
        SessionEvent {
            v: WIRE_VERSION,
            kind,
            epoch: "gw-epoch".into(),
            session,
        }
    }

    fn snapshot_ids(s: &Sequencer) -> (u64, Vec<u128>) {
        match s.snapshot() {
            InterControl::Snapshot { seq, sessions, .. } => (
                seq,
                sessions.iter().map(|s| s.session_id.as_u128()).collect(),
            ),
            other => panic!("not a snapshot: {other:?}"),
        }
    }

    #[test]
    fn local_events_get_consecutive_seqs_in_the_epoch() {
        let mut s = Sequencer::new("dc1", "E1");
        let a = s.sequence(event(SessionEventKind::Open, info("dc1", 1, 1)));
        let b = s.sequence(event(SessionEventKind::Update, info("dc1", 1, 2)));
        let a = a.expect("sequenced");
        let b = b.expect("sequenced");
        assert_eq!((a.seq, b.seq), (1, 2));
        assert_eq!(a.epoch, "E1");
        assert_eq!(a.origin_dc, "dc1");
        assert_eq!(b.event.session.version, 2);
    }

    #[test]
    fn remote_sessions_are_not_sequenced() {
        let mut s = Sequencer::new("dc1", "E1");
        assert!(s
            .sequence(event(SessionEventKind::Open, info("dc2", 1, 1)))
            .is_none());
        let first = s.sequence(event(SessionEventKind::Open, info("dc1", 2, 1)));
        assert_eq!(first.map(|e| e.seq), Some(1));
        assert_eq!(snapshot_ids(&s), (1, vec![2]));
    }

    #[test]
    fn snapshot_holds_live_sessions_as_of_the_last_seq() {
        let mut s = Sequencer::new("dc1", "E1");
        s.sequence(event(SessionEventKind::Open, info("dc1", 1, 1)));
        s.sequence(event(SessionEventKind::Open, info("dc1", 2, 1)));
        s.sequence(event(SessionEventKind::Close, info("dc1", 1, 2)));
        // A late announce of a closed session does not bring it back.
        s.sequence(event(SessionEventKind::Announce, info("dc1", 1, 1)));
        // A stale update does not overwrite a newer one.
        s.sequence(event(SessionEventKind::Update, info("dc1", 2, 3)));
        s.sequence(event(SessionEventKind::Update, info("dc1", 2, 2)));
        assert_eq!(snapshot_ids(&s), (6, vec![2]));
        match s.snapshot() {
            InterControl::Snapshot { sessions, .. } => assert_eq!(sessions[0].version, 3),
            other => panic!("{other:?}"),
        }
    }
}
