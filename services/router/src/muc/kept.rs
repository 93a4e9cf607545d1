//! What a room's reflection from its home at another DC says the home archived, kept at this
//! DC too (docs/decisions.md, "A room's archive survives its home"). The home archives a
//! groupchat message, then reflects it with its `<stanza-id by='room'/>`; the archive row
//! reaches the other DCs by replication, the reflection by the inter-DC stanza path. A home
//! that dies after its reflections left but before its replication shipped the row would leave
//! every surviving occupant with a message, and an id, the room's archive no longer has: so
//! the DC that takes the reflection writes the row itself when it does not hold it yet. The
//! row is the home's (same id, stamp and stanza), so the replicated one changes nothing.

use meerkat_store::{archive_stamp, Record};
use meerkat_wire::data::ArchiveState;
use meerkat_wire::RouteKind;
use meerkat_xmpp::{ns, Element, StanzaType};

use crate::inbound::Inbound;
use crate::jids::Addr;
use crate::Ctx;

/// Keeps the archive row a room's reflection from another DC carries, if this DC lacks it.
/// Anything else passes untouched.
pub async fn reflection(ctx: &Ctx, inb: &Inbound) -> anyhow::Result<()> {
    if !matches!(inb.wire_kind, RouteKind::Remote | RouteKind::Fanout) {
        return Ok(());
    }
    element(ctx, &inb.el).await
}

/// [`reflection`] for one stanza of a bundle from another DC.
pub async fn element(ctx: &Ctx, el: &Element) -> anyhow::Result<()> {
    if !ctx.config.muc || el.name() != "message" || StanzaType::of(el) != StanzaType::Groupchat {
        return Ok(());
    }
    let Some(rec) = record_of(el, &ctx.config.muc_domain()) else {
        return Ok(());
    };
    if ctx.store.archive_keep(&rec).await? {
        if let Record::Archive { username, id, .. } = &rec {
            tracing::info!(room = %username, %id, "room message kept from its reflection: the home's replication had not brought it");
        }
    }
    Ok(())
}

/// The archive row the reflection `el` of a room of `muc_domain` names: the room's, under
/// its stanza id, with the stanza as the home archived it. `None` when `el` is not such a
/// reflection.
pub fn record_of(el: &Element, muc_domain: &str) -> Option<Record> {
    let from = el.attr("from")?;
    let addr = Addr::parse(from)?;
    if addr.domain != muc_domain || addr.node.is_none() || addr.resource.is_none() {
        return None;
    }
    let room = addr.bare;
    el.get_child("body", ns::CLIENT)?;
    let id = el
        .children()
        .find(|c| c.is("stanza-id", ns::SID) && c.attr("by") == Some(room.as_str()))?
        .attr("id")?
        .to_owned();
    let stamp = archive_stamp(&id)?;
    Some(Record::Archive {
        state: Some(ArchiveState {
            with: from.to_owned(),
            stanza: archived_form(el, &room).to_xml(),
        }),
        username: room,
        id,
        stamp,
    })
}

/// The message as the room's home archived it, from a reflection of it: without the
/// recipient's `to` and without the room's stanza id, which the home adds after archiving.
pub(super) fn archived_form(reflection: &Element, room: &str) -> Element {
    let mut m = reflection.clone();
    m.remove_attr("to");
    m.remove_children(|c| c.is("stanza-id", ns::SID) && c.attr("by") == Some(room));
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOM: &str = "lounge@conference.example.com";

    fn archived() -> Element {
        Element::new("message", ns::CLIENT)
            .with_attr("from", format!("{ROOM}/alice"))
            .with_attr("type", "groupchat")
            .with_attr("id", "m1")
            .with_child(Element::new("body", ns::CLIENT).with_text("hi <all> & co"))
            .with_child(
                Element::new("stanza-id", ns::SID)
                    .with_attr("by", "alice@example.com")
                    .with_attr("id", "theirs"),
            )
    }

    fn reflected(id: &str) -> Element {
        let mut r = archived().with_child(
            Element::new("stanza-id", ns::SID)
                .with_attr("by", ROOM)
                .with_attr("id", id),
        );
        r.set_attr("to", "bob@example.com/car");
        r
    }

    #[test]
    fn a_reflection_names_the_row_its_home_archived() {
        let el = Element::parse(&reflected("18c2f00000001-dc2").to_xml()).unwrap();
        let Some(Record::Archive {
            username,
            id,
            stamp,
            state: Some(state),
        }) = record_of(&el, "conference.example.com")
        else {
            panic!("no record");
        };
        assert_eq!(username, ROOM);
        assert_eq!(id, "18c2f00000001-dc2");
        assert_eq!((stamp.hlc, stamp.dc.as_str()), (0x18c2f00000001, "dc2"));
        assert_eq!(state.with, format!("{ROOM}/alice"));
        // Byte for byte what the home wrote: the other stanza id stays.
        assert_eq!(state.stanza, archived().to_xml());
    }

    #[test]
    fn what_is_not_an_archived_reflection_names_no_row() {
        let muc = "conference.example.com";
        // Not from a room of this service, or from the room itself, or with no id of the
        // room's, an id that is not an archive id, or no body (a subject).
        let mut other = reflected("1-dc2");
        other.set_attr("from", "lounge@conference.elsewhere.org/alice");
        let mut bare = reflected("1-dc2");
        bare.set_attr("from", ROOM);
        let mut no_id = reflected("1-dc2");
        no_id.remove_children(|c| c.attr("by") == Some(ROOM));
        let mut no_body = reflected("1-dc2");
        no_body.remove_children(|c| c.is("body", ns::CLIENT));
        for el in [other, bare, no_id, reflected("not-an-id"), no_body] {
            assert!(record_of(&el, muc).is_none(), "{el}");
        }
        assert!(record_of(&reflected("1-dc2"), muc).is_some());
    }
}
