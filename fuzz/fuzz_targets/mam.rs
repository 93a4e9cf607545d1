//! XEP-0313 archive requests (`router::mam`): the query form, RSM paging and preferences a
//! client sends, parsed before anything is looked up. Besides crashes and hangs: a query's
//! page size never exceeds the cap, a preferences list stays within its bound, and what is
//! refused is refused with a condition a client can act on.
//!
//! Input: the first byte picks the iq type (get or set), the rest is the payload's XML.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meerkat_xmpp::{Element, StanzaType};
use router::mam::{MamRequest, MAX_PAGE, MAX_PREFS_JIDS};

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let Ok(el) = Element::parse(text) else {
        return;
    };
    let ty = if first & 1 == 0 {
        StanzaType::Get
    } else {
        StanzaType::Set
    };
    match MamRequest::parse(ty, &el) {
        Ok(MamRequest::Query(q)) => assert!(q.search.max <= MAX_PAGE),
        Ok(MamRequest::PrefsSet(p)) => {
            assert!(p.always.len() <= MAX_PREFS_JIDS && p.never.len() <= MAX_PREFS_JIDS)
        }
        Ok(_) => {}
        Err(e) => assert!(matches!(
            e.condition,
            "bad-request" | "feature-not-implemented" | "policy-violation"
        )),
    }
});
