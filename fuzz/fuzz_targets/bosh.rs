//! BOSH bodies (XEP-0124/0206, `meerkat_xmpp::bosh`) on arbitrary text, the first byte
//! choosing the limits before (odd) or after authentication: the head and the children of a
//! request never panic; every child accepted, written into a response body as the gateway
//! writes it, reads back as the same element; text cut for a response never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meerkat_xmpp::bosh::{body, outbound, parse_children, parse_head};
use meerkat_xmpp::Limits;

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
    let _ = outbound(text);
    if let Ok(head) = parse_head(text) {
        let _ = (head.rid(), head.restarts(), head.terminates());
    }
    if let Ok(children) = parse_children(text, &limits) {
        let written: Vec<String> = children.iter().map(|c| c.to_client_xml()).collect();
        let response = body(&[("sid", "s".to_owned())], &written);
        let again = parse_children(&response, &Limits::internal())
            .unwrap_or_else(|e| panic!("reading {response:?}: {e}"));
        assert_eq!(again, children, "round trip of {response:?}");
    }
});
