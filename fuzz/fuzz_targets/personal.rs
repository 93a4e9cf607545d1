//! Personal data requests (issue 17): any payload, as a get and as a set, through the router's
//! `PrivateRequest::parse` (XEP-0049) and `VcardRequest::parse` (XEP-0054) under small size
//! limits. Checks that parsing never panics; that no stored private element or vCard passes
//! its limit; that a private request never stores the protocol's own namespaces, names one
//! element per get and one item per key; that only a set changes anything; and that the
//! XEP-0153 photo hash of any vCard (`meerkat_xmpp::avatar::photo_hash`) is empty or 40
//! lowercase hex digits.
//!
//! Input: one byte of limit, then the payload's XML (a payload starting with byte 0..=3 picks
//! a template, the rest spliced in).
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use meerkat_xmpp::{ns, Element, StanzaType};
use router::{PrivateRequest, VcardRequest};

const TEMPLATES: &[&str] = &[
    "<query xmlns='jabber:iq:private'>{I}</query>",
    "<query xmlns='jabber:iq:private'><a xmlns='{I}'/><a xmlns='{I}'>x</a></query>",
    "<vCard xmlns='vcard-temp'>{I}</vCard>",
    "<vCard xmlns='vcard-temp'><PHOTO><BINVAL>{I}</BINVAL></PHOTO></vCard>",
];

fuzz_target!(|data: &[u8]| {
    let Some((&limit, rest)) = data.split_first() else {
        return;
    };
    let max = usize::from(limit) * 4;
    let xml = match rest.split_first() {
        Some((&t, items)) if usize::from(t) < TEMPLATES.len() => {
            TEMPLATES[usize::from(t)].replace("{I}", &String::from_utf8_lossy(items))
        }
        _ => String::from_utf8_lossy(rest).into_owned(),
    };
    let Ok(payload) = Element::parse(&xml) else {
        return;
    };
    let hash = meerkat_xmpp::avatar::photo_hash(&payload);
    assert!(
        hash.is_empty()
            || (hash.len() == 40 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))),
        "photo hash {hash:?}"
    );
    for ty in [StanzaType::Get, StanzaType::Set] {
        match PrivateRequest::parse(ty, &payload, max) {
            Ok(PrivateRequest::Get { ns: n, .. }) => {
                assert_eq!(ty, StanzaType::Get, "a get parsed from a set");
                assert!(![ns::PRIVATE, ns::CLIENT, ns::SERVER].contains(&n.as_str()));
            }
            Ok(PrivateRequest::Set(items)) => {
                assert_eq!(ty, StanzaType::Set, "a change made by a get");
                assert!(!items.is_empty(), "a set stores something");
                let mut keys = HashSet::new();
                for (key, el) in &items {
                    assert!(keys.insert(key.clone()), "{key} twice");
                    assert!(el.to_xml().len() <= max, "an item past the limit {max}");
                    assert!(![ns::PRIVATE, ns::CLIENT, ns::SERVER].contains(&el.ns()));
                    assert_eq!(*key, router_key(el));
                }
            }
            Err(_) => {}
        }
        match VcardRequest::parse(ty, &payload, max) {
            Ok(VcardRequest::Get) => assert_eq!(ty, StanzaType::Get),
            Ok(VcardRequest::Set(stored)) => {
                assert_eq!(ty, StanzaType::Set, "a change made by a get");
                if let Some(xml) = stored {
                    assert!(xml.len() <= max, "a vCard past the limit {max}");
                    assert!(Element::parse(&xml).is_ok(), "a stored vCard that does not parse");
                }
            }
            Err(_) => {}
        }
    }
});

fn router_key(el: &Element) -> String {
    format!("{{{}}}{}", el.ns(), el.name())
}
