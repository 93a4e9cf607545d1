//! The watch on this DC's gateways: who beats, and which sessions each holds (from the DC's
//! session events). A gateway silent for `gateway_down_after_ms`, or beating under a new epoch
//! with the same instance id (a restart), has lost its sessions (for a restart, those older
//! than the new life). Pure: the caller brings the clock and acts on the [`Loss`].

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use meerkat_wire::{SessionEvent, SessionEventKind, SessionInfo};
use uuid::Uuid;

/// Closed session ids remembered, so a late announcement cannot bring one back.
const CLOSED_KEPT: usize = 100_000;

/// One session as last announced, with the epoch of the gateway life that announced it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tracked {
    pub info: SessionInfo,
    pub epoch: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Why {
    /// No heartbeat for this long.
    Silent(Duration),
    /// Beats again under a new epoch: a restart.
    Restarted { new_epoch: String },
}

/// A gateway life that is over, and the sessions that went with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loss {
    pub instance: String,
    /// The epoch of the life that ended ("" if it never beat and announced none).
    pub epoch: String,
    pub why: Why,
    pub sessions: Vec<Tracked>,
}

#[derive(Clone, Debug)]
struct Gateway {
    epoch: Option<String>,
    last_heard: Instant,
    /// Has beaten at least once (else known from session events only).
    beating: bool,
    sessions: HashMap<Uuid, Tracked>,
}

/// What `/status` shows of one gateway.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GatewayStatus {
    pub instance: String,
    pub epoch: Option<String>,
    pub age_ms: u64,
    pub beating: bool,
    pub sessions: usize,
}

pub struct GatewayWatch {
    own_dc: String,
    down_after: Duration,
    gateways: BTreeMap<String, Gateway>,
    closed: HashSet<Uuid>,
    closed_order: VecDeque<Uuid>,
}

impl GatewayWatch {
    pub fn new(own_dc: &str, down_after: Duration) -> GatewayWatch {
        GatewayWatch {
            own_dc: own_dc.to_owned(),
            down_after,
            gateways: BTreeMap::new(),
            closed: HashSet::new(),
            closed_order: VecDeque::new(),
        }
    }

    /// A heartbeat of gateway `instance`, life `epoch`, arrived now. A new life under a known
    /// instance id ends the previous one.
    pub fn on_beat(&mut self, instance: &str, epoch: &str, now: Instant) -> Option<Loss> {
        let gw = self
            .gateways
            .entry(instance.to_owned())
            .or_insert_with(|| Gateway {
                epoch: None,
                last_heard: now,
                beating: false,
                sessions: HashMap::new(),
            });
        let loss = match &gw.epoch {
            // A beat of an earlier life, late out of a queue.
            Some(known) if epoch < known.as_str() => return None,
            Some(known) if epoch > known.as_str() => {
                let old = known.clone();
                let ended = older_than(&mut gw.sessions, epoch);
                Some(Loss {
                    instance: instance.to_owned(),
                    epoch: old,
                    why: Why::Restarted {
                        new_epoch: epoch.to_owned(),
                    },
                    sessions: ended,
                })
            }
            _ => None,
        };
        gw.epoch = Some(epoch.to_owned());
        gw.last_heard = now;
        gw.beating = true;
        loss
    }

    /// A session event of this DC's `meerkat.sessions`. Other DCs' sessions are not ours to
    /// watch.
    pub fn on_session(&mut self, event: &SessionEvent, now: Instant) {
        let info = &event.session;
        if info.dc != self.own_dc {
            return;
        }
        let id = info.session_id;
        match event.kind {
            SessionEventKind::Close | SessionEventKind::Purge => {
                if let Some(gw) = self.gateways.get_mut(&info.gateway) {
                    gw.sessions.remove(&id);
                }
                self.remember_closed(id);
            }
            SessionEventKind::Open | SessionEventKind::Update | SessionEventKind::Announce => {
                if self.closed.contains(&id) {
                    return;
                }
                // First seen through a session: it has `gateway_down_after_ms` to beat.
                let gw = self
                    .gateways
                    .entry(info.gateway.clone())
                    .or_insert_with(|| Gateway {
                        epoch: None,
                        last_heard: now,
                        beating: false,
                        sessions: HashMap::new(),
                    });
                let newer = gw
                    .sessions
                    .get(&id)
                    .is_none_or(|t| t.info.version <= info.version);
                if newer {
                    gw.sessions.insert(
                        id,
                        Tracked {
                            info: info.clone(),
                            epoch: event.epoch.clone(),
                        },
                    );
                }
            }
        }
    }

    /// The gateways silent for too long by `now`: forgotten, with their sessions.
    pub fn tick(&mut self, now: Instant) -> Vec<Loss> {
        let silent: Vec<String> = self
            .gateways
            .iter()
            .filter(|(_, g)| now.saturating_duration_since(g.last_heard) >= self.down_after)
            .map(|(i, _)| i.clone())
            .collect();
        let mut out = Vec::new();
        for instance in silent {
            let Some(gw) = self.gateways.remove(&instance) else {
                continue;
            };
            let mut sessions: Vec<Tracked> = gw.sessions.into_values().collect();
            sessions.sort_by_key(|t| t.info.session_id);
            let epoch = gw
                .epoch
                .or_else(|| sessions.iter().map(|t| t.epoch.clone()).max())
                .unwrap_or_default();
            for t in &sessions {
                self.remember_closed(t.info.session_id);
            }
            out.push(Loss {
                instance,
                epoch,
                why: Why::Silent(now.saturating_duration_since(gw.last_heard)),
                sessions,
            });
        }
        out
    }

    /// Counts every gateway as heard now (see `Detector::heard_all`).
    pub fn heard_all(&mut self, now: Instant) {
        for gw in self.gateways.values_mut() {
            gw.last_heard = now;
        }
    }

    pub fn status(&self, now: Instant) -> Vec<GatewayStatus> {
        self.gateways
            .iter()
            .map(|(instance, g)| GatewayStatus {
                instance: instance.clone(),
                epoch: g.epoch.clone(),
                age_ms: millis(now.saturating_duration_since(g.last_heard)),
                beating: g.beating,
                sessions: g.sessions.len(),
            })
            .collect()
    }

    /// Gateways watched.
    pub fn count(&self) -> usize {
        self.gateways.len()
    }

    fn remember_closed(&mut self, id: Uuid) {
        if self.closed.insert(id) {
            self.closed_order.push_back(id);
            if self.closed_order.len() > CLOSED_KEPT {
                if let Some(old) = self.closed_order.pop_front() {
                    self.closed.remove(&old);
                }
            }
        }
    }
}

/// Removes and returns the sessions made before life `epoch` began: their UUIDv7 ids are
/// older than the epoch's (by the announcing life's epoch when `epoch` is not a UUID).
fn older_than(sessions: &mut HashMap<Uuid, Tracked>, epoch: &str) -> Vec<Tracked> {
    let new_life = Uuid::parse_str(epoch).ok();
    let ended: Vec<Uuid> = sessions
        .iter()
        .filter(|(id, t)| match new_life {
            Some(e) => **id < e,
            None => t.epoch.as_str() < epoch,
        })
        .map(|(id, _)| *id)
        .collect();
    let mut out: Vec<Tracked> = ended.iter().filter_map(|id| sessions.remove(id)).collect();
    out.sort_by_key(|t| t.info.session_id);
    out
}

pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOWN: Duration = Duration::from_millis(4000);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn event(
        kind: SessionEventKind,
        gw: &str,
        epoch: &str,
        id: Uuid,
        version: u64,
    ) -> SessionEvent {
        SessionEvent {
            v: 1,
            kind,
            epoch: epoch.into(),
            session: SessionInfo {
                jid: format!("u{}@example.com/r", &id.simple().to_string()[..6]),
                session_id: id,
                version,
                dc: "dc1".into(),
                gateway: gw.into(),
                available: true,
                priority: 0,
                presence: None,
                interested: false,
                carbons: false,
                blocklist: false,
            },
        }
    }

    use SessionEventKind::{Announce, Close, Open, Update};

    #[test]
    fn a_silent_gateway_loses_its_sessions_once() {
        let t0 = Instant::now();
        let mut w = GatewayWatch::new("dc1", DOWN);
        let e1 = Uuid::now_v7().to_string();
        w.on_beat("gw1", &e1, t0);
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        w.on_session(&event(Open, "gw1", &e1, a, 1), t0);
        w.on_session(&event(Update, "gw1", &e1, a, 3), t0);
        // An older version arriving late changes nothing.
        w.on_session(&event(Update, "gw1", &e1, a, 2), t0);
        w.on_session(&event(Open, "gw1", &e1, b, 1), t0);
        w.on_session(&event(Close, "gw1", &e1, b, 2), t0);
        w.on_session(&event(Announce, "gw1", &e1, b, 1), t0);
        w.on_session(&event(Open, "gw2", &e1, c, 1), t0 + ms(3000));
        // Another DC's session is not watched.
        let mut remote = event(Open, "dc2-gw1", "x", Uuid::now_v7(), 1);
        remote.session.dc = "dc2".into();
        w.on_session(&remote, t0);
        assert_eq!(w.count(), 2);
        w.on_beat("gw1", &e1, t0 + ms(1000));
        assert!(w.tick(t0 + ms(4999)).is_empty());
        let lost = w.tick(t0 + ms(5000));
        assert_eq!(lost.len(), 1);
        assert_eq!(
            (lost[0].instance.as_str(), lost[0].epoch.as_str()),
            ("gw1", e1.as_str())
        );
        assert_eq!(lost[0].why, Why::Silent(ms(4000)));
        let ids: Vec<(Uuid, u64)> = lost[0]
            .sessions
            .iter()
            .map(|t| (t.info.session_id, t.info.version))
            .collect();
        assert_eq!(ids, [(a, 3)]);
        assert!(w.tick(t0 + ms(6000)).is_empty());
        // gw2 never beat: it had its time from the first session seen.
        let lost = w.tick(t0 + ms(7000));
        assert_eq!(lost[0].instance, "gw2");
        assert_eq!(
            lost[0].epoch, e1,
            "the epoch its sessions were announced under"
        );
        // A late announcement of a session already closed does not bring it back.
        w.on_session(&event(Announce, "gw1", &e1, a, 3), t0 + ms(7000));
        assert!(w.status(t0 + ms(7000)).is_empty());
    }

    #[test]
    fn a_restart_ends_the_sessions_of_the_previous_life_only() {
        let t0 = Instant::now();
        let mut w = GatewayWatch::new("dc1", DOWN);
        let e1 = Uuid::now_v7().to_string();
        w.on_beat("gw1", &e1, t0);
        let old = Uuid::now_v7();
        w.on_session(&event(Open, "gw1", &e1, old, 1), t0);
        std::thread::sleep(Duration::from_millis(2));
        let e2 = Uuid::now_v7().to_string();
        std::thread::sleep(Duration::from_millis(2));
        let new = Uuid::now_v7();
        // The new life's first session may be announced before its first beat arrives.
        w.on_session(&event(Open, "gw1", &e2, new, 1), t0 + ms(500));
        let loss = w.on_beat("gw1", &e2, t0 + ms(600)).expect("restart");
        assert_eq!(loss.epoch, e1);
        assert_eq!(
            loss.why,
            Why::Restarted {
                new_epoch: e2.clone()
            }
        );
        assert_eq!(loss.sessions.len(), 1);
        assert_eq!(loss.sessions[0].info.session_id, old);
        assert_eq!(w.status(t0)[0].sessions, 1);
        // A late beat of the old life is ignored.
        assert_eq!(w.on_beat("gw1", &e1, t0 + ms(700)), None);
        assert_eq!(w.status(t0)[0].epoch.as_deref(), Some(e2.as_str()));
    }
}
