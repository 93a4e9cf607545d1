//! `cargo xtask test`: one shared RabbitMQ node and PostgreSQL for the whole test run, found
//! by the tests through `MEERKAT_TEST_INFRA`, stopped afterwards whatever happened.

use anyhow::Context as _;
use meerkat_localstack::{ensure_installed, LocalInfra, TEST_INFRA_ENV};

use crate::layout;

/// Runs nextest over the workspace against a fresh shared infrastructure; returns nextest's
/// exit code.
pub async fn run(extra: Vec<String>) -> anyhow::Result<i32> {
    ensure_installed().await?;
    crate::interop::ensure_slixmpp().await?;
    // One directory per run: several runs may share a target directory.
    let dir = layout::test_dir().join(std::process::id().to_string());
    // The reaper stops the infrastructure even if this process is interrupted.
    let infra = LocalInfra::start(&dir.join("infra"), Some(std::process::id())).await?;
    let spec_path = dir.join("infra.json");
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
    Ok(code)
}
