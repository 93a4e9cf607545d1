//! XEP-0191 block lists: the JIDs each account has blocked (normalised by the router: bare,
//! full, domain or domain/resource). Replicated per item like the roster; the router caches
//! the lists it enforces and learns of every change through the `meerkat_blocking`
//! notification the table's trigger sends (migration 0005).

use meerkat_wire::data::{BlockState, Record, Stamp};
use sqlx::PgConnection;

use crate::replication::{block_removed, unblock_key};
use crate::{accounts, Change, Store, StoreError};

impl Store {
    /// The account's blocked JIDs, sorted.
    pub async fn block_list(&self, username: &str) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT jid FROM blocked_jids WHERE username = $1 ORDER BY jid")
                .bind(username)
                .fetch_all(self.pool())
                .await?,
        )
    }

    /// Adds `jids` to the list; [`StoreError::Full`] (nothing written) if the list would then
    /// hold more than `max` items.
    pub async fn block(&self, username: &str, jids: &[String], max: u32) -> Result<(), StoreError> {
        self.write(&Change::Block {
            username: username.to_owned(),
            jids: jids.to_vec(),
            max,
        })
        .await
        .map(|_| ())
    }

    /// Removes `jids` from the list, or every item when `None`.
    pub async fn unblock(&self, username: &str, jids: Option<&[String]>) -> Result<(), StoreError> {
        self.write(&Change::Unblock {
            username: username.to_owned(),
            jids: jids.map(<[String]>::to_vec),
        })
        .await
        .map(|_| ())
    }
}

/// Writes the items (a re-blocked item takes the new stamp) and returns their records.
pub(crate) async fn block(
    conn: &mut PgConnection,
    username: &str,
    jids: &[String],
    max: u32,
    stamp: &Stamp,
) -> Result<Vec<Record>, StoreError> {
    if !accounts::lock(conn, username).await? {
        return Err(StoreError::NoSuchAccount);
    }
    sqlx::query(
        "INSERT INTO blocked_jids (username, jid, hlc, hlc_dc) \
         SELECT $1, j, $3, $4 FROM unnest($2::text[]) AS j \
         ON CONFLICT (username, jid) DO UPDATE SET hlc = EXCLUDED.hlc, hlc_dc = EXCLUDED.hlc_dc",
    )
    .bind(username)
    .bind(jids)
    .bind(stamp.hlc)
    .bind(&stamp.dc)
    .execute(&mut *conn)
    .await?;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM blocked_jids WHERE username = $1")
        .bind(username)
        .fetch_one(&mut *conn)
        .await?;
    if count > i64::from(max) {
        return Err(StoreError::Full);
    }
    sqlx::query("DELETE FROM tombstones WHERE kind = 'block' AND key = ANY($1)")
        .bind(
            jids.iter()
                .map(|j| unblock_key(username, j))
                .collect::<Vec<_>>(),
        )
        .execute(&mut *conn)
        .await?;
    Ok(jids
        .iter()
        .map(|j| Record::Block {
            username: username.to_owned(),
            jid: j.clone(),
            stamp: stamp.clone(),
            state: Some(BlockState {}),
        })
        .collect())
}

/// Deletes the items (every one when `jids` is `None`) and returns their deletion records.
/// A named item is tombstoned even if it is not (yet) here: the user's unblock then also
/// wins over an older block made at another DC that has not arrived.
pub(crate) async fn unblock(
    conn: &mut PgConnection,
    username: &str,
    jids: Option<&[String]>,
    stamp: &Stamp,
) -> Result<Vec<Record>, StoreError> {
    let removed: Vec<String> = match jids {
        Some(jids) => {
            sqlx::query("DELETE FROM blocked_jids WHERE username = $1 AND jid = ANY($2)")
                .bind(username)
                .bind(jids)
                .execute(&mut *conn)
                .await?;
            jids.to_vec()
        }
        None => {
            sqlx::query_scalar("DELETE FROM blocked_jids WHERE username = $1 RETURNING jid")
                .bind(username)
                .fetch_all(&mut *conn)
                .await?
        }
    };
    let mut records = Vec::with_capacity(removed.len());
    for jid in &removed {
        records.push(block_removed(conn, username, jid, stamp).await?);
    }
    Ok(records)
}
