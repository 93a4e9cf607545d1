//! XEP-0202 Entity Time of the server (its domain JID): UTC, offset `+00:00` (a server that
//! spans DCs in several time zones has no one local zone; UTC is its time everywhere). A
//! request to a user's full JID is routed to the client like any iq.

use chrono::{DateTime, SecondsFormat, Utc};
use meerkat_xmpp::stanza::iq_result_with;
use meerkat_xmpp::{ns, Element, StanzaError, StanzaType};

/// Answers `<time/>` with the time `now`.
pub fn answer(
    ty: StanzaType,
    request: &Element,
    payload: &Element,
    now: DateTime<Utc>,
) -> Result<Element, StanzaError> {
    match (ty, payload.name()) {
        (StanzaType::Get, "time") => Ok(iq_result_with(
            request,
            Element::new("time", ns::TIME)
                .with_child(Element::new("tzo", ns::TIME).with_text("+00:00"))
                .with_child(
                    Element::new("utc", ns::TIME)
                        .with_text(now.to_rfc3339_opts(SecondsFormat::Millis, true)),
                ),
        )),
        _ => Err(StanzaError::bad_request()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_utc_with_a_zero_offset() {
        let iq = Element::new("iq", ns::CLIENT).with_attr("id", "t");
        let q = Element::new("time", ns::TIME);
        let now = DateTime::from_timestamp(1_765_000_000, 123_000_000).expect("time");
        let r = answer(StanzaType::Get, &iq, &q, now).expect("result");
        let t = r.get_child("time", ns::TIME).expect("time");
        assert_eq!(t.child_text("tzo", ns::TIME).as_deref(), Some("+00:00"));
        assert_eq!(
            t.child_text("utc", ns::TIME).as_deref(),
            Some("2025-12-06T05:46:40.123Z")
        );
        assert!(answer(StanzaType::Set, &iq, &q, now).is_err());
    }
}
