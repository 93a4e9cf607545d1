//! Roster items (RFC 6121 §2.1), one per (user, contact). Applying one gives the user's
//! roster a new version at this DC, for the clients' roster versioning.

use async_trait::async_trait;
use meerkat_wire::data::{Record, RosterState, Stamp};
use sqlx::{PgConnection, Row};

use super::kind::{contact_of, cursor2, key2, Cursor, Kind};
use super::tombstones::{self, stamp_of};
use crate::StoreError;

pub(crate) struct Roster;

#[async_trait]
impl Kind for Roster {
    fn name(&self) -> &'static str {
        "roster"
    }

    fn owns(&self, rec: &Record) -> bool {
        matches!(rec, Record::Roster { .. })
    }

    fn user_table(&self) -> Option<&'static str> {
        Some("roster_items")
    }

    fn tombstone_key(&self, rec: &Record) -> String {
        match rec {
            Record::Roster {
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
        let Record::Roster {
            username, contact, ..
        } = rec
        else {
            return Ok(None);
        };
        let row = sqlx::query(
            "SELECT hlc, hlc_dc FROM roster_items WHERE username = $1 AND contact = $2",
        )
        .bind(username)
        .bind(contact)
        .fetch_optional(conn)
        .await?;
        row.as_ref().map(stamp_of).transpose()
    }

    async fn apply(&self, conn: &mut PgConnection, rec: &Record) -> Result<(), StoreError> {
        let Record::Roster {
            username,
            contact,
            stamp,
            state,
        } = rec
        else {
            return Err(StoreError::Corrupt("not a roster record".into()));
        };
        let key = key2(username, contact);
        match state {
            Some(r) => {
                sqlx::query(
                    "INSERT INTO roster_items (username, contact, name, subscription, ask_out, \
                     approved, groups, version, hlc, hlc_dc) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9) \
                     ON CONFLICT (username, contact) DO UPDATE SET name = EXCLUDED.name, \
                     subscription = EXCLUDED.subscription, ask_out = EXCLUDED.ask_out, \
                     approved = EXCLUDED.approved, groups = EXCLUDED.groups, \
                     hlc = EXCLUDED.hlc, hlc_dc = EXCLUDED.hlc_dc",
                )
                .bind(username)
                .bind(contact)
                .bind(&r.name)
                .bind(&r.subscription)
                .bind(r.ask_out)
                .bind(r.approved)
                .bind(&r.groups)
                .bind(stamp.hlc)
                .bind(&stamp.dc)
                .execute(&mut *conn)
                .await?;
                tombstones::clear(conn, self.name(), &key).await?;
            }
            None => {
                sqlx::query("DELETE FROM roster_items WHERE username = $1 AND contact = $2")
                    .bind(username)
                    .bind(contact)
                    .execute(&mut *conn)
                    .await?;
                tombstones::set(conn, self.name(), &key, username, stamp).await?;
            }
        }
        // The user's roster changed here: a new version for the clients of this DC.
        sqlx::query(
            "WITH v AS (UPDATE accounts SET roster_version = roster_version + 1 \
             WHERE username = $1 RETURNING roster_version) \
             UPDATE roster_items SET version = (SELECT roster_version FROM v) \
             WHERE username = $1 AND contact = $2 AND EXISTS (SELECT 1 FROM v)",
        )
        .bind(username)
        .bind(contact)
        .execute(conn)
        .await?;
        Ok(())
    }

    async fn copy_batch(
        &self,
        conn: &mut PgConnection,
        after: Option<&Cursor>,
        limit: i64,
    ) -> Result<Vec<(Cursor, Record)>, StoreError> {
        let (user, contact) = cursor2(after);
        let rows = sqlx::query(
            "SELECT username, contact, name, subscription, ask_out, approved, groups, hlc, hlc_dc \
             FROM roster_items WHERE (username, contact) > ($1, $2) \
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
                let rec = Record::Roster {
                    username: username.clone(),
                    contact: contact.clone(),
                    stamp: stamp_of(row)?,
                    state: Some(RosterState {
                        name: row.try_get("name")?,
                        subscription: row.try_get("subscription")?,
                        ask_out: row.try_get("ask_out")?,
                        approved: row.try_get("approved")?,
                        groups: row.try_get("groups")?,
                    }),
                };
                Ok(((username, contact), rec))
            })
            .collect()
    }

    fn deleted(&self, key: &str, username: String, stamp: Stamp) -> Result<Record, StoreError> {
        Ok(Record::Roster {
            username,
            contact: contact_of(key),
            stamp,
            state: None,
        })
    }
}

// ---- The local side.

pub(crate) fn roster_record(username: &str, item: &crate::RosterItem, stamp: &Stamp) -> Record {
    Record::Roster {
        username: username.to_owned(),
        contact: item.jid.clone(),
        stamp: stamp.clone(),
        state: Some(RosterState {
            name: item.name.clone(),
            subscription: item.subscription.as_str().to_owned(),
            ask_out: item.ask_out,
            approved: item.approved,
            groups: item.groups.clone(),
        }),
    }
}

pub(crate) async fn roster_put(
    conn: &mut PgConnection,
    username: &str,
    contact: &str,
) -> Result<(), StoreError> {
    tombstones::clear(conn, Roster.name(), &key2(username, contact)).await
}

pub(crate) async fn roster_removed(
    conn: &mut PgConnection,
    username: &str,
    contact: &str,
    stamp: &Stamp,
) -> Result<Record, StoreError> {
    tombstones::set(
        conn,
        Roster.name(),
        &key2(username, contact),
        username,
        stamp,
    )
    .await?;
    Ok(Record::Roster {
        username: username.to_owned(),
        contact: contact.to_owned(),
        stamp: stamp.clone(),
        state: None,
    })
}
