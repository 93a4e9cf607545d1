//! XEP-0352 client state indication (`c2s_gateway::csi`): arbitrary sequences of stanzas
//! offered, `<active/>`/`<inactive/>` toggles and session ends, under small limits. Checks that
//! nothing is lost or written twice (every offered item comes back exactly once: sent, held then
//! flushed, or superseded), that what is written comes in offer order, that the held counts are
//! the held items' and stay within the limits, and that `saved` counts the superseded ones.
//!
//! Input: two bytes of limits, then operations separated by 0xFF (never in UTF-8). An
//! operation's first byte picks it: 0 inactive, 1 active, 2 the session ends (`take_all`),
//! 3..=127 a stanza built from a template (the byte and the next pick kind and sender, so the
//! fuzzer reaches the rules at once), 128.. the rest as raw XML.
#![no_main]

use c2s_gateway::csi::{Csi, CsiLimits, Offer};
use libfuzzer_sys::fuzz_target;

const TEMPLATES: &[&str] = &[
    "<presence xmlns='jabber:client' from='{F}'/>",
    "<presence xmlns='jabber:client' from='{F}' type='unavailable'/>",
    "<presence xmlns='jabber:client' from='{F}'><show>away</show><status>long status text here</status></presence>",
    "<presence xmlns='jabber:client' from='{F}' type='subscribe'/>",
    "<presence from='{F}'/>",
    "<presence xmlns='jabber:client'/>",
    "<message xmlns='jabber:client' from='{F}'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
    "<message xmlns='jabber:client' from='{F}'><body>hello</body></message>",
    "<message xmlns='jabber:client' from='{F}' type='error'/>",
    "<message xmlns='jabber:client' from='{F}'><store xmlns='urn:xmpp:hints'/></message>",
    "<message xmlns='jabber:client' from='{F}' type='headline'/>",
    "<iq xmlns='jabber:client' from='{F}' type='get' id='1'/>",
    "<presence xmlns='jabber:client' from='{F}'",
];

struct Check {
    /// Byte length of each offered item's XML, by item number.
    bytes: Vec<usize>,
    /// How many times each item came back.
    returned: Vec<u32>,
    /// The last item written, to check the order.
    last_written: Option<usize>,
    superseded: (u64, u64),
}

impl Check {
    fn back(&mut self, item: usize) {
        self.returned[item] += 1;
        assert_eq!(self.returned[item], 1, "item {item} came back twice");
    }

    fn written(&mut self, items: Vec<usize>) {
        for item in items {
            assert!(
                self.last_written.is_none_or(|last| item > last),
                "item {item} written after {:?}",
                self.last_written
            );
            self.last_written = Some(item);
            self.back(item);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (limits, ops) = match data {
        [count, bytes, rest @ ..] => (
            CsiLimits {
                max_held: usize::from(count % 17),
                max_held_bytes: usize::from(*bytes) * 16,
            },
            rest,
        ),
        _ => return,
    };
    let mut csi: Csi<usize> = Csi::new(limits);
    let mut check = Check {
        bytes: Vec::new(),
        returned: Vec::new(),
        last_written: None,
        superseded: (0, 0),
    };
    for op in ops.split(|b| *b == 0xFF) {
        let Some((&selector, rest)) = op.split_first() else {
            continue;
        };
        match selector {
            0 => csi.set_inactive(),
            1 => {
                let items = csi.set_active();
                check.written(items);
                assert!(csi.is_active());
            }
            2 => {
                let items = csi.take_all();
                check.written(items);
            }
            _ => {
                let xml = if selector < 128 {
                    let template = TEMPLATES[usize::from(selector) % TEMPLATES.len()];
                    let from = rest.first().map_or(0, |b| b % 4);
                    let jid = match from {
                        0 => "a@example.com/1",
                        1 => "a@example.com/2",
                        2 => "a@example.com",
                        _ => "b@example.com/1",
                    };
                    template.replace("{F}", jid)
                } else {
                    String::from_utf8_lossy(rest).into_owned()
                };
                let item = check.bytes.len();
                check.bytes.push(xml.len());
                check.returned.push(0);
                let active = csi.is_active();
                match csi.offer(item, &xml) {
                    Offer::Send(items) => {
                        assert_eq!(
                            items.last(),
                            Some(&item),
                            "the offered item is written last"
                        );
                        check.written(items);
                    }
                    Offer::Held { superseded } => {
                        assert!(!active, "held while active");
                        if let Some(old) = superseded {
                            assert!(old < item);
                            check.back(old);
                            check.superseded.0 += 1;
                            check.superseded.1 += check.bytes[old] as u64;
                        }
                    }
                }
            }
        }
        // Whatever has not come back is held, and only that.
        let (held, held_bytes) = check
            .returned
            .iter()
            .zip(&check.bytes)
            .filter(|(n, _)| **n == 0)
            .fold((0, 0), |(n, b), (_, bytes)| (n + 1, b + bytes));
        assert_eq!(csi.held_len(), held);
        assert_eq!(csi.held_bytes(), held_bytes);
        assert!(held <= limits.max_held && held_bytes <= limits.max_held_bytes);
        assert!(!csi.is_active() || held == 0, "active with items held");
        assert_eq!(csi.saved(), check.superseded);
    }
    let items = csi.take_all();
    check.written(items);
    assert!(check.returned.iter().all(|n| *n == 1), "an item was lost");
    assert_eq!((csi.held_len(), csi.held_bytes()), (0, 0));
});
