//! What a client sends for stream management (XEP-0198): the `previd` of `<resume/>` and the
//! `h` of `<a/>` and `<resume/>`, read before any session is involved. Besides crashes and
//! hangs: an id that reads back encodes to the same text's meaning (it reads back equal), and
//! an accepted `h` is the number the attribute says.
#![no_main]

use c2s_gateway::sm::{h_of, ResumeId};
use libfuzzer_sys::fuzz_target;
use meerkat_xmpp::Element;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(id) = ResumeId::parse(text) {
        assert_eq!(ResumeId::parse(&id.encode()), Some(id.clone()));
        assert!(id.same_secret(&id));
    }
    let el = Element::new("a", meerkat_xmpp::ns::SM).with_attr("h", text);
    if let Ok(h) = h_of(&el) {
        assert_eq!(text.trim().parse::<u32>().ok(), Some(h));
    }
});
