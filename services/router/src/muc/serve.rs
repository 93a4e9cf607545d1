//! The home's handling of a room's stanzas (XEP-0045), one at a time in the room's partition:
//! read the room, decide, write the change (with the archived message) in one transaction,
//! then queue the reflections and broadcasts, in the room's order, to each occupant's session
//! wherever it is.

use meerkat_store::{MucPut, MucWrite};
use meerkat_xmpp::stanza::{iq_result, iq_result_with};
use meerkat_xmpp::{ns, Element, StanzaError, StanzaKind, StanzaType};

use super::request::{AdminRequest, Invite, Join, OwnerRequest};
use super::room::{
    aff_key, nick_of_key, occupant_key, Affiliation, Config, Occupant, Role, Room, SUBJECT_KEY,
};
use super::{NS_ADMIN, NS_MUC, NS_OWNER, NS_PURGE, NS_SELF_PING, NS_USER};
use crate::inbound::Inbound;
use crate::jids::Addr;
use crate::metrics::Outcome;
use crate::outbox::{Outbox, Target};
use crate::reply::{error, reply};
use crate::Ctx;

fn stamp(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Queues `el` for the session of the full JID `jid`; false when it has none.
fn deliver(ctx: &Ctx, out: &mut Outbox, jid: &str, el: &Element) -> bool {
    let target = ctx.sessions.read().session(jid).map(Target::from);
    match target {
        Some(t) => {
            out.deliver(t, el);
            true
        }
        None => false,
    }
}

fn answer(ctx: &Ctx, inb: &Inbound, out: &mut Outbox, r: Result<Element, StanzaError>) -> Outcome {
    match r {
        Ok(mut el) => {
            if el.attr("to").is_none() {
                el.set_attr("to", inb.from.clone());
            }
            reply(ctx, inb, out, &el);
            Outcome::Handled
        }
        Err(e) => error(ctx, inb, out, e),
    }
}

/// The service itself (`conference.<domain>`): disco info and items (the public rooms).
pub async fn service(
    ctx: &Ctx,
    inb: &Inbound,
    out: &mut Outbox,
    addr: &Addr,
) -> anyhow::Result<Outcome> {
    match inb.kind {
        StanzaKind::Presence => return Ok(Outcome::Dropped),
        StanzaKind::Message => return Ok(error(ctx, inb, out, StanzaError::service_unavailable())),
        StanzaKind::Iq if !inb.ty.is_request() => return Ok(Outcome::Dropped),
        StanzaKind::Iq => {}
    }
    let Some(payload) = single_payload(&inb.el) else {
        return Ok(error(ctx, inb, out, StanzaError::bad_request()));
    };
    let r = match (payload.ns(), inb.ty) {
        (ns::DISCO_INFO, StanzaType::Get) if payload.attr("node").is_none() => {
            let mut q = Element::new("query", ns::DISCO_INFO).with_child(
                Element::new("identity", ns::DISCO_INFO)
                    .with_attr("category", "conference")
                    .with_attr("type", "text")
                    .with_attr("name", "Chatrooms"),
            );
            for f in [ns::DISCO_INFO, ns::DISCO_ITEMS, NS_MUC, ns::PING] {
                q.push_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", f));
            }
            Ok(iq_result_with(&inb.el, q))
        }
        (ns::DISCO_ITEMS, StanzaType::Get) if payload.attr("node").is_none() => {
            let mut q = Element::new("query", ns::DISCO_ITEMS);
            for (jid, body) in ctx.store.muc_rooms().await? {
                let Ok(c) = serde_json::from_str::<Config>(&body) else {
                    continue;
                };
                if !c.public || c.locked {
                    continue;
                }
                let name = if c.name.is_empty() {
                    crate::jids::split_bare(&jid).0.unwrap_or("").to_owned()
                } else {
                    c.name
                };
                q.push_child(
                    Element::new("item", ns::DISCO_ITEMS)
                        .with_attr("jid", jid)
                        .with_attr("name", name),
                );
            }
            Ok(iq_result_with(&inb.el, q))
        }
        (ns::PING, StanzaType::Get) => Ok(iq_result(&inb.el)),
        (ns::DISCO_INFO | ns::DISCO_ITEMS, _) => Err(StanzaError::item_not_found()),
        _ => Err(StanzaError::service_unavailable()),
    };
    let _ = addr;
    Ok(answer(ctx, inb, out, r))
}

fn single_payload(el: &Element) -> Option<&Element> {
    let mut c = el.children();
    match (c.next(), c.next()) {
        (Some(p), None) => Some(p),
        _ => None,
    }
}

/// What one handling changes and sends, applied by [`Handling::finish`].
struct Handling<'a> {
    ctx: &'a Ctx,
    room: Room,
    write: MucWrite,
    /// Occupants whose session is gone, found while sending: removed afterwards (333).
    ghosts: Vec<String>,
    /// A DC this handling knows is down (a purge order for it), whatever this router's own
    /// view of the DCs says yet (another router of the DC may have seen it first).
    down: Option<String>,
}

impl<'a> Handling<'a> {
    async fn new(ctx: &'a Ctx, jid: &str) -> anyhow::Result<Handling<'a>> {
        Ok(Handling {
            ctx,
            room: Room::load(ctx, jid).await?,
            write: MucWrite {
                room: jid.to_owned(),
                ..MucWrite::default()
            },
            ghosts: Vec::new(),
            down: None,
        })
    }

    /// Writes occupant `nick` (`Some`), or removes the one holding it (`None`).
    fn put_occupant(&mut self, nick: &str, o: Option<Occupant>) {
        match o {
            Some(mut o) => {
                if o.key.is_empty() || nick_of_key(&o.key) != nick {
                    o.key = occupant_key(nick, &o.jid);
                }
                o.away = false;
                self.write_row(&o.key.clone(), Some(&o));
                self.room.occupants.insert(nick.to_owned(), o);
            }
            None => {
                if let Some(o) = self.room.occupants.remove(nick) {
                    self.write_row(&o.key, None);
                }
            }
        }
    }

    /// Writes the row `key` of an occupant (`None`: deletes it).
    fn write_row(&mut self, key: &str, o: Option<&Occupant>) {
        let body = o.map(|o| serde_json::to_string(o).unwrap_or_default());
        self.write.puts.push(MucPut::occupant(key, body));
    }

    /// Occupant `nick` leaves the room's view because its DC is down; its row stays, marked.
    fn put_away(&mut self, nick: &str) {
        if let Some(mut o) = self.room.occupants.remove(nick) {
            o.away = true;
            self.write_row(&o.key.clone(), Some(&o));
            self.room.away.push((nick.to_owned(), o));
        }
    }

    fn put_config(&mut self, c: Config) {
        self.write.puts.push(MucPut::room(
            "",
            Some(serde_json::to_string(&c).unwrap_or_default()),
        ));
        self.room.config = Some(c);
    }

    fn put_affiliation(&mut self, bare: &str, a: Affiliation) {
        let body = (a != Affiliation::None).then(|| a.as_str().to_owned());
        if a == Affiliation::None {
            self.room.affiliations.remove(bare);
        } else {
            self.room.affiliations.insert(bare.to_owned(), a);
        }
        self.write.puts.push(MucPut::room(&aff_key(bare), body));
    }

    /// Writes what was changed; the archive id when a message was archived.
    async fn commit(&mut self) -> anyhow::Result<Option<String>> {
        if self.write.puts.is_empty() && self.write.archive.is_none() {
            return Ok(None);
        }
        let w = std::mem::replace(
            &mut self.write,
            MucWrite {
                room: self.room.jid.clone(),
                ..MucWrite::default()
            },
        );
        Ok(self.ctx.store.muc_write(w).await?)
    }

    fn config(&self) -> Config {
        self.room.config.clone().unwrap_or_default()
    }

    /// Sends `el` to the occupant `nick`; remembers it as a ghost if its session is gone.
    fn send(&mut self, out: &mut Outbox, nick: &str, el: &Element) {
        let Some(o) = self.room.occupants.get(nick) else {
            return;
        };
        let mut el = el.clone();
        el.set_attr("to", o.jid.clone());
        if !deliver(self.ctx, out, &o.jid, &el) {
            self.missing(nick);
        }
    }

    /// Sends `el` to every occupant, each copy to its occupant (one fan-out, outbox.rs);
    /// remembers those whose session is gone as ghosts.
    fn send_all(&mut self, out: &mut Outbox, el: &Element) {
        let nicks: Vec<String> = self.room.occupants.keys().cloned().collect();
        self.send_to(out, &nicks, el);
    }

    /// Sends `el` to each of the occupants `nicks`, as [`Handling::send_all`].
    fn send_to(&mut self, out: &mut Outbox, nicks: &[String], el: &Element) {
        let mut copies = Vec::with_capacity(nicks.len());
        let mut missing = Vec::new();
        {
            let dir = self.ctx.sessions.read();
            for nick in nicks {
                let Some(o) = self.room.occupants.get(nick) else {
                    continue;
                };
                match dir.session(&o.jid) {
                    Some(s) => copies.push((Target::from(s), o.jid.clone())),
                    None => missing.push(nick.clone()),
                }
            }
        }
        out.fan_out(self.ctx, el, copies);
        for nick in missing {
            self.missing(&nick);
        }
    }

    /// Sends each occupant its own element (`per_viewer`: nick and element). Viewers that
    /// see the same element (a presence shows the real JID to some, not to others) get it
    /// in one fan-out.
    fn send_each(&mut self, out: &mut Outbox, per_viewer: Vec<(String, Element)>) {
        let mut groups: Vec<(Element, Vec<String>)> = Vec::new();
        for (nick, el) in per_viewer {
            match groups.iter_mut().find(|(e, _)| *e == el) {
                Some((_, nicks)) => nicks.push(nick),
                None => groups.push((el, vec![nick])),
            }
        }
        for (el, nicks) in groups {
            self.send_to(out, &nicks, &el);
        }
    }

    /// The occupant `nick` has no session in the directory: a ghost if it is gone.
    fn missing(&mut self, nick: &str) {
        let Some(o) = self.room.occupants.get(nick) else {
            return;
        };
        if self.ghosts.iter().any(|g| g == nick) {
            return;
        }
        // A session of another DC missing here is gone only once this directory saw it end:
        // after a heal the directory learns the other side's sessions again, apart from the
        // data, and until then they are missing, not gone.
        let gone = o.dc == self.ctx.config.dc
            || o.session
                .is_none_or(|id| self.ctx.sessions.read().has_seen(id, 0));
        if gone {
            self.ghosts.push(nick.to_owned());
        }
    }

    /// The presence of occupant `nick` as `viewer` sees it, with status `codes`.
    fn presence_of(&self, nick: &str, o: &Occupant, viewer: &str, codes: &[u16]) -> Element {
        let mut p =
            Element::parse(&o.presence).unwrap_or_else(|_| Element::new("presence", ns::CLIENT));
        p.remove_children(|c| c.ns() == NS_USER || c.ns() == NS_MUC);
        p.remove_attr("id");
        p.set_attr("from", format!("{}/{nick}", self.room.jid));
        let item = self.item(o, viewer);
        let mut x = Element::new("x", NS_USER).with_child(item);
        for c in codes {
            x.push_child(Element::new("status", NS_USER).with_attr("code", c.to_string()));
        }
        p.push_child(x);
        p
    }

    /// An occupant's `<item/>` as the occupant `viewer` sees it: the real JID to everyone in a
    /// non-anonymous room, else to moderators only.
    fn item(&self, o: &Occupant, viewer: &str) -> Element {
        let mut item = Element::new("item", NS_USER)
            .with_attr("affiliation", self.room.affiliation(&o.bare()).as_str())
            .with_attr("role", o.role.clone());
        let sees = self.config().whois_anyone
            || self
                .room
                .occupants
                .get(viewer)
                .is_some_and(|v| v.role() == Role::Moderator);
        if sees {
            item.set_attr("jid", o.jid.clone());
        }
        item
    }

    /// Every occupant gets `nick`'s presence (`codes`; `own` added for the occupant itself).
    fn broadcast_presence(&mut self, out: &mut Outbox, nick: &str, codes: &[u16], own: &[u16]) {
        let Some(o) = self.room.occupants.get(nick).cloned() else {
            return;
        };
        let viewers: Vec<String> = self.room.occupants.keys().cloned().collect();
        let mut per_viewer = Vec::with_capacity(viewers.len());
        for v in viewers {
            let mut c = codes.to_vec();
            if v == nick {
                c.extend_from_slice(own);
            }
            let p = self.presence_of(nick, &o, &v, &c);
            per_viewer.push((v, p));
        }
        self.send_each(out, per_viewer);
    }

    /// Unavailable presence of the gone occupant `o` (already removed) to everyone left, and
    /// to itself (`to_self`) with 110.
    fn broadcast_leave(
        &mut self,
        out: &mut Outbox,
        nick: &str,
        o: &Occupant,
        codes: &[u16],
        extra: Option<Element>,
        to_self: bool,
    ) {
        let viewers: Vec<String> = self.room.occupants.keys().cloned().collect();
        let leave = |h: &Self, viewer: &str, c: &[u16]| {
            let mut p = Element::new("presence", ns::CLIENT)
                .with_attr("type", "unavailable")
                .with_attr("from", format!("{}/{nick}", h.room.jid));
            let mut item = h.item(o, viewer);
            item.set_attr("role", "none");
            let mut x = Element::new("x", NS_USER).with_child(item);
            if let Some(e) = &extra {
                x.push_child(e.clone());
            }
            for code in c {
                x.push_child(Element::new("status", NS_USER).with_attr("code", code.to_string()));
            }
            p.push_child(x);
            p
        };
        let per_viewer = viewers
            .into_iter()
            .map(|v| {
                let p = leave(self, &v, codes);
                (v, p)
            })
            .collect();
        self.send_each(out, per_viewer);
        if to_self {
            let mut c = codes.to_vec();
            c.push(110);
            let mut p = leave(self, nick, &c);
            p.set_attr("to", o.jid.clone());
            deliver(self.ctx, out, &o.jid, &p);
        }
    }

    /// Removes the occupants whose sessions are gone (found while sending), telling the
    /// others with status 333 (XEP-0045: removed because of a technical problem).
    async fn finish(mut self, out: &mut Outbox) -> anyhow::Result<()> {
        self.commit().await?;
        let mut rounds = 0;
        while !self.ghosts.is_empty() && rounds < 3 {
            rounds += 1;
            let ghosts = std::mem::take(&mut self.ghosts);
            let mut gone = Vec::new();
            for nick in ghosts {
                if let Some(o) = self.room.occupants.get(&nick).cloned() {
                    // Its DC declared down (dead or cut off): kept aside until it says
                    // whether the session is still there.
                    tracing::debug!(room = %self.room.jid, nick, dc = %o.dc, "MUC: occupant gone");
                    let down = self.down.as_deref() == Some(o.dc.as_str())
                        || self.ctx.muc_liveness.is_down(&o.dc);
                    if o.dc != self.ctx.config.dc && down {
                        self.put_away(&nick);
                    } else {
                        self.put_occupant(&nick, None);
                    }
                    gone.push((nick, o));
                }
            }
            self.commit().await?;
            for (nick, o) in gone {
                self.broadcast_leave(out, &nick, &o, &[333], None, false);
            }
        }
        self.destroy_if_empty().await
    }

    /// A temporary room goes when its last occupant does.
    async fn destroy_if_empty(&mut self) -> anyhow::Result<()> {
        let Some(c) = &self.room.config else {
            return Ok(());
        };
        // Occupants away with their DC may come back: the room waits for them.
        if c.persistent || !self.room.occupants.is_empty() || !self.room.away.is_empty() {
            return Ok(());
        }
        self.delete_room();
        self.commit().await?;
        Ok(())
    }

    fn delete_room(&mut self) {
        self.write.puts.push(MucPut::room("", None));
        if self.room.subject.take().is_some() {
            self.write.puts.push(MucPut::room(SUBJECT_KEY, None));
        }
        for bare in std::mem::take(&mut self.room.affiliations).into_keys() {
            self.write.puts.push(MucPut::room(&aff_key(&bare), None));
        }
        let occupants = std::mem::take(&mut self.room.occupants).into_values();
        let others = std::mem::take(&mut self.room.away).into_iter();
        let losers = std::mem::take(&mut self.room.losers).into_iter();
        for o in occupants.chain(others.chain(losers).map(|(_, o)| o)) {
            self.write.puts.push(MucPut::occupant(&o.key, None));
        }
        self.room.config = None;
    }
}

/// A stanza for the room `addr.bare` (or one of its occupants), at the room's home.
pub async fn room(
    ctx: &Ctx,
    inb: &Inbound,
    out: &mut Outbox,
    addr: &Addr,
) -> anyhow::Result<Outcome> {
    let order = inb.el.get_child("reconcile", NS_PURGE);
    if let (true, Some(order)) = (inb.from == addr.bare, order) {
        wait_for_sessions(ctx, order).await;
    }
    let mut h = Handling::new(ctx, &addr.bare).await?;
    if ctx.muc_catch_up.recent() {
        // Right after a return or a heal, the directory may not know yet the sessions of
        // occupants at other DCs (it learns them apart from the data): what the room sends
        // them would be lost (catchup.rs).
        let unseen: Vec<uuid::Uuid> = {
            let dir = ctx.sessions.read();
            h.room
                .occupants
                .values()
                .filter(|o| o.dc != ctx.config.dc)
                .filter_map(|o| o.session)
                .filter(|id| !dir.has_seen(*id, 0))
                .collect()
        };
        if !unseen.is_empty() {
            wait_seen(ctx, unseen).await;
        }
    }
    settle(&mut h, out).await?;
    // The router's own orders: a DC was declared down, or is back.
    if inb.from == addr.bare {
        if let Some(r) = inb.el.get_child("reconcile", NS_PURGE) {
            reconcile(&mut h, out, r).await?;
            h.finish(out).await?;
            return Ok(Outcome::Handled);
        }
        if let Some(p) = inb.el.get_child("purge", NS_PURGE) {
            let dc = p.attr("dc").unwrap_or("").to_owned();
            let dead: Vec<String> = h
                .room
                .occupants
                .iter()
                .filter(|(_, o)| o.dc == dc)
                .map(|(n, _)| n.clone())
                .collect();
            h.ghosts = dead;
            h.down = Some(dc);
            h.finish(out).await?;
            return Ok(Outcome::Handled);
        }
        return Ok(Outcome::Dropped);
    }
    let outcome = match (inb.kind, &addr.resource) {
        (StanzaKind::Presence, Some(nick)) => presence(&mut h, inb, out, nick).await?,
        (StanzaKind::Presence, None) => Outcome::Dropped,
        (StanzaKind::Message, None) => message(&mut h, inb, out).await?,
        (StanzaKind::Message, Some(nick)) => private(&mut h, inb, out, nick),
        (StanzaKind::Iq, None) => iq(&mut h, inb, out).await?,
        (StanzaKind::Iq, Some(nick)) => occupant_iq(&h, inb, out, nick),
    };
    h.finish(out).await?;
    Ok(outcome)
}

/// Waits until the directory holds the sessions a reconcile order names (3 s at most, all
/// together): after a heal it learns the other side's sessions again apart from the data, and
/// what the room sends them meanwhile would find no session.
async fn wait_for_sessions(ctx: &Ctx, order: &Element) {
    let ids: Vec<uuid::Uuid> = order
        .children()
        .filter(|c| c.is("occupant", NS_PURGE))
        .filter_map(|c| c.attr("session").and_then(|s| s.parse().ok()))
        .collect();
    wait_seen(ctx, ids).await;
}

/// Waits until the directory has seen the sessions `ids` (3 s at most, all together).
async fn wait_seen(ctx: &Ctx, ids: Vec<uuid::Uuid>) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
    for id in ids {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        ctx.sessions.wait_seen(id, 0, left).await;
    }
}

/// Removes the occupants that lost their nick to an earlier occupant (both sides of a
/// partition let one nick be taken; the merged rows show both): the loser is told it left
/// (110, 333), and so are the occupants at its DC (the side that saw it join), who then get
/// the presence of the nick's holder.
async fn settle(h: &mut Handling<'_>, out: &mut Outbox) -> anyhow::Result<()> {
    let losers = std::mem::take(&mut h.room.losers);
    if losers.is_empty() {
        return Ok(());
    }
    for (_, o) in &losers {
        h.write_row(&o.key, None);
    }
    h.commit().await?;
    for (nick, o) in losers {
        tracing::info!(room = %h.room.jid, nick, jid = %o.jid, "MUC: nick taken on both sides of a partition; the later occupant leaves");
        let viewers: Vec<String> = h
            .room
            .occupants
            .iter()
            .filter(|(n, v)| v.dc == o.dc && **n != nick)
            .map(|(n, _)| n.clone())
            .collect();
        tell_gone(h, out, &nick, &o, &viewers).await;
        if let Some(holder) = h.room.occupants.get(&nick).cloned() {
            for v in &viewers {
                let p = h.presence_of(&nick, &holder, v, &[]);
                h.send(out, v, &p);
            }
        }
    }
    Ok(())
}

/// Unavailable presence (333) of `o`, no longer `nick` here, to `viewers` and to itself (110).
/// Right after a heal the directory may not hold their sessions yet: waited for first.
async fn tell_gone(
    h: &mut Handling<'_>,
    out: &mut Outbox,
    nick: &str,
    o: &Occupant,
    viewers: &[String],
) {
    let ids: Vec<uuid::Uuid> = std::iter::once(o)
        .chain(viewers.iter().filter_map(|v| h.room.occupants.get(v)))
        .filter_map(|x| x.session)
        .collect();
    wait_seen(h.ctx, ids).await;
    let leave = |h: &Handling<'_>, viewer: &str, codes: &[u16]| {
        let mut item = h.item(o, viewer);
        item.set_attr("role", "none");
        let mut x = Element::new("x", NS_USER).with_child(item);
        for c in codes {
            x.push_child(Element::new("status", NS_USER).with_attr("code", c.to_string()));
        }
        Element::new("presence", ns::CLIENT)
            .with_attr("type", "unavailable")
            .with_attr("from", format!("{}/{nick}", h.room.jid))
            .with_child(x)
    };
    for v in viewers {
        let p = leave(h, v, &[333]);
        h.send(out, v, &p);
    }
    let mut p = leave(h, nick, &[110, 333]);
    p.set_attr("to", o.jid.clone());
    deliver(h.ctx, out, &o.jid, &p);
}

/// The router's order when the DC `dc` is back (a partition healed, a DC returned), sent by
/// that DC with the occupants whose sessions it still holds (`<occupant jid=… session=…/>`),
/// handled once this DC has applied what that DC wrote before (the data wait of the inter-DC
/// path) and holds those sessions ([`wait_for_sessions`]); also sent, `quiet`, by a router of
/// `dc` that starts (its DC may be a new life whose occupants are all gone). Each of `dc`'s
/// occupants named is written again (its row then outlives any mark the other side wrote
/// during the partition); one away is put back, unless its nick went to an earlier occupant
/// meanwhile (then it is told it left: 110, 333); the others of `dc` leave. Each one named
/// then gets the presence of the occupants at other DCs, and they get its presence, and it
/// gets the subject.
async fn reconcile(h: &mut Handling<'_>, out: &mut Outbox, order: &Element) -> anyhow::Result<()> {
    let dc = order.attr("dc").unwrap_or("").to_owned();
    tracing::debug!(room = %h.room.jid, dc, occupants = ?h.room.occupants.iter().map(|(n, o)| (n, &o.dc)).collect::<Vec<_>>(), away = ?h.room.away.iter().map(|(n, o)| (n, &o.dc)).collect::<Vec<_>>(), "MUC: reconcile of");
    let named: Vec<&Element> = order
        .children()
        .filter(|c| c.is("occupant", NS_PURGE))
        .collect();
    let live: std::collections::HashSet<String> = named
        .iter()
        .filter_map(|c| c.attr("jid").map(str::to_owned))
        .collect();

    // Occupants of `dc` in the room's view: written again, or gone.
    let here: Vec<(String, Occupant)> = h
        .room
        .occupants
        .iter()
        .filter(|(_, o)| o.dc == dc)
        .map(|(n, o)| (n.clone(), o.clone()))
        .collect();
    // A router that starts (`quiet`) only clears what its DC no longer holds: its occupants
    // in the room are not news.
    let quiet = order.attr("quiet") == Some("1");
    let mut confirmed = Vec::new();
    for (nick, o) in here {
        if live.contains(&o.jid) {
            if !quiet {
                h.put_occupant(&nick, Some(o));
                confirmed.push(nick);
            }
        } else if h.ctx.sessions.read().session(&o.jid).is_none() && !h.ghosts.contains(&nick) {
            // Not named, and no session here either (a row the sender had not read yet, of a
            // join handled here, stays).
            h.ghosts.push(nick);
        }
    }
    // Occupants of `dc` away: back, or deleted.
    let away = std::mem::take(&mut h.room.away);
    let mut back = Vec::new();
    for (nick, o) in away {
        if o.dc != dc {
            h.room.away.push((nick, o));
            continue;
        }
        let in_room = h.room.nick_of(&o.jid).is_some();
        if !live.contains(&o.jid) || in_room {
            h.write_row(&o.key, None);
            continue;
        }
        match h.room.occupants.get(&nick).cloned() {
            Some(holder) if holder.precedes(&o) => {
                // Its nick went to an earlier occupant on the other side.
                h.write_row(&o.key, None);
                h.commit().await?;
                tell_gone(h, out, &nick, &o, &[]).await;
            }
            holder => {
                if let Some(holder) = holder {
                    // It held the nick first: the one that took it meanwhile leaves.
                    h.write_row(&holder.key, None);
                    h.room.occupants.remove(&nick);
                    h.commit().await?;
                    let viewers: Vec<String> = h
                        .room
                        .occupants
                        .iter()
                        .filter(|(_, v)| v.dc == holder.dc)
                        .map(|(n, _)| n.clone())
                        .collect();
                    tell_gone(h, out, &nick, &holder, &viewers).await;
                }
                h.put_occupant(&nick, Some(o));
                back.push(nick);
            }
        }
    }
    h.commit().await?;
    tracing::debug!(room = %h.room.jid, dc, quiet, named = live.len(), ?confirmed, ?back, ghosts = ?h.ghosts, "MUC: reconcile");
    // The two sides saw different joins and leaves: each one confirmed or back first gets the
    // presence of every occupant at another DC, then those get its presence (it gets its own,
    // 110). Of two reconciles (one per side), the later sees both and tells both.
    let mine: Vec<String> = confirmed.iter().chain(&back).cloned().collect();
    for nick in &mine {
        let Some(me) = h.room.occupants.get(nick).cloned() else {
            continue;
        };
        let others: Vec<(String, Occupant)> = h
            .room
            .occupants
            .iter()
            .filter(|(n, o)| *n != nick && o.dc != me.dc)
            .map(|(n, o)| (n.clone(), o.clone()))
            .collect();
        for (other, oo) in others {
            let p = h.presence_of(&other, &oo, nick, &[]);
            h.send(out, nick, &p);
        }
    }
    for nick in &mine {
        let Some(me) = h.room.occupants.get(nick).cloned() else {
            continue;
        };
        let viewers: Vec<String> = h
            .room
            .occupants
            .iter()
            .filter(|(n, o)| *n == nick || o.dc != me.dc)
            .map(|(n, _)| n.clone())
            .collect();
        for v in viewers {
            let codes: &[u16] = if v == *nick { &[110] } else { &[] };
            let p = h.presence_of(nick, &me, &v, codes);
            h.send(out, &v, &p);
        }
    }
    // The subject may have changed on the other side meanwhile.
    if let Some(s) = h
        .room
        .subject
        .as_deref()
        .and_then(|s| Element::parse(s).ok())
    {
        for nick in confirmed.iter().chain(&back) {
            h.send(out, nick, &s);
        }
    }
    // Named: their sessions are there, whatever this directory says yet.
    let named_ghost = |g: &String| {
        h.room
            .occupants
            .get(g)
            .is_some_and(|o| live.contains(&o.jid))
    };
    let keep: Vec<String> = h
        .ghosts
        .iter()
        .filter(|g| named_ghost(g))
        .cloned()
        .collect();
    h.ghosts.retain(|g| !keep.contains(g));
    Ok(())
}

/// Presence to `room/nick`: join, presence change, nick change, leave.
async fn presence(
    h: &mut Handling<'_>,
    inb: &Inbound,
    out: &mut Outbox,
    nick: &str,
) -> anyhow::Result<Outcome> {
    let ctx = h.ctx;
    let current = h.room.nick_of(&inb.from).map(str::to_owned);
    match inb.ty {
        StanzaType::Unavailable => {
            let Some(current) = current else {
                return Ok(Outcome::Dropped);
            };
            let Some(o) = h.room.occupants.get(&current).cloned() else {
                return Ok(Outcome::Dropped);
            };
            h.put_occupant(&current, None);
            h.commit().await?;
            h.broadcast_leave(out, &current, &o, &[], None, true);
            Ok(Outcome::Handled)
        }
        StanzaType::Available => {
            if nick.trim().is_empty() {
                return Ok(error(ctx, inb, out, StanzaError::jid_malformed()));
            }
            if nick.chars().count() > ctx.config.max_nick_chars as usize {
                return Ok(error(ctx, inb, out, StanzaError::not_acceptable()));
            }
            let mut stored = inb.el.clone();
            stored.remove_children(|c| c.ns() == NS_MUC || c.ns() == NS_USER);
            for a in ["to", "from", "id"] {
                stored.remove_attr(a);
            }
            match current {
                Some(c) if c == nick => {
                    // A presence change of an occupant.
                    let mut o = h.room.occupants[&c].clone();
                    o.presence = stored.to_xml();
                    h.put_occupant(&c, Some(o));
                    h.commit().await?;
                    h.broadcast_presence(out, &c, &[], &[110]);
                    Ok(Outcome::Handled)
                }
                Some(old) => {
                    // A nick change (XEP-0045 §7.6).
                    if h.room.occupants.contains_key(nick) {
                        return Ok(error(ctx, inb, out, StanzaError::conflict()));
                    }
                    let mut o = h.room.occupants[&old].clone();
                    o.presence = stored.to_xml();
                    o.since_ms = now_ms();
                    h.put_occupant(&old, None);
                    h.put_occupant(nick, Some(o.clone()));
                    h.commit().await?;
                    let mut new_item = Element::new("x", NS_USER);
                    new_item.set_attr("nick", nick);
                    // 303 with the new nick in the item.
                    let viewers: Vec<String> = h.room.occupants.keys().cloned().collect();
                    for v in viewers {
                        let mut item = h.item(&o, &v);
                        item.set_attr("nick", nick);
                        item.set_attr("role", o.role.clone());
                        let mut x = Element::new("x", NS_USER)
                            .with_child(item)
                            .with_child(Element::new("status", NS_USER).with_attr("code", "303"));
                        if v == nick {
                            x.push_child(Element::new("status", NS_USER).with_attr("code", "110"));
                        }
                        let p = Element::new("presence", ns::CLIENT)
                            .with_attr("type", "unavailable")
                            .with_attr("from", format!("{}/{old}", h.room.jid))
                            .with_child(x);
                        h.send(out, &v, &p);
                    }
                    h.broadcast_presence(out, nick, &[], &[110]);
                    Ok(Outcome::Handled)
                }
                None => join(h, inb, out, nick, stored).await,
            }
        }
        // Presence errors from an occupant's client: it is gone (XEP-0045 §7.2.x, ghosts).
        StanzaType::Error => {
            if let Some(c) = current {
                h.ghosts.push(c);
            }
            Ok(Outcome::Dropped)
        }
        _ => Ok(Outcome::Dropped),
    }
}

async fn join(
    h: &mut Handling<'_>,
    inb: &Inbound,
    out: &mut Outbox,
    nick: &str,
    stored: Element,
) -> anyhow::Result<Outcome> {
    let ctx = h.ctx;
    let req = Join::parse(&inb.el);
    let bare = inb.from_bare.clone();
    if h.room.occupants.contains_key(nick) {
        return Ok(error(ctx, inb, out, StanzaError::conflict()));
    }
    let mut created = false;
    match &h.room.config {
        None => {
            // XEP-0045 §10.1: the first to enter creates it, locked until configured.
            let made = ctx.store.muc_rooms_created_by(&bare).await?;
            if made >= i64::from(ctx.config.max_rooms_per_user) {
                return Ok(error(ctx, inb, out, StanzaError::not_allowed()));
            }
            let config = Config {
                locked: req.muc,
                creator: bare.clone(),
                created_ms: now_ms(),
                max_users: ctx.config.max_room_occupants,
                history_length: ctx.config.max_room_history.min(20),
                ..Config::default()
            };
            h.put_config(config);
            h.put_affiliation(&bare, Affiliation::Owner);
            created = true;
        }
        Some(c) => {
            let aff = h.room.affiliation(&bare);
            if c.locked && aff != Affiliation::Owner {
                return Ok(error(ctx, inb, out, StanzaError::item_not_found()));
            }
            if aff == Affiliation::Outcast {
                return Ok(error(ctx, inb, out, StanzaError::forbidden()));
            }
            if c.members_only && aff < Affiliation::Member {
                return Ok(error(
                    ctx,
                    inb,
                    out,
                    StanzaError::new(
                        meerkat_xmpp::error::ErrorType::Auth,
                        "registration-required",
                    ),
                ));
            }
            if c.password_protected
                && aff != Affiliation::Owner
                && req.password.as_deref() != Some(c.password.as_str())
            {
                return Ok(error(ctx, inb, out, StanzaError::not_authorized()));
            }
            if h.room.occupants.len() >= c.max_users as usize && aff < Affiliation::Admin {
                return Ok(error(ctx, inb, out, StanzaError::service_unavailable()));
            }
        }
    }
    let config = h.config();
    let aff = h.room.affiliation(&bare);
    let session = ctx.sessions.read().session(&inb.from).cloned();
    let o = Occupant {
        jid: inb.from.clone(),
        role: Role::default_for(aff, &config).as_str().to_owned(),
        presence: stored.to_xml(),
        dc: session
            .as_ref()
            .map_or_else(|| ctx.config.dc.clone(), |s| s.dc.clone()),
        session: session.map(|s| s.session_id),
        since_ms: now_ms(),
        away: false,
        key: String::new(),
    };
    let others: Vec<String> = h.room.occupants.keys().cloned().collect();
    h.put_occupant(nick, Some(o.clone()));
    h.commit().await?;
    // The occupants' presence to the newcomer, then its own to everyone (XEP-0045 §7.2.3).
    for other in &others {
        let oo = h.room.occupants[other].clone();
        let mut p = h.presence_of(other, &oo, nick, &[]);
        p.set_attr("to", inb.from.clone());
        deliver(ctx, out, &inb.from, &p);
    }
    let mut own = vec![110];
    if config.whois_anyone {
        own.push(100);
    }
    if config.logging {
        own.push(170);
    }
    if created {
        own.push(201);
    }
    h.broadcast_presence(out, nick, &[], &own);
    if !created {
        history(h, inb, out, &req, &config).await?;
    }
    // The subject, always (an empty one when none: §7.2.15).
    let subject = match &h.room.subject {
        Some(s) => Element::parse(s).ok(),
        None => None,
    }
    .unwrap_or_else(|| {
        Element::new("message", ns::CLIENT)
            .with_attr("from", h.room.jid.clone())
            .with_attr("type", "groupchat")
            .with_child(Element::new("subject", ns::CLIENT))
    });
    h.send(out, nick, &subject);
    Ok(Outcome::Handled)
}

/// The room's history to a newcomer, from its archive, with `<delay/>` (XEP-0045 §7.2.15).
async fn history(
    h: &mut Handling<'_>,
    inb: &Inbound,
    out: &mut Outbox,
    req: &Join,
    config: &Config,
) -> anyhow::Result<()> {
    let ctx = h.ctx;
    let mut max = config.history_length.min(ctx.config.max_room_history);
    if let Some(m) = req.history.maxstanzas {
        max = max.min(m);
    }
    if max == 0 {
        return Ok(());
    }
    let mut q = meerkat_store::ArchiveQuery::all(&h.room.jid, max);
    q.page = meerkat_store::Page::Last;
    let since = match (req.history.seconds, req.history.since_ms) {
        (Some(s), since) => Some((now_ms() - i64::from(s) * 1000).max(since.unwrap_or(0))),
        (None, since) => since,
    };
    q.start_ms = since;
    let Some(page) = ctx.store.archive_query(&q).await? else {
        return Ok(());
    };
    let mut items: Vec<Element> = Vec::new();
    let mut chars = 0usize;
    for a in page.items.iter().rev() {
        let Ok(mut m) = Element::parse(&a.stanza) else {
            continue;
        };
        m.push_child(
            Element::new("delay", ns::DELAY)
                .with_attr("from", h.room.jid.clone())
                .with_attr("stamp", stamp(a.at_ms)),
        );
        m.push_child(
            Element::new("stanza-id", ns::SID)
                .with_attr("by", h.room.jid.clone())
                .with_attr("id", a.id.clone()),
        );
        m.set_attr("to", inb.from.clone());
        chars += m.to_xml().len();
        if req.history.maxchars.is_some_and(|c| chars > c as usize) {
            break;
        }
        items.push(m);
    }
    for m in items.into_iter().rev() {
        deliver(ctx, out, &inb.from, &m);
    }
    Ok(())
}

/// A message to the room: a groupchat message, a subject change, or an invitation.
async fn message(h: &mut Handling<'_>, inb: &Inbound, out: &mut Outbox) -> anyhow::Result<Outcome> {
    let ctx = h.ctx;
    if inb.ty == StanzaType::Error {
        if let Some(n) = h.room.nick_of(&inb.from) {
            h.ghosts.push(n.to_owned());
        }
        return Ok(Outcome::Dropped);
    }
    if h.room.config.is_none() {
        return Ok(error(ctx, inb, out, StanzaError::item_not_found()));
    }
    let Some(nick) = h.room.nick_of(&inb.from).map(str::to_owned) else {
        if let Some(Ok(_)) = Invite::parse(&inb.el) {
            return Ok(error(ctx, inb, out, StanzaError::not_acceptable()));
        }
        return Ok(error(ctx, inb, out, StanzaError::not_acceptable()));
    };
    let me = h.room.occupants[&nick].clone();
    let config = h.config();
    if inb.ty != StanzaType::Groupchat {
        return match Invite::parse(&inb.el) {
            Some(Ok(inv)) => invite(h, inb, out, &nick, &me, inv),
            Some(Err(e)) => Ok(error(ctx, inb, out, e)),
            None => Ok(error(ctx, inb, out, StanzaError::bad_request())),
        };
    }
    if me.role() < Role::Participant {
        return Ok(error(ctx, inb, out, StanzaError::forbidden()));
    }
    let body = inb.el.get_child("body", ns::CLIENT);
    let subject = inb.el.get_child("subject", ns::CLIENT);
    let mut m = Element::new("message", ns::CLIENT)
        .with_attr("from", format!("{}/{nick}", h.room.jid))
        .with_attr("type", "groupchat");
    if let Some(id) = inb.el.attr("id") {
        m.set_attr("id", id);
    }
    for c in inb.el.children() {
        // A stanza id claiming the room is the room's to give (XEP-0359 §5).
        if c.is("stanza-id", ns::SID) && c.attr("by") == Some(h.room.jid.as_str()) {
            continue;
        }
        m.push_child(c.clone());
    }
    if let (Some(s), None) = (subject, body) {
        if !config.change_subject && me.role() != Role::Moderator {
            return Ok(error(ctx, inb, out, StanzaError::forbidden()));
        }
        if s.text().chars().count() > ctx.config.max_subject_chars as usize {
            return Ok(error(ctx, inb, out, StanzaError::not_acceptable()));
        }
        h.room.subject = Some(m.to_xml());
        h.write
            .puts
            .push(MucPut::room(SUBJECT_KEY, Some(m.to_xml())));
        h.commit().await?;
        h.send_all(out, &m);
        return Ok(Outcome::Handled);
    }
    // Archived before it is reflected: every reflection carries the archive's id.
    if body.is_some() {
        h.write.archive = Some((format!("{}/{nick}", h.room.jid), m.to_xml()));
        h.write.key = out.origin().map(str::to_owned);
    }
    let id = h.commit().await?;
    let archived = id.is_some();
    if let Some(id) = id {
        m.push_child(
            Element::new("stanza-id", ns::SID)
                .with_attr("by", h.room.jid.clone())
                .with_attr("id", id),
        );
    }
    h.send_all(out, &m);
    if archived {
        // Each other DC keeps the archived row from the reflection it takes (kept.rs), in case
        // this DC dies before its replication ships it; a live DC where the room has no
        // occupant is sent a copy for nobody.
        let reached = out.remote_dcs(ctx);
        for peer in &ctx.config.peers {
            if !reached.contains(&peer.dc) && !ctx.muc_liveness.is_down(&peer.dc) {
                out.archive_copy(ctx, &peer.dc, &m);
            }
        }
    }
    Ok(Outcome::Delivered)
}

/// A mediated invitation (XEP-0045 §7.8.2): the room sends it to each invitee.
fn invite(
    h: &mut Handling<'_>,
    inb: &Inbound,
    out: &mut Outbox,
    _nick: &str,
    me: &Occupant,
    inv: Invite,
) -> anyhow::Result<Outcome> {
    let ctx = h.ctx;
    let config = h.config();
    let aff = h.room.affiliation(&me.bare());
    if !config.allow_invites && me.role() != Role::Moderator && aff < Affiliation::Admin {
        return Ok(error(ctx, inb, out, StanzaError::forbidden()));
    }
    for to in &inv.to {
        let mut i = Element::new("invite", NS_USER).with_attr("from", me.bare());
        if let Some(r) = &inv.reason {
            i.push_child(Element::new("reason", NS_USER).with_text(r.clone()));
        }
        let mut x = Element::new("x", NS_USER).with_child(i);
        if config.password_protected {
            x.push_child(Element::new("password", NS_USER).with_text(config.password.clone()));
        }
        let m = Element::new("message", ns::CLIENT)
            .with_attr("from", h.room.jid.clone())
            .with_attr("to", to.clone())
            .with_child(x);
        let targets: Vec<Target> = ctx
            .sessions
            .read()
            .available(to)
            .into_iter()
            .map(Target::from)
            .collect();
        for t in targets {
            out.deliver(t, &m);
        }
    }
    Ok(Outcome::Handled)
}

/// A private message through the room to `room/nick` (XEP-0045 §7.5).
fn private(h: &mut Handling<'_>, inb: &Inbound, out: &mut Outbox, to_nick: &str) -> Outcome {
    let ctx = h.ctx;
    if matches!(inb.ty, StanzaType::Error) {
        return Outcome::Dropped;
    }
    let Some(nick) = h.room.nick_of(&inb.from).map(str::to_owned) else {
        return error(ctx, inb, out, StanzaError::not_acceptable());
    };
    if inb.ty == StanzaType::Groupchat {
        return error(ctx, inb, out, StanzaError::bad_request());
    }
    if !h.config().allow_pm {
        return error(ctx, inb, out, StanzaError::forbidden());
    }
    if !h.room.occupants.contains_key(to_nick) {
        return error(ctx, inb, out, StanzaError::item_not_found());
    }
    let mut m = inb.el.clone();
    m.set_attr("from", format!("{}/{nick}", h.room.jid));
    if !m.has_child("x", NS_USER) {
        m.push_child(Element::new("x", NS_USER));
    }
    h.send(out, to_nick, &m);
    Outcome::Delivered
}

/// An iq to an occupant JID: the self-ping of XEP-0410 (answered by the room), else refused.
fn occupant_iq(h: &Handling<'_>, inb: &Inbound, out: &mut Outbox, nick: &str) -> Outcome {
    let ctx = h.ctx;
    if !inb.ty.is_request() {
        return Outcome::Dropped;
    }
    let joined = h.room.nick_of(&inb.from).is_some();
    let ping = single_payload(&inb.el).is_some_and(|p| p.is("ping", ns::PING));
    if !joined {
        // XEP-0410 §3: not an occupant (any longer).
        return error(ctx, inb, out, StanzaError::not_acceptable());
    }
    if ping && h.room.occupants.contains_key(nick) {
        return answer(ctx, inb, out, Ok(iq_result(&inb.el)));
    }
    if !h.room.occupants.contains_key(nick) {
        return error(ctx, inb, out, StanzaError::item_not_found());
    }
    error(ctx, inb, out, StanzaError::service_unavailable())
}

/// An iq to the room: disco, owner and admin requests, MAM, ping.
async fn iq(h: &mut Handling<'_>, inb: &Inbound, out: &mut Outbox) -> anyhow::Result<Outcome> {
    let ctx = h.ctx;
    if !inb.ty.is_request() {
        return Ok(Outcome::Dropped);
    }
    let Some(payload) = single_payload(&inb.el).cloned() else {
        return Ok(error(ctx, inb, out, StanzaError::bad_request()));
    };
    let set = inb.ty == StanzaType::Set;
    let Some(config) = h.room.config.clone() else {
        return Ok(error(ctx, inb, out, StanzaError::item_not_found()));
    };
    let aff = h.room.affiliation(&inb.from_bare);
    let joined = h.room.nick_of(&inb.from).map(str::to_owned);
    let r = match payload.ns() {
        ns::DISCO_INFO if !set && payload.attr("node").is_none() => {
            Ok(iq_result_with(&inb.el, disco_info(h, &config)))
        }
        ns::DISCO_ITEMS if !set => Ok(iq_result_with(
            &inb.el,
            Element::new("query", ns::DISCO_ITEMS),
        )),
        ns::PING if !set => Ok(iq_result(&inb.el)),
        ns::MAM => {
            // XEP-0313 §5.1.2: the room's archive to its occupants, and to its members when
            // it is members-only.
            if joined.is_none() && aff < Affiliation::Member {
                return Ok(error(ctx, inb, out, StanzaError::forbidden()));
            }
            match crate::mam::MamRequest::parse(inb.ty, &payload) {
                Ok(crate::mam::MamRequest::Query(q)) => {
                    let jid = h.room.jid.clone();
                    return crate::handlers::archive::query(ctx, inb, out, jid.clone(), &jid, q)
                        .await;
                }
                Ok(crate::mam::MamRequest::Form) => {
                    Ok(iq_result_with(&inb.el, crate::mam::form_element()))
                }
                Ok(_) => Err(StanzaError::feature_not_implemented()),
                Err(e) => Err(e),
            }
        }
        NS_OWNER => {
            if aff != Affiliation::Owner {
                return Ok(error(ctx, inb, out, StanzaError::forbidden()));
            }
            match OwnerRequest::parse(set, &payload) {
                Ok(req) => owner(h, inb, out, req, config).await?,
                Err(e) => Err(e),
            }
        }
        NS_ADMIN => match AdminRequest::parse(set, &payload) {
            Ok(req) => admin(h, inb, out, req, joined.as_deref()).await?,
            Err(e) => Err(e),
        },
        _ => Err(StanzaError::service_unavailable()),
    };
    Ok(answer(ctx, inb, out, r))
}

fn disco_info(h: &Handling<'_>, c: &Config) -> Element {
    let name = if c.name.is_empty() {
        crate::jids::split_bare(&h.room.jid)
            .0
            .unwrap_or("")
            .to_owned()
    } else {
        c.name.clone()
    };
    let mut q = Element::new("query", ns::DISCO_INFO).with_child(
        Element::new("identity", ns::DISCO_INFO)
            .with_attr("category", "conference")
            .with_attr("type", "text")
            .with_attr("name", name),
    );
    let pick = |b: bool, y: &'static str, n: &'static str| if b { y } else { n };
    for f in [
        NS_MUC,
        ns::DISCO_INFO,
        ns::MAM,
        ns::SID,
        NS_SELF_PING,
        pick(c.public, "muc_public", "muc_hidden"),
        pick(c.persistent, "muc_persistent", "muc_temporary"),
        pick(c.members_only, "muc_membersonly", "muc_open"),
        pick(c.moderated, "muc_moderated", "muc_unmoderated"),
        pick(
            c.password_protected,
            "muc_passwordprotected",
            "muc_unsecured",
        ),
        pick(c.whois_anyone, "muc_nonanonymous", "muc_semianonymous"),
    ] {
        q.push_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", f));
    }
    let field = |var: &str, v: String| {
        Element::new("field", ns::DATA_FORMS)
            .with_attr("var", var)
            .with_child(Element::new("value", ns::DATA_FORMS).with_text(v))
    };
    let form = Element::new("x", ns::DATA_FORMS)
        .with_attr("type", "result")
        .with_child(
            field(
                "FORM_TYPE",
                "http://jabber.org/protocol/muc#roominfo".into(),
            )
            .with_attr("type", "hidden"),
        )
        .with_child(field("muc#roominfo_description", c.desc.clone()))
        .with_child(field(
            "muc#roominfo_occupants",
            h.room.occupants.len().to_string(),
        ))
        .with_child(field(
            "muc#roominfo_subject",
            h.room
                .subject
                .as_deref()
                .and_then(|s| Element::parse(s).ok())
                .and_then(|m| m.child_text("subject", ns::CLIENT))
                .unwrap_or_default(),
        ));
    q.push_child(form);
    q
}

/// The configuration form with the room's values (XEP-0045 §10.2).
fn config_form(c: &Config) -> Element {
    let b = |v: bool| if v { "1" } else { "0" }.to_owned();
    let fields: Vec<(&str, &str, String)> = vec![
        (
            "FORM_TYPE",
            "hidden",
            "http://jabber.org/protocol/muc#roomconfig".into(),
        ),
        ("muc#roomconfig_roomname", "text-single", c.name.clone()),
        ("muc#roomconfig_roomdesc", "text-single", c.desc.clone()),
        ("muc#roomconfig_persistentroom", "boolean", b(c.persistent)),
        ("muc#roomconfig_publicroom", "boolean", b(c.public)),
        ("muc#roomconfig_membersonly", "boolean", b(c.members_only)),
        ("muc#roomconfig_moderatedroom", "boolean", b(c.moderated)),
        (
            "muc#roomconfig_passwordprotectedroom",
            "boolean",
            b(c.password_protected),
        ),
        (
            "muc#roomconfig_roomsecret",
            "text-private",
            c.password.clone(),
        ),
        (
            "muc#roomconfig_maxusers",
            "text-single",
            c.max_users.to_string(),
        ),
        (
            "muc#roomconfig_whois",
            "list-single",
            if c.whois_anyone {
                "anyone"
            } else {
                "moderators"
            }
            .into(),
        ),
        (
            "muc#roomconfig_historylength",
            "text-single",
            c.history_length.to_string(),
        ),
        ("muc#roomconfig_enablelogging", "boolean", b(c.logging)),
        (
            "muc#roomconfig_changesubject",
            "boolean",
            b(c.change_subject),
        ),
        ("muc#roomconfig_allowinvites", "boolean", b(c.allow_invites)),
        (
            "muc#roomconfig_allowpm",
            "list-single",
            if c.allow_pm { "anyone" } else { "none" }.into(),
        ),
    ];
    let mut x = Element::new("x", ns::DATA_FORMS).with_attr("type", "form");
    for (var, ty, v) in fields {
        let mut f = Element::new("field", ns::DATA_FORMS)
            .with_attr("var", var)
            .with_attr("type", ty)
            .with_child(Element::new("value", ns::DATA_FORMS).with_text(v));
        if var == "muc#roomconfig_whois" {
            for o in ["moderators", "anyone"] {
                f.push_child(
                    Element::new("option", ns::DATA_FORMS)
                        .with_child(Element::new("value", ns::DATA_FORMS).with_text(o)),
                );
            }
        }
        if var == "muc#roomconfig_allowpm" {
            for o in ["anyone", "none"] {
                f.push_child(
                    Element::new("option", ns::DATA_FORMS)
                        .with_child(Element::new("value", ns::DATA_FORMS).with_text(o)),
                );
            }
        }
        x.push_child(f);
    }
    Element::new("query", NS_OWNER).with_child(x)
}

async fn owner(
    h: &mut Handling<'_>,
    inb: &Inbound,
    out: &mut Outbox,
    req: OwnerRequest,
    config: Config,
) -> anyhow::Result<Result<Element, StanzaError>> {
    let ctx = h.ctx;
    Ok(match req {
        OwnerRequest::Form => Ok(iq_result_with(&inb.el, config_form(&config))),
        OwnerRequest::Cancel => {
            // The instant room (§10.1.2): defaults, unlocked.
            let mut c = config;
            c.locked = false;
            h.put_config(c);
            h.commit().await?;
            Ok(iq_result(&inb.el))
        }
        OwnerRequest::Submit(fields) => {
            match super::request::apply_form(
                &config,
                &fields,
                ctx.config.max_room_occupants,
                ctx.config.max_room_history,
            ) {
                Ok(mut c) => {
                    c.locked = false;
                    let gone_public = config.whois_anyone != c.whois_anyone;
                    h.put_config(c.clone());
                    h.commit().await?;
                    // §10.2.1: status 172/173 when the room's anonymity changed, 104 otherwise.
                    let code = match (gone_public, c.whois_anyone) {
                        (true, true) => "172",
                        (true, false) => "173",
                        _ => "104",
                    };
                    let m =
                        Element::new("message", ns::CLIENT)
                            .with_attr("from", h.room.jid.clone())
                            .with_attr("type", "groupchat")
                            .with_child(Element::new("x", NS_USER).with_child(
                                Element::new("status", NS_USER).with_attr("code", code),
                            ));
                    for v in h.room.occupants.keys().cloned().collect::<Vec<_>>() {
                        h.send(out, &v, &m);
                    }
                    Ok(iq_result(&inb.el))
                }
                Err(e) => Err(e),
            }
        }
        OwnerRequest::Destroy { jid, reason } => {
            let mut d = Element::new("destroy", NS_USER);
            if let Some(j) = jid {
                d.set_attr("jid", j);
            }
            if let Some(r) = reason {
                d.push_child(Element::new("reason", NS_USER).with_text(r));
            }
            let occupants = std::mem::take(&mut h.room.occupants);
            for (nick, o) in &occupants {
                let mut item = Element::new("item", NS_USER)
                    .with_attr("affiliation", "none")
                    .with_attr("role", "none");
                item.remove_attr("jid");
                let p = Element::new("presence", ns::CLIENT)
                    .with_attr("type", "unavailable")
                    .with_attr("from", format!("{}/{nick}", h.room.jid))
                    .with_attr("to", o.jid.clone())
                    .with_child(
                        Element::new("x", NS_USER)
                            .with_child(item)
                            .with_child(d.clone()),
                    );
                deliver(ctx, out, &o.jid, &p);
            }
            h.room.occupants = occupants;
            h.delete_room();
            h.commit().await?;
            Ok(iq_result(&inb.el))
        }
    })
}

async fn admin(
    h: &mut Handling<'_>,
    inb: &Inbound,
    out: &mut Outbox,
    req: AdminRequest,
    me: Option<&str>,
) -> anyhow::Result<Result<Element, StanzaError>> {
    let my_aff = h.room.affiliation(&inb.from_bare);
    let my_role = me
        .and_then(|n| h.room.occupants.get(n))
        .map_or(Role::None, Occupant::role);
    match req {
        AdminRequest::List { affiliation, role } => {
            if my_aff < Affiliation::Admin && my_role != Role::Moderator {
                return Ok(Err(StanzaError::forbidden()));
            }
            let mut q = Element::new("query", NS_ADMIN);
            if let Some(a) = affiliation {
                for (jid, _) in h.room.affiliations.iter().filter(|(_, x)| **x == a) {
                    q.push_child(
                        Element::new("item", NS_ADMIN)
                            .with_attr("affiliation", a.as_str())
                            .with_attr("jid", jid.clone()),
                    );
                }
            }
            if let Some(r) = role {
                for (nick, o) in h.room.occupants.iter().filter(|(_, o)| o.role() == r) {
                    q.push_child(
                        Element::new("item", NS_ADMIN)
                            .with_attr("role", r.as_str())
                            .with_attr("nick", nick.clone())
                            .with_attr("jid", o.jid.clone())
                            .with_attr("affiliation", h.room.affiliation(&o.bare()).as_str()),
                    );
                }
            }
            Ok(Ok(iq_result_with(&inb.el, q)))
        }
        AdminRequest::Change(items) => {
            // Checked whole before anything is written.
            for i in &items {
                if let Some(r) = i.role {
                    let Some(target) = i.nick.as_ref().and_then(|n| h.room.occupants.get(n)) else {
                        return Ok(Err(StanzaError::item_not_found()));
                    };
                    let their_aff = h.room.affiliation(&target.bare());
                    let ok = my_role == Role::Moderator
                        && (their_aff < Affiliation::Admin || my_aff > their_aff)
                        && (r != Role::Moderator || my_aff >= Affiliation::Admin);
                    if !ok {
                        return Ok(Err(StanzaError::not_allowed()));
                    }
                }
                if let (Some(a), Some(jid)) = (i.affiliation, &i.jid) {
                    let theirs = h.room.affiliation(jid);
                    let ok = match my_aff {
                        Affiliation::Owner => true,
                        Affiliation::Admin => theirs < Affiliation::Admin && a < Affiliation::Admin,
                        _ => false,
                    };
                    if !ok {
                        return Ok(Err(StanzaError::not_allowed()));
                    }
                    if theirs == Affiliation::Owner
                        && a != Affiliation::Owner
                        && h.room.owners() <= 1
                    {
                        return Ok(Err(StanzaError::conflict()));
                    }
                }
            }
            let config = h.config();
            for i in items {
                if let (Some(r), Some(nick)) = (i.role, &i.nick) {
                    let Some(mut o) = h.room.occupants.get(nick).cloned() else {
                        continue;
                    };
                    if r == Role::None {
                        // A kick (§8.2): 307.
                        h.put_occupant(nick, None);
                        h.commit().await?;
                        h.broadcast_leave(out, nick, &o, &[307], None, true);
                    } else {
                        o.role = r.as_str().to_owned();
                        h.put_occupant(nick, Some(o));
                        h.commit().await?;
                        h.broadcast_presence(out, nick, &[], &[110]);
                    }
                }
                if let (Some(a), Some(jid)) = (i.affiliation, &i.jid) {
                    h.put_affiliation(jid, a);
                    let theirs: Vec<(String, Occupant)> = h
                        .room
                        .occupants
                        .iter()
                        .filter(|(_, o)| o.bare() == *jid)
                        .map(|(n, o)| (n.clone(), o.clone()))
                        .collect();
                    h.commit().await?;
                    for (nick, mut o) in theirs {
                        let removed = a == Affiliation::Outcast
                            || (config.members_only && a < Affiliation::Member);
                        if removed {
                            h.put_occupant(&nick, None);
                            h.commit().await?;
                            let code = if a == Affiliation::Outcast { 301 } else { 321 };
                            h.broadcast_leave(out, &nick, &o, &[code], None, true);
                        } else {
                            o.role = Role::default_for(a, &config).as_str().to_owned();
                            h.put_occupant(&nick, Some(o));
                            h.commit().await?;
                            h.broadcast_presence(out, &nick, &[], &[110]);
                        }
                    }
                }
            }
            Ok(Ok(iq_result(&inb.el)))
        }
    }
}
