//! XEP-0334 message processing hints, read once per message so every consumer (offline
//! storage, the archive, carbons) honours them the same way.

use crate::{ns, Element};

/// The hints a message carries (XEP-0334 §4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hints {
    /// `<no-permanent-store/>`: not archived (MAM), may still be stored offline.
    pub no_permanent_store: bool,
    /// `<no-store/>`: neither archived nor stored offline.
    pub no_store: bool,
    /// `<no-copy/>`: not copied to other resources (carbons).
    pub no_copy: bool,
    /// `<store/>`: archive and store even a message the rules would not (e.g. without body).
    pub store: bool,
}

impl Hints {
    /// The hints among `message`'s children (others are ignored).
    pub fn of(message: &Element) -> Hints {
        let mut h = Hints::default();
        for c in message.children().filter(|c| c.ns() == ns::HINTS) {
            match c.name() {
                "no-permanent-store" => h.no_permanent_store = true,
                "no-store" => h.no_store = true,
                "no-copy" => h.no_copy = true,
                "store" => h.store = true,
                _ => {}
            }
        }
        h
    }

    /// May the message go to offline storage? (`no-store` forbids it.)
    pub fn allows_offline(self) -> bool {
        !self.no_store
    }

    /// May the message be archived? (`no-store` and `no-permanent-store` forbid it.)
    pub fn allows_archive(self) -> bool {
        !self.no_store && !self.no_permanent_store
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn hints(xml: &str) -> Hints {
        Hints::of(&Element::parse(xml).unwrap())
    }

    #[test]
    fn each_hint_is_read_and_others_ignored() {
        let h = hints(
            "<message xmlns='jabber:client'><body>x</body><no-store xmlns='urn:xmpp:hints'/>\
             <no-copy xmlns='urn:xmpp:hints'/><store xmlns='other'/></message>",
        );
        assert_eq!(
            h,
            Hints {
                no_store: true,
                no_copy: true,
                ..Hints::default()
            }
        );
        assert!(!h.allows_offline() && !h.allows_archive());
        let h = hints("<message xmlns='jabber:client'><no-permanent-store xmlns='urn:xmpp:hints'/><store xmlns='urn:xmpp:hints'/></message>");
        assert!(h.allows_offline() && !h.allows_archive() && h.store);
        assert_eq!(hints("<message xmlns='jabber:client'/>"), Hints::default());
    }
}
