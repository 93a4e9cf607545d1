//! The router's configuration: defaults, then a TOML file, then `MEERKAT_*` variables.
//! `peers` takes a list of tables in TOML, or one string `dc2=amqp://...,dc3=amqp://...` (what
//! `MEERKAT_PEERS` can carry), as the session replicator's and the health service's do.

use meerkat_runtime::config::invalid;
pub use meerkat_runtime::config::Invalid;
pub use meerkat_runtime::peers::Peer;
use meerkat_runtime::{Common, Database};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `dc`, `domain`, `amqp_url`, `admin_addr`, `instance_id` (empty = `router-<8 hex>`;
    /// names the session-event queue).
    #[serde(flatten)]
    pub common: Common,
    /// `database_url`, `database_pool`.
    #[serde(flatten)]
    pub database: Database,
    /// Offline messages kept per user (XEP-0160); more are refused with resource-constraint.
    pub max_offline: u32,
    /// Block lists (XEP-0191) may be changed here. Their records are a replication kind that
    /// a DC of an earlier version cannot apply (it parks them, and this DC's data stream to it
    /// stalls until it is upgraded): off while a mesh is upgraded to the first version that has
    /// them. Lists already stored are enforced either way.
    pub blocking: bool,
    /// Items an account's block list holds at most (XEP-0191); a block past it is refused
    /// with resource-constraint.
    pub max_blocked: u32,
    /// Items one block or unblock request may carry; more: resource-constraint.
    pub max_block_request: u32,
    /// Personal documents may be written here: vCards (XEP-0054), private XML (XEP-0049) and
    /// the last logout (XEP-0012). Their records are replication kinds that a DC of an
    /// earlier version cannot apply (as for `blocking`): off while a mesh is upgraded to the
    /// first version that has them; reads answer from what is stored either way.
    pub personal_data: bool,
    /// Bytes a vCard (XEP-0054) may take, serialised; a larger one: not-acceptable. Enough
    /// for a 128 KiB avatar in base64 (175 KiB) beside the text, and below the gateway's
    /// 256 KiB stanza limit, so that the client gets the XEP's error and not a stream error.
    pub max_vcard_bytes: u32,
    /// Bytes one private XML element (XEP-0049) may take, serialised; larger: not-acceptable.
    pub max_private_item_bytes: u32,
    /// Bytes an account's private XML elements may take in all; past it: resource-constraint.
    pub max_private_bytes: u64,
    /// PEP (XEP-0163) nodes and items, and verified entity capabilities (XEP-0115), may be
    /// written here. Their records are replication kinds (`pep_node`, `pep_item`, `caps`)
    /// that a DC of an earlier version cannot apply (as for `blocking`): off while a mesh is
    /// upgraded to the first version that has them; reads answer from what is stored, and
    /// notifications of what is stored go out, either way.
    pub pep: bool,
    /// Bytes one published `<item/>` may take, serialised; larger: not-acceptable with
    /// `<payload-too-big/>` (XEP-0060 §7.1.3.4). Enough for a 128 KiB avatar in base64
    /// (175 KiB, XEP-0084) and below the gateway's 256 KiB stanza limit.
    pub max_pep_item_bytes: u32,
    /// Items a node keeps at most: the value of `pubsub#max_items` `max`, and the largest a
    /// client may configure (larger: not-acceptable, or precondition-not-met in
    /// publish-options).
    pub max_pep_items: u32,
    /// Nodes an account may have; a publish or create past it: resource-constraint with
    /// `<max-nodes-exceeded/>`.
    pub max_pep_nodes: u32,
    /// Multi-user chat (XEP-0045, docs/muc.md) is served. Rooms and occupants are replication
    /// kinds (`muc_room`, `muc_occupant`) and stanzas to a room travel with the route kind
    /// `room`, which a DC of an earlier version cannot take (it parks them): off while a mesh
    /// is upgraded to the first version that has them.
    pub muc: bool,
    /// The MUC service's domain; empty = `conference.<domain>`.
    pub muc_host: String,
    /// Rooms one user may have created (and that still exist); more: `not-allowed`
    /// (XEP-0045 §10.1.1, "room creation is restricted").
    pub max_rooms_per_user: u32,
    /// Occupants a room holds at most: the default and the largest `muc#roomconfig_maxusers`.
    pub max_room_occupants: u32,
    /// Characters a nick may have; longer: `not-acceptable`.
    pub max_nick_chars: u32,
    /// Characters a subject may have; longer: `not-acceptable`.
    pub max_subject_chars: u32,
    /// Messages of history sent on join at most, and the largest `muc#roomconfig_historylength`.
    pub max_room_history: u32,
    /// The other DCs: id and the federation upstream URI they are reached by. A stanza from
    /// another DC is accepted only when it came through the link of the DC it claims
    /// (`x-received-from`); none = every stanza claiming another DC is refused.
    #[serde(deserialize_with = "meerkat_runtime::peers::list_or_spec")]
    pub peers: Vec<Peer>,
    /// How long, in total, a stanza whose handling fails for a transient reason (database or
    /// broker unreachable, pool timeout) is retried in place, holding its partition, before
    /// its sender gets `<internal-server-error/>` and the partition moves on.
    pub transient_retry_ms: u64,
    /// Milliseconds a started router gives the answers to its first resync (the gateways'
    /// sessions, the replicator's sessions of the other DCs) before it routes anything: until
    /// then its directory may lack a session that is online, and a stanza for it would be
    /// stored offline and overtaken by the next ones. Its stanzas wait in their queues.
    pub directory_warmup_ms: u64,
    /// Archive one-to-one messages (XEP-0313) at routing time. Archived messages and archive
    /// preferences are data kinds that a DC of an earlier version cannot read
    /// (docs/protocol.md): while a mesh is upgraded from a version without the archive, it is
    /// off at every DC until every DC runs this version.
    pub archive: bool,
    /// What is archived for a user who has set no preferences: `always`, `roster` or `never`.
    pub archive_default: String,
    /// Archived messages older than this many days are deleted (every DC purges alike);
    /// 0 keeps them for ever.
    pub archive_retention_days: u32,
    /// A stanza for several sessions (a room's groupchat reflection) goes as one `fanout`
    /// message per gateway and per other DC instead of one per session (docs/muc.md). A
    /// gateway or DC of a version before wire 1.5 cannot take the kind (it parks it): off
    /// while a mesh is upgraded from such a version, until every gateway and router runs this
    /// one.
    pub fanout: bool,
    /// Test only (the mixed-version test, docs/protocol.md): speak the next minor wire
    /// version — stamp it, add a field to every message, and send next to every stanza
    /// for another DC a message of a kind this version does not know — as a DC that was upgraded
    /// first would. Never set in production.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub test_newer_minor_wire: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            common: Common::default(),
            database: Database::default(),
            max_offline: 1000,
            blocking: true,
            max_blocked: 1000,
            max_block_request: 100,
            personal_data: true,
            max_vcard_bytes: 200 * 1024,
            max_private_item_bytes: 64 * 1024,
            max_private_bytes: 1024 * 1024,
            pep: true,
            max_pep_item_bytes: 200 * 1024,
            max_pep_items: 256,
            max_pep_nodes: 64,
            muc: true,
            muc_host: String::new(),
            max_rooms_per_user: 50,
            max_room_occupants: 500,
            max_nick_chars: 64,
            max_subject_chars: 1024,
            max_room_history: 50,
            peers: Vec::new(),
            transient_retry_ms: 5000,
            directory_warmup_ms: 1000,
            archive: true,
            archive_default: "always".into(),
            archive_retention_days: 0,
            fanout: true,
            test_newer_minor_wire: false,
        }
    }
}

/// The settings every service has are the router's own: `config.dc`.
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

impl Config {
    /// The MUC service's domain (`muc_host`, else `conference.<domain>`), lowercase.
    pub fn muc_domain(&self) -> String {
        if self.muc_host.is_empty() {
            format!("conference.{}", self.domain).to_lowercase()
        } else {
            self.muc_host.to_lowercase()
        }
    }

    /// `archive_default`, read (validated at start).
    pub fn archive_default(&self) -> meerkat_store::ArchiveDefault {
        meerkat_store::ArchiveDefault::parse(&self.archive_default)
            .unwrap_or(meerkat_store::ArchiveDefault::Always)
    }
}

/// Longest allowed `transient_retry_ms`: a partition held longer than this stalls every
/// sender hashed to it for as long.
pub const MAX_TRANSIENT_RETRY_MS: u64 = 60_000;

impl Config {
    /// The checks the types cannot make; one line naming the key on failure.
    pub fn validate(&self) -> Result<(), Invalid> {
        self.common.validate()?;
        meerkat_runtime::peers::check(&self.dc, &self.peers).map_err(|m| invalid("peers", m))?;
        if meerkat_store::ArchiveDefault::parse(&self.archive_default).is_none() {
            return Err(invalid(
                "archive_default",
                format!("{:?}: always, roster or never", self.archive_default),
            ));
        }
        if self.transient_retry_ms > MAX_TRANSIENT_RETRY_MS {
            return Err(invalid(
                "transient_retry_ms",
                format!(
                    "{} is above {MAX_TRANSIENT_RETRY_MS}: the partition would stall that long",
                    self.transient_retry_ms
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(env: &[(&str, &str)]) -> Config {
        meerkat_runtime::config::load_from(None, env).expect("config")
    }

    #[test]
    fn peers_from_env_spec_and_toml() {
        let c = load(&[(
            "MEERKAT_PEERS",
            "dc2=amqp://g:g@127.0.0.1:5672/dc2, dc3=amqp://h/%2f",
        )]);
        assert_eq!(
            c.peers,
            vec![
                Peer {
                    dc: "dc2".into(),
                    upstream_uri: "amqp://g:g@127.0.0.1:5672/dc2".into()
                },
                Peer {
                    dc: "dc3".into(),
                    upstream_uri: "amqp://h/%2f".into()
                },
            ]
        );
        let c: Config = meerkat_runtime::config::load_from(
            Some("[[peers]]\ndc = \"dc2\"\nupstream_uri = \"amqp://x/y\"\n"),
            &[],
        )
        .expect("config");
        assert_eq!(c.peers.len(), 1);
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn bad_values_are_refused_with_their_key() {
        assert!(
            meerkat_runtime::config::load_from::<Config>(None, &[("MEERKAT_PEERS", "dc2")])
                .is_err()
        );
        let own = load(&[("MEERKAT_PEERS", "dc1=amqp://x/y")]);
        assert_eq!(own.validate().map_err(|e| e.key), Err("peers"));
        let twice = load(&[("MEERKAT_PEERS", "dc2=amqp://x/y,dc2=amqp://x/z")]);
        assert_eq!(twice.validate().map_err(|e| e.key), Err("peers"));
        let long = load(&[("MEERKAT_TRANSIENT_RETRY_MS", "600000")]);
        assert_eq!(
            long.validate().map_err(|e| e.key),
            Err("transient_retry_ms")
        );
        let archive = load(&[("MEERKAT_ARCHIVE_DEFAULT", "sometimes")]);
        assert_eq!(
            archive.validate().map_err(|e| e.key),
            Err("archive_default")
        );
        assert_eq!(Config::default().validate(), Ok(()));
    }
}
