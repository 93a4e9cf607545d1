//! A user's personal documents (issue 17): private XML items (XEP-0049), the vCard
//! (XEP-0054) and the last logout (XEP-0012). Each is a replicated kind of its own
//! (`replication/docs.rs`, migration 0006); the limits are the caller's (the router's
//! configuration), enforced here under the account row lock so that concurrent writes cannot
//! pass them.

use meerkat_wire::data::{Record, Stamp};
use sqlx::PgConnection;

use crate::replication::{Doc, LAST, PRIVATE, VCARD};
use crate::{accounts, Change, Store, StoreError};

/// When the account's last resource went unavailable, and with which status text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastActivity {
    /// Milliseconds since the Unix epoch: the clock of the write's stamp.
    pub at_ms: i64,
    pub status: String,
}

impl Store {
    /// The private XML item stored under `key` (`{namespace}name`).
    pub async fn private_item(
        &self,
        username: &str,
        key: &str,
    ) -> Result<Option<String>, StoreError> {
        self.doc(&PRIVATE, username, key).await
    }

    /// Stores private XML items (key, element), all or none: [`StoreError::Full`] if the
    /// account's items would then hold more than `max_total` bytes.
    pub async fn set_private(
        &self,
        username: &str,
        items: &[(String, String)],
        max_total: u64,
    ) -> Result<(), StoreError> {
        self.write(&Change::SetPrivate {
            username: username.to_owned(),
            items: items.to_vec(),
            max_total,
        })
        .await
        .map(|_| ())
    }

    /// The account's vCard (the `<vCard/>` element), if it has one.
    pub async fn vcard(&self, username: &str) -> Result<Option<String>, StoreError> {
        self.doc(&VCARD, username, "").await
    }

    /// Replaces the account's vCard; `None` deletes it.
    pub async fn set_vcard(&self, username: &str, vcard: Option<&str>) -> Result<(), StoreError> {
        self.write(&Change::SetVcard {
            username: username.to_owned(),
            vcard: vcard.map(str::to_owned),
        })
        .await
        .map(|_| ())
    }

    /// XEP-0153: the SHA-1 (hex) of the account's vCard photo, "" when it has no vCard or no
    /// photo. One indexed read of the hash stored beside the vCard (migration 0008); a row
    /// whose hash is not its body's (written by an earlier version) is hashed here from the
    /// body.
    pub async fn vcard_photo_hash(&self, username: &str) -> Result<String, StoreError> {
        let hashes = self.vcard_photo_hashes(&[username.to_owned()]).await?;
        Ok(hashes
            .into_iter()
            .next()
            .map(|(_, h)| h)
            .unwrap_or_default())
    }

    /// [`Store::vcard_photo_hash`] of several accounts in one query: (username, hash) of those
    /// that have a vCard; an account missing here has the hash "".
    pub async fn vcard_photo_hashes(
        &self,
        usernames: &[String],
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT username, \
                    CASE WHEN photo_hlc = hlc THEN photo_hash END, \
                    CASE WHEN photo_hlc IS DISTINCT FROM hlc OR photo_hash IS NULL THEN body END \
             FROM vcards WHERE username = ANY($1) AND key = ''",
        )
        .bind(usernames)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(user, hash, body)| {
                let hash = hash.unwrap_or_else(|| {
                    body.as_deref()
                        .map(meerkat_xmpp::avatar::photo_hash_of_xml)
                        .unwrap_or_default()
                });
                (user, hash)
            })
            .collect())
    }

    /// The account's last logout, if one is known.
    pub async fn last_activity(&self, username: &str) -> Result<Option<LastActivity>, StoreError> {
        let row: Option<(i64, String)> =
            sqlx::query_as("SELECT hlc, body FROM last_activity WHERE username = $1 AND key = ''")
                .bind(username)
                .fetch_optional(self.pool())
                .await?;
        Ok(row.map(|(hlc, status)| LastActivity {
            at_ms: hlc >> 16,
            status,
        }))
    }

    /// Records a logout now, with its status text.
    pub async fn set_last_activity(&self, username: &str, status: &str) -> Result<(), StoreError> {
        self.write(&Change::SetLastActivity {
            username: username.to_owned(),
            status: status.to_owned(),
        })
        .await
        .map(|_| ())
    }

    async fn doc(
        &self,
        doc: &Doc,
        username: &str,
        key: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(&format!(
            "SELECT body FROM {} WHERE username = $1 AND key = $2",
            doc.table
        ))
        .bind(username)
        .bind(key)
        .fetch_optional(self.pool())
        .await?)
    }
}

/// Writes (or, `body` `None`, deletes) one document of the account, returning its record.
pub(crate) async fn put(
    conn: &mut PgConnection,
    doc: &Doc,
    username: &str,
    key: &str,
    body: Option<&str>,
    stamp: &Stamp,
) -> Result<Record, StoreError> {
    if !accounts::lock(conn, username).await? {
        return Err(StoreError::NoSuchAccount);
    }
    let rec = doc.record_of(username, key, body, stamp);
    // A local write always wins: the clock never runs behind what this DC has seen.
    doc.write_local(conn, &rec).await?;
    Ok(rec)
}

/// Stores private items, refused ([`StoreError::Full`]) past `max_total` bytes in all.
pub(crate) async fn set_private(
    conn: &mut PgConnection,
    username: &str,
    items: &[(String, String)],
    max_total: u64,
    stamp: &Stamp,
) -> Result<Vec<Record>, StoreError> {
    let mut records = Vec::with_capacity(items.len());
    for (key, body) in items {
        records.push(put(conn, &PRIVATE, username, key, Some(body), stamp).await?);
    }
    let total: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(octet_length(body)), 0)::bigint FROM private_xml WHERE username = $1",
    )
    .bind(username)
    .fetch_one(&mut *conn)
    .await?;
    if u64::try_from(total).unwrap_or(u64::MAX) > max_total {
        return Err(StoreError::Full);
    }
    Ok(records)
}

pub(crate) async fn set_vcard(
    conn: &mut PgConnection,
    username: &str,
    vcard: Option<&str>,
    stamp: &Stamp,
) -> Result<Record, StoreError> {
    put(conn, &VCARD, username, "", vcard, stamp).await
}

pub(crate) async fn set_last(
    conn: &mut PgConnection,
    username: &str,
    status: &str,
    stamp: &Stamp,
) -> Result<Record, StoreError> {
    put(conn, &LAST, username, "", Some(status), stamp).await
}
