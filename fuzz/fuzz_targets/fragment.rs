//! `Element::parse` (stored stanzas, envelopes between services and DCs) on arbitrary text:
//! no crash, and what it accepts round-trips through the writer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meerkat_xmpp::Element;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(el) = Element::parse(text) {
        let framed = el.to_xml();
        let again = Element::parse(&framed).unwrap_or_else(|e| panic!("wrote {framed:?}: {e}"));
        assert_eq!(again, el, "round trip of {framed:?}");
    }
});
