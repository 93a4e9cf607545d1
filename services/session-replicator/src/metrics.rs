//! The replicator's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DcLabel {
    /// The other DC concerned (origin of what came in, target of what went out).
    pub dc: String,
}

pub struct Metrics {
    /// Local session events sequenced and published to the other DCs.
    pub replicated_out: Counter,
    /// Remote session events applied to the local directory, by origin DC.
    pub replicated_in: Family<DcLabel, Counter>,
    /// Gaps and new epochs seen in a DC's stream.
    pub gaps: Family<DcLabel, Counter>,
    pub snapshots_requested: Family<DcLabel, Counter>,
    pub snapshots_served: Family<DcLabel, Counter>,
    pub snapshots_applied: Family<DcLabel, Counter>,
    /// Messages refused because they did not come through the link of the DC they claim.
    pub refused: Family<DcLabel, Counter>,
    /// Remote sessions known, by DC.
    pub remote_sessions: Family<DcLabel, Gauge>,
    /// Sessions purged because their DC was declared down, by DC.
    pub purged: Family<DcLabel, Counter>,
    /// Live local sessions (what a snapshot serves).
    pub local_sessions: Gauge,
    /// Outbox entries of this DC published to the other DCs (replays included).
    pub data_shipped: Counter,
    /// Messages those entries went in: fewer than the entries once every peer reads batches.
    pub data_messages_shipped: Counter,
    /// Data changes applied, by origin DC.
    pub data_applied: Family<DcLabel, Counter>,
    /// Gaps seen in a DC's data stream.
    pub data_gaps: Family<DcLabel, Counter>,
    /// Replays served, by requesting DC.
    pub data_replays: Family<DcLabel, Counter>,
    /// Full copies served, by requesting DC.
    pub data_copies: Family<DcLabel, Counter>,
    /// Seconds between the origin's commit and the apply here of the last change, by origin.
    pub data_lag_seconds: Family<DcLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Seconds between the origin's commit and the apply here, every change, by origin.
    pub data_apply_lag: Family<DcLabel, Histogram, fn() -> Histogram>,
    /// Changes of the origin not yet applied here (its last reported head minus ours).
    pub data_lag_changes: Family<DcLabel, Gauge>,
    /// Changes of this DC that a peer has not reported applied yet.
    pub data_backlog: Family<DcLabel, Gauge>,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            replicated_out: Counter::default(),
            replicated_in: Family::default(),
            gaps: Family::default(),
            snapshots_requested: Family::default(),
            snapshots_served: Family::default(),
            snapshots_applied: Family::default(),
            refused: Family::default(),
            remote_sessions: Family::default(),
            purged: Family::default(),
            local_sessions: Gauge::default(),
            data_shipped: Counter::default(),
            data_messages_shipped: Counter::default(),
            data_applied: Family::default(),
            data_gaps: Family::default(),
            data_replays: Family::default(),
            data_copies: Family::default(),
            data_lag_seconds: Family::default(),
            data_apply_lag: Family::new_with_constructor(lag_histogram),
            data_lag_changes: Family::default(),
            data_backlog: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("meerkat_replicator");
        r.register(
            "events_out",
            "Local session events sent to the other DCs",
            m.replicated_out.clone(),
        );
        r.register(
            "events_in",
            "Remote session events applied, by origin DC",
            m.replicated_in.clone(),
        );
        r.register(
            "gaps",
            "Gaps or new epochs in a DC's session stream",
            m.gaps.clone(),
        );
        r.register(
            "snapshots_requested",
            "Snapshot requests sent, by target DC",
            m.snapshots_requested.clone(),
        );
        r.register(
            "snapshots_served",
            "Snapshots sent, by requesting DC",
            m.snapshots_served.clone(),
        );
        r.register(
            "snapshots_applied",
            "Snapshots applied, by origin DC",
            m.snapshots_applied.clone(),
        );
        r.register(
            "refused",
            "Messages refused: not received through the link of the DC they claim",
            m.refused.clone(),
        );
        r.register(
            "remote_sessions",
            "Remote sessions known, by DC",
            m.remote_sessions.clone(),
        );
        r.register(
            "purged",
            "Sessions purged because their DC was declared down, by DC",
            m.purged.clone(),
        );
        r.register(
            "local_sessions",
            "Live local sessions",
            m.local_sessions.clone(),
        );
        r.register(
            "data_shipped",
            "Outbox entries published to the other DCs",
            m.data_shipped.clone(),
        );
        r.register(
            "data_messages_shipped",
            "Messages the outbox entries were published in (a batch holds several)",
            m.data_messages_shipped.clone(),
        );
        r.register(
            "data_applied",
            "Data changes applied, by origin DC",
            m.data_applied.clone(),
        );
        r.register(
            "data_gaps",
            "Gaps in a DC's data stream",
            m.data_gaps.clone(),
        );
        r.register(
            "data_replays",
            "Outbox replays served, by requesting DC",
            m.data_replays.clone(),
        );
        r.register(
            "data_copies",
            "Full copies served, by requesting DC",
            m.data_copies.clone(),
        );
        r.register(
            "data_lag_seconds",
            "Commit at the origin to apply here, last change, by origin DC",
            m.data_lag_seconds.clone(),
        );
        r.register(
            "data_apply_lag_seconds",
            "Commit at the origin to apply here, every change, by origin DC",
            m.data_apply_lag.clone(),
        );
        r.register(
            "data_lag_changes",
            "Changes of the origin DC not applied here yet",
            m.data_lag_changes.clone(),
        );
        r.register(
            "data_backlog",
            "Changes of this DC not yet applied by the peer DC",
            m.data_backlog.clone(),
        );
        m
    }

    pub fn dc(dc: &str) -> DcLabel {
        DcLabel { dc: dc.to_owned() }
    }
}

/// From 1 ms to about 30 s, each bucket √2 times the one before.
fn lag_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, std::f64::consts::SQRT_2, 30))
}
