//! A fresh database per test.

use std::sync::atomic::{AtomicU32, Ordering};

use meerkat_store::Store;
use sqlx::Connection;

/// Creates an empty database and returns its URL. The server is named by
/// MEERKAT_TEST_PG_URL (an admin URL, e.g. postgres://postgres@127.0.0.1:5432/postgres).
pub async fn fresh_database() -> anyhow::Result<String> {
    static N: AtomicU32 = AtomicU32::new(0);
    let admin = std::env::var("MEERKAT_TEST_PG_URL")
        .map_err(|_| anyhow::anyhow!("set MEERKAT_TEST_PG_URL to a PostgreSQL admin URL"))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .subsec_nanos();
    let name = format!(
        "store_test_{}_{}_{}",
        std::process::id(),
        nanos,
        N.fetch_add(1, Ordering::Relaxed)
    );
    let mut conn = sqlx::PgConnection::connect(&admin).await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await?;
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    Ok(format!("{base}/{name}"))
}

pub async fn fresh_store() -> Store {
    let url = fresh_database().await.expect("fresh database");
    Store::connect(&url).await.expect("connect")
}
