//! Windowed counters for the gateways' throttles (registration, authentication), shared by
//! every gateway of the DC through the `throttle` table. One statement per event: an upsert
//! that starts a new window when the old one has expired, with bound parameters only.

use std::time::Duration;

use sqlx::Row;

use crate::{Store, StoreError};

/// Counts beyond this stop growing (an attacker hammering one key cannot overflow it).
const MAX_HITS: i32 = 1_000_000_000;

impl Store {
    /// Counts one event against each `(key, window)`: a key's window starts at its first
    /// event and lasts `window`; an event after it starts a new one. Returns each key's count
    /// in its current window, this event included, in the order given. The keys are locked in
    /// sorted order, so concurrent calls cannot deadlock.
    pub async fn throttle_hit(&self, keys: &[(String, Duration)]) -> Result<Vec<u32>, StoreError> {
        let mut sorted: Vec<&(String, Duration)> = keys.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        sorted.dedup_by(|a, b| a.0 == b.0);
        let names: Vec<&str> = sorted.iter().map(|(k, _)| k.as_str()).collect();
        let windows: Vec<f64> = sorted.iter().map(|(_, w)| w.as_secs_f64()).collect();
        let rows = sqlx::query(
            "INSERT INTO throttle (key, hits, expires_at) \
             SELECT k, 1, now() + make_interval(secs => w) \
             FROM unnest($1::text[], $2::float8[]) AS t(k, w) ORDER BY k \
             ON CONFLICT (key) DO UPDATE SET \
               hits = CASE WHEN throttle.expires_at <= now() THEN 1 \
                      ELSE LEAST(throttle.hits + 1, $3) END, \
               expires_at = CASE WHEN throttle.expires_at <= now() THEN excluded.expires_at \
                            ELSE throttle.expires_at END \
             RETURNING key, hits",
        )
        .bind(&names)
        .bind(&windows)
        .bind(MAX_HITS)
        .fetch_all(self.pool())
        .await?;
        let mut counts = Vec::with_capacity(keys.len());
        for (key, _) in keys {
            let hits = rows
                .iter()
                .find(|r| r.get::<&str, _>("key") == key)
                .map(|r| r.get::<i32, _>("hits"))
                .ok_or_else(|| StoreError::Corrupt(format!("throttle key {key} not counted")))?;
            counts.push(u32::try_from(hits).unwrap_or(0));
        }
        Ok(counts)
    }

    /// Takes one event back from each key (a registration that failed, a login that
    /// succeeded), never below zero and without touching the window.
    pub async fn throttle_undo(&self, keys: &[String]) -> Result<(), StoreError> {
        let mut sorted: Vec<&str> = keys.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        sorted.dedup();
        sqlx::query(
            "UPDATE throttle SET hits = GREATEST(hits - 1, 0) \
             WHERE key = ANY($1::text[]) AND expires_at > now()",
        )
        .bind(&sorted)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Deletes the counters whose window has ended; returns how many.
    pub async fn throttle_expire(&self) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM throttle WHERE expires_at <= now()")
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }
}
