//! The health service's Prometheus metrics (prefix `meerkat_health_`).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DcLabel {
    pub dc: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabel {
    pub dc: String,
    /// The state entered.
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LinkLabel {
    pub upstream: String,
    pub exchange: String,
}

type Seconds = Gauge<f64, AtomicU64>;

pub struct Metrics {
    /// Per peer: 0 up, 1 suspect, 2 down.
    pub peer_state: Family<DcLabel, Gauge>,
    /// Per peer: seconds since its last heartbeat arrived.
    pub heartbeat_age: Family<DcLabel, Seconds>,
    pub heartbeats_received: Family<DcLabel, Counter>,
    /// Heartbeats refused: not received through the link of the DC they claim.
    pub heartbeats_refused: Family<DcLabel, Counter>,
    pub heartbeats_sent: Counter,
    pub transitions: Family<TransitionLabel, Counter>,
    /// Per peer: seconds from its last heartbeat to the last time it was declared down.
    pub detection_seconds: Family<DcLabel, Seconds>,
    pub gateways_tracked: Gauge,
    pub gateways_down: Counter,
    pub gateway_sessions_closed: Counter,
    /// Stanzas taken out of dead gateways' queues and routed again.
    pub gateway_stanzas_rerouted: Counter,
    /// Per federation link of this DC's broker: 1 running, 0 not.
    pub link_running: Family<LinkLabel, Gauge>,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            peer_state: Family::default(),
            heartbeat_age: Family::default(),
            heartbeats_received: Family::default(),
            heartbeats_refused: Family::default(),
            heartbeats_sent: Counter::default(),
            transitions: Family::default(),
            detection_seconds: Family::default(),
            gateways_tracked: Gauge::default(),
            gateways_down: Counter::default(),
            gateway_sessions_closed: Counter::default(),
            gateway_stanzas_rerouted: Counter::default(),
            link_running: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("meerkat_health");
        r.register(
            "peer_state",
            "State of another DC: 0 up, 1 suspect, 2 down",
            m.peer_state.clone(),
        );
        r.register(
            "heartbeat_age_seconds",
            "Seconds since the last heartbeat of another DC arrived",
            m.heartbeat_age.clone(),
        );
        r.register(
            "heartbeats_received",
            "Heartbeats of another DC received",
            m.heartbeats_received.clone(),
        );
        r.register(
            "heartbeats_refused",
            "Heartbeats refused: not received through the link of the DC they claim",
            m.heartbeats_refused.clone(),
        );
        r.register(
            "heartbeats_sent",
            "Heartbeats of this DC sent to the others",
            m.heartbeats_sent.clone(),
        );
        r.register(
            "transitions",
            "State changes of another DC, by the state entered",
            m.transitions.clone(),
        );
        r.register(
            "detection_seconds",
            "Seconds from the last heartbeat of a DC to its last declaration as down",
            m.detection_seconds.clone(),
        );
        r.register(
            "gateways_tracked",
            "Gateways of this DC watched",
            m.gateways_tracked.clone(),
        );
        r.register(
            "gateways_down",
            "Gateway lives declared over (silent or restarted)",
            m.gateways_down.clone(),
        );
        r.register(
            "gateway_sessions_closed",
            "Sessions closed because their gateway died",
            m.gateway_sessions_closed.clone(),
        );
        r.register(
            "gateway_stanzas_rerouted",
            "Stanzas taken from a dead gateway's queue and routed again",
            m.gateway_stanzas_rerouted.clone(),
        );
        r.register(
            "link_running",
            "Federation link of this DC's broker: 1 running, 0 not",
            m.link_running.clone(),
        );
        m
    }

    pub fn dc(dc: &str) -> DcLabel {
        DcLabel { dc: dc.to_owned() }
    }
}
