//! `cargo xtask bench --against ejabberd|prosody`: the same `meerkat-bench` workloads against
//! Meerkat (the running local stack's DC 1) and against a peer server on loopback, alternately,
//! `--runs` times; then a side-by-side table with medians, ranges and Meerkat/peer ratios.
//!
//! The peer is Debian's package (installed if missing), run as an instance of our own: its
//! configuration, data and logs in `target/meerkat/against/<server>/`, its own port, so it
//! clashes neither with the package's service nor with Meerkat's 5222. Server CPU is measured
//! from `/proc` before and after each run: for Meerkat every process of the stack (see
//! [`crate::bench::stack_cpu_seconds`]), for the peer every process of its instance.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::endpoints::Endpoints;
use crate::{layout, procfs};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Peer {
    Ejabberd,
    Prosody,
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::Ejabberd => "ejabberd",
            Peer::Prosody => "prosody",
        }
    }
    /// The Debian package and the version the comparison is made with.
    fn package(self) -> (&'static str, &'static str) {
        match self {
            Peer::Ejabberd => ("ejabberd", "23.01"),
            Peer::Prosody => ("prosody", "0.12.3"),
        }
    }
    /// Its client (STARTTLS) port on loopback: away from Meerkat's 5222 + 10 per DC.
    fn port(self) -> u16 {
        match self {
            Peer::Ejabberd => 15222,
            Peer::Prosody => 15232,
        }
    }
    fn dir(self) -> PathBuf {
        layout::against_dir().join(self.name())
    }
}

pub struct AgainstArgs {
    pub peer: Peer,
    pub runs: usize,
    /// Clients of the login workload; 0 skips it.
    pub login_clients: usize,
    pub login_duration: u64,
    /// Users of the idle workload (memory per connected user from a fresh start); 0 skips it.
    pub idle_users: usize,
    /// Users of the peak workload; 0 skips it.
    pub peak_users: usize,
    /// The peak workload's first rate, msg/s.
    pub peak_from: f64,
    /// Passed on to `meerkat-bench` for the chat workload.
    pub chat_args: Vec<String>,
    /// Skip the chat workload.
    pub no_chat: bool,
    /// Run the workloads against the peer alone (Meerkat's column stays empty): when the
    /// local stack cannot be up, e.g. another stack holds its ports.
    pub peer_only: bool,
    /// Occupants of the group chat workload (`meerkat-bench --muc`); 0 skips it.
    pub muc_occupants: usize,
    /// Groupchat messages a second into its room, in all.
    pub muc_rate: f64,
    /// Seconds of its messages.
    pub muc_duration: u64,
}

const DOMAIN: &str = "example.com";

/// One workload's figures from one run against one server.
#[derive(Clone, Debug, Default)]
struct Figures {
    /// msg/s (chat, peak) or logins/s (login).
    rate: f64,
    p50: f64,
    p99: f64,
    max: f64,
    /// Messages lost (chat) or failed logins (login).
    lost: f64,
    /// The server's CPU, percent of one core.
    server_cpu: f64,
    /// The load generator's CPU, percent of one core.
    bench_cpu: f64,
    /// Idle: the server's memory (PSS) grown per connected user, KiB.
    kib_per_user: f64,
    /// Idle: the server's memory (PSS) with every user connected, MiB.
    mib: f64,
    /// Idle: the server's memory (PSS) before the users connected, MiB.
    mib_before: f64,
    /// Group chat: the joins' time for the whole room (s), per join p50 and p99 (ms), the
    /// server's CPU during them (% of one core), and its memory (PSS) grown per occupant (KiB).
    join_secs: f64,
    join_p50: f64,
    join_p99: f64,
    join_cpu: f64,
    kib_per_occupant: f64,
}

/// Per round: (Meerkat, peer).
type Series = Vec<(Figures, Figures)>;

#[derive(Default)]
struct Results {
    idle: Series,
    chat: Series,
    login: Series,
    peak: Series,
    muc: Series,
}

pub async fn run(args: AgainstArgs) -> anyhow::Result<i32> {
    anyhow::ensure!(args.runs >= 1, "--runs must be at least 1");
    let peer = args.peer;
    crate::bench::build_bench().await?;
    let meerkat_addr = if args.peer_only {
        SocketAddr::from(([127, 0, 0, 1], 0))
    } else {
        ensure_meerkat().await?
    };
    ensure_installed(peer).await?;
    let mut instance = Instance::start(peer).await?;
    let result = rounds(&args, meerkat_addr, &mut instance).await;
    instance.stop().await;
    print_table(&args, &result?);
    Ok(0)
}

/// The rounds: in odd ones Meerkat goes first, in even ones the peer. With an idle workload,
/// each round starts both servers afresh and measures idle memory first.
async fn rounds(
    args: &AgainstArgs,
    meerkat: SocketAddr,
    instance: &mut Instance,
) -> anyhow::Result<Results> {
    let peer_addr = SocketAddr::from(([127, 0, 0, 1], args.peer.port()));
    let mut results = Results::default();
    for round in 1..=args.runs {
        if args.idle_users > 0 {
            println!(
                "== round {round}/{}: fresh start of both servers",
                args.runs
            );
            if !args.peer_only {
                restart_meerkat().await?;
            }
            instance.restart().await?;
        }
        let meerkat_first = round % 2 == 1;
        let mut order = [Target::Meerkat, Target::Peer(instance.pid)];
        if !meerkat_first {
            order.reverse();
        }
        let mut figures: [[Figures; 2]; 5] = Default::default();
        for target in order {
            if args.peer_only && matches!(target, Target::Meerkat) {
                continue;
            }
            let (addr, slot) = match target {
                Target::Meerkat => (meerkat, 0),
                Target::Peer(_) => (peer_addr, 1),
            };
            let label = target.label(args.peer);
            let say = |w: &str| println!("== round {round}/{}: {w} against {label}", args.runs);
            if args.idle_users > 0 {
                say("idle");
                figures[0][slot] = measure_idle(&target, addr, args.idle_users).await?;
            }
            if !args.no_chat {
                say("chat");
                figures[1][slot] = measure(&target, addr, &args.chat_args).await?;
            }
            if args.login_clients > 0 {
                say("login loop");
                let login_args = strings(&[
                    "--login-loop",
                    &args.login_clients.to_string(),
                    "--duration",
                    &args.login_duration.to_string(),
                ]);
                figures[2][slot] = measure(&target, addr, &login_args).await?;
            }
            if args.peak_users > 0 {
                say("peak");
                let peak_args = strings(&[
                    "--peak",
                    "--users",
                    &args.peak_users.to_string(),
                    "--rate",
                    &args.peak_from.to_string(),
                    "--duration",
                    "10",
                ]);
                figures[3][slot] = measure(&target, addr, &peak_args).await?;
            }
            if args.muc_occupants > 0 {
                say("group chat");
                figures[4][slot] = measure_muc(&target, addr, args).await?;
            }
        }
        let [idle, chat, login, peak, muc] = figures;
        for (series, [m, p]) in [
            (&mut results.idle, idle),
            (&mut results.chat, chat),
            (&mut results.login, login),
            (&mut results.peak, peak),
            (&mut results.muc, muc),
        ] {
            series.push((m, p));
        }
    }
    Ok(results)
}

fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|&s| s.to_owned()).collect()
}

enum Target {
    Meerkat,
    /// The peer's instance, by the pid we started.
    Peer(u32),
}

impl Target {
    fn label(&self, peer: Peer) -> &'static str {
        match self {
            Target::Meerkat => "meerkat",
            Target::Peer(_) => peer.name(),
        }
    }
    fn pids(&self) -> Vec<u32> {
        match self {
            Target::Meerkat => crate::bench::stack_pids(),
            Target::Peer(pid) => procfs::trees(&[*pid]),
        }
    }
    fn cpu_seconds(&self) -> f64 {
        procfs::cpu_seconds(&self.pids())
    }
}

/// `cargo xtask down`, then `up`: the stack as after a fresh start. `up` is tried twice: on a
/// busy machine a broker can miss its start-up deadline once.
async fn restart_meerkat() -> anyhow::Result<()> {
    let xtask = |cmd: &'static str| {
        let mut c = tokio::process::Command::new(std::env::current_exe()?);
        c.arg(cmd).stdout(std::process::Stdio::null());
        anyhow::Ok(c)
    };
    anyhow::ensure!(
        xtask("down")?.status().await?.success(),
        "cargo xtask down failed"
    );
    if !xtask("up")?.status().await?.success() {
        println!("cargo xtask up failed; down and up once more");
        let _ = xtask("down")?.status().await;
        anyhow::ensure!(
            xtask("up")?.status().await?.success(),
            "cargo xtask up failed"
        );
    }
    Ok(())
}

/// The idle workload: the server's memory (PSS of all its processes) before and while `users`
/// users are connected and idle (`meerkat-bench --idle`), 5 s after the last logged in.
async fn measure_idle(target: &Target, addr: SocketAddr, users: usize) -> anyhow::Result<Figures> {
    use tokio::io::AsyncBufReadExt as _;
    let by_name_before = pss_by_name(&target.pids());
    let before: f64 = by_name_before.values().sum();
    let mut child = tokio::process::Command::new(layout::release_bin("meerkat-bench"))
        .args(["--addr", &addr.to_string(), "--domain", DOMAIN, "--json"])
        .args(["--idle", "--users", &users.to_string(), "--duration", "600"])
        .args(["--prefix", "benchidle"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("running meerkat-bench --idle")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut online = false;
    while let Some(line) = lines.next_line().await? {
        if line.starts_with('{') {
            online = line.contains("\"online\":true");
            break;
        }
        println!("{line}");
    }
    anyhow::ensure!(
        online,
        "meerkat-bench --idle ended before its users were online"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let by_name_with = pss_by_name(&target.pids());
    let with: f64 = by_name_with.values().sum();
    let _ = child.kill().await;
    let growth: Vec<String> = by_name_with
        .iter()
        .map(|(name, kib)| {
            let was = by_name_before.get(name).copied().unwrap_or(0.0);
            format!("{name} {:+.1}", (kib - was) / users as f64)
        })
        .collect();
    println!("KiB per user by process: {}", growth.join(", "));
    let f = Figures {
        kib_per_user: (with - before) / users as f64,
        mib: with / 1024.0,
        mib_before: before / 1024.0,
        ..Figures::default()
    };
    println!(
        "server memory (PSS): {:.1} MiB before, {:.1} MiB with {users} users online = {:.1} KiB per user",
        f.mib_before, f.mib, f.kib_per_user
    );
    Ok(f)
}

/// [`pss_kib`] per command name (`/proc/<pid>/comm`: `beam.smp`, `postgres`, `c2s-gateway`, ...).
fn pss_by_name(pids: &[u32]) -> std::collections::BTreeMap<String, f64> {
    let mut by_name = std::collections::BTreeMap::new();
    for &pid in pids {
        let Ok(name) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else {
            continue;
        };
        *by_name.entry(name.trim().to_owned()).or_insert(0.0) += pss_kib(&[pid]);
    }
    by_name
}

/// The proportional set size of these processes, KiB (`/proc/<pid>/smaps_rollup`): shared
/// pages counted once in all.
fn pss_kib(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|pid| {
            let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
            rollup
                .lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .sum()
}

/// One `meerkat-bench` run against `addr`, with the server's and its own CPU.
async fn measure(target: &Target, addr: SocketAddr, args: &[String]) -> anyhow::Result<Figures> {
    let server_before = target.cpu_seconds();
    let bench_before = procfs::children_cpu_seconds();
    let started = Instant::now();
    let out = tokio::process::Command::new(layout::release_bin("meerkat-bench"))
        .args(["--addr", &addr.to_string(), "--domain", DOMAIN, "--json"])
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .await
        .context("running meerkat-bench")?;
    let wall = started.elapsed().as_secs_f64();
    let server = target.cpu_seconds() - server_before;
    let bench = procfs::children_cpu_seconds() - bench_before;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut json = None;
    for line in stdout.lines() {
        if line.starts_with('{') {
            json = serde_json::from_str::<serde_json::Value>(line).ok();
        } else {
            println!("{line}");
        }
    }
    anyhow::ensure!(
        out.status.success(),
        "meerkat-bench failed ({})",
        out.status
    );
    let json = json.context("meerkat-bench printed no JSON result")?;
    let num = |k: &str| {
        json.get(k)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(0.0)
    };
    let f = Figures {
        rate: num("rate"),
        p50: num("p50_ms"),
        p99: num("p99_ms"),
        max: num("max_ms"),
        lost: if json.get("workload").and_then(|w| w.as_str()) == Some("login") {
            num("failed")
        } else {
            num("lost")
        },
        server_cpu: 100.0 * server / wall,
        bench_cpu: 100.0 * bench / wall,
        ..Figures::default()
    };
    println!(
        "server CPU {:.1} s in {wall:.1} s = {:.0}% of one core; meerkat-bench {:.0}%",
        server, f.server_cpu, f.bench_cpu
    );
    Ok(f)
}

/// The group chat workload (`meerkat-bench --muc`): against Meerkat with two DCs or more, the
/// odd users at DC 2 (`--to-addr`). The server's CPU of the joins and of the messages, and its
/// memory grown per occupant, are read at the bench's phase lines.
async fn measure_muc(
    target: &Target,
    addr: SocketAddr,
    args: &AgainstArgs,
) -> anyhow::Result<Figures> {
    let mut bench = tokio::process::Command::new(layout::release_bin("meerkat-bench"));
    bench
        .args(["--addr", &addr.to_string(), "--domain", DOMAIN, "--json"])
        .args(["--muc", &args.muc_occupants.to_string()])
        .args(["--rate", &args.muc_rate.to_string()])
        .args(["--duration", &args.muc_duration.to_string()])
        .stderr(std::process::Stdio::inherit());
    if let Target::Meerkat = target {
        if let Some(dc2) = Endpoints::read()?.as_ref().and_then(|e| e.dcs.get(1)) {
            bench.args(["--to-addr", &dc2.c2s]);
        }
    }
    let bench_before = procfs::children_cpu_seconds();
    let started = Instant::now();
    let (status, cost, json) = crate::bench::muc_run(bench, &|| target.pids()).await?;
    let wall = started.elapsed().as_secs_f64();
    anyhow::ensure!(status.success(), "meerkat-bench --muc failed ({status})");
    let json = json.context("meerkat-bench --muc printed no JSON result")?;
    let num = |k: &str| {
        json.get(k)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(0.0)
    };
    println!("{}", cost.summary(num("joined")));
    Ok(Figures {
        rate: num("rate"),
        p50: num("p50_ms"),
        p99: num("p99_ms"),
        max: num("max_ms"),
        lost: num("lost"),
        server_cpu: cost.chat_cpu_percent(),
        bench_cpu: 100.0 * (procfs::children_cpu_seconds() - bench_before) / wall,
        join_secs: num("join_total_s"),
        join_p50: num("join_p50_ms"),
        join_p99: num("join_p99_ms"),
        join_cpu: cost.join_cpu_percent(),
        kib_per_occupant: cost.pss_per_occupant(num("joined")),
        ..Figures::default()
    })
}

/// A table row: its name, the figure it shows, the decimals.
type Row = (&'static str, fn(&Figures) -> f64, usize);

fn print_table(args: &AgainstArgs, r: &Results) {
    let peer = args.peer.name();
    println!();
    println!(
        "Meerkat vs {peer}: {} rounds, alternating; median [min–max]; ratio = Meerkat/{peer} per round",
        args.runs
    );
    println!(
        "| {:<34} | {:<24} | {:<24} | {:<22} |",
        "", "Meerkat", peer, "Meerkat/peer"
    );
    println!(
        "|{}|{}|{}|{}|",
        "-".repeat(36),
        "-".repeat(26),
        "-".repeat(26),
        "-".repeat(24)
    );
    let cpu: [Row; 2] = [
        ("server CPU % of a core", |f| f.server_cpu, 0),
        ("meerkat-bench CPU %", |f| f.bench_cpu, 0),
    ];
    if args.idle_users > 0 {
        let rows: [Row; 3] = [
            ("KiB per user", |f| f.kib_per_user, 1),
            ("MiB with the users", |f| f.mib, 0),
            ("MiB fresh", |f| f.mib_before, 0),
        ];
        for (name, get, prec) in rows {
            row(
                &format!("idle {}: {name}", args.idle_users),
                &r.idle,
                get,
                prec,
            );
        }
    }
    let chat: [Row; 5] = [
        ("delivered msg/s", |f| f.rate, 0),
        ("latency p50 ms", |f| f.p50, 2),
        ("latency p99 ms", |f| f.p99, 2),
        ("latency max ms", |f| f.max, 2),
        ("lost", |f| f.lost, 0),
    ];
    if !args.no_chat {
        for (name, get, prec) in chat.iter().chain(&cpu) {
            row(&format!("chat: {name}"), &r.chat, *get, *prec);
        }
    }
    if args.login_clients > 0 {
        let rows: [Row; 4] = [
            ("logins/s", |f| f.rate, 0),
            ("latency p50 ms", |f| f.p50, 2),
            ("latency p99 ms", |f| f.p99, 2),
            ("failed", |f| f.lost, 0),
        ];
        for (name, get, prec) in rows.iter().chain(&cpu) {
            let name = format!("login {}: {name}", args.login_clients);
            row(&name, &r.login, *get, *prec);
        }
    }
    if args.peak_users > 0 {
        let rows: [Row; 3] = [
            ("msg/s at p99 < 100 ms", |f| f.rate, 0),
            ("its p99 ms", |f| f.p99, 2),
            ("server CPU % of a core", |f| f.server_cpu, 0),
        ];
        for (name, get, prec) in rows {
            row(
                &format!("peak {}: {name}", args.peak_users),
                &r.peak,
                get,
                prec,
            );
        }
    }
    if args.muc_occupants > 0 {
        let rows: [Row; 12] = [
            ("join, whole room s", |f| f.join_secs, 1),
            ("join p50 ms", |f| f.join_p50, 2),
            ("join p99 ms", |f| f.join_p99, 2),
            ("joins: server CPU %", |f| f.join_cpu, 0),
            ("KiB per occupant", |f| f.kib_per_occupant, 1),
            ("deliveries/s", |f| f.rate, 0),
            ("latency p50 ms", |f| f.p50, 2),
            ("latency p99 ms", |f| f.p99, 2),
            ("latency max ms", |f| f.max, 2),
            ("lost", |f| f.lost, 0),
            ("messages: server CPU %", |f| f.server_cpu, 0),
            ("meerkat-bench CPU %", |f| f.bench_cpu, 0),
        ];
        for (name, get, prec) in rows {
            let name = format!("muc {}: {name}", args.muc_occupants);
            row(&name, &r.muc, get, prec);
        }
    }
    if !args.no_chat {
        println!("chat: meerkat-bench {}", args.chat_args.join(" "));
    }
    if args.muc_occupants > 0 {
        println!(
            "muc: {} occupants join one room (Meerkat with two DCs: half at each), then {} groupchat messages/s for {} s; deliveries = messages x occupants; memory (PSS) grown by the joins; CPU % of a core during the joins and during the messages",
            args.muc_occupants, args.muc_rate, args.muc_duration
        );
    }
    if args.login_clients > 0 {
        println!(
            "login: {} clients in a closed loop of connect, STARTTLS, SASL PLAIN, bind, close, {} s",
            args.login_clients, args.login_duration
        );
    }
    if args.idle_users > 0 {
        println!(
            "idle: {} users logged in and idle, memory (PSS) of every server process 5 s after the last, from a fresh start",
            args.idle_users
        );
    }
    if args.peak_users > 0 {
        println!(
            "peak: {} users, 10 s steps from {} msg/s, doubling then narrowing; CPU over the whole search",
            args.peak_users, args.peak_from
        );
    }
}

fn row(name: &str, series: &Series, get: fn(&Figures) -> f64, prec: usize) {
    let m: Vec<f64> = series.iter().map(|(m, _)| get(m)).collect();
    let p: Vec<f64> = series.iter().map(|(_, p)| get(p)).collect();
    let ratios: Vec<f64> = series
        .iter()
        .filter(|(_, p)| get(p) != 0.0)
        .map(|(m, p)| get(m) / get(p))
        .collect();
    let ratio = if ratios.is_empty() {
        "–".to_owned()
    } else {
        summary(&ratios, 2)
    };
    println!(
        "| {name:<34} | {:<24} | {:<24} | {ratio:<22} |",
        summary(&m, prec),
        summary(&p, prec)
    );
}

/// `median [min–max]`.
fn summary(values: &[f64], prec: usize) -> String {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    if n == 1 {
        format!("{median:.prec$}")
    } else {
        format!("{median:.prec$} [{:.prec$}–{:.prec$}]", v[0], v[n - 1])
    }
}

/// DC 1's client address of the running local stack; `cargo xtask up` first if it is not up.
async fn ensure_meerkat() -> anyhow::Result<SocketAddr> {
    let reachable = |e: &Endpoints| -> Option<SocketAddr> {
        let addr: SocketAddr = e.dcs.first()?.c2s.parse().ok()?;
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1))
            .ok()
            .map(|_| addr)
    };
    if let Some(addr) = Endpoints::read()?.as_ref().and_then(reachable) {
        return Ok(addr);
    }
    println!("the local stack is not up: cargo xtask up");
    let status = tokio::process::Command::new(std::env::current_exe()?)
        .arg("up")
        .status()
        .await?;
    anyhow::ensure!(status.success(), "cargo xtask up failed");
    let endpoints = Endpoints::read()?.context("no endpoints.json after `up`")?;
    anyhow::ensure!(
        endpoints.domain == DOMAIN,
        "the stack serves {}, the comparison {DOMAIN}",
        endpoints.domain
    );
    reachable(&endpoints).context("DC 1's client port does not answer after `up`")
}

/// Installs the peer's Debian package if missing, and stops the service the package may have
/// started (our instance has its own configuration and port).
async fn ensure_installed(peer: Peer) -> anyhow::Result<()> {
    let (package, version) = peer.package();
    let installed = std::process::Command::new("dpkg-query")
        .args(["-W", "-f=${Status} ${Version}", package])
        .output()?;
    let status = String::from_utf8_lossy(&installed.stdout).into_owned();
    if status.starts_with("install ok installed") {
        if !status.contains(version) {
            println!("note: {package} {status:?} installed, the comparison is made with {version}");
        }
        return Ok(());
    }
    println!("installing Debian's {package} {version}");
    let sh = |cmd: &str| {
        std::process::Command::new("sh")
            .args(["-c", cmd])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
    };
    anyhow::ensure!(sh("apt-get update")?.success(), "apt-get update failed");
    anyhow::ensure!(
        sh(&format!(
            "apt-get install -y --no-install-recommends {package}"
        ))?
        .success(),
        "installing {package} failed"
    );
    // Debian starts the packaged service (unless policy-rc.d forbids it): stop it.
    let _ = sh(&format!("/etc/init.d/{package} stop >/dev/null 2>&1"));
    Ok(())
}

/// A peer server of our own, started by us.
struct Instance {
    peer: Peer,
    child: tokio::process::Child,
    pid: u32,
}

const EJABBERD_NODE: &str = "ejabberd-bench@localhost";

impl Instance {
    async fn start(peer: Peer) -> anyhow::Result<Instance> {
        let dir = peer.dir();
        stop_stale(peer, &dir).await;
        std::fs::create_dir_all(dir.join("logs"))?;
        let (cert, key) = crate::certs::ensure(DOMAIN)?;
        let log = std::fs::File::create(dir.join("logs").join("console.log"))?;
        let mut cmd = match peer {
            Peer::Ejabberd => {
                std::fs::create_dir_all(dir.join("database"))?;
                std::fs::write(dir.join("server.pem"), ejabberd_pem()?)?;
                std::fs::write(dir.join("ejabberd.yml"), ejabberd_config(&dir, peer.port()))?;
                // `EXEC_CMD`: ejabberd runs as the calling user, not through `su` to the
                // package's user, which gets the system's default soft limit of 1024 open
                // files: ejabberd then refuses connections beyond about a thousand users.
                std::fs::write(
                    dir.join("ejabberdctl.cfg"),
                    "ERL_OPTIONS=\"-env ERL_CRASH_DUMP_BYTES 0\"\nEXEC_CMD=as_current_user\n",
                )?;
                std::fs::copy("/etc/ejabberd/inetrc", dir.join("inetrc"))?;
                // Its files stay the package user's, as a packaged ejabberd expects.
                let chown = std::process::Command::new("chown")
                    .args(["-R", "ejabberd:ejabberd"])
                    .arg(&dir)
                    .status()?;
                anyhow::ensure!(chown.success(), "chown ejabberd {}", dir.display());
                let mut c = tokio::process::Command::new("ejabberdctl");
                c.args(ejabberdctl_args(&dir)).arg("foreground");
                c
            }
            Peer::Prosody => {
                std::fs::create_dir_all(dir.join("data"))?;
                std::fs::write(dir.join("cert.pem"), std::fs::read(&cert)?)?;
                std::fs::write(dir.join("key.pem"), std::fs::read(&key)?)?;
                std::fs::write(
                    dir.join("prosody.cfg.lua"),
                    prosody_config(&dir, peer.port()),
                )?;
                let mut c = tokio::process::Command::new("prosody");
                c.arg("--config").arg(dir.join("prosody.cfg.lua")).arg("-F");
                c
            }
        };
        let child = cmd
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", peer.name()))?;
        let pid = child.id().context("no pid")?;
        std::fs::write(dir.join("pid"), pid.to_string())?;
        let mut instance = Instance { peer, child, pid };
        let addr = SocketAddr::from(([127, 0, 0, 1], peer.port()));
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                break;
            }
            if let Ok(Some(status)) = instance.child.try_wait() {
                anyhow::bail!(
                    "{} exited ({status}) before listening; see {}",
                    peer.name(),
                    dir.join("logs").display()
                );
            }
            if Instant::now() > deadline {
                instance.stop().await;
                anyhow::bail!(
                    "{} does not listen on {addr}; see {}",
                    peer.name(),
                    dir.join("logs").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        println!(
            "{} listens on {addr} (pid {pid}, {})",
            peer.name(),
            dir.display()
        );
        Ok(instance)
    }

    /// Stops the instance and starts it again (its data kept).
    async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await;
        *self = Instance::start(self.peer).await?;
        Ok(())
    }

    async fn stop(&mut self) {
        if self.peer == Peer::Ejabberd {
            let _ = tokio::process::Command::new("ejabberdctl")
                .args(ejabberdctl_args(&self.peer.dir()))
                .arg("stop")
                .stdout(std::process::Stdio::null())
                .status()
                .await;
        } else {
            signal_group(self.pid, "TERM");
        }
        if tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .is_err()
        {
            signal_group(self.pid, "KILL");
            let _ = self.child.wait().await;
        }
        let _ = std::fs::remove_file(self.peer.dir().join("pid"));
    }
}

/// An instance left by an interrupted run: its process group (we started it in a group of its
/// own, whose id is the pid we recorded).
async fn stop_stale(peer: Peer, dir: &Path) {
    let Ok(pid) = std::fs::read_to_string(dir.join("pid")) else {
        return;
    };
    let Ok(pid) = pid.trim().parse::<u32>() else {
        return;
    };
    if !Path::new(&format!("/proc/{pid}")).exists() {
        return;
    }
    println!(
        "stopping the {} instance of an earlier run (pid {pid})",
        peer.name()
    );
    if peer == Peer::Ejabberd {
        let _ = tokio::process::Command::new("ejabberdctl")
            .args(ejabberdctl_args(dir))
            .arg("stop")
            .status()
            .await;
    }
    signal_group(pid, "TERM");
    tokio::time::sleep(Duration::from_secs(2)).await;
    signal_group(pid, "KILL");
}

fn signal_group(pgid: u32, signal: &str) {
    let _ = std::process::Command::new("kill")
        .args([&format!("-{signal}"), "--", &format!("-{pgid}")])
        .stderr(std::process::Stdio::null())
        .status();
}

/// A self-signed certificate and key for ejabberd: the stack's lasts until the year 4096,
/// beyond what ejabberd's expiry timer accepts (it stops with `badarg` in `start_timer`).
fn ejabberd_pem() -> anyhow::Result<String> {
    let mut params = rcgen::CertificateParams::new(vec![DOMAIN.to_owned(), format!("*.{DOMAIN}")])?;
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2035, 1, 1);
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(format!("{}{}", cert.pem(), key.serialize_pem()))
}

fn ejabberdctl_args(dir: &Path) -> Vec<String> {
    let p = |f: &str| dir.join(f).display().to_string();
    vec![
        "--node".into(),
        EJABBERD_NODE.into(),
        "--config-dir".into(),
        dir.display().to_string(),
        "--config".into(),
        p("ejabberd.yml"),
        "--ctl-config".into(),
        p("ejabberdctl.cfg"),
        "--spool".into(),
        p("database"),
        "--logs".into(),
        p("logs"),
    ]
}

/// ejabberd 23.01: one host, STARTTLS required, no shaper, roster, offline, ping, disco,
/// carbons, MAM (every message archived), in-band registration for anyone without a
/// per-address timeout, SCRAM-hashed passwords (as Meerkat and Prosody store them), group chat
/// (rooms of up to 1000 occupants, archived).
fn ejabberd_config(dir: &Path, port: u16) -> String {
    let pem = dir.join("server.pem").display().to_string();
    format!(
        r#"# Written by `cargo xtask bench --against ejabberd`.
hosts:
  - {DOMAIN}
loglevel: warning
certfiles:
  - "{pem}"
auth_method: internal
auth_password_format: scram
default_db: mnesia
registration_timeout: infinity
listen:
  -
    port: {port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls: true
    starttls_required: true
    shaper: none
    # As deep an accept queue as Meerkat's gateway listens with (tokio's 1024).
    backlog: 1024
    max_stanza_size: 262144
    access: c2s
acl:
  local:
    user_regexp: ""
  loopback:
    ip:
      - 127.0.0.0/8
access_rules:
  c2s:
    allow: all
  register:
    allow: all
  local:
    allow: local
shaper_rules:
  max_user_sessions: 100000
  max_user_offline_messages: 100000
modules:
  mod_roster: {{}}
  mod_offline:
    access_max_user_messages: max_user_offline_messages
  mod_ping: {{}}
  mod_disco: {{}}
  mod_carboncopy: {{}}
  mod_mam:
    default: always
  mod_register:
    access: register
    ip_access: all
  # Group chat at conference.{DOMAIN} (the default host), open to all (the default): rooms
  # of up to 1000 occupants (the service's default cap is 200), presence broadcast to all of
  # them (above max_users_presence it is limited), no per-user message or presence rate limits,
  # every room message archived (as Meerkat's rooms are).
  mod_muc:
    max_users: 1000
    max_users_presence: 1000
    max_user_conferences: 1000
    min_message_interval: 0
    min_presence_interval: 0
    default_room_options:
      max_users: 1000
      mam: true
"#
    )
}

/// Prosody 0.12: one host, STARTTLS required, no mod_limits (no rate limits), roster, offline,
/// ping, disco, carbons, MAM (every message archived), in-band registration without throttle,
/// hashed passwords, default (internal) storage, no s2s or HTTP; group chat (archived rooms). As root (like everything
/// `cargo xtask` starts), hence `run_as_root`.
fn prosody_config(dir: &Path, port: u16) -> String {
    let p = |f: &str| dir.join(f).display().to_string();
    format!(
        r#"-- Written by `cargo xtask bench --against prosody`.
run_as_root = true
pidfile = "{pid}"
certificates = "{dir}"
data_path = "{data}"
log = {{ {{ levels = {{ min = "warn" }}, to = "file", filename = "{log}" }} }}
c2s_ports = {{ {port} }}
c2s_interfaces = {{ "127.0.0.1" }}
s2s_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
c2s_direct_tls_ports = {{ }}
c2s_require_encryption = true
authentication = "internal_hashed"
storage = "internal"
allow_registration = true
min_seconds_between_registrations = nil
registration_throttle_max = nil
modules_enabled = {{
  "roster"; "saslauth"; "tls"; "disco"; "carbons"; "ping"; "register"; "mam"; "offline";
}}
modules_disabled = {{ "s2s" }}
default_archive_policy = true
VirtualHost "{DOMAIN}"
  ssl = {{ certificate = "{cert}"; key = "{key}" }}
-- Group chat: core mod_muc has no occupant cap and no rate limits (those are the community
-- mod_muc_limits); new rooms are locked until their creator submits the configuration (as
-- Meerkat's); mod_muc_mam archives every room message (as Meerkat's rooms do).
Component "conference.{DOMAIN}" "muc"
  modules_enabled = {{ "muc_mam" }}
  muc_room_locking = true
  muc_log_by_default = true
"#,
        dir = dir.display(),
        pid = p("prosody.pid"),
        data = p("data"),
        log = p("logs/prosody.log"),
        cert = p("cert.pem"),
        key = p("key.pem"),
    )
}
