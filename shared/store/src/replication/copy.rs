//! A full copy of the DC's data for a DC that cannot catch up from the outbox, read in
//! batches (keyset pages, kind by kind, then the tombstones) inside one repeatable-read
//! transaction: memory stays bounded by one batch however much there is, and the copy and its
//! positions are one consistent snapshot.

use std::collections::BTreeMap;

use meerkat_wire::data::{Applied, Record};
use sqlx::{Postgres, Row, Transaction};

use super::kind::{self, Cursor, KINDS};
use super::tombstones::stamp_of;
use crate::{Store, StoreError};

/// A full copy being read.
pub struct FullCopy {
    tx: Transaction<'static, Postgres>,
    /// Index into [`KINDS`]; `KINDS.len()` is the tombstones; past it, done.
    stage: usize,
    after: Option<Cursor>,
    positions: BTreeMap<String, Applied>,
}

impl Store {
    /// Starts a full copy: a snapshot of every item and tombstone, and of how far it holds
    /// each DC's stream (this DC's own outbox head included).
    pub async fn full_copy(&self) -> Result<FullCopy, StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
        let me = sqlx::query("SELECT coalesce(dc, '') AS dc, epoch, seq FROM replication_clock")
            .fetch_one(&mut *tx)
            .await?;
        let mut positions = BTreeMap::new();
        for row in sqlx::query("SELECT origin, epoch, seq FROM replication_applied")
            .fetch_all(&mut *tx)
            .await?
        {
            positions.insert(
                row.try_get("origin")?,
                Applied {
                    epoch: row.try_get("epoch")?,
                    seq: row.try_get("seq")?,
                },
            );
        }
        positions.insert(
            me.try_get("dc")?,
            Applied {
                epoch: me.try_get("epoch")?,
                seq: me.try_get("seq")?,
            },
        );
        Ok(FullCopy {
            tx,
            stage: 0,
            after: None,
            positions,
        })
    }

    /// Every item and tombstone at once, for tests and small databases; a replicator reads
    /// [`Store::full_copy`] batch by batch.
    pub async fn copy_records(&self) -> Result<Vec<Record>, StoreError> {
        let mut copy = self.full_copy().await?;
        let mut out = Vec::new();
        loop {
            let batch = copy.next_batch(1000).await?;
            if batch.is_empty() {
                return Ok(out);
            }
            out.extend(batch);
        }
    }
}

impl FullCopy {
    /// How far the copy holds each DC's stream: the receiver records these once it has
    /// applied every batch ([`Store::copy_done`]).
    pub fn positions(&self) -> &BTreeMap<String, Applied> {
        &self.positions
    }

    /// The next at most `limit` records (never more than one kind per batch); empty when the
    /// copy is complete.
    pub async fn next_batch(&mut self, limit: usize) -> Result<Vec<Record>, StoreError> {
        let limit = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
        while self.stage <= KINDS.len() {
            let batch = match KINDS.get(self.stage) {
                Some(k) => {
                    k.copy_batch(&mut self.tx, self.after.as_ref(), limit)
                        .await?
                }
                None => self.tombstones(limit).await?,
            };
            match batch.last() {
                Some((cursor, _)) => {
                    self.after = Some(cursor.clone());
                    return Ok(batch.into_iter().map(|(_, r)| r).collect());
                }
                None => {
                    self.stage += 1;
                    self.after = None;
                }
            }
        }
        Ok(Vec::new())
    }

    async fn tombstones(&mut self, limit: i64) -> Result<Vec<(Cursor, Record)>, StoreError> {
        let (kind, key) = kind::cursor2(self.after.as_ref());
        let rows = sqlx::query(
            "SELECT kind, key, username, hlc, hlc_dc FROM tombstones \
             WHERE (kind, key) > ($1, $2) ORDER BY kind, key LIMIT $3",
        )
        .bind(kind)
        .bind(key)
        .bind(limit)
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter()
            .map(|row| {
                let kind: String = row.try_get("kind")?;
                let key: String = row.try_get("key")?;
                let rec =
                    kind::named(&kind)?.deleted(&key, row.try_get("username")?, stamp_of(row)?)?;
                Ok(((kind, key), rec))
            })
            .collect()
    }
}
