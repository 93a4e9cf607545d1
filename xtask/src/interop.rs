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
    if dir.join("node_modules/@xmpp/client").is_dir()
        && dir.join("node_modules/@xmpp/resolve").is_dir()
    {
        return Ok(());
    }
    println!("installing xmpp.js for the WebSocket interop test");
    npm_ci(&dir).await
}

/// Installs Strophe.js (and what its Node build needs for BOSH: `ws`, `@xmldom/xmldom`,
/// `xhr2`; the versions `tests/interop/strophe/package-lock.json` pins) for the BOSH interop
/// test, with npm.
pub async fn ensure_strophe() -> anyhow::Result<()> {
    let dir = crate::layout::root().join("tests/interop/strophe");
    if dir.join("node_modules/strophe.js").is_dir() && dir.join("node_modules/xhr2").is_dir() {
        return Ok(());
    }
    println!("installing Strophe.js for the BOSH interop test");
    npm_ci(&dir).await
}

/// Installs what the browser test (`tests/interop/browser/converse.mjs`) needs: Debian's
/// `chromium` when `/usr/bin/chromium` is missing, and Converse.js and `puppeteer-core` (the
/// versions `tests/interop/browser/package-lock.json` pins) with npm.
pub async fn ensure_browser() -> anyhow::Result<()> {
    if !std::path::Path::new("/usr/bin/chromium").exists() {
        println!("installing Debian's chromium for the browser test");
        apt_install(&["chromium"]).await?;
    }
    let dir = crate::layout::root().join("tests/interop/browser");
    if dir.join("node_modules/converse.js/dist").is_dir()
        && dir.join("node_modules/puppeteer-core").is_dir()
    {
        return Ok(());
    }
    println!("installing Converse.js and puppeteer-core for the browser test");
    npm_ci(&dir).await
}

/// `apt-get install` of `packages`; the package lists are fetched first when the install fails
/// without them (a fresh machine has none).
async fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    let install = || {
        let mut cmd = Command::new("apt-get");
        cmd.args(["install", "-y", "-qq"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    if install().status().await.is_ok_and(|s| s.success()) {
        return Ok(());
    }
    let update = Command::new("apt-get")
        .args(["update", "-qq"])
        .status()
        .await
        .context("apt-get update")?;
    anyhow::ensure!(update.success(), "apt-get update failed");
    let again = install()
        .status()
        .await
        .with_context(|| format!("apt-get install {}", packages.join(" ")))?;
    anyhow::ensure!(
        again.success(),
        "apt-get install {} failed",
        packages.join(" ")
    );
    Ok(())
}

/// `npm ci` in `dir` (its package-lock.json), installing Debian's `nodejs` and `npm` when npm
/// is missing.
async fn npm_ci(dir: &std::path::Path) -> anyhow::Result<()> {
    let has_npm = Command::new("npm")
        .arg("--version")
        .output()
        .await
        .is_ok_and(|o| o.status.success());
    if !has_npm {
        apt_install(&["nodejs", "npm"]).await?;
    }
    let npm = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--silent"])
        .current_dir(dir)
        .status()
        .await
        .with_context(|| format!("npm ci in {}", dir.display()))?;
    anyhow::ensure!(npm.success(), "npm ci in {} failed", dir.display());
    Ok(())
}
