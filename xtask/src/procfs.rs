//! What the local processes are and use, read from `/proc`: process trees and CPU times, for
//! `cargo xtask bench` (with and without `--against`) and the drills.

/// Every live descendant of `pid` (its children, theirs, ...), `pid` excluded.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut tree = trees(&[pid]);
    tree.retain(|p| *p != pid);
    tree
}

/// The parent pid of `pid`.
pub fn parent_of(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// Every process in the trees under `roots`, the roots included.
pub fn trees(roots: &[u32]) -> Vec<u32> {
    let mut parent = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(ppid) = stat_fields(pid).and_then(|f| f.get(1)?.parse::<u32>().ok()) {
                parent.push((pid, ppid));
            }
        }
    }
    let mut tree = roots.to_vec();
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        let children: Vec<u32> = parent
            .iter()
            .filter(|(c, pp)| *pp == p && !tree.contains(c))
            .map(|(c, _)| *c)
            .collect();
        tree.extend(children);
        i += 1;
    }
    tree
}

/// `/proc/<pid>/stat` after the command name: state, ppid, ... (field 3 on).
fn stat_fields(pid: impl std::fmt::Display) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Clock ticks per second of `/proc/<pid>/stat`'s CPU times (USER_HZ, 100 on Linux).
const TICKS: f64 = 100.0;

/// CPU seconds (user + system) used so far by these processes.
pub fn cpu_seconds(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|pid| {
            let f = stat_fields(pid)?;
            let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
            Some(ticks as f64 / TICKS)
        })
        .sum()
}

/// CPU seconds used by this process's children that have been waited for.
pub fn children_cpu_seconds() -> f64 {
    stat_fields("self")
        .and_then(|f| {
            let ticks = f.get(13)?.parse::<u64>().ok()? + f.get(14)?.parse::<u64>().ok()?;
            Some(ticks as f64 / TICKS)
        })
        .unwrap_or(0.0)
}

/// The command name of `pid` (`/proc/<pid>/comm`).
pub fn command_name(pid: u32) -> Option<String> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(comm.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn the_descendants_of_a_process_are_found_by_parent() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & wait"])
            .spawn()
            .unwrap();
        let me = std::process::id();
        assert_eq!(parent_of(child.id()), Some(me));
        // The shell's sleep appears shortly, first as a forked `sh` until it has exec'd.
        let deadline = Instant::now() + Duration::from_secs(5);
        let found = loop {
            let d = descendants(child.id());
            let execd = d.len() == 1 && command_name(d[0]).as_deref() == Some("sleep");
            if execd || Instant::now() > deadline {
                break d;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(found.len(), 1);
        assert_eq!(command_name(found[0]).as_deref(), Some("sleep"));
        assert!(descendants(me).contains(&found[0]));
        let _ = meerkat_localstack::process::signal(found[0], "KILL");
        let _ = child.kill();
        let _ = child.wait();
    }
}
