//! Persistent-data replication, the database side (docs/replication.md): the DC's clock, the
//! outbox every write appends to, applying other DCs' records (the larger stamp wins), full
//! copies, and the bookkeeping of what each DC has applied.

use std::collections::BTreeMap;

use meerkat_wire::data::{
    AccountState, Applied, OfflineState, Record, RequestState, RosterState, ScramKeys, Stamp,
};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::{Store, StoreError};

/// The DC's clock, read and advanced at the start of a write transaction (which then holds
/// the clock row's lock until it commits).
pub(crate) async fn tick(conn: &mut PgConnection) -> Result<Stamp, StoreError> {
    let row = sqlx::query(
        "UPDATE replication_clock SET hlc = GREATEST(hlc + 1, \
         (floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) << 16) \
         RETURNING hlc, coalesce(dc, '') AS dc",
    )
    .fetch_one(conn)
    .await?;
    Ok(Stamp {
        hlc: row.try_get("hlc")?,
        dc: row.try_get("dc")?,
    })
}

/// Appends the transaction's records to the outbox with the next sequence numbers, and wakes
/// the replicator (the notification is delivered at commit). Returns the database epoch and
/// the last sequence used, if any.
pub(crate) async fn append(
    conn: &mut PgConnection,
    records: &[Record],
) -> Result<Option<(String, i64)>, StoreError> {
    if records.is_empty() {
        return Ok(None);
    }
    let n = records.len() as i64;
    let row = sqlx::query("UPDATE replication_clock SET seq = seq + $1 RETURNING seq, epoch")
        .bind(n)
        .fetch_one(&mut *conn)
        .await?;
    let last: i64 = row.try_get("seq")?;
    let epoch: String = row.try_get("epoch")?;
    let first = last - n + 1;
    let seqs: Vec<i64> = (first..=last).collect();
    let bodies: Vec<serde_json::Value> = records
        .iter()
        .map(|r| serde_json::to_value(r).unwrap_or_default())
        .collect();
    sqlx::query("INSERT INTO outbox (seq, record) SELECT * FROM unnest($1::bigint[], $2::jsonb[])")
        .bind(&seqs)
        .bind(&bodies)
        .execute(&mut *conn)
        .await?;
    sqlx::query("SELECT pg_notify('meerkat_outbox', $1)")
        .bind(last.to_string())
        .execute(conn)
        .await?;
    Ok(Some((epoch, last)))
}

/// The key of an item in `tombstones`.
fn key2(username: &str, contact: &str) -> String {
    format!("{username}\n{contact}")
}

async fn tombstone(
    conn: &mut PgConnection,
    kind: &str,
    key: &str,
    username: &str,
    stamp: &Stamp,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO tombstones (kind, key, username, hlc, hlc_dc) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (kind, key) DO UPDATE SET hlc = EXCLUDED.hlc, hlc_dc = EXCLUDED.hlc_dc, \
         deleted_at = now()",
    )
    .bind(kind)
    .bind(key)
    .bind(username)
    .bind(stamp.hlc)
    .bind(&stamp.dc)
    .execute(conn)
    .await?;
    Ok(())
}

async fn clear_tombstone(conn: &mut PgConnection, kind: &str, key: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM tombstones WHERE kind = $1 AND key = $2")
        .bind(kind)
        .bind(key)
        .execute(conn)
        .await?;
    Ok(())
}

fn stamp_of(row: &PgRow) -> Result<Stamp, StoreError> {
    Ok(Stamp {
        hlc: row.try_get("hlc")?,
        dc: row.try_get("hlc_dc")?,
    })
}

/// The stamp of the item now: its row's, else its tombstone's.
async fn current_stamp(
    conn: &mut PgConnection,
    table_query: &str,
    binds: &[&str],
    kind: &str,
    key: &str,
) -> Result<Option<Stamp>, StoreError> {
    let mut q = sqlx::query(table_query);
    for b in binds {
        q = q.bind(*b);
    }
    if let Some(row) = q.fetch_optional(&mut *conn).await? {
        return Ok(Some(stamp_of(&row)?));
    }
    let row = sqlx::query("SELECT hlc, hlc_dc FROM tombstones WHERE kind = $1 AND key = $2")
        .bind(kind)
        .bind(key)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(stamp_of).transpose()
}

// ---- The local side: records of local writes, built from the rows as written.

/// Removes what an account of this name owned before `born` (an earlier account's data).
pub(crate) async fn drop_older_data(
    conn: &mut PgConnection,
    username: &str,
    before: &Stamp,
) -> Result<(), StoreError> {
    for table in ["roster_items", "subscription_requests", "offline_messages"] {
        sqlx::query(&format!(
            "DELETE FROM {table} WHERE username = $1 AND (hlc, hlc_dc) < ($2, $3)"
        ))
        .bind(username)
        .bind(before.hlc)
        .bind(&before.dc)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The account row's state as a record.
pub(crate) async fn account_record(
    conn: &mut PgConnection,
    username: &str,
) -> Result<Record, StoreError> {
    let row = sqlx::query(
        "SELECT hlc, hlc_dc, born, born_dc, sha1_salt, sha1_iterations, sha1_stored_key, \
         sha1_server_key, sha256_salt, sha256_iterations, sha256_stored_key, sha256_server_key \
         FROM accounts WHERE username = $1",
    )
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

pub(crate) async fn account_deleted(
    conn: &mut PgConnection,
    username: &str,
    stamp: &Stamp,
) -> Result<Record, StoreError> {
    drop_older_data(
        conn,
        username,
        &Stamp {
            hlc: i64::MAX,
            dc: String::new(),
        },
    )
    .await?;
    tombstone(conn, "account", username, username, stamp).await?;
    Ok(Record::Account {
        username: username.to_owned(),
        stamp: stamp.clone(),
        state: None,
    })
}

pub(crate) async fn account_created(
    conn: &mut PgConnection,
    username: &str,
    born: &Stamp,
) -> Result<(), StoreError> {
    drop_older_data(conn, username, born).await?;
    clear_tombstone(conn, "account", username).await
}

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
    clear_tombstone(conn, "roster", &key2(username, contact)).await
}

pub(crate) async fn roster_removed(
    conn: &mut PgConnection,
    username: &str,
    contact: &str,
    stamp: &Stamp,
) -> Result<Record, StoreError> {
    tombstone(conn, "roster", &key2(username, contact), username, stamp).await?;
    Ok(Record::Roster {
        username: username.to_owned(),
        contact: contact.to_owned(),
        stamp: stamp.clone(),
        state: None,
    })
}

pub(crate) async fn request_put(
    conn: &mut PgConnection,
    username: &str,
    contact: &str,
    stanza: &str,
    since: i64,
    stamp: &Stamp,
) -> Result<Record, StoreError> {
    clear_tombstone(conn, "request", &key2(username, contact)).await?;
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
    tombstone(conn, "request", &key2(username, contact), username, stamp).await?;
    Ok(Record::Request {
        username: username.to_owned(),
        contact: contact.to_owned(),
        stamp: stamp.clone(),
        state: None,
    })
}

pub(crate) async fn offline_removed(
    conn: &mut PgConnection,
    username: &str,
    id: Uuid,
    stamp: &Stamp,
) -> Result<Record, StoreError> {
    tombstone(conn, "offline", &id.to_string(), username, stamp).await?;
    Ok(Record::Offline {
        username: username.to_owned(),
        id,
        stamp: stamp.clone(),
        state: None,
    })
}

// ---- The remote side.

/// What [`Store::apply_remote`] did with one change of another DC's stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// Applied (or found older than what is here, which is the same: the seq is consumed).
    Applied,
    /// Already applied.
    Duplicate,
    /// Not the next one: changes `expected..seq` are missing. Nothing was applied.
    Gap { expected: i64 },
    /// From an earlier life of the origin's database than the one followed here.
    Stale,
}

/// Whether `stamp` beats what is here for the item (and the account allows it).
async fn newer(conn: &mut PgConnection, rec: &Record) -> Result<bool, StoreError> {
    let stamp = rec.stamp();
    let username = rec.username();
    let here = match rec {
        Record::Account { .. } => {
            current_stamp(
                conn,
                "SELECT hlc, hlc_dc FROM accounts WHERE username = $1",
                &[username],
                "account",
                username,
            )
            .await?
        }
        Record::Roster { contact, .. } => {
            current_stamp(
                conn,
                "SELECT hlc, hlc_dc FROM roster_items WHERE username = $1 AND contact = $2",
                &[username, contact],
                "roster",
                &key2(username, contact),
            )
            .await?
        }
        Record::Request { contact, .. } => current_stamp(
            conn,
            "SELECT hlc, hlc_dc FROM subscription_requests WHERE username = $1 AND contact = $2",
            &[username, contact],
            "request",
            &key2(username, contact),
        )
        .await?,
        Record::Offline { id, .. } => {
            let id = id.to_string();
            current_stamp(
                conn,
                "SELECT hlc, hlc_dc FROM offline_messages WHERE uid = $1::uuid",
                &[&id],
                "offline",
                &id,
            )
            .await?
        }
    };
    if here.as_ref().is_some_and(|h| h >= stamp) {
        return Ok(false);
    }
    if matches!(rec, Record::Account { .. }) {
        return Ok(true);
    }
    // A user's item written before their account was (re)created or after... deleted: an
    // item older than the account's birth belongs to an earlier account of that name; one
    // older than the account's deletion went with it.
    let born =
        sqlx::query("SELECT born AS hlc, born_dc AS hlc_dc FROM accounts WHERE username = $1")
            .bind(username)
            .fetch_optional(&mut *conn)
            .await?;
    if let Some(row) = born {
        return Ok(stamp_of(&row)? <= *stamp);
    }
    let deleted =
        sqlx::query("SELECT hlc, hlc_dc FROM tombstones WHERE kind = 'account' AND key = $1")
            .bind(username)
            .fetch_optional(&mut *conn)
            .await?;
    match deleted {
        Some(row) => Ok(stamp_of(&row)? < *stamp),
        None => Ok(true),
    }
}

/// Applies one record if its stamp wins. Returns whether anything changed.
pub(crate) async fn apply_record(
    conn: &mut PgConnection,
    rec: &Record,
) -> Result<bool, StoreError> {
    if !newer(conn, rec).await? {
        return Ok(false);
    }
    let stamp = rec.stamp();
    match rec {
        Record::Account {
            username,
            state: Some(a),
            ..
        } => {
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
            account_created(conn, username, &a.born).await?;
        }
        Record::Account {
            username,
            state: None,
            ..
        } => {
            sqlx::query("DELETE FROM accounts WHERE username = $1")
                .bind(username)
                .execute(&mut *conn)
                .await?;
            drop_older_data(conn, username, stamp).await?;
            tombstone(conn, "account", username, username, stamp).await?;
        }
        Record::Roster {
            username,
            contact,
            state,
            ..
        } => {
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
                    clear_tombstone(conn, "roster", &key2(username, contact)).await?;
                }
                None => {
                    sqlx::query("DELETE FROM roster_items WHERE username = $1 AND contact = $2")
                        .bind(username)
                        .bind(contact)
                        .execute(&mut *conn)
                        .await?;
                    tombstone(conn, "roster", &key2(username, contact), username, stamp).await?;
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
            .execute(&mut *conn)
            .await?;
        }
        Record::Request {
            username,
            contact,
            state,
            ..
        } => match state {
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
                clear_tombstone(conn, "request", &key2(username, contact)).await?;
            }
            None => {
                sqlx::query(
                    "DELETE FROM subscription_requests WHERE username = $1 AND contact = $2",
                )
                .bind(username)
                .bind(contact)
                .execute(&mut *conn)
                .await?;
                tombstone(conn, "request", &key2(username, contact), username, stamp).await?;
            }
        },
        Record::Offline {
            username,
            id,
            state,
            ..
        } => match state {
            Some(m) => {
                sqlx::query(
                    "INSERT INTO offline_messages (username, stanza, stored_at, uid, hlc, hlc_dc) \
                     VALUES ($1, $2, timestamptz 'epoch' + $3 * interval '1 microsecond', $4, $5, $6) \
                     ON CONFLICT (uid) DO UPDATE SET stanza = EXCLUDED.stanza, \
                     hlc = EXCLUDED.hlc, hlc_dc = EXCLUDED.hlc_dc",
                )
                .bind(username)
                .bind(&m.stanza)
                .bind(m.stored_at)
                .bind(id)
                .bind(stamp.hlc)
                .bind(&stamp.dc)
                .execute(&mut *conn)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM offline_messages WHERE uid = $1")
                    .bind(id)
                    .execute(&mut *conn)
                    .await?;
                tombstone(conn, "offline", &id.to_string(), username, stamp).await?;
            }
        },
    }
    // The clock never runs behind what it has seen.
    sqlx::query("UPDATE replication_clock SET hlc = GREATEST(hlc, $1)")
        .bind(stamp.hlc)
        .execute(conn)
        .await?;
    Ok(true)
}

/// This DC's identity and outbox head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub dc: String,
    pub epoch: String,
    pub head: i64,
}

/// An outbox entry.
#[derive(Clone, Debug)]
pub struct OutboxEntry {
    pub seq: i64,
    pub record: Record,
    /// µs since the Unix epoch.
    pub written_at: i64,
}

/// What this DC knows of another: how far it has applied the other's stream, and what the
/// other last reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerState {
    pub dc: String,
    /// Of the peer's stream, applied here.
    pub applied: Option<Applied>,
    /// µs since the Unix epoch of the last apply here.
    pub applied_at: Option<i64>,
    /// The peer's outbox head as it last reported it.
    pub head: Option<Applied>,
    /// How far the peer has applied this DC's stream, as it last reported.
    pub acked: Option<Applied>,
    /// µs since the Unix epoch of the peer's last report.
    pub seen_at: Option<i64>,
}

impl Store {
    /// Marks the database as `dc`'s. A database already claimed by another DC is refused:
    /// one database per DC.
    pub async fn claim_dc(&self, dc: &str) -> Result<(), StoreError> {
        let owner: Option<String> =
            sqlx::query_scalar("UPDATE replication_clock SET dc = coalesce(dc, $1) RETURNING dc")
                .bind(dc)
                .fetch_one(self.pool())
                .await?;
        match owner {
            Some(o) if o != dc => Err(StoreError::Corrupt(format!(
                "this database belongs to DC {o:?}, not {dc:?}"
            ))),
            _ => Ok(()),
        }
    }

    pub async fn identity(&self) -> Result<Identity, StoreError> {
        let row = sqlx::query("SELECT coalesce(dc, '') AS dc, epoch, seq FROM replication_clock")
            .fetch_one(self.pool())
            .await?;
        Ok(Identity {
            dc: row.try_get("dc")?,
            epoch: row.try_get("epoch")?,
            head: row.try_get("seq")?,
        })
    }

    /// Outbox entries after `after`, in order, at most `limit`.
    pub async fn outbox_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, record, (extract(epoch FROM written_at) * 1000000)::bigint AS written_at \
             FROM outbox WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let body: serde_json::Value = r.try_get("record")?;
                Ok(OutboxEntry {
                    seq: r.try_get("seq")?,
                    record: serde_json::from_value(body)
                        .map_err(|e| StoreError::Corrupt(format!("outbox record: {e}")))?,
                    written_at: r.try_get("written_at")?,
                })
            })
            .collect()
    }

    /// The oldest sequence still in the outbox (head + 1 when it is empty).
    pub async fn outbox_first(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT coalesce((SELECT min(seq) FROM outbox), (SELECT seq + 1 FROM replication_clock))",
        )
        .fetch_one(self.pool())
        .await?)
    }

    /// Applies change `seq` of `origin`'s stream (database life `epoch`), in one transaction
    /// with the bookkeeping, so a crash cannot apply it without recording it or the reverse.
    pub async fn apply_remote(
        &self,
        origin: &str,
        epoch: &str,
        seq: i64,
        record: &Record,
    ) -> Result<ApplyOutcome, StoreError> {
        let mut tx = self.pool().begin().await?;
        // The clock row first, like every write (one lock order, no deadlock).
        sqlx::query("SELECT 1 FROM replication_clock FOR UPDATE")
            .execute(&mut *tx)
            .await?;
        let known = sqlx::query("SELECT epoch, seq FROM replication_applied WHERE origin = $1")
            .bind(origin)
            .fetch_optional(&mut *tx)
            .await?;
        let last = match known {
            Some(row) => {
                let known_epoch: String = row.try_get("epoch")?;
                let known_seq: i64 = row.try_get("seq")?;
                if epoch < known_epoch.as_str() {
                    return Ok(ApplyOutcome::Stale);
                }
                if epoch > known_epoch.as_str() {
                    0
                } else {
                    known_seq
                }
            }
            None => 0,
        };
        if seq <= last {
            return Ok(ApplyOutcome::Duplicate);
        }
        if seq > last + 1 {
            return Ok(ApplyOutcome::Gap { expected: last + 1 });
        }
        apply_record(&mut tx, record).await?;
        set_applied(&mut tx, origin, epoch, seq).await?;
        tx.commit().await?;
        Ok(ApplyOutcome::Applied)
    }

    /// Applies records of a full copy (no sequence bookkeeping; see [`Store::copy_done`]).
    pub async fn apply_copy(&self, records: &[Record]) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("SELECT 1 FROM replication_clock FOR UPDATE")
            .execute(&mut *tx)
            .await?;
        for r in records {
            apply_record(&mut tx, r).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A full copy has been applied: this DC now holds every origin's stream up to
    /// `positions` (never moves a position back).
    pub async fn copy_done(&self, positions: &BTreeMap<String, Applied>) -> Result<(), StoreError> {
        let own = self.identity().await?.dc;
        let mut tx = self.pool().begin().await?;
        for (origin, a) in positions {
            if *origin == own {
                continue;
            }
            let known = sqlx::query("SELECT epoch, seq FROM replication_applied WHERE origin = $1")
                .bind(origin)
                .fetch_optional(&mut *tx)
                .await?;
            let ahead = match &known {
                Some(row) => {
                    let e: String = row.try_get("epoch")?;
                    let s: i64 = row.try_get("seq")?;
                    (a.epoch.as_str(), a.seq) > (e.as_str(), s)
                }
                None => true,
            };
            if ahead {
                set_applied(&mut tx, origin, &a.epoch, a.seq).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every item and tombstone, as records, for a full copy.
    pub async fn copy_records(&self) -> Result<Vec<Record>, StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .execute(&mut *tx)
            .await?;
        let mut out = Vec::new();
        let accounts = sqlx::query(
            "SELECT username, hlc, hlc_dc, born, born_dc, sha1_salt, sha1_iterations, \
             sha1_stored_key, sha1_server_key, sha256_salt, sha256_iterations, \
             sha256_stored_key, sha256_server_key FROM accounts",
        )
        .fetch_all(&mut *tx)
        .await?;
        for row in &accounts {
            let username: String = row.try_get("username")?;
            out.push(account_from_row(row, &username)?);
        }
        let roster = sqlx::query(
            "SELECT username, contact, name, subscription, ask_out, approved, groups, hlc, hlc_dc \
             FROM roster_items",
        )
        .fetch_all(&mut *tx)
        .await?;
        for row in &roster {
            out.push(Record::Roster {
                username: row.try_get("username")?,
                contact: row.try_get("contact")?,
                stamp: stamp_of(row)?,
                state: Some(RosterState {
                    name: row.try_get("name")?,
                    subscription: row.try_get("subscription")?,
                    ask_out: row.try_get("ask_out")?,
                    approved: row.try_get("approved")?,
                    groups: row.try_get("groups")?,
                }),
            });
        }
        let requests = sqlx::query(
            "SELECT username, contact, stanza, hlc, hlc_dc, \
             (extract(epoch FROM created_at) * 1000000)::bigint AS since FROM subscription_requests",
        )
        .fetch_all(&mut *tx)
        .await?;
        for row in &requests {
            out.push(Record::Request {
                username: row.try_get("username")?,
                contact: row.try_get("contact")?,
                stamp: stamp_of(row)?,
                state: Some(RequestState {
                    stanza: row.try_get("stanza")?,
                    since: row.try_get("since")?,
                }),
            });
        }
        let offline = sqlx::query(
            "SELECT username, uid, stanza, hlc, hlc_dc, \
             (extract(epoch FROM stored_at) * 1000000)::bigint AS stored_at FROM offline_messages",
        )
        .fetch_all(&mut *tx)
        .await?;
        for row in &offline {
            out.push(Record::Offline {
                username: row.try_get("username")?,
                id: row.try_get("uid")?,
                stamp: stamp_of(row)?,
                state: Some(OfflineState {
                    stanza: row.try_get("stanza")?,
                    stored_at: row.try_get("stored_at")?,
                }),
            });
        }
        let tombs = sqlx::query("SELECT kind, key, username, hlc, hlc_dc FROM tombstones")
            .fetch_all(&mut *tx)
            .await?;
        for row in &tombs {
            let kind: String = row.try_get("kind")?;
            let key: String = row.try_get("key")?;
            let username: String = row.try_get("username")?;
            let stamp = stamp_of(row)?;
            let contact = || {
                key.split_once('\n')
                    .map(|(_, c)| c.to_owned())
                    .unwrap_or_default()
            };
            out.push(match kind.as_str() {
                "account" => Record::Account {
                    username,
                    stamp,
                    state: None,
                },
                "roster" => Record::Roster {
                    username,
                    contact: contact(),
                    stamp,
                    state: None,
                },
                "request" => Record::Request {
                    username,
                    contact: contact(),
                    stamp,
                    state: None,
                },
                _ => Record::Offline {
                    username,
                    id: key
                        .parse()
                        .map_err(|_| StoreError::Corrupt(format!("offline tombstone {key:?}")))?,
                    stamp,
                    state: None,
                },
            });
        }
        tx.commit().await?;
        Ok(out)
    }

    /// How far this DC has applied each origin.
    pub async fn applied(&self) -> Result<BTreeMap<String, Applied>, StoreError> {
        let rows = sqlx::query("SELECT origin, epoch, seq FROM replication_applied")
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("origin")?,
                    Applied {
                        epoch: r.try_get("epoch")?,
                        seq: r.try_get("seq")?,
                    },
                ))
            })
            .collect()
    }

    /// Records a peer's status report: its head, and how far it has applied this DC.
    pub async fn peer_reported(
        &self,
        peer: &str,
        head: &Applied,
        acked: &Applied,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO replication_peers (dc, epoch, head, acked_epoch, acked, seen_at) \
             VALUES ($1, $2, $3, $4, $5, now()) ON CONFLICT (dc) DO UPDATE SET \
             epoch = EXCLUDED.epoch, head = EXCLUDED.head, acked_epoch = EXCLUDED.acked_epoch, \
             acked = EXCLUDED.acked, seen_at = now()",
        )
        .bind(peer)
        .bind(&head.epoch)
        .bind(head.seq)
        .bind(&acked.epoch)
        .bind(acked.seq)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Every other DC this database has heard of, with what is known of it.
    pub async fn peers(&self) -> Result<Vec<PeerState>, StoreError> {
        let rows = sqlx::query(
            "SELECT coalesce(a.origin, p.dc) AS dc, a.epoch AS a_epoch, a.seq AS a_seq, \
             (extract(epoch FROM a.applied_at) * 1000000)::bigint AS applied_at, \
             p.epoch AS p_epoch, p.head, p.acked_epoch, p.acked, \
             (extract(epoch FROM p.seen_at) * 1000000)::bigint AS seen_at \
             FROM replication_applied a FULL JOIN replication_peers p ON p.dc = a.origin \
             ORDER BY 1",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let pair = |e: &str, s: &str| -> Result<Option<Applied>, StoreError> {
                    let epoch: Option<String> = r.try_get(e)?;
                    let seq: Option<i64> = r.try_get(s)?;
                    Ok(epoch.zip(seq).map(|(epoch, seq)| Applied { epoch, seq }))
                };
                Ok(PeerState {
                    dc: r.try_get("dc")?,
                    applied: pair("a_epoch", "a_seq")?,
                    applied_at: r.try_get("applied_at")?,
                    head: pair("p_epoch", "head")?,
                    acked: pair("acked_epoch", "acked")?,
                    seen_at: r.try_get("seen_at")?,
                })
            })
            .collect()
    }

    /// Deletes outbox entries every DC in `peers` has applied (per their reports), and
    /// entries older than `retention` whatever the peers say (a DC that far behind gets a
    /// full copy). Tombstones older than the retention go too. Returns the entries deleted.
    pub async fn trim_outbox(
        &self,
        peers: &[String],
        retention: std::time::Duration,
    ) -> Result<u64, StoreError> {
        let me = self.identity().await?;
        let reports = self.peers().await?;
        let mut upto = me.head;
        for p in peers {
            let acked = reports
                .iter()
                .find(|r| &r.dc == p)
                .and_then(|r| r.acked.clone())
                .filter(|a| a.epoch == me.epoch)
                .map_or(0, |a| a.seq);
            upto = upto.min(acked);
        }
        let secs = retention.as_secs_f64();
        let deleted = sqlx::query(
            "DELETE FROM outbox WHERE seq <= $1 OR written_at < now() - $2 * interval '1 second'",
        )
        .bind(upto)
        .bind(secs)
        .execute(self.pool())
        .await?;
        sqlx::query("DELETE FROM tombstones WHERE deleted_at < now() - $1 * interval '1 second'")
            .bind(secs)
            .execute(self.pool())
            .await?;
        Ok(deleted.rows_affected())
    }
}

async fn set_applied(
    conn: &mut PgConnection,
    origin: &str,
    epoch: &str,
    seq: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO replication_applied (origin, epoch, seq, applied_at) VALUES ($1, $2, $3, now()) \
         ON CONFLICT (origin) DO UPDATE SET epoch = EXCLUDED.epoch, seq = EXCLUDED.seq, \
         applied_at = now()",
    )
    .bind(origin)
    .bind(epoch)
    .bind(seq)
    .execute(conn)
    .await?;
    Ok(())
}
