use super::*;

fn parse(frame: &str) -> Result<Option<Inbound>, ReadError> {
    parse_frame(frame, &Limits::default())
}

fn condition(r: Result<Option<Inbound>, ReadError>) -> &'static str {
    match r {
        Err(ReadError::Stream(e)) => e.condition,
        other => panic!("expected a stream error, got {other:?}"),
    }
}

#[test]
fn open_is_the_stream_header_and_close_its_end() {
    let open = parse(
        "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='example.com' version='1.0' xml:lang='en'/>",
    )
    .unwrap();
    let Some(Inbound::Open(h)) = open else {
        panic!("{open:?}")
    };
    assert_eq!(h.name, "stream");
    assert_eq!(h.stream_ns, ns::STREAM);
    assert_eq!(h.default_ns.as_deref(), Some(ns::CLIENT));
    assert_eq!(h.to.as_deref(), Some("example.com"));
    assert_eq!(h.version.as_deref(), Some("1.0"));
    assert_eq!(h.lang.as_deref(), Some("en"));
    assert_eq!(
        parse("<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>").unwrap(),
        Some(Inbound::Close)
    );
}

#[test]
fn a_stanza_is_in_jabber_client_declared_or_not() {
    for frame in [
        "<message xmlns='jabber:client' to='a@b'><body>hi</body></message>",
        "<message to='a@b'><body>hi</body></message>",
        " <message to='a@b'><body>hi</body></message>\n",
    ] {
        let Some(Inbound::Stanza(el)) = parse(frame).unwrap() else {
            panic!("{frame}")
        };
        assert!(el.is("message", ns::CLIENT), "{frame}");
        assert_eq!(el.child_text("body", ns::CLIENT).as_deref(), Some("hi"));
    }
    let Some(Inbound::Stanza(auth)) =
        parse("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</auth>")
            .unwrap()
    else {
        panic!()
    };
    assert!(auth.is("auth", ns::SASL));
}

#[test]
fn whitespace_is_a_keepalive() {
    assert_eq!(parse(" \r\n\t").unwrap(), None);
    assert_eq!(parse("").unwrap(), None);
}

#[test]
fn anything_but_one_complete_element_is_not_well_formed() {
    for frame in [
        "<message><body>hi</body>",
        "<message/><message/>",
        "<message/><presence>",
        "<message/>text",
        "text",
        "<message/></m>",
        "</m><m>",
        "<message/></m><m><x/>",
        "<?xml version='1.0'?><message/>",
        "<message",
        "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:client'>",
        "<a></b>",
        "<![CDATA[x]]>",
    ] {
        assert_eq!(condition(parse(frame)), "not-well-formed", "{frame}");
    }
    for frame in ["<!-- hi --><message/>", "<message><?pi x?></message>"] {
        assert_eq!(condition(parse(frame)), "restricted-xml", "{frame}");
    }
}

#[test]
fn the_limits_are_those_of_the_tcp_reader() {
    let limits = Limits::default().unauthenticated();
    let big = format!("<message><body>{}</body></message>", "x".repeat(11 * 1024));
    assert_eq!(condition(parse_frame(&big, &limits)), "policy-violation");
    assert!(parse_frame(&big, &Limits::default()).is_ok());
    let deep = format!("{}{}", "<a>".repeat(40), "</a>".repeat(40));
    assert_eq!(condition(parse(&deep)), "policy-violation");
    assert_eq!(
        condition(parse("<message><body>\u{1}</body></message>")),
        "not-well-formed"
    );
    assert_eq!(condition(parse("<p:x/>")), "bad-namespace-prefix");
}

#[test]
fn tcp_text_becomes_one_message_per_element() {
    let text = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='abc' from='example.com' version='1.0' xml:lang='en'>";
    assert_eq!(
        frames(text).unwrap(),
        vec!["<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' id='abc' from='example.com' version='1.0' xml:lang='en'/>"]
    );
    let text = "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></stream:features>";
    assert_eq!(
        frames(text).unwrap(),
        vec!["<stream:features xmlns:stream='http://etherx.jabber.org/streams'><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></stream:features>"]
    );
    let text = "<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>";
    assert_eq!(
        frames(text).unwrap(),
        vec![
            "<stream:error xmlns:stream='http://etherx.jabber.org/streams'><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>",
            "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>",
        ]
    );
    assert_eq!(
        frames("<message id='a xmlns=b' to='x'><body>hi</body></message><r xmlns='urn:xmpp:sm:3'/> <presence/>")
            .unwrap(),
        vec![
            "<message xmlns='jabber:client' id='a xmlns=b' to='x'><body>hi</body></message>",
            "<r xmlns='urn:xmpp:sm:3'/>",
            "<presence xmlns='jabber:client'/>",
        ]
    );
}

#[test]
fn every_message_cut_from_a_stanza_reads_back_as_that_stanza() {
    let stanza = Element::new("message", ns::CLIENT)
        .with_attr("to", "a@example.com")
        .with_child(Element::new("body", ns::CLIENT).with_text("<&'\"> ünï"))
        .with_child(Element::new("x", "urn:other").with_child(Element::new("y", "urn:other")));
    let cut = frames(&stanza.to_client_xml()).unwrap();
    assert_eq!(cut.len(), 1);
    assert_eq!(parse(&cut[0]).unwrap(), Some(Inbound::Stanza(stanza)));
}
