//! BOSH (XEP-0124, XMPP over it: XEP-0206): each HTTP request carries one `<body/>` whose
//! children are stanzas (or nonzas) from the client; each response carries one `<body/>` with
//! what the server wrote meanwhile. Both directions translate to and from what a TCP stream
//! carries, as [`crate::framing`] does for WebSocket, so one protocol engine serves all three:
//! [`parse_head`] reads the body's attributes (`sid`, `rid`, `xmpp:restart`, `type`…),
//! [`parse_children`] its children under the same [`Limits`], character and name checks as a
//! TCP stream's stanzas (the same tree builder), [`outbound`] cuts text written for a TCP
//! stream into elements a response carries, and [`body`] wraps them.

use quick_xml::events::Event;

use crate::framing::{frames, parse_frame};
use crate::reader::map_xml_error;
use crate::{escape_attr, ns, Element, Inbound, Limits, ReadError};

/// The namespace of `<body/>`.
pub const NS: &str = "http://jabber.org/protocol/httpbind";
/// XEP-0206's attributes (`xmpp:version`, `xmpp:restart`, `xmpp:restartlogic`).
pub const XBOSH: &str = "urn:xmpp:xbosh";
/// The largest `rid` XEP-0124 §5 allows (2^53 − 1: exact in a JavaScript number).
pub const MAX_RID: u64 = (1 << 53) - 1;

/// The attributes of a request's `<body/>`, unprefixed ones and `xml:lang` by their names,
/// those in XEP-0206's namespace as `xmpp:…` whatever prefix the client bound it to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Head {
    pub attrs: Vec<(String, String)>,
}

impl Head {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The request id: a decimal integer up to [`MAX_RID`].
    pub fn rid(&self) -> Option<u64> {
        self.get("rid")
            .and_then(|r| r.trim().parse::<u64>().ok())
            .filter(|r| *r <= MAX_RID)
    }

    pub fn sid(&self) -> Option<&str> {
        self.get("sid")
    }

    /// A number attribute (`wait`, `hold`, `inactivity`…).
    pub fn number(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(|v| v.trim().parse().ok())
    }

    /// `type='terminate'`: the client ends the session.
    pub fn terminates(&self) -> bool {
        self.get("type") == Some("terminate")
    }

    /// `xmpp:restart='true'`: the stream restarts (after SASL success).
    pub fn restarts(&self) -> bool {
        matches!(self.get("xmpp:restart"), Some("true" | "1"))
    }
}

fn bad_request(what: &str) -> ReadError {
    ReadError::stream("bad-request", what.to_owned())
}

/// Reads the attributes of the `<body/>` that `text` must open with. Only the start tag is
/// read: what follows is [`parse_children`]'s.
pub fn parse_head(text: &str) -> Result<Head, ReadError> {
    let mut xml = quick_xml::Reader::from_str(text);
    xml.config_mut().check_end_names = false;
    loop {
        let start = match xml.read_event().map_err(map_xml_error)? {
            Event::Start(s) | Event::Empty(s) => s,
            Event::Text(t) if t.iter().all(u8::is_ascii_whitespace) => continue,
            Event::Decl(_) => continue,
            _ => return Err(bad_request("a BOSH request is one <body/> element")),
        };
        if start.local_name().as_ref() != b"body" {
            return Err(bad_request("a BOSH request is one <body/> element"));
        }
        let mut raw = Vec::new();
        let mut xbosh_prefixes = Vec::new();
        for attr in start.attributes().with_checks(true) {
            let attr = attr.map_err(|e| bad_request(&format!("bad attribute: {e}")))?;
            let key = std::str::from_utf8(attr.key.as_ref())
                .map_err(|_| bad_request("invalid UTF-8 in a name"))?
                .to_owned();
            let value = attr
                .unescape_value()
                .map_err(|e| bad_request(&format!("bad attribute value: {e}")))?
                .into_owned();
            if let Some(prefix) = key.strip_prefix("xmlns:") {
                if value == XBOSH {
                    xbosh_prefixes.push(prefix.to_owned());
                }
                continue;
            }
            if key == "xmlns" {
                continue;
            }
            raw.push((key, value));
        }
        let attrs = raw
            .into_iter()
            .filter_map(|(key, value)| match key.split_once(':') {
                None => Some((key, value)),
                Some(("xml", _)) => Some((key, value)),
                Some((prefix, local)) if xbosh_prefixes.iter().any(|p| p == prefix) => {
                    Some((format!("xmpp:{local}"), value))
                }
                Some(_) => None,
            })
            .collect();
        return Ok(Head { attrs });
    }
}

/// The body's children, each checked as a stanza read from a TCP stream is (`limits` apply
/// to the whole body: over `max_stanza_bytes` it is a policy violation). Children that
/// declare no namespace of their own inherit `<body/>`'s; they mean `jabber:client` (as
/// ejabberd and Prosody read them).
pub fn parse_children(text: &str, limits: &Limits) -> Result<Vec<Element>, ReadError> {
    let text = strip_declaration(text);
    let body = match parse_frame(text, limits)? {
        Some(Inbound::Stanza(el)) if el.is("body", NS) => el,
        _ => return Err(bad_request("a BOSH request is one <body/> element")),
    };
    Ok(body
        .children()
        .map(|c| {
            let mut c = c.clone();
            c.move_namespace(NS, ns::CLIENT);
            c
        })
        .collect())
}

/// An XML declaration before `<body/>` (some clients send one) is not part of the element.
fn strip_declaration(text: &str) -> &str {
    let t = text.trim_start();
    if t.starts_with("<?xml") {
        if let Some(end) = t.find("?>") {
            return &t[end + 2..];
        }
    }
    text
}

/// What the engine wrote, cut for a response body.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// Elements, each declaring its namespace.
    pub elements: Vec<String>,
    /// The stream header's attributes (`from`, `id`, `version`…), when it was written.
    pub header: Option<Vec<(String, String)>>,
    /// The stream ended (`</stream:stream>`): the session is over.
    pub close: bool,
}

/// Cuts text written for a TCP stream (stream header, stanzas, `</stream:stream>`) into what
/// a response body carries. Meant for XML this system wrote; an error means it was not XML.
pub fn outbound(text: &str) -> Result<Output, ReadError> {
    let mut out = Output::default();
    for frame in frames(text)? {
        if frame.starts_with("<open ") {
            let open = Element::parse(&frame)?;
            out.header = Some(
                open.attrs()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
            );
        } else if frame.starts_with("<close ") {
            out.close = true;
        } else {
            out.elements.push(frame);
        }
    }
    Ok(out)
}

/// A response `<body/>` with `attrs` (values escaped here) around `elements`.
pub fn body(attrs: &[(&str, String)], elements: &[String]) -> String {
    let mut s = format!(
        "<body xmlns='{NS}' xmlns:xmpp='{XBOSH}' xmlns:stream='{}'",
        ns::STREAM
    );
    for (k, v) in attrs {
        s.push_str(&format!(" {k}='{}'", escape_attr(v)));
    }
    if elements.is_empty() {
        s.push_str("/>");
        return s;
    }
    s.push('>');
    for e in elements {
        s.push_str(e);
    }
    s.push_str("</body>");
    s
}

/// `<body type='terminate' condition=…/>` (XEP-0124 §17.2), with what was still to say.
pub fn terminate(condition: Option<&str>, elements: &[String]) -> String {
    let mut attrs = vec![("type", "terminate".to_owned())];
    if let Some(c) = condition {
        attrs.push(("condition", c.to_owned()));
    }
    body(&attrs, elements)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::default()
    }

    #[test]
    fn the_head_names_xbosh_attributes_whatever_their_prefix() {
        let h = parse_head(
            "<body rid='42' sid='gw.abc' xmlns='http://jabber.org/protocol/httpbind' \
             xmlns:x='urn:xmpp:xbosh' x:restart='true' other:a='1' xml:lang='en'/>",
        )
        .unwrap();
        assert_eq!(h.rid(), Some(42));
        assert_eq!(h.sid(), Some("gw.abc"));
        assert!(h.restarts());
        assert_eq!(h.get("xml:lang"), Some("en"));
        assert_eq!(h.get("other:a"), None);
        assert!(!h.terminates());
        assert!(parse_head("<message/>").is_err());
        assert!(parse_head("not xml").is_err());
        assert_eq!(
            parse_head("<body rid='9007199254740992'/>").unwrap().rid(),
            None
        );
    }

    #[test]
    fn children_are_client_stanzas() {
        let c = parse_children(
            "<?xml version='1.0'?><body xmlns='http://jabber.org/protocol/httpbind' rid='1'>\
             <message to='a@b'><body>hi</body></message>\
             <iq xmlns='jabber:client' type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq></body>",
            &limits(),
        )
        .unwrap();
        assert_eq!(c.len(), 2);
        assert!(c[0].is("message", ns::CLIENT));
        assert_eq!(c[0].child_text("body", ns::CLIENT).as_deref(), Some("hi"));
        assert!(c[1].is("iq", ns::CLIENT));
        assert!(parse_children(
            "<body xmlns='http://jabber.org/protocol/httpbind'><a>",
            &limits()
        )
        .is_err());
        assert!(parse_children("<message/>", &limits()).is_err());
        let big = format!(
            "<body xmlns='{NS}'><message><body>{}</body></message></body>",
            "x".repeat(limits().max_stanza_bytes)
        );
        match parse_children(&big, &limits()) {
            Err(ReadError::Stream(e)) => assert_eq!(e.condition, "policy-violation"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn output_drops_the_header_and_notes_the_end() {
        let o = outbound(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
             xmlns:stream='http://etherx.jabber.org/streams' from='example.com' id='s1' version='1.0'>\
             <stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>",
        )
        .unwrap();
        assert_eq!(o.elements.len(), 1);
        assert!(o.elements[0].starts_with("<stream:features xmlns:stream="));
        let header = o.header.unwrap();
        assert!(header
            .iter()
            .any(|(k, v)| k == "from" && v == "example.com"));
        assert!(!o.close);
        let o = outbound("<message to='a'/></stream:stream>").unwrap();
        assert_eq!(o.elements, ["<message xmlns='jabber:client' to='a'/>"]);
        assert!(o.close);
        assert_eq!(
            terminate(Some("item-not-found"), &[]),
            "<body xmlns='http://jabber.org/protocol/httpbind' xmlns:xmpp='urn:xmpp:xbosh' \
             xmlns:stream='http://etherx.jabber.org/streams' type='terminate' condition='item-not-found'/>"
        );
    }
}
