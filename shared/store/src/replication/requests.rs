//! Pending inbound subscription requests (RFC 6121 §3.1.3), one per (user, contact).

use async_trait::async_trait;
use meerkat_wire::data::{Record, RequestState, Stamp};
use sqlx::{PgConnection, Row};

use super::kind::{contact_of, cursor2, key2, Cursor, Kind};
use super::tombstones::{self, stamp_of};
use crate::StoreError;

pub(crate) struct Requests;

#[async_trait]
impl Kind for Requests {
    fn name(&self) -> &'static str {
        "request"
    }

    fn owns(&self, rec: &Record) -> bool {
        matches!(rec, Record::Request { .. })
    }

    fn user_table(&self) -> Option<&'static str> {
        Some("subscription_requests")
    }

    fn tombstone_key(&self, rec: &Record) -> String {
        match rec {
            Record::Request {
                username, contact, ..
            } => key2(username, contact),
            _ => String::new(),
        }
    }

    async fn row_stamp(
        &self,
        conn: &mut PgConnection,
        rec: &Record,
    ) -> Result<Option<Stamp>, StoreError> {
        let Record::Request {
            username, contact, ..
        } = rec
        else {
            return Ok(None);
        };
        let row = sqlx::query(
            "SELECT hlc, hlc_dc FROM subscription_requests WHERE username = $1 AND contact = $2",
        )
        .bind(username)
        .bind(contact)
        .fetch_optional(conn)
        .await?;
        row.as_ref().map(stamp_of).transpose()
    }

    async fn apply(&self, conn: &mut PgConnection, rec: &Record) -> Result<(), StoreError> {
        let Record::Request {
            username,
            contact,
            stamp,
            state,
        } = rec
        else {
            return Err(StoreError::Corrupt(
                "not a subscription request record".into(),
            ));
        };
        let key = key2(username, contact);
        match state {
            Some(r) => {
                sqlx::query(
                    "INSERT INTO subscription_requests (username, contact, stanza, created_at, hlc, hlc_dc) \
                     VALUES ($1, $2, $3, timestamptz 'epoch' + $4 * interval '1 microsecond', $5, $6) \
                     ON CONFLICT (username, contact) DO UPDATE SET stanza = EXCLUDED.stanza, \
                     created_at = EXCLUDED.created_at, hlc = EXCLUDED.hlc, hlc_dc = EXCLUDED.hlc_dc",
                )
                .bind(username)
                .bind(contact)
                .bind(&r.stanza)
                .bind(r.since)
                .bind(stamp.hlc)
                .bind(&stamp.dc)
                .execute(&mut *conn)
                .await?;
                tombstones::clear(conn, self.name(), &key).await
            }
            None => {
                sqlx::query(
                    "DELETE FROM subscription_requests WHERE username = $1 AND contact = $2",
                )
                .bind(username)
                .bind(contact)
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
        let (user, contact) = cursor2(after);
        let rows = sqlx::query(
            "SELECT username, contact, stanza, hlc, hlc_dc, \
             (extract(epoch FROM created_at) * 1000000)::bigint AS since \
             FROM subscription_requests WHERE (username, contact) > ($1, $2) \
             ORDER BY username, contact LIMIT $3",
        )
        .bind(user)
        .bind(contact)
        .bind(limit)
        .fetch_all(conn)
        .await?;
        rows.iter()
            .map(|row| {
                let username: String = row.try_get("username")?;
                let contact: String = row.try_get("contact")?;
                let rec = Record::Request {
                    username: username.clone(),
                    contact: contact.clone(),
                    stamp: stamp_of(row)?,
                    state: Some(RequestState {
                        stanza: row.try_get("stanza")?,
                        since: row.try_get("since")?,
                    }),
                };
                Ok(((username, contact), rec))
            })
            .collect()
    }

    fn deleted(&self, key: &str, username: String, stamp: Stamp) -> Result<Record, StoreError> {
        Ok(Record::Request {
            username,
            contact: contact_of(key),
            stamp,
            state: None,
        })
    }
}

// ---- The local side.

pub(crate) async fn request_put(
    conn: &mut PgConnection,
    username: &str,
    contact: &str,
    stanza: &str,
    since: i64,
    stamp: &Stamp,
) -> Result<Record, StoreError> {
    tombstones::clear(conn, Requests.name(), &key2(username, contact)).await?;
    Ok(Record::Request {
        username: username.to_owned(),
        contact: contact.to_owned(),
        stamp: stamp.clone(),
        state: Some(RequestState {
            stanza: stanza.to_owned(),
            since,
        }),
    })
}

pub(crate) async fn request_removed(
    conn: &mut PgConnection,
    username: &str,
    contact: &str,
    stamp: &Stamp,
) -> Result<Record, StoreError> {
    tombstones::set(
        conn,
        Requests.name(),
        &key2(username, contact),
        username,
        stamp,
    )
    .await?;
    Ok(Record::Request {
        username: username.to_owned(),
        contact: contact.to_owned(),
        stamp: stamp.clone(),
        state: None,
    })
}
