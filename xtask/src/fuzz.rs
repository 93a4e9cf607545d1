//! `cargo xtask fuzz`: runs one of the coverage-guided fuzz targets under `fuzz/` (cargo-fuzz,
//! libFuzzer) on its corpus in the repository, installing cargo-fuzz when missing. libFuzzer
//! needs a nightly compiler; `RUSTC_BOOTSTRAP=1` lets the stable toolchain act as one.

use anyhow::Context as _;
use tokio::process::Command;

use crate::layout;

async fn has_cargo_fuzz() -> bool {
    Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .await
        .is_ok_and(|o| o.status.success())
}

pub async fn run(target: String, seconds: u64) -> anyhow::Result<i32> {
    if !has_cargo_fuzz().await {
        println!("installing cargo-fuzz");
        let status = Command::new("cargo")
            .args(["install", "cargo-fuzz", "--locked"])
            .status()
            .await
            .context("cargo install cargo-fuzz")?;
        anyhow::ensure!(status.success(), "cargo install cargo-fuzz failed");
    }
    let root = layout::root();
    let corpus = root.join("fuzz").join("corpus").join(&target);
    std::fs::create_dir_all(&corpus).with_context(|| format!("{}", corpus.display()))?;
    let status = Command::new("cargo")
        .current_dir(&root)
        .env("RUSTC_BOOTSTRAP", "1")
        .args(["fuzz", "run", &target])
        .arg(&corpus)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        // A stanza that takes a second is a hang worth reporting; 2 GiB is a blow-up.
        .args(["-timeout=1", "-rss_limit_mb=2048", "-max_len=65536"])
        .status()
        .await
        .context("cargo fuzz run")?;
    Ok(status.code().unwrap_or(1))
}
