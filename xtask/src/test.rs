//! `cargo xtask test`: one shared RabbitMQ node and PostgreSQL for the whole test run, found
//! by the tests through `MEERKAT_TEST_INFRA`, stopped afterwards whatever happened; nextest
//! installed first when missing; at the end, the slowest tests and the time per test binary.

use anyhow::Context as _;
use meerkat_localstack::{ensure_installed, LocalInfra, TEST_INFRA_ENV};

use crate::layout;

/// Runs nextest over the workspace against a fresh shared infrastructure; returns nextest's
/// exit code.
pub async fn run(extra: Vec<String>) -> anyhow::Result<i32> {
    ensure_nextest().await?;
    ensure_installed().await?;
    crate::interop::ensure_slixmpp().await?;
    // One directory per run: several runs may share a target directory.
    let dir = layout::test_dir().join(std::process::id().to_string());
    // The reaper stops the infrastructure even if this process is interrupted.
    let infra = LocalInfra::start(&dir.join("infra"), Some(std::process::id())).await?;
    let spec_path = dir.join("infra.json");
    let junit = junit_path(&extra);
    // A report from an earlier run must not pass for this one's.
    let _ = std::fs::remove_file(&junit);
    let result = async {
        infra.spec().write(&spec_path)?;
        println!(
            "test infrastructure: RabbitMQ {} (AMQP {}), PostgreSQL {}; {TEST_INFRA_ENV}={}",
            infra.spec().rabbit.mgmt_url(),
            infra.spec().rabbit.amqp_port,
            infra.spec().postgres.port,
            spec_path.display()
        );
        let status =
            tokio::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args(["nextest", "run", "--workspace", "--no-fail-fast"])
                .args(&extra)
                .env(TEST_INFRA_ENV, &spec_path)
                .current_dir(layout::root())
                .status()
                .await
                .context("running cargo nextest")?;
        // A signal-killed nextest has no code; report it as a failure.
        anyhow::Ok(status.code().unwrap_or(1))
    }
    .await;
    let stopped = infra.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    let code = result?;
    stopped.context("stopping the test infrastructure")?;
    match crate::junit::read(&junit) {
        Ok(cases) if !cases.is_empty() => print!("{}", crate::junit::report(&cases, SLOWEST)),
        Ok(_) => {}
        Err(e) => eprintln!("xtask: no test times: {e:#}"),
    }
    Ok(code)
}

/// How many of the slowest tests the end of a run names.
const SLOWEST: usize = 15;

/// Where nextest writes the run's JUnit report: `target/nextest/<profile>/junit.xml` (the
/// `[profile.*.junit]` path of `.config/nextest.toml`).
fn junit_path(extra: &[String]) -> std::path::PathBuf {
    let profile = extra
        .iter()
        .zip(extra.iter().skip(1))
        .find(|(flag, _)| matches!(flag.as_str(), "--profile" | "-P"))
        .map(|(_, p)| p.clone())
        .or_else(|| {
            extra
                .iter()
                .find_map(|a| a.strip_prefix("--profile=").map(str::to_owned))
        })
        .or_else(|| std::env::var("NEXTEST_PROFILE").ok())
        .unwrap_or_else(|| "default".into());
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| layout::root().join("target"));
    target.join("nextest").join(profile).join("junit.xml")
}

/// Installs cargo-nextest when `cargo nextest` is not there (a machine with only a Rust
/// toolchain has none).
async fn ensure_nextest() -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let present = tokio::process::Command::new(&cargo)
        .args(["nextest", "--version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success());
    if present {
        return Ok(());
    }
    println!("installing cargo-nextest (cargo install cargo-nextest --locked)");
    let installed = tokio::process::Command::new(&cargo)
        .args(["install", "cargo-nextest", "--locked"])
        .status()
        .await
        .context("running cargo install cargo-nextest")?;
    anyhow::ensure!(
        installed.success(),
        "cargo install cargo-nextest --locked failed"
    );
    Ok(())
}
