//! `cargo xtask test`: one shared RabbitMQ node and PostgreSQL for the whole test run, found
//! by the tests through `MEERKAT_TEST_INFRA`, stopped afterwards whatever happened; nextest
//! installed first when missing; two DCs shared by the multi-DC tests that disturb nothing
//! (`meerkat_testkit::shared`), started after the infrastructure and stopped before it; at the
//! end, the slowest tests and the time per test binary.

use anyhow::Context as _;
use meerkat_localstack::{ensure_installed, LocalInfra, TEST_INFRA_ENV};

use crate::layout;

/// Runs nextest over the workspace against a fresh shared infrastructure; returns nextest's
/// exit code.
pub async fn run(extra: Vec<String>) -> anyhow::Result<i32> {
    ensure_nextest().await?;
    ensure_installed().await?;
    crate::interop::ensure_slixmpp().await?;
    crate::interop::ensure_xmppjs().await?;
    crate::interop::ensure_strophe().await?;
    crate::interop::ensure_browser().await?;
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
        // Without them (a build error, which nextest then shows; a start that failed), each
        // test process that wants them starts its own: slower, same results.
        let shared = match SharedDcs::start(&dir, &spec_path).await {
            Ok(shared) => Some(shared),
            Err(e) => {
                eprintln!("xtask: no shared DCs for this run: {e:#}");
                None
            }
        };
        let mut nextest = cargo();
        nextest
            .args(["nextest", "run", "--workspace", "--no-fail-fast"])
            .args(&extra)
            .env(TEST_INFRA_ENV, &spec_path);
        if let Some(shared) = &shared {
            nextest
                .env(SHARED_DCS_ENV, &shared.description)
                .env(SHARED_LOG_ENV, &shared.log);
        }
        let status = nextest.status().await.context("running cargo nextest")?;
        if let Some(shared) = shared {
            let log = shared.log.clone();
            shared.stop().await;
            // Kept past the run (its directory goes): what to read after a failure.
            let kept = layout::test_dir().join("shared-dcs.log");
            if std::fs::copy(&log, &kept).is_ok() {
                println!("the shared DCs' log: {}", kept.display());
            }
        }
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

/// Names the description of the run's shared two DCs (`meerkat_testkit::shared`).
const SHARED_DCS_ENV: &str = "MEERKAT_TEST_SHARED_DCS";

/// Names the shared two DCs' log (info and above), which a failing test may quote.
const SHARED_LOG_ENV: &str = "MEERKAT_TEST_SHARED_LOG";

/// How long the shared two DCs get to start.
const SHARED_DCS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(180);

/// The run's two DCs shared by the multi-DC tests that disturb nothing: the testkit's
/// `meerkat-shared-dcs` on the run's broker and database. It stops when its standard input
/// closes: at the end of the run, or when this process dies.
struct SharedDcs {
    child: tokio::process::Child,
    description: std::path::PathBuf,
    /// Its services' log (`MEERKAT_TEST_LOG`, one file named by its process id).
    log: std::path::PathBuf,
}

impl SharedDcs {
    async fn start(
        dir: &std::path::Path,
        infra_spec: &std::path::Path,
    ) -> anyhow::Result<SharedDcs> {
        // The build nextest is about to make (its `cargo test --no-run --workspace`), the
        // testkit's binaries among it: built alone (`cargo build -p`), the binary's
        // dependencies would get other features, hence a second build of every service.
        let built = cargo()
            .args(["test", "--no-run", "--workspace"])
            .status()
            .await
            .context("building the tests")?;
        anyhow::ensure!(built.success(), "building the tests failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| layout::root().join("target"));
        let description = dir.join("shared-dcs.json");
        let log = dir.join("shared-dcs.log");
        let out = std::fs::File::create(&log).with_context(|| format!("{}", log.display()))?;
        let mut child =
            tokio::process::Command::new(target.join("debug").join("meerkat-shared-dcs"))
                .arg(&description)
                .env(TEST_INFRA_ENV, infra_spec)
                .env("MEERKAT_TEST_LOG", dir)
                .stdin(std::process::Stdio::piped())
                .stdout(out.try_clone()?)
                .stderr(out)
                .kill_on_drop(true)
                .spawn()
                .context("starting meerkat-shared-dcs")?;
        let deadline = tokio::time::Instant::now() + SHARED_DCS_TIMEOUT;
        while !description.is_file() {
            if let Some(status) = child.try_wait()? {
                anyhow::bail!(
                    "meerkat-shared-dcs exited ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the shared DCs did not start within {SHARED_DCS_TIMEOUT:?}; see {}",
                log.display()
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        println!("shared two DCs: {SHARED_DCS_ENV}={}", description.display());
        let services_log = dir.join(format!("{}.log", child.id().unwrap_or_default()));
        Ok(SharedDcs {
            child,
            description,
            log: services_log,
        })
    }

    /// Closes its standard input and gives it a while to stop its DCs; kills it otherwise.
    async fn stop(mut self) {
        drop(self.child.stdin.take());
        let stopped =
            tokio::time::timeout(std::time::Duration::from_secs(30), self.child.wait()).await;
        if !matches!(stopped, Ok(Ok(_))) {
            let _ = self.child.kill().await;
        }
    }
}

/// `cargo` in the workspace root, without what `cargo run` told xtask about itself.
fn cargo() -> tokio::process::Command {
    let mut cmd =
        tokio::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    for var in cargo_run_env() {
        cmd.env_remove(var);
    }
    cmd.current_dir(layout::root());
    cmd
}

/// The variables `cargo run` (hence `cargo xtask`) sets for xtask itself. Build scripts such
/// as ring's rerun when one of them changes (`rerun-if-env-changed=CARGO_PKG_NAME`), so a
/// nextest build that inherited them would rebuild ring and everything above it, and the next
/// `cargo build` would rebuild them back: minutes per run.
fn cargo_run_env() -> Vec<String> {
    std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| {
            [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_BIN_",
                "CARGO_CRATE_",
            ]
            .iter()
            .any(|p| k.starts_with(p))
                || [
                    "OUT_DIR",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_RUSTC_CURRENT_DIR",
                ]
                .contains(&k.as_str())
        })
        .collect()
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
