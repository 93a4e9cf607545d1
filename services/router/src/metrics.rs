//! The router's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoutedLabel {
    pub kind: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

pub struct Metrics {
    /// Stanzas routed, by stanza kind and outcome (delivered, offline, error, dropped, handled).
    pub routed: Family<RoutedLabel, Counter>,
    /// Sessions in the in-memory directory.
    pub directory_sessions: Gauge,
    /// Deliveries the gateways sent back because the session was gone.
    pub bounces: Counter,
    /// Seconds from the gateway reading a stanza to the router finishing it.
    pub routing_latency: Histogram,
    /// Deliveries sent to sessions at other DCs (wrapped on `meerkat.inter.stanzas`).
    pub inter_out: Counter,
    /// Stanzas taken from this DC's inter-DC queue (duplicates excluded).
    pub inter_in: Counter,
    /// Stanzas for another DC that expired in the federation queue and were routed again.
    pub returned: Counter,
    /// Stanzas whose handling failed and was given up, by reason: `permanent` (the sender got
    /// an error at once), `transient` (the retry budget ran out; the sender got an error),
    /// `unreadable` (the router could not read the delivery).
    pub failures: Family<ReasonLabel, Counter>,
    /// Messages from other DCs refused because they did not come through the federation link
    /// of the DC they claim, by reason: `unknown-dc`, `not-federated`, `wrong-link`,
    /// `no-origin`.
    pub inter_refused: Family<ReasonLabel, Counter>,
    /// The archive writer's transactions: seconds each took, and the messages' entries each
    /// wrote (two per one-to-one message: sender's and recipient's copy).
    pub archive: ArchiveMetrics,
}

/// What the router's archive writer ([`crate::archive::Archiver`]) reports.
#[derive(Clone)]
pub struct ArchiveMetrics {
    pub write_seconds: Histogram,
    pub batch_entries: Histogram,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            routed: Family::default(),
            directory_sessions: Gauge::default(),
            bounces: Counter::default(),
            routing_latency: Histogram::new(exponential_buckets(0.0002, 2.0, 16)),
            inter_out: Counter::default(),
            inter_in: Counter::default(),
            returned: Counter::default(),
            failures: Family::default(),
            inter_refused: Family::default(),
            archive: ArchiveMetrics {
                write_seconds: Histogram::new(exponential_buckets(0.0002, 2.0, 16)),
                batch_entries: Histogram::new(exponential_buckets(1.0, 2.0, 9)),
            },
        };
        registry.register(
            "meerkat_router_stanzas",
            "Stanzas routed, by kind and outcome",
            m.routed.clone(),
        );
        registry.register(
            "meerkat_router_directory_sessions",
            "Sessions in the router's directory",
            m.directory_sessions.clone(),
        );
        registry.register(
            "meerkat_router_bounces",
            "Deliveries bounced by a gateway (session gone)",
            m.bounces.clone(),
        );
        registry.register(
            "meerkat_router_routing_latency_seconds",
            "Gateway read to routing done",
            m.routing_latency.clone(),
        );
        registry.register(
            "meerkat_router_inter_out",
            "Deliveries sent to sessions at other DCs",
            m.inter_out.clone(),
        );
        registry.register(
            "meerkat_router_inter_in",
            "Stanzas received from other DCs",
            m.inter_in.clone(),
        );
        registry.register(
            "meerkat_router_returned",
            "Stanzas for another DC that expired on the way and were routed again",
            m.returned.clone(),
        );
        registry.register(
            "meerkat_router_failures",
            "Stanzas whose handling failed and was given up, by reason",
            m.failures.clone(),
        );
        registry.register(
            "meerkat_router_inter_refused",
            "Messages from other DCs refused: not from the link of the DC they claim",
            m.inter_refused.clone(),
        );
        registry.register(
            "meerkat_router_archive_write_seconds",
            "Archive writer transactions: time from start to commit",
            m.archive.write_seconds.clone(),
        );
        registry.register(
            "meerkat_router_archive_batch_entries",
            "Archive writer transactions: archive entries handed to each",
            m.archive.batch_entries.clone(),
        );
        m
    }

    pub fn failed(&self, reason: &'static str) {
        self.failures.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub fn routed(&self, kind: &str, outcome: Outcome) {
        self.routed
            .get_or_create(&RoutedLabel {
                kind: kind.to_owned(),
                outcome: outcome.as_str().to_owned(),
            })
            .inc();
    }
}

/// What became of a stanza.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    Offline,
    Error,
    Dropped,
    /// Answered or processed by the server itself.
    Handled,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Offline => "offline",
            Outcome::Error => "error",
            Outcome::Dropped => "dropped",
            Outcome::Handled => "handled",
        }
    }
}
