//! Roster pushes written in the order of the roster's versions (RFC 6121 §2.1.6, §2.6).
//!
//! A session gets roster pushes from its DC's routers by more than one path (a change made by
//! its own user, by a contact at this DC, or at another DC and written again from this DC's
//! copy: router `handlers/roster.rs`, `as_here`), and the paths do not keep one order. Every
//! push names the roster version of the state it shows (`<dc>-<n>`, numbered by that DC), so
//! a push for an item that is older than one already written to this client for the same item
//! is not written: it would undo the newer state on the client. Pushes numbered by another DC
//! are not compared (another DC's numbers do not order against this one's).

use std::collections::HashMap;

use meerkat_xmpp::{ns, Element};

/// How many items' last versions a session remembers. A roster may be longer; past this many
/// pushed items in one session one is forgotten, and an older push for it would be written.
pub const TRACKED_ITEMS: usize = 512;

/// The last version written to the client for each item pushed this session. Empty (nothing
/// allocated) until the first push.
#[derive(Default)]
pub struct RosterOrder {
    last: HashMap<Box<str>, (Box<str>, i64)>,
}

impl RosterOrder {
    /// Whether `xml` is a roster push older than, or as old as, one already written for its
    /// item (then it is not written). Anything else is not stale; a push that is not is
    /// remembered.
    pub fn stale(&mut self, xml: &str) -> bool {
        // Most stanzas are not roster pushes: no parse for them.
        if !xml.starts_with("<iq") || !xml.contains(ns::ROSTER) {
            return false;
        }
        let Some((contact, dc, version)) = Element::parse(xml).ok().as_ref().and_then(pushed)
        else {
            return false;
        };
        if let Some((last_dc, last)) = self.last.get(contact.as_str()) {
            if **last_dc == *dc && *last >= version {
                return true;
            }
        } else if self.last.len() >= TRACKED_ITEMS {
            if let Some(k) = self.last.keys().next().cloned() {
                self.last.remove(&k);
            }
        }
        self.last
            .insert(contact.into_boxed_str(), (dc.into_boxed_str(), version));
        false
    }
}

/// A server's roster push (an iq set without `from`, one item, a version `<dc>-<n>`): the
/// item's JID, the DC and the number.
fn pushed(el: &Element) -> Option<(String, String, i64)> {
    let client = el.ns() == ns::CLIENT || el.ns().is_empty();
    if el.name() != "iq" || !client || el.attr("type") != Some("set") || el.attr("from").is_some() {
        return None;
    }
    let query = el.get_child("query", ns::ROSTER)?;
    let (dc, n) = query.attr("ver")?.rsplit_once('-')?;
    let version = n.parse().ok()?;
    let mut items = query.children();
    let (Some(item), None) = (items.next(), items.next()) else {
        return None;
    };
    let contact = item.attr("jid")?.to_lowercase();
    Some((contact, dc.to_owned(), version))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(contact: &str, sub: &str, ver: &str) -> String {
        format!(
            "<iq xmlns='jabber:client' type='set' id='p' to='a@x/r'><query xmlns='jabber:iq:roster' ver='{ver}'><item jid='{contact}' subscription='{sub}'/></query></iq>"
        )
    }

    #[test]
    fn an_older_push_for_an_item_after_a_newer_one_is_not_written() {
        let mut o = RosterOrder::default();
        assert!(!o.stale(&push("b@x", "both", "dc1-7")));
        assert!(o.stale(&push("b@x", "to", "dc1-6")), "older than written");
        assert!(
            o.stale(&push("b@x", "both", "dc1-7")),
            "the same state again"
        );
        assert!(!o.stale(&push("B@x", "none", "dc1-8")), "newer, any case");
        assert!(o.stale(&push("b@x", "both", "dc1-7")));
    }

    #[test]
    fn other_items_other_dcs_and_other_stanzas_are_written() {
        let mut o = RosterOrder::default();
        assert!(!o.stale(&push("b@x", "both", "dc1-7")));
        assert!(!o.stale(&push("c@x", "to", "dc1-3")), "another item");
        assert!(
            !o.stale(&push("b@x", "to", "dc2-2")),
            "another DC's numbering"
        );
        assert!(
            !o.stale(&push("b@x", "both", "dc1-7")),
            "after the other DC's"
        );
        assert!(
            !o.stale(&push("b@x", "to", "dc-east-1-9")),
            "a DC name with dashes"
        );
        assert!(o.stale(&push("b@x", "to", "dc-east-1-8")));
        // Not a server's push: a result, one from a client, no version, two items.
        let result = "<iq xmlns='jabber:client' type='result' id='r'><query xmlns='jabber:iq:roster' ver='dc1-1'><item jid='b@x' subscription='none'/></query></iq>";
        let from_client = "<iq xmlns='jabber:client' type='set' from='e@x/1' id='s'><query xmlns='jabber:iq:roster' ver='dc1-1'><item jid='b@x' subscription='none'/></query></iq>";
        let unversioned = "<iq xmlns='jabber:client' type='set' id='s'><query xmlns='jabber:iq:roster'><item jid='b@x' subscription='none'/></query></iq>";
        let two = "<iq xmlns='jabber:client' type='set' id='s'><query xmlns='jabber:iq:roster' ver='dc1-1'><item jid='b@x'/><item jid='c@x'/></query></iq>";
        for xml in [
            result,
            from_client,
            unversioned,
            two,
            "<message xmlns='jabber:client'><body>jabber:iq:roster</body></message>",
            "<iq jabber:iq:roster",
        ] {
            assert!(!o.stale(xml), "{xml}");
        }
    }

    #[test]
    fn what_is_remembered_is_bounded() {
        let mut o = RosterOrder::default();
        for i in 0..TRACKED_ITEMS * 3 {
            assert!(!o.stale(&push(&format!("c{i}@x"), "to", "dc1-5")));
        }
        assert!(o.last.len() <= TRACKED_ITEMS);
    }
}
