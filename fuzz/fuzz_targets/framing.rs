//! XMPP over WebSocket framing (RFC 7395, `meerkat_xmpp::framing`) on arbitrary text, the first
//! byte choosing the limits before (odd) or after authentication: a received message parses
//! to at most one item, and every stanza it accepts, cut into messages as the gateway writes
//! it, is exactly one message that parses back as the same element. Text cut into messages
//! (the writer's side, arbitrary here) never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meerkat_xmpp::framing::{frames, parse_frame};
use meerkat_xmpp::{Inbound, Limits};

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let limits = if first % 2 == 1 {
        Limits::default().unauthenticated()
    } else {
        Limits::default()
    };
    let _ = frames(text);
    if let Ok(Some(Inbound::Stanza(el))) = parse_frame(text, &limits) {
        let written = el.to_client_xml();
        let cut = frames(&written).unwrap_or_else(|e| panic!("cutting {written:?}: {e}"));
        assert_eq!(cut.len(), 1, "{written:?} cut into {cut:?}");
        let again = parse_frame(&cut[0], &Limits::internal())
            .unwrap_or_else(|e| panic!("reading {:?}: {e}", cut[0]));
        assert_eq!(again, Some(Inbound::Stanza(el)), "round trip of {:?}", cut[0]);
    }
});
