//! Deletions are kept as tombstones (kind, key, stamp) so that an older write arriving later
//! cannot bring a deleted item back; a full copy carries them too.

use meerkat_wire::data::Stamp;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use crate::StoreError;

pub(crate) async fn set(
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

pub(crate) async fn clear(
    conn: &mut PgConnection,
    kind: &str,
    key: &str,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM tombstones WHERE kind = $1 AND key = $2")
        .bind(kind)
        .bind(key)
        .execute(conn)
        .await?;
    Ok(())
}

/// The stamp of a tombstone, if the item has one.
pub(crate) async fn stamp(
    conn: &mut PgConnection,
    kind: &str,
    key: &str,
) -> Result<Option<Stamp>, StoreError> {
    let row = sqlx::query("SELECT hlc, hlc_dc FROM tombstones WHERE kind = $1 AND key = $2")
        .bind(kind)
        .bind(key)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(stamp_of).transpose()
}

/// The `hlc`, `hlc_dc` columns of a row.
pub(crate) fn stamp_of(row: &PgRow) -> Result<Stamp, StoreError> {
    Ok(Stamp {
        hlc: row.try_get("hlc")?,
        dc: row.try_get("hlc_dc")?,
    })
}
