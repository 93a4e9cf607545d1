//! Installing RabbitMQ and PostgreSQL 15 from Debian's packages when they are missing, and
//! finding their binaries.

use std::path::PathBuf;

use anyhow::{bail, Context as _};

/// Where Debian's postgresql-15 puts its server binaries.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// The real `sbin` directory of RabbitMQ (`/usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin`).
/// The `/usr/sbin/rabbitmq-server` wrapper switches to the rabbitmq user and drops the
/// environment, which would undo every per-node setting we pass.
pub fn rabbit_sbin() -> anyhow::Result<PathBuf> {
    let base = PathBuf::from("/usr/lib/rabbitmq/lib");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&base)
        .with_context(|| format!("reading {}", base.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("rabbitmq_server-")
        })
        .map(|e| e.path().join("sbin"))
        .filter(|p| p.join("rabbitmq-server").is_file())
        .collect();
    // Several versions can sit side by side during an upgrade; take the newest-looking one.
    found.sort();
    found.pop().with_context(|| {
        format!(
            "no rabbitmq_server-*/sbin/rabbitmq-server under {}",
            base.display()
        )
    })
}

/// A PostgreSQL 15 binary by name, e.g. `pg_bin("pg_ctl")`.
pub fn pg_bin(name: &str) -> PathBuf {
    PathBuf::from(PG_BIN).join(name)
}

fn installed() -> bool {
    rabbit_sbin().is_ok() && pg_bin("postgres").is_file() && pg_bin("initdb").is_file()
}

/// Installs `rabbitmq-server` and `postgresql` with apt when either is missing. The packages'
/// own services may fail to start (no init system here); we never use them anyway.
pub async fn ensure_installed() -> anyhow::Result<()> {
    if installed() {
        return Ok(());
    }
    eprintln!("meerkat: installing rabbitmq-server and postgresql (apt-get)...");
    let update = tokio::process::Command::new("apt-get")
        .arg("update")
        .status()
        .await
        .context("running apt-get update")?;
    if !update.success() {
        bail!("apt-get update failed: {update}");
    }
    // Keep the packages' maintainer scripts from starting system-wide instances: a system
    // RabbitMQ would hold the ports `cargo xtask up` uses. 101 means "action forbidden".
    let policy = std::path::Path::new("/usr/sbin/policy-rc.d");
    let own_policy = !policy.exists();
    if own_policy {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::write(policy, "#!/bin/sh\nexit 101\n").context("writing policy-rc.d")?;
        std::fs::set_permissions(policy, std::fs::Permissions::from_mode(0o755))
            .context("chmod policy-rc.d")?;
    }
    let install = tokio::process::Command::new("apt-get")
        .args(["install", "-y", "rabbitmq-server", "postgresql"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .await
        .context("running apt-get install");
    if own_policy {
        let _ = std::fs::remove_file(policy);
    }
    let install = install?;
    // A failed postinst (service start) can make apt report failure although the files are
    // in place; what we need is the binaries.
    if !installed() {
        bail!("apt-get install rabbitmq-server postgresql ({install}) left the binaries missing");
    }
    Ok(())
}
