//! A fan-out (`x-meerkat-kind: fanout`, since wire 1.5): one stanza for several sessions in
//! one message, each copy addressed to its recipient (`to`) and known by its own message id
//! (what the gateway shows once and what a bounce of that copy is keyed by). The body is the
//! stanza (to a gateway) or its route envelope (to another DC); the recipients travel in the
//! `x-meerkat-recipients` header as a JSON array of [`Recipient`]s. A room's reflection of a
//! groupchat message to its occupants is one fan-out per gateway and one per other DC instead
//! of one message per occupant (docs/muc.md).
//!
//! A bundle (`x-meerkat-kind: bundle`, since wire 1.5) is its sibling for stanzas that differ:
//! several stanzas for sessions of one gateway, the body `<bundle xmlns='urn:xmpp:meerkat:
//! route:1'>` holding them in order, one recipient per stanza in the same order (its `to` the
//! stanza's own, `-` when it has none). What one handling queues for one gateway (the presences
//! a newcomer to a room gets, a page of archive results) is one message instead of one each.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Recipients in one fan-out message at most; a larger set is sent as several messages.
pub const MAX_RECIPIENTS: usize = 128;

/// Bytes the recipients header takes at most. Every header of a message travels in one AMQP
/// frame, and the services ask for 16 KiB frames (docs/operations.md, `amqp_url`): a larger
/// header frame is a connection error. At about 130 bytes a recipient that is some 90
/// recipients a message; one recipient with the longest JIDs still fits.
pub const MAX_HEADER_BYTES: usize = 12 * 1024;

/// One copy of a fan-out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    /// The session the copy is for.
    #[serde(rename = "s")]
    pub session: Uuid,
    /// The copy's message id.
    pub id: String,
    /// The copy's `to` (the session's full JID).
    pub to: String,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FanoutError {
    #[error("unreadable recipients: {0}")]
    Unreadable(String),
    #[error("no recipients")]
    Empty,
    #[error("{0} recipients, more than {MAX_RECIPIENTS}")]
    TooMany(usize),
    #[error("{0} bytes of recipients, more than {MAX_HEADER_BYTES}")]
    TooLong(usize),
    #[error("a recipient's id or address is empty or longer than 3071 bytes")]
    BadRecipient,
}

/// A bundle's body: `stanzas` in order.
pub fn bundle(stanzas: &[&meerkat_xmpp::Element]) -> meerkat_xmpp::Element {
    let mut b = meerkat_xmpp::Element::new("bundle", crate::headers::ROUTE_NS);
    for s in stanzas {
        b.push_child((*s).clone());
    }
    b
}

/// A bundle's stanzas, each with its recipient: the body must be a bundle holding exactly
/// one stanza per recipient.
pub fn unbundle(
    body: &[u8],
    recipients: Vec<Recipient>,
) -> Result<Vec<(Recipient, meerkat_xmpp::Element)>, FanoutError> {
    let text = std::str::from_utf8(body).map_err(|e| FanoutError::Unreadable(e.to_string()))?;
    let b =
        meerkat_xmpp::Element::parse(text).map_err(|e| FanoutError::Unreadable(e.to_string()))?;
    if !b.is("bundle", crate::headers::ROUTE_NS) {
        return Err(FanoutError::Unreadable(format!(
            "<{}/> is not a bundle",
            b.name()
        )));
    }
    let stanzas: Vec<meerkat_xmpp::Element> = b.children().cloned().collect();
    if stanzas.len() != recipients.len() {
        return Err(FanoutError::Unreadable(format!(
            "{} stanzas for {} recipients",
            stanzas.len(),
            recipients.len()
        )));
    }
    Ok(recipients.into_iter().zip(stanzas).collect())
}

/// The header's value for `recipients`.
pub fn encode(recipients: &[Recipient]) -> String {
    serde_json::to_string(recipients).unwrap_or_else(|_| "[]".to_owned())
}

/// `recipients` cut, in order, into runs that each make one message: at most
/// [`MAX_RECIPIENTS`], encoded within [`MAX_HEADER_BYTES`] (a recipient too long for that
/// alone, which [`decode`] would refuse, goes alone).
pub fn split(recipients: &[Recipient]) -> Vec<&[Recipient]> {
    let mut runs = Vec::new();
    let (mut start, mut bytes) = (0, 2);
    for (i, r) in recipients.iter().enumerate() {
        let len = serde_json::to_string(r).map_or(0, |j| j.len()) + 1;
        if i > start && (i - start == MAX_RECIPIENTS || bytes + len > MAX_HEADER_BYTES) {
            runs.push(&recipients[start..i]);
            (start, bytes) = (i, 2);
        }
        bytes += len;
    }
    if start < recipients.len() {
        runs.push(&recipients[start..]);
    }
    runs
}

/// Reads the header's value: at most [`MAX_HEADER_BYTES`], between 1 and [`MAX_RECIPIENTS`]
/// recipients, each with an id and an address of at most 3071 bytes (a JID's bound, RFC 7622).
pub fn decode(value: &str) -> Result<Vec<Recipient>, FanoutError> {
    if value.len() > MAX_HEADER_BYTES {
        return Err(FanoutError::TooLong(value.len()));
    }
    let recipients: Vec<Recipient> =
        serde_json::from_str(value).map_err(|e| FanoutError::Unreadable(e.to_string()))?;
    match recipients.len() {
        0 => return Err(FanoutError::Empty),
        n if n > MAX_RECIPIENTS => return Err(FanoutError::TooMany(n)),
        _ => {}
    }
    let fits = |s: &str| !s.is_empty() && s.len() <= 3071;
    if recipients.iter().any(|r| !fits(&r.id) || !fits(&r.to)) {
        return Err(FanoutError::BadRecipient);
    }
    Ok(recipients)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(n: u128) -> Recipient {
        Recipient {
            session: Uuid::from_u128(n),
            id: format!("id-{n}"),
            to: format!("u{n}@example.com/phone"),
        }
    }

    #[test]
    fn a_bundle_pairs_each_stanza_with_its_recipient() {
        let m = |b: &str| {
            meerkat_xmpp::Element::new("message", meerkat_xmpp::ns::CLIENT).with_child(
                meerkat_xmpp::Element::new("body", meerkat_xmpp::ns::CLIENT)
                    .with_text(b.to_owned()),
            )
        };
        let (a, b) = (m("a"), m("b"));
        let body = bundle(&[&a, &b]).to_xml();
        let got = unbundle(body.as_bytes(), vec![r(1), r(2)]).unwrap();
        assert_eq!(got, vec![(r(1), a.clone()), (r(2), b)]);
        assert!(unbundle(body.as_bytes(), vec![r(1)]).is_err());
        assert!(unbundle(a.to_xml().as_bytes(), vec![r(1)]).is_err());
        assert!(unbundle(b"<bundle", vec![r(1)]).is_err());
    }

    #[test]
    fn recipients_round_trip() {
        let all: Vec<Recipient> = (1..=MAX_RECIPIENTS as u128).map(r).collect();
        assert_eq!(decode(&encode(&all)), Ok(all));
    }

    /// Realistic recipients (UUID session and ids, a 40-byte full JID) are cut into runs that
    /// each fit the header's budget, in order, none empty, all there.
    #[test]
    fn a_large_set_is_split_into_messages_that_fit_a_frame() {
        let all: Vec<Recipient> = (0..500u128)
            .map(|n| Recipient {
                session: Uuid::from_u128(n),
                id: Uuid::from_u128(n << 64).to_string(),
                to: format!("benchusermuc{n:04}@example.com/bench-resource"),
            })
            .collect();
        let runs = split(&all);
        assert!(runs.len() >= 5, "{} runs", runs.len());
        for run in &runs {
            let header = encode(run);
            assert!(!run.is_empty() && header.len() <= MAX_HEADER_BYTES);
            assert_eq!(decode(&header).as_deref(), Ok(*run));
        }
        assert_eq!(runs.concat(), all);
        assert_eq!(split(&all[..1]), vec![&all[..1]]);
        assert!(split(&[]).is_empty());
    }

    #[test]
    fn bad_recipient_lists_are_refused() {
        assert_eq!(decode("[]"), Err(FanoutError::Empty));
        let many: Vec<Recipient> = (0..=MAX_RECIPIENTS as u128).map(r).collect();
        assert_eq!(
            decode(&encode(&many)),
            Err(FanoutError::TooMany(MAX_RECIPIENTS + 1))
        );
        let mut empty_to = r(1);
        empty_to.to.clear();
        assert_eq!(decode(&encode(&[empty_to])), Err(FanoutError::BadRecipient));
        let mut long = r(1);
        long.to = "x".repeat(MAX_HEADER_BYTES);
        assert_eq!(
            decode(&encode(&[long.clone()])),
            Err(FanoutError::TooLong(encode(&[long]).len()))
        );
        assert!(matches!(
            decode("{\"s\":1}"),
            Err(FanoutError::Unreadable(_))
        ));
        assert!(matches!(
            decode("[{\"s\":\"not a uuid\",\"id\":\"a\",\"to\":\"b\"}]"),
            Err(FanoutError::Unreadable(_))
        ));
    }
}
