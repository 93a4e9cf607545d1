//! Roster items (RFC 6121 §2) and the per-user roster version.

use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use meerkat_wire::data::{RosterParts, Stamp};

use crate::{Change, Outcome, Store, StoreError};

/// Subscription state of a roster item (RFC 6121 §2.1.2.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subscription {
    None,
    To,
    From,
    Both,
}

impl Subscription {
    pub fn as_str(self) -> &'static str {
        match self {
            Subscription::None => "none",
            Subscription::To => "to",
            Subscription::From => "from",
            Subscription::Both => "both",
        }
    }

    pub fn parse(s: &str) -> Option<Subscription> {
        match s {
            "none" => Some(Subscription::None),
            "to" => Some(Subscription::To),
            "from" => Some(Subscription::From),
            "both" => Some(Subscription::Both),
            _ => None,
        }
    }
}

/// One contact in a user's roster. `ask_out`: we asked the contact for a subscription
/// (ask='subscribe'); `approved`: subscription pre-approved (RFC 6121 §3.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RosterItem {
    pub jid: String,
    pub name: Option<String>,
    pub subscription: Subscription,
    pub ask_out: bool,
    pub approved: bool,
    pub groups: Vec<String>,
}

const COLUMNS: &str = "contact, name, subscription, ask_out, approved, groups";

fn item(row: &PgRow) -> Result<RosterItem, StoreError> {
    let sub: String = row.try_get("subscription")?;
    Ok(RosterItem {
        jid: row.try_get("contact")?,
        name: row.try_get("name")?,
        subscription: Subscription::parse(&sub)
            .ok_or_else(|| StoreError::Corrupt(format!("subscription {sub:?}")))?,
        ask_out: row.try_get("ask_out")?,
        approved: row.try_get("approved")?,
        groups: row.try_get("groups")?,
    })
}

impl Store {
    /// The current roster version and every item (version 0 and nothing for an unknown user).
    pub async fn roster(&self, username: &str) -> Result<(i64, Vec<RosterItem>), StoreError> {
        // One snapshot, so the version matches the items.
        let (mut tx, version) = self.roster_snapshot(username).await?;
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM roster_items WHERE username = $1 ORDER BY contact"
        ))
        .bind(username)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let items = rows.iter().map(item).collect::<Result<_, _>>()?;
        Ok((version, items))
    }

    /// A repeatable-read transaction and the roster version it sees (0 for an unknown user).
    async fn roster_snapshot(
        &self,
        username: &str,
    ) -> Result<(sqlx::Transaction<'static, sqlx::Postgres>, i64), StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .execute(&mut *tx)
            .await?;
        let version: Option<i64> =
            sqlx::query_scalar("SELECT roster_version FROM accounts WHERE username = $1")
                .bind(username)
                .fetch_optional(&mut *tx)
                .await?;
        Ok((tx, version.unwrap_or(0)))
    }

    /// The roster version and `contact`'s item, read in one snapshot, so that the version
    /// names that state of the item (version 0 and nothing for an unknown user).
    pub async fn roster_item_versioned(
        &self,
        username: &str,
        contact: &str,
    ) -> Result<(i64, Option<RosterItem>), StoreError> {
        let (mut tx, version) = self.roster_snapshot(username).await?;
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM roster_items WHERE username = $1 AND contact = $2"
        ))
        .bind(username)
        .bind(contact)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((version, row.as_ref().map(item).transpose()?))
    }

    pub async fn roster_item(
        &self,
        username: &str,
        contact: &str,
    ) -> Result<Option<RosterItem>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM roster_items WHERE username = $1 AND contact = $2"
        ))
        .bind(username)
        .bind(contact)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(item).transpose()
    }

    /// Inserts or replaces the item; returns the new roster version.
    pub async fn put_roster_item(
        &self,
        username: &str,
        item: &RosterItem,
    ) -> Result<i64, StoreError> {
        match self
            .write(&Change::PutRosterItem {
                username: username.to_owned(),
                item: item.clone(),
            })
            .await?
        {
            Outcome::RosterVersion(Some(v)) => Ok(v),
            other => unreachable!("put_roster_item produced {other:?}"),
        }
    }

    /// Removes the item; the new roster version if it existed.
    pub async fn remove_roster_item(
        &self,
        username: &str,
        contact: &str,
    ) -> Result<Option<i64>, StoreError> {
        let change = Change::RemoveRosterItem {
            username: username.to_owned(),
            contact: contact.to_owned(),
        };
        match self.write(&change).await? {
            Outcome::RosterVersion(v) => Ok(v),
            other => unreachable!("remove_roster_item produced {other:?}"),
        }
    }
}

/// Bumps the roster version (locking the account row, which serialises roster writes).
async fn bump(conn: &mut PgConnection, username: &str) -> Result<i64, StoreError> {
    let version: Option<i64> =
        sqlx::query_scalar("UPDATE accounts SET roster_version = roster_version + 1 WHERE username = $1 RETURNING roster_version")
            .bind(username)
            .fetch_optional(conn)
            .await?;
    version.ok_or(StoreError::NoSuchAccount)
}

/// The upsert of [`put`]: each part's stamp moves to the write's where the part changed.
static PUT_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let [meta, to, from] = crate::replication::parts_changed("roster_items", "EXCLUDED");
    let moved = |changed: &str, part: &str| {
        format!(
            "{part}_hlc = CASE WHEN {changed} THEN EXCLUDED.hlc ELSE roster_items.{part}_hlc END, \
             {part}_dc = CASE WHEN {changed} THEN EXCLUDED.hlc_dc ELSE roster_items.{part}_dc END"
        )
    };
    format!(
        "INSERT INTO roster_items (username, contact, name, subscription, ask_out, approved, groups, \
         version, hlc, hlc_dc, meta_hlc, meta_dc, to_hlc, to_dc, from_hlc, from_dc) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $9, $10, $9, $10, $9, $10) \
         ON CONFLICT (username, contact) DO UPDATE SET name = EXCLUDED.name, \
         subscription = EXCLUDED.subscription, ask_out = EXCLUDED.ask_out, \
         approved = EXCLUDED.approved, groups = EXCLUDED.groups, version = EXCLUDED.version, \
         hlc = EXCLUDED.hlc, hlc_dc = EXCLUDED.hlc_dc, {}, {}, {} \
         RETURNING meta_hlc, meta_dc, to_hlc, to_dc, from_hlc, from_dc",
        moved(&meta, "meta"),
        moved(&to, "to"),
        moved(&from, "from"),
    )
});

/// Writes an item; the stamp of each of its parts (name and groups, the "to" half, the "from"
/// half) becomes `stamp` where the part changed and stays where it did not (what a replicated
/// record of the item carries, for the other DCs to merge part by part).
pub(crate) async fn put(
    conn: &mut PgConnection,
    username: &str,
    it: &RosterItem,
    stamp: &Stamp,
) -> Result<(i64, RosterParts), StoreError> {
    let version = bump(conn, username).await?;
    let row = sqlx::query(&PUT_SQL)
        .bind(username)
        .bind(&it.jid)
        .bind(&it.name)
        .bind(it.subscription.as_str())
        .bind(it.ask_out)
        .bind(it.approved)
        .bind(&it.groups)
        .bind(version)
        .bind(stamp.hlc)
        .bind(&stamp.dc)
        .fetch_one(conn)
        .await?;
    Ok((version, crate::replication::parts_of(&row)?))
}

pub(crate) async fn remove(
    conn: &mut PgConnection,
    username: &str,
    contact: &str,
) -> Result<Option<i64>, StoreError> {
    let deleted = sqlx::query("DELETE FROM roster_items WHERE username = $1 AND contact = $2")
        .bind(username)
        .bind(contact)
        .execute(&mut *conn)
        .await?;
    if deleted.rows_affected() == 0 {
        return Ok(None);
    }
    bump(conn, username).await.map(Some)
}
