//! Roster items (RFC 6121 §2.1), one per (user, contact). Applying one gives the user's
//! roster a new version at this DC, for the clients' roster versioning.

use async_trait::async_trait;
use meerkat_wire::data::{Record, RosterParts, RosterState, Stamp};
use sqlx::postgres::PgRow;
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
        // The oldest of its parts: a record newer than any part has something to merge.
        let row = sqlx::query(
            "SELECT meta_hlc, meta_dc, to_hlc, to_dc, from_hlc, from_dc FROM roster_items \
             WHERE username = $1 AND contact = $2",
        )
        .bind(username)
        .bind(contact)
        .fetch_optional(conn)
        .await?;
        Ok(match row {
            Some(row) => {
                let p = parts_of(&row)?;
                [p.meta, p.to, p.from].into_iter().min()
            }
            None => None,
        })
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
                let parts = r.parts.clone().unwrap_or_else(|| RosterParts {
                    meta: stamp.clone(),
                    to: stamp.clone(),
                    from: stamp.clone(),
                });
                merge(conn, username, contact, r, stamp, &parts).await?;
                tombstones::clear(conn, self.name(), &key).await?;
            }
            None => {
                // A removal against the whole item: it goes only if it is later than every
                // part here (a part changed after it at another DC keeps the item).
                let deleted = sqlx::query(
                    "DELETE FROM roster_items WHERE username = $1 AND contact = $2 \
                     AND (hlc, hlc_dc COLLATE \"C\") < ($3, $4 COLLATE \"C\")",
                )
                .bind(username)
                .bind(contact)
                .bind(stamp.hlc)
                .bind(&stamp.dc)
                .execute(&mut *conn)
                .await?;
                let remains = deleted.rows_affected() == 0
                    && sqlx::query(
                        "SELECT 1 FROM roster_items WHERE username = $1 AND contact = $2",
                    )
                    .bind(username)
                    .bind(contact)
                    .fetch_optional(&mut *conn)
                    .await?
                    .is_some();
                if remains {
                    return Ok(());
                }
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
            "SELECT username, contact, name, subscription, ask_out, approved, groups, hlc, hlc_dc, \
             meta_hlc, meta_dc, to_hlc, to_dc, from_hlc, from_dc \
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
                        parts: Some(parts_of(row)?),
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

pub(crate) fn roster_record(
    username: &str,
    item: &crate::RosterItem,
    stamp: &Stamp,
    parts: RosterParts,
) -> Record {
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
            parts: Some(parts),
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

/// The stamps of an item's parts, from a row with their columns.
pub(crate) fn parts_of(row: &PgRow) -> Result<RosterParts, StoreError> {
    let at = |hlc: &str, dc: &str| -> Result<Stamp, StoreError> {
        Ok(Stamp {
            hlc: row.try_get(hlc)?,
            dc: row.try_get(dc)?,
        })
    };
    Ok(RosterParts {
        meta: at("meta_hlc", "meta_dc")?,
        to: at("to_hlc", "to_dc")?,
        from: at("from_hlc", "from_dc")?,
    })
}

/// SQL: whether the row `side` has the "to" half (the owner is subscribed to the contact).
fn has_to(side: &str) -> String {
    format!("({side}.subscription IN ('to', 'both'))")
}

/// SQL: whether the row `side` has the "from" half (the contact is subscribed to the owner).
fn has_from(side: &str) -> String {
    format!("({side}.subscription IN ('from', 'both'))")
}

/// SQL: whether each part of an item differs between the rows `old` and `new`, as (name and
/// groups, "to" half with the `ask`, "from" half with the pre-approval): a local write moves
/// the stamp of the parts it changed.
pub(crate) fn parts_changed(old: &str, new: &str) -> [String; 3] {
    [
        format!("({old}.name IS DISTINCT FROM {new}.name OR {old}.groups <> {new}.groups)"),
        format!(
            "({} <> {} OR {old}.ask_out <> {new}.ask_out)",
            has_to(old),
            has_to(new)
        ),
        format!(
            "({} <> {} OR {old}.approved <> {new}.approved)",
            has_from(old),
            has_from(new)
        ),
    ]
}

/// The statement of [`merge`], built once.
static MERGE_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    // Which side's part is later, here (`x`) against the record (`EXCLUDED`).
    const META: &str = "(EXCLUDED.meta_hlc, EXCLUDED.meta_dc COLLATE \"C\") > (x.meta_hlc, x.meta_dc COLLATE \"C\")";
    const TO: &str =
        "(EXCLUDED.to_hlc, EXCLUDED.to_dc COLLATE \"C\") > (x.to_hlc, x.to_dc COLLATE \"C\")";
    const FROM: &str = "(EXCLUDED.from_hlc, EXCLUDED.from_dc COLLATE \"C\") > (x.from_hlc, x.from_dc COLLATE \"C\")";
    const ROW: &str =
        "(EXCLUDED.hlc, EXCLUDED.hlc_dc COLLATE \"C\") > (x.hlc, x.hlc_dc COLLATE \"C\")";
    let pick =
        |cond: &str, col: &str| format!("CASE WHEN {cond} THEN EXCLUDED.{col} ELSE x.{col} END");
    let to = format!(
        "CASE WHEN {TO} THEN {} ELSE {} END",
        has_to("EXCLUDED"),
        has_to("x")
    );
    let from = format!(
        "CASE WHEN {FROM} THEN {} ELSE {} END",
        has_from("EXCLUDED"),
        has_from("x")
    );
    format!(
        "INSERT INTO roster_items AS x (username, contact, name, subscription, ask_out, approved, \
         groups, version, hlc, hlc_dc, meta_hlc, meta_dc, to_hlc, to_dc, from_hlc, from_dc) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9, $10, $11, $12, $13, $14, $15) \
         ON CONFLICT (username, contact) DO UPDATE SET \
         name = {name}, groups = {groups}, \
         subscription = CASE WHEN {to} AND {from} THEN 'both' WHEN {to} THEN 'to' \
           WHEN {from} THEN 'from' ELSE 'none' END, \
         ask_out = {ask}, approved = {approved}, \
         hlc = {hlc}, hlc_dc = {hlc_dc}, \
         meta_hlc = {meta_hlc}, meta_dc = {meta_dc}, to_hlc = {to_hlc}, to_dc = {to_dc}, \
         from_hlc = {from_hlc}, from_dc = {from_dc}",
        name = pick(META, "name"),
        groups = pick(META, "groups"),
        ask = pick(TO, "ask_out"),
        approved = pick(FROM, "approved"),
        hlc = pick(ROW, "hlc"),
        hlc_dc = pick(ROW, "hlc_dc"),
        meta_hlc = pick(META, "meta_hlc"),
        meta_dc = pick(META, "meta_dc"),
        to_hlc = pick(TO, "to_hlc"),
        to_dc = pick(TO, "to_dc"),
        from_hlc = pick(FROM, "from_hlc"),
        from_dc = pick(FROM, "from_dc"),
    )
});

/// Merges another DC's state of an item into this DC's, part by part: each of the name and
/// groups, the "to" half (the owner's subscription and its pending `ask`) and the "from" half
/// (the contact's subscription and the pre-approval) is taken from whichever side changed it
/// later; the item's stamp is the later of the two. Both users of a pair approving each other
/// at two DCs at once change two different halves of each item, and both changes stay.
async fn merge(
    conn: &mut PgConnection,
    username: &str,
    contact: &str,
    r: &RosterState,
    stamp: &Stamp,
    parts: &RosterParts,
) -> Result<(), StoreError> {
    sqlx::query(&MERGE_SQL)
        .bind(username)
        .bind(contact)
        .bind(&r.name)
        .bind(&r.subscription)
        .bind(r.ask_out)
        .bind(r.approved)
        .bind(&r.groups)
        .bind(stamp.hlc)
        .bind(&stamp.dc)
        .bind(parts.meta.hlc)
        .bind(&parts.meta.dc)
        .bind(parts.to.hlc)
        .bind(&parts.to.dc)
        .bind(parts.from.hlc)
        .bind(&parts.from.dc)
        .execute(conn)
        .await?;
    Ok(())
}
