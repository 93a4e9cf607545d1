//! Block list items (XEP-0191), one per (user, blocked JID); a deletion is a tombstone keyed
//! `username\njid`, so an unblock and a block made at two DCs converge on the later one.

use async_trait::async_trait;
use meerkat_wire::data::{BlockState, Record, Stamp};
use sqlx::{PgConnection, Row};

use super::kind::{contact_of, cursor2, key2, Cursor, Kind};
use super::tombstones::{self, stamp_of};
use crate::StoreError;

pub(crate) struct Blocking;

#[async_trait]
impl Kind for Blocking {
    fn name(&self) -> &'static str {
        "block"
    }

    fn owns(&self, rec: &Record) -> bool {
        matches!(rec, Record::Block { .. })
    }

    fn user_table(&self) -> Option<&'static str> {
        Some("blocked_jids")
    }

    fn tombstone_key(&self, rec: &Record) -> String {
        match rec {
            Record::Block { username, jid, .. } => key2(username, jid),
            _ => String::new(),
        }
    }

    async fn row_stamp(
        &self,
        conn: &mut PgConnection,
        rec: &Record,
    ) -> Result<Option<Stamp>, StoreError> {
        let Record::Block { username, jid, .. } = rec else {
            return Ok(None);
        };
        let row =
            sqlx::query("SELECT hlc, hlc_dc FROM blocked_jids WHERE username = $1 AND jid = $2")
                .bind(username)
                .bind(jid)
                .fetch_optional(conn)
                .await?;
        row.as_ref().map(stamp_of).transpose()
    }

    async fn apply(&self, conn: &mut PgConnection, rec: &Record) -> Result<(), StoreError> {
        let Record::Block {
            username,
            jid,
            stamp,
            state,
        } = rec
        else {
            return Err(StoreError::Corrupt("not a block record".into()));
        };
        let key = key2(username, jid);
        match state {
            Some(_) => {
                sqlx::query(
                    "INSERT INTO blocked_jids (username, jid, hlc, hlc_dc) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (username, jid) DO UPDATE SET hlc = EXCLUDED.hlc, \
                     hlc_dc = EXCLUDED.hlc_dc",
                )
                .bind(username)
                .bind(jid)
                .bind(stamp.hlc)
                .bind(&stamp.dc)
                .execute(&mut *conn)
                .await?;
                tombstones::clear(conn, self.name(), &key).await
            }
            None => {
                sqlx::query("DELETE FROM blocked_jids WHERE username = $1 AND jid = $2")
                    .bind(username)
                    .bind(jid)
                    .execute(&mut *conn)
                    .await?;
                tombstones::set(conn, self.name(), &key, username, stamp).await
            }
        }
    }

    async fn copy_batch(
        &self,
        conn: &mut PgConnection,
        after: Option<&Cursor>,
        limit: i64,
    ) -> Result<Vec<(Cursor, Record)>, StoreError> {
        let (user, jid) = cursor2(after);
        let rows = sqlx::query(
            "SELECT username, jid, hlc, hlc_dc FROM blocked_jids \
             WHERE (username, jid) > ($1, $2) ORDER BY username, jid LIMIT $3",
        )
        .bind(user)
        .bind(jid)
        .bind(limit)
        .fetch_all(conn)
        .await?;
        rows.iter()
            .map(|row| {
                let username: String = row.try_get("username")?;
                let jid: String = row.try_get("jid")?;
                let rec = Record::Block {
                    username: username.clone(),
                    jid: jid.clone(),
                    stamp: stamp_of(row)?,
                    state: Some(BlockState {}),
                };
                Ok(((username, jid), rec))
            })
            .collect()
    }

    fn deleted(&self, key: &str, username: String, stamp: Stamp) -> Result<Record, StoreError> {
        Ok(Record::Block {
            username,
            jid: contact_of(key),
            stamp,
            state: None,
        })
    }
}

// ---- The local side.

/// The tombstone key of a block list item.
pub(crate) fn unblock_key(username: &str, jid: &str) -> String {
    key2(username, jid)
}

/// An item unblocked here: its tombstone and record.
pub(crate) async fn block_removed(
    conn: &mut PgConnection,
    username: &str,
    jid: &str,
    stamp: &Stamp,
) -> Result<Record, StoreError> {
    tombstones::set(conn, Blocking.name(), &key2(username, jid), username, stamp).await?;
    Ok(Record::Block {
        username: username.to_owned(),
        jid: jid.to_owned(),
        stamp: stamp.clone(),
        state: None,
    })
}
