//! A stock client library (slixmpp, installed by `cargo xtask test`) completes the whole
//! user journey: register, login, subscribe, presence, chat, offline delivery, ping, disco;
//! and with its XEP-0198 plugin, a dropped connection resumed with nothing lost, at the same
//! gateway, at another gateway of the DC, and back (at another DC: multidc `shared::interop`).

use crate::{dc, user};

#[tokio::test]
async fn slixmpp_completes_the_user_journey() {
    run_script("slixmpp_flow.py", false).await;
}

#[tokio::test]
async fn slixmpp_resumes_a_dropped_stream_and_misses_nothing() {
    run_script("slixmpp_sm.py", true).await;
}

/// Runs `tests/interop/<script>` against a fresh DC (with `second_gateway`, the port of a
/// second gateway of the DC goes last); it must print "all steps passed".
async fn run_script(script: &str, second_gateway: bool) {
    let mut dc = dc().await;
    let path = format!("{}/interop/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut cmd = tokio::process::Command::new("python3");
    cmd.arg(&path)
        .arg(dc.c2s.ip().to_string())
        .arg(dc.c2s.port().to_string())
        .arg("example.com")
        .arg(user("sx"))
        .kill_on_drop(true);
    if second_gateway {
        let other = dc
            .start_gateway_on_own_port()
            .await
            .expect("a second gateway");
        cmd.arg(other.addr.port().to_string());
    }
    let out = cmd.output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), out)
        .await
        .expect("slixmpp flow finished within 2 minutes")
        .expect("python3 runs (cargo xtask test installs slixmpp)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{script}:\n{stdout}");
    assert!(
        out.status.success() && stdout.contains("all steps passed"),
        "{script} failed\nstdout:\n{stdout}\nstderr:\n{}",
        &stderr[stderr.len().saturating_sub(4000)..]
    );
    dc.stop().await.expect("stop the DC");
}
