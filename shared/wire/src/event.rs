//! Session events: what the gateways tell the routers (and, later, other DCs) about sessions.
//!
//! Each session has a UUIDv7 id (time-ordered: a later login has a larger id) and a version
//! that grows with every change. A directory applying these events keeps, per full JID, the
//! entry with the largest session id, and for one session the largest version — so a stale
//! or reordered event can never overwrite a newer one.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionEventKind {
    /// A resource was bound.
    Open,
    /// The session's broadcast presence or another routing-relevant attribute changed.
    Update,
    /// The session ended.
    Close,
    /// Re-announcement of a live session (answer to a resync request); same as `update`.
    Announce,
    /// The session's DC was declared down: removed from the directory, but not remembered as
    /// closed (unlike `close`), so that once a partition heals the DC's snapshot brings it back.
    Purge,
}

/// The routing-relevant state of one session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// Full JID `user@domain/resource`.
    pub jid: String,
    pub session_id: Uuid,
    /// Grows with every change of this session.
    pub version: u64,
    /// DC whose gateway holds the connection.
    pub dc: String,
    /// Gateway instance (routing key of its delivery queue).
    pub gateway: String,
    /// Has sent available presence and not since gone unavailable.
    pub available: bool,
    /// Priority of the last broadcast presence (-128..=127).
    pub priority: i8,
    /// The last broadcast presence stanza as sent (with `from` stamped), for probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence: Option<String>,
    /// Has requested the roster (RFC 6121 §2.1.6: roster pushes go to interested resources).
    #[serde(default)]
    pub interested: bool,
    /// Has enabled message carbons (XEP-0280): gets copies of what its account sends and
    /// receives on its other resources.
    #[serde(default)]
    pub carbons: bool,
    /// Has requested the block list (XEP-0191 §3.3: blocking pushes go to these resources).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub blocklist: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEvent {
    /// Wire version ([`crate::WIRE_VERSION`]).
    pub v: u32,
    pub kind: SessionEventKind,
    /// Epoch of the DC that produced the event.
    pub epoch: String,
    pub session: SessionInfo,
}

impl SessionEvent {
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_json(bytes: &[u8]) -> Result<SessionEvent, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// Requests on the control exchange.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ControlEvent {
    /// A router started with an empty directory: every gateway re-announces its sessions.
    Resync { requested_by: String },
    /// The DC's health service changed its view of another DC (also repeated periodically, so
    /// a service that starts late learns the current state). `epoch` is the epoch of the last
    /// heartbeat heard from that DC, if any.
    DcStatus {
        dc: String,
        state: crate::health::DcState,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        epoch: Option<String>,
        reported_by: String,
    },
    /// A gateway of this DC fell silent (or restarted): its sessions of life `epoch` are over.
    /// The health service itself closes them and tells their contacts; this event is for
    /// everything else that holds per-gateway state.
    GatewayDown {
        instance: String,
        epoch: String,
        reported_by: String,
    },
    /// An account's credentials changed or the account was removed (here, or at another DC
    /// and now applied here). Every gateway ends the account's sessions that authenticated
    /// with credentials the account no longer has: `<reset/>` when it still exists,
    /// `<not-authorized/>` when it is gone (docs/security/accounts-and-links.md).
    /// Sent by the gateway that made the change in-band and by the replicator for every
    /// account change it ships or applies; duplicates are harmless.
    AccountChanged {
        username: String,
        reported_by: String,
    },
}

impl ControlEvent {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_json(bytes: &[u8]) -> Result<ControlEvent, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_event_json_is_stable() {
        let ev = SessionEvent {
            v: 1,
            kind: SessionEventKind::Open,
            epoch: "e1".into(),
            session: SessionInfo {
                jid: "a@example.com/r".into(),
                session_id: Uuid::nil(),
                version: 1,
                dc: "dc1".into(),
                gateway: "dc1-gw1".into(),
                available: false,
                priority: 0,
                presence: None,
                interested: false,
                carbons: false,
                blocklist: false,
            },
        };
        let json = String::from_utf8(ev.to_json()).expect("utf8");
        assert_eq!(
            json,
            r#"{"v":1,"kind":"open","epoch":"e1","session":{"jid":"a@example.com/r","session_id":"00000000-0000-0000-0000-000000000000","version":1,"dc":"dc1","gateway":"dc1-gw1","available":false,"priority":0,"interested":false,"carbons":false}}"#
        );
        assert_eq!(SessionEvent::from_json(json.as_bytes()).expect("parse"), ev);
        let ctl = ControlEvent::Resync {
            requested_by: "r1".into(),
        };
        assert_eq!(
            String::from_utf8(ctl.to_json()).expect("utf8"),
            r#"{"kind":"resync","requested_by":"r1"}"#
        );
        let acc = ControlEvent::AccountChanged {
            username: "alice".into(),
            reported_by: "dc1-gw1".into(),
        };
        assert_eq!(
            String::from_utf8(acc.to_json()).expect("utf8"),
            r#"{"kind":"account_changed","username":"alice","reported_by":"dc1-gw1"}"#
        );
    }

    #[test]
    fn fields_a_newer_minor_version_adds_are_ignored() {
        let json = br#"{"v":1,"kind":"close","epoch":"e1","added_later":{"x":[1]},"session":{"jid":"a@example.com/r","session_id":"00000000-0000-0000-0000-000000000000","version":2,"dc":"dc1","gateway":"g","available":false,"priority":0,"new_flag":true}}"#;
        let ev = SessionEvent::from_json(json).expect("extra fields ignored");
        assert_eq!((ev.kind, ev.session.version), (SessionEventKind::Close, 2));
        let ctl = br#"{"kind":"resync","requested_by":"r1","reason":"new"}"#;
        assert!(ControlEvent::from_json(ctl).is_ok());
        // A kind this version does not know is an error (the consumer parks the message).
        assert!(ControlEvent::from_json(br#"{"kind":"recheck","requested_by":"r1"}"#).is_err());
    }
}
