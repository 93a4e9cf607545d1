//! XEP-0198 stream management: a session's counters, what it wrote that the client has not
//! acknowledged, its resumption id, and the protocol's elements.
//!
//! Every stanza a session writes (a delivered one, or a reply the gateway makes itself) is
//! numbered and kept until the client's `<a h/>` covers it; its broker delivery is acknowledged
//! only then (registry.rs `Delivered`), so a gateway that dies still leaves it in its queue. A
//! stanza handed to a detached session counts as written to a connection that is gone: it is
//! kept the same way and written when the client resumes.

use std::collections::VecDeque;
use std::fmt::Write as _;

use base64::Engine as _;
use meerkat_xmpp::{ns, Element, StreamError};

/// The gateway asks for an ack (`<r/>`) once this many stanzas wait for one.
pub const REQUEST_EVERY: usize = 5;

/// Something written to the client and still owed an acknowledgement: the caller's item and
/// its size.
struct Kept<T> {
    item: T,
    bytes: usize,
}

/// The stream management state of one session.
pub struct Sm<T> {
    /// Stanzas the client sent that the gateway handled (the `h` the gateway answers).
    pub handled: u32,
    /// Stanzas written to the client since `<enable/>`, modulo 2^32.
    sent: u32,
    unacked: VecDeque<Kept<T>>,
    bytes: usize,
    /// When an `<r/>` went out that no `<a/>` answered yet.
    pub requested: Option<std::time::Instant>,
    /// Set when the client asked for resumption.
    pub resume: Option<Resume>,
}

/// A resumable session's id and window (seconds).
pub struct Resume {
    pub id: ResumeId,
    pub max: u64,
}

/// `<a h/>` acknowledged more than was sent (XEP-0198 §4: `handled-count-too-high`).
#[derive(Debug, PartialEq, Eq)]
pub struct TooHigh {
    pub h: u32,
    pub sent: u32,
}

impl<T> Default for Sm<T> {
    fn default() -> Self {
        Sm {
            handled: 0,
            sent: 0,
            unacked: VecDeque::new(),
            bytes: 0,
            requested: None,
            resume: None,
        }
    }
}

impl<T> Sm<T> {
    /// The state of a session moved here from another gateway: what that gateway handled of
    /// the client's stanzas, and what the client got (its `h`), from which this one counts on.
    pub fn moved_in(handled: u32, sent: u32) -> Sm<T> {
        Sm {
            handled,
            sent,
            ..Sm::default()
        }
    }

    /// One stanza written (or, while detached, due): numbered and kept until acknowledged.
    pub fn wrote(&mut self, item: T, bytes: usize) {
        self.sent = self.sent.wrapping_add(1);
        self.bytes += bytes;
        self.unacked.push_back(Kept { item, bytes });
    }

    /// The client's `h`: the acknowledged stanzas leave the queue, oldest first. An `h` behind
    /// one already given acknowledges nothing more.
    pub fn acked(&mut self, h: u32) -> Result<Vec<T>, TooHigh> {
        let len = self.unacked.len();
        let first = self
            .sent
            .wrapping_sub(u32::try_from(len).unwrap_or(u32::MAX));
        let n = h.wrapping_sub(first);
        if n as usize > len {
            // Wrapped below `first`: an old count, not a new one.
            if (n as i32) < 0 {
                return Ok(Vec::new());
            }
            return Err(TooHigh { h, sent: self.sent });
        }
        let out: Vec<T> = self
            .unacked
            .drain(..n as usize)
            .map(|k| {
                self.bytes -= k.bytes;
                k.item
            })
            .collect();
        if self.unacked.is_empty() && self.unacked.capacity() > 16 {
            self.unacked = VecDeque::new();
        }
        Ok(out)
    }

    /// Whether a request is out and unanswered for longer than `patience`.
    pub fn request_unanswered_for(&self, patience: std::time::Duration) -> bool {
        self.requested.is_some_and(|t| t.elapsed() > patience)
    }

    /// Whether to ask the client for an ack now.
    pub fn should_request(&self) -> bool {
        self.requested.is_none() && self.unacked.len() >= REQUEST_EVERY
    }

    /// The stanza written last.
    pub fn newest(&self) -> Option<&T> {
        self.unacked.back().map(|k| &k.item)
    }

    pub fn unacked_len(&self) -> usize {
        self.unacked.len()
    }

    /// Bytes of the stanzas waiting for an acknowledgement.
    pub fn unacked_bytes(&self) -> usize {
        self.bytes
    }

    /// The unacknowledged stanzas, oldest first (to write them again on resumption).
    pub fn unacked(&self) -> impl Iterator<Item = &T> {
        self.unacked.iter().map(|k| &k.item)
    }

    /// Everything unacknowledged, oldest first, leaving the queue empty (the session ends).
    pub fn take_unacked(&mut self) -> Vec<T> {
        self.bytes = 0;
        std::mem::take(&mut self.unacked)
            .into_iter()
            .map(|k| k.item)
            .collect()
    }
}

/// What names a resumable session to its client: the full JID it is bound to, a secret only
/// that client was given, and where the session was when the id was given (its DC and gateway:
/// [`Holder`]). Written as `previd` (base64url, no padding): the secret, the JID, then a NUL
/// byte, the DC, a NUL byte and the gateway (an id of 1.8 and before ends with the JID). After
/// the session moves to the gateway where its client resumed, the client keeps resuming with
/// the same id (XEP-0198 keeps one id for the stream's life), and the new holder inherits the
/// secret; the place it names is then where the session was, a hint only
/// (crate::handover::ask).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResumeId {
    pub jid: String,
    pub secret: [u8; 16],
    pub holder: Option<Holder>,
}

/// The DC and gateway instance a [`ResumeId`] was given at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub dc: String,
    pub gateway: String,
}

/// Longest `previd` read (a full JID is at most 3 × 1023 bytes, a DC and a gateway id at most
/// [`MAX_NAME`] each; anything longer is not ours).
const MAX_PREVID: usize = 4800;
/// Longest DC or gateway id a `previd` names.
const MAX_NAME: usize = 255;

impl ResumeId {
    /// A new id for the session bound to `jid` at gateway `gateway` of DC `dc`.
    pub fn new(jid: &str, dc: &str, gateway: &str) -> ResumeId {
        ResumeId {
            jid: jid.to_owned(),
            secret: rand::random(),
            holder: Some(Holder {
                dc: dc.to_owned(),
                gateway: gateway.to_owned(),
            }),
        }
    }

    pub fn encode(&self) -> String {
        let mut raw = Vec::with_capacity(16 + self.jid.len() + 64);
        raw.extend_from_slice(&self.secret);
        raw.extend_from_slice(self.jid.as_bytes());
        if let Some(h) = &self.holder {
            for part in [&h.dc, &h.gateway] {
                raw.push(0);
                raw.extend_from_slice(part.as_bytes());
            }
        }
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    /// Reads a client's `previd`; `None` for anything no gateway gave out.
    pub fn parse(previd: &str) -> Option<ResumeId> {
        if previd.len() > MAX_PREVID {
            return None;
        }
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(previd)
            .ok()?;
        if raw.len() <= 16 {
            return None;
        }
        let secret: [u8; 16] = raw[..16].try_into().ok()?;
        let text = String::from_utf8(raw[16..].to_vec()).ok()?;
        // No JID holds a NUL (RFC 7622 forbids control characters).
        let mut parts = text.split('\0');
        let jid = parts.next()?.to_owned();
        let holder = match (parts.next(), parts.next(), parts.next()) {
            (None, _, _) => None,
            (Some(dc), Some(gateway), None)
                if !dc.is_empty()
                    && !gateway.is_empty()
                    && dc.len() <= MAX_NAME
                    && gateway.len() <= MAX_NAME =>
            {
                Some(Holder {
                    dc: dc.to_owned(),
                    gateway: gateway.to_owned(),
                })
            }
            _ => return None,
        };
        // A full JID: an account and a resource.
        let (bare, resource) = jid.split_once('/')?;
        if bare.is_empty() || resource.is_empty() {
            return None;
        }
        Some(ResumeId {
            jid,
            secret,
            holder,
        })
    }

    /// The account (bare JID) the id's session belongs to.
    pub fn account(&self) -> &str {
        self.jid.split('/').next().unwrap_or_default()
    }

    /// Whether `other` carries this id's secret (compared in constant time).
    pub fn same_secret(&self, other: &ResumeId) -> bool {
        same_secret(&self.secret, &other.secret)
    }

    /// The secret as text (hex), as a handover request carries it.
    pub fn secret_hex(&self) -> String {
        self.secret
            .iter()
            .fold(String::with_capacity(32), |mut s, b| {
                let _ = write!(s, "{b:02x}");
                s
            })
    }

    /// Whether `hex` (a handover request's) is this id's secret (compared in constant time).
    pub fn secret_is_hex(&self, hex: &str) -> bool {
        let mut other = [0u8; 16];
        if hex.len() != 32 || !hex.is_ascii() {
            return false;
        }
        for (i, b) in other.iter_mut().enumerate() {
            match u8::from_str_radix(&hex[2 * i..2 * i + 2], 16) {
                Ok(v) => *b = v,
                Err(_) => return false,
            }
        }
        same_secret(&self.secret, &other)
    }
}

fn same_secret(a: &[u8; 16], b: &[u8; 16]) -> bool {
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// The `h` attribute of `<a/>` or `<resume/>`: an unsigned 32-bit count.
pub fn h_of(el: &Element) -> Result<u32, StreamError> {
    el.attr("h")
        .and_then(|h| h.trim().parse::<u32>().ok())
        .ok_or_else(|| {
            StreamError::with_text(
                "bad-format",
                format!("<{}/> needs an h attribute from 0 to 4294967295", el.name()),
            )
        })
}

/// The stream error for an `h` above what was sent (XEP-0198 §4).
pub fn too_high(t: &TooHigh) -> String {
    format!(
        "<stream:error><undefined-condition xmlns='{}'/><handled-count-too-high xmlns='{}' h='{}' send-count='{}'/></stream:error></stream:stream>",
        ns::STREAMS_ERR,
        ns::SM,
        t.h,
        t.sent
    )
}

/// `<a h/>` for the client.
pub fn ack(h: u32) -> String {
    format!("<a xmlns='{}' h='{h}'/>", ns::SM)
}

/// `<r/>` for the client.
pub fn request() -> String {
    format!("<r xmlns='{}'/>", ns::SM)
}

/// `<enabled/>`, with the resumption id and window when resumable.
pub fn enabled(resume: Option<(&ResumeId, u64)>) -> String {
    let mut out = format!("<enabled xmlns='{}'", ns::SM);
    if let Some((id, max)) = resume {
        let _ = write!(out, " id='{}' resume='true' max='{max}'", id.encode());
    }
    out.push_str("/>");
    out
}

/// How a resumption is answered: `<resumed/>` on its own (XEP-0198 §5), or, when the client
/// resumed inline in SASL2's `<authenticate/>` (XEP-0198 §7.2), inside the `<success/>` that
/// ends the authentication (XEP-0388 §2.6.1), with no stream features after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResumedAs {
    /// The `previd` to echo.
    pub previd: String,
    /// SASL2: the mechanism's additional data (base64), if it has any.
    pub sasl2: Option<Option<String>>,
}

impl ResumedAs {
    /// The answer, `h` being what the gateway handled of the client's stanzas and `jid` the
    /// session's full JID (SASL2's authorization identifier after a resumption).
    pub fn xml(&self, h: u32, jid: &str) -> String {
        let resumed = resumed(&self.previd, h);
        match &self.sasl2 {
            None => resumed,
            Some(additional) => crate::sasl::sasl2_success(additional.as_deref(), jid, &resumed),
        }
    }
}

/// `<resumed/>`: what the gateway handled of the client's stanzas.
pub fn resumed(previd: &str, h: u32) -> String {
    format!(
        "<resumed xmlns='{}' h='{h}' previd='{}'/>",
        ns::SM,
        meerkat_xmpp::escape_attr(previd)
    )
}

/// `<failed/>` with a stanza error condition, and `h` when the session is known.
pub fn failed(condition: &str, h: Option<u32>) -> String {
    let h = h.map(|h| format!(" h='{h}'")).unwrap_or_default();
    format!(
        "<failed xmlns='{}'{h}><{condition} xmlns='{}'/></failed>",
        ns::SM,
        ns::STANZAS_ERR
    )
}

/// The window a client asked for (`max`, seconds), within the gateway's.
pub fn window(el: &Element, limit: u64) -> u64 {
    el.attr("max")
        .and_then(|m| m.trim().parse::<u64>().ok())
        .filter(|m| *m > 0)
        .map_or(limit, |m| m.min(limit))
}

/// Whether the client asked for a resumable session (`resume='true'` or `'1'`).
pub fn wants_resume(el: &Element) -> bool {
    matches!(el.attr("resume"), Some("true" | "1"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sm_with(n: u32) -> Sm<u32> {
        let mut sm = Sm::default();
        for i in 1..=n {
            sm.wrote(i, 10);
        }
        sm
    }

    #[test]
    fn an_ack_releases_what_it_covers_oldest_first() {
        let mut sm = sm_with(5);
        assert_eq!(sm.acked(2), Ok(vec![1, 2]));
        assert_eq!(sm.unacked_len(), 3);
        assert_eq!(sm.unacked_bytes(), 30);
        assert_eq!(sm.acked(2), Ok(vec![]), "the same h again: nothing more");
        assert_eq!(sm.acked(1), Ok(vec![]), "an older h: nothing more");
        assert_eq!(sm.acked(5), Ok(vec![3, 4, 5]));
        assert_eq!(sm.unacked_len(), 0);
    }

    #[test]
    fn an_h_above_what_was_sent_is_refused() {
        let mut sm = sm_with(3);
        assert_eq!(sm.acked(4), Err(TooHigh { h: 4, sent: 3 }));
        assert_eq!(sm.unacked_len(), 3, "nothing released");
    }

    #[test]
    fn counters_wrap_at_two_to_the_32() {
        let mut sm: Sm<u32> = Sm {
            sent: u32::MAX - 1,
            ..Sm::default()
        };
        for i in 0..4 {
            sm.wrote(i, 1);
        }
        // Sent numbers u32::MAX, 0, 1, 2 (mod 2^32).
        assert_eq!(sm.acked(0), Ok(vec![0, 1]));
        assert_eq!(sm.acked(2), Ok(vec![2, 3]));
        assert_eq!(sm.acked(3), Err(TooHigh { h: 3, sent: 2 }));
    }

    #[test]
    fn the_gateway_asks_for_acks_every_few_stanzas() {
        let mut sm = sm_with(REQUEST_EVERY as u32 - 1);
        assert!(!sm.should_request());
        sm.wrote(99, 1);
        assert!(sm.should_request());
        sm.requested = Some(std::time::Instant::now());
        assert!(!sm.should_request(), "one request at a time");
    }

    #[test]
    fn a_resume_id_reads_back_and_refuses_what_it_never_gave() {
        let id = ResumeId::new("alice@example.com/phone", "dc1", "dc1-gw-1");
        let back = ResumeId::parse(&id.encode()).unwrap();
        assert_eq!(back, id);
        let holder = back.holder.as_ref().unwrap();
        assert_eq!(
            (holder.dc.as_str(), holder.gateway.as_str()),
            ("dc1", "dc1-gw-1")
        );
        // An id given by 1.8 or before names no holder, and still reads.
        let old = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode([&id.secret[..], id.jid.as_bytes()].concat());
        let back = ResumeId::parse(&old).unwrap();
        assert_eq!((back.jid.as_str(), &back.holder), (id.jid.as_str(), &None));
        assert!(back.same_secret(&id));
        assert_eq!(back.account(), "alice@example.com");
        assert!(back.same_secret(&id));
        assert!(id.secret_is_hex(&id.secret_hex()));
        let other = ResumeId::new(&id.jid, "dc1", "dc1-gw-1");
        assert!(!other.same_secret(&id));
        assert!(!other.secret_is_hex(&id.secret_hex()));
        assert!(!id.secret_is_hex("zz"));
        let bare = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode([&[0u8; 16][..], b"alice@example.com"].concat());
        let hint = |tail: &[u8]| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode([&[0u8; 16][..], b"alice@example.com/phone", tail].concat())
        };
        let (no_gateway, empty_dc, too_many, too_long) = (
            hint(b"\0dc1"),
            hint(b"\0\0gw"),
            hint(b"\0dc1\0gw\0x"),
            hint(&[b"\0dc1\0".as_slice(), &[b'g'; 256]].concat()),
        );
        for bad in [
            "",
            "!!",
            "AAAA",
            &"A".repeat(6000),
            &bare,
            &no_gateway,
            &empty_dc,
            &too_many,
            &too_long,
        ] {
            assert_eq!(ResumeId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn elements_are_the_xeps() {
        assert_eq!(ack(7), "<a xmlns='urn:xmpp:sm:3' h='7'/>");
        assert_eq!(
            failed("item-not-found", None),
            "<failed xmlns='urn:xmpp:sm:3'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"
        );
        let el =
            Element::parse("<enable xmlns='urn:xmpp:sm:3' resume='true' max='9000'/>").unwrap();
        assert!(wants_resume(&el));
        assert_eq!(window(&el, 300), 300);
        let el = Element::parse("<a xmlns='urn:xmpp:sm:3' h='-1'/>").unwrap();
        assert!(h_of(&el).is_err());
    }
}
