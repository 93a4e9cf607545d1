//! XEP-0352 client state indication: what a session does not write at once while its client
//! said it is `<inactive/>` (a phone in a pocket), so the radio wakes only for what matters.
//!
//! Pure logic, no I/O: the session offers each stanza it would write, with its serialized form,
//! and writes what it is told to, in the order given. Generic over the held item because each
//! item also carries what the session must do once it is written or dropped (its broker
//! acknowledgement).
//!
//! Rules while inactive (after Prosody's `mod_csi_simple`, kept smaller):
//! - a presence is held, except the subscription types (`subscribe`, `subscribed`,
//!   `unsubscribe`, `unsubscribed`), which ask the user something and are urgent. Only the
//!   latest presence per `from` (as written) is kept: the older one leaves the queue, never
//!   written, and the new one goes to the end of the queue;
//! - a message is urgent when it has a `<body/>` or `<subject/>`, a `urn:xmpp:hints` `<store/>`,
//!   an OMEMO (`eu.siacs.conversations.axolotl` `<encrypted/>`) or OpenPGP (`urn:xmpp:openpgp:0`
//!   `<openpgp/>`) payload, or is of type `error`; any other message (a chat state alone, a
//!   headline without body, a receipt) is held;
//! - anything else (an iq, what does not parse) is urgent.
//!
//! Something urgent is written after everything held, in order, so the client sees stanzas in
//! the order they came (less the superseded presences). The queue is bounded: when holding a
//! stanza would pass `max_held` stanzas or `max_held_bytes` bytes, everything is written with
//! it (a presence it would have replaced included: `Send` drops nothing).

use std::collections::VecDeque;

use meerkat_xmpp::{ns, Element};

/// OMEMO (XEP-0384, the version clients deploy).
const OMEMO: &str = "eu.siacs.conversations.axolotl";
/// OpenPGP for XMPP (XEP-0373).
const OPENPGP: &str = "urn:xmpp:openpgp:0";

/// How much an inactive client's queue may hold before it is written anyway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CsiLimits {
    pub max_held: usize,
    pub max_held_bytes: usize,
}

impl Default for CsiLimits {
    fn default() -> Self {
        CsiLimits {
            max_held: 100,
            max_held_bytes: 64 * 1024,
        }
    }
}

/// What to do with an offered stanza.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer<T> {
    /// Write these now, in this order (everything held before, then the new one).
    Send(Vec<T>),
    /// Held until the client is active or something urgent comes; `superseded` is an older
    /// held item this one replaces (a presence from the same full JID): the caller drops it
    /// (and acknowledges it to the broker).
    Held { superseded: Option<T> },
}

struct Held<T> {
    item: T,
    bytes: usize,
    /// A presence's `from` (empty when absent), by which a later presence replaces it.
    presence_from: Option<String>,
}

/// What a client in the inactive state is not sent at once.
pub struct Csi<T> {
    limits: CsiLimits,
    active: bool,
    held: VecDeque<Held<T>>,
    held_bytes: usize,
    saved_stanzas: u64,
    saved_bytes: u64,
}

/// How an offered stanza is treated while the client is inactive.
#[derive(Debug, PartialEq, Eq)]
enum Class {
    Urgent,
    /// Held; a presence also names its sender.
    Hold {
        presence_from: Option<String>,
    },
}

fn classify(xml: &str) -> Class {
    let Ok(el) = Element::parse(xml) else {
        return Class::Urgent;
    };
    // The mailbox holds stanzas as routed (`jabber:client` declared); accept them undeclared too.
    if el.ns() != ns::CLIENT && !el.ns().is_empty() {
        return Class::Urgent;
    }
    match el.name() {
        "presence" => match el.attr("type") {
            Some("subscribe" | "subscribed" | "unsubscribe" | "unsubscribed") => Class::Urgent,
            _ => Class::Hold {
                presence_from: Some(el.attr("from").unwrap_or("").to_owned()),
            },
        },
        "message" if important_message(&el) => Class::Urgent,
        "message" => Class::Hold {
            presence_from: None,
        },
        _ => Class::Urgent,
    }
}

fn important_message(el: &Element) -> bool {
    if el.attr("type") == Some("error") {
        return true;
    }
    // A carbon (XEP-0280) is as important as the message it copies.
    if let Some(copied) = meerkat_xmpp::carbons::forwarded(el) {
        return important_message(copied);
    }
    el.children().any(|c| {
        let content = c.ns() == el.ns() && matches!(c.name(), "body" | "subject");
        content || c.is("store", ns::HINTS) || c.is("encrypted", OMEMO) || c.is("openpgp", OPENPGP)
    })
}

impl<T> Csi<T> {
    /// Active by default (XEP-0352 §4).
    pub fn new(limits: CsiLimits) -> Self {
        Csi {
            limits,
            active: true,
            held: VecDeque::new(),
            held_bytes: 0,
            saved_stanzas: 0,
            saved_bytes: 0,
        }
    }

    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Client sent `<inactive/>`.
    pub fn set_inactive(&mut self) {
        self.active = false;
    }

    /// Client sent `<active/>`: everything held, in order, to write now.
    pub fn set_active(&mut self) -> Vec<T> {
        self.active = true;
        self.take_all()
    }

    /// A stanza to write to the client (`xml` its serialized form, as the mailbox holds it).
    pub fn offer(&mut self, item: T, xml: &str) -> Offer<T> {
        if self.active {
            return Offer::Send(vec![item]);
        }
        let presence_from = match classify(xml) {
            Class::Urgent => return Offer::Send(self.flush_with(item)),
            Class::Hold { presence_from } => presence_from,
        };
        let replaces = presence_from.as_deref().and_then(|from| {
            self.held
                .iter()
                .position(|h| h.presence_from.as_deref() == Some(from))
        });
        let bytes = xml.len();
        let (len_after, bytes_after) = match replaces {
            Some(at) => (
                self.held.len(),
                self.held_bytes - self.held[at].bytes + bytes,
            ),
            None => (self.held.len() + 1, self.held_bytes + bytes),
        };
        if len_after > self.limits.max_held || bytes_after > self.limits.max_held_bytes {
            // Everything goes, the presence this one would replace included (in its place):
            // `Send` has no room for a dropped item, and writing it costs one stanza, rarely.
            return Offer::Send(self.flush_with(item));
        }
        let superseded = replaces.and_then(|at| {
            let old = self.held.remove(at)?;
            self.held_bytes -= old.bytes;
            self.saved_stanzas += 1;
            self.saved_bytes += old.bytes as u64;
            Some(old.item)
        });
        self.held.push_back(Held {
            item,
            bytes,
            presence_from,
        });
        self.held_bytes += bytes;
        Offer::Held { superseded }
    }

    /// Everything held (the session ends or detaches): in order.
    pub fn take_all(&mut self) -> Vec<T> {
        self.held_bytes = 0;
        self.held.drain(..).map(|h| h.item).collect()
    }

    pub fn held_len(&self) -> usize {
        self.held.len()
    }

    /// Bytes of the serialized stanzas held.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// Stanzas and bytes never written because a later presence from the same sender replaced
    /// them.
    pub fn saved(&self) -> (u64, u64) {
        (self.saved_stanzas, self.saved_bytes)
    }

    fn flush_with(&mut self, item: T) -> Vec<T> {
        let mut send = self.take_all();
        send.push(item);
        send
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inactive() -> Csi<u32> {
        let mut csi = Csi::new(CsiLimits::default());
        csi.set_inactive();
        csi
    }

    fn presence(from: &str) -> String {
        format!("<presence xmlns='jabber:client' from='{from}' to='bob@example.com/a'/>")
    }

    fn chat_state(from: &str) -> String {
        format!(
            "<message xmlns='jabber:client' from='{from}' type='chat'>\
             <composing xmlns='http://jabber.org/protocol/chatstates'/></message>"
        )
    }

    fn body(from: &str) -> String {
        format!(
            "<message xmlns='jabber:client' from='{from}' type='chat'><body>hi</body></message>"
        )
    }

    fn held(offer: Offer<u32>) -> Option<u32> {
        match offer {
            Offer::Held { superseded } => superseded,
            Offer::Send(items) => panic!("sent {items:?}, expected held"),
        }
    }

    fn sent(offer: Offer<u32>) -> Vec<u32> {
        match offer {
            Offer::Send(items) => items,
            Offer::Held { superseded } => panic!("held (superseded {superseded:?}), expected sent"),
        }
    }

    #[test]
    fn active_by_default_and_sends_everything_at_once() {
        let mut csi = Csi::new(CsiLimits::default());
        assert!(csi.is_active());
        assert_eq!(sent(csi.offer(1, &presence("alice@example.com/a"))), [1]);
        assert_eq!(sent(csi.offer(2, &chat_state("alice@example.com/a"))), [2]);
        assert_eq!(csi.held_len(), 0);
    }

    #[test]
    fn toggling_holds_then_writes_in_order() {
        let mut csi = inactive();
        assert!(!csi.is_active());
        assert_eq!(held(csi.offer(1, &presence("a@example.com/1"))), None);
        assert_eq!(held(csi.offer(2, &chat_state("a@example.com/1"))), None);
        assert_eq!(held(csi.offer(3, &presence("c@example.com/1"))), None);
        assert_eq!(csi.held_len(), 3);
        assert_eq!(csi.set_active(), [1, 2, 3]);
        assert!(csi.is_active());
        assert_eq!((csi.held_len(), csi.held_bytes()), (0, 0));
        assert_eq!(sent(csi.offer(4, &presence("a@example.com/1"))), [4]);
        // Active again: nothing more to write.
        assert!(csi.set_active().is_empty());
        csi.set_inactive();
        assert_eq!(held(csi.offer(5, &presence("a@example.com/1"))), None);
        assert_eq!(csi.take_all(), [5]);
    }

    #[test]
    fn a_carbon_is_judged_by_what_it_copies() {
        let carbon = |inner: &str| {
            format!(
                "<message xmlns='jabber:client' from='a@example.com' type='chat'>\
                 <received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>\
                 {inner}</forwarded></received></message>"
            )
        };
        let mut csi = inactive();
        held(csi.offer(1, &carbon(&chat_state("b@example.com/1"))));
        assert_eq!(
            sent(csi.offer(2, &carbon(&body("b@example.com/1")))),
            [1, 2]
        );
    }

    #[test]
    fn urgent_flushes_what_is_held_first() {
        let mut csi = inactive();
        held(csi.offer(1, &presence("a@example.com/1")));
        held(csi.offer(2, &chat_state("a@example.com/1")));
        assert_eq!(sent(csi.offer(3, &body("a@example.com/1"))), [1, 2, 3]);
        assert_eq!((csi.held_len(), csi.held_bytes()), (0, 0));
        assert!(
            !csi.is_active(),
            "an urgent stanza does not make the client active"
        );
        assert_eq!(held(csi.offer(4, &presence("a@example.com/1"))), None);
    }

    #[test]
    fn a_later_presence_from_the_same_sender_replaces_the_held_one() {
        let mut csi = inactive();
        let first = presence("a@example.com/1");
        held(csi.offer(1, &first));
        held(csi.offer(2, &presence("a@example.com/2")));
        held(csi.offer(3, &chat_state("a@example.com/1")));
        let away =
            "<presence xmlns='jabber:client' from='a@example.com/1'><show>away</show></presence>";
        assert_eq!(held(csi.offer(4, away)), Some(1));
        // Unavailable replaces it too; the bare JID is another sender.
        let gone = "<presence xmlns='jabber:client' from='a@example.com/1' type='unavailable'/>";
        assert_eq!(held(csi.offer(5, gone)), Some(4));
        assert_eq!(held(csi.offer(6, &presence("a@example.com"))), None);
        assert_eq!(csi.held_len(), 4);
        assert_eq!(
            csi.held_bytes(),
            presence("a@example.com/2").len()
                + chat_state("a@example.com/1").len()
                + gone.len()
                + presence("a@example.com").len()
        );
        assert_eq!(csi.saved(), (2, (first.len() + away.len()) as u64));
        // The replacing one took the end of the queue.
        assert_eq!(csi.take_all(), [2, 3, 5, 6]);
    }

    #[test]
    fn subscription_presences_are_urgent() {
        for kind in ["subscribe", "subscribed", "unsubscribe", "unsubscribed"] {
            let mut csi = inactive();
            held(csi.offer(1, &presence("a@example.com/1")));
            let xml =
                format!("<presence xmlns='jabber:client' from='a@example.com' type='{kind}'/>");
            assert_eq!(sent(csi.offer(2, &xml)), [1, 2], "{kind}");
        }
        let mut csi = inactive();
        for (n, kind) in ["unavailable", "error", "probe"].into_iter().enumerate() {
            let xml = format!("<presence from='x{n}@example.com' type='{kind}'/>");
            assert_eq!(held(csi.offer(n as u32, &xml)), None, "{kind}");
        }
    }

    #[test]
    fn what_a_message_carries_decides() {
        let urgent = [
            body("a@example.com/1"),
            // Undeclared jabber:client, as a client stream writes it.
            "<message from='a@example.com/1'><body>hi</body></message>".into(),
            "<message xmlns='jabber:client' type='groupchat'><subject>topic</subject></message>".into(),
            "<message xmlns='jabber:client' type='error'><error type='cancel'/></message>".into(),
            "<message xmlns='jabber:client'><store xmlns='urn:xmpp:hints'/></message>".into(),
            "<message xmlns='jabber:client'><encrypted xmlns='eu.siacs.conversations.axolotl'/></message>".into(),
            "<message xmlns='jabber:client'><openpgp xmlns='urn:xmpp:openpgp:0'>x</openpgp></message>".into(),
        ];
        for xml in urgent {
            let mut csi = inactive();
            assert_eq!(sent(csi.offer(1, &xml)), [1], "{xml}");
        }
        let hold = [
            chat_state("a@example.com/1"),
            "<message xmlns='jabber:client' type='headline'><event xmlns='http://jabber.org/protocol/pubsub#event'/></message>".into(),
            "<message xmlns='jabber:client'><received xmlns='urn:xmpp:receipts' id='1'/></message>".into(),
            // A body in another namespace is not the message's body.
            "<message xmlns='jabber:client'><body xmlns='urn:example'>x</body></message>".into(),
            "<message xmlns='jabber:client'><no-store xmlns='urn:xmpp:hints'/></message>".into(),
        ];
        for xml in hold {
            let mut csi = inactive();
            assert_eq!(held(csi.offer(1, &xml)), None, "{xml}");
        }
    }

    #[test]
    fn anything_else_is_urgent() {
        for xml in [
            "<iq xmlns='jabber:client' type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>",
            "<presence xmlns='jabber:client'",
            "not xml",
            "<presence xmlns='urn:example'/>",
        ] {
            let mut csi = inactive();
            held(csi.offer(1, &presence("a@example.com/1")));
            assert_eq!(sent(csi.offer(2, xml)), [1, 2], "{xml}");
        }
    }

    #[test]
    fn past_the_count_limit_everything_is_written() {
        let mut csi = Csi::new(CsiLimits {
            max_held: 3,
            max_held_bytes: 1 << 20,
        });
        csi.set_inactive();
        for n in 1..=3 {
            held(csi.offer(n, &presence(&format!("u{n}@example.com/1"))));
        }
        // A replacing presence does not grow the queue.
        assert_eq!(held(csi.offer(4, &presence("u1@example.com/1"))), Some(1));
        assert_eq!(
            sent(csi.offer(5, &chat_state("u1@example.com/1"))),
            [2, 3, 4, 5]
        );
        assert_eq!(csi.held_len(), 0);
    }

    #[test]
    fn past_the_byte_limit_everything_is_written() {
        let small = presence("a@example.com/1");
        let mut csi = Csi::new(CsiLimits {
            max_held: 100,
            max_held_bytes: 2 * small.len() + 1,
        });
        csi.set_inactive();
        held(csi.offer(1, &small));
        held(csi.offer(2, &presence("b@example.com/1")));
        assert_eq!(csi.held_bytes(), 2 * small.len());
        assert_eq!(
            sent(csi.offer(3, &chat_state("a@example.com/1"))),
            [1, 2, 3]
        );
        // A replacing presence too big to fit writes the one it would replace too, in order.
        held(csi.offer(4, &small));
        let big = "<presence xmlns='jabber:client' from='a@example.com/1'><status>gone fishing, back at noon</status></presence>";
        held(csi.offer(5, &presence("b@example.com/1")));
        assert_eq!(sent(csi.offer(6, big)), [4, 5, 6]);
        assert_eq!(csi.saved(), (0, 0));
        // A stanza bigger than the whole allowance is written at once.
        let mut csi = Csi::new(CsiLimits {
            max_held: 100,
            max_held_bytes: 10,
        });
        csi.set_inactive();
        assert_eq!(sent(csi.offer(1, &small)), [1]);
    }
}
