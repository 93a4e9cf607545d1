//! A small owned XML element tree: what a stanza is once parsed, and how it is written back.
//!
//! Elements carry their resolved namespace; writing emits an `xmlns` declaration only where
//! the namespace differs from the parent's, so a stanza written inside a `jabber:client`
//! stream looks the way clients expect. The namespace is shared (`Arc<str>`): a stanza's
//! elements mostly repeat a few namespaces, and a copy per element would let a long namespace
//! declared once multiply a stanza's memory by its element count.

use std::sync::Arc;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    Text(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    name: String,
    ns: Arc<str>,
    attrs: Vec<(String, String)>,
    children: Vec<Node>,
}

impl Element {
    pub fn new(name: impl Into<String>, ns: impl Into<Arc<str>>) -> Element {
        Element {
            name: name.into(),
            ns: ns.into(),
            attrs: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Moves this element and its descendants from namespace `from` to `to` (a BOSH body's
    /// children that declare no namespace inherit the body's; they mean `jabber:client`).
    pub fn move_namespace(&mut self, from: &str, to: &str) {
        if &*self.ns == from {
            self.ns = Arc::from(to);
        }
        for node in &mut self.children {
            if let Node::Element(e) = node {
                e.move_namespace(from, to);
            }
        }
    }

    /// Builder: sets an attribute.
    pub fn with_attr(mut self, key: impl Into<String>, value: impl Into<String>) -> Element {
        self.set_attr(key, value);
        self
    }

    /// Builder: appends a child element.
    pub fn with_child(mut self, child: Element) -> Element {
        self.children.push(Node::Element(child));
        self
    }

    /// Builder: appends text.
    pub fn with_text(mut self, text: impl Into<String>) -> Element {
        self.push_text(text);
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// The namespace as shared, for building children in it without a copy.
    pub fn ns_shared(&self) -> &Arc<str> {
        &self.ns
    }

    pub fn is(&self, name: &str, ns: &str) -> bool {
        self.name == name && &*self.ns == ns
    }

    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn attrs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.attrs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn set_attr(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let key = key.into();
        let value = value.into();
        match self.attrs.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.attrs.push((key, value)),
        }
    }

    /// Appends an attribute the caller knows is not set yet (the reader, which has checked
    /// for duplicates already): `set_attr`'s search would make many attributes quadratic.
    pub(crate) fn push_attr_unchecked(&mut self, key: String, value: String) {
        self.attrs.push((key, value));
    }

    pub fn remove_attr(&mut self, key: &str) -> Option<String> {
        let pos = self.attrs.iter().position(|(k, _)| k == key)?;
        Some(self.attrs.remove(pos).1)
    }

    pub fn push_child(&mut self, child: Element) {
        self.children.push(Node::Element(child));
    }

    /// Appends text, to the text node before it if there is one: adjacent text (split by a
    /// CDATA section, say) is one node, as it is once written out and read back.
    pub fn push_text(&mut self, text: impl Into<String>) {
        let text = text.into();
        match self.children.last_mut() {
            Some(Node::Text(last)) => last.push_str(&text),
            _ => self.children.push(Node::Text(text)),
        }
    }

    pub fn nodes(&self) -> &[Node] {
        &self.children
    }

    pub fn nodes_mut(&mut self) -> &mut Vec<Node> {
        &mut self.children
    }

    /// Child elements, in document order.
    pub fn children(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    pub fn get_child(&self, name: &str, ns: &str) -> Option<&Element> {
        self.children().find(|c| c.is(name, ns))
    }

    pub fn get_child_mut(&mut self, name: &str, ns: &str) -> Option<&mut Element> {
        self.children.iter_mut().find_map(|n| match n {
            Node::Element(e) if e.is(name, ns) => Some(e),
            _ => None,
        })
    }

    pub fn has_child(&self, name: &str, ns: &str) -> bool {
        self.get_child(name, ns).is_some()
    }

    /// Removes every child element matching `pred`.
    pub fn remove_children(&mut self, pred: impl Fn(&Element) -> bool) {
        self.children.retain(|n| match n {
            Node::Element(e) => !pred(e),
            Node::Text(_) => true,
        });
    }

    /// Concatenated direct text content.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for n in &self.children {
            if let Node::Text(t) = n {
                out.push_str(t);
            }
        }
        out
    }

    /// Text of the first child element with that name and namespace.
    pub fn child_text(&self, name: &str, ns: &str) -> Option<String> {
        self.get_child(name, ns).map(Element::text)
    }

    /// Writes the element as it would appear inside a parent whose default namespace is `parent_ns`.
    pub fn write_to(&self, out: &mut String, parent_ns: &str) {
        out.push('<');
        out.push_str(&self.name);
        if &*self.ns != parent_ns {
            out.push_str(" xmlns='");
            escape_attr_into(out, &self.ns);
            out.push('\'');
        }
        for (k, v) in &self.attrs {
            out.push(' ');
            out.push_str(k);
            out.push_str("='");
            escape_attr_into(out, v);
            out.push('\'');
        }
        if self.children.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        for n in &self.children {
            match n {
                Node::Element(e) => e.write_to(out, &self.ns),
                Node::Text(t) => escape_text_into(out, t),
            }
        }
        out.push_str("</");
        out.push_str(&self.name);
        out.push('>');
    }

    /// The element as a standalone document fragment (namespace always declared).
    pub fn to_xml(&self) -> String {
        let mut out = String::with_capacity(128);
        self.write_to(&mut out, "");
        out
    }

    /// The element as written into a client stream (`jabber:client` is the default namespace).
    pub fn to_client_xml(&self) -> String {
        let mut out = String::with_capacity(128);
        self.write_to(&mut out, crate::ns::CLIENT);
        out
    }

    /// Parses one complete element from a string (used for stored and wire stanzas).
    pub fn parse(xml: &str) -> Result<Element, crate::ReadError> {
        crate::reader::parse_fragment(xml)
    }
}

impl std::fmt::Display for Element {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_xml())
    }
}

fn escape_text_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            // A raw CR would reach the recipient's parser as LF (XML 1.0 §2.11).
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
}

fn escape_attr_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            '\n' => out.push_str("&#xA;"),
            '\r' => out.push_str("&#xD;"),
            '\t' => out.push_str("&#x9;"),
            c => out.push(c),
        }
    }
}

pub fn escape_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape_text_into(&mut out, s);
    out
}

pub fn escape_attr(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape_attr_into(&mut out, s);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_namespaces_only_where_they_change() {
        let e = Element::new("iq", crate::ns::CLIENT)
            .with_attr("type", "result")
            .with_attr("id", "a'b")
            .with_child(Element::new("query", crate::ns::ROSTER).with_child(
                Element::new("item", crate::ns::ROSTER).with_attr("jid", "b@example.com"),
            ));
        assert_eq!(
            e.to_client_xml(),
            "<iq type='result' id='a&apos;b'><query xmlns='jabber:iq:roster'><item jid='b@example.com'/></query></iq>"
        );
    }

    #[test]
    fn escapes_text() {
        let e = Element::new("body", crate::ns::CLIENT).with_text("a<b & c>");
        assert_eq!(e.to_client_xml(), "<body>a&lt;b &amp; c&gt;</body>");
    }

    #[test]
    fn round_trips_through_the_parser() {
        let xml = "<message xmlns='jabber:client' to='a@b' type='chat'><body>hi &amp; bye</body><x xmlns='urn:foo' a='1'/></message>";
        let e = Element::parse(xml).expect("parse");
        assert_eq!(e.to_xml(), xml);
        assert_eq!(
            e.child_text("body", crate::ns::CLIENT).as_deref(),
            Some("hi & bye")
        );
    }
}
