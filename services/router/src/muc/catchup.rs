//! A home serves its rooms from an up-to-date copy (docs/decisions.md, "A returning home
//! catches up before it serves"). When this router starts, and whenever another DC is declared
//! up again, rooms may come (back) to this DC that another DC served meanwhile: a DC that
//! returns after a death or a partition takes its rooms back at once, and its copy of them may
//! not yet hold what the interim home wrote (occupants who joined there, a subject, a
//! configuration). Until this DC has applied every live peer's data stream up to the head that
//! peer reported after the change, a room stanza waits before its home serves it, at most
//! [`WAIT`]; then it is served from what is there. For [`SESSIONS_WINDOW`] after, a handling
//! also waits (at most 3 s) for the sessions of its room's occupants at other DCs
//! that the directory has not seen yet, so that what the room sends them is not lost.

use std::time::Duration;

use meerkat_store::PeerState;
use parking_lot::Mutex;

use crate::Ctx;

/// How long a room stanza waits for this DC to catch up before it is served anyway. The wait
/// holds the room's route partition, so every sender hashed to it waits too: kept short.
pub const WAIT: Duration = Duration::from_secs(5);

/// How far apart (µs) two received reports that show a peer's head applied must be for it to
/// count as caught up: more than a burst of queued reports, less than the report period
/// (`data_status_ms`, 1 s; the tests' fast timers use less).
const CONFIRM_US: i64 = 500_000;

/// Between two reads of the replication positions while waiting.
const POLL: Duration = Duration::from_millis(50);

/// After catching up, how long a room's home still waits (at most 3 s per handling) for the
/// sessions of its occupants at other DCs that its directory has not seen:
/// the directory learns another DC's sessions apart from the data.
pub const SESSIONS_WINDOW: Duration = Duration::from_secs(10);

/// Whether this DC may lag behind what another DC wrote for its rooms.
pub struct CatchUp {
    /// Since when (µs since the Unix epoch), or `None` when caught up.
    since_us: Mutex<Option<i64>>,
    /// When it last caught up.
    caught_at: Mutex<Option<std::time::Instant>>,
}

impl Default for CatchUp {
    /// Not caught up: a starting router does not know what happened while it was away.
    fn default() -> CatchUp {
        CatchUp {
            since_us: Mutex::new(Some(now_us())),
            caught_at: Mutex::new(None),
        }
    }
}

impl CatchUp {
    /// Another DC is back: what it wrote while cut off may not be here yet.
    pub fn behind(&self) {
        *self.since_us.lock() = Some(now_us());
    }

    /// Caught up with what was known behind at `since`; a later change stays.
    fn caught_up(&self, since: i64) {
        let mut s = self.since_us.lock();
        if *s == Some(since) {
            *s = None;
            *self.caught_at.lock() = Some(std::time::Instant::now());
        }
    }

    /// Caught up within the last [`SESSIONS_WINDOW`], or still catching up.
    pub fn recent(&self) -> bool {
        self.since_us.lock().is_some()
            || self
                .caught_at
                .lock()
                .is_some_and(|at| at.elapsed() < SESSIONS_WINDOW)
    }
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// Waits, at most [`WAIT`], until this DC has applied what every live peer had written when it
/// last reported after the change that put this DC behind. At once when nothing did.
pub async fn wait(ctx: &Ctx) {
    let Some(since) = *ctx.muc_catch_up.since_us.lock() else {
        return;
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    // Per peer: when the report was received that first showed its head applied. Reports
    // carry no send time, and those that waited in the federation queue while this DC was
    // away come all at once: a peer counts as caught up once two reports received apart
    // ([`CONFIRM_US`]) both show it.
    let mut first_ok: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
    loop {
        match ctx.store.peers().await {
            Ok(states) => {
                let behind: Vec<&str> = ctx
                    .config
                    .peers
                    .iter()
                    .map(|p| p.dc.as_str())
                    .filter(|dc| !ctx.muc_liveness.is_down(dc))
                    .filter(|dc| {
                        let state = states.iter().find(|s| s.dc == *dc);
                        match (applied_since(state, since), state.and_then(|s| s.seen_at)) {
                            (true, Some(seen)) => {
                                let first = *first_ok.entry((*dc).to_owned()).or_insert(seen);
                                seen - first < CONFIRM_US
                            }
                            _ => {
                                first_ok.remove(*dc);
                                true
                            }
                        }
                    })
                    .collect();
                if behind.is_empty() {
                    tracing::info!(
                        waited_ms = (now_us() - since) / 1000,
                        "MUC: caught up with every live DC's data; rooms served"
                    );
                    ctx.muc_catch_up.caught_up(since);
                    return;
                }
                if tokio::time::Instant::now() >= deadline {
                    tracing::warn!(
                        ?behind,
                        "MUC: data of these DCs not applied after {WAIT:?}: rooms served from what is here"
                    );
                    ctx.muc_catch_up.caught_up(since);
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "MUC: replication positions unreadable: rooms served from what is here");
                return;
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Whether `peer` reported after `since_us` and this DC has applied its stream up to the head
/// of that report.
fn applied_since(peer: Option<&PeerState>, since_us: i64) -> bool {
    let Some(p) = peer else {
        return false;
    };
    if p.seen_at.is_none_or(|t| t <= since_us) {
        return false;
    }
    match (&p.head, &p.applied) {
        (Some(h), _) if h.seq == 0 => true,
        (Some(h), Some(a)) => a.epoch == h.epoch && a.seq >= h.seq,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meerkat_store::Applied;

    fn state(
        seen_at: Option<i64>,
        head: Option<(&str, i64)>,
        applied: Option<(&str, i64)>,
    ) -> PeerState {
        let pair = |p: Option<(&str, i64)>| {
            p.map(|(e, s)| Applied {
                epoch: e.into(),
                seq: s,
            })
        };
        PeerState {
            dc: "dc2".into(),
            applied: pair(applied),
            applied_at: None,
            head: pair(head),
            acked: None,
            seen_at,
        }
    }

    #[test]
    fn caught_up_means_a_report_after_the_change_and_its_head_applied() {
        let since = 1_000;
        // No report since the change: its head may be older than what the peer wrote.
        assert!(!applied_since(
            Some(&state(Some(900), Some(("e1", 5)), Some(("e1", 9)))),
            since
        ));
        assert!(!applied_since(Some(&state(None, None, None)), since));
        assert!(!applied_since(None, since));
        // A report since: its head applied or not.
        assert!(applied_since(
            Some(&state(Some(1_100), Some(("e1", 5)), Some(("e1", 5)))),
            since
        ));
        assert!(!applied_since(
            Some(&state(Some(1_100), Some(("e1", 5)), Some(("e1", 4)))),
            since
        ));
        // A new life of the peer's database: nothing of it applied yet.
        assert!(!applied_since(
            Some(&state(Some(1_100), Some(("e2", 1)), Some(("e1", 9)))),
            since
        ));
        // A peer that has written nothing.
        assert!(applied_since(
            Some(&state(Some(1_100), Some(("e1", 0)), None)),
            since
        ));
    }

    #[test]
    fn a_change_during_a_wait_is_not_cleared_by_it() {
        let c = CatchUp::default();
        let first = c.since_us.lock().unwrap();
        *c.since_us.lock() = Some(first + 1);
        c.caught_up(first);
        assert_eq!(*c.since_us.lock(), Some(first + 1));
        c.caught_up(first + 1);
        assert_eq!(*c.since_us.lock(), None);
    }
}
