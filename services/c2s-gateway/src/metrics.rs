//! The gateway's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

pub struct Metrics {
    pub connections: Gauge,
    pub sessions: Gauge,
    pub stanzas_in: Family<KindLabel, Counter>,
    pub stanzas_out: Counter,
    pub auth: Family<OutcomeLabel, Counter>,
    pub stream_errors: Family<KindLabel, Counter>,
    /// Stanzas sent back to the routers undelivered (session gone, or ended before writing them).
    pub bounced: Counter,
    /// Times a session's reading paused because its client went over a rate limit.
    pub throttled: Counter,
    /// Sessions that enabled stream management.
    pub sm_enabled: Counter,
    /// Sessions waiting for their client to resume them now.
    pub sm_detached: Gauge,
    /// Resumptions, those that succeeded and those refused (unknown, expired, another's).
    pub sm_resumed: Counter,
    pub sm_failed: Counter,
    /// Detached sessions whose resumption window passed.
    pub sm_expired: Counter,
    /// Unacknowledged stanzas written again on resumption...
    pub sm_resent: Counter,
    /// ... and sent back to the routers when a session ended without being resumed.
    pub sm_rerouted: Counter,
    /// Stanzas never written to an inactive client (CSI: presences superseded by newer ones),
    /// and their bytes.
    pub csi_saved: Counter,
    pub csi_saved_bytes: Counter,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            connections: Gauge::default(),
            sessions: Gauge::default(),
            stanzas_in: Family::default(),
            stanzas_out: Counter::default(),
            auth: Family::default(),
            stream_errors: Family::default(),
            bounced: Counter::default(),
            throttled: Counter::default(),
            sm_enabled: Counter::default(),
            sm_detached: Gauge::default(),
            sm_resumed: Counter::default(),
            sm_failed: Counter::default(),
            sm_expired: Counter::default(),
            sm_resent: Counter::default(),
            sm_rerouted: Counter::default(),
            csi_saved: Counter::default(),
            csi_saved_bytes: Counter::default(),
        };
        registry.register(
            "meerkat_gateway_connections",
            "Open client connections",
            m.connections.clone(),
        );
        registry.register(
            "meerkat_gateway_sessions",
            "Bound sessions",
            m.sessions.clone(),
        );
        registry.register(
            "meerkat_gateway_stanzas_in",
            "Stanzas received from clients",
            m.stanzas_in.clone(),
        );
        registry.register(
            "meerkat_gateway_stanzas_out",
            "Stanzas written to clients",
            m.stanzas_out.clone(),
        );
        registry.register(
            "meerkat_gateway_auth",
            "Authentication attempts by outcome",
            m.auth.clone(),
        );
        registry.register(
            "meerkat_gateway_stream_errors",
            "Streams ended with an error, by condition",
            m.stream_errors.clone(),
        );
        registry.register(
            "meerkat_gateway_bounced",
            "Stanzas sent back to the routers undelivered (session gone or cut off)",
            m.bounced.clone(),
        );
        registry.register(
            "meerkat_gateway_throttled",
            "Times a session stopped reading because its client went over a rate limit",
            m.throttled.clone(),
        );
        for (name, help, c) in [
            (
                "meerkat_gateway_sm_enabled",
                "Sessions that enabled stream management (XEP-0198)",
                &m.sm_enabled,
            ),
            (
                "meerkat_gateway_sm_resumed",
                "Sessions resumed on a new connection",
                &m.sm_resumed,
            ),
            (
                "meerkat_gateway_sm_failed_resumptions",
                "Resumptions refused (unknown, expired or another account's session)",
                &m.sm_failed,
            ),
            (
                "meerkat_gateway_sm_expired",
                "Detached sessions ended because their resumption window passed",
                &m.sm_expired,
            ),
            (
                "meerkat_gateway_sm_resent_stanzas",
                "Unacknowledged stanzas written again on resumption",
                &m.sm_resent,
            ),
            (
                "meerkat_gateway_sm_rerouted_stanzas",
                "Unacknowledged stanzas sent back to the routers (another resource, offline storage, or an error to their sender) when a session ended without resumption",
                &m.sm_rerouted,
            ),
            (
                "meerkat_gateway_csi_saved_stanzas",
                "Stanzas never written to an inactive client (XEP-0352: presences superseded while held)",
                &m.csi_saved,
            ),
            (
                "meerkat_gateway_csi_saved_bytes",
                "Bytes of the stanzas never written to inactive clients",
                &m.csi_saved_bytes,
            ),
        ] {
            registry.register(name, help, c.clone());
        }
        registry.register(
            "meerkat_gateway_sm_detached",
            "Sessions detached from their connection, waiting for their client to resume",
            m.sm_detached.clone(),
        );
        m
    }
}
