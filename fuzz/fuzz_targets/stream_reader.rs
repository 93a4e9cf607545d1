//! The client stream reader on arbitrary bytes, with the limits a gateway uses before and
//! after authentication. Besides crashes and hangs it checks the property every relayed stanza
//! relies on: what the reader accepted, written back, is read again as the same element.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meerkat_xmpp::{Element, Inbound, Limits, StreamReader};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the limits, so both sets get explored.
    let (limits, input) = match data.split_first() {
        Some((b, rest)) if b & 1 == 1 => (Limits::default().unauthenticated(), rest),
        Some((_, rest)) => (Limits::default(), rest),
        None => return,
    };
    futures::executor::block_on(async {
        let mut reader = StreamReader::new(input, limits);
        // Every item consumes input, so this ends; the bound only guards against a regression.
        for _ in 0..input.len() + 2 {
            match reader.next().await {
                Ok(Inbound::Stanza(el)) => {
                    let written = el.to_client_xml();
                    let framed = el.to_xml();
                    let again = Element::parse(&framed)
                        .unwrap_or_else(|e| panic!("reader accepted, writer wrote {written:?}: {e}"));
                    assert_eq!(again, el, "round trip of {framed:?}");
                }
                Ok(Inbound::Open(_)) => {}
                Ok(Inbound::Close) | Err(_) => return,
            }
        }
        panic!("more items than input bytes");
    });
});
