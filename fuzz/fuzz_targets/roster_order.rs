//! What a session's gateway makes of the roster pushes it is handed (`RosterOrder`, which
//! writes no push older than one written for its item): arbitrary deliveries, separated by
//! 0xFF (never in UTF-8). Besides crashes and hangs: a delivery that was written (not stale),
//! handed again at once, may be held back only if it is a roster push.
#![no_main]

use c2s_gateway::fuzzing::RosterOrder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut order = RosterOrder::default();
    for part in data.split(|b| *b == 0xFF) {
        let Ok(xml) = std::str::from_utf8(part) else {
            continue;
        };
        if !order.stale(xml) {
            // The same state again is never written twice; anything else stays "not stale".
            let again = order.stale(xml);
            let looks_like_push = xml.starts_with("<iq") && xml.contains("jabber:iq:roster");
            assert!(!again || looks_like_push, "{xml}");
        }
    }
});
