//! XEP-0115 entity capabilities: what a client's available presence says it supports
//! (`<c hash node ver/>`), verified before it is believed. When a ver is unknown the server
//! asks the client (a disco#info iq from the domain to the client's full JID, its id naming
//! the ver), recomputes the hash of the answer (§5.1, sha-1) and, if it matches, stores
//! ver → features as replicated data (kind `caps`, content-addressed: every DC that verifies
//! a ver writes the same features, so DCs never conflict over it). Each router keeps what it
//! has read in memory; a ver is never re-verified.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use meerkat_xmpp::{ns, Element};
use sha1::{Digest as _, Sha1};

/// The caps namespace.
pub const CAPS: &str = "http://jabber.org/protocol/caps";
/// The id prefix of the server's disco#info queries; the ver follows.
pub const QUERY_ID: &str = "meerkat-caps:";
/// Identities, features and form fields a disco#info answer may carry for its hash to be
/// computed: a hostile client cannot make us sort more.
pub const MAX_ENTRIES: usize = 512;
/// Verified vers a router keeps in memory (then it starts again empty).
const CACHE_MAX: usize = 10_000;

/// The capabilities a presence announces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapsRef {
    pub node: String,
    pub ver: String,
}

impl CapsRef {
    /// The `<c/>` of a presence, if it uses sha-1 (legacy caps without a hash, and other
    /// algorithms, are not verified and so not believed).
    pub fn of_presence(presence: &Element) -> Option<CapsRef> {
        let c = presence.get_child("c", CAPS)?;
        if c.attr("hash")? != "sha-1" {
            return None;
        }
        let ver = c.attr("ver")?;
        if ver.is_empty() || ver.len() > 64 {
            return None;
        }
        Some(CapsRef {
            node: c
                .attr("node")
                .unwrap_or_default()
                .chars()
                .take(512)
                .collect(),
            ver: ver.to_owned(),
        })
    }

    /// The store key of a ver.
    pub fn key(&self) -> String {
        key(&self.ver)
    }

    /// The server's disco#info query to `to` for this ver.
    pub fn query(&self, domain: &str, to: &str) -> Element {
        Element::new("iq", ns::CLIENT)
            .with_attr("type", "get")
            .with_attr("from", domain)
            .with_attr("to", to)
            .with_attr("id", format!("{QUERY_ID}{}", self.ver))
            .with_child(
                Element::new("query", ns::DISCO_INFO)
                    .with_attr("node", format!("{}#{}", self.node, self.ver)),
            )
    }
}

pub fn key(ver: &str) -> String {
    format!("sha-1\n{ver}")
}

/// What a verified disco#info answer says: its features.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub ver: String,
    pub features: Vec<String>,
}

/// The XEP-0115 §5.1 verification string of a disco#info `<query/>`, with its features;
/// `None` for what §5.4 says must not be trusted (duplicate identities, features or form
/// types; a form whose FORM_TYPE is not hidden or has no value) or past [`MAX_ENTRIES`].
pub fn verification_string(query: &Element) -> Option<(String, Vec<String>)> {
    let mut identities = Vec::new();
    let mut features = Vec::new();
    let mut forms = Vec::new();
    let mut entries = 0usize;
    for child in query.children() {
        entries += 1;
        if entries > MAX_ENTRIES {
            return None;
        }
        if child.is("identity", ns::DISCO_INFO) {
            identities.push(format!(
                "{}/{}/{}/{}",
                child.attr("category").unwrap_or_default(),
                child.attr("type").unwrap_or_default(),
                child.attr("xml:lang").unwrap_or_default(),
                child.attr("name").unwrap_or_default()
            ));
        } else if child.is("feature", ns::DISCO_INFO) {
            features.push(child.attr("var")?.to_owned());
        } else if child.is("x", ns::DATA_FORMS) {
            forms.push(form_string(child, &mut entries)?);
        }
    }
    identities.sort();
    features.sort();
    forms.sort();
    if has_duplicates(&identities) || has_duplicates(&features) {
        return None;
    }
    let types: Vec<&String> = forms.iter().map(|(t, _)| t).collect();
    if types.windows(2).any(|w| w[0] == w[1]) {
        return None;
    }
    let mut s = String::new();
    for i in &identities {
        s.push_str(i);
        s.push('<');
    }
    for f in &features {
        s.push_str(f);
        s.push('<');
    }
    for (_, f) in &forms {
        s.push_str(f);
    }
    Some((s, features))
}

fn has_duplicates(sorted: &[String]) -> bool {
    sorted.windows(2).any(|w| w[0] == w[1])
}

/// (FORM_TYPE, the form's part of the string).
fn form_string(x: &Element, entries: &mut usize) -> Option<(String, String)> {
    let mut form_type = None;
    let mut fields = Vec::new();
    for field in x.children().filter(|c| c.is("field", ns::DATA_FORMS)) {
        *entries += 1;
        if *entries > MAX_ENTRIES {
            return None;
        }
        let var = field.attr("var")?;
        let mut values: Vec<String> = field
            .children()
            .filter(|v| v.is("value", ns::DATA_FORMS))
            .map(Element::text)
            .collect();
        *entries += values.len();
        if var == "FORM_TYPE" {
            if field.attr("type") != Some("hidden") || form_type.is_some() {
                return None;
            }
            form_type = Some(values.into_iter().next()?);
            continue;
        }
        values.sort();
        fields.push((var.to_owned(), values));
    }
    let form_type = form_type?;
    fields.sort();
    let mut s = format!("{form_type}<");
    for (var, values) in fields {
        s.push_str(&var);
        s.push('<');
        for v in values {
            s.push_str(&v);
            s.push('<');
        }
    }
    Some((form_type, s))
}

/// The sha-1 ver of a verification string.
pub fn ver_of(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha1::digest(s.as_bytes()))
}

/// Checks a disco#info `<query/>` against the `ver` it was asked for.
pub fn verify(ver: &str, query: &Element) -> Option<Verified> {
    let (s, features) = verification_string(query)?;
    (ver_of(&s) == ver).then(|| Verified {
        ver: ver.to_owned(),
        features,
    })
}

/// Verified vers this router has read: ver → features.
#[derive(Default)]
pub struct Cache {
    known: parking_lot::Mutex<HashMap<String, Arc<Vec<String>>>>,
}

impl Cache {
    pub fn get(&self, ver: &str) -> Option<Arc<Vec<String>>> {
        self.known.lock().get(ver).cloned()
    }

    pub fn put(&self, ver: &str, features: Arc<Vec<String>>) {
        let mut known = self.known.lock();
        if known.len() >= CACHE_MAX {
            known.clear();
        }
        known.insert(ver.to_owned(), features);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// XEP-0115 §5.2, the simple example.
    #[test]
    fn the_xep_simple_example_verifies() {
        let q = Element::parse(
            "<query xmlns='http://jabber.org/protocol/disco#info'>\
             <identity category='client' name='Exodus 0.9.1' type='pc'/>\
             <feature var='http://jabber.org/protocol/caps'/>\
             <feature var='http://jabber.org/protocol/disco#info'/>\
             <feature var='http://jabber.org/protocol/disco#items'/>\
             <feature var='http://jabber.org/protocol/muc'/></query>",
        )
        .expect("xml");
        let (s, _) = verification_string(&q).expect("string");
        assert_eq!(
            s,
            "client/pc//Exodus 0.9.1<http://jabber.org/protocol/caps<http://jabber.org/protocol/disco#info<\
             http://jabber.org/protocol/disco#items<http://jabber.org/protocol/muc<"
        );
        assert_eq!(ver_of(&s), "QgayPKawpkPSDYmwT/WM94uAlu0=");
        assert!(verify("QgayPKawpkPSDYmwT/WM94uAlu0=", &q).is_some());
        assert!(verify("wrongwrongwrongwrongwrong0=", &q).is_none());
    }

    /// XEP-0115 §5.3, the complex example (identities in two languages, an extended form).
    #[test]
    fn the_xep_complex_example_verifies() {
        let q = Element::parse(
            "<query xmlns='http://jabber.org/protocol/disco#info'>\
             <identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>\
             <identity xml:lang='el' category='client' name='Ψ 0.11' type='pc'/>\
             <feature var='http://jabber.org/protocol/caps'/>\
             <feature var='http://jabber.org/protocol/disco#info'/>\
             <feature var='http://jabber.org/protocol/disco#items'/>\
             <feature var='http://jabber.org/protocol/muc'/>\
             <x xmlns='jabber:x:data' type='result'>\
             <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>\
             <field var='ip_version'><value>ipv4</value><value>ipv6</value></field>\
             <field var='os'><value>Mac</value></field>\
             <field var='os_version'><value>10.5.1</value></field>\
             <field var='software'><value>Psi</value></field>\
             <field var='software_version'><value>0.11</value></field></x></query>",
        )
        .expect("xml");
        assert!(verify("q07IKJEyjvHSyhy//CH0CxmKi8w=", &q).is_some());
    }

    #[test]
    fn duplicates_and_bad_forms_are_not_trusted() {
        let dup = Element::parse(
            "<query xmlns='http://jabber.org/protocol/disco#info'>\
             <feature var='a'/><feature var='a'/></query>",
        )
        .expect("xml");
        assert!(verification_string(&dup).is_none());
        let bad_form = Element::parse(
            "<query xmlns='http://jabber.org/protocol/disco#info'>\
             <x xmlns='jabber:x:data'><field var='FORM_TYPE'><value>u</value></field></x></query>",
        )
        .expect("xml");
        assert!(verification_string(&bad_form).is_none());
    }

    #[test]
    fn caps_in_presence() {
        let p = Element::parse(
            "<presence xmlns='jabber:client'><c xmlns='http://jabber.org/protocol/caps' \
             hash='sha-1' node='n' ver='abc='/></presence>",
        )
        .expect("xml");
        let c = CapsRef::of_presence(&p).expect("caps");
        assert_eq!(c.ver, "abc=");
        let q = c.query("example.com", "a@example.com/r");
        assert_eq!(q.attr("id"), Some("meerkat-caps:abc="));
        let legacy = Element::parse(
            "<presence xmlns='jabber:client'><c xmlns='http://jabber.org/protocol/caps' \
             node='n' ver='1.0' ext='x'/></presence>",
        )
        .expect("xml");
        assert!(CapsRef::of_presence(&legacy).is_none());
    }
}
