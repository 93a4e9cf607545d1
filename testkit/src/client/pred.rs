//! Ready-made predicates for `Client::expect` / `expect_none`, so tests read as what they wait for.

use meerkat_xmpp::{ns, Element};

/// `jid` matches `from` exactly, or `from`'s bare part when `jid` has no resource.
fn from_matches(el: &Element, jid: &str) -> bool {
    match el.attr("from") {
        Some(from) if from == jid => true,
        Some(from) => !jid.contains('/') && from.split('/').next() == Some(jid),
        None => false,
    }
}

/// A message from `jid` (bare or full).
pub fn message_from(jid: &str) -> impl Fn(&Element) -> bool + '_ {
    move |el| el.is("message", ns::CLIENT) && from_matches(el, jid)
}

/// A message whose body is exactly `body`.
pub fn message_with_body(body: &str) -> impl Fn(&Element) -> bool + '_ {
    move |el| {
        el.is("message", ns::CLIENT) && el.child_text("body", ns::CLIENT).as_deref() == Some(body)
    }
}

/// A presence stanza from `jid` (bare or full), of any type.
pub fn presence_from(jid: &str) -> impl Fn(&Element) -> bool + '_ {
    move |el| el.is("presence", ns::CLIENT) && from_matches(el, jid)
}

/// A presence stanza from `jid` with the given `type` (`None`: available).
pub fn presence_of_type<'a>(jid: &'a str, kind: Option<&'a str>) -> impl Fn(&Element) -> bool + 'a {
    move |el| presence_from(jid)(el) && el.attr("type") == kind
}

/// An iq request (get/set) carrying a child `name` in namespace `ns`, e.g. a roster push.
pub fn iq_request<'a>(name: &'a str, child_ns: &'a str) -> impl Fn(&Element) -> bool + 'a {
    move |el| {
        el.is("iq", ns::CLIENT)
            && matches!(el.attr("type"), Some("get") | Some("set"))
            && el.has_child(name, child_ns)
    }
}

/// Any stanza.
pub fn any(_: &Element) -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_bare_or_full_senders() {
        let m = Element::new("message", ns::CLIENT)
            .with_attr("from", "a@example.com/phone")
            .with_child(Element::new("body", ns::CLIENT).with_text("hi"));
        assert!(message_from("a@example.com")(&m));
        assert!(message_from("a@example.com/phone")(&m));
        assert!(!message_from("a@example.com/laptop")(&m));
        assert!(!message_from("b@example.com")(&m));
        assert!(message_with_body("hi")(&m));
        assert!(!presence_from("a@example.com")(&m));
        let p = Element::new("presence", ns::CLIENT)
            .with_attr("from", "a@example.com/phone")
            .with_attr("type", "unavailable");
        assert!(presence_of_type("a@example.com", Some("unavailable"))(&p));
        assert!(!presence_of_type("a@example.com", None)(&p));
    }
}
