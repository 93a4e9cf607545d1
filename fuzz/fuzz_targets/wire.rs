//! What arrives from another process or DC, read by `meerkat-wire`: the `x-meerkat-wire` and
//! `x-meerkat-kind` header values, the route envelope, every JSON event, a fan-out's
//! recipients. Besides crashes and hangs: an accepted version or kind is written back as what
//! it was read from (up to the legacy integer form), an envelope's stanza, wrapped again,
//! unwraps to the same element, accepted recipients, written again, read the same, and a bundle
//! read as one stanza per recipient holds exactly that many, each written again the same, and a
//! data message (one change or a batch) reads as changes in increasing order that, written
//! again as a batch, read the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meerkat_wire::data::{read_changes, DataChange, DataChanges};
use meerkat_wire::{
    envelope, fanout, ControlEvent, Heartbeat, InterControl, ReplicatedEvent, RouteKind, SessionEvent,
    WireVersion,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(v) = WireVersion::parse(text) {
            assert_eq!(WireVersion::parse(&v.to_string()), Ok(v), "{text:?}");
        }
        if let Ok(k) = RouteKind::parse(text) {
            assert_eq!(k.as_str(), text);
        }
        if let Ok(r) = fanout::decode(text) {
            assert!(!r.is_empty() && r.len() <= fanout::MAX_RECIPIENTS);
            assert_eq!(fanout::decode(&fanout::encode(&r)), Ok(r));
        }
    }
    if let Ok(Some(stanza)) = envelope::unwrap(data) {
        let again = envelope::wrap(Some(&stanza), "dc1.example.com", "dc2.example.com");
        assert_eq!(envelope::unwrap(again.as_bytes()), Ok(Some(stanza)));
    }
    let recipient = |n: u128| fanout::Recipient {
        session: uuid::Uuid::from_u128(n),
        id: n.to_string(),
        to: "u@example.com/r".to_owned(),
    };
    for n in 1..=3 {
        if let Ok(pairs) = fanout::unbundle(data, (0..n).map(recipient).collect()) {
            assert_eq!(pairs.len() as u128, n);
            let stanzas: Vec<_> = pairs.iter().map(|(_, s)| s).collect();
            let again = fanout::bundle(&stanzas).to_xml();
            let back = fanout::unbundle(again.as_bytes(), (0..n).map(recipient).collect());
            assert_eq!(back, Ok(pairs));
        }
    }
    let _ = SessionEvent::from_json(data);
    let _ = ControlEvent::from_json(data);
    let _ = ReplicatedEvent::from_json(data);
    let _ = InterControl::from_json(data);
    let _ = DataChange::from_json(data);
    if let Ok(changes) = read_changes(data) {
        assert!(!changes.is_empty());
        assert!(changes.windows(2).all(|w| w[0].seq < w[1].seq));
        let again = DataChanges::json_of(&changes);
        assert_eq!(read_changes(&again).ok(), Some(changes));
    }
    let _ = Heartbeat::from_json(data);
});
