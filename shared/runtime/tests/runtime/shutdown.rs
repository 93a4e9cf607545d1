//! Signals go to the whole process, so the signalled side runs in a child copy of this binary.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use meerkat_runtime::shutdown::on_signal;

const CHILD: &str = "RUNTIME_TEST_SIGNAL_CHILD";

#[test]
fn sigterm_cancels_the_token() {
    if std::env::var_os(CHILD).is_some() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let token = on_signal();
            // Let the signal task register its handlers before telling the parent.
            tokio::time::sleep(Duration::from_millis(100)).await;
            println!("armed");
            tokio::time::timeout(Duration::from_secs(10), token.cancelled())
                .await
                .expect("SIGTERM cancels the token");
            println!("cancelled");
        });
        return;
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "shutdown::sigterm_cancels_the_token",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let armed = lines
        .by_ref()
        .map(Result::unwrap)
        .find(|l| l.contains("armed"));
    assert!(armed.is_some(), "child never armed");
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // Read to the end: closing the pipe early would make the child's harness fail on EPIPE.
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    let cancelled = rest.iter().any(|l| l.contains("cancelled"));
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(cancelled, "{rest:?}");
}
