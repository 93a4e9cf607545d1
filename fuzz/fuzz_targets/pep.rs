//! PEP requests and entity capabilities (issue 17): any payload through the router's
//! `PubsubRequest::parse` (as a get and as a set), any data form through `Form::parse` and
//! the node configuration (configure and publish-options, under a small item cap), and any
//! disco#info answer through the XEP-0115 verification string. Checks that nothing panics;
//! that a parsed publish has exactly one payload and names within the length cap; that no
//! configuration passes the cap; that a verification string is only produced without
//! duplicate features.
//!
//! Input: one byte choosing a template (or raw XML when past them), then text spliced in.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meerkat_xmpp::{Element, StanzaType};
use router::{verification_string, Form, NodeConfig, PubsubRequest};

const TEMPLATES: &[&str] = &[
    "<pubsub xmlns='http://jabber.org/protocol/pubsub'>{I}</pubsub>",
    "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n'><item id='{I}'><a xmlns='x'/></item></publish><publish-options>{I}</publish-options></pubsub>",
    "<pubsub xmlns='http://jabber.org/protocol/pubsub#owner'>{I}</pubsub>",
    "<x xmlns='jabber:x:data' type='submit'>{I}</x>",
    "<query xmlns='http://jabber.org/protocol/disco#info'>{I}</query>",
];

const CAP: u32 = 8;

fuzz_target!(|data: &[u8]| {
    let Some((&t, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let xml = match TEMPLATES.get(usize::from(t)) {
        Some(tpl) => tpl.replace("{I}", &text),
        None => text.into_owned(),
    };
    let Ok(el) = Element::parse(&xml) else {
        return;
    };
    for ty in [StanzaType::Get, StanzaType::Set] {
        if let Ok(PubsubRequest::Publish { node, id, item, .. }) = PubsubRequest::parse(ty, &el) {
            assert!(!node.is_empty() && node.len() <= 256);
            assert!(id.is_none_or(|i| !i.is_empty() && i.len() <= 256));
            assert_eq!(item.children().count(), 1);
        }
    }
    if let Ok(form) = Form::parse(&el) {
        let base = NodeConfig::default_pep();
        for cfg in [base.configure(&form, CAP), base.with_options(&form, CAP)]
            .into_iter()
            .flatten()
        {
            assert!((1..=CAP).contains(&cfg.max_items));
            assert_eq!(NodeConfig::from_json(&cfg.to_json()), cfg);
        }
    }
    if let Some((s, features)) = verification_string(&el) {
        let mut sorted = features.clone();
        sorted.dedup();
        assert_eq!(sorted, features);
        let _ = router::ver_of(&s);
    }
});
