//! The incoming side of an XML stream: turns bytes into a stream header, stanzas and the
//! stream end, holding bounded memory and refusing what RFC 6120 §11 restricts (DTDs,
//! entity declarations, comments, processing instructions), too-deep nesting and
//! oversized stanzas. Each violation maps to the stream error the peer must be sent.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;
use tokio::io::{AsyncBufRead, AsyncRead, ReadBuf};

use crate::{Element, Node, StreamError};

/// Bounds that keep one connection's memory small whatever the peer sends.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest stanza (or stream header) in bytes, as received.
    pub max_stanza_bytes: usize,
    /// Deepest element nesting inside a stanza.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_stanza_bytes: 256 * 1024,
            max_depth: 32,
        }
    }
}

/// The attributes of an opening `<stream:stream>`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamHeader {
    /// Namespace of the stream element itself (must be the streams namespace).
    pub stream_ns: String,
    /// Local name of the stream element (must be `stream`).
    pub name: String,
    /// The default namespace declared on it (`jabber:client` for clients).
    pub default_ns: Option<String>,
    pub to: Option<String>,
    pub from: Option<String>,
    pub version: Option<String>,
    pub lang: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Inbound {
    Open(StreamHeader),
    Stanza(Element),
    Close,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("connection closed")]
    Eof,
    #[error("i/o: {0}")]
    Io(io::Error),
    #[error("stream error {0}")]
    Stream(StreamError),
}

impl ReadError {
    fn stream(condition: &'static str, text: impl Into<String>) -> ReadError {
        ReadError::Stream(StreamError::with_text(condition, text))
    }
}

const OVER_BUDGET: &str = "meerkat: stanza size limit exceeded";

/// Counts the bytes the XML reader consumes so one stanza can't grow without bound.
pub struct Budgeted<R> {
    inner: R,
    used: usize,
    budget: usize,
}

impl<R> Budgeted<R> {
    fn reset(&mut self) {
        self.used = 0;
    }
    pub fn into_inner(self) -> R {
        self.inner
    }
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Budgeted<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<R: AsyncBufRead + Unpin> AsyncBufRead for Budgeted<R> {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        if this.used > this.budget {
            return Poll::Ready(Err(io::Error::other(OVER_BUDGET)));
        }
        Pin::new(&mut this.inner).poll_fill_buf(cx)
    }

    fn consume(mut self: Pin<&mut Self>, amt: usize) {
        self.used += amt;
        Pin::new(&mut self.inner).consume(amt)
    }
}

/// Reads one XML stream. After a stream restart (STARTTLS, SASL success) call
/// [`StreamReader::restart`] so the next header starts a fresh document.
pub struct StreamReader<R> {
    xml: NsReader<Budgeted<R>>,
    buf: Vec<u8>,
    limits: Limits,
    /// Open stanza elements being built, outermost first.
    stack: Vec<Element>,
    opened: bool,
}

impl<R: AsyncBufRead + Unpin> StreamReader<R> {
    pub fn new(inner: R, limits: Limits) -> StreamReader<R> {
        let budgeted = Budgeted {
            inner,
            used: 0,
            budget: limits.max_stanza_bytes,
        };
        StreamReader {
            xml: configured(budgeted),
            buf: Vec::new(),
            limits,
            stack: Vec::new(),
            opened: false,
        }
    }

    /// Starts a new XML document on the same byte stream (RFC 6120 §4.3.3 stream restart).
    pub fn restart(self) -> StreamReader<R> {
        let limits = self.limits;
        StreamReader::new(self.into_inner(), limits)
    }

    pub fn into_inner(self) -> R {
        self.xml.into_inner().into_inner()
    }

    pub fn get_mut(&mut self) -> &mut R {
        self.xml.get_mut().get_mut()
    }

    /// The next stream header, stanza or stream end.
    pub async fn next(&mut self) -> Result<Inbound, ReadError> {
        loop {
            self.buf.clear();
            let (resolved, event) =
                match self.xml.read_resolved_event_into_async(&mut self.buf).await {
                    Ok(ok) => ok,
                    Err(e) => return Err(map_xml_error(e)),
                };
            let ns = resolved_ns(&resolved)?;
            match event {
                Event::Decl(_) if !self.opened && self.stack.is_empty() => {}
                Event::Decl(_) => {
                    return Err(ReadError::stream(
                        "not-well-formed",
                        "XML declaration inside the stream",
                    ))
                }
                Event::DocType(_) => {
                    return Err(ReadError::stream("restricted-xml", "DTDs are not allowed"))
                }
                Event::PI(_) => {
                    return Err(ReadError::stream(
                        "restricted-xml",
                        "processing instructions are not allowed",
                    ))
                }
                Event::Comment(_) => {
                    return Err(ReadError::stream(
                        "restricted-xml",
                        "comments are not allowed",
                    ))
                }
                Event::Start(start) if !self.opened => {
                    let header = build_header(&start, ns)?;
                    self.opened = true;
                    self.xml.get_mut().reset();
                    return Ok(Inbound::Open(header));
                }
                Event::Empty(_) if !self.opened => {
                    return Err(ReadError::stream(
                        "not-well-formed",
                        "the stream element must not be empty",
                    ))
                }
                Event::Start(start) => {
                    if self.stack.len() >= self.limits.max_depth {
                        return Err(ReadError::stream(
                            "policy-violation",
                            "elements nested too deeply",
                        ));
                    }
                    let el = build_element(&start, ns)?;
                    self.stack.push(el);
                }
                Event::Empty(start) => {
                    let el = build_element(&start, ns)?;
                    if let Some(done) = self.close_child(el) {
                        return Ok(Inbound::Stanza(done));
                    }
                }
                Event::End(_) => match self.stack.pop() {
                    None => return Ok(Inbound::Close),
                    Some(el) => {
                        if let Some(done) = self.close_child(el) {
                            return Ok(Inbound::Stanza(done));
                        }
                    }
                },
                Event::Text(text) if !self.opened => {
                    if !text.iter().all(u8::is_ascii_whitespace) {
                        return Err(ReadError::stream(
                            "not-well-formed",
                            "text before the stream header",
                        ));
                    }
                }
                Event::Text(text) => {
                    let s = text.unescape().map_err(|e| {
                        ReadError::stream("not-well-formed", format!("bad text: {e}"))
                    })?;
                    match self.stack.last_mut() {
                        Some(parent) => parent.push_text(s.into_owned()),
                        // Whitespace between stanzas is a keepalive; other text there is
                        // meaningless and ignored, as ejabberd and Prosody do.
                        None => self.xml.get_mut().reset(),
                    }
                }
                Event::CData(data) => {
                    let s = std::str::from_utf8(&data)
                        .map_err(|_| ReadError::stream("not-well-formed", "invalid UTF-8"))?
                        .to_owned();
                    if let Some(parent) = self.stack.last_mut() {
                        parent.push_text(s);
                    }
                }
                Event::Eof => return Err(ReadError::Eof),
            }
        }
    }

    /// Attaches a finished element to its parent; returns it when it was a whole stanza.
    fn close_child(&mut self, el: Element) -> Option<Element> {
        match self.stack.last_mut() {
            Some(parent) => {
                parent.nodes_mut().push(Node::Element(el));
                None
            }
            None => {
                self.xml.get_mut().reset();
                Some(el)
            }
        }
    }
}

fn build_header(start: &BytesStart<'_>, ns: Option<String>) -> Result<StreamHeader, ReadError> {
    {
        let name = String::from_utf8_lossy(start.local_name().into_inner()).into_owned();
        let mut header = StreamHeader {
            stream_ns: ns.unwrap_or_default(),
            name,
            ..StreamHeader::default()
        };
        for attr in start.attributes() {
            let attr = attr
                .map_err(|e| ReadError::stream("not-well-formed", format!("bad attribute: {e}")))?;
            let value = attr
                .unescape_value()
                .map_err(|e| {
                    ReadError::stream("not-well-formed", format!("bad attribute value: {e}"))
                })?
                .into_owned();
            match attr.key.into_inner() {
                b"xmlns" => header.default_ns = Some(value),
                b"to" => header.to = Some(value),
                b"from" => header.from = Some(value),
                b"version" => header.version = Some(value),
                b"xml:lang" => header.lang = Some(value),
                _ => {}
            }
        }
        Ok(header)
    }
}

fn configured<R>(inner: R) -> NsReader<R> {
    let mut xml = NsReader::from_reader(inner);
    let config = xml.config_mut();
    config.check_end_names = true;
    config.check_comments = true;
    config.expand_empty_elements = false;
    config.trim_text(false);
    xml
}

fn resolved_ns(resolved: &ResolveResult<'_>) -> Result<Option<String>, ReadError> {
    match resolved {
        ResolveResult::Bound(ns) => Ok(Some(String::from_utf8_lossy(ns.into_inner()).into_owned())),
        ResolveResult::Unbound => Ok(None),
        ResolveResult::Unknown(prefix) => Err(ReadError::stream(
            "bad-namespace-prefix",
            format!("undeclared prefix {}", String::from_utf8_lossy(prefix)),
        )),
    }
}

fn map_xml_error(e: quick_xml::Error) -> ReadError {
    match e {
        quick_xml::Error::Io(io) => {
            if io.to_string() == OVER_BUDGET {
                ReadError::stream("policy-violation", "stanza too large")
            } else if io.kind() == io::ErrorKind::UnexpectedEof {
                ReadError::Eof
            } else {
                ReadError::Io(io::Error::new(io.kind(), io.to_string()))
            }
        }
        other => ReadError::stream("not-well-formed", other.to_string()),
    }
}

/// Parses one complete element held in memory (stored or wire stanzas).
pub(crate) fn parse_fragment(xml: &str) -> Result<Element, ReadError> {
    let mut xml_reader = configured(xml.as_bytes());
    let mut buf = Vec::new();
    let mut stack: Vec<Element> = Vec::new();
    loop {
        buf.clear();
        let (resolved, event) = xml_reader
            .read_resolved_event_into(&mut buf)
            .map_err(map_xml_error)?;
        let ns = resolved_ns(&resolved)?;
        match event {
            Event::Start(start) => stack.push(build_element(&start, ns)?),
            Event::Empty(start) => {
                let el = build_element(&start, ns)?;
                match stack.last_mut() {
                    Some(p) => p.push_child(el),
                    None => return Ok(el),
                }
            }
            Event::End(_) => {
                let el = stack
                    .pop()
                    .ok_or_else(|| ReadError::stream("not-well-formed", "unbalanced end tag"))?;
                match stack.last_mut() {
                    Some(p) => p.push_child(el),
                    None => return Ok(el),
                }
            }
            Event::Text(t) => {
                if let Some(p) = stack.last_mut() {
                    let s = t
                        .unescape()
                        .map_err(|e| ReadError::stream("not-well-formed", e.to_string()))?;
                    p.push_text(s.into_owned());
                }
            }
            Event::CData(d) => {
                if let Some(p) = stack.last_mut() {
                    p.push_text(String::from_utf8_lossy(&d).into_owned());
                }
            }
            Event::Eof => return Err(ReadError::stream("not-well-formed", "incomplete element")),
            Event::DocType(_) | Event::PI(_) | Event::Comment(_) => {
                return Err(ReadError::stream("restricted-xml", "restricted XML"))
            }
            Event::Decl(_) => {}
        }
    }
}

/// Element building shared by the streaming and in-memory parsers.
fn build_element(start: &BytesStart<'_>, ns: Option<String>) -> Result<Element, ReadError> {
    let name = std::str::from_utf8(start.local_name().into_inner())
        .map_err(|_| ReadError::stream("not-well-formed", "invalid UTF-8 in a name"))?;
    let mut el = Element::new(name, ns.unwrap_or_default());
    for attr in start.attributes() {
        let attr =
            attr.map_err(|e| ReadError::stream("not-well-formed", format!("bad attribute: {e}")))?;
        let key = std::str::from_utf8(attr.key.into_inner())
            .map_err(|_| ReadError::stream("not-well-formed", "invalid UTF-8 in a name"))?;
        if key == "xmlns" || key.starts_with("xmlns:") {
            continue;
        }
        if key.contains(':') && !key.starts_with("xml:") {
            continue;
        }
        let value = attr.unescape_value().map_err(|e| {
            ReadError::stream("not-well-formed", format!("bad attribute value: {e}"))
        })?;
        el.set_attr(key.to_owned(), value.into_owned());
    }
    Ok(el)
}
