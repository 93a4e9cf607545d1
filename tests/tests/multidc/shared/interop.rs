//! A stock client library (slixmpp and its XEP-0198 plugin, installed by `cargo xtask test`)
//! resumes its dropped stream at the other DC while the first is alive, and back: every
//! message sent meanwhile arrives once and in order, and its contact sees no flap.

use crate::{shared, user};

#[tokio::test]
async fn slixmpp_resumes_at_the_other_dc_and_back() {
    let m = shared().await;
    let (dc1, dc2) = (m.dc(1).c2s, m.dc(2).c2s);
    let path = format!("{}/interop/slixmpp_sm.py", env!("CARGO_MANIFEST_DIR"));
    let out = tokio::process::Command::new("python3")
        .arg(&path)
        .arg(dc1.ip().to_string())
        .arg(dc1.port().to_string())
        .arg(m.dc(1).domain.as_str())
        .arg(user("sxdc"))
        .arg(dc2.port().to_string())
        .arg("at the other DC")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), out)
        .await
        .expect("the script finished within 2 minutes")
        .expect("python3 runs (cargo xtask test installs slixmpp)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("slixmpp_sm.py across DCs:\n{stdout}");
    assert!(
        out.status.success() && stdout.contains("all steps passed"),
        "slixmpp_sm.py failed\nstdout:\n{stdout}\nstderr:\n{}",
        &stderr[stderr.len().saturating_sub(4000)..]
    );
}
