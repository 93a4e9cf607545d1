//! Personal data requests as a client makes them (issue 17): a vCard's full name, private XML
//! elements, last activity.

use meerkat_xmpp::{ns, Element};

use crate::client::Client;

/// The `<FN/>` of the vCard an iq result carries.
pub fn vcard_name(reply: &Element) -> Option<String> {
    reply
        .get_child("vCard", ns::VCARD)
        .and_then(|v| v.child_text("FN", ns::VCARD))
}

/// The private XML element `name` in `namespace`, as the server returns it (empty when
/// nothing is stored).
pub async fn private_get(c: &mut Client, name: &str, namespace: &str) -> anyhow::Result<Element> {
    let ask = Element::new("query", ns::PRIVATE).with_child(Element::new(name, namespace));
    let r = c.iq_ok("get", None, ask).await?;
    r.get_child("query", ns::PRIVATE)
        .and_then(|q| q.get_child(name, namespace))
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("a private storage result without <{name}/>: {r}"))
}

/// The seconds and status text of a last activity result.
pub fn last_activity(reply: &Element) -> Option<(u64, String)> {
    let q = reply.get_child("query", ns::LAST)?;
    Some((q.attr("seconds")?.parse().ok()?, q.text()))
}
