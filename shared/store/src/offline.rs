//! Offline messages (RFC 6121 §8.5.2.2.1 / XEP-0160), bounded per user.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

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
) -> Result<(), StoreError> {
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
    sqlx::query("INSERT INTO offline_messages (username, stanza) VALUES ($1, $2)")
        .bind(username)
        .bind(stanza)
        .execute(conn)
        .await?;
    Ok(())
}

pub(crate) async fn delete(
    conn: &mut PgConnection,
    username: &str,
    ids: &[i64],
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM offline_messages WHERE username = $1 AND id = ANY($2)")
        .bind(username)
        .bind(ids)
        .execute(conn)
        .await?;
    Ok(())
}
