//! XEP-0153 vCard-based avatars, the server's part (as ejabberd's `mod_vcard_xupdate`): an
//! account's available presence says what the server knows of its photo. Whatever
//! `<x xmlns='vcard-temp:x:update'/>` the client put there is removed and the server's is
//! added: `<photo>` with the SHA-1 (hex) of the stored vCard's decoded photo, empty when the
//! account has no vCard, no photo or one that does not decode. The hash is stored beside the
//! vCard (store `vcard_photo_hash`, migration 0008), so this is one indexed read per presence.
//! Setting a vCard sends nothing: clients re-send their presence (XEP-0153 §3.2).
//! Under the `personal_data` switch.

use std::collections::HashMap;

use meerkat_wire::RouteKind;
use meerkat_xmpp::avatar::set_update;
use meerkat_xmpp::{Element, StanzaKind, StanzaType};

use crate::inbound::Inbound;
use crate::jids::split_bare;
use crate::Ctx;

/// The account of this domain whose available presence `inb` is, when the server stamps it: a
/// client's own presence (broadcast or directed), or the last presence this DC broadcasts for
/// a session of a DC that is back (`LocalPresence`). Presence from another DC was stamped
/// where its client sent it.
fn stamped_account<'a>(ctx: &Ctx, inb: &'a Inbound) -> Option<&'a str> {
    if !ctx.config.personal_data
        || inb.kind != StanzaKind::Presence
        || inb.ty != StanzaType::Available
        || !matches!(inb.wire_kind, RouteKind::Stanza | RouteKind::LocalPresence)
    {
        return None;
    }
    local_user(ctx, &inb.from_bare)
}

fn local_user<'a>(ctx: &Ctx, bare: &'a str) -> Option<&'a str> {
    match split_bare(bare) {
        (Some(user), domain) if domain.eq_ignore_ascii_case(&ctx.config.domain) => Some(user),
        _ => None,
    }
}

/// `inb` with the server's photo hash, or `None` when it is not one to stamp.
pub async fn stamp(ctx: &Ctx, inb: &Inbound) -> anyhow::Result<Option<Inbound>> {
    let Some(user) = stamped_account(ctx, inb) else {
        return Ok(None);
    };
    let hash = ctx.store.vcard_photo_hash(user).await?;
    let mut stamped = inb.clone();
    set_update(&mut stamped.el, &hash);
    Ok(Some(stamped))
}

/// Stamps stored presences (a directory session's last presence, as its client sent it) of
/// `bares` before they answer a probe or a login: one query for all of them. Only available
/// presences of this domain's accounts are touched.
pub async fn stamp_stored(
    ctx: &Ctx,
    presences: &mut [(String, Vec<Element>)],
) -> anyhow::Result<()> {
    if !ctx.config.personal_data {
        return Ok(());
    }
    let users: Vec<String> = presences
        .iter()
        .filter(|(_, ps)| ps.iter().any(is_available))
        .filter_map(|(bare, _)| local_user(ctx, bare).map(str::to_owned))
        .collect();
    if users.is_empty() {
        return Ok(());
    }
    let hashes: HashMap<String, String> = ctx
        .store
        .vcard_photo_hashes(&users)
        .await?
        .into_iter()
        .collect();
    for (bare, ps) in presences.iter_mut() {
        let Some(user) = local_user(ctx, bare) else {
            continue;
        };
        let hash = hashes.get(user).map(String::as_str).unwrap_or("");
        for p in ps.iter_mut().filter(|p| is_available(p)) {
            set_update(p, hash);
        }
    }
    Ok(())
}

fn is_available(p: &Element) -> bool {
    p.name() == "presence" && StanzaType::of(p) == StanzaType::Available
}
