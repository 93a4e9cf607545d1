//! Liveness: heartbeats and what the DC's health service concludes from them.
//!
//! Every DC's dc-health publishes a [`Heartbeat`] every `interval_ms` to the federated
//! `meerkat.inter.health` exchange (routing key = its DC id, per-message expiration: a stale
//! heartbeat is noise). Every gateway publishes one to the DC's own `meerkat.health` exchange
//! (routing key `gateway.<instance>`). The health service turns their absence into
//! [`crate::ControlEvent::DcStatus`] and [`crate::ControlEvent::GatewayDown`] on the DC's
//! control exchange.

use serde::{Deserialize, Serialize};

/// One beat of a DC's health service or of a gateway.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Wire version ([`crate::WIRE_VERSION`]).
    pub v: u32,
    /// DC of the sender.
    pub dc: String,
    /// Instance id of the sender (`dc1-health`, `dc1-gw1`, ...).
    pub instance: String,
    /// The sender's epoch: a UUIDv7 made at its start, so a later life compares greater.
    pub epoch: String,
    /// Counts from 1 within the epoch.
    pub seq: u64,
    /// Milliseconds since the Unix epoch when sent.
    pub sent_at_ms: u64,
    /// The sender's beat interval: receivers judge silence against it.
    pub interval_ms: u64,
}

impl Heartbeat {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_json(bytes: &[u8]) -> Result<Heartbeat, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// What a DC's health service believes of another DC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DcState {
    /// Heartbeats arrive.
    Up,
    /// Heartbeats are late, not yet long enough to declare the DC down. Nothing is purged.
    Suspect,
    /// Silent for the configured bound: its sessions are purged here and its contacts told.
    Down,
}

impl DcState {
    pub fn as_str(self) -> &'static str {
        match self {
            DcState::Up => "up",
            DcState::Suspect => "suspect",
            DcState::Down => "down",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_json_is_stable() {
        let hb = Heartbeat {
            v: 1,
            dc: "dc2".into(),
            instance: "dc2-health".into(),
            epoch: "e".into(),
            seq: 7,
            sent_at_ms: 1000,
            interval_ms: 1000,
        };
        let json = String::from_utf8(hb.to_json()).expect("utf8");
        assert_eq!(
            json,
            r#"{"v":1,"dc":"dc2","instance":"dc2-health","epoch":"e","seq":7,"sent_at_ms":1000,"interval_ms":1000}"#
        );
        assert_eq!(Heartbeat::from_json(json.as_bytes()).expect("parse"), hb);
    }
}
