//! Multi-user chat (XEP-0045, issue 19): rooms, their occupants and their archive. Rooms and
//! occupants are two replicated kinds of the personal-document shape (`replication/docs.rs`,
//! migration 0009) owned by the room's bare JID; what a body means is the router's. A room's
//! archive is rows of the `archive` kind owned by the room's bare JID, so MAM queries of a
//! room are the archive's own. Every write of a room is one [`Change::Muc`]: one transaction
//! under the room's lock, with its outbox records.

use meerkat_wire::data::{ArchiveState, Record, Stamp};
use sqlx::PgConnection;

use crate::archive::{archive_id, archive_key};
use crate::replication::{MUC_OCCUPANT, MUC_ROOM};
use crate::{replication, Store, StoreError};

/// Which table of a room a [`MucPut`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MucTable {
    /// `muc_rooms`: the configuration (key ''), the subject, affiliations.
    Room,
    /// `muc_occupants`: keyed by the nick and the real JID (`nick\njid`; by the nick alone in
    /// rows of an earlier version), what the router decides.
    Occupant,
}

/// One row of a room to write (`Some` body) or delete (`None`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MucPut {
    pub table: MucTable,
    pub key: String,
    pub body: Option<String>,
}

impl MucPut {
    pub fn room(key: &str, body: Option<String>) -> MucPut {
        MucPut {
            table: MucTable::Room,
            key: key.to_owned(),
            body,
        }
    }

    pub fn occupant(nick: &str, body: Option<String>) -> MucPut {
        MucPut {
            table: MucTable::Occupant,
            key: nick.to_owned(),
            body,
        }
    }
}

/// Everything one handling writes for a room, in one transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MucWrite {
    /// The room's bare JID.
    pub room: String,
    pub puts: Vec<MucPut>,
    /// A groupchat message to archive: (the occupant JID it is from, the stanza). Its id is the
    /// write's stamp written out ([`archive_id`]), returned by [`Store::muc_write`].
    pub archive: Option<(String, String)>,
    /// What the message is archived under (the routed envelope's id, as for the 1:1 archive):
    /// a second write under the same key for the room archives nothing and answers the first
    /// row's id.
    pub key: Option<String>,
}

impl Store {
    /// Writes `w` (see [`MucWrite`]); the archive id when a message was archived.
    /// The same as `write(&Change::Muc(w))`.
    pub async fn muc_write(&self, w: MucWrite) -> Result<Option<String>, StoreError> {
        // As `Store::write` does for `Change::Muc`, keeping the archive id.
        let mut tx = self.pool().begin().await?;
        let stamp = replication::tick(&mut tx).await?;
        let (id, records) = apply(&mut tx, &w, &stamp).await?;
        let mark = replication::append(&mut tx, &records).await?;
        tx.commit().await?;
        if let Some((epoch, seq)) = mark {
            self.note_written(&epoch, seq);
        }
        Ok(id)
    }

    /// Every row of the room's `muc_rooms` (key, body), by key.
    pub async fn muc_room(&self, room: &str) -> Result<Vec<(String, String)>, StoreError> {
        Ok(
            sqlx::query_as("SELECT key, body FROM muc_rooms WHERE username = $1 ORDER BY key")
                .bind(room)
                .fetch_all(self.pool())
                .await?,
        )
    }

    /// The room's occupant rows (key, body), by key.
    pub async fn muc_occupants(&self, room: &str) -> Result<Vec<(String, String)>, StoreError> {
        Ok(
            sqlx::query_as("SELECT key, body FROM muc_occupants WHERE username = $1 ORDER BY key")
                .bind(room)
                .fetch_all(self.pool())
                .await?,
        )
    }

    /// Every room (bare JID, configuration), by JID.
    pub async fn muc_rooms(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(
            sqlx::query_as("SELECT username, body FROM muc_rooms WHERE key = '' ORDER BY username")
                .fetch_all(self.pool())
                .await?,
        )
    }

    /// The rooms with an occupant whose session is at `dc` (the body's `dc`).
    pub async fn muc_rooms_with_occupants_at(&self, dc: &str) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT username FROM muc_occupants WHERE body::jsonb ->> 'dc' = $1 \
             ORDER BY username",
        )
        .bind(dc)
        .fetch_all(self.pool())
        .await?)
    }

    /// The rooms and occupant row keys where the full JID `jid` is an occupant.
    pub async fn muc_rooms_of(&self, jid: &str) -> Result<Vec<(String, String)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT username, key FROM muc_occupants WHERE body::jsonb ->> 'jid' = $1 \
             ORDER BY username",
        )
        .bind(jid)
        .fetch_all(self.pool())
        .await?)
    }

    /// How many rooms list `owner` (bare JID) as their creator (the body's `creator`).
    pub async fn muc_rooms_created_by(&self, owner: &str) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM muc_rooms WHERE key = '' AND body::jsonb ->> 'creator' = $1",
        )
        .bind(owner)
        .fetch_one(self.pool())
        .await?)
    }
}

/// Applies one [`MucWrite`] under the room's lock, returning its outcome and records.
pub(crate) async fn apply(
    conn: &mut PgConnection,
    w: &MucWrite,
    stamp: &Stamp,
) -> Result<(Option<String>, Vec<Record>), StoreError> {
    // One writer of a room at a time at this DC (its home's partition serialises it anyway;
    // this covers a handover between routers or homes).
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('muc ' || $1, 0))")
        .bind(&w.room)
        .execute(&mut *conn)
        .await?;
    let mut records = Vec::with_capacity(w.puts.len() + 1);
    for p in &w.puts {
        let doc = match p.table {
            MucTable::Room => &MUC_ROOM,
            MucTable::Occupant => &MUC_OCCUPANT,
        };
        let rec = doc.record_of(&w.room, &p.key, p.body.as_deref(), stamp);
        doc.write_local(conn, &rec).await?;
        records.push(rec);
    }
    let mut id = None;
    if let Some((with, stanza)) = &w.archive {
        let key = w.key.as_deref().map(|k| archive_key(&w.room, k));
        if let Some(k) = key {
            // Written already under its key (a repeated handling): that row's id.
            let earlier: Option<String> =
                sqlx::query_scalar("SELECT id FROM archive WHERE username = $1 AND msg_key = $2")
                    .bind(&w.room)
                    .bind(k)
                    .fetch_optional(&mut *conn)
                    .await?;
            if earlier.is_some() {
                return Ok((earlier, records));
            }
        }
        let aid = archive_id(stamp);
        let (bare, res) = match with.split_once('/') {
            Some((b, r)) => (b.to_lowercase(), r.to_owned()),
            None => (with.to_lowercase(), String::new()),
        };
        sqlx::query(
            "INSERT INTO archive (id, username, with_jid, with_resource, stanza, hlc, hlc_dc, \
             msg_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&aid)
        .bind(&w.room)
        .bind(&bare)
        .bind(&res)
        .bind(stanza)
        .bind(stamp.hlc)
        .bind(&stamp.dc)
        .bind(key)
        .execute(&mut *conn)
        .await?;
        records.push(Record::Archive {
            username: w.room.clone(),
            id: aid.clone(),
            stamp: stamp.clone(),
            state: Some(ArchiveState {
                with: with.clone(),
                stanza: stanza.clone(),
            }),
        });
        id = Some(aid);
    }
    Ok((id, records))
}
