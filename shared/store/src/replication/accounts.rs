//! Accounts: the SCRAM credentials and the account's birth stamp. An account owns the items
//! of the other kinds: they go when it is deleted, and an item older than its birth belonged
//! to an earlier account of that name.

use async_trait::async_trait;
use meerkat_wire::data::{AccountState, Record, ScramKeys, Stamp};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use super::kind::{Cursor, Kind};
use super::tombstones::{self, stamp_of};
use crate::StoreError;

pub(crate) struct Accounts;

const COLUMNS: &str = "username, hlc, hlc_dc, born, born_dc, sha1_salt, sha1_iterations, \
     sha1_stored_key, sha1_server_key, sha256_salt, sha256_iterations, sha256_stored_key, \
     sha256_server_key";

#[async_trait]
impl Kind for Accounts {
    fn name(&self) -> &'static str {
        "account"
    }

    fn owns(&self, rec: &Record) -> bool {
        matches!(rec, Record::Account { .. })
    }

    fn user_table(&self) -> Option<&'static str> {
        None
    }

    fn tombstone_key(&self, rec: &Record) -> String {
        rec.username().to_owned()
    }

    async fn row_stamp(
        &self,
        conn: &mut PgConnection,
        rec: &Record,
    ) -> Result<Option<Stamp>, StoreError> {
        let row = sqlx::query("SELECT hlc, hlc_dc FROM accounts WHERE username = $1")
            .bind(rec.username())
            .fetch_optional(conn)
            .await?;
        row.as_ref().map(stamp_of).transpose()
    }

    async fn apply(&self, conn: &mut PgConnection, rec: &Record) -> Result<(), StoreError> {
        let Record::Account {
            username,
            stamp,
            state,
        } = rec
        else {
            return Err(StoreError::Corrupt("not an account record".into()));
        };
        let Some(a) = state else {
            sqlx::query("DELETE FROM accounts WHERE username = $1")
                .bind(username)
                .execute(&mut *conn)
                .await?;
            super::drop_older_data(conn, username, stamp).await?;
            return tombstones::set(conn, self.name(), username, username, stamp).await;
        };
        let iter = |k: &ScramKeys| {
            i32::try_from(k.iterations)
                .map_err(|_| StoreError::Corrupt("iteration count too large".into()))
        };
        sqlx::query(
            "INSERT INTO accounts (username, sha1_salt, sha1_iterations, sha1_stored_key, \
             sha1_server_key, sha256_salt, sha256_iterations, sha256_stored_key, \
             sha256_server_key, hlc, hlc_dc, born, born_dc) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
             ON CONFLICT (username) DO UPDATE SET sha1_salt = EXCLUDED.sha1_salt, \
             sha1_iterations = EXCLUDED.sha1_iterations, sha1_stored_key = EXCLUDED.sha1_stored_key, \
             sha1_server_key = EXCLUDED.sha1_server_key, sha256_salt = EXCLUDED.sha256_salt, \
             sha256_iterations = EXCLUDED.sha256_iterations, \
             sha256_stored_key = EXCLUDED.sha256_stored_key, \
             sha256_server_key = EXCLUDED.sha256_server_key, hlc = EXCLUDED.hlc, \
             hlc_dc = EXCLUDED.hlc_dc, born = EXCLUDED.born, born_dc = EXCLUDED.born_dc",
        )
        .bind(username)
        .bind(&a.sha1.salt)
        .bind(iter(&a.sha1)?)
        .bind(&a.sha1.stored_key)
        .bind(&a.sha1.server_key)
        .bind(&a.sha256.salt)
        .bind(iter(&a.sha256)?)
        .bind(&a.sha256.stored_key)
        .bind(&a.sha256.server_key)
        .bind(stamp.hlc)
        .bind(&stamp.dc)
        .bind(a.born.hlc)
        .bind(&a.born.dc)
        .execute(&mut *conn)
        .await?;
        account_created(conn, username, &a.born).await
    }

    async fn copy_batch(
        &self,
        conn: &mut PgConnection,
        after: Option<&Cursor>,
        limit: i64,
    ) -> Result<Vec<(Cursor, Record)>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM accounts WHERE username > $1 ORDER BY username LIMIT $2"
        ))
        .bind(after.map_or("", |(u, _)| u.as_str()))
        .bind(limit)
        .fetch_all(conn)
        .await?;
        rows.iter()
            .map(|row| {
                let username: String = row.try_get("username")?;
                let rec = account_from_row(row, &username)?;
                Ok(((username, String::new()), rec))
            })
            .collect()
    }

    fn deleted(&self, _key: &str, username: String, stamp: Stamp) -> Result<Record, StoreError> {
        Ok(Record::Account {
            username,
            stamp,
            state: None,
        })
    }
}

// ---- The local side: records of local writes, built from the rows as written.

/// The account row's state as a record.
pub(crate) async fn account_record(
    conn: &mut PgConnection,
    username: &str,
) -> Result<Record, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM accounts WHERE username = $1"
    ))
    .bind(username)
    .fetch_one(conn)
    .await?;
    account_from_row(&row, username)
}

fn keys_from_row(row: &PgRow, alg: &str) -> Result<ScramKeys, StoreError> {
    let c = crate::accounts::stored(row, alg)?;
    Ok(ScramKeys {
        salt: c.salt,
        iterations: c.iterations,
        stored_key: c.stored_key,
        server_key: c.server_key,
    })
}

fn account_from_row(row: &PgRow, username: &str) -> Result<Record, StoreError> {
    Ok(Record::Account {
        username: username.to_owned(),
        stamp: stamp_of(row)?,
        state: Some(AccountState {
            born: Stamp {
                hlc: row.try_get("born")?,
                dc: row.try_get("born_dc")?,
            },
            sha1: keys_from_row(row, "sha1")?,
            sha256: keys_from_row(row, "sha256")?,
        }),
    })
}

/// An account deleted here: everything it owned goes, a tombstone stays.
pub(crate) async fn account_deleted(
    conn: &mut PgConnection,
    username: &str,
    stamp: &Stamp,
) -> Result<Record, StoreError> {
    let everything = Stamp {
        hlc: i64::MAX,
        dc: String::new(),
    };
    super::drop_older_data(conn, username, &everything).await?;
    tombstones::set(conn, Accounts.name(), username, username, stamp).await?;
    Ok(Record::Account {
        username: username.to_owned(),
        stamp: stamp.clone(),
        state: None,
    })
}

/// An account (re)born at `born`: what an earlier account of the name left goes.
pub(crate) async fn account_created(
    conn: &mut PgConnection,
    username: &str,
    born: &Stamp,
) -> Result<(), StoreError> {
    super::drop_older_data(conn, username, born).await?;
    tombstones::clear(conn, Accounts.name(), username).await
}
