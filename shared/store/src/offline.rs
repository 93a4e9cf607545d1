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
        let change = Change::StoreOffline {
            username: username.to_owned(),
            stanza: stanza.to_owned(),
            max,
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

pub(crate) async fn store(
    conn: &mut PgConnection,
    username: &str,
    stanza: &str,
    max: u32,
    stamp: &Stamp,
) -> Result<Record, StoreError> {
    // The account lock makes count-then-insert atomic against concurrent stores.
    if !accounts::lock(conn, username).await? {
        return Err(StoreError::NoSuchAccount);
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
        "INSERT INTO offline_messages (username, stanza, hlc, hlc_dc) VALUES ($1, $2, $3, $4) \
         RETURNING uid, (extract(epoch FROM stored_at) * 1000000)::bigint AS stored_at",
    )
    .bind(username)
    .bind(stanza)
    .bind(stamp.hlc)
    .bind(&stamp.dc)
    .fetch_one(conn)
    .await?;
    Ok(Record::Offline {
        username: username.to_owned(),
        id: row.try_get("uid")?,
        stamp: stamp.clone(),
        state: Some(OfflineState {
            stanza: stanza.to_owned(),
            stored_at: row.try_get("stored_at")?,
        }),
    })
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
