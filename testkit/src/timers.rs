//! The timers that make tests wait, in two profiles. [`Timers::fast`] (the default of
//! [`crate::stack::StackOptions`]) shortens failure detection, the heartbeats behind it and
//! the backlog towards a dead DC, so that a test of a DC dying or cut off waits a second or two
//! where a deployment waits four or ten. [`Timers::production`] keeps the services' defaults
//! and the federation's backlog TTLs: the one test that checks the documented 5 s detection
//! bound uses it. The ratios between the timers stay those of production (beats well within
//! the suspect and down thresholds, the bound above `down_after` plus the check tick, the
//! stanza backlog longer than detection), so a test sees the same sequence of events, sooner.

use std::time::Duration;

/// Failure detection, heartbeats and backlogs, for every DC a test starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timers {
    /// dc-health `heartbeat_interval_ms`: how often a DC's heartbeat goes to the others.
    pub dc_heartbeat_ms: u64,
    /// dc-health `suspect_after_ms`.
    pub suspect_after_ms: u64,
    /// dc-health `down_after_ms`: a DC silent this long is down.
    pub down_after_ms: u64,
    /// dc-health `gateway_down_after_ms`: a gateway silent this long is down.
    pub gateway_down_after_ms: u64,
    /// dc-health `detection_bound_ms`.
    pub detection_bound_ms: u64,
    /// dc-health `status_repeat_ms`: how often the whole view is published again.
    pub status_repeat_ms: u64,
    /// dc-health `links_poll_ms`: how often the federation links' status is read.
    pub links_poll_ms: u64,
    /// The gateways' `heartbeat_interval_ms` (to their DC's health service).
    pub gateway_heartbeat_ms: u64,
    /// How long a stanza may wait towards another DC before it comes back to its DC's
    /// routers (`meerkat_wire::federation::STANZA_BACKLOG_TTL_MS` in production).
    pub stanza_backlog_ttl_ms: u64,
}

impl Timers {
    /// The services' defaults and the federation's TTLs: what a deployment runs.
    pub fn production() -> Timers {
        let health = dc_health::Config::default();
        Timers {
            dc_heartbeat_ms: health.heartbeat_interval_ms,
            suspect_after_ms: health.suspect_after_ms,
            down_after_ms: health.down_after_ms,
            gateway_down_after_ms: health.gateway_down_after_ms,
            detection_bound_ms: health.detection_bound_ms,
            status_repeat_ms: health.status_repeat_ms,
            links_poll_ms: health.links_poll_ms,
            gateway_heartbeat_ms: c2s_gateway::Config::default().heartbeat_interval_ms,
            stanza_backlog_ttl_ms: meerkat_localstack::federation::STANZA_BACKLOG_TTL_MS,
        }
    }

    /// Production's timers at about half (detection) to a fifth (heartbeats, backlog): down
    /// within 2.5 s instead of 5 s, a stanza towards a dead DC back after 5 s instead of 10 s.
    /// Not shorter: a loaded 2-core machine pauses a service for hundreds of milliseconds, and
    /// a beat missed for that must not be taken for a dead DC.
    pub fn fast() -> Timers {
        Timers {
            dc_heartbeat_ms: 250,
            suspect_after_ms: 1000,
            down_after_ms: 2000,
            gateway_down_after_ms: 2000,
            detection_bound_ms: 2500,
            status_repeat_ms: 2000,
            links_poll_ms: 1000,
            gateway_heartbeat_ms: 250,
            stanza_backlog_ttl_ms: 5000,
        }
    }

    /// The detection bound: a silent DC or gateway is declared down at most this long after
    /// its last heartbeat arrived.
    pub fn detection_bound(&self) -> Duration {
        Duration::from_millis(self.detection_bound_ms)
    }

    /// How long after a DC dies everything sent to its users meanwhile has been routed again:
    /// detection, plus the backlog's TTL (what waited in the queue towards it comes back).
    pub fn rerouted_after(&self) -> Duration {
        Duration::from_millis(self.detection_bound_ms + self.stanza_backlog_ttl_ms)
    }

    /// The health service's configuration with these timers.
    pub fn apply_health(&self, config: dc_health::Config) -> dc_health::Config {
        dc_health::Config {
            heartbeat_interval_ms: self.dc_heartbeat_ms,
            suspect_after_ms: self.suspect_after_ms,
            down_after_ms: self.down_after_ms,
            gateway_down_after_ms: self.gateway_down_after_ms,
            detection_bound_ms: self.detection_bound_ms,
            status_repeat_ms: self.status_repeat_ms,
            links_poll_ms: self.links_poll_ms,
            ..config
        }
    }
}

impl Default for Timers {
    fn default() -> Timers {
        Timers::fast()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_profiles_are_valid_health_configurations_in_production_proportions() {
        for t in [Timers::production(), Timers::fast()] {
            let config = t.apply_health(dc_health::Config::default());
            assert!(config.validate().is_ok(), "{t:?}: {:?}", config.validate());
            assert!(
                t.gateway_heartbeat_ms * 4 <= t.gateway_down_after_ms,
                "{t:?}"
            );
            assert!(t.stanza_backlog_ttl_ms > t.detection_bound_ms, "{t:?}");
        }
        assert_eq!(
            Timers::production().detection_bound(),
            Duration::from_secs(5)
        );
    }
}
