//! Accounts and their SCRAM credentials.

use meerkat_auth::{Credentials, StoredCredential};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use meerkat_wire::data::Stamp;

use crate::{Change, Outcome, Store, StoreError};

impl Store {
    /// Creates an account; [`StoreError::Conflict`] if the name is taken.
    pub async fn create_account(
        &self,
        username: &str,
        creds: &Credentials,
    ) -> Result<(), StoreError> {
        self.write(&Change::CreateAccount {
            username: username.to_owned(),
            credentials: creds.clone(),
        })
        .await
        .map(|_| ())
    }

    pub async fn credentials(&self, username: &str) -> Result<Option<Credentials>, StoreError> {
        let row = sqlx::query(
            "SELECT sha1_salt, sha1_iterations, sha1_stored_key, sha1_server_key, \
             sha256_salt, sha256_iterations, sha256_stored_key, sha256_server_key \
             FROM accounts WHERE username = $1",
        )
        .bind(username)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| {
            Ok(Credentials {
                sha1: stored(&r, "sha1")?,
                sha256: stored(&r, "sha256")?,
            })
        })
        .transpose()
    }

    /// Replaces the credentials (password change); false if there is no such account.
    pub async fn set_credentials(
        &self,
        username: &str,
        creds: &Credentials,
    ) -> Result<bool, StoreError> {
        let change = Change::SetCredentials {
            username: username.to_owned(),
            credentials: creds.clone(),
        };
        Ok(self.write(&change).await? == Outcome::Existed(true))
    }

    /// Deletes the account and everything it owns; false if there was no such account.
    pub async fn delete_account(&self, username: &str) -> Result<bool, StoreError> {
        Ok(self
            .write(&Change::DeleteAccount {
                username: username.to_owned(),
            })
            .await?
            == Outcome::Existed(true))
    }

    pub async fn list_accounts(&self) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT username FROM accounts ORDER BY username")
                .fetch_all(self.pool())
                .await?,
        )
    }

    pub async fn account_exists(&self, username: &str) -> Result<bool, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM accounts WHERE username = $1)")
                .bind(username)
                .fetch_one(self.pool())
                .await?,
        )
    }

    pub async fn count_accounts(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM accounts")
            .fetch_one(self.pool())
            .await?)
    }
}

pub(crate) fn stored(row: &PgRow, alg: &str) -> Result<StoredCredential, StoreError> {
    let iterations: i32 = row.try_get(format!("{alg}_iterations").as_str())?;
    Ok(StoredCredential {
        salt: row.try_get(format!("{alg}_salt").as_str())?,
        iterations: u32::try_from(iterations)
            .map_err(|_| StoreError::Corrupt(format!("{alg}_iterations")))?,
        stored_key: row.try_get(format!("{alg}_stored_key").as_str())?,
        server_key: row.try_get(format!("{alg}_server_key").as_str())?,
    })
}

fn iterations(c: &StoredCredential) -> Result<i32, StoreError> {
    i32::try_from(c.iterations).map_err(|_| StoreError::Corrupt("iteration count too large".into()))
}

pub(crate) async fn create(
    conn: &mut PgConnection,
    username: &str,
    c: &Credentials,
    stamp: &Stamp,
) -> Result<(), StoreError> {
    let inserted = bind_credentials(
        sqlx::query(
            "INSERT INTO accounts (username, \
         sha1_salt, sha1_iterations, sha1_stored_key, sha1_server_key, \
         sha256_salt, sha256_iterations, sha256_stored_key, sha256_server_key, \
         hlc, hlc_dc, born, born_dc) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $10, $11) \
         ON CONFLICT (username) DO NOTHING",
        ),
        username,
        c,
        stamp,
    )?
    .execute(conn)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(StoreError::Conflict);
    }
    Ok(())
}

pub(crate) async fn set_credentials(
    conn: &mut PgConnection,
    username: &str,
    c: &Credentials,
    stamp: &Stamp,
) -> Result<bool, StoreError> {
    let updated = bind_credentials(
        sqlx::query(
            "UPDATE accounts SET \
         sha1_salt = $2, sha1_iterations = $3, sha1_stored_key = $4, sha1_server_key = $5, \
         sha256_salt = $6, sha256_iterations = $7, sha256_stored_key = $8, sha256_server_key = $9, \
         hlc = $10, hlc_dc = $11 WHERE username = $1",
        ),
        username,
        c,
        stamp,
    )?
    .execute(conn)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Binds `$1` to `$11` of an accounts statement: the username, both mechanisms' credentials
/// (salt, iterations, stored key, server key; SCRAM-SHA-1 first) and the stamp.
fn bind_credentials<'q>(
    q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    username: &'q str,
    c: &'q Credentials,
    stamp: &'q Stamp,
) -> Result<sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>, StoreError> {
    Ok(q.bind(username)
        .bind(&c.sha1.salt)
        .bind(iterations(&c.sha1)?)
        .bind(&c.sha1.stored_key)
        .bind(&c.sha1.server_key)
        .bind(&c.sha256.salt)
        .bind(iterations(&c.sha256)?)
        .bind(&c.sha256.stored_key)
        .bind(&c.sha256.server_key)
        .bind(stamp.hlc)
        .bind(&stamp.dc))
}

/// The rows the account owns are deleted by the caller (`replication::account_deleted`).
pub(crate) async fn delete(conn: &mut PgConnection, username: &str) -> Result<bool, StoreError> {
    let deleted = sqlx::query("DELETE FROM accounts WHERE username = $1")
        .bind(username)
        .execute(conn)
        .await?;
    Ok(deleted.rows_affected() == 1)
}

/// Locks the account row for the rest of the transaction, serialising per-user writes that
/// must read before they write (roster versions, the offline bound). False if it doesn't exist.
pub(crate) async fn lock(conn: &mut PgConnection, username: &str) -> Result<bool, StoreError> {
    let found = sqlx::query("SELECT 1 FROM accounts WHERE username = $1 FOR UPDATE")
        .bind(username)
        .fetch_optional(conn)
        .await?;
    Ok(found.is_some())
}
