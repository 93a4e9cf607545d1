//! The run's shared two DCs (`meerkat_testkit::shared`): started by `cargo xtask test` on the
//! run's broker and database (`MEERKAT_TEST_INFRA`), described in the file named by the first
//! argument once they serve, stopped when standard input closes (the run is over, or the
//! process that started this one died).

use std::path::PathBuf;

use anyhow::Context as _;
use tokio::io::AsyncReadExt as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let path = PathBuf::from(
        std::env::args_os()
            .nth(1)
            .context("usage: meerkat-shared-dcs <description file>")?,
    );
    let m = meerkat_testkit::shared::start().await?;
    meerkat_testkit::shared::SharedDcs::of(&m).write(&path)?;
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    while stdin.read(&mut buf).await.map(|n| n > 0).unwrap_or(false) {}
    m.stop().await
}
