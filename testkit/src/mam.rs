//! XEP-0313 archive queries as a client makes them: the data form, RSM paging, and the
//! results (messages to the querying resource, before the iq result).

use meerkat_xmpp::{ns, Element};

use crate::client::{stanza_error_condition, Client};

/// One result: the archive id, and the archived message.
#[derive(Clone, Debug)]
pub struct Item {
    pub id: String,
    pub message: Element,
    /// The delay stamp.
    pub stamp: String,
}

impl Item {
    pub fn body(&self) -> String {
        self.message
            .child_text("body", ns::CLIENT)
            .unwrap_or_default()
    }
}

/// What a query returned: the results in order, and `<fin/>`.
#[derive(Clone, Debug)]
pub struct Answer {
    pub items: Vec<Item>,
    pub fin: Element,
}

impl Answer {
    pub fn bodies(&self) -> Vec<String> {
        self.items.iter().map(Item::body).collect()
    }

    pub fn ids(&self) -> Vec<String> {
        self.items.iter().map(|i| i.id.clone()).collect()
    }

    pub fn complete(&self) -> bool {
        self.fin.attr("complete") == Some("true")
    }

    /// RSM `<first/>` and `<last/>`.
    pub fn first_last(&self) -> (Option<String>, Option<String>) {
        let set = self.fin.get_child("set", ns::RSM);
        let get = |n: &str| set.and_then(|s| s.child_text(n, ns::RSM));
        (get("first"), get("last"))
    }
}

/// A `<query/>` with the form `fields` (var, value; a var given several times is one field of
/// several values) and an RSM `<set/>` of `rsm` (name, text; an empty text makes an empty
/// element).
pub fn query(queryid: &str, fields: &[(&str, &str)], rsm: &[(&str, &str)]) -> Element {
    let mut x = Element::new("x", ns::DATA_FORMS)
        .with_attr("type", "submit")
        .with_child(
            Element::new("field", ns::DATA_FORMS)
                .with_attr("var", "FORM_TYPE")
                .with_attr("type", "hidden")
                .with_child(Element::new("value", ns::DATA_FORMS).with_text(ns::MAM)),
        );
    let mut vars: Vec<&str> = Vec::new();
    for (var, _) in fields {
        if !vars.contains(var) {
            vars.push(var);
        }
    }
    for var in vars {
        let mut f = Element::new("field", ns::DATA_FORMS).with_attr("var", var);
        for (_, v) in fields.iter().filter(|(w, _)| *w == var) {
            f.push_child(Element::new("value", ns::DATA_FORMS).with_text(*v));
        }
        x.push_child(f);
    }
    let mut q = Element::new("query", ns::MAM)
        .with_attr("queryid", queryid)
        .with_child(x);
    if !rsm.is_empty() {
        let mut set = Element::new("set", ns::RSM);
        for (name, text) in rsm {
            let mut e = Element::new(*name, ns::RSM);
            if !text.is_empty() {
                e = e.with_text(*text);
            }
            set.push_child(e);
        }
        q.push_child(set);
    }
    q
}

/// Sends `q` (from [`query`]) to the client's own archive; the results that came before the
/// iq result, and its `<fin/>`. An error reply is an `Err` naming its condition.
pub async fn run(c: &mut Client, q: Element) -> anyhow::Result<Answer> {
    run_at(c, None, q).await
}

/// [`run`] on the archive of `to` (a room's, XEP-0045 with XEP-0313), or the own one.
pub async fn run_at(c: &mut Client, to: Option<&str>, q: Element) -> anyhow::Result<Answer> {
    let qid = q.attr("queryid").unwrap_or_default().to_owned();
    let reply = c.iq("set", to, q).await?;
    if let Some(cond) = stanza_error_condition(&reply) {
        anyhow::bail!("{cond}");
    }
    let fin = reply
        .get_child("fin", ns::MAM)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no <fin/> in {reply}"))?;
    let is_result = |e: &Element| {
        e.is("message", ns::CLIENT)
            && e.get_child("result", ns::MAM)
                .is_some_and(|r| r.attr("queryid") == Some(qid.as_str()))
    };
    // Every result came before the iq result, so all are buffered by now.
    let n = c.buffered().filter(|e| is_result(e)).count();
    let mut items = Vec::with_capacity(n);
    for _ in 0..n {
        let m = c.expect("an archive result", &is_result).await?;
        let r = m.get_child("result", ns::MAM).expect("result");
        let fwd = r
            .get_child("forwarded", ns::FORWARD)
            .ok_or_else(|| anyhow::anyhow!("no <forwarded/> in {m}"))?;
        items.push(Item {
            id: r.attr("id").unwrap_or_default().to_owned(),
            message: fwd
                .get_child("message", ns::CLIENT)
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("no message in {m}"))?,
            stamp: fwd
                .get_child("delay", ns::DELAY)
                .and_then(|d| d.attr("stamp"))
                .unwrap_or_default()
                .to_owned(),
        });
    }
    Ok(Answer { items, fin })
}

/// The `<stanza-id/>` by `by` a received message carries.
pub fn stanza_id(m: &Element, by: &str) -> Option<String> {
    m.children()
        .find(|c| c.is("stanza-id", ns::SID) && c.attr("by") == Some(by))
        .and_then(|c| c.attr("id"))
        .map(str::to_owned)
}
