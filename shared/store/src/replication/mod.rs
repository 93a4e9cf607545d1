//! Persistent-data replication, the database side (docs/replication.md): the DC's clock, the
//! outbox every write appends to, applying other DCs' records (the larger stamp wins), full
//! copies, and the bookkeeping of what each DC has applied.

mod accounts;
mod archive;
mod blocking;
mod copy;
mod docs;
mod kind;
mod offline;
mod requests;
mod roster;
mod tombstones;

use std::collections::BTreeMap;

use meerkat_wire::data::{Applied, Record, Stamp};
use sqlx::{PgConnection, Row};

use kind::Kind as _;

use crate::{Store, StoreError};

pub(crate) use accounts::{account_created, account_deleted, account_record};
pub(crate) use archive::{archive_prefs_put, split_jid};
pub(crate) use blocking::{block_removed, unblock_key};
pub use copy::FullCopy;
pub(crate) use docs::{
    Doc, CAPS, LAST, MUC_OCCUPANT, MUC_ROOM, PEP_ITEM, PEP_NODE, PRIVATE, VCARD,
};
pub(crate) use offline::offline_removed;
pub(crate) use requests::{request_put, request_removed};
pub(crate) use roster::{parts_changed, parts_of, roster_put, roster_record, roster_removed};

/// The DC's next clock value, as SQL over `replication_clock`: `max(hlc + 1, now_ms << 16)`.
/// Every write takes its stamp by this one rule ([`tick`], the archive writer's statement).
macro_rules! next_hlc {
    () => {
        "GREATEST(hlc + 1, (floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) << 16)"
    };
}
pub(crate) use next_hlc;

/// The channel a write notifies at its commit, for the replicator ([`OUTBOX_CHANNEL`]), as
/// a string literal to put in SQL.
macro_rules! outbox_channel {
    () => {
        "meerkat_outbox"
    };
}
pub(crate) use outbox_channel;

/// What the replicator listens on: every write to the outbox notifies it at its commit.
pub const OUTBOX_CHANNEL: &str = outbox_channel!();

/// The DC's clock, read and advanced at the start of a write transaction (which then holds
/// the clock row's lock until it commits).
pub(crate) async fn tick(conn: &mut PgConnection) -> Result<Stamp, StoreError> {
    let row = sqlx::query(concat!(
        "UPDATE replication_clock SET hlc = ",
        next_hlc!(),
        " RETURNING hlc, coalesce(dc, '') AS dc"
    ))
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
    let bodies: Vec<String> = records
        .iter()
        .map(|r| serde_json::to_string(r).unwrap_or_default())
        .collect();
    // One round trip: the sequence numbers taken (the clock row's lock held to the commit keeps
    // them in commit order), the records written under them in order, the replicator woken.
    let row = sqlx::query(concat!(
        "WITH c AS (UPDATE replication_clock SET seq = seq + $1 RETURNING seq, epoch), \
         o AS (INSERT INTO outbox (seq, record) SELECT c.seq - $1 + r.i, r.body::jsonb \
               FROM c, unnest($2::text[]) WITH ORDINALITY AS r(body, i)) \
         SELECT seq, epoch, pg_notify('",
        outbox_channel!(),
        "', seq::text)::text AS woken FROM c"
    ))
    .bind(n)
    .bind(&bodies)
    .fetch_one(conn)
    .await?;
    let last: i64 = row.try_get("seq")?;
    let epoch: String = row.try_get("epoch")?;
    Ok(Some((epoch, last)))
}

/// Removes what an account of this name owned before `before` (an earlier account's data).
pub(crate) async fn drop_older_data(
    conn: &mut PgConnection,
    username: &str,
    before: &Stamp,
) -> Result<(), StoreError> {
    for table in kind::KINDS.iter().filter_map(|k| k.user_table()) {
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

/// Whether `rec`'s stamp beats what is here for its item (its row, else its tombstone), and
/// the item's account allows it.
async fn newer(
    conn: &mut PgConnection,
    kind: &dyn kind::Kind,
    rec: &Record,
) -> Result<bool, StoreError> {
    let stamp = rec.stamp();
    let username = rec.username();
    let here = match kind.row_stamp(conn, rec).await? {
        Some(s) => Some(s),
        None => tombstones::stamp(conn, kind.name(), &kind.tombstone_key(rec)).await?,
    };
    if here.as_ref().is_some_and(|h| h >= stamp) {
        return Ok(false);
    }
    if kind.user_table().is_none() {
        return Ok(true);
    }
    // A user's item written before their account was (re)created or after it was deleted:
    // an item older than the account's birth belongs to an earlier account of that name; one
    // older than the account's deletion went with it.
    let born =
        sqlx::query("SELECT born AS hlc, born_dc AS hlc_dc FROM accounts WHERE username = $1")
            .bind(username)
            .fetch_optional(&mut *conn)
            .await?;
    if let Some(row) = born {
        return Ok(tombstones::stamp_of(&row)? <= *stamp);
    }
    let deleted = tombstones::stamp(conn, accounts::Accounts.name(), username).await?;
    match deleted {
        Some(s) => Ok(s < *stamp),
        None => Ok(true),
    }
}

/// Applies one record if its stamp wins (the clock is moved by the caller). Returns whether
/// anything changed.
async fn apply_one(conn: &mut PgConnection, rec: &Record) -> Result<bool, StoreError> {
    let kind = kind::of(rec)?;
    if !newer(conn, kind, rec).await? {
        return Ok(false);
    }
    kind.apply(conn, rec).await?;
    Ok(true)
}

/// The clock never runs behind what it has seen.
async fn see(conn: &mut PgConnection, hlc: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE replication_clock SET hlc = GREATEST(hlc, $1)")
        .bind(hlc)
        .execute(conn)
        .await?;
    Ok(())
}

/// Applies records in order, each if its stamp wins, and moves the clock once to the newest
/// stamp applied. A run of archived messages (the bulk of a busy stream: two per message sent)
/// is applied as one set, in a few statements instead of five per message
/// ([`archive::apply_messages`], the same outcome as one by one).
async fn apply_records(conn: &mut PgConnection, records: &[&Record]) -> Result<(), StoreError> {
    let mut newest = None;
    let mut rest = records;
    while let Some(first) = rest.first() {
        let run = rest
            .iter()
            .take_while(|r| archive::is_new_message(r))
            .count();
        if run > 1 {
            let (messages, after) = rest.split_at(run);
            for (rec, applied) in messages
                .iter()
                .zip(archive::apply_messages(conn, messages).await?)
            {
                if applied {
                    newest = newest.max(Some(rec.stamp().hlc));
                }
            }
            rest = after;
        } else {
            if apply_one(conn, first).await? {
                newest = newest.max(Some(first.stamp().hlc));
            }
            rest = &rest[1..];
        }
    }
    if let Some(hlc) = newest {
        see(conn, hlc).await?;
    }
    Ok(())
}

/// This DC's identity and outbox head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub dc: String,
    pub epoch: String,
    pub head: i64,
}

/// Outbox entries of this DC's stream (`dc`, `epoch`; empty when there are none).
#[derive(Clone, Debug, Default)]
pub struct OutboxPage {
    pub dc: String,
    pub epoch: String,
    pub entries: Vec<OutboxEntry>,
}

/// An outbox row (`seq`, `record` as text, `written_at` in µs) read into its entry.
fn outbox_entry(r: &sqlx::postgres::PgRow) -> Result<OutboxEntry, StoreError> {
    Ok(OutboxEntry {
        seq: r.try_get("seq")?,
        record: outbox_record(r)?,
        written_at: r.try_get("written_at")?,
    })
}

/// An outbox row's `record`, selected as text and read straight into the record (no
/// intermediate JSON tree).
fn outbox_record(r: &sqlx::postgres::PgRow) -> Result<Record, StoreError> {
    let body: &str = r.try_get("record")?;
    serde_json::from_str(body).map_err(|e| StoreError::Corrupt(format!("outbox record: {e}")))
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

    /// What a DC with no peers reads of its outbox: the account records after `after` up to
    /// the head, in order, and that head (everything up to it may then be trimmed). The
    /// other records are neither read nor parsed.
    pub async fn outbox_accounts(&self, after: i64) -> Result<(Vec<Record>, i64), StoreError> {
        // The head first: a sequence number is taken under the clock row and committed with
        // it, so no entry up to the head can still appear.
        let head = self.identity().await?.head;
        let rows = sqlx::query(
            "SELECT record::text AS record FROM outbox \
             WHERE seq > $1 AND seq <= $2 AND record->>'item' = 'account' ORDER BY seq",
        )
        .bind(after)
        .bind(head)
        .fetch_all(self.pool())
        .await?;
        let records = rows
            .iter()
            .map(outbox_record)
            .collect::<Result<_, StoreError>>()?;
        Ok((records, head))
    }

    /// Outbox entries after `after`, in order, at most `limit`, with the stream they belong to
    /// (this DC and its database's epoch), read in the same statement: what the shipper
    /// publishes is named by the identity it was read under, even if the database was rebuilt
    /// under it meanwhile, without a query of its own for the identity on every pass.
    pub async fn outbox_page(&self, after: i64, limit: i64) -> Result<OutboxPage, StoreError> {
        let rows = sqlx::query(
            "SELECT coalesce(c.dc, '') AS dc, c.epoch, o.seq, o.record::text AS record, \
             (extract(epoch FROM o.written_at) * 1000000)::bigint AS written_at \
             FROM outbox o CROSS JOIN replication_clock c \
             WHERE o.seq > $1 ORDER BY o.seq LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        let mut page = OutboxPage::default();
        if let Some(first) = rows.first() {
            page.dc = first.try_get("dc")?;
            page.epoch = first.try_get("epoch")?;
        }
        page.entries = rows
            .iter()
            .map(outbox_entry)
            .collect::<Result<_, StoreError>>()?;
        Ok(page)
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
        let mut outcomes = self
            .apply_remote_batch(origin, epoch, &[(seq, record)])
            .await?;
        Ok(outcomes.pop().unwrap_or(ApplyOutcome::Duplicate))
    }

    /// Applies changes of `origin`'s stream (database life `epoch`), in the order given, in
    /// one transaction with the bookkeeping: one outcome per change. A change after a gap is
    /// not applied (it reports the gap), nor is any change if the transaction fails: `Err`
    /// then, and nothing of the batch is applied.
    pub async fn apply_remote_batch(
        &self,
        origin: &str,
        epoch: &str,
        changes: &[(i64, &Record)],
    ) -> Result<Vec<ApplyOutcome>, StoreError> {
        let mut tx = self.pool().begin().await?;
        // The clock row first, like every write (one lock order, no deadlock).
        sqlx::query("SELECT 1 FROM replication_clock FOR UPDATE")
            .execute(&mut *tx)
            .await?;
        let known = sqlx::query("SELECT epoch, seq FROM replication_applied WHERE origin = $1")
            .bind(origin)
            .fetch_optional(&mut *tx)
            .await?;
        let mut last = match known {
            Some(row) => {
                let known_epoch: String = row.try_get("epoch")?;
                let known_seq: i64 = row.try_get("seq")?;
                if epoch < known_epoch.as_str() {
                    return Ok(vec![ApplyOutcome::Stale; changes.len()]);
                }
                if epoch > known_epoch.as_str() {
                    0
                } else {
                    known_seq
                }
            }
            None => 0,
        };
        let mut outcomes = Vec::with_capacity(changes.len());
        let mut next = Vec::with_capacity(changes.len());
        for (seq, record) in changes {
            let outcome = if *seq <= last {
                ApplyOutcome::Duplicate
            } else if *seq > last + 1 {
                ApplyOutcome::Gap { expected: last + 1 }
            } else {
                next.push(*record);
                last = *seq;
                ApplyOutcome::Applied
            };
            outcomes.push(outcome);
        }
        if !next.is_empty() {
            apply_records(&mut tx, &next).await?;
            set_applied(&mut tx, origin, epoch, last).await?;
            tx.commit().await?;
        }
        Ok(outcomes)
    }

    /// Applies records of a full copy (no sequence bookkeeping; see [`Store::copy_done`]).
    pub async fn apply_copy(&self, records: &[Record]) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("SELECT 1 FROM replication_clock FOR UPDATE")
            .execute(&mut *tx)
            .await?;
        let records: Vec<&Record> = records.iter().collect();
        apply_records(&mut tx, &records).await?;
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

    /// Deletes outbox entries up to `shipped` (the last the shipper passed over) that every DC
    /// in `peers` has applied (per their reports; with no peers, every one shipped), and
    /// entries older than `retention` whatever the peers say (a DC that far behind gets a
    /// full copy). Tombstones older than the retention go too. Returns the entries deleted.
    pub async fn trim_outbox(
        &self,
        peers: &[String],
        shipped: i64,
        retention: std::time::Duration,
    ) -> Result<u64, StoreError> {
        let me = self.identity().await?;
        let reports = self.peers().await?;
        let mut upto = me.head.min(shipped);
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
