//! The message archive (XEP-0313) and its preferences. Archived messages are append-only:
//! applying one inserts it if absent (its id and stamp are the same everywhere); they go with
//! their account like every user item. Preferences are one item per user, the newest wins.

use async_trait::async_trait;
use meerkat_wire::data::{ArchivePrefsState, ArchiveState, Record, Stamp};
use sqlx::{PgConnection, Row};

use super::kind::{Cursor, Kind};
use super::tombstones::{self, stamp_of};
use crate::StoreError;

pub(crate) struct Archive;

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
                let (bare, res) = match m.with.split_once('/') {
                    Some((b, r)) => (b.to_lowercase(), r.to_owned()),
                    None => (m.with.to_lowercase(), String::new()),
                };
                sqlx::query(
                    "INSERT INTO archive (id, username, with_jid, with_resource, stanza, hlc, \
                     hlc_dc) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
                )
                .bind(id)
                .bind(username)
                .bind(bare)
                .bind(res)
                .bind(&m.stanza)
                .bind(stamp.hlc)
                .bind(&stamp.dc)
                .execute(conn)
                .await?;
                Ok(())
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
