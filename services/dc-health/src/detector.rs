//! The failure detector for the other DCs: each peer is up, suspect or down by the time since
//! its last heartbeat arrived here (this process's clock, not the sender's). At start every
//! peer counts as heard then, so a restarted health service raises no false alarm. Pure: the
//! caller brings the clock.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use meerkat_wire::{DcState, Heartbeat};

/// What the detector believes of one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerView {
    pub state: DcState,
    /// The epoch of the last heartbeat heard (none yet since start).
    pub epoch: Option<String>,
    pub last_seq: u64,
    /// When the last heartbeat arrived (or the start).
    pub last_heard: Instant,
    /// When the current state began.
    pub since: Instant,
    /// The peer's beat interval, as its last heartbeat said.
    pub interval_ms: Option<u64>,
}

/// A change worth telling: a new state, or the same state under a new epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub dc: String,
    pub from: DcState,
    pub to: DcState,
    pub epoch: Option<String>,
    /// The epoch believed before (none: the first heartbeat heard since start).
    pub previous_epoch: Option<String>,
    /// Time since the last heartbeat when the change was made (for a `down`, the detection
    /// time).
    pub silence: Duration,
}

/// What a heartbeat did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Heard {
    /// Counted; the change, if it made one.
    Fresh(Option<Change>),
    /// Of an older life, or a beat already counted: ignored.
    Stale,
    /// Not a configured peer.
    Unknown,
}

pub struct Detector {
    peers: BTreeMap<String, PeerView>,
    suspect_after: Duration,
    down_after: Duration,
}

impl Detector {
    pub fn new<'a>(
        peers: impl IntoIterator<Item = &'a str>,
        suspect_after: Duration,
        down_after: Duration,
        now: Instant,
    ) -> Detector {
        let peers = peers
            .into_iter()
            .map(|dc| {
                let view = PeerView {
                    state: DcState::Up,
                    epoch: None,
                    last_seq: 0,
                    last_heard: now,
                    since: now,
                    interval_ms: None,
                };
                (dc.to_owned(), view)
            })
            .collect();
        Detector {
            peers,
            suspect_after,
            down_after,
        }
    }

    /// A heartbeat of `hb.dc` arrived now.
    pub fn on_beat(&mut self, hb: &Heartbeat, now: Instant) -> Heard {
        let Some(view) = self.peers.get_mut(&hb.dc) else {
            return Heard::Unknown;
        };
        let new_epoch = match &view.epoch {
            // UUIDv7 epochs: a later life compares greater, also as text.
            Some(e) if hb.epoch.as_str() < e.as_str() => return Heard::Stale,
            Some(e) if *e == hb.epoch && hb.seq <= view.last_seq => return Heard::Stale,
            Some(e) => *e != hb.epoch,
            None => true,
        };
        let silence = now.saturating_duration_since(view.last_heard);
        view.last_heard = now;
        view.last_seq = hb.seq;
        view.interval_ms = Some(hb.interval_ms);
        // The first epoch heard since start is news too: it makes the view known.
        let previous_epoch = view.epoch.clone();
        if new_epoch {
            view.epoch = Some(hb.epoch.clone());
        }
        let from = view.state;
        if from != DcState::Up {
            view.state = DcState::Up;
            view.since = now;
        }
        let news = from != DcState::Up || new_epoch;
        Heard::Fresh(news.then(|| Change {
            dc: hb.dc.clone(),
            from,
            to: DcState::Up,
            epoch: view.epoch.clone(),
            previous_epoch,
            silence,
        }))
    }

    /// The state changes that silence made by `now`.
    pub fn tick(&mut self, now: Instant) -> Vec<Change> {
        let mut out = Vec::new();
        for (dc, view) in &mut self.peers {
            let silence = now.saturating_duration_since(view.last_heard);
            let due = if silence >= self.down_after {
                DcState::Down
            } else if silence >= self.suspect_after {
                DcState::Suspect
            } else {
                DcState::Up
            };
            // Only silence makes things worse here; a beat makes them better.
            if rank(due) > rank(view.state) {
                out.push(Change {
                    dc: dc.clone(),
                    from: view.state,
                    to: due,
                    epoch: view.epoch.clone(),
                    previous_epoch: view.epoch.clone(),
                    silence,
                });
                view.state = due;
                view.since = now;
            }
        }
        out
    }

    /// Counts every peer as heard now: this service could not listen until now (it started,
    /// or its broker connection came back), and silence it could not hear is no evidence.
    pub fn heard_all(&mut self, now: Instant) {
        for view in self.peers.values_mut() {
            view.last_heard = now;
        }
    }

    pub fn peers(&self) -> impl Iterator<Item = (&String, &PeerView)> {
        self.peers.iter()
    }

    /// The peers whose state is known: heard since start, or judged by silence. (Right after
    /// a start a peer is only presumed up; saying so could contradict a down said before.)
    pub fn known(&self) -> impl Iterator<Item = (&String, &PeerView)> {
        self.peers
            .iter()
            .filter(|(_, v)| v.epoch.is_some() || v.state != DcState::Up)
    }
}

fn rank(s: DcState) -> u8 {
    match s {
        DcState::Up => 0,
        DcState::Suspect => 1,
        DcState::Down => 2,
    }
}

/// The state as a gauge value: 0 up, 1 suspect, 2 down.
pub fn gauge(s: DcState) -> i64 {
    i64::from(rank(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_millis(2000);
    const D: Duration = Duration::from_millis(4000);

    fn hb(dc: &str, epoch: &str, seq: u64) -> Heartbeat {
        Heartbeat {
            v: 1,
            dc: dc.into(),
            instance: format!("{dc}-health"),
            epoch: epoch.into(),
            seq,
            sent_at_ms: 0,
            interval_ms: 1000,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn silence_makes_a_peer_suspect_then_down() {
        let t0 = Instant::now();
        let mut d = Detector::new(["dc2", "dc3"], S, D, t0);
        let Heard::Fresh(Some(c)) = d.on_beat(&hb("dc2", "e1", 1), t0) else {
            panic!("the first epoch heard is news");
        };
        assert_eq!(
            (c.from, c.to, c.epoch.as_deref()),
            (DcState::Up, DcState::Up, Some("e1"))
        );
        assert_eq!(d.on_beat(&hb("dc2", "e1", 2), t0), Heard::Fresh(None));
        assert!(d.tick(t0 + ms(1999)).is_empty());
        let c = d.tick(t0 + ms(2000));
        // dc3, never heard since start, counts from the start like dc2.
        assert_eq!(c.len(), 2);
        assert!(c.iter().all(|c| c.to == DcState::Suspect));
        assert!(d.tick(t0 + ms(3000)).is_empty());
        let c = d.tick(t0 + ms(4100));
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].dc, "dc2");
        assert_eq!((c[0].from, c[0].to), (DcState::Suspect, DcState::Down));
        assert_eq!(c[0].epoch.as_deref(), Some("e1"));
        assert_eq!(c[0].silence, ms(4100));
        assert!(d.tick(t0 + ms(9000)).is_empty(), "down is said once");
    }

    #[test]
    fn a_silent_peer_skips_suspect_when_the_tick_comes_late() {
        let t0 = Instant::now();
        let mut d = Detector::new(["dc2"], S, D, t0);
        let c = d.tick(t0 + ms(5000));
        assert_eq!((c[0].from, c[0].to), (DcState::Up, DcState::Down));
    }

    #[test]
    fn a_beat_brings_a_peer_back_and_a_new_life_is_news() {
        let t0 = Instant::now();
        let mut d = Detector::new(["dc2"], S, D, t0);
        d.on_beat(&hb("dc2", "e1", 1), t0);
        d.tick(t0 + ms(2500));
        let Heard::Fresh(Some(c)) = d.on_beat(&hb("dc2", "e1", 3), t0 + ms(2600)) else {
            panic!("suspect -> up");
        };
        assert_eq!((c.from, c.to), (DcState::Suspect, DcState::Up));
        d.tick(t0 + ms(7000));
        // Restarted: a new epoch, up again.
        let Heard::Fresh(Some(c)) = d.on_beat(&hb("dc2", "e2", 1), t0 + ms(8000)) else {
            panic!("down -> up");
        };
        assert_eq!(
            (c.from, c.to, c.epoch.as_deref()),
            (DcState::Down, DcState::Up, Some("e2"))
        );
        // A new epoch while up (a quick restart) is told too.
        let Heard::Fresh(Some(c)) = d.on_beat(&hb("dc2", "e3", 1), t0 + ms(8500)) else {
            panic!("epoch change");
        };
        assert_eq!(
            (c.from, c.to, c.epoch.as_deref()),
            (DcState::Up, DcState::Up, Some("e3"))
        );
        assert_eq!(
            d.on_beat(&hb("dc2", "e3", 2), t0 + ms(9000)),
            Heard::Fresh(None)
        );
    }

    #[test]
    fn old_lives_duplicates_and_strangers_are_ignored() {
        let t0 = Instant::now();
        let mut d = Detector::new(["dc2"], S, D, t0);
        d.on_beat(&hb("dc2", "e2", 5), t0);
        assert_eq!(d.on_beat(&hb("dc2", "e1", 9), t0 + ms(10)), Heard::Stale);
        assert_eq!(d.on_beat(&hb("dc2", "e2", 5), t0 + ms(10)), Heard::Stale);
        assert_eq!(d.on_beat(&hb("dc9", "e1", 1), t0), Heard::Unknown);
        // Stale beats do not keep a peer alive.
        assert_eq!(d.tick(t0 + ms(2000)).len(), 1);
    }
}
