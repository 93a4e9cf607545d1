//! Whatever the writer emits, the reader accepts and reads back as the same tree: the
//! property every relayed, stored or wrapped stanza relies on. Trees are generated with any
//! characters XML allows, names with non-ASCII letters, and namespaces that need escaping.

use meerkat_xmpp::chars::is_xml_char;
use meerkat_xmpp::{Element, Inbound, Limits, StreamReader};
use proptest::prelude::*;

fn xml_text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(
        any::<char>().prop_filter("XML Char", |c| is_xml_char(*c)),
        0..max,
    )
    .prop_map(String::from_iter)
}

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z_é][a-zA-Z0-9_.é-]{0,6}"
}

fn namespace() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("jabber:client".to_owned()),
        Just("urn:xmpp:test".to_owned()),
        Just(String::new()),
        xml_text(12),
    ]
}

#[derive(Clone, Debug)]
enum Part {
    Text(String),
    Child(Element),
}

fn element() -> impl Strategy<Value = Element> {
    let leaf = (
        name(),
        namespace(),
        prop::collection::btree_map("[a-z]{1,4}", xml_text(10), 0..4),
    )
        .prop_map(|(name, ns, attrs)| {
            let mut el = Element::new(name, ns);
            for (k, v) in attrs {
                el.set_attr(k, v);
            }
            el
        });
    leaf.prop_recursive(4, 40, 6, |inner| {
        (
            inner.clone(),
            prop::collection::vec(
                prop_oneof![
                    xml_text(16).prop_map(Part::Text),
                    inner.prop_map(Part::Child)
                ],
                0..6,
            ),
        )
            .prop_map(|(mut el, parts)| {
                for part in parts {
                    match part {
                        // Empty text is no node once written; adjacent text merges.
                        Part::Text(t) if t.is_empty() => {}
                        Part::Text(t) => el.push_text(t),
                        Part::Child(c) => el.push_child(c),
                    }
                }
                el
            })
    })
}

proptest! {
    #[test]
    fn a_written_element_parses_back_the_same(el in element()) {
        let xml = el.to_xml();
        let again = Element::parse(&xml).map_err(|e| TestCaseError::fail(format!("{xml:?}: {e}")))?;
        prop_assert_eq!(again, el, "{}", xml);
    }

    #[test]
    fn a_written_stanza_reads_back_the_same_from_a_client_stream(el in element()) {
        let el = Element::new("message", "jabber:client").with_child(el);
        let input = format!(
            "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>{}",
            el.to_client_xml()
        );
        let limits = Limits { max_depth: 64, ..Limits::default() };
        let got = futures_lite_block_on(async {
            let mut reader = StreamReader::new(input.as_bytes(), limits);
            let _header = reader.next().await;
            reader.next().await
        });
        match got {
            Ok(Inbound::Stanza(again)) => prop_assert_eq!(again, el),
            other => prop_assert!(false, "{:?} for {}", other, input),
        }
    }
}

/// Reading from memory never waits, so a runtime is not needed.
fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(f)
}
