//! Personal documents (issue 17): private XML items (XEP-0049), vCards (XEP-0054), the last
//! logout (XEP-0012), PEP nodes and items (XEP-0163) and verified caps (XEP-0115). Each is its own kind with its own table (migration 0006), all of one
//! shape — a user's item under a key, a body, a stamp — so one implementation serves them: per
//! item the larger stamp wins, a deletion is a tombstone keyed `username\nkey`, and the items
//! go with their account.

use async_trait::async_trait;
use meerkat_wire::data::{DocState, Record, Stamp};
use sqlx::{PgConnection, Row};

use super::kind::{contact_of, cursor2, key2, Cursor, Kind};
use super::tombstones::{self, stamp_of};
use crate::StoreError;

/// One kind of personal document.
pub(crate) struct Doc {
    /// The kind's name in `tombstones.kind`.
    pub name: &'static str,
    /// Its table: `username`, `key`, `body`, `hlc`, `hlc_dc`.
    pub table: &'static str,
    /// Its record for (username, key, stamp, state).
    record: fn(String, String, Stamp, Option<DocState>) -> Record,
    /// A column computed from the body at every write and apply, at every DC.
    derived: Option<Derived>,
}

/// A value derived from a document's body, stored beside it with the `hlc` of the body it was
/// computed from (a process of an earlier version updates the body and leaves it stale).
pub(crate) struct Derived {
    pub column: &'static str,
    pub hlc_column: &'static str,
    pub of: fn(&str) -> String,
}

pub(crate) static PRIVATE: Doc = Doc {
    name: "private",
    table: "private_xml",
    derived: None,
    record: |username, key, stamp, state| Record::Private {
        username,
        key,
        stamp,
        state,
    },
};

pub(crate) static VCARD: Doc = Doc {
    name: "vcard",
    table: "vcards",
    // XEP-0153: the photo hash (migration 0008).
    derived: Some(Derived {
        column: "photo_hash",
        hlc_column: "photo_hlc",
        of: meerkat_xmpp::avatar::photo_hash_of_xml,
    }),
    record: |username, _, stamp, state| Record::Vcard {
        username,
        stamp,
        state,
    },
};

pub(crate) static LAST: Doc = Doc {
    name: "last",
    table: "last_activity",
    derived: None,
    record: |username, _, stamp, state| Record::LastActivity {
        username,
        stamp,
        state,
    },
};

pub(crate) static PEP_NODE: Doc = Doc {
    name: "pep_node",
    table: "pep_nodes",
    derived: None,
    record: |username, key, stamp, state| Record::PepNode {
        username,
        key,
        stamp,
        state,
    },
};

pub(crate) static PEP_ITEM: Doc = Doc {
    name: "pep_item",
    table: "pep_items",
    derived: None,
    record: |username, key, stamp, state| Record::PepItem {
        username,
        key,
        stamp,
        state,
    },
};

/// Verified entity capabilities (XEP-0115): owned by no account (`username` empty), so never
/// deleted with one; content-addressed, so two DCs writing one key write one body.
pub(crate) static CAPS: Doc = Doc {
    name: "caps",
    table: "pep_caps",
    derived: None,
    record: |username, key, stamp, state| Record::Caps {
        username,
        key,
        stamp,
        state,
    },
};

/// A room's configuration, subject and affiliations (XEP-0045): owned by no account (the
/// `username` is the room's bare JID).
pub(crate) static MUC_ROOM: Doc = Doc {
    name: "muc_room",
    table: "muc_rooms",
    derived: None,
    record: |username, key, stamp, state| Record::MucRoom {
        username,
        key,
        stamp,
        state,
    },
};

/// A room's occupants, keyed by nick.
pub(crate) static MUC_OCCUPANT: Doc = Doc {
    name: "muc_occupant",
    table: "muc_occupants",
    derived: None,
    record: |username, key, stamp, state| Record::MucOccupant {
        username,
        key,
        stamp,
        state,
    },
};

/// (kind name, username, key, state) of a personal document's record.
fn parts(rec: &Record) -> Option<(&'static str, &str, &str, Option<&DocState>)> {
    match rec {
        Record::Private {
            username,
            key,
            state,
            ..
        } => Some((PRIVATE.name, username, key, state.as_ref())),
        Record::Vcard {
            username, state, ..
        } => Some((VCARD.name, username, "", state.as_ref())),
        Record::LastActivity {
            username, state, ..
        } => Some((LAST.name, username, "", state.as_ref())),
        Record::PepNode {
            username,
            key,
            state,
            ..
        } => Some((PEP_NODE.name, username, key, state.as_ref())),
        Record::PepItem {
            username,
            key,
            state,
            ..
        } => Some((PEP_ITEM.name, username, key, state.as_ref())),
        Record::Caps {
            username,
            key,
            state,
            ..
        } => Some((CAPS.name, username, key, state.as_ref())),
        Record::MucRoom {
            username,
            key,
            state,
            ..
        } => Some((MUC_ROOM.name, username, key, state.as_ref())),
        Record::MucOccupant {
            username,
            key,
            state,
            ..
        } => Some((MUC_OCCUPANT.name, username, key, state.as_ref())),
        _ => None,
    }
}

impl Doc {
    /// The record of a local write: `body` is the item's new state, `None` its deletion.
    pub(crate) fn record_of(
        &self,
        username: &str,
        key: &str,
        body: Option<&str>,
        stamp: &Stamp,
    ) -> Record {
        let state = body.map(|b| DocState { body: b.to_owned() });
        (self.record)(username.to_owned(), key.to_owned(), stamp.clone(), state)
    }

    /// Writes a local change (its stamp, fresh from the DC's clock, always wins).
    pub(crate) async fn write_local(
        &self,
        conn: &mut PgConnection,
        rec: &Record,
    ) -> Result<(), StoreError> {
        self.apply(conn, rec).await
    }
}

#[async_trait]
impl Kind for Doc {
    fn name(&self) -> &'static str {
        self.name
    }

    fn owns(&self, rec: &Record) -> bool {
        parts(rec).is_some_and(|(name, ..)| name == self.name)
    }

    fn user_table(&self) -> Option<&'static str> {
        Some(self.table)
    }

    fn tombstone_key(&self, rec: &Record) -> String {
        parts(rec).map_or_else(String::new, |(_, user, key, _)| key2(user, key))
    }

    async fn row_stamp(
        &self,
        conn: &mut PgConnection,
        rec: &Record,
    ) -> Result<Option<Stamp>, StoreError> {
        let Some((_, user, key, _)) = parts(rec) else {
            return Ok(None);
        };
        let row = sqlx::query(&format!(
            "SELECT hlc, hlc_dc FROM {} WHERE username = $1 AND key = $2",
            self.table
        ))
        .bind(user)
        .bind(key)
        .fetch_optional(conn)
        .await?;
        row.as_ref().map(stamp_of).transpose()
    }

    async fn apply(&self, conn: &mut PgConnection, rec: &Record) -> Result<(), StoreError> {
        let Some((_, user, key, state)) = parts(rec).filter(|p| p.0 == self.name) else {
            return Err(StoreError::Corrupt(format!("not a {} record", self.name)));
        };
        let stamp = rec.stamp();
        let tombstone = key2(user, key);
        match state {
            Some(DocState { body }) => {
                let (columns, values, updates) = match &self.derived {
                    Some(d) => (
                        format!(", {}, {}", d.column, d.hlc_column),
                        ", $6, $4",
                        format!(
                            ", {c} = EXCLUDED.{c}, {h} = EXCLUDED.{h}",
                            c = d.column,
                            h = d.hlc_column
                        ),
                    ),
                    None => (String::new(), "", String::new()),
                };
                let sql = format!(
                    "INSERT INTO {} (username, key, body, hlc, hlc_dc{columns}) \
                     VALUES ($1, $2, $3, $4, $5{values}) \
                     ON CONFLICT (username, key) DO UPDATE SET body = EXCLUDED.body, \
                     hlc = EXCLUDED.hlc, hlc_dc = EXCLUDED.hlc_dc{updates}",
                    self.table
                );
                let mut q = sqlx::query(&sql)
                    .bind(user)
                    .bind(key)
                    .bind(body)
                    .bind(stamp.hlc)
                    .bind(&stamp.dc);
                if let Some(d) = &self.derived {
                    q = q.bind((d.of)(body));
                }
                q.execute(&mut *conn).await?;
                tombstones::clear(conn, self.name, &tombstone).await
            }
            None => {
                sqlx::query(&format!(
                    "DELETE FROM {} WHERE username = $1 AND key = $2",
                    self.table
                ))
                .bind(user)
                .bind(key)
                .execute(&mut *conn)
                .await?;
                tombstones::set(conn, self.name, &tombstone, user, stamp).await
            }
        }
    }

    async fn copy_batch(
        &self,
        conn: &mut PgConnection,
        after: Option<&Cursor>,
        limit: i64,
    ) -> Result<Vec<(Cursor, Record)>, StoreError> {
        let (user, key) = cursor2(after);
        let rows = sqlx::query(&format!(
            "SELECT username, key, body, hlc, hlc_dc FROM {} \
             WHERE (username, key) > ($1, $2) ORDER BY username, key LIMIT $3",
            self.table
        ))
        .bind(user)
        .bind(key)
        .bind(limit)
        .fetch_all(conn)
        .await?;
        rows.iter()
            .map(|row| {
                let username: String = row.try_get("username")?;
                let key: String = row.try_get("key")?;
                let body: String = row.try_get("body")?;
                let rec = self.record_of(&username, &key, Some(&body), &stamp_of(row)?);
                Ok(((username, key), rec))
            })
            .collect()
    }

    fn deleted(&self, key: &str, username: String, stamp: Stamp) -> Result<Record, StoreError> {
        Ok((self.record)(username, contact_of(key), stamp, None))
    }
}
