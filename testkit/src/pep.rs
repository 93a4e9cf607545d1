//! PEP as a client does it (issue 17): an available presence with entity capabilities
//! (XEP-0115, the hash computed here independently of the server), the answer to the
//! server's disco#info query, publishing with publish-options, retrieving, and reading
//! notifications.

use base64::Engine as _;
use meerkat_xmpp::{ns, Element};
use sha1::{Digest as _, Sha1};

use crate::client::Client;

pub const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
pub const PUBSUB_OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
pub const PUBSUB_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
pub const PUBSUB_ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";
pub const CAPS: &str = "http://jabber.org/protocol/caps";

/// A client's disco#info identity and features, and the XEP-0115 ver of them.
#[derive(Clone, Debug)]
pub struct Caps {
    pub features: Vec<String>,
    pub ver: String,
}

impl Caps {
    /// A client (category client, type pc, named "testkit") with these features besides
    /// disco#info, caps and one of its own (so that its ver is new to the server, which
    /// then asks for it); `notify` nodes get `+notify`.
    pub fn new(notify: &[&str]) -> Caps {
        let own = format!("urn:testkit:{}", uuid::Uuid::new_v4().simple());
        let mut features: Vec<String> = vec![ns::DISCO_INFO.to_owned(), CAPS.to_owned(), own];
        features.extend(notify.iter().map(|n| format!("{n}+notify")));
        features.sort();
        let mut s = String::from("client/pc//testkit<");
        for f in &features {
            s.push_str(f);
            s.push('<');
        }
        let ver = base64::engine::general_purpose::STANDARD.encode(Sha1::digest(s.as_bytes()));
        Caps { features, ver }
    }

    /// The same features under a ver that is not their hash (a lying client).
    pub fn with_wrong_ver(mut self) -> Caps {
        self.ver = base64::engine::general_purpose::STANDARD.encode(Sha1::digest(b"not these"));
        self
    }

    /// An available presence announcing these caps.
    pub fn presence(&self) -> Element {
        Element::new("presence", ns::CLIENT).with_child(
            Element::new("c", CAPS)
                .with_attr("hash", "sha-1")
                .with_attr("node", "https://meerkat.example/testkit")
                .with_attr("ver", self.ver.clone()),
        )
    }

    /// The disco#info answer to `query` (an iq get from the server).
    pub fn answer(&self, query: &Element) -> Element {
        let mut q = Element::new("query", ns::DISCO_INFO);
        if let Some(node) = query
            .get_child("query", ns::DISCO_INFO)
            .and_then(|q| q.attr("node"))
        {
            q.set_attr("node", node);
        }
        q.push_child(
            Element::new("identity", ns::DISCO_INFO)
                .with_attr("category", "client")
                .with_attr("type", "pc")
                .with_attr("name", "testkit"),
        );
        for f in &self.features {
            q.push_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", f.clone()));
        }
        let mut r = Element::new("iq", ns::CLIENT)
            .with_attr("type", "result")
            .with_attr("id", query.attr("id").unwrap_or_default())
            .with_child(q);
        if let Some(from) = query.attr("from") {
            r.set_attr("to", from);
        }
        r
    }

    /// Sends the presence (the caps' first use, so the server asks for them), answers the
    /// server's caps query, and returns once the server has handled the answer: a ping to
    /// the server afterwards is handled after it (one sender's stanzas in order).
    pub async fn announce(&self, c: &mut Client) -> anyhow::Result<()> {
        c.send(&self.presence()).await?;
        let q = c
            .expect("the server's disco#info query", |e| {
                e.is("iq", ns::CLIENT)
                    && e.attr("type") == Some("get")
                    && e.has_child("query", ns::DISCO_INFO)
            })
            .await?;
        c.send(&self.answer(&q)).await?;
        let domain = c
            .bare_jid()
            .split_once('@')
            .map(|(_, d)| d.to_owned())
            .unwrap_or_default();
        c.iq_ok("get", Some(&domain), Element::new("ping", ns::PING))
            .await
            .map(|_| ())
    }
}

/// A publish-options form with these fields.
pub fn options(fields: &[(&str, &str)]) -> Element {
    let mut x = Element::new("x", ns::DATA_FORMS)
        .with_attr("type", "submit")
        .with_child(
            Element::new("field", ns::DATA_FORMS)
                .with_attr("var", "FORM_TYPE")
                .with_attr("type", "hidden")
                .with_child(
                    Element::new("value", ns::DATA_FORMS)
                        .with_text("http://jabber.org/protocol/pubsub#publish-options"),
                ),
        );
    for (var, value) in fields {
        x.push_child(
            Element::new("field", ns::DATA_FORMS)
                .with_attr("var", *var)
                .with_child(Element::new("value", ns::DATA_FORMS).with_text(*value)),
        );
    }
    Element::new("publish-options", PUBSUB).with_child(x)
}

/// The `<pubsub/>` of a publish of `payload` as item `id` to `node`, with publish-options.
pub fn publish(node: &str, id: &str, payload: Element, opts: &[(&str, &str)]) -> Element {
    let mut p = Element::new("pubsub", PUBSUB).with_child(
        Element::new("publish", PUBSUB)
            .with_attr("node", node)
            .with_child(
                Element::new("item", PUBSUB)
                    .with_attr("id", id)
                    .with_child(payload),
            ),
    );
    if !opts.is_empty() {
        p.push_child(options(opts));
    }
    p
}

/// The `<pubsub/>` of a retrieval of every item of `node`.
pub fn items(node: &str) -> Element {
    Element::new("pubsub", PUBSUB).with_child(Element::new("items", PUBSUB).with_attr("node", node))
}

/// The items (id, payload) of an items result.
pub fn result_items(reply: &Element) -> Vec<(String, Element)> {
    reply
        .get_child("pubsub", PUBSUB)
        .and_then(|p| p.get_child("items", PUBSUB))
        .map(|i| {
            i.children()
                .filter(|c| c.is("item", PUBSUB))
                .filter_map(|c| Some((c.attr("id")?.to_owned(), c.children().next()?.clone())))
                .collect()
        })
        .unwrap_or_default()
}

/// The node and item ids of a notification, if `m` is one carrying items.
pub fn event_items(m: &Element) -> Option<(String, Vec<String>)> {
    let items = m
        .get_child("event", PUBSUB_EVENT)?
        .get_child("items", PUBSUB_EVENT)?;
    Some((
        items.attr("node")?.to_owned(),
        items
            .children()
            .filter(|c| c.is("item", PUBSUB_EVENT))
            .filter_map(|c| c.attr("id").map(str::to_owned))
            .collect(),
    ))
}

/// Whether `m` notifies items of `node`, one of them `id`.
pub fn notifies(m: &Element, node: &str, id: &str) -> bool {
    m.is("message", ns::CLIENT)
        && event_items(m).is_some_and(|(n, ids)| n == node && ids.iter().any(|i| i == id))
}

/// The pubsub-specific condition of an error reply.
pub fn pubsub_condition(reply: &Element) -> Option<String> {
    reply
        .get_child("error", ns::CLIENT)?
        .children()
        .find(|c| c.ns() == PUBSUB_ERRORS)
        .map(|c| c.name().to_owned())
}

/// The publish-options XEP-0402 asks for bookmarks: kept, as many as the service allows,
/// never sent on presence, the owner's alone.
pub const BOOKMARK_OPTIONS: [(&str, &str); 4] = [
    ("pubsub#persist_items", "true"),
    ("pubsub#max_items", "max"),
    ("pubsub#send_last_published_item", "never"),
    ("pubsub#access_model", "whitelist"),
];

/// XEP-0084 metadata of a PNG avatar `id` of `bytes` bytes.
pub fn avatar_metadata(id: &str, bytes: usize) -> Element {
    let ns = "urn:xmpp:avatar:metadata";
    Element::new("metadata", ns).with_child(
        Element::new("info", ns)
            .with_attr("id", id)
            .with_attr("bytes", bytes.to_string())
            .with_attr("type", "image/png"),
    )
}

/// Waits for a notification of item `id` of `node` (other stanzas stay buffered).
pub async fn notified(c: &mut Client, node: &str, id: &str) -> anyhow::Result<Element> {
    c.expect(&format!("a notification of {node} item {id}"), |m| {
        notifies(m, node, id)
    })
    .await
}
