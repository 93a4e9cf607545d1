//! The federation between DCs, as data: which exchanges are federated (with their AMQP type),
//! the settings of every upstream, and how long a backlog may wait on the sending side before
//! it expires (and where stanzas go then). Defined once here; applied to a broker by
//! `meerkat_localstack::federation` (for `cargo xtask up`, the tests and `meerkatctl broker
//! setup`, which docker compose runs), and declared with the same types by the services
//! (`meerkat_bus::topology`).

use crate::topology as names;

/// A federated exchange and its AMQP type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FederatedExchange {
    pub name: &'static str,
    /// `direct` or `topic`.
    pub kind: &'static str,
}

/// The exchanges federated between DCs, full mesh.
pub const FEDERATED_EXCHANGES: [FederatedExchange; 5] = [
    FederatedExchange {
        name: names::INTER_STANZAS_EXCHANGE,
        kind: "direct",
    },
    FederatedExchange {
        name: names::INTER_SESSIONS_EXCHANGE,
        kind: "topic",
    },
    FederatedExchange {
        name: names::INTER_CONTROL_EXCHANGE,
        kind: "direct",
    },
    FederatedExchange {
        name: names::INTER_DATA_EXCHANGE,
        kind: "topic",
    },
    FederatedExchange {
        name: names::INTER_HEALTH_EXCHANGE,
        kind: "topic",
    },
];

/// Dead-letter exchange of the upstream queues of `meerkat.inter.stanzas` (fanout, not
/// federated): what expires there comes back to this DC's routers.
pub const RETURNED_EXCHANGE: &str = names::INTER_RETURNED_EXCHANGE;

/// How long a stanza may wait in the upstream queue towards another DC before it expires into
/// [`RETURNED_EXCHANGE`] and this DC's routers route it again (offline storage once that DC
/// is declared down). Longer than any healthy link keeps a stanza; short enough that nothing
/// waits for a dead DC to return.
pub const STANZA_BACKLOG_TTL_MS: u64 = 10_000;

/// How long a heartbeat may wait towards another DC: older ones are noise.
pub const HEARTBEAT_TTL_MS: u64 = 3_000;

/// How long session events, replication control and data changes may wait towards a DC that
/// does not take them. Whatever expires is repaired when it returns (snapshot, outbox replay).
pub const REPLICATION_BACKLOG_TTL_MS: u64 = 600_000;

/// A queue policy on the upstream side of the links (`federation: <exchange> -> ...`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BacklogPolicy {
    pub name: &'static str,
    /// Regular expression of the exchanges whose upstream queues it bounds.
    pub exchanges: &'static str,
    pub message_ttl_ms: u64,
    pub dead_letter_exchange: Option<&'static str>,
}

pub const BACKLOG_POLICIES: [BacklogPolicy; 3] = [
    BacklogPolicy {
        name: "meerkat-backlog-stanzas",
        exchanges: "meerkat\\.inter\\.stanzas",
        message_ttl_ms: STANZA_BACKLOG_TTL_MS,
        dead_letter_exchange: Some(RETURNED_EXCHANGE),
    },
    BacklogPolicy {
        name: "meerkat-backlog-health",
        exchanges: "meerkat\\.inter\\.health",
        message_ttl_ms: HEARTBEAT_TTL_MS,
        dead_letter_exchange: None,
    },
    BacklogPolicy {
        name: "meerkat-backlog-replication",
        exchanges: "meerkat\\.inter\\.(sessions|control|data)",
        message_ttl_ms: REPLICATION_BACKLOG_TTL_MS,
        dead_letter_exchange: None,
    },
];

/// Every upstream: acked only once the downstream confirmed (at-least-once across).
pub const UPSTREAM_ACK_MODE: &str = "on-confirm";
/// Full mesh: one hop reaches every DC, and nothing is forwarded twice.
pub const UPSTREAM_MAX_HOPS: u32 = 1;
/// Seconds before a broken link tries again (the plugin's default is 5 s; a DC coming back
/// should resume quickly).
pub const UPSTREAM_RECONNECT_DELAY_S: u32 = 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_inter_exchange_is_federated_and_every_one_has_a_backlog_bound() {
        let names: Vec<&str> = FEDERATED_EXCHANGES.iter().map(|e| e.name).collect();
        for e in &names {
            assert!(e.starts_with("meerkat.inter."), "{e}");
            let escaped = e.replace('.', "\\.");
            let bounded = BACKLOG_POLICIES.iter().any(|p| {
                p.exchanges == escaped
                    || p.exchanges.strip_suffix(")").is_some_and(|alt| {
                        let (prefix, alts) = alt.split_once('(').unwrap_or((alt, ""));
                        alts.split('|').any(|a| format!("{prefix}{a}") == escaped)
                    })
            });
            assert!(bounded, "{e} has no backlog policy");
        }
        assert!(
            !names.contains(&RETURNED_EXCHANGE),
            "the returned exchange is local"
        );
    }
}
