//! The stream reader against well-formed streams and the inputs RFC 6120 §11 forbids.

use meerkat_xmpp::{Inbound, Limits, ReadError, StreamReader};

const OPEN: &str = "<?xml version='1.0'?><stream:stream to='example.com' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";

async fn read_all(input: String, limits: Limits) -> (Vec<Inbound>, Option<ReadError>) {
    let mut reader = StreamReader::new(tokio::io::BufReader::new(input.as_bytes()), limits);
    let mut out = Vec::new();
    loop {
        match reader.next().await {
            Ok(Inbound::Close) => {
                out.push(Inbound::Close);
                return (out, None);
            }
            Ok(item) => out.push(item),
            Err(e) => return (out, Some(e)),
        }
    }
}

fn condition(err: Option<ReadError>) -> &'static str {
    match err {
        Some(ReadError::Stream(e)) => e.condition,
        other => panic!("expected a stream error, got {other:?}"),
    }
}

#[tokio::test]
async fn reads_header_stanzas_and_close() {
    let input = format!("{OPEN} <message to='b@example.com'><body>hi &lt;3</body></message>\n<presence/></stream:stream>");
    let (items, err) = read_all(input, Limits::default()).await;
    assert!(err.is_none(), "{err:?}");
    let Inbound::Open(h) = &items[0] else {
        panic!("no header")
    };
    assert_eq!(h.to.as_deref(), Some("example.com"));
    assert_eq!(h.default_ns.as_deref(), Some("jabber:client"));
    assert_eq!(h.stream_ns, "http://etherx.jabber.org/streams");
    let Inbound::Stanza(m) = &items[1] else {
        panic!("no message")
    };
    assert_eq!(m.ns(), "jabber:client");
    assert_eq!(
        m.child_text("body", "jabber:client").as_deref(),
        Some("hi <3")
    );
    let Inbound::Stanza(p) = &items[2] else {
        panic!("no presence")
    };
    assert_eq!(p.name(), "presence");
    assert_eq!(items[3], Inbound::Close);
}

#[tokio::test]
async fn a_dtd_is_restricted_xml() {
    let input = "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'><!ENTITY lol2 '&lol;&lol;&lol;'>]><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>".to_string();
    let (_, err) = read_all(input, Limits::default()).await;
    assert_eq!(condition(err), "restricted-xml");
}

#[tokio::test]
async fn an_undeclared_entity_is_not_well_formed() {
    let input = format!("{OPEN}<message><body>&lol9;</body></message>");
    let (_, err) = read_all(input, Limits::default()).await;
    assert_eq!(condition(err), "not-well-formed");
}

#[tokio::test]
async fn comments_and_processing_instructions_are_restricted() {
    let (_, err) = read_all(format!("{OPEN}<!-- hi --><presence/>"), Limits::default()).await;
    assert_eq!(condition(err), "restricted-xml");
    let (_, err) = read_all(format!("{OPEN}<?php x ?><presence/>"), Limits::default()).await;
    assert_eq!(condition(err), "restricted-xml");
}

#[tokio::test]
async fn mismatched_tags_are_not_well_formed() {
    let (_, err) = read_all(
        format!("{OPEN}<message><body></message>"),
        Limits::default(),
    )
    .await;
    assert_eq!(condition(err), "not-well-formed");
}

#[tokio::test]
async fn an_oversized_stanza_is_a_policy_violation() {
    let limits = Limits {
        max_stanza_bytes: 1024,
        ..Limits::default()
    };
    let body = "x".repeat(5000);
    let input = format!("{OPEN}<message><body>{body}</body></message>");
    let (_, err) = read_all(input, limits).await;
    assert_eq!(condition(err), "policy-violation");
    // An endless start tag is cut off too, not buffered.
    let input = format!("{OPEN}<message a='{body}");
    let (_, err) = read_all(input, limits).await;
    assert_eq!(condition(err), "policy-violation");
}

#[tokio::test]
async fn many_small_stanzas_fit_a_small_budget() {
    let limits = Limits {
        max_stanza_bytes: 200,
        ..Limits::default()
    };
    let mut input = OPEN.to_string();
    for i in 0..100 {
        input.push_str(&format!("<message id='{i}'><body>hello</body></message>"));
    }
    input.push_str("</stream:stream>");
    let (items, err) = read_all(input, limits).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(items.len(), 102);
}

#[tokio::test]
async fn deep_nesting_is_a_policy_violation() {
    let open = "<a>".repeat(100);
    let input = format!("{OPEN}<message>{open}");
    let (_, err) = read_all(input, Limits::default()).await;
    assert_eq!(condition(err), "policy-violation");
}

#[tokio::test]
async fn undeclared_prefix_is_reported() {
    let (_, err) = read_all(format!("{OPEN}<foo:bar/>"), Limits::default()).await;
    assert_eq!(condition(err), "bad-namespace-prefix");
}

#[tokio::test]
async fn restart_reads_a_new_header() {
    let input = format!(
        "{OPEN}<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>{OPEN}<iq type='get' id='1'/>"
    );
    let mut reader = StreamReader::new(
        tokio::io::BufReader::new(input.as_bytes()),
        Limits::default(),
    );
    assert!(matches!(reader.next().await, Ok(Inbound::Open(_))));
    assert!(matches!(reader.next().await, Ok(Inbound::Stanza(_))));
    let mut reader = reader.restart();
    assert!(matches!(reader.next().await, Ok(Inbound::Open(_))));
    let Ok(Inbound::Stanza(iq)) = reader.next().await else {
        panic!("no iq")
    };
    assert_eq!(iq.attr("id"), Some("1"));
    assert!(matches!(reader.next().await, Err(ReadError::Eof)));
}

#[tokio::test]
async fn text_before_the_stream_header_is_not_well_formed() {
    let (_, err) = read_all("hello <stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>".into(), Limits::default()).await;
    assert_eq!(condition(err), "not-well-formed");
}

#[tokio::test]
async fn characters_xml_forbids_are_not_well_formed() {
    // Each would reach the recipient as it is and break their stream (RFC 6120 §11.1: XML 1.0).
    for body in [
        "&#1;", "\u{1}", "\u{0}", "&#xFFFE;", "\u{FFFF}", "&#0;", "a\u{1B}b",
    ] {
        let (_, err) = read_all(
            format!("{OPEN}<message><body>{body}</body></message>"),
            Limits::default(),
        )
        .await;
        assert_eq!(condition(err), "not-well-formed", "{body:?}");
        let (_, err) = read_all(format!("{OPEN}<message id='{body}'/>"), Limits::default()).await;
        assert_eq!(condition(err), "not-well-formed", "attribute {body:?}");
        let (_, err) = read_all(format!("{OPEN}{body}<presence/>"), Limits::default()).await;
        assert_eq!(
            condition(err),
            "not-well-formed",
            "between stanzas {body:?}"
        );
    }
    // Inside CDATA a character reference is only text, but a raw control character is not.
    let (_, err) = read_all(
        format!("{OPEN}<message><body><![CDATA[a\u{1}b]]></body></message>"),
        Limits::default(),
    )
    .await;
    assert_eq!(condition(err), "not-well-formed");
}

#[tokio::test]
async fn names_xml_forbids_are_not_well_formed() {
    for stanza in [
        "<a<b/>",
        "<message><a<b>x</a<b></message>",
        "<message a<b='1'/>",
        "<message 1a='1'/>",
        "<message><x\u{1}y/></message>",
    ] {
        let (_, err) = read_all(format!("{OPEN}{stanza}"), Limits::default()).await;
        assert_eq!(condition(err), "not-well-formed", "{stanza}");
    }
}

#[tokio::test]
async fn a_long_namespace_is_shared_and_bounded() {
    // Declared once on the stanza, a namespace is shared by every element in it, not copied.
    let ns = "u".repeat(1000);
    let children = "<c/>".repeat(2000);
    let input = format!("{OPEN}<message><x xmlns='{ns}'>{children}</x></message></stream:stream>");
    let (items, err) = read_all(input, Limits::default()).await;
    assert!(err.is_none(), "{err:?}");
    let Inbound::Stanza(m) = &items[1] else {
        panic!("no message")
    };
    let x = m.children().next().expect("x");
    let first = x.children().next().expect("c").ns_shared();
    assert!(x
        .children()
        .all(|c| std::sync::Arc::ptr_eq(c.ns_shared(), first)));
    // A longer one is refused where it is declared.
    let ns = "u".repeat(64 * 1024);
    let (_, err) = read_all(
        format!("{OPEN}<message><x xmlns='{ns}'/></message>"),
        Limits::default(),
    )
    .await;
    assert_eq!(condition(err), "policy-violation");
    let (_, err) = read_all(
        format!("<stream:stream xmlns='{ns}' xmlns:stream='http://etherx.jabber.org/streams'>"),
        Limits::default(),
    )
    .await;
    assert_eq!(condition(err), "policy-violation");
}

#[tokio::test]
async fn element_attribute_and_declaration_counts_are_bounded() {
    let children = "<c/>".repeat(5000);
    let (_, err) = read_all(
        format!("{OPEN}<message>{children}</message>"),
        Limits::default(),
    )
    .await;
    assert_eq!(condition(err), "policy-violation");
    // The count is per stanza: many stanzas of many elements are fine.
    let children = "<c/>".repeat(4000);
    let stanza = format!("<message>{children}</message>");
    let (items, err) = read_all(
        format!("{OPEN}{stanza}{stanza}{stanza}</stream:stream>"),
        Limits::default(),
    )
    .await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(items.len(), 5);

    let attrs: String = (0..28_000).map(|i| format!(" a{i}='1'")).collect();
    let started = std::time::Instant::now();
    let (_, err) = read_all(format!("{OPEN}<message{attrs}/>"), Limits::default()).await;
    assert_eq!(condition(err), "policy-violation");
    // Refused after the 65th attribute, not after comparing 28,000 with each other (which
    // took seconds): a bound this loose only fails if the work is quadratic again.
    assert!(started.elapsed() < std::time::Duration::from_secs(1));

    let decls: String = (0..17)
        .map(|i| format!(" xmlns:p{i}='urn:x:{i}'"))
        .collect();
    let (_, err) = read_all(format!("{OPEN}<message{decls}/>"), Limits::default()).await;
    assert_eq!(condition(err), "policy-violation");
    let (_, err) = read_all(format!("{OPEN}<message a='1' a='2'/>"), Limits::default()).await;
    assert_eq!(condition(err), "not-well-formed");
}

#[tokio::test]
async fn unauthenticated_limits_are_small() {
    let limits = Limits::default().unauthenticated();
    let body = "x".repeat(11 * 1024);
    let (_, err) = read_all(format!("{OPEN}<iq><q>{body}</q></iq>"), limits).await;
    assert_eq!(condition(err), "policy-violation");
    let (items, err) = read_all(
        format!("{OPEN}<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHNlY3JldA==</auth></stream:stream>"),
        limits,
    )
    .await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(items.len(), 3);
}

#[tokio::test]
async fn restart_with_changes_the_limits() {
    let big = "x".repeat(20 * 1024);
    let input = format!("{OPEN}<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>{OPEN}<message><body>{big}</body></message>");
    let mut reader = StreamReader::new(
        tokio::io::BufReader::new(input.as_bytes()),
        Limits::default().unauthenticated(),
    );
    assert!(matches!(reader.next().await, Ok(Inbound::Open(_))));
    assert!(matches!(reader.next().await, Ok(Inbound::Stanza(_))));
    let mut reader = reader.restart_with(Limits::default());
    assert!(matches!(reader.next().await, Ok(Inbound::Open(_))));
    assert!(matches!(reader.next().await, Ok(Inbound::Stanza(_))));
}
