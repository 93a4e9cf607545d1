//! Offline messages (RFC 6121 §8.5.2.2.1 / XEP-0160), bounded per user.

use chrono::{DateTime, Utc};
use meerkat_wire::data::{OfflineState, Record, Stamp};
use sqlx::{PgConnection, Row};

use crate::{accounts, Change, Store, StoreError};

/// A stored stanza awaiting delivery.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct OfflineMessage {
    pub id: i64,
    pub stanza: String,
    pub stored_at: DateTime<Utc>,
}

impl Store {
    /// Stores `stanza` for `username`; [`StoreError::Full`] when they already have `max`.
    pub async fn store_offline(
        &self,
        username: &str,
        stanza: &str,
        max: u32,
    ) -> Result<(), StoreError> {
        self.store_offline_keyed(username, stanza, max, None).await
    }

    /// [`Store::store_offline`] under `key`, a name of what is stored (the routed envelope's
    /// id): a second store under the same key, while the first is stored or after it was
    /// delivered and deleted, does nothing. A handling retried after its store, or an
    /// envelope handled again, stores one message.
    pub async fn store_offline_keyed(
        &self,
        username: &str,
        stanza: &str,
        max: u32,
        key: Option<&str>,
    ) -> Result<(), StoreError> {
        let change = Change::StoreOffline {
            username: username.to_owned(),
            stanza: stanza.to_owned(),
            max,
            key: key.map(str::to_owned),
        };
        self.write(&change).await.map(|_| ())
    }

    /// The user's offline messages, oldest first.
    pub async fn offline_messages(
        &self,
        username: &str,
    ) -> Result<Vec<OfflineMessage>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, stanza, stored_at FROM offline_messages WHERE username = $1 ORDER BY id",
        )
        .bind(username)
        .fetch_all(self.pool())
        .await?)
    }

    /// Deletes delivered messages; ids of other users are ignored.
    pub async fn delete_offline(&self, username: &str, ids: &[i64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let change = Change::DeleteOffline {
            username: username.to_owned(),
            ids: ids.to_vec(),
        };
        self.write(&change).await.map(|_| ())
    }
}

/// Namespace of the ids of keyed offline messages (a fixed random UUID).
const KEYED_OFFLINE: uuid::Uuid = uuid::Uuid::from_u128(0x3c8a_6f12_d4b9_47e0_8e55_19a7_b2c6_0f83);

/// The id of the message stored for `username` under `key`.
pub(crate) fn keyed_uid(username: &str, key: &str) -> uuid::Uuid {
    uuid::Uuid::new_v5(&KEYED_OFFLINE, format!("{username}\n{key}").as_bytes())
}

/// Stores one message; `None` when `key` names one stored already (still there, or
/// delivered: its tombstone says so).
pub(crate) async fn store(
    conn: &mut PgConnection,
    username: &str,
    stanza: &str,
    max: u32,
    key: Option<&str>,
    stamp: &Stamp,
) -> Result<Option<Record>, StoreError> {
    // The account lock makes count-then-insert atomic against concurrent stores.
    if !accounts::lock(conn, username).await? {
        return Err(StoreError::NoSuchAccount);
    }
    let uid = key.map(|k| keyed_uid(username, k));
    if let Some(uid) = uid {
        let seen: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM offline_messages WHERE uid = $1) \
             OR EXISTS (SELECT 1 FROM tombstones WHERE kind = 'offline' AND key = $2)",
        )
        .bind(uid)
        .bind(uid.to_string())
        .fetch_one(&mut *conn)
        .await?;
        if seen {
            return Ok(None);
        }
    }
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM offline_messages WHERE username = $1")
            .bind(username)
            .fetch_one(&mut *conn)
            .await?;
    if count >= i64::from(max) {
        return Err(StoreError::Full);
    }
    let row = sqlx::query(
        "INSERT INTO offline_messages (username, stanza, hlc, hlc_dc, uid) \
         VALUES ($1, $2, $3, $4, coalesce($5, gen_random_uuid())) \
         RETURNING uid, (extract(epoch FROM stored_at) * 1000000)::bigint AS stored_at",
    )
    .bind(username)
    .bind(stanza)
    .bind(stamp.hlc)
    .bind(&stamp.dc)
    .bind(uid)
    .fetch_one(conn)
    .await?;
    Ok(Some(Record::Offline {
        username: username.to_owned(),
        id: row.try_get("uid")?,
        stamp: stamp.clone(),
        state: Some(OfflineState {
            stanza: stanza.to_owned(),
            stored_at: row.try_get("stored_at")?,
        }),
    }))
}

pub(crate) async fn delete(
    conn: &mut PgConnection,
    username: &str,
    ids: &[i64],
) -> Result<Vec<uuid::Uuid>, StoreError> {
    Ok(sqlx::query_scalar(
        "DELETE FROM offline_messages WHERE username = $1 AND id = ANY($2) RETURNING uid",
    )
    .bind(username)
    .bind(ids)
    .fetch_all(conn)
    .await?)
}
