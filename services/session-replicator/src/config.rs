//! The replicator's configuration: defaults, then a TOML file, then `MEERKAT_*` variables.
//! `peers` takes a list of tables in TOML, or one string `dc2=amqp://...,dc3=amqp://...`
//! (what `MEERKAT_PEERS` can carry, since env keys are flat).

use std::num::NonZeroUsize;

use meerkat_runtime::config::invalid;
pub use meerkat_runtime::config::Invalid;
pub use meerkat_runtime::peers::{parse_peers, Peer};
use meerkat_runtime::{Common, Database};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `dc`, `domain`, `amqp_url`, `admin_addr`, `instance_id` (empty =
    /// `replicator-<dc>-<8 hex>`; names its control queue).
    #[serde(flatten)]
    pub common: Common,
    /// `database_url`, `database_pool`: this DC's PostgreSQL. When `database_url` is set, the
    /// replicator also replicates persistent data (docs/replication.md); empty = sessions only.
    #[serde(flatten)]
    pub database: Database,
    /// The other DCs: id and the federation upstream URI they are reached by (as configured
    /// in this DC's broker federation upstream; used to check x-received-from).
    #[serde(deserialize_with = "meerkat_runtime::peers::list_or_spec")]
    pub peers: Vec<Peer>,
    /// Milliseconds after start during which snapshot requests wait, so that the local
    /// gateways' re-announcements are in the view first: a snapshot missing a live session
    /// would make the other DCs close it for good.
    pub snapshot_warmup_ms: u64,
    /// Milliseconds after start during which `/readyz` waits for a peer DC that neither sent a
    /// snapshot nor was declared down by this DC's health service (e.g. its health service
    /// beats but its replicator does not answer); after that it says ready without it and logs
    /// which peers it lacks. A peer that is unreachable is declared down within the health
    /// service's detection bound, well before this.
    pub peer_wait_ms: u64,
    /// Outbox entries older than this are trimmed even if a DC has not applied them (it then
    /// gets a full copy when it asks); tombstones are kept as long.
    pub outbox_retention_secs: u64,
    /// How often the data replication status goes to every other DC, in milliseconds.
    pub data_status_ms: u64,
    /// Records read from the database and sent per message of a full copy: what a full copy
    /// holds in memory at once.
    pub full_copy_batch: NonZeroUsize,
    /// Test only (the mixed-version test, docs/protocol.md): speak the next minor wire
    /// version — stamp it and add a field to every message — as a DC that was upgraded first
    /// would. Never set in production.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub test_newer_minor_wire: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            common: Common::default(),
            database: Database {
                database_url: Default::default(),
                ..Database::default()
            },
            peers: Vec::new(),
            snapshot_warmup_ms: 2000,
            peer_wait_ms: 30_000,
            outbox_retention_secs: 7 * 24 * 3600,
            data_status_ms: 1000,
            full_copy_batch: NonZeroUsize::new(500).unwrap_or(NonZeroUsize::MIN),
            test_newer_minor_wire: false,
        }
    }
}

impl Config {
    /// The checks the types cannot make; one line naming the key on failure.
    pub fn validate(&self) -> Result<(), Invalid> {
        self.common.validate()?;
        meerkat_runtime::peers::check(&self.dc, &self.peers).map_err(|m| invalid("peers", m))
    }
}

/// The settings every service has are the replicator's own: `config.dc`.
impl std::ops::Deref for Config {
    type Target = Common;
    fn deref(&self) -> &Common {
        &self.common
    }
}

impl std::ops::DerefMut for Config {
    fn deref_mut(&mut self) -> &mut Common {
        &mut self.common
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_from_env_spec() {
        let c: Config = meerkat_runtime::config::load_from(
            None,
            &[(
                "MEERKAT_PEERS",
                "dc2=amqp://guest:guest@127.0.0.1:5672/dc2,dc3=amqp://h:5673/%2f",
            )],
        )
        .expect("config");
        assert_eq!(
            c.peers,
            vec![
                Peer {
                    dc: "dc2".into(),
                    upstream_uri: "amqp://guest:guest@127.0.0.1:5672/dc2".into()
                },
                Peer {
                    dc: "dc3".into(),
                    upstream_uri: "amqp://h:5673/%2f".into()
                },
            ]
        );
    }

    #[test]
    fn peers_from_toml_list() {
        let c: Config = meerkat_runtime::config::load_from(
            Some("[[peers]]\ndc = \"dc2\"\nupstream_uri = \"amqp://x/y\"\n"),
            &[],
        )
        .expect("config");
        assert_eq!(c.peers.len(), 1);
        assert_eq!(c.peers[0].dc, "dc2");
    }

    #[test]
    fn bad_peers_are_refused() {
        assert!(parse_peers("dc2").is_err());
        assert!(parse_peers("=amqp://x").is_err());
        assert_eq!(parse_peers(""), Ok(vec![]));
        let r: Result<Config, _> =
            meerkat_runtime::config::load_from(None, &[("MEERKAT_PEERS", "nonsense")]);
        assert!(r.is_err());
    }
}
