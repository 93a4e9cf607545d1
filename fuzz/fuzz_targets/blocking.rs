//! XEP-0191 block list requests (`router::BlockingRequest::parse`): any payload, as a get and
//! as a set, under a small per-request limit. Checks that parsing never panics, that a block
//! carries at least one item, that no request carries more than the limit, and that every JID
//! it yields is normalised (parsing it again gives it back) and listed once.
//!
//! Input: one byte of limit, then the payload's XML (templates reach the rules at once when the
//! fuzzer has not yet found them: a payload starting with byte 0..=4 picks one, the rest is
//! spliced in as the items).
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use meerkat_xmpp::{Element, StanzaType};
use router::BlockingRequest;

const TEMPLATES: &[&str] = &[
    "<blocklist xmlns='urn:xmpp:blocking'/>",
    "<block xmlns='urn:xmpp:blocking'>{I}</block>",
    "<unblock xmlns='urn:xmpp:blocking'>{I}</unblock>",
    "<block xmlns='urn:xmpp:blocking'><item jid='{I}'/><item jid='{I}'/></block>",
    "<unblock xmlns='urn:xmpp:blocking'><item jid='a@{I}'/></unblock>",
];

fuzz_target!(|data: &[u8]| {
    let Some((&limit, rest)) = data.split_first() else {
        return;
    };
    let max = usize::from(limit % 8);
    let xml = match rest.split_first() {
        Some((&t, items)) if usize::from(t) < TEMPLATES.len() => {
            TEMPLATES[usize::from(t)].replace("{I}", &String::from_utf8_lossy(items))
        }
        _ => String::from_utf8_lossy(rest).into_owned(),
    };
    let Ok(payload) = Element::parse(&xml) else {
        return;
    };
    for ty in [StanzaType::Get, StanzaType::Set] {
        let jids = match BlockingRequest::parse(ty, &payload, max) {
            Ok(BlockingRequest::List) => continue,
            Ok(BlockingRequest::Block(jids)) => {
                assert!(!jids.is_empty(), "a block without items");
                jids
            }
            Ok(BlockingRequest::Unblock(jids)) => jids.unwrap_or_default(),
            Err(_) => continue,
        };
        assert_eq!(ty, StanzaType::Set, "a change made by a get");
        assert!(jids.len() <= max, "{} items past the limit {max}", jids.len());
        let mut seen = HashSet::new();
        for j in &jids {
            assert!(seen.insert(j), "{j} listed twice");
            assert!(meerkat_xmpp::Jid::new(j).is_ok(), "{j} does not parse");
            assert_eq!(meerkat_xmpp::addr::full(j), *j, "{j} is not normalised");
        }
    }
});
