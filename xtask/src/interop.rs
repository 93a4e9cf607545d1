//! The stock client library the interop test drives (slixmpp), installed when missing.

use anyhow::Context as _;
use tokio::process::Command;

async fn has_slixmpp() -> bool {
    Command::new("python3")
        .args(["-c", "import slixmpp"])
        .output()
        .await
        .is_ok_and(|o| o.status.success())
}

async fn pip_install(extra: &[&str]) -> bool {
    Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "slixmpp"])
        .args(extra)
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// Makes `python3 -c 'import slixmpp'` work: pip first, then Debian's pip for a system Python.
pub async fn ensure_slixmpp() -> anyhow::Result<()> {
    if has_slixmpp().await {
        return Ok(());
    }
    println!("installing slixmpp for the interop test");
    if pip_install(&[]).await && has_slixmpp().await {
        return Ok(());
    }
    let apt = Command::new("apt-get")
        .args(["install", "-y", "-qq", "python3-pip"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .await
        .context("apt-get install python3-pip")?;
    anyhow::ensure!(apt.success(), "apt-get install python3-pip failed");
    // Debian's Python refuses pip installs into the system environment without this flag.
    if pip_install(&["--break-system-packages"]).await && has_slixmpp().await {
        return Ok(());
    }
    anyhow::bail!("could not install slixmpp (python3 -m pip install slixmpp)")
}

/// Installs xmpp.js (`@xmpp/client`, and `ws` for a Node without WebSocket; the versions
/// `tests/interop/xmppjs/package-lock.json` pins) for
/// the WebSocket interop test, with npm, installing Debian's `nodejs` and `npm` when missing.
pub async fn ensure_xmppjs() -> anyhow::Result<()> {
    let dir = crate::layout::root().join("tests/interop/xmppjs");
    if dir.join("node_modules/@xmpp/client").is_dir() {
        return Ok(());
    }
    println!("installing xmpp.js for the WebSocket interop test");
    let has_npm = Command::new("npm")
        .arg("--version")
        .output()
        .await
        .is_ok_and(|o| o.status.success());
    if !has_npm {
        let apt = Command::new("apt-get")
            .args(["install", "-y", "-qq", "nodejs", "npm"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .await
            .context("apt-get install nodejs npm")?;
        anyhow::ensure!(apt.success(), "apt-get install nodejs npm failed");
    }
    let npm = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--silent"])
        .current_dir(&dir)
        .status()
        .await
        .context("npm ci in tests/interop/xmppjs")?;
    anyhow::ensure!(npm.success(), "npm ci in tests/interop/xmppjs failed");
    Ok(())
}
