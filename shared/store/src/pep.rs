//! PEP (XEP-0163, issue 17): an account's pubsub nodes and their items, and the verified
//! entity capabilities cache (XEP-0115). Three replicated kinds of the personal-document
//! shape (`replication/docs.rs`, migration 0007). What a node's configuration means is the
//! router's (the body is its JSON); the store keeps the counts the router asks it to keep,
//! under the account row lock, so concurrent writes cannot pass them and a refused write
//! leaves nothing behind.

use meerkat_wire::data::{Record, Stamp};
use sqlx::{PgConnection, Row};

use crate::replication::{CAPS, PEP_ITEM, PEP_NODE};
use crate::{accounts, Change, Outcome, Store, StoreError};

/// A mutation of an account's PEP service (one [`Change::Pep`]).
#[derive(Clone, Debug)]
pub enum PepChange {
    /// Publish `items` (id, `<item/>` XML) to `node`, writing its configuration `config`
    /// (creating the node when absent: [`StoreError::Full`] if the account already has
    /// `max_nodes`), then keep only the node's `max_items` newest items. `replace`: first
    /// remove the node's items not among `items` (the node becomes exactly them: XEP-0411's
    /// bookmarks written through private storage).
    Publish {
        node: String,
        config: String,
        items: Vec<(String, String)>,
        max_items: u32,
        max_nodes: u32,
        replace: bool,
    },
    /// Remove items by id; [`Outcome::Existed`] tells whether any was there.
    Retract { node: String, ids: Vec<String> },
    /// Remove every item of the node.
    Purge { node: String },
    /// Remove the node and its items.
    Delete { node: String },
    /// Replace an existing node's configuration and keep its `max_items` newest items
    /// ([`Outcome::Existed`] false: no such node, nothing written).
    Configure {
        node: String,
        config: String,
        max_items: u32,
    },
}

/// One stored item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PepItem {
    pub id: String,
    /// The `<item/>` element as published.
    pub body: String,
}

/// The newest item of a node, for notifications of the last published item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastPublished {
    pub username: String,
    pub node: String,
    /// The node's configuration.
    pub config: String,
    pub item: String,
}

fn item_key(node: &str, id: &str) -> String {
    format!("{node}\n{id}")
}

impl Store {
    /// Applies one change of `username`'s PEP service.
    pub async fn pep(&self, username: &str, change: PepChange) -> Result<Outcome, StoreError> {
        self.write(&Change::Pep {
            username: username.to_owned(),
            change,
        })
        .await
    }

    /// A node's configuration, if the node exists.
    pub async fn pep_node(&self, username: &str, node: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT body FROM pep_nodes WHERE username = $1 AND key = $2")
                .bind(username)
                .bind(node)
                .fetch_optional(self.pool())
                .await?,
        )
    }

    /// Every node of the account (name, configuration), by name.
    pub async fn pep_nodes(&self, username: &str) -> Result<Vec<(String, String)>, StoreError> {
        Ok(
            sqlx::query_as("SELECT key, body FROM pep_nodes WHERE username = $1 ORDER BY key")
                .bind(username)
                .fetch_all(self.pool())
                .await?,
        )
    }

    /// Items of a node, oldest first: those named by `ids` (in any order; unknown ids are
    /// skipped), else the `max` newest (every item when `None`).
    pub async fn pep_items(
        &self,
        username: &str,
        node: &str,
        ids: Option<&[String]>,
        max: Option<u32>,
    ) -> Result<Vec<PepItem>, StoreError> {
        let rows = match ids {
            Some(ids) => {
                let keys: Vec<String> = ids.iter().map(|id| item_key(node, id)).collect();
                sqlx::query(
                    "SELECT key, body FROM pep_items WHERE username = $1 AND key = ANY($2) \
                     ORDER BY hlc DESC, hlc_dc DESC, key DESC",
                )
                .bind(username)
                .bind(&keys)
                .fetch_all(self.pool())
                .await?
            }
            None => {
                sqlx::query(
                    "SELECT key, body FROM pep_items WHERE username = $1 AND node = $2 \
                     ORDER BY hlc DESC, hlc_dc DESC, key DESC LIMIT $3",
                )
                .bind(username)
                .bind(node)
                .bind(max.map_or(i64::MAX, i64::from))
                .fetch_all(self.pool())
                .await?
            }
        };
        let mut items = rows
            .iter()
            .map(|row| {
                let key: String = row.try_get("key")?;
                Ok(PepItem {
                    id: key
                        .split_once('\n')
                        .map(|(_, id)| id.to_owned())
                        .unwrap_or(key),
                    body: row.try_get("body")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        items.reverse();
        Ok(items)
    }

    /// The newest item of every node of each of `usernames` (nodes without items have none).
    pub async fn pep_last_published(
        &self,
        usernames: &[String],
    ) -> Result<Vec<LastPublished>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT ON (i.username, i.node) i.username, i.node, n.body AS config, \
             i.body FROM pep_items i JOIN pep_nodes n ON n.username = i.username AND n.key = i.node \
             WHERE i.username = ANY($1) \
             ORDER BY i.username, i.node, i.hlc DESC, i.hlc_dc DESC, i.key DESC",
        )
        .bind(usernames)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(LastPublished {
                    username: row.try_get("username")?,
                    node: row.try_get("node")?,
                    config: row.try_get("config")?,
                    item: row.try_get("body")?,
                })
            })
            .collect()
    }

    /// The verified features of a caps hash (`hash\nver`), if some DC verified it.
    pub async fn caps(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT body FROM pep_caps WHERE username = '' AND key = $1")
                .bind(key)
                .fetch_optional(self.pool())
                .await?,
        )
    }

    /// Records a verified caps hash; replicated like user data.
    pub async fn put_caps(&self, key: &str, features: &str) -> Result<(), StoreError> {
        self.write(&Change::PutCaps {
            key: key.to_owned(),
            features: features.to_owned(),
        })
        .await
        .map(|_| ())
    }
}

/// Applies a PEP change under the account row lock, returning its records.
pub(crate) async fn apply(
    conn: &mut PgConnection,
    username: &str,
    change: &PepChange,
    stamp: &Stamp,
) -> Result<(Outcome, Vec<Record>), StoreError> {
    if !accounts::lock(conn, username).await? {
        return Err(StoreError::NoSuchAccount);
    }
    let mut records = Vec::new();
    let outcome = match change {
        PepChange::Publish {
            node,
            config,
            items,
            max_items,
            max_nodes,
            replace,
        } => {
            if *replace {
                let keep: Vec<&str> = items.iter().map(|(id, _)| id.as_str()).collect();
                remove_items_but(conn, username, node, &keep, stamp, &mut records).await?;
            }
            if !node_exists(conn, username, node).await? {
                let count: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM pep_nodes WHERE username = $1")
                        .bind(username)
                        .fetch_one(&mut *conn)
                        .await?;
                if count >= i64::from(*max_nodes) {
                    return Err(StoreError::Full);
                }
                // Items left of an earlier life of the node (published at another DC that had
                // not seen its deletion) do not come back with the new node.
                remove_items(conn, username, node, None, stamp, &mut records).await?;
            }
            // Every publish rewrites the node: between a deletion at one DC and a publish at
            // another, the later one decides whether the node exists.
            records.push(put(conn, &PEP_NODE, username, node, Some(config), stamp).await?);
            for (id, body) in items {
                let key = item_key(node, id);
                records.push(put(conn, &PEP_ITEM, username, &key, Some(body), stamp).await?);
            }
            trim(conn, username, node, *max_items, stamp, &mut records).await?;
            Outcome::Done
        }
        PepChange::Retract { node, ids } => {
            let before = records.len();
            remove_items(conn, username, node, Some(ids), stamp, &mut records).await?;
            Outcome::Existed(records.len() > before)
        }
        PepChange::Purge { node } => {
            remove_items(conn, username, node, None, stamp, &mut records).await?;
            Outcome::Existed(node_exists(conn, username, node).await?)
        }
        PepChange::Delete { node } => {
            let existed = node_exists(conn, username, node).await?;
            remove_items(conn, username, node, None, stamp, &mut records).await?;
            if existed {
                records.push(put(conn, &PEP_NODE, username, node, None, stamp).await?);
            }
            Outcome::Existed(existed)
        }
        PepChange::Configure {
            node,
            config,
            max_items,
        } => {
            if !node_exists(conn, username, node).await? {
                return Ok((Outcome::Existed(false), records));
            }
            records.push(put(conn, &PEP_NODE, username, node, Some(config), stamp).await?);
            trim(conn, username, node, *max_items, stamp, &mut records).await?;
            Outcome::Existed(true)
        }
    };
    Ok((outcome, records))
}

/// Records a verified caps hash (no account owns it).
pub(crate) async fn put_caps(
    conn: &mut PgConnection,
    key: &str,
    features: &str,
    stamp: &Stamp,
) -> Result<Record, StoreError> {
    let rec = CAPS.record_of("", key, Some(features), stamp);
    CAPS.write_local(conn, &rec).await?;
    Ok(rec)
}

async fn put(
    conn: &mut PgConnection,
    doc: &crate::replication::Doc,
    username: &str,
    key: &str,
    body: Option<&str>,
    stamp: &Stamp,
) -> Result<Record, StoreError> {
    let rec = doc.record_of(username, key, body, stamp);
    // A local write always wins: the clock never runs behind what this DC has seen.
    doc.write_local(conn, &rec).await?;
    Ok(rec)
}

async fn node_exists(
    conn: &mut PgConnection,
    username: &str,
    node: &str,
) -> Result<bool, StoreError> {
    Ok(
        sqlx::query("SELECT 1 FROM pep_nodes WHERE username = $1 AND key = $2")
            .bind(username)
            .bind(node)
            .fetch_optional(conn)
            .await?
            .is_some(),
    )
}

/// Deletes (with tombstones) the node's items named by `ids`, or all of them.
async fn remove_items(
    conn: &mut PgConnection,
    username: &str,
    node: &str,
    ids: Option<&[String]>,
    stamp: &Stamp,
    records: &mut Vec<Record>,
) -> Result<(), StoreError> {
    let keys: Vec<String> = match ids {
        Some(ids) => {
            let wanted: Vec<String> = ids.iter().map(|id| item_key(node, id)).collect();
            sqlx::query_scalar(
                "SELECT key FROM pep_items WHERE username = $1 AND key = ANY($2) ORDER BY key",
            )
            .bind(username)
            .bind(&wanted)
            .fetch_all(&mut *conn)
            .await?
        }
        None => {
            sqlx::query_scalar(
                "SELECT key FROM pep_items WHERE username = $1 AND node = $2 ORDER BY key",
            )
            .bind(username)
            .bind(node)
            .fetch_all(&mut *conn)
            .await?
        }
    };
    for key in keys {
        records.push(put(conn, &PEP_ITEM, username, &key, None, stamp).await?);
    }
    Ok(())
}

/// Deletes (with tombstones) the node's items whose ids are not in `keep`.
async fn remove_items_but(
    conn: &mut PgConnection,
    username: &str,
    node: &str,
    keep: &[&str],
    stamp: &Stamp,
    records: &mut Vec<Record>,
) -> Result<(), StoreError> {
    let keep: Vec<String> = keep.iter().map(|id| item_key(node, id)).collect();
    let gone: Vec<String> = sqlx::query_scalar(
        "SELECT key FROM pep_items WHERE username = $1 AND node = $2 AND NOT (key = ANY($3)) \
         ORDER BY key",
    )
    .bind(username)
    .bind(node)
    .bind(&keep)
    .fetch_all(&mut *conn)
    .await?;
    for key in gone {
        records.push(put(conn, &PEP_ITEM, username, &key, None, stamp).await?);
    }
    Ok(())
}

/// Deletes the node's items beyond its `max` newest.
async fn trim(
    conn: &mut PgConnection,
    username: &str,
    node: &str,
    max: u32,
    stamp: &Stamp,
    records: &mut Vec<Record>,
) -> Result<(), StoreError> {
    let old: Vec<String> = sqlx::query_scalar(
        "SELECT key FROM pep_items WHERE username = $1 AND node = $2 \
         ORDER BY hlc DESC, hlc_dc DESC, key DESC OFFSET $3",
    )
    .bind(username)
    .bind(node)
    .bind(i64::from(max))
    .fetch_all(&mut *conn)
    .await?;
    for key in old {
        records.push(put(conn, &PEP_ITEM, username, &key, None, stamp).await?);
    }
    Ok(())
}
