//! The router's salvage of a stanza it cannot parse in full: the start tag it answers with an
//! error. Total on any input; what it returns is one of the three stanza names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use router::salvage::head;

fuzz_target!(|data: &[u8]| {
    if let Some(h) = head(data) {
        assert!(matches!(h.name.as_str(), "message" | "presence" | "iq"));
    }
});
