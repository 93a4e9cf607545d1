//! Gateway to gateway, when a client resumes a stream-managed session (XEP-0198) at a gateway
//! other than the one holding it: kind [`RouteKind::Handover`](crate::RouteKind::Handover).
//! The `request` goes through the routers (route exchange, partition key the bare JID), which
//! find the session holding the full JID in their directory and pass it to its gateway; the
//! answers go from gateway to gateway on the deliver exchange (routing key: the target gateway
//! instance) or, for another DC, on the inter-DC stanza exchange (routing key: the DC, header
//! [`GATEWAY`](crate::headers::GATEWAY) naming the gateway; that DC's routers pass it on to
//! their deliver exchange unchanged). Header
//! [`HANDOVER`](crate::headers::HANDOVER) says which step it is; `request`, `moved`,
//! `refused` and `fence` carry these JSON bodies, `forward` carries one stanza (XML) as a
//! delivery would, with [`SESSION`](crate::headers::SESSION) naming the session it is for.
//!
//! Since 1.8 a resuming gateway says it reads [`Moved::kept`] ([`Request::inline`]): the
//! holder then sends `moved` once the session has stopped, carrying what it kept, and with
//! [`Moved::fenced`] it stands for the `fence` too. A cross-DC resumption then costs one
//! message each way instead of 3 + one per kept stanza back.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::SessionInfo;

/// The steps, as the header's values.
pub const REQUEST: &str = "request";
pub const MOVED: &str = "moved";
pub const REFUSED: &str = "refused";
pub const FORWARD: &str = "forward";
pub const FENCE: &str = "fence";
/// BOSH (XEP-0124) across the gateways of a DC: a request that reached a gateway other than
/// the one holding its session goes to the holder ([`BoshRequest`]), whose answer comes back
/// ([`BoshReply`]) to be the HTTP response (since 1.3).
pub const BOSH_REQUEST: &str = "bosh-request";
pub const BOSH_REPLY: &str = "bosh-reply";

/// A client at `to_gateway` (at `to_dc`) asks to resume the session bound to `jid`, held by
/// the receiver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Names this resumption in the answers.
    pub request: Uuid,
    /// The full JID the resumption id names.
    pub jid: String,
    /// The session id the resumed session will have at `to_gateway`: `forward`s name it.
    pub new_session: Uuid,
    /// The resumption secret the client presented (hex), checked by the holder.
    pub secret: String,
    /// The authenticated account (bare JID) the client resumes as.
    pub account: String,
    /// The client's `h`: what it received.
    pub h: u32,
    pub to_dc: String,
    pub to_gateway: String,
    /// When it was sent (ms since the Unix epoch): a request met late is refused.
    pub sent_at_ms: u64,
    /// The asking gateway reads the kept stanzas in `moved` ([`Moved::kept`], since 1.8). A
    /// 1.7 gateway's request has no such field: it gets `forward`s and a `fence`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inline: bool,
    /// The asking gateway's queue is bound with its key on the inter-DC stanza exchange
    /// ([`crate::topology::gateway_inter_key`], since 1.9): a holder at another DC sends the
    /// answers there, past the routers. Absent (a 1.8 gateway): through the routers.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub direct: bool,
    /// Sent straight to the gateway the client's resumption id names (since 1.9), not through
    /// the routers: a gateway that neither holds the session nor knows where it went passes it
    /// to its DC's routers (as not `hinted`) instead of refusing it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hinted: bool,
}

/// A stanza the holder kept for the client (not acknowledged, or not yet written), carried in
/// [`Moved::kept`], with the id of the broker delivery it came in (what a bounce is keyed by).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub xml: String,
}

/// The most stanza bytes a `moved` carries in [`Moved::kept`]; the rest follow as `forward`s
/// and a `fence`.
pub const KEPT_INLINE_MAX: usize = 256 * 1024;

/// The holder's answer: the session's state. The stanzas the client had not acknowledged, and
/// whatever arrives for the session meanwhile, follow as `forward` messages, then a `fence`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moved {
    pub request: Uuid,
    /// The session as the holder announced it last (full JID, presence, priority, roster
    /// interest).
    pub session: SessionInfo,
    /// JIDs the session sent directed presence to (RFC 6121 §4.6).
    #[serde(default)]
    pub directed: Vec<String>,
    /// What the holder handled of the client's stanzas (XEP-0198 `h` of `<resumed/>`).
    pub handled: u32,
    /// The resumption window the client was given, in seconds.
    pub max_secs: u64,
    /// What the holder kept, in order, to be written after `<resumed/>` as `forward`s are
    /// (only when the request was [`Request::inline`]; since 1.8).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<Kept>,
    /// Nothing else was kept: this `moved` is the `fence` too (what comes from the holder
    /// later are stragglers; since 1.8).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fenced: bool,
}

/// The holder refuses: unknown session, wrong secret or account, a request met late — or the
/// client's `h` is above what the holder sent (`too_high`: the `h` and the count sent).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    pub request: Uuid,
    #[serde(default)]
    pub too_high: Option<(u32, u32)>,
}

/// Nothing more comes from the holder for the resumption `request` (the resumed session
/// now writes what reached it directly, which it held back until this).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fence {
    pub request: Uuid,
}

/// A BOSH request for a session the receiver holds (the `sid` names it), as it came.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoshRequest {
    /// Names this request in the reply.
    pub request: Uuid,
    /// Where the reply goes: the gateway that has the HTTP request, and its DC.
    pub reply_dc: String,
    pub reply_gateway: String,
    /// The request's `<body/>`.
    pub body: String,
}

/// The holder's response `<body/>` to a [`BoshRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoshReply {
    pub request: Uuid,
    pub body: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_round_trips_and_moved_takes_missing_lists() {
        let r = Request {
            request: Uuid::now_v7(),
            jid: "alice@example.com/phone".into(),
            new_session: Uuid::now_v7(),
            secret: "00".repeat(16),
            account: "alice@example.com".into(),
            h: 7,
            to_dc: "dc2".into(),
            to_gateway: "dc2-gw-1".into(),
            sent_at_ms: 1,
            inline: true,
            direct: true,
            hinted: true,
        };
        let back: Request = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        let refused: Refused =
            serde_json::from_str(&format!("{{\"request\":\"{}\"}}", r.request)).unwrap();
        assert_eq!(refused.too_high, None);
    }

    #[test]
    fn a_1_7_request_asks_for_forwards_and_a_1_7_moved_carries_nothing_kept() {
        let old = r#"{"request":"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b","jid":"a@b/c","new_session":"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c","secret":"00","account":"a@b","h":0,"to_dc":"dc2","to_gateway":"g","sent_at_ms":1}"#;
        let r: Request = serde_json::from_str(old).unwrap();
        assert!(!r.inline);
        // Nor is it answered on a key of its own, nor was it sent past the routers (1.9).
        assert!(!r.direct && !r.hinted);
        // What a 1.9 gateway writes for a 1.7 asker reads the same there: no new fields.
        let written = serde_json::to_string(&r).unwrap();
        for field in ["inline", "direct", "hinted"] {
            assert!(!written.contains(field), "{written}");
        }
        let moved = Moved {
            request: r.request,
            session: crate::SessionInfo {
                jid: "a@b/c".into(),
                session_id: Uuid::now_v7(),
                version: 1,
                dc: "dc1".into(),
                gateway: "g1".into(),
                available: true,
                priority: 0,
                presence: None,
                interested: false,
                carbons: false,
                blocklist: false,
            },
            directed: Vec::new(),
            handled: 3,
            max_secs: 300,
            kept: Vec::new(),
            fenced: false,
        };
        let text = serde_json::to_string(&moved).unwrap();
        assert!(!text.contains("kept") && !text.contains("fenced"), "{text}");
        let with = Moved {
            kept: vec![Kept {
                id: Some("m1".into()),
                xml: "<message/>".into(),
            }],
            fenced: true,
            ..moved
        };
        let back: Moved = serde_json::from_str(&serde_json::to_string(&with).unwrap()).unwrap();
        assert_eq!(back, with);
    }
}
