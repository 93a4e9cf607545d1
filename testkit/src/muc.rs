//! Multi-user chat (XEP-0045) as a client does it: joining, creating an instant room,
//! groupchat messages, and reading what the room sends (status codes, items).

use meerkat_xmpp::{ns, Element};

use crate::client::Client;

pub const MUC: &str = "http://jabber.org/protocol/muc";
pub const USER: &str = "http://jabber.org/protocol/muc#user";
pub const ADMIN: &str = "http://jabber.org/protocol/muc#admin";
pub const OWNER: &str = "http://jabber.org/protocol/muc#owner";

/// A join presence to `room/nick` with `<x xmlns=muc>`, an optional password and history
/// attributes.
pub fn join_presence(occupant: &str, password: Option<&str>, history: &[(&str, &str)]) -> Element {
    let mut x = Element::new("x", MUC);
    if let Some(p) = password {
        x.push_child(Element::new("password", MUC).with_text(p));
    }
    if !history.is_empty() {
        let mut h = Element::new("history", MUC);
        for (k, v) in history {
            h.set_attr(*k, *v);
        }
        x.push_child(h);
    }
    Element::new("presence", ns::CLIENT)
        .with_attr("to", occupant)
        .with_child(x)
}

/// The status codes of a presence or message from a room.
pub fn codes(el: &Element) -> Vec<u16> {
    el.get_child("x", USER)
        .map(|x| {
            x.children()
                .filter(|c| c.is("status", USER))
                .filter_map(|c| c.attr("code").and_then(|v| v.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// The `<item/>` of a presence from a room.
pub fn item(el: &Element) -> Option<&Element> {
    el.get_child("x", USER)
        .and_then(|x| x.get_child("item", USER))
}

/// A presence from `from` (an occupant JID) carrying status `code`.
pub fn presence_with(from: &str, code: u16) -> impl Fn(&Element) -> bool + '_ {
    move |e| {
        e.is("presence", ns::CLIENT) && e.attr("from") == Some(from) && codes(e).contains(&code)
    }
}

/// An error reply from `from`.
pub fn error_from(from: &str) -> impl Fn(&Element) -> bool + '_ {
    move |e| e.attr("from") == Some(from) && e.attr("type") == Some("error")
}

/// A groupchat message with `body` to `room`.
pub fn groupchat(room: &str, body: &str) -> Element {
    Element::new("message", ns::CLIENT)
        .with_attr("to", room)
        .with_attr("type", "groupchat")
        .with_child(Element::new("body", ns::CLIENT).with_text(body))
}

/// A groupchat message with a body from the room (any occupant).
pub fn is_groupchat_from(room: &str) -> impl Fn(&Element) -> bool + '_ {
    move |e| {
        e.is("message", ns::CLIENT)
            && e.attr("type") == Some("groupchat")
            && e.has_child("body", ns::CLIENT)
            && e.attr("from")
                .is_some_and(|f| f.starts_with(&format!("{room}/")))
    }
}

/// Joins `room/nick` and waits for the own presence (status 110); returns it.
pub async fn join(c: &mut Client, room: &str, nick: &str) -> anyhow::Result<Element> {
    let occupant = format!("{room}/{nick}");
    c.send(&join_presence(&occupant, None, &[])).await?;
    c.expect("own presence (110)", presence_with(&occupant, 110))
        .await
}

/// Creates `room` as `nick` and accepts the default configuration (instant room, §10.1.2).
pub async fn create(c: &mut Client, room: &str, nick: &str) -> anyhow::Result<()> {
    let own = join(c, room, nick).await?;
    anyhow::ensure!(codes(&own).contains(&201), "not created: {own}");
    let q = Element::new("query", OWNER)
        .with_child(Element::new("x", ns::DATA_FORMS).with_attr("type", "submit"));
    c.iq_ok("set", Some(room), q).await?;
    Ok(())
}

/// A configuration form of `fields` (var, value) to submit.
pub fn config(fields: &[(&str, &str)]) -> Element {
    let mut x = Element::new("x", ns::DATA_FORMS)
        .with_attr("type", "submit")
        .with_child(
            Element::new("field", ns::DATA_FORMS)
                .with_attr("var", "FORM_TYPE")
                .with_child(
                    Element::new("value", ns::DATA_FORMS)
                        .with_text("http://jabber.org/protocol/muc#roomconfig"),
                ),
        );
    for (var, v) in fields {
        x.push_child(
            Element::new("field", ns::DATA_FORMS)
                .with_attr("var", *var)
                .with_child(Element::new("value", ns::DATA_FORMS).with_text(*v)),
        );
    }
    Element::new("query", OWNER).with_child(x)
}

/// A muc#admin set of one item (attributes).
pub fn admin(attrs: &[(&str, &str)]) -> Element {
    let mut item = Element::new("item", ADMIN);
    for (k, v) in attrs {
        item.set_attr(*k, *v);
    }
    Element::new("query", ADMIN).with_child(item)
}
