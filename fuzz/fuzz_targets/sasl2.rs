//! SASL2's `<authenticate/>` (XEP-0388) as a client sends it before it is authenticated: the
//! element read from arbitrary text, its initial response decoded (RFC 6120's `<auth/>` read
//! the same way), and an inline XEP-0198 `<resume/>`'s `h` and `previd`. Besides crashes and
//! hangs: a decoded initial response is what its base64 text says, and an accepted `h` is the
//! number the attribute says.
#![no_main]

use base64::Engine as _;
use c2s_gateway::fuzzing::{initial_response, Profile};
use c2s_gateway::sm::{h_of, ResumeId};
use libfuzzer_sys::fuzz_target;
use meerkat_xmpp::{ns, Element};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(el) = Element::parse(text) else {
        return;
    };
    for profile in [Profile::Sasl2, Profile::Rfc6120] {
        if let Ok(bytes) = initial_response(profile, &el) {
            let b64 = match profile {
                Profile::Sasl2 => el.child_text("initial-response", ns::SASL2).unwrap_or_default(),
                Profile::Rfc6120 => el.text(),
            };
            let b64 = b64.trim();
            if !bytes.is_empty() {
                let engine = base64::engine::general_purpose::STANDARD;
                assert_eq!(engine.decode(b64).ok(), Some(bytes));
            }
        }
    }
    if let Some(resume) = el.get_child("resume", ns::SM) {
        if let Ok(h) = h_of(resume) {
            let said = resume.attr("h").unwrap_or_default().trim().parse::<u32>().ok();
            assert_eq!(said, Some(h));
        }
        if let Some(id) = ResumeId::parse(resume.attr("previd").unwrap_or_default()) {
            assert_eq!(ResumeId::parse(&id.encode()), Some(id.clone()));
        }
    }
});
