//! `cargo xtask bench`: runs the load generator (`tools/bench`) against the running local
//! stack's DC 1 (or, with `--inter-dc`, from DC 1 to DC 2) and prints its figures, plus the CPU
//! the stack's processes used meanwhile. With `--replication`, persistent-data replication
//! from DC 1 to DC 2 instead: DC 2 is cut off by pausing its replicator (SIGSTOP/SIGCONT).
//! With `--failover` (or `--gateway-kill N`), the bench's failover rounds (or gateway kill),
//! which need no running stack. With
//! `--idle` among the bench's arguments, also the memory (RSS and PSS) each stack process grew
//! by per idle user, 5 s after the last logged in.

use anyhow::Context as _;

use crate::endpoints::Endpoints;
use crate::layout;

/// CPU seconds used so far by the processes of the local stack (services, broker, database;
/// not the peers of `--against`), from `/proc` (to the hundredth of a second): those whose
/// command line names the stack's directory or a service binary, and their children (e.g.
/// PostgreSQL's backends, whose command lines name neither).
pub(crate) fn stack_cpu_seconds() -> f64 {
    crate::procfs::cpu_seconds(&stack_pids())
}

/// The processes of the local stack that [`stack_cpu_seconds`] counts.
pub(crate) fn stack_pids() -> Vec<u32> {
    // With the slash: not `target/meerkat-test/`, the test runs' brokers and databases.
    let root = format!("{}/", layout::stack_dir().display());
    let peers = layout::against_dir().display().to_string();
    let mut pids = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let l = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let ours = (l.contains(&root) && !l.contains(&peers))
                || l.contains("target/release/c2s-gateway")
                || l.contains("target/release/router")
                || l.contains("target/release/session-replicator")
                || l.contains("target/release/dc-health");
            if ours {
                pids.push(pid);
            }
        }
    }
    crate::procfs::trees(&pids)
}

/// `meerkat-bench` arguments for `--replication`: DC 1 and DC 2, no chat, and commands that
/// pause and resume DC 2's replicator.
fn replication_args(endpoints: &Endpoints) -> anyhow::Result<Vec<String>> {
    let (Some(dc1), Some(dc2)) = (endpoints.dcs.first(), endpoints.dcs.get(1)) else {
        anyhow::bail!("--replication needs two DCs: `cargo xtask down && cargo xtask up --dcs 2`");
    };
    let replicator = dc2
        .replicators
        .first()
        .context("DC 2 has no session-replicator in endpoints.json")?;
    let pid_file = layout::run_dir().join(format!("{}.pid", replicator.instance_id));
    let (pid, _) = crate::services::live_pid(&pid_file)
        .with_context(|| format!("{} is not running", replicator.instance_id))?;
    Ok(vec![
        "--addr".into(),
        dc1.c2s.clone(),
        "--to-addr".into(),
        dc2.c2s.clone(),
        "--duration".into(),
        "0".into(),
        "--cut-off".into(),
        format!("kill -STOP {pid}"),
        "--reconnect".into(),
        format!("kill -CONT {pid}"),
    ])
}

pub async fn run(inter_dc: bool, replication: bool, args: Vec<String>) -> anyhow::Result<i32> {
    let endpoints =
        Endpoints::read()?.context("the local stack is not up: run `cargo xtask up` first")?;
    let dc = endpoints.dcs.first().context("no DC in endpoints.json")?;
    let mut target = vec!["--addr".to_owned(), dc.c2s.clone()];
    if replication {
        target = replication_args(&endpoints)?;
    } else if inter_dc {
        let Some(dc2) = endpoints.dcs.get(1) else {
            anyhow::bail!("--inter-dc needs two DCs: `cargo xtask down && cargo xtask up --dcs 2`");
        };
        target.extend(["--to-addr".to_owned(), dc2.c2s.clone()]);
    }
    build_bench().await?;
    let idle = args.iter().any(|a| a == "--idle");
    let memory_before = memory_by_name(&stack_pids());
    let cpu_before = stack_cpu_seconds();
    let started = std::time::Instant::now();
    let mut bench =
        tokio::process::Command::new(layout::root().join("target/release/meerkat-bench"));
    bench
        .args(&target)
        .args(["--domain", &endpoints.domain])
        .args(&args);
    let status = if idle {
        idle_memory(bench, &memory_before).await?
    } else if args.iter().any(|a| a == "--muc") {
        bench.arg("--json");
        let (status, cost, json) = muc_run(bench, &stack_pids).await?;
        // Without the bench's result (it failed) the phases' figures mean nothing.
        if let Some(occupants) = json.as_ref().and_then(|j| j.get("joined")?.as_f64()) {
            println!("{}", cost.summary(occupants));
        }
        status
    } else {
        bench.status().await.context("running meerkat-bench")?
    };
    let wall = started.elapsed().as_secs_f64();
    let cpu = stack_cpu_seconds() - cpu_before;
    println!(
        "stack processes, every DC (gateways, routers, replicators, health services, RabbitMQ, PostgreSQL): {cpu:.1} CPU-s in {wall:.1} s = {:.0}% of one core",
        100.0 * cpu / wall
    );
    Ok(status.code().unwrap_or(1))
}

/// Runs `meerkat-bench --idle`, passing its output on; 5 s after it says its users are online
/// (`idle: N users online ...`), prints how much each stack process grew per user since
/// `before` (RSS and PSS, KiB), then waits for it to end.
async fn idle_memory(
    mut bench: tokio::process::Command,
    before: &std::collections::BTreeMap<String, (f64, f64)>,
) -> anyhow::Result<std::process::ExitStatus> {
    use tokio::io::AsyncBufReadExt as _;
    let mut child = bench
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running meerkat-bench")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    while let Some(line) = lines.next_line().await? {
        println!("{line}");
        let users = line
            .strip_prefix("idle: ")
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse::<usize>().ok());
        let Some(users) = users.filter(|u| *u > 0) else {
            continue;
        };
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        let with = memory_by_name(&stack_pids());
        for (name, (rss, pss)) in &with {
            let (rss0, pss0) = before.get(name).copied().unwrap_or_default();
            println!(
                "memory of {name}: RSS {:.1} -> {:.1} MiB, PSS {:.1} -> {:.1} MiB: {:+.2} KiB RSS, {:+.2} KiB PSS per user",
                rss0 / 1024.0,
                rss / 1024.0,
                pss0 / 1024.0,
                pss / 1024.0,
                (rss - rss0) / users as f64,
                (pss - pss0) / users as f64,
            );
        }
    }
    Ok(child.wait().await?)
}

/// What the server spent on the phases of `meerkat-bench --muc`, read from `/proc` at its
/// `muc: online`, `muc: joined` and `muc: delivered` lines.
#[derive(Clone, Debug, Default)]
pub(crate) struct MucCost {
    /// RSS and PSS (KiB) of the server's processes with the users online, not yet joined.
    pub online: (f64, f64),
    /// The same with every occupant joined.
    pub joined: (f64, f64),
    /// CPU-seconds and wall seconds of the joins (from `online` to `joined`).
    pub join: (f64, f64),
    /// CPU-seconds and wall seconds of the messages and their drain (`joined` to `delivered`).
    pub chat: (f64, f64),
}

impl MucCost {
    /// PSS grown per occupant by the joins, KiB.
    pub fn pss_per_occupant(&self, occupants: f64) -> f64 {
        (self.joined.1 - self.online.1) / occupants.max(1.0)
    }
    pub fn join_cpu_percent(&self) -> f64 {
        100.0 * self.join.0 / self.join.1.max(0.001)
    }
    pub fn chat_cpu_percent(&self) -> f64 {
        100.0 * self.chat.0 / self.chat.1.max(0.001)
    }
    pub fn summary(&self, occupants: f64) -> String {
        format!(
            "server memory with the users online: RSS {:.1} MiB, PSS {:.1} MiB; joined: RSS {:.1} MiB, PSS {:.1} MiB = {:+.1} KiB RSS, {:+.1} KiB PSS per occupant; server CPU during the joins {:.1} CPU-s in {:.1} s = {:.0}% of one core, during the messages {:.1} CPU-s in {:.1} s = {:.0}%",
            self.online.0 / 1024.0,
            self.online.1 / 1024.0,
            self.joined.0 / 1024.0,
            self.joined.1 / 1024.0,
            (self.joined.0 - self.online.0) / occupants.max(1.0),
            self.pss_per_occupant(occupants),
            self.join.0,
            self.join.1,
            self.join_cpu_percent(),
            self.chat.0,
            self.chat.1,
            self.chat_cpu_percent(),
        )
    }
}

/// Runs `meerkat-bench --muc … --json` (`bench`), passing its output on except its JSON line,
/// which it returns; reads the memory and CPU of the server's processes (`pids`) at the bench's
/// phase lines.
pub(crate) async fn muc_run(
    mut bench: tokio::process::Command,
    pids: &dyn Fn() -> Vec<u32>,
) -> anyhow::Result<(std::process::ExitStatus, MucCost, Option<serde_json::Value>)> {
    use tokio::io::AsyncBufReadExt as _;
    let mut child = bench
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("running meerkat-bench --muc")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let memory = || {
        memory_by_name(&pids())
            .values()
            .fold((0.0, 0.0), |(r, p), (rss, pss)| (r + rss, p + pss))
    };
    let mut cost = MucCost::default();
    let mut mark = (0.0, std::time::Instant::now());
    let mut json = None;
    while let Some(line) = lines.next_line().await? {
        if line.starts_with('{') {
            json = serde_json::from_str(&line).ok();
            continue;
        }
        println!("{line}");
        let phase = line.strip_prefix("muc: ").and_then(|l| l.split(':').next());
        let now = (
            crate::procfs::cpu_seconds(&pids()),
            std::time::Instant::now(),
        );
        let spent = (now.0 - mark.0, now.1.duration_since(mark.1).as_secs_f64());
        match phase {
            Some("online") => cost.online = memory(),
            Some("joined") => {
                cost.joined = memory();
                cost.join = spent;
            }
            Some("delivered") => cost.chat = spent,
            _ => continue,
        }
        mark = now;
    }
    Ok((child.wait().await?, cost, json))
}

/// RSS and PSS (KiB, `/proc/<pid>/smaps_rollup`) per command name (`c2s-gateway`, `router`,
/// `beam.smp`, `postgres`, ...), summed over the processes of that name.
fn memory_by_name(pids: &[u32]) -> std::collections::BTreeMap<String, (f64, f64)> {
    let mut by_name = std::collections::BTreeMap::new();
    for &pid in pids {
        let (Some(name), Ok(rollup)) = (
            crate::procfs::command_name(pid),
            std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")),
        ) else {
            continue;
        };
        let field = |key: &str| {
            rollup
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let e: &mut (f64, f64) = by_name.entry(name).or_default();
        e.0 += field("Rss:");
        e.1 += field("Pss:");
    }
    by_name
}

/// `--failover` and `--gateway-kill N`: `meerkat-bench` with `mode`, which starts its own DCs
/// (and, unless `MEERKAT_TEST_INFRA` names one, its own RabbitMQ and PostgreSQL, stopped when
/// it exits).
pub async fn in_process(mode: &[String], args: Vec<String>) -> anyhow::Result<i32> {
    build_bench().await?;
    let status = tokio::process::Command::new(layout::root().join("target/release/meerkat-bench"))
        .args(mode)
        .args(&args)
        .status()
        .await
        .context("running meerkat-bench")?;
    Ok(status.code().unwrap_or(1))
}

pub(crate) async fn build_bench() -> anyhow::Result<()> {
    let build =
        tokio::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "--quiet", "-p", "meerkat-bench"])
            .current_dir(layout::root())
            .status()
            .await?;
    anyhow::ensure!(build.success(), "building meerkat-bench failed");
    Ok(())
}
