//! The message archive (XEP-0313) and its preferences. Archived messages are append-only:
//! applying one inserts it if absent (its id and stamp are the same everywhere); they go with
//! their account like every user item. Preferences are one item per user, the newest wins.

use std::collections::HashMap;

use async_trait::async_trait;
use meerkat_wire::data::{ArchivePrefsState, ArchiveState, Record, Stamp};
use sqlx::{PgConnection, Row};

use super::kind::{Cursor, Kind};
use super::tombstones::{self, stamp_of};
use crate::StoreError;

pub(crate) struct Archive;

/// Whether `rec` is an archived message (not its deletion): what [`apply_messages`] takes.
pub(crate) fn is_new_message(rec: &Record) -> bool {
    matches!(rec, Record::Archive { state: Some(_), .. })
}

/// Applies archived messages (each [`is_new_message`]) as one set: the same outcome as
/// applying them one by one in order (an archived message is written once and never changed,
/// and writing one changes nothing the others are checked against), in five statements
/// whatever their number. Returns whether each was written.
pub(crate) async fn apply_messages(
    conn: &mut PgConnection,
    recs: &[&Record],
) -> Result<Vec<bool>, StoreError> {
    type Stamps = HashMap<String, Stamp>;
    async fn stamps(
        conn: &mut PgConnection,
        sql: &str,
        kind: Option<&str>,
        keys: &[&str],
    ) -> Result<Stamps, StoreError> {
        let mut q = sqlx::query(sql).bind(keys);
        if let Some(kind) = kind {
            q = q.bind(kind);
        }
        q.fetch_all(conn)
            .await?
            .iter()
            .map(|row| Ok((row.try_get("key")?, stamp_of(row)?)))
            .collect()
    }
    let messages: Vec<(&str, &str, &Stamp, &ArchiveState)> = recs
        .iter()
        .map(|r| match r {
            Record::Archive {
                username,
                id,
                stamp,
                state: Some(m),
            } => Ok((username.as_str(), id.as_str(), stamp, m)),
            _ => Err(StoreError::Corrupt("not an archived message".into())),
        })
        .collect::<Result<_, _>>()?;
    let ids: Vec<&str> = messages.iter().map(|m| m.1).collect();
    let mut users: Vec<&str> = messages.iter().map(|m| m.0).collect();
    users.sort_unstable();
    users.dedup();
    // What is here already: the row (the same stamp, since the id is made from it) or its
    // tombstone; and each owner's birth, else the deletion of the account.
    let here = stamps(
        conn,
        "SELECT id AS key, hlc, hlc_dc FROM archive WHERE id = ANY($1)",
        None,
        &ids,
    )
    .await?;
    let tombs = stamps(
        conn,
        "SELECT key, hlc, hlc_dc FROM tombstones WHERE key = ANY($1) AND kind = $2",
        Some(Archive.name()),
        &ids,
    )
    .await?;
    let born = stamps(
        conn,
        "SELECT username AS key, born AS hlc, born_dc AS hlc_dc FROM accounts \
         WHERE username = ANY($1)",
        None,
        &users,
    )
    .await?;
    let unborn: Vec<&str> = users
        .iter()
        .copied()
        .filter(|u| !born.contains_key(*u))
        .collect();
    let deleted = if unborn.is_empty() {
        Stamps::new()
    } else {
        stamps(
            conn,
            "SELECT key, hlc, hlc_dc FROM tombstones WHERE key = ANY($1) AND kind = $2",
            Some(super::accounts::Accounts.name()),
            &unborn,
        )
        .await?
    };
    let mut written = std::collections::HashSet::new();
    let mut rows = Rows::default();
    let mut outcomes = Vec::with_capacity(messages.len());
    for &(username, id, stamp, m) in &messages {
        let here = here.get(id).or_else(|| tombs.get(id));
        let owned = match (born.get(username), deleted.get(username)) {
            (Some(b), _) => b <= stamp,
            (None, Some(d)) => d < stamp,
            (None, None) => true,
        };
        let apply = here.is_none_or(|h| h < stamp) && owned && written.insert(id);
        if apply {
            rows.push(id, username, &m.with, &m.stanza, stamp, None);
        }
        outcomes.push(apply);
    }
    rows.insert(conn).await?;
    Ok(outcomes)
}

/// The bare JID (lowercased) and resource of an archived message's `with`.
pub(crate) fn split_jid(with: &str) -> (String, String) {
    match with.split_once('/') {
        Some((b, r)) => (b.to_lowercase(), r.to_owned()),
        None => (with.to_lowercase(), String::new()),
    }
}

/// Archive rows to insert together, column by column.
#[derive(Default)]
pub(crate) struct Rows {
    text: [Vec<String>; 6],
    hlcs: Vec<i64>,
    keys: Vec<Option<uuid::Uuid>>,
}

impl Rows {
    pub(crate) fn push(
        &mut self,
        id: &str,
        username: &str,
        with: &str,
        stanza: &str,
        stamp: &Stamp,
        key: Option<uuid::Uuid>,
    ) {
        let (bare, res) = split_jid(with);
        for (c, v) in self
            .text
            .iter_mut()
            .zip([id, username, &bare, &res, stanza, &stamp.dc])
        {
            c.push(v.to_owned());
        }
        self.hlcs.push(stamp.hlc);
        self.keys.push(key);
    }

    /// One statement for them all; a row whose id is here already is left as it is.
    pub(crate) async fn insert(&self, conn: &mut PgConnection) -> Result<(), StoreError> {
        if self.hlcs.is_empty() {
            return Ok(());
        }
        let [ids, users, withs, resources, stanzas, dcs] = &self.text;
        sqlx::query(
            "INSERT INTO archive (id, username, with_jid, with_resource, stanza, hlc, hlc_dc, \
             msg_key) SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], \
             $5::text[], $6::bigint[], $7::text[], $8::uuid[]) ON CONFLICT (id) DO NOTHING",
        )
        .bind(ids)
        .bind(users)
        .bind(withs)
        .bind(resources)
        .bind(stanzas)
        .bind(&self.hlcs)
        .bind(dcs)
        .bind(&self.keys)
        .execute(conn)
        .await?;
        Ok(())
    }
}

#[async_trait]
impl Kind for Archive {
    fn name(&self) -> &'static str {
        "archive"
    }

    fn owns(&self, rec: &Record) -> bool {
        matches!(rec, Record::Archive { .. })
    }

    fn user_table(&self) -> Option<&'static str> {
        Some("archive")
    }

    fn tombstone_key(&self, rec: &Record) -> String {
        match rec {
            Record::Archive { id, .. } => id.clone(),
            _ => String::new(),
        }
    }

    async fn row_stamp(
        &self,
        conn: &mut PgConnection,
        rec: &Record,
    ) -> Result<Option<Stamp>, StoreError> {
        let Record::Archive { id, .. } = rec else {
            return Ok(None);
        };
        let row = sqlx::query("SELECT hlc, hlc_dc FROM archive WHERE id = $1")
            .bind(id)
            .fetch_optional(conn)
            .await?;
        row.as_ref().map(stamp_of).transpose()
    }

    async fn apply(&self, conn: &mut PgConnection, rec: &Record) -> Result<(), StoreError> {
        let Record::Archive {
            username,
            id,
            stamp,
            state,
        } = rec
        else {
            return Err(StoreError::Corrupt("not an archive record".into()));
        };
        match state {
            Some(m) => {
                let mut rows = Rows::default();
                rows.push(id, username, &m.with, &m.stanza, stamp, None);
                rows.insert(conn).await
            }
            None => {
                sqlx::query("DELETE FROM archive WHERE id = $1")
                    .bind(id)
                    .execute(&mut *conn)
                    .await?;
                tombstones::set(conn, self.name(), id, username, stamp).await
            }
        }
    }

    async fn copy_batch(
        &self,
        conn: &mut PgConnection,
        after: Option<&Cursor>,
        limit: i64,
    ) -> Result<Vec<(Cursor, Record)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, username, with_jid, with_resource, stanza, hlc, hlc_dc FROM archive \
             WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after.map_or("", |(id, _)| id.as_str()))
        .bind(limit)
        .fetch_all(conn)
        .await?;
        rows.iter()
            .map(|row| {
                let id: String = row.try_get("id")?;
                let bare: String = row.try_get("with_jid")?;
                let res: String = row.try_get("with_resource")?;
                let rec = Record::Archive {
                    username: row.try_get("username")?,
                    id: id.clone(),
                    stamp: stamp_of(row)?,
                    state: Some(ArchiveState {
                        with: if res.is_empty() {
                            bare
                        } else {
                            format!("{bare}/{res}")
                        },
                        stanza: row.try_get("stanza")?,
                    }),
                };
                Ok(((id, String::new()), rec))
            })
            .collect()
    }

    fn deleted(&self, key: &str, username: String, stamp: Stamp) -> Result<Record, StoreError> {
        Ok(Record::Archive {
            username,
            id: key.to_owned(),
            stamp,
            state: None,
        })
    }
}

pub(crate) struct ArchivePrefs;

#[async_trait]
impl Kind for ArchivePrefs {
    fn name(&self) -> &'static str {
        "archive_prefs"
    }

    fn owns(&self, rec: &Record) -> bool {
        matches!(rec, Record::ArchivePrefs { .. })
    }

    fn user_table(&self) -> Option<&'static str> {
        Some("archive_prefs")
    }

    fn tombstone_key(&self, rec: &Record) -> String {
        rec.username().to_owned()
    }

    async fn row_stamp(
        &self,
        conn: &mut PgConnection,
        rec: &Record,
    ) -> Result<Option<Stamp>, StoreError> {
        let row = sqlx::query("SELECT hlc, hlc_dc FROM archive_prefs WHERE username = $1")
            .bind(rec.username())
            .fetch_optional(conn)
            .await?;
        row.as_ref().map(stamp_of).transpose()
    }

    async fn apply(&self, conn: &mut PgConnection, rec: &Record) -> Result<(), StoreError> {
        let Record::ArchivePrefs {
            username,
            stamp,
            state,
        } = rec
        else {
            return Err(StoreError::Corrupt(
                "not an archive preferences record".into(),
            ));
        };
        match state {
            Some(p) => archive_prefs_put(conn, username, p, stamp).await,
            None => {
                sqlx::query("DELETE FROM archive_prefs WHERE username = $1")
                    .bind(username)
                    .execute(&mut *conn)
                    .await?;
                tombstones::set(conn, self.name(), username, username, stamp).await
            }
        }
    }

    async fn copy_batch(
        &self,
        conn: &mut PgConnection,
        after: Option<&Cursor>,
        limit: i64,
    ) -> Result<Vec<(Cursor, Record)>, StoreError> {
        let rows = sqlx::query(
            "SELECT username, default_mode, always, never, hlc, hlc_dc FROM archive_prefs \
             WHERE username > $1 ORDER BY username LIMIT $2",
        )
        .bind(after.map_or("", |(u, _)| u.as_str()))
        .bind(limit)
        .fetch_all(conn)
        .await?;
        rows.iter()
            .map(|row| {
                let username: String = row.try_get("username")?;
                let rec = Record::ArchivePrefs {
                    username: username.clone(),
                    stamp: stamp_of(row)?,
                    state: Some(ArchivePrefsState {
                        default: row.try_get("default_mode")?,
                        always: row.try_get("always")?,
                        never: row.try_get("never")?,
                    }),
                };
                Ok(((username, String::new()), rec))
            })
            .collect()
    }

    fn deleted(&self, _key: &str, username: String, stamp: Stamp) -> Result<Record, StoreError> {
        Ok(Record::ArchivePrefs {
            username,
            stamp,
            state: None,
        })
    }
}

// ---- The local side.

/// Writes the user's preferences (stamped `stamp`).
pub(crate) async fn archive_prefs_put(
    conn: &mut PgConnection,
    username: &str,
    p: &ArchivePrefsState,
    stamp: &Stamp,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO archive_prefs (username, default_mode, always, never, hlc, hlc_dc) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (username) DO UPDATE SET \
         default_mode = EXCLUDED.default_mode, always = EXCLUDED.always, \
         never = EXCLUDED.never, hlc = EXCLUDED.hlc, hlc_dc = EXCLUDED.hlc_dc",
    )
    .bind(username)
    .bind(&p.default)
    .bind(&p.always)
    .bind(&p.never)
    .bind(stamp.hlc)
    .bind(&stamp.dc)
    .execute(&mut *conn)
    .await?;
    tombstones::clear(conn, ArchivePrefs.name(), username).await
}
