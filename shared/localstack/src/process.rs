//! OS process plumbing: liveness by pid, signals, detached spawning, and the reaper that
//! cleans up after a process that died without cleaning up itself.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// True when `pid` is a live (not zombie) process whose command line contains `needle`.
/// The needle guards against a recycled pid belonging to some other program.
pub fn pid_alive(pid: u32, needle: &str) -> bool {
    // A process in the middle of execve(2) shows an empty command line for a moment (a
    // freshly spawned service, `setsid` exec'ing it): look again rather than call it dead.
    for _ in 0..50 {
        match command_line(pid) {
            Probe::Gone => return false,
            Probe::Running(cmdline) if cmdline.is_empty() => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Probe::Running(cmdline) => return String::from_utf8_lossy(&cmdline).contains(needle),
        }
    }
    false
}

enum Probe {
    Gone,
    Running(Vec<u8>),
}

fn command_line(pid: u32) -> Probe {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Probe::Gone;
    };
    // The state letter follows the parenthesised command name, which may itself hold spaces.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    if matches!(state, Some("Z") | Some("X") | None) {
        return Probe::Gone;
    }
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => Probe::Running(cmdline),
        Err(_) => Probe::Gone,
    }
}

/// Reads a pid file (first line, as PostgreSQL's postmaster.pid has it).
pub fn read_pid_file(path: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().next()?.trim().parse().ok()
}

/// Sends `signal` (e.g. "TERM", "KILL") to `pid`. The workspace forbids unsafe code, so this
/// goes through kill(1) rather than libc.
pub fn signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running kill(1)")?;
    if !status.success() {
        bail!("kill -{signal} {pid} failed (process gone?)");
    }
    Ok(())
}

/// Waits until `pid` is gone or `timeout` passes; returns whether it is gone.
pub async fn wait_gone(pid: u32, needle: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while pid_alive(pid, needle) {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    true
}

/// SIGTERM, wait up to `grace`, then SIGKILL and wait a little more.
pub async fn terminate(pid: u32, needle: &str, grace: Duration) -> anyhow::Result<()> {
    if !pid_alive(pid, needle) {
        return Ok(());
    }
    // The process may exit between the check and the signal; that is success too.
    let _ = signal(pid, "TERM");
    if wait_gone(pid, needle, grace).await {
        return Ok(());
    }
    let _ = signal(pid, "KILL");
    if wait_gone(pid, needle, Duration::from_secs(5)).await {
        Ok(())
    } else {
        bail!("process {pid} survived SIGKILL")
    }
}

/// A `Command` that runs `program` in a session of its own (setsid(1) execs it in place, so
/// the pid stays the program's): a terminal's Ctrl-C or a test runner killing its process
/// group does not reach it.
pub fn detached(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new("setsid");
    cmd.arg(program).stdin(Stdio::null());
    cmd
}

/// The last `lines` lines of a log file, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            all[start..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Starts a detached shell that waits for process `owner` to exit and then runs `cleanup`
/// (a shell snippet). Processes we start for a test must not outlive it, and a test process
/// can die without running destructors (statics are never dropped; a runner may kill it).
pub fn spawn_reaper(owner: u32, cleanup: &str) -> anyhow::Result<()> {
    let script = format!("while kill -0 {owner} 2>/dev/null; do sleep 1; done\n{cleanup}\n",);
    detached("sh")
        .arg("-c")
        .arg(script)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("spawning the reaper shell")?;
    Ok(())
}

/// Quotes `s` for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Runs a command to completion, failing with its output when it fails.
pub async fn run_checked(cmd: &mut tokio::process::Command, what: &str) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("{what}: could not start"))?;
    if !out.status.success() {
        bail!(
            "{what}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Right after spawning, the child may still be exec'ing (`setsid` replacing itself with
    /// the program): it is alive all the same.
    #[test]
    fn a_process_just_spawned_is_alive() {
        for _ in 0..50 {
            let mut child = detached("sleep").arg("5").spawn().expect("spawn");
            let alive = pid_alive(child.id(), "sleep");
            let _ = child.kill();
            let _ = child.wait();
            assert!(alive, "pid {} looked dead right after spawning", child.id());
            assert!(!pid_alive(child.id(), "sleep"), "reaped, so gone");
        }
    }
}
