//! Offline messages (XEP-0160), each with its own id; delivered ones are deletions.

use async_trait::async_trait;
use meerkat_wire::data::{OfflineState, Record, Stamp};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::kind::{Cursor, Kind};
use super::tombstones::{self, stamp_of};
use crate::StoreError;

pub(crate) struct Offline;

#[async_trait]
impl Kind for Offline {
    fn name(&self) -> &'static str {
        "offline"
    }

    fn owns(&self, rec: &Record) -> bool {
        matches!(rec, Record::Offline { .. })
    }

    fn user_table(&self) -> Option<&'static str> {
        Some("offline_messages")
    }

    fn tombstone_key(&self, rec: &Record) -> String {
        match rec {
            Record::Offline { id, .. } => id.to_string(),
            _ => String::new(),
        }
    }

    async fn row_stamp(
        &self,
        conn: &mut PgConnection,
        rec: &Record,
    ) -> Result<Option<Stamp>, StoreError> {
        let Record::Offline { id, .. } = rec else {
            return Ok(None);
        };
        let row = sqlx::query("SELECT hlc, hlc_dc FROM offline_messages WHERE uid = $1")
            .bind(id)
            .fetch_optional(conn)
            .await?;
        row.as_ref().map(stamp_of).transpose()
    }

    async fn apply(&self, conn: &mut PgConnection, rec: &Record) -> Result<(), StoreError> {
        let Record::Offline {
            username,
            id,
            stamp,
            state,
        } = rec
        else {
            return Err(StoreError::Corrupt("not an offline message record".into()));
        };
        match state {
            Some(m) => {
                sqlx::query(
                    "INSERT INTO offline_messages (username, stanza, stored_at, uid, hlc, hlc_dc) \
                     VALUES ($1, $2, timestamptz 'epoch' + $3 * interval '1 microsecond', $4, $5, $6) \
                     ON CONFLICT (uid) DO UPDATE SET stanza = EXCLUDED.stanza, \
                     hlc = EXCLUDED.hlc, hlc_dc = EXCLUDED.hlc_dc",
                )
                .bind(username)
                .bind(&m.stanza)
                .bind(m.stored_at)
                .bind(id)
                .bind(stamp.hlc)
                .bind(&stamp.dc)
                .execute(conn)
                .await?;
                Ok(())
            }
            None => {
                sqlx::query("DELETE FROM offline_messages WHERE uid = $1")
                    .bind(id)
                    .execute(&mut *conn)
                    .await?;
                tombstones::set(conn, self.name(), &id.to_string(), username, stamp).await
            }
        }
    }

    async fn copy_batch(
        &self,
        conn: &mut PgConnection,
        after: Option<&Cursor>,
        limit: i64,
    ) -> Result<Vec<(Cursor, Record)>, StoreError> {
        let after = match after {
            Some((id, _)) => id
                .parse::<Uuid>()
                .map_err(|_| StoreError::Corrupt(format!("offline cursor {id:?}")))?,
            None => Uuid::nil(),
        };
        let rows = sqlx::query(
            "SELECT username, uid, stanza, hlc, hlc_dc, \
             (extract(epoch FROM stored_at) * 1000000)::bigint AS stored_at \
             FROM offline_messages WHERE uid > $1 ORDER BY uid LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(conn)
        .await?;
        rows.iter()
            .map(|row| {
                let id: Uuid = row.try_get("uid")?;
                let rec = Record::Offline {
                    username: row.try_get("username")?,
                    id,
                    stamp: stamp_of(row)?,
                    state: Some(OfflineState {
                        stanza: row.try_get("stanza")?,
                        stored_at: row.try_get("stored_at")?,
                    }),
                };
                Ok(((id.to_string(), String::new()), rec))
            })
            .collect()
    }

    fn deleted(&self, key: &str, username: String, stamp: Stamp) -> Result<Record, StoreError> {
        Ok(Record::Offline {
            username,
            id: key
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("offline tombstone {key:?}")))?,
            stamp,
            state: None,
        })
    }
}

// ---- The local side.

pub(crate) async fn offline_removed(
    conn: &mut PgConnection,
    username: &str,
    id: Uuid,
    stamp: &Stamp,
) -> Result<Record, StoreError> {
    tombstones::set(conn, Offline.name(), &id.to_string(), username, stamp).await?;
    Ok(Record::Offline {
        username: username.to_owned(),
        id,
        stamp: stamp.clone(),
        state: None,
    })
}
