//! The message archive (XEP-0313): messages archived for their sender and their recipient,
//! each copy with its own id, and the per-user preferences deciding what is archived.
//!
//! A message's place in an archive is the stamp of its write — the DC's hybrid logical clock
//! and the DC's name — so every DC orders an archive the same way once it has every row; a
//! write of several messages advances the clock once per message, so every row has its own
//! stamp, and its id is that stamp written out (`<hlc hex>-<dc>`). The time shown for a
//! message (its delay stamp, what `start`/`end` filter on) is the clock's milliseconds.

use meerkat_wire::data::{ArchivePrefsState, ArchiveState, Record, Stamp};
use sqlx::{PgConnection, Postgres, QueryBuilder, Row};

use crate::replication::split_jid;
use crate::{replication, Store, StoreError};

/// A user's default archiving rule (XEP-0313 §6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveDefault {
    Always,
    Never,
    /// Only messages with contacts in the user's roster.
    Roster,
}

impl ArchiveDefault {
    pub fn as_str(self) -> &'static str {
        match self {
            ArchiveDefault::Always => "always",
            ArchiveDefault::Never => "never",
            ArchiveDefault::Roster => "roster",
        }
    }

    pub fn parse(s: &str) -> Option<ArchiveDefault> {
        match s {
            "always" => Some(ArchiveDefault::Always),
            "never" => Some(ArchiveDefault::Never),
            "roster" => Some(ArchiveDefault::Roster),
            _ => None,
        }
    }
}

/// A user's preferences. JIDs in the lists are bare JIDs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchivePrefs {
    pub default: ArchiveDefault,
    pub always: Vec<String>,
    pub never: Vec<String>,
}

/// A message to archive for `owner`; `with` is the other party (bare or full JID).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewArchived {
    pub owner: String,
    pub with: String,
    pub stanza: String,
    /// What the message is archived under (the routed envelope's id): a second write under
    /// the same key for the same owner archives nothing and answers the first row's id.
    pub key: Option<String>,
}

/// Namespace of the keys of archived messages (a fixed random UUID).
const KEYED_ARCHIVE: uuid::Uuid = uuid::Uuid::from_u128(0x9d41_27c5_0b6e_4f38_a1d2_5e87_c093_6b14);

pub(crate) fn archive_key(owner: &str, key: &str) -> uuid::Uuid {
    uuid::Uuid::new_v5(&KEYED_ARCHIVE, format!("{owner}\n{key}").as_bytes())
}

/// An archived message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Archived {
    pub id: String,
    pub stanza: String,
    /// When it was archived, ms since the Unix epoch.
    pub at_ms: i64,
}

/// Which page of the matching messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Page {
    /// The first `max` (no RSM `after`/`before`).
    First,
    /// The `max` after this id.
    After(String),
    /// The `max` before this id.
    Before(String),
    /// The last `max` (an empty `<before/>`).
    Last,
}

/// A query of one user's archive; the filters of XEP-0313 §4.1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveQuery {
    pub owner: String,
    /// Bare JID (every resource) or full JID (that resource only).
    pub with: Option<String>,
    /// Inclusive bounds, ms since the Unix epoch.
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub after_id: Option<String>,
    pub before_id: Option<String>,
    /// Only these ids (empty: no such filter).
    pub ids: Vec<String>,
    pub page: Page,
    pub max: u32,
}

impl ArchiveQuery {
    /// The first `max` messages of `owner`'s archive, no filter.
    pub fn all(owner: &str, max: u32) -> ArchiveQuery {
        ArchiveQuery {
            owner: owner.to_owned(),
            with: None,
            start_ms: None,
            end_ms: None,
            after_id: None,
            before_id: None,
            ids: Vec::new(),
            page: Page::First,
            max,
        }
    }
}

/// One page of results, oldest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchivePage {
    pub items: Vec<Archived>,
    /// No further page in the query's direction.
    pub complete: bool,
}

/// The id of the row stamped `stamp`.
pub fn archive_id(stamp: &Stamp) -> String {
    format!("{:x}-{}", stamp.hlc, stamp.dc)
}

/// The stamp an archive id was written from ([`archive_id`] read back); `None` for anything
/// that is not such an id.
pub fn archive_stamp(id: &str) -> Option<Stamp> {
    let (hex, dc) = id.split_once('-')?;
    if hex.is_empty() || hex.len() > 16 || dc.is_empty() || dc.len() > 64 {
        return None;
    }
    if !hex
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return None;
    }
    let hlc = i64::try_from(u64::from_str_radix(hex, 16).ok()?).ok()?;
    let stamp = Stamp {
        hlc,
        dc: dc.to_owned(),
    };
    // Only the one spelling `archive_id` writes (no leading zeros).
    (archive_id(&stamp) == id).then_some(stamp)
}

/// Whether `prefs` (or the server's `default` when the user has none) archive a message with
/// `with_bare`; `in_roster`: whether the owner has `with_bare` in the roster, read where the
/// rule in force is `roster`.
fn wanted(
    with_bare: &str,
    prefs: Option<&ArchivePrefs>,
    default: ArchiveDefault,
    in_roster: Option<bool>,
) -> bool {
    let mode = match prefs {
        Some(p) if p.never.iter().any(|j| j == with_bare) => return false,
        Some(p) if p.always.iter().any(|j| j == with_bare) => return true,
        Some(p) => p.default,
        None => default,
    };
    match mode {
        ArchiveDefault::Always => true,
        ArchiveDefault::Never => false,
        ArchiveDefault::Roster => in_roster.unwrap_or(false),
    }
}

fn prefs_of(row: &sqlx::postgres::PgRow) -> Result<Option<ArchivePrefs>, StoreError> {
    let mode: Option<String> = row.try_get("default_mode")?;
    let Some(mode) = mode else {
        return Ok(None);
    };
    Ok(Some(ArchivePrefs {
        default: ArchiveDefault::parse(&mode)
            .ok_or_else(|| StoreError::Corrupt(format!("archive default {mode:?}")))?,
        always: row.try_get("always")?,
        never: row.try_get("never")?,
    }))
}

/// This DC's own archive rows, column by column, to write in one statement ([`OwnRows::write`]).
#[derive(Default)]
struct OwnRows {
    users: Vec<String>,
    withs: Vec<String>,
    resources: Vec<String>,
    stanzas: Vec<String>,
    keys: Vec<Option<uuid::Uuid>>,
    /// Each row's outbox record, its `id` and `stamp` still to be filled in.
    records: Vec<String>,
}

impl OwnRows {
    fn push(&mut self, e: &NewArchived, key: Option<uuid::Uuid>) {
        let (bare, res) = split_jid(&e.with);
        let record = Record::Archive {
            username: e.owner.clone(),
            id: String::new(),
            stamp: Stamp {
                hlc: 0,
                dc: String::new(),
            },
            state: Some(ArchiveState {
                with: e.with.clone(),
                stanza: e.stanza.clone(),
            }),
        };
        self.users.push(e.owner.clone());
        self.withs.push(bare);
        self.resources.push(res);
        self.stanzas.push(e.stanza.clone());
        self.keys.push(key);
        self.records
            .push(serde_json::to_string(&record).unwrap_or_default());
    }

    /// Writes the rows in one statement, as a write transaction's tick, inserts and
    /// [`replication::append`] would in five: the clock advanced once per row (each row's
    /// stamp its own, its id [`archive_id`] of it), the outbox's sequence numbers taken, the
    /// rows and their records (stamp and id filled in) inserted in order, the replicator woken
    /// at the commit. Returns the rows' ids, the database epoch and the last sequence used.
    async fn write(&self, pool: &sqlx::PgPool) -> Result<(Vec<String>, String, i64), StoreError> {
        let n = self.users.len() as i64;
        let row = sqlx::query(concat!(
            "WITH c AS (UPDATE replication_clock SET hlc = ",
            replication::next_hlc!(),
            " + ($1 - 1), seq = seq + $1 \
               RETURNING hlc - ($1 - 1) AS first, coalesce(dc, '') AS dc, seq, epoch), \
             e AS (SELECT t.i, t.u, t.w, t.r, t.st, t.k, t.rec, c.first + t.i - 1 AS hlc, c.dc, \
                     c.seq - $1 + t.i AS seq, to_hex(c.first + t.i - 1) || '-' || c.dc AS id \
                   FROM c, unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::uuid[], \
                     $7::text[]) WITH ORDINALITY AS t(u, w, r, st, k, rec, i)), \
             a AS (INSERT INTO archive (id, username, with_jid, with_resource, stanza, hlc, \
                     hlc_dc, msg_key) SELECT id, u, w, r, st, hlc, dc, k FROM e), \
             o AS (INSERT INTO outbox (seq, record) SELECT seq, jsonb_set(jsonb_set(rec::jsonb, \
                     '{id}', to_jsonb(id)), '{stamp}', jsonb_build_object('hlc', hlc, 'dc', dc)) \
                   FROM e) \
             SELECT (SELECT array_agg(id ORDER BY i) FROM e) AS ids, c.epoch, c.seq, \
               pg_notify('",
            replication::outbox_channel!(),
            "', c.seq::text)::text AS woken FROM c"
        ))
        .bind(n)
        .bind(&self.users)
        .bind(&self.withs)
        .bind(&self.resources)
        .bind(&self.stanzas)
        .bind(&self.keys)
        .bind(&self.records)
        .fetch_one(pool)
        .await?;
        let ids: Vec<String> = row.try_get("ids")?;
        if ids.len() != self.users.len() {
            return Err(StoreError::Corrupt("archive write: one id per row".into()));
        }
        Ok((ids, row.try_get("epoch")?, row.try_get("seq")?))
    }
}

impl Store {
    /// Keeps `rec`, a message another DC archived, unless this DC holds it already: what a
    /// room's reflection from its home at another DC says the home archived, in case the home
    /// dies before its replication ships the row. Applied as replication applies it (inserted
    /// if absent, the clock moved past its stamp), so the row the replication brings later
    /// changes nothing. Whether it was written here.
    pub async fn archive_keep(&self, rec: &Record) -> Result<bool, StoreError> {
        let Record::Archive { id, .. } = rec else {
            return Err(StoreError::Corrupt("not an archive record".into()));
        };
        let held = sqlx::query("SELECT 1 FROM archive WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .is_some();
        if held {
            return Ok(false);
        }
        self.apply_copy(std::slice::from_ref(rec)).await?;
        Ok(true)
    }

    /// Archives what the owners' preferences (else `default`) allow, in one statement with
    /// its outbox records ([`OwnRows::write`]); an owner with no account here archives
    /// nothing. Returns each entry's archive id, `None` where nothing was archived.
    pub async fn archive_messages(
        &self,
        entries: &[NewArchived],
        default: ArchiveDefault,
    ) -> Result<Vec<Option<String>>, StoreError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        // What decides the write is read first, in one statement before the write: the DC's
        // clock row, which every write of the DC holds from its tick until it commits, is
        // taken only for the writing. A handling repeated meanwhile by another router is
        // caught by the key's unique index: the write fails and each entry is written again
        // on its own.
        // Written already under its key (a repeated handling): that row's id, nothing new.
        // A key names its owner too (`archive_key`), so it alone finds the earlier row here.
        let keys: Vec<Option<uuid::Uuid>> = entries
            .iter()
            .map(|e| e.key.as_deref().map(|k| archive_key(&e.owner, k)))
            .collect();
        let owners: Vec<&str> = entries.iter().map(|e| e.owner.as_str()).collect();
        let withs: Vec<String> = entries.iter().map(|e| split_jid(&e.with).0).collect();
        let rows = sqlx::query(
            "SELECT a.id AS earlier, acc.username IS NOT NULL AS known, \
             p.default_mode, p.always, p.never, \
             CASE WHEN acc.username IS NOT NULL AND coalesce(p.default_mode, $4) = 'roster' \
             THEN EXISTS (SELECT 1 FROM roster_items r WHERE r.username = t.u AND r.contact = t.w) \
             END AS in_roster \
             FROM unnest($1::text[], $2::uuid[], $3::text[]) WITH ORDINALITY AS t(u, k, w, i) \
             LEFT JOIN archive a ON a.username = t.u AND a.msg_key = t.k \
             AND a.msg_key IS NOT NULL \
             LEFT JOIN accounts acc ON acc.username = t.u \
             LEFT JOIN archive_prefs p ON p.username = t.u ORDER BY t.i",
        )
        .bind(&owners)
        .bind(&keys)
        .bind(&withs)
        .bind(default.as_str())
        .fetch_all(self.pool())
        .await?;
        if rows.len() != entries.len() {
            return Err(StoreError::Corrupt(
                "archive read: one row per entry".into(),
            ));
        }
        let mut earlier: Vec<Option<String>> = Vec::with_capacity(entries.len());
        let mut chosen = Vec::with_capacity(entries.len());
        for (r, w) in rows.iter().zip(&withs) {
            let before: Option<String> = r.try_get("earlier")?;
            let ok = before.is_none()
                && r.try_get::<bool, _>("known")?
                && wanted(w, prefs_of(r)?.as_ref(), default, r.try_get("in_roster")?);
            earlier.push(before);
            chosen.push(ok);
        }
        let n = chosen.iter().filter(|c| **c).count() as i64;
        if n == 0 {
            return Ok(earlier);
        }
        // The write is one statement: the stamps and the sequence numbers taken together from
        // the clock row (its lock held only for this statement), the rows inserted, the
        // outbox records appended with their stamps and ids filled in, the replicator woken.
        let mut cols = OwnRows::default();
        for ((e, ok), key) in entries.iter().zip(&chosen).zip(&keys) {
            if *ok {
                cols.push(e, *key);
            }
        }
        let (written, epoch, seq) = cols.write(self.pool()).await?;
        let mut written = written.into_iter();
        let mut ids = Vec::with_capacity(entries.len());
        for (ok, before) in chosen.iter().zip(earlier) {
            ids.push(if *ok { written.next() } else { before });
        }
        self.note_written(&epoch, seq);
        Ok(ids)
    }

    /// The user's preferences; `None`: never set (the server's default applies).
    pub async fn archive_prefs(&self, username: &str) -> Result<Option<ArchivePrefs>, StoreError> {
        let row = sqlx::query(
            "SELECT default_mode, always, never FROM archive_prefs WHERE username = $1",
        )
        .bind(username)
        .fetch_optional(self.pool())
        .await?;
        match row {
            Some(r) => prefs_of(&r),
            None => Ok(None),
        }
    }

    /// Replaces the user's preferences (the newest write wins between DCs).
    pub async fn set_archive_prefs(
        &self,
        username: &str,
        prefs: &ArchivePrefs,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        let stamp = replication::tick(&mut tx).await?;
        if !crate::accounts::lock(&mut tx, username).await? {
            return Err(StoreError::NoSuchAccount);
        }
        let state = ArchivePrefsState {
            default: prefs.default.as_str().to_owned(),
            always: prefs.always.clone(),
            never: prefs.never.clone(),
        };
        replication::archive_prefs_put(&mut tx, username, &state, &stamp).await?;
        let record = Record::ArchivePrefs {
            username: username.to_owned(),
            stamp,
            state: Some(state),
        };
        let mark = replication::append(&mut tx, std::slice::from_ref(&record)).await?;
        tx.commit().await?;
        if let Some((epoch, seq)) = mark {
            self.note_written(&epoch, seq);
        }
        Ok(())
    }

    /// One page of a query; `None` when an id the query names (`after-id`, `before-id`, RSM
    /// `after`/`before`) is not in the owner's archive.
    pub async fn archive_query(&self, q: &ArchiveQuery) -> Result<Option<ArchivePage>, StoreError> {
        let mut conn = self.pool().acquire().await?;
        let mut lower: Option<(i64, String)> = None;
        let mut upper: Option<(i64, String)> = None;
        let (rsm_after, rsm_before) = match &q.page {
            Page::After(id) => (Some(id), None),
            Page::Before(id) => (None, Some(id)),
            Page::First | Page::Last => (None, None),
        };
        for (id, is_lower) in [
            (q.after_id.as_ref(), true),
            (rsm_after, true),
            (q.before_id.as_ref(), false),
            (rsm_before, false),
        ] {
            let Some(id) = id else { continue };
            let Some(key) = position(&mut conn, &q.owner, id).await? else {
                return Ok(None);
            };
            if is_lower {
                lower = lower.max(Some(key));
            } else {
                upper = Some(upper.map_or(key.clone(), |u| u.min(key)));
            }
        }
        let backward = matches!(q.page, Page::Before(_) | Page::Last);
        let mut b: QueryBuilder<Postgres> =
            QueryBuilder::new("SELECT id, stanza, hlc FROM archive WHERE username = ");
        b.push_bind(&q.owner);
        if let Some(with) = &q.with {
            let (bare, res) = split_jid(with);
            b.push(" AND with_jid = ").push_bind(bare);
            if !res.is_empty() {
                b.push(" AND with_resource = ").push_bind(res);
            }
        }
        if let Some(s) = q.start_ms {
            b.push(" AND hlc >= ").push_bind(s.saturating_mul(1 << 16));
        }
        if let Some(e) = q.end_ms {
            b.push(" AND hlc < ")
                .push_bind(e.saturating_add(1).saturating_mul(1 << 16));
        }
        if let Some((h, dc)) = &lower {
            b.push(" AND (hlc, hlc_dc) > (")
                .push_bind(*h)
                .push(", ")
                .push_bind(dc.clone())
                .push(")");
        }
        if let Some((h, dc)) = &upper {
            b.push(" AND (hlc, hlc_dc) < (")
                .push_bind(*h)
                .push(", ")
                .push_bind(dc.clone())
                .push(")");
        }
        if !q.ids.is_empty() {
            b.push(" AND id = ANY(").push_bind(q.ids.clone()).push(")");
        }
        b.push(if backward {
            " ORDER BY hlc DESC, hlc_dc DESC LIMIT "
        } else {
            " ORDER BY hlc, hlc_dc LIMIT "
        });
        b.push_bind(i64::from(q.max) + 1);
        let rows = b.build().fetch_all(&mut *conn).await?;
        let complete = rows.len() <= q.max as usize;
        let mut items = rows
            .iter()
            .take(q.max as usize)
            .map(|r| {
                Ok(Archived {
                    id: r.try_get("id")?,
                    stanza: r.try_get("stanza")?,
                    at_ms: r.try_get::<i64, _>("hlc")? >> 16,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        if backward {
            items.reverse();
        }
        Ok(Some(ArchivePage { items, complete }))
    }

    /// The oldest and newest messages of the user's archive (XEP-0313 §5.4 metadata).
    pub async fn archive_bounds(
        &self,
        username: &str,
    ) -> Result<Option<(Archived, Archived)>, StoreError> {
        let mut out = Vec::new();
        for order in ["hlc, hlc_dc", "hlc DESC, hlc_dc DESC"] {
            let row = sqlx::query(&format!(
                "SELECT id, stanza, hlc FROM archive WHERE username = $1 ORDER BY {order} LIMIT 1"
            ))
            .bind(username)
            .fetch_optional(self.pool())
            .await?;
            let Some(r) = row else { return Ok(None) };
            out.push(Archived {
                id: r.try_get("id")?,
                stanza: r.try_get("stanza")?,
                at_ms: r.try_get::<i64, _>("hlc")? >> 16,
            });
        }
        let last = out.pop();
        Ok(out.pop().zip(last))
    }

    /// Deletes this DC's archived messages older than `before_ms` (the retention; every DC
    /// purges by the same rule, nothing is replicated). Returns the rows deleted.
    pub async fn archive_purge(&self, before_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM archive WHERE hlc < $1")
            .bind(before_ms.saturating_mul(1 << 16))
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }
}

/// The order key of the owner's message `id`, if it has one.
async fn position(
    conn: &mut PgConnection,
    owner: &str,
    id: &str,
) -> Result<Option<(i64, String)>, StoreError> {
    let row = sqlx::query("SELECT hlc, hlc_dc FROM archive WHERE id = $1 AND username = $2")
        .bind(id)
        .bind(owner)
        .fetch_optional(conn)
        .await?;
    row.map(|r| Ok((r.try_get("hlc")?, r.try_get("hlc_dc")?)))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_the_stamp_and_jids_split() {
        let s = Stamp {
            hlc: 0x1234,
            dc: "dc1".into(),
        };
        assert_eq!(archive_id(&s), "1234-dc1");
        assert_eq!(split_jid("Bob@X/phone"), ("bob@x".into(), "phone".into()));
        assert_eq!(split_jid("bob@x"), ("bob@x".into(), String::new()));
        assert_eq!(
            ArchiveDefault::parse("roster"),
            Some(ArchiveDefault::Roster)
        );
        assert_eq!(ArchiveDefault::parse("x"), None);
    }

    #[test]
    fn an_id_reads_back_as_its_stamp_and_nothing_else_does() {
        let s = Stamp {
            hlc: 0x1_8c2f_0000_0001,
            dc: "dc-east".into(),
        };
        assert_eq!(archive_stamp(&archive_id(&s)), Some(s));
        for bad in [
            "",
            "-dc1",
            "12ab-",
            "12AB-dc1",
            "12g4-dc1",
            "012-dc1",
            "ffffffffffffffff-dc1",
            "11111111111111111-dc1",
            "nodash",
        ] {
            assert_eq!(archive_stamp(bad), None, "{bad}");
        }
    }
}
