//! Multi-user chat requests (issue 19): any payload through the router's MUC parsers — the
//! join element (`Join::parse`), admin requests (get and set), owner requests (get and set)
//! and the configuration form applied to a room's configuration, invitations, and the archive
//! row another DC reads from a room's reflection (`muc_reflection_record`). Checks that
//! nothing panics; that an admin change names a target for each item; that no applied form
//! passes the occupant and history caps, that a password-protected room has a secret, and that
//! a reflection's row is the room's, under an id that spells its stamp, with a stanza that
//! parses.
//!
//! Input: one byte choosing a template (or raw XML when past them), then text spliced in.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meerkat_xmpp::Element;
use router::muc_request::{apply_form, AdminRequest, Invite, Join, OwnerRequest};
use router::RoomConfig;

const TEMPLATES: &[&str] = &[
    "<presence xmlns='jabber:client'><x xmlns='http://jabber.org/protocol/muc'>{I}</x></presence>",
    "<query xmlns='http://jabber.org/protocol/muc#admin'>{I}</query>",
    "<query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'>{I}</x></query>",
    "<query xmlns='http://jabber.org/protocol/muc#owner'>{I}</query>",
    "<message xmlns='jabber:client'><x xmlns='http://jabber.org/protocol/muc#user'>{I}</x></message>",
    "<message xmlns='jabber:client' type='groupchat' from='r@conference.example.com/n' to='u@example.com/x'><body>b</body>{I}</message>",
];

const MAX_USERS: u32 = 10;
const MAX_HISTORY: u32 = 5;

fuzz_target!(|data: &[u8]| {
    let Some((&t, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let xml = match TEMPLATES.get(usize::from(t)) {
        Some(tpl) => tpl.replace("{I}", &text),
        None => text.into_owned(),
    };
    let Ok(el) = Element::parse(&xml) else {
        return;
    };
    let _ = Join::parse(&el);
    for set in [false, true] {
        if let Ok(AdminRequest::Change(items)) = AdminRequest::parse(set, &el) {
            assert!(!items.is_empty());
            for i in items {
                assert!(i.role.is_some() == i.nick.is_some() || i.jid.is_some());
            }
        }
        if let Ok(OwnerRequest::Submit(fields)) = OwnerRequest::parse(set, &el) {
            if let Ok(c) = apply_form(&RoomConfig::default(), &fields, MAX_USERS, MAX_HISTORY) {
                assert!(c.max_users <= RoomConfig::default().max_users.max(MAX_USERS));
                assert!(c.history_length <= RoomConfig::default().history_length.max(MAX_HISTORY));
                assert!(!c.password_protected || !c.password.is_empty());
            }
        }
    }
    if let Some(meerkat_store::Record::Archive {
        username,
        id,
        stamp,
        state: Some(state),
    }) = router::muc_reflection_record(&el, "conference.example.com")
    {
        assert!(username.ends_with("@conference.example.com"));
        assert_eq!(meerkat_store::archive_id(&stamp), id);
        let archived = Element::parse(&state.stanza).expect("the kept stanza parses");
        assert!(archived.attr("to").is_none());
    }
    if let Some(Ok(inv)) = Invite::parse(&el) {
        assert!(!inv.to.is_empty() && inv.to.len() <= router::muc_request::MAX_INVITES);
    }
});
