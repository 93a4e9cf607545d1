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

use crate::tree::{for_each_attribute, TreeBuilder};
use crate::{Element, StreamError};

/// Bounds that keep one connection's memory small whatever the peer sends. Input bytes
/// alone don't bound memory: a tree costs far more per element than `<a/>` costs on the
/// wire, so elements, attributes and namespaces have ceilings of their own.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest stanza (or stream header) in bytes, as received.
    pub max_stanza_bytes: usize,
    /// Deepest element nesting inside a stanza.
    pub max_depth: usize,
    /// Elements in one stanza, itself included.
    pub max_elements: usize,
    /// Attributes on one element, namespace declarations included.
    pub max_attributes: usize,
    /// Namespace declarations (`xmlns`, `xmlns:p`) on one element.
    pub max_namespace_declarations: usize,
    /// Longest namespace name, in bytes.
    pub max_namespace_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_stanza_bytes: 256 * 1024,
            max_depth: 32,
            max_elements: 4096,
            max_attributes: 64,
            max_namespace_declarations: 16,
            max_namespace_bytes: 1024,
        }
    }
}

impl Limits {
    /// What a client may send before it has authenticated: SASL exchanges, registration
    /// forms and stream features fit easily in 10 KiB (Prosody's pre-authentication limit).
    pub fn unauthenticated(self) -> Limits {
        Limits {
            max_stanza_bytes: self.max_stanza_bytes.min(10 * 1024),
            max_elements: self.max_elements.min(256),
            ..self
        }
    }

    /// For XML this system wrote itself (stored stanzas, envelopes): already bounded where
    /// it entered, so only well-formedness and the characters are checked again. A server
    /// reply such as a large roster may hold many more elements than any client stanza.
    pub fn internal() -> Limits {
        Limits {
            max_stanza_bytes: usize::MAX,
            max_depth: 128,
            max_elements: usize::MAX,
            max_attributes: usize::MAX,
            max_namespace_declarations: usize::MAX,
            max_namespace_bytes: usize::MAX,
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
    pub(crate) fn stream(condition: &'static str, text: impl Into<String>) -> ReadError {
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
    /// Event bytes; released after a stanza that made it large, so one big stanza does not
    /// cost an idle connection its size for the rest of its life.
    buf: Vec<u8>,
    tree: TreeBuilder,
    opened: bool,
}

/// Event buffer capacity kept between stanzas.
const KEPT_BUFFER: usize = 4096;

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
            tree: TreeBuilder::new(limits),
            opened: false,
        }
    }

    /// Starts a new XML document on the same byte stream (RFC 6120 §4.3.3 stream restart).
    pub fn restart(self) -> StreamReader<R> {
        let limits = self.tree.limits();
        self.restart_with(limits)
    }

    /// A stream restart that also changes the limits (larger ones once authenticated).
    pub fn restart_with(self, limits: Limits) -> StreamReader<R> {
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
            match event {
                Event::Decl(_) if !self.opened && self.tree.is_idle() => {}
                Event::Decl(_) => {
                    return Err(ReadError::stream(
                        "not-well-formed",
                        "XML declaration inside the stream",
                    ))
                }
                e @ (Event::DocType(_) | Event::PI(_) | Event::Comment(_)) => {
                    return Err(restricted(&e))
                }
                Event::Start(start) if !self.opened => {
                    let header = build_header(&start, &resolved, &self.tree.limits())?;
                    self.opened = true;
                    self.stanza_done();
                    return Ok(Inbound::Open(header));
                }
                Event::Empty(_) if !self.opened => {
                    return Err(ReadError::stream(
                        "not-well-formed",
                        "the stream element must not be empty",
                    ))
                }
                Event::Start(start) => {
                    self.tree.open(&start, &resolved, false)?;
                }
                Event::Empty(start) => {
                    if let Some(done) = self.tree.open(&start, &resolved, true)? {
                        self.stanza_done();
                        return Ok(Inbound::Stanza(done));
                    }
                }
                Event::End(_) => match self.tree.close() {
                    None => return Ok(Inbound::Close),
                    Some(Some(done)) => {
                        self.stanza_done();
                        return Ok(Inbound::Stanza(done));
                    }
                    Some(None) => {}
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
                    let between_stanzas = self.tree.is_idle();
                    // Whitespace between stanzas is a keepalive; other text there is
                    // meaningless and ignored, as ejabberd and Prosody do.
                    self.tree.text(s)?;
                    if between_stanzas {
                        self.stanza_done();
                    }
                }
                Event::CData(data) => {
                    let s = std::str::from_utf8(&data)
                        .map_err(|_| ReadError::stream("not-well-formed", "invalid UTF-8"))?;
                    self.tree.text(s.into())?;
                }
                Event::Eof => return Err(ReadError::Eof),
            }
        }
    }

    /// A stanza (or header, or keepalive) is complete: the next one gets a fresh budget.
    fn stanza_done(&mut self) {
        self.xml.get_mut().reset();
        if self.buf.capacity() > KEPT_BUFFER {
            self.buf = Vec::new();
        }
    }
}

fn build_header(
    start: &BytesStart<'_>,
    resolved: &ResolveResult<'_>,
    limits: &Limits,
) -> Result<StreamHeader, ReadError> {
    let stream_ns = match resolved {
        ResolveResult::Bound(ns) => String::from_utf8_lossy(ns.into_inner()).into_owned(),
        ResolveResult::Unbound => String::new(),
        ResolveResult::Unknown(prefix) => {
            return Err(ReadError::stream(
                "bad-namespace-prefix",
                format!("undeclared prefix {}", String::from_utf8_lossy(prefix)),
            ))
        }
    };
    let name = String::from_utf8_lossy(start.local_name().into_inner()).into_owned();
    let mut header = StreamHeader {
        stream_ns,
        name,
        ..StreamHeader::default()
    };
    for_each_attribute(start, limits, |key, value| match key {
        "to" => header.to = Some(value),
        "from" => header.from = Some(value),
        "version" => header.version = Some(value),
        "xml:lang" => header.lang = Some(value),
        _ => {}
    })?;
    // The default namespace is a declaration, which the walk checks but does not pass on.
    for attr in start.attributes().with_checks(false).flatten() {
        if attr.key.into_inner() == b"xmlns" {
            header.default_ns = Some(String::from_utf8_lossy(&attr.value).into_owned());
        }
    }
    Ok(header)
}

/// RFC 6120 §11.1: what a stream must not contain (DTDs, processing instructions, comments).
pub(crate) fn restricted(event: &Event<'_>) -> ReadError {
    ReadError::stream(
        "restricted-xml",
        match event {
            Event::DocType(_) => "DTDs are not allowed",
            Event::PI(_) => "processing instructions are not allowed",
            _ => "comments are not allowed",
        },
    )
}

pub(crate) fn configured<R>(inner: R) -> NsReader<R> {
    let mut xml = NsReader::from_reader(inner);
    let config = xml.config_mut();
    config.check_end_names = true;
    config.check_comments = true;
    config.expand_empty_elements = false;
    config.trim_text(false);
    xml
}

pub(crate) fn map_xml_error(e: quick_xml::Error) -> ReadError {
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

/// Parses one complete element held in memory (stored or wire stanzas) under
/// [`Limits::internal`].
pub(crate) fn parse_fragment(xml: &str) -> Result<Element, ReadError> {
    let mut xml_reader = configured(xml.as_bytes());
    let mut buf = Vec::new();
    let mut tree = TreeBuilder::new(Limits::internal());
    loop {
        buf.clear();
        let (resolved, event) = xml_reader
            .read_resolved_event_into(&mut buf)
            .map_err(map_xml_error)?;
        let done = match event {
            Event::Start(start) => tree.open(&start, &resolved, false)?,
            Event::Empty(start) => tree.open(&start, &resolved, true)?,
            Event::End(_) => tree
                .close()
                .ok_or_else(|| ReadError::stream("not-well-formed", "unbalanced end tag"))?,
            Event::Text(t) => {
                if !tree.is_idle() {
                    let s = t
                        .unescape()
                        .map_err(|e| ReadError::stream("not-well-formed", e.to_string()))?;
                    tree.text(s)?;
                }
                None
            }
            Event::CData(d) => {
                if !tree.is_idle() {
                    let s = std::str::from_utf8(&d)
                        .map_err(|_| ReadError::stream("not-well-formed", "invalid UTF-8"))?;
                    tree.text(s.into())?;
                }
                None
            }
            Event::Eof => return Err(ReadError::stream("not-well-formed", "incomplete element")),
            Event::DocType(_) | Event::PI(_) | Event::Comment(_) => {
                return Err(ReadError::stream("restricted-xml", "restricted XML"))
            }
            Event::Decl(_) => None,
        };
        if let Some(el) = done {
            return Ok(el);
        }
    }
}
