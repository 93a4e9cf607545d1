//! A stock client library (slixmpp, installed by `cargo xtask test`) completes the whole
//! user journey: register, login, subscribe, presence, chat, offline delivery, ping, disco.

use crate::{dc, user};

#[tokio::test]
async fn slixmpp_completes_the_user_journey() {
    let dc = dc().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/slixmpp_flow.py");
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .arg(dc.c2s.ip().to_string())
        .arg(dc.c2s.port().to_string())
        .arg("example.com")
        .arg(user("sx"))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), out)
        .await
        .expect("slixmpp flow finished within 2 minutes")
        .expect("python3 runs (cargo xtask test installs slixmpp)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("all steps passed"),
        "slixmpp flow failed\nstdout:\n{stdout}\nstderr:\n{}",
        &stderr[stderr.len().saturating_sub(4000)..]
    );
    dc.stop().await.unwrap();
}
