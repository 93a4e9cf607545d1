//! Builds element trees from parser events under [`Limits`], for the stream reader and for
//! in-memory fragments alike. Every name and every character that enters a tree is checked
//! here against XML 1.0, so nothing a peer sends can make another peer's stream ill-formed,
//! and every count that could multiply memory (elements, attributes, namespace declarations,
//! namespace length) has a ceiling.

use std::sync::Arc;

use quick_xml::events::BytesStart;
use quick_xml::name::ResolveResult;

use crate::chars::{is_qname, is_xml_text};
use crate::reader::{Limits, ReadError};
use crate::{Element, Node};

/// Distinct namespaces kept for sharing; more than this in one stream only costs copies.
const SHARED_NAMESPACES: usize = 32;

pub(crate) struct TreeBuilder {
    limits: Limits,
    /// Open elements of the stanza being built, outermost first.
    stack: Vec<Element>,
    /// Elements of the stanza being built, against `limits.max_elements`.
    elements: usize,
    /// Namespaces seen lately, so that elements in the same namespace share one string.
    namespaces: Vec<Arc<str>>,
}

impl TreeBuilder {
    pub(crate) fn new(limits: Limits) -> TreeBuilder {
        TreeBuilder {
            limits,
            stack: Vec::new(),
            elements: 0,
            namespaces: Vec::new(),
        }
    }

    pub(crate) fn limits(&self) -> Limits {
        self.limits
    }

    /// Whether no stanza is being built.
    pub(crate) fn is_idle(&self) -> bool {
        self.stack.is_empty()
    }

    /// A start tag (`empty` for `<x/>`); returns the element when it completes a stanza.
    pub(crate) fn open(
        &mut self,
        start: &BytesStart<'_>,
        resolved: &ResolveResult<'_>,
        empty: bool,
    ) -> Result<Option<Element>, ReadError> {
        if !empty && self.stack.len() >= self.limits.max_depth {
            return Err(ReadError::stream(
                "policy-violation",
                "elements nested too deeply",
            ));
        }
        self.elements += 1;
        if self.elements > self.limits.max_elements {
            return Err(ReadError::stream(
                "policy-violation",
                "too many elements in one stanza",
            ));
        }
        let ns = self.namespace(resolved)?;
        let el = build_element(start, ns, &self.limits)?;
        if empty {
            return Ok(self.attach(el));
        }
        self.stack.push(el);
        Ok(None)
    }

    /// An end tag. `None` when no element is open (the end of the enclosing document).
    pub(crate) fn close(&mut self) -> Option<Option<Element>> {
        let el = self.stack.pop()?;
        Some(self.attach(el))
    }

    /// Character data (already unescaped) inside the open element; between stanzas it is
    /// whitespace keepalive or meaningless, and ignored once checked.
    pub(crate) fn text(&mut self, text: std::borrow::Cow<'_, str>) -> Result<(), ReadError> {
        if !is_xml_text(&text) {
            return Err(ReadError::stream(
                "not-well-formed",
                "a character that XML does not allow",
            ));
        }
        if let Some(parent) = self.stack.last_mut() {
            // Nothing to keep: an empty CDATA section would come back as no text at all.
            if !text.is_empty() {
                parent.push_text(text.into_owned());
            }
        }
        Ok(())
    }

    fn attach(&mut self, el: Element) -> Option<Element> {
        match self.stack.last_mut() {
            Some(parent) => {
                parent.nodes_mut().push(Node::Element(el));
                None
            }
            None => {
                self.elements = 0;
                Some(el)
            }
        }
    }

    fn namespace(&mut self, resolved: &ResolveResult<'_>) -> Result<Arc<str>, ReadError> {
        let bytes: &[u8] = match resolved {
            ResolveResult::Bound(ns) => ns.into_inner(),
            ResolveResult::Unbound => b"",
            ResolveResult::Unknown(prefix) => {
                return Err(ReadError::stream(
                    "bad-namespace-prefix",
                    format!("undeclared prefix {}", String::from_utf8_lossy(prefix)),
                ))
            }
        };
        // The resolver hands over the declaration's raw value; `&amp;` and friends in it
        // mean what they mean in any attribute value.
        let unescaped;
        let bytes = if bytes.contains(&b'&') {
            let raw = std::str::from_utf8(bytes).map_err(|_| {
                ReadError::stream("not-well-formed", "invalid UTF-8 in a namespace")
            })?;
            unescaped = quick_xml::escape::unescape(raw)
                .map_err(|e| ReadError::stream("not-well-formed", format!("bad namespace: {e}")))?;
            unescaped.as_bytes()
        } else {
            bytes
        };
        if let Some(shared) = self.namespaces.iter().find(|n| n.as_bytes() == bytes) {
            return Ok(shared.clone());
        }
        // Declarations were checked where they were made; this guards the resolver's view.
        let ns = namespace_value(bytes, &self.limits)?;
        if self.namespaces.len() >= SHARED_NAMESPACES {
            self.namespaces.clear();
        }
        let ns: Arc<str> = Arc::from(ns);
        self.namespaces.push(ns.clone());
        Ok(ns)
    }
}

fn namespace_value<'a>(bytes: &'a [u8], limits: &Limits) -> Result<&'a str, ReadError> {
    if bytes.len() > limits.max_namespace_bytes {
        return Err(ReadError::stream("policy-violation", "namespace too long"));
    }
    let ns = std::str::from_utf8(bytes)
        .map_err(|_| ReadError::stream("not-well-formed", "invalid UTF-8 in a namespace"))?;
    if !is_xml_text(ns) {
        return Err(ReadError::stream(
            "not-well-formed",
            "a character that XML does not allow in a namespace",
        ));
    }
    Ok(ns)
}

fn utf8_name(bytes: &[u8]) -> Result<&str, ReadError> {
    let name = std::str::from_utf8(bytes)
        .map_err(|_| ReadError::stream("not-well-formed", "invalid UTF-8 in a name"))?;
    if !is_qname(name) {
        return Err(ReadError::stream(
            "not-well-formed",
            "not an XML name: element and attribute names follow XML 1.0",
        ));
    }
    Ok(name)
}

/// Walks a start tag's attributes under the limits, calling `keep` with each ordinary
/// attribute (namespace declarations are counted and checked, not passed on).
pub(crate) fn for_each_attribute(
    start: &BytesStart<'_>,
    limits: &Limits,
    mut keep: impl FnMut(&str, String),
) -> Result<(), ReadError> {
    let mut attributes = 0;
    let mut declarations = 0;
    // quick-xml's duplicate check compares each attribute with those before it; stopping at
    // `max_attributes` keeps that (and everything after) linear in the input.
    for attr in start.attributes() {
        attributes += 1;
        if attributes > limits.max_attributes {
            return Err(ReadError::stream(
                "policy-violation",
                "too many attributes on one element",
            ));
        }
        let attr =
            attr.map_err(|e| ReadError::stream("not-well-formed", format!("bad attribute: {e}")))?;
        let key = utf8_name(attr.key.into_inner())?;
        let value = attr.unescape_value().map_err(|e| {
            ReadError::stream("not-well-formed", format!("bad attribute value: {e}"))
        })?;
        if key == "xmlns" || key.starts_with("xmlns:") {
            declarations += 1;
            if declarations > limits.max_namespace_declarations {
                return Err(ReadError::stream(
                    "policy-violation",
                    "too many namespace declarations on one element",
                ));
            }
            namespace_value(value.as_bytes(), limits)?;
            continue;
        }
        if !is_xml_text(&value) {
            return Err(ReadError::stream(
                "not-well-formed",
                "a character that XML does not allow in an attribute value",
            ));
        }
        keep(key, value.into_owned());
    }
    Ok(())
}

/// One element from its start tag: its local name, namespace and unprefixed (or `xml:`)
/// attributes. Attributes in other namespaces are dropped: no handler reads them.
fn build_element(
    start: &BytesStart<'_>,
    ns: Arc<str>,
    limits: &Limits,
) -> Result<Element, ReadError> {
    utf8_name(start.name().into_inner())?;
    let local = std::str::from_utf8(start.local_name().into_inner())
        .map_err(|_| ReadError::stream("not-well-formed", "invalid UTF-8 in a name"))?;
    let mut el = Element::new(local, ns);
    for_each_attribute(start, limits, |key, value| {
        if key.contains(':') && !key.starts_with("xml:") {
            return;
        }
        el.push_attr_unchecked(key.to_owned(), value);
    })?;
    Ok(el)
}
