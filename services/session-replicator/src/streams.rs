//! The remote side: per origin DC, where its sequenced stream stands (epoch, last seq), and the
//! sessions of that DC this DC knows. Decides what to apply locally and when to ask for a
//! snapshot (a gap, an unknown epoch, a start). Pure state; the caller publishes the actions.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use meerkat_wire::{ReplicatedEvent, SessionEvent, SessionEventKind, SessionInfo, WIRE_VERSION};
use uuid::Uuid;

/// Events of an origin buffered while its snapshot is awaited; beyond this, later ones are
/// dropped and a new snapshot request covers them.
const BUFFER_LIMIT: usize = 10_000;

/// What the caller must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Publish this event to the local `meerkat.sessions`.
    Apply(SessionEvent),
    /// Send a `SnapshotRequest` to this DC.
    RequestSnapshot(String),
    /// Tell this DC's sessions that this session (of a DC declared down) is unavailable.
    Unavailable(SessionInfo),
    /// Tell this DC's sessions the presence of this session (of a DC back up after it was
    /// declared down: its contacts here were told it was gone).
    Available(SessionInfo),
}

/// Why an event or snapshot was not applied (for logs and metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Duplicate,
    /// From an epoch older than the one known.
    Stale,
    /// A gap or a new epoch: a snapshot was requested.
    Gap,
    /// Held until the awaited snapshot arrives.
    Buffered,
    /// From a DC that is not a configured peer.
    UnknownDc,
}

#[derive(Default)]
struct Stream {
    epoch: Option<String>,
    last_seq: u64,
    /// Since when a snapshot is awaited (the stream is on hold meanwhile).
    awaiting: Option<Instant>,
    buffer: Vec<ReplicatedEvent>,
    sessions: HashMap<Uuid, SessionInfo>,
    /// Declared down by the DC's health service: its sessions are purged here and no snapshot
    /// is asked for until it is up again.
    down: bool,
    /// Up again after being down: the next snapshot's available sessions are announced to
    /// this DC's contacts.
    returning: bool,
    /// Since this start, a snapshot of it was applied or it was declared down: this DC's view
    /// of it is known (readiness, see [`Streams::unsettled`]).
    settled: bool,
}

pub struct Streams {
    streams: HashMap<String, Stream>,
    retry_after: Duration,
}

impl Streams {
    /// Every peer starts on hold, awaiting the snapshot asked for at start.
    pub fn new<'a>(peers: impl IntoIterator<Item = &'a str>, now: Instant) -> Streams {
        let streams = peers
            .into_iter()
            .map(|dc| {
                let s = Stream {
                    awaiting: Some(now),
                    ..Stream::default()
                };
                (dc.to_owned(), s)
            })
            .collect();
        Streams {
            streams,
            retry_after: Duration::from_secs(3),
        }
    }

    /// How long an unanswered snapshot request waits before it is sent again.
    pub fn with_retry_after(mut self, d: Duration) -> Streams {
        self.retry_after = d;
        self
    }

    pub fn peers(&self) -> impl Iterator<Item = &str> {
        self.streams.keys().map(String::as_str)
    }

    /// Remote sessions known of `dc`.
    pub fn known(&self, dc: &str) -> usize {
        self.streams.get(dc).map_or(0, |s| s.sessions.len())
    }

    /// Every remote session known, as announcements (answer to a local resync).
    pub fn announcements(&self) -> Vec<SessionEvent> {
        let mut out: Vec<SessionEvent> = self
            .streams
            .values()
            .flat_map(|s| {
                let epoch = s.epoch.clone().unwrap_or_default();
                s.sessions
                    .values()
                    .map(move |i| announce(&epoch, i.clone()))
            })
            .collect();
        out.sort_by_key(|e| e.session.session_id);
        out
    }

    /// One event of `ev.origin_dc`'s stream (origin already checked).
    pub fn on_event(&mut self, ev: ReplicatedEvent, now: Instant) -> (Outcome, Vec<Action>) {
        let retry_after = self.retry_after;
        let Some(s) = self.streams.get_mut(&ev.origin_dc) else {
            return (Outcome::UnknownDc, Vec::new());
        };
        let origin = ev.origin_dc.clone();
        if let Some(since) = s.awaiting {
            if s.buffer.len() < BUFFER_LIMIT {
                s.buffer.push(ev);
            }
            let mut actions = Vec::new();
            if !s.down && now.duration_since(since) >= retry_after {
                s.awaiting = Some(now);
                actions.push(Action::RequestSnapshot(origin));
            }
            return (Outcome::Buffered, actions);
        }
        match s.epoch.as_deref() {
            Some(e) if e == ev.epoch => {
                if ev.seq <= s.last_seq {
                    (Outcome::Duplicate, Vec::new())
                } else if ev.seq == s.last_seq + 1 {
                    s.last_seq = ev.seq;
                    (Outcome::Applied, vec![Action::Apply(s.track(ev.event))])
                } else {
                    s.hold(ev, now);
                    (Outcome::Gap, vec![Action::RequestSnapshot(origin)])
                }
            }
            // Epochs are UUIDv7 strings: a smaller one is from an earlier life.
            Some(e) if ev.epoch.as_str() < e => (Outcome::Stale, Vec::new()),
            _ => {
                s.hold(ev, now);
                (Outcome::Gap, vec![Action::RequestSnapshot(origin)])
            }
        }
    }

    /// A snapshot of `origin` (origin already checked): announce what it holds, close what it
    /// no longer holds, then resume the stream after its seq with what was buffered.
    pub fn on_snapshot(
        &mut self,
        origin: &str,
        epoch: &str,
        seq: u64,
        sessions: Vec<SessionInfo>,
        now: Instant,
    ) -> (Outcome, Vec<Action>) {
        let Some(s) = self.streams.get_mut(origin) else {
            return (Outcome::UnknownDc, Vec::new());
        };
        // An answer that was on its way when the DC was declared down: the one asked for once
        // it is up again replaces it.
        if s.down {
            return (Outcome::Buffered, Vec::new());
        }
        let older = match s.epoch.as_deref() {
            Some(e) => epoch < e || (epoch == e && seq < s.last_seq),
            None => false,
        };
        // A stale snapshot (answer to an earlier request): keep waiting for the newer one.
        if older || (s.awaiting.is_none() && s.epoch.as_deref() == Some(epoch) && seq == s.last_seq)
        {
            return (Outcome::Stale, Vec::new());
        }
        let mut actions = Vec::new();
        let fresh: HashMap<Uuid, SessionInfo> =
            sessions.into_iter().map(|i| (i.session_id, i)).collect();
        let mut gone: Vec<&SessionInfo> = s
            .sessions
            .values()
            .filter(|old| !fresh.contains_key(&old.session_id))
            .collect();
        gone.sort_by_key(|i| i.session_id);
        for old in gone {
            let mut closed = old.clone();
            closed.version += 1;
            actions.push(Action::Apply(SessionEvent {
                v: WIRE_VERSION,
                kind: SessionEventKind::Close,
                epoch: epoch.to_owned(),
                session: closed,
            }));
        }
        let mut announced: Vec<&SessionInfo> = fresh.values().collect();
        announced.sort_by_key(|i| i.session_id);
        actions.extend(
            announced
                .iter()
                .map(|i| Action::Apply(announce(epoch, (*i).clone()))),
        );
        if std::mem::take(&mut s.returning) {
            actions.extend(
                announced
                    .iter()
                    .filter(|i| i.available)
                    .map(|i| Action::Available((*i).clone())),
            );
        }
        s.sessions = fresh;
        s.epoch = Some(epoch.to_owned());
        s.last_seq = seq;
        s.awaiting = None;
        s.settled = true;
        let mut buffered = std::mem::take(&mut s.buffer);
        buffered.sort_by_key(|e| e.seq);
        for ev in buffered {
            if s.awaiting.is_some() {
                s.buffer.push(ev);
                continue;
            }
            if ev.epoch.as_str() < epoch || (ev.epoch == epoch && ev.seq <= s.last_seq) {
                continue;
            }
            if ev.epoch == epoch && ev.seq == s.last_seq + 1 {
                s.last_seq = ev.seq;
                actions.push(Action::Apply(s.track(ev.event)));
            } else {
                s.hold(ev, now);
                actions.push(Action::RequestSnapshot(origin.to_owned()));
            }
        }
        (Outcome::Applied, actions)
    }

    /// Puts `dc`'s stream on hold (an event could not be applied). True if it was not on
    /// hold yet, i.e. a snapshot must be requested now.
    pub fn invalidate(&mut self, dc: &str, now: Instant) -> bool {
        match self.streams.get_mut(dc) {
            Some(s) if s.awaiting.is_none() => {
                s.awaiting = Some(now);
                true
            }
            _ => false,
        }
    }

    /// `dc` was declared down: purge every session known of it (removed from the directory,
    /// not remembered as closed, so a snapshot after a healed partition brings them back),
    /// tell this DC's sessions that the available ones are gone, and hold its stream until it
    /// is up again. Nothing to do if it is already down.
    pub fn on_dc_down(&mut self, dc: &str, now: Instant) -> Vec<Action> {
        let Some(s) = self.streams.get_mut(dc) else {
            return Vec::new();
        };
        if s.down {
            return Vec::new();
        }
        s.down = true;
        s.settled = true;
        s.awaiting = Some(now);
        let mut gone: Vec<SessionInfo> = s.sessions.drain().map(|(_, i)| i).collect();
        gone.sort_by_key(|i| i.session_id);
        let epoch = s.epoch.clone().unwrap_or_default();
        let mut actions = Vec::new();
        for info in gone {
            if info.available {
                actions.push(Action::Unavailable(info.clone()));
            }
            actions.push(Action::Apply(SessionEvent {
                v: WIRE_VERSION,
                kind: SessionEventKind::Purge,
                epoch: epoch.clone(),
                session: info,
            }));
        }
        actions
    }

    /// `dc` is up (again): if it was down, ask it for a snapshot now (its sessions, which a
    /// healed partition kept alive, come back; a new life's are learnt).
    pub fn on_dc_up(&mut self, dc: &str, now: Instant) -> Vec<Action> {
        match self.streams.get_mut(dc) {
            Some(s) if s.down => {
                s.down = false;
                s.returning = true;
                s.awaiting = Some(now);
                vec![Action::RequestSnapshot(dc.to_owned())]
            }
            _ => Vec::new(),
        }
    }

    /// The peers of which, since this start, no snapshot was applied and which were not
    /// declared down either: until there are none, this DC does not know every reachable
    /// peer's sessions (and the links to and from it have not been seen carrying anything).
    /// A peer settled once stays settled: later repairs (a gap, a new epoch) are not a start.
    pub fn unsettled(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .streams
            .iter()
            .filter(|(_, s)| !s.settled)
            .map(|(dc, _)| dc.as_str())
            .collect();
        out.sort_unstable();
        out
    }

    /// Whether `dc` is declared down.
    pub fn is_down(&self, dc: &str) -> bool {
        self.streams.get(dc).is_some_and(|s| s.down)
    }

    /// Snapshot requests unanswered for too long are sent again (not to a DC declared down).
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        for (dc, s) in &mut self.streams {
            if s.down {
                continue;
            }
            if let Some(since) = s.awaiting {
                if now.duration_since(since) >= self.retry_after {
                    s.awaiting = Some(now);
                    out.push(Action::RequestSnapshot(dc.clone()));
                }
            }
        }
        out.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        out
    }
}

impl Stream {
    /// Puts the stream on hold until a snapshot arrives, keeping `ev` for after it.
    fn hold(&mut self, ev: ReplicatedEvent, now: Instant) {
        self.awaiting = Some(now);
        if self.buffer.len() < BUFFER_LIMIT {
            self.buffer.push(ev);
        }
    }

    /// Records what `event` changes in the known sessions; returns it to be applied.
    fn track(&mut self, event: SessionEvent) -> SessionEvent {
        let info = &event.session;
        match event.kind {
            SessionEventKind::Close => {
                if self
                    .sessions
                    .get(&info.session_id)
                    .is_some_and(|e| info.version >= e.version)
                {
                    self.sessions.remove(&info.session_id);
                }
            }
            SessionEventKind::Purge => {}
            _ => {
                if self
                    .sessions
                    .get(&info.session_id)
                    .is_none_or(|e| info.version >= e.version)
                {
                    self.sessions.insert(info.session_id, info.clone());
                }
            }
        }
        event
    }
}

fn announce(epoch: &str, session: SessionInfo) -> SessionEvent {
    SessionEvent {
        v: WIRE_VERSION,
        kind: SessionEventKind::Announce,
        epoch: epoch.to_owned(),
        session,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sequencer::tests::{event, info};
    use SessionEventKind::*;

    fn rep(
        epoch: &str,
        seq: u64,
        kind: SessionEventKind,
        n: u128,
        version: u64,
    ) -> ReplicatedEvent {
        ReplicatedEvent {
            v: 1,
            origin_dc: "dc1".into(),
            epoch: epoch.into(),
            seq,
            event: event(kind, info("dc1", n, version)),
        }
    }

    /// A dc2 view of dc1 that has applied a snapshot of `epoch` at `seq` with no sessions.
    fn live(epoch: &str, seq: u64, now: Instant) -> Streams {
        let mut s = Streams::new(["dc1"], now);
        let (o, _) = s.on_snapshot("dc1", epoch, seq, vec![], now);
        assert_eq!(o, Outcome::Applied);
        s
    }

    fn applied(actions: &[Action]) -> Vec<(SessionEventKind, u128, u64)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Apply(e) => {
                    Some((e.kind, e.session.session_id.as_u128(), e.session.version))
                }
                Action::RequestSnapshot(_) | Action::Unavailable(_) | Action::Available(_) => None,
            })
            .collect()
    }

    fn requests(actions: &[Action]) -> usize {
        actions
            .iter()
            .filter(|a| matches!(a, Action::RequestSnapshot(_)))
            .count()
    }

    #[test]
    fn next_seq_applies_duplicates_are_ignored() {
        let now = Instant::now();
        let mut s = live("E1", 0, now);
        let (o, a) = s.on_event(rep("E1", 1, Open, 7, 1), now);
        assert_eq!(o, Outcome::Applied);
        assert_eq!(applied(&a), vec![(Open, 7, 1)]);
        let (o, a) = s.on_event(rep("E1", 1, Open, 7, 1), now);
        assert_eq!((o, a.len()), (Outcome::Duplicate, 0));
        assert_eq!(s.known("dc1"), 1);
        let (o, _) = s.on_event(rep("E1", 2, Close, 7, 2), now);
        assert_eq!(o, Outcome::Applied);
        assert_eq!(s.known("dc1"), 0);
    }

    #[test]
    fn a_gap_requests_a_snapshot_and_holds_the_stream() {
        let now = Instant::now();
        let mut s = live("E1", 0, now);
        s.on_event(rep("E1", 1, Open, 1, 1), now);
        let (o, a) = s.on_event(rep("E1", 3, Open, 3, 1), now);
        assert_eq!(o, Outcome::Gap);
        assert_eq!(a, vec![Action::RequestSnapshot("dc1".into())]);
        // Held: later events wait for the snapshot, without asking again at once.
        let (o, a) = s.on_event(rep("E1", 4, Open, 4, 1), now);
        assert_eq!((o, a.len()), (Outcome::Buffered, 0));
        // The snapshot as of seq 3 (sessions 1, 2, 3): what follows it in the buffer (4)
        // is applied after the announcements; 3 is in the snapshot already.
        let (o, a) = s.on_snapshot(
            "dc1",
            "E1",
            3,
            vec![info("dc1", 1, 1), info("dc1", 2, 1), info("dc1", 3, 1)],
            now,
        );
        assert_eq!(o, Outcome::Applied);
        assert_eq!(
            applied(&a),
            vec![
                (Announce, 1, 1),
                (Announce, 2, 1),
                (Announce, 3, 1),
                (Open, 4, 1)
            ]
        );
        assert_eq!(requests(&a), 0);
        assert_eq!(s.known("dc1"), 4);
        let (o, _) = s.on_event(rep("E1", 5, Close, 4, 2), now);
        assert_eq!(o, Outcome::Applied);
    }

    #[test]
    fn a_dc_declared_down_is_purged_and_resynced_when_up() {
        let now = Instant::now();
        let mut s = live("E1", 0, now);
        s.on_event(rep("E1", 1, Open, 1, 1), now);
        let mut hidden = info("dc1", 2, 3);
        hidden.available = false;
        s.on_event(
            ReplicatedEvent {
                event: event(Update, hidden),
                ..rep("E1", 2, Open, 2, 3)
            },
            now,
        );
        let a = s.on_dc_down("dc1", now);
        // Both purged; only the available one is announced unavailable.
        assert_eq!(applied(&a), vec![(Purge, 1, 1), (Purge, 2, 3)]);
        let told: Vec<u128> = a
            .iter()
            .filter_map(|a| match a {
                Action::Unavailable(i) => Some(i.session_id.as_u128()),
                _ => None,
            })
            .collect();
        assert_eq!(told, vec![1]);
        assert!(s.is_down("dc1"));
        assert_eq!(s.known("dc1"), 0);
        assert!(
            s.on_dc_down("dc1", now).is_empty(),
            "repeated status: nothing"
        );
        // While down: events are held, no snapshot is asked for, a late answer is ignored.
        let later = now + Duration::from_secs(60);
        let (o, a) = s.on_event(rep("E1", 3, Open, 3, 1), later);
        assert_eq!((o, requests(&a)), (Outcome::Buffered, 0));
        assert!(s.tick(later).is_empty());
        let (o, _) = s.on_snapshot("dc1", "E1", 2, vec![info("dc1", 1, 1)], later);
        assert_eq!(o, Outcome::Buffered);
        // Up again: one snapshot request; its answer brings back what lives there.
        assert_eq!(requests(&s.on_dc_up("dc1", later)), 1);
        assert!(s.on_dc_up("dc1", later).is_empty());
        let (_, a) = s.on_snapshot("dc1", "E1", 2, vec![info("dc1", 1, 1)], later);
        assert_eq!(applied(&a), vec![(Announce, 1, 1), (Open, 3, 1)]);
        assert_eq!(s.known("dc1"), 2);
        // Its contacts here are told it is back, once.
        let back = |a: &[Action]| {
            a.iter()
                .filter(|a| matches!(a, Action::Available(_)))
                .count()
        };
        assert_eq!(back(&a), 1);
        s.on_event(rep("E1", 4, Open, 4, 1), later);
        let (_, a) = s.on_snapshot("dc1", "E1", 9, vec![info("dc1", 1, 1)], later);
        assert_eq!(back(&a), 0);
    }

    #[test]
    fn a_new_epoch_requests_a_snapshot_that_closes_vanished_sessions() {
        let now = Instant::now();
        let mut s = live("E1", 0, now);
        s.on_event(rep("E1", 1, Open, 1, 1), now);
        s.on_event(rep("E1", 2, Open, 2, 5), now);
        let (o, a) = s.on_event(rep("E2", 1, Open, 3, 1), now);
        assert_eq!(o, Outcome::Gap);
        assert_eq!(requests(&a), 1);
        let (_, a) = s.on_snapshot(
            "dc1",
            "E2",
            1,
            vec![info("dc1", 1, 1), info("dc1", 3, 1)],
            now,
        );
        // Session 2 vanished: closed one version above what was known.
        assert_eq!(
            applied(&a),
            vec![(Close, 2, 6), (Announce, 1, 1), (Announce, 3, 1)]
        );
        // Events of the previous life are stale now.
        let (o, _) = s.on_event(rep("E1", 3, Open, 9, 1), now);
        assert_eq!(o, Outcome::Stale);
        let (o, _) = s.on_event(rep("E2", 2, Open, 9, 1), now);
        assert_eq!(o, Outcome::Applied);
    }

    #[test]
    fn stale_snapshots_are_ignored_and_unanswered_requests_repeat() {
        let t0 = Instant::now();
        let mut s = Streams::new(["dc1"], t0).with_retry_after(Duration::from_secs(3));
        assert!(s.tick(t0).is_empty());
        let later = t0 + Duration::from_secs(4);
        assert_eq!(s.tick(later), vec![Action::RequestSnapshot("dc1".into())]);
        assert!(s.tick(later).is_empty());
        s.on_snapshot("dc1", "E2", 5, vec![], later);
        let (o, _) = s.on_snapshot("dc1", "E2", 3, vec![info("dc1", 1, 1)], later);
        assert_eq!(o, Outcome::Stale);
        let (o, _) = s.on_snapshot("dc1", "E1", 9, vec![info("dc1", 1, 1)], later);
        assert_eq!(o, Outcome::Stale);
        assert_eq!(s.known("dc1"), 0);
    }

    #[test]
    fn events_from_unknown_dcs_are_not_applied() {
        let now = Instant::now();
        let mut s = live("E1", 0, now);
        let mut ev = rep("E1", 1, Open, 1, 1);
        ev.origin_dc = "dc9".into();
        assert_eq!(s.on_event(ev, now).0, Outcome::UnknownDc);
    }

    #[test]
    fn resync_announces_every_known_remote_session() {
        let now = Instant::now();
        let mut s = live("E1", 0, now);
        s.on_event(rep("E1", 1, Open, 1, 1), now);
        s.on_event(rep("E1", 2, Update, 1, 2), now);
        s.on_event(rep("E1", 3, Open, 2, 1), now);
        let a: Vec<(SessionEventKind, u128, u64)> = s
            .announcements()
            .iter()
            .map(|e| (e.kind, e.session.session_id.as_u128(), e.session.version))
            .collect();
        assert_eq!(a, vec![(Announce, 1, 2), (Announce, 2, 1)]);
    }

    #[test]
    fn a_peer_settles_by_its_snapshot_or_by_being_declared_down_and_stays_settled() {
        let now = Instant::now();
        let mut s = Streams::new(["dc1", "dc3"], now);
        assert_eq!(s.unsettled(), vec!["dc1", "dc3"]);
        // An event before the snapshot settles nothing.
        s.on_event(rep("E1", 1, Open, 1, 1), now);
        assert_eq!(s.unsettled(), vec!["dc1", "dc3"]);
        s.on_snapshot("dc1", "E1", 0, vec![], now);
        assert_eq!(s.unsettled(), vec!["dc3"]);
        s.on_dc_down("dc3", now);
        assert!(s.unsettled().is_empty());
        // A later repair (a gap) or a return is not a start.
        s.on_event(rep("E1", 9, Open, 2, 1), now);
        s.on_dc_up("dc3", now);
        assert!(s.unsettled().is_empty());
    }
}
