//! A fresh database per test, on the test run's shared PostgreSQL (see meerkat-testkit).

use meerkat_store::Store;

pub async fn fresh_database() -> anyhow::Result<String> {
    meerkat_testkit::infra().await?.fresh_database().await
}

pub async fn fresh_store() -> Store {
    let url = fresh_database().await.expect("fresh database");
    Store::connect(&url).await.expect("connect")
}
