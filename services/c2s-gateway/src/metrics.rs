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
        m
    }
}
