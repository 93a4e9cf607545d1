//! XMPP over WebSocket (RFC 7395): each WebSocket text message carries one complete element
//! that declares its own namespaces, and `<open/>` / `<close/>` in the framing namespace stand
//! for the stream header and the stream's end.
//!
//! Both directions translate to and from what a TCP stream carries, so one protocol engine
//! serves both transports: [`parse_frame`] turns a received message into what the stream
//! reader yields ([`Inbound`]), under the same [`Limits`] and the same character and name
//! checks (the same tree builder); [`frames`] cuts text written for a TCP stream (a stream
//! header, stanzas, `</stream:stream>`) into messages.

use std::io::Read as _;

use quick_xml::events::{BytesStart, Event};

use crate::reader::{configured, map_xml_error, restricted};
use crate::tree::TreeBuilder;
use crate::{escape_attr, ns, Element, Inbound, Limits, ReadError, StreamHeader};

/// What a message is parsed inside: the namespaces a TCP stream header declares. RFC 7395 has
/// every message declare its own; clients that leave `xmlns='jabber:client'` off a stanza
/// (several do) still mean it, as Prosody and ejabberd read them.
const CONTEXT_OPEN: &[u8] =
    b"<m xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";
const CONTEXT_CLOSE: &[u8] = b"</m>";

/// Parses one received WebSocket text message. `Ok(None)` for a message of whitespace only (a
/// keepalive, ignored as between stanzas on TCP). Anything else must be exactly one complete
/// element: `<open/>` becomes a stream header, `<close/>` the stream's end, any other element a
/// stanza (or nonza). A message over `limits.max_stanza_bytes` is a policy violation; a
/// message that is not one element (none, a fragment, several, text beside it) is not
/// well-formed (RFC 7395 §3.3.3: one complete, parseable element per message).
pub fn parse_frame(frame: &str, limits: &Limits) -> Result<Option<Inbound>, ReadError> {
    if frame.len() > limits.max_stanza_bytes {
        return Err(ReadError::stream("policy-violation", "stanza too large"));
    }
    if frame.bytes().all(|b| b.is_ascii_whitespace()) {
        return Ok(None);
    }
    let input = CONTEXT_OPEN.chain(frame.as_bytes()).chain(CONTEXT_CLOSE);
    let mut xml = configured(std::io::BufReader::new(input));
    let mut buf = Vec::new();
    let mut tree = TreeBuilder::new(*limits);
    let mut context_open = false;
    let mut context_closed = false;
    let mut element: Option<Element> = None;
    loop {
        buf.clear();
        let (resolved, event) = xml
            .read_resolved_event_into(&mut buf)
            .map_err(map_xml_error)?;
        if context_closed && !matches!(event, Event::Eof) {
            return Err(not_one_element("content after the element's end"));
        }
        match event {
            Event::Start(_) if !context_open => context_open = true,
            Event::Start(start) => {
                if element.is_some() && tree.is_idle() {
                    return Err(not_one_element("several elements in one message"));
                }
                tree.open(&start, &resolved, false)?;
            }
            Event::Empty(start) => {
                if element.is_some() && tree.is_idle() {
                    return Err(not_one_element("several elements in one message"));
                }
                if let Some(done) = tree.open(&start, &resolved, true)? {
                    element = Some(done);
                }
            }
            Event::End(_) => match tree.close() {
                // The end of the parsing context: the message's own content is over.
                None => context_closed = true,
                Some(Some(done)) => element = Some(done),
                Some(None) => {}
            },
            Event::Text(text) => {
                if tree.is_idle() {
                    if !text.iter().all(u8::is_ascii_whitespace) {
                        return Err(not_one_element("text outside the element"));
                    }
                } else {
                    let s = text.unescape().map_err(|e| {
                        ReadError::stream("not-well-formed", format!("bad text: {e}"))
                    })?;
                    tree.text(s)?;
                }
            }
            Event::CData(data) => {
                if tree.is_idle() {
                    return Err(not_one_element("text outside the element"));
                }
                let s = std::str::from_utf8(&data)
                    .map_err(|_| ReadError::stream("not-well-formed", "invalid UTF-8"))?;
                tree.text(s.into())?;
            }
            Event::Decl(_) => {
                return Err(not_one_element(
                    "an XML declaration: a WebSocket message is one element",
                ))
            }
            e @ (Event::DocType(_) | Event::PI(_) | Event::Comment(_)) => {
                return Err(restricted(&e))
            }
            Event::Eof => break,
        }
    }
    if !context_closed {
        return Err(not_one_element("an incomplete element"));
    }
    let el = element.ok_or_else(|| not_one_element("no element"))?;
    Ok(Some(if el.is("open", ns::FRAMING) {
        Inbound::Open(header_of(&el))
    } else if el.is("close", ns::FRAMING) {
        Inbound::Close
    } else {
        Inbound::Stanza(el)
    }))
}

fn not_one_element(what: &str) -> ReadError {
    ReadError::stream(
        "not-well-formed",
        format!("{what}: RFC 7395 carries exactly one complete element per WebSocket message"),
    )
}

/// `<open/>` read as the stream header it stands for, so the header checks (RFC 6120 §4.8-4.9:
/// `to`, `version`) are the same as for TCP.
fn header_of(open: &Element) -> StreamHeader {
    StreamHeader {
        stream_ns: ns::STREAM.to_owned(),
        name: "stream".to_owned(),
        default_ns: Some(ns::CLIENT.to_owned()),
        to: open.attr("to").map(str::to_owned),
        from: open.attr("from").map(str::to_owned),
        version: open.attr("version").map(str::to_owned),
        lang: open.attr("xml:lang").map(str::to_owned),
    }
}

/// Cuts text written for a TCP stream into WebSocket messages: a stream header (with or
/// without an XML declaration) becomes `<open/>` with the header's attributes,
/// `</stream:stream>` becomes `<close/>`, every top-level element one message that declares
/// its namespace (`xmlns='jabber:client'` on an unprefixed element without one,
/// `xmlns:stream` on `<stream:features/>` and `<stream:error/>`). Whitespace between elements
/// is dropped. Meant for XML this system wrote (it is not validated again); an error means
/// the text was not XML.
pub fn frames(text: &str) -> Result<Vec<String>, ReadError> {
    // The stream's end closes a tag this text did not open: the parser would refuse it.
    let (text, closes) = match text.trim_end().strip_suffix("</stream:stream>") {
        Some(body) => (body, true),
        None => (text, false),
    };
    let mut xml = quick_xml::Reader::from_str(text);
    let config = xml.config_mut();
    config.check_end_names = false;
    config.expand_empty_elements = false;
    config.trim_text(false);
    let mut out = Vec::new();
    let mut depth = 0usize;
    // The open top-level element: where it starts, and what its start tag lacks.
    let mut root: Option<(usize, Missing)> = None;
    loop {
        let before = position(&xml);
        let event = xml.read_event().map_err(map_xml_error)?;
        let after = position(&xml);
        match event {
            Event::Start(start) if depth == 0 && start.name().as_ref() == b"stream:stream" => {
                out.push(open_of(&start)?);
            }
            Event::Start(start) => {
                if depth == 0 {
                    root = Some((before, missing(&start)?));
                }
                depth += 1;
            }
            Event::Empty(start) if depth == 0 => {
                out.push(declared(slice(text, before, after)?, &missing(&start)?));
            }
            Event::End(_) => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| ReadError::stream("not-well-formed", "unbalanced end tag"))?;
                if depth == 0 {
                    let (start, missing) = root.take().ok_or_else(|| {
                        ReadError::stream("not-well-formed", "unbalanced end tag")
                    })?;
                    out.push(declared(slice(text, start, after)?, &missing));
                }
            }
            Event::Eof => break,
            // Text, comments, declarations at the top level: nothing a message carries.
            _ => {}
        }
    }
    if depth != 0 {
        return Err(ReadError::stream("not-well-formed", "incomplete element"));
    }
    if closes {
        out.push(format!("<close xmlns='{}'/>", ns::FRAMING));
    }
    Ok(out)
}

fn slice(text: &str, from: usize, to: usize) -> Result<&str, ReadError> {
    text.get(from..to)
        .ok_or_else(|| ReadError::stream("not-well-formed", "element boundaries"))
}

fn position<R>(xml: &quick_xml::Reader<R>) -> usize {
    usize::try_from(xml.buffer_position()).unwrap_or(usize::MAX)
}

/// The stream header's attributes on `<open/>` (its namespace declarations left out).
fn open_of(start: &BytesStart<'_>) -> Result<String, ReadError> {
    let mut open = format!("<open xmlns='{}'", ns::FRAMING);
    for attr in start.attributes().with_checks(false) {
        let attr =
            attr.map_err(|e| ReadError::stream("not-well-formed", format!("bad attribute: {e}")))?;
        let key = std::str::from_utf8(attr.key.as_ref())
            .map_err(|_| ReadError::stream("not-well-formed", "invalid UTF-8 in a name"))?;
        if key == "xmlns" || key.starts_with("xmlns:") {
            continue;
        }
        let value = attr
            .unescape_value()
            .map_err(|e| ReadError::stream("not-well-formed", format!("bad attribute: {e}")))?;
        open.push_str(&format!(" {key}='{}'", escape_attr(&value)));
    }
    open.push_str("/>");
    Ok(open)
}

/// The namespace declaration a top-level start tag needs to stand alone, and where it goes
/// (after the element's name).
struct Missing {
    name_len: usize,
    declaration: Option<&'static str>,
}

const DECLARE_CLIENT: &str = " xmlns='jabber:client'";
const DECLARE_STREAM: &str = " xmlns:stream='http://etherx.jabber.org/streams'";

fn missing(start: &BytesStart<'_>) -> Result<Missing, ReadError> {
    let name = start.name();
    let mut declares_default = false;
    let mut declares_stream = false;
    for attr in start.attributes().with_checks(false) {
        let attr =
            attr.map_err(|e| ReadError::stream("not-well-formed", format!("bad attribute: {e}")))?;
        match attr.key.as_ref() {
            b"xmlns" => declares_default = true,
            b"xmlns:stream" => declares_stream = true,
            _ => {}
        }
    }
    let declaration = match name.prefix().map(|p| p.into_inner()) {
        None if !declares_default => Some(DECLARE_CLIENT),
        Some(b"stream") if !declares_stream => Some(DECLARE_STREAM),
        _ => None,
    };
    Ok(Missing {
        name_len: name.as_ref().len(),
        declaration,
    })
}

/// `element` (starting with `<` and its name) with the declaration it lacks.
fn declared(element: &str, missing: &Missing) -> String {
    match missing.declaration {
        Some(decl) if element.is_char_boundary(1 + missing.name_len) => {
            let (head, tail) = element.split_at(1 + missing.name_len);
            let mut out = String::with_capacity(element.len() + decl.len());
            out.push_str(head);
            out.push_str(decl);
            out.push_str(tail);
            out
        }
        _ => element.to_owned(),
    }
}

#[cfg(test)]
mod tests;
