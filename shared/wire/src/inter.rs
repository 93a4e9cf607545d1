//! What crosses between DCs besides stanzas: each DC's session events as one sequenced
//! stream, and the snapshot requests that repair a gap or a new epoch.
//!
//! A DC's stream is identified by (origin DC, epoch): the epoch changes on every start of the
//! DC's session replicator, and `seq` counts from 1 without gaps within an epoch. A receiver
//! that sees a gap or an epoch it does not know asks the origin for a snapshot.

use serde::{Deserialize, Serialize};

use crate::{SessionEvent, SessionInfo};

/// One session event of a DC's sequenced stream (`meerkat.inter.sessions`, routing key =
/// origin DC).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicatedEvent {
    pub v: u32,
    pub origin_dc: String,
    pub epoch: String,
    pub seq: u64,
    pub event: SessionEvent,
}

/// Replicator to replicator (`meerkat.inter.control`, routing key = target DC).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InterControl {
    /// "Send me your sessions": after a gap, an unknown epoch, or a start.
    SnapshotRequest { from_dc: String },
    /// Every live session of `origin_dc` as of `seq` in `epoch`; events after `seq` follow on
    /// the stream.
    Snapshot {
        origin_dc: String,
        epoch: String,
        seq: u64,
        sessions: Vec<SessionInfo>,
    },
    /// Persistent-data replication (see [`crate::data`]).
    Data(crate::data::DataControl),
}

impl ReplicatedEvent {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_json(bytes: &[u8]) -> Result<ReplicatedEvent, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

impl InterControl {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_json(bytes: &[u8]) -> Result<InterControl, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}
