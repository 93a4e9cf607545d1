//! `cargo xtask compose-check`: docker-compose.yml proven with a real Docker engine. Makes the
//! images the compose file names when they are missing (the project's from deploy/Dockerfile
//! with prebuilt release binaries; stand-ins built from Debian packages for the upstream
//! images, deploy/standins/), starts the file as a user would, drives the README's journey
//! through the published ports and the web clients' (XEP-0156 discovery, WebSocket, BOSH)
//! through the load balancers' HTTPS ports, scales DC 1's gateways to three, finds a cross-DC
//! message's trace and the federation links' state, and tears it all down.
//! docs/compose-check.md.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::layout;

/// The service binaries of the image (deploy/Dockerfile's `cargo build`).
const BINARIES: [&str; 5] = [
    "c2s-gateway",
    "router",
    "session-replicator",
    "dc-health",
    "meerkatctl",
];

/// The base of every image the check builds: Debian bookworm from debootstrap.
const BASE: &str = "meerkat-base:bookworm";

/// (directory under deploy/standins, the upstream image it stands in for).
const STANDINS: [(&str, &str); 4] = [
    ("rabbitmq", "rabbitmq:3.10-management"),
    ("postgres", "postgres:15"),
    ("haproxy", "haproxy:2.8"),
    ("jaeger", "jaegertracing/all-in-one:1.62.0"),
];

/// The ports the compose file publishes on the host.
const XMPP_PORTS: [u16; 8] = [5222, 5223, 5232, 5233, 5280, 5281, 5290, 5291];
const OPERATOR_PORTS: [u16; 5] = [15672, 15673, 8404, 8405, 16686];

#[derive(clap::Args)]
pub struct CheckArgs {
    /// Leave the stack running at the end (or after a failure) instead of `down -v`.
    #[arg(long)]
    keep: bool,
    /// Take the five release binaries from this directory instead of building them
    /// (`cargo build --release` in this checkout).
    #[arg(long, env = "MEERKAT_COMPOSE_BINARIES")]
    binaries: Option<PathBuf>,
    /// Rebuild the base image and the stand-ins even when present.
    #[arg(long)]
    rebuild: bool,
}

fn work_dir() -> PathBuf {
    layout::root().join("target").join("compose-check")
}

/// The docker client and compose command in use.
struct Docker {
    docker: String,
    compose: Vec<String>,
    /// Variables for compose (the bind addresses the check chose).
    env: Vec<(String, String)>,
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn quiet_ok(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Docker {
    /// A client that reaches the engine and builds with BuildKit: its own (before Docker 23)
    /// or the buildx plugin. Then `docker compose` (v2) if it has it, else `docker-compose`.
    fn find() -> anyhow::Result<Docker> {
        let mut candidates: Vec<String> = Vec::new();
        if let Ok(d) = std::env::var("MEERKAT_DOCKER") {
            candidates.push(d);
        }
        candidates.extend(["docker".into(), "/usr/bin/docker".into()]);
        let mut reasons = Vec::new();
        for c in candidates {
            if !quiet_ok(&c, &["version", "--format", "{{.Server.Version}}"]) {
                reasons.push(format!("{c}: no engine reachable"));
                continue;
            }
            let client = Command::new(&c)
                .args(["version", "--format", "{{.Client.Version}}"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_default();
            let major: u32 = client
                .split('.')
                .next()
                .and_then(|m| m.parse().ok())
                .unwrap_or(0);
            if major >= 23 && !quiet_ok(&c, &["buildx", "version"]) {
                reasons.push(format!("{c}: client {client} without buildx (no BuildKit)"));
                continue;
            }
            let compose = if quiet_ok(&c, &["compose", "version"]) {
                vec![c.clone(), "compose".into()]
            } else if quiet_ok("docker-compose", &["version"]) {
                vec!["docker-compose".into()]
            } else {
                bail!("neither `{c} compose` nor `docker-compose` is installed");
            };
            return Ok(Docker {
                docker: c,
                compose,
                env: Vec::new(),
            });
        }
        bail!("no usable docker client: {}", reasons.join("; "))
    }

    fn docker(&self) -> Command {
        let mut c = Command::new(&self.docker);
        c.env("DOCKER_BUILDKIT", "1").current_dir(layout::root());
        c
    }

    /// A compose command whose output (a line per container) goes to
    /// target/compose-check/compose.log.
    fn compose_logged(&self) -> anyhow::Result<Command> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(work_dir().join("compose.log"))?;
        let mut c = self.compose();
        c.stdout(log.try_clone()?).stderr(log);
        Ok(c)
    }

    fn compose(&self) -> Command {
        let mut c = Command::new(&self.compose[0]);
        c.args(&self.compose[1..])
            .args(["-f", "docker-compose.yml"])
            .current_dir(layout::root())
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    fn has_image(&self, tag: &str) -> bool {
        quiet_ok(&self.docker, &["image", "inspect", tag])
    }

    /// The containers of a compose service.
    fn containers(&self, service: &str) -> anyhow::Result<Vec<String>> {
        Ok(output(self.compose().args(["ps", "-q", service]))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect())
    }

    /// (name, status, health) of a container.
    fn state(&self, id: &str) -> anyhow::Result<(String, String, String, i64)> {
        let out = output(self.docker().args([
            "inspect",
            "--format",
            "{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}-{{end}} {{.State.ExitCode}}",
            id,
        ]))?;
        let f: Vec<&str> = out.split_whitespace().collect();
        if f.len() != 4 {
            bail!("docker inspect {id}: {out}");
        }
        Ok((
            f[0].trim_start_matches('/').to_owned(),
            f[1].to_owned(),
            f[2].to_owned(),
            f[3].parse().unwrap_or(-1),
        ))
    }
}

/// The committed .env, with the shell's environment winning (as compose reads it).
fn dot_env() -> anyhow::Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(layout::root().join(".env")).context("reading .env")?;
    let mut vars = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = std::env::var(k).unwrap_or_else(|_| v.to_owned());
            vars.insert(k.to_owned(), v);
        }
    }
    Ok(vars)
}

fn free(addr: &str, port: u16) -> bool {
    std::net::TcpListener::bind((addr, port)).is_ok()
}

/// One step's report line.
struct Steps {
    started: Instant,
    lines: Vec<String>,
}

impl Steps {
    fn run<T>(
        &mut self,
        n: usize,
        what: &str,
        f: impl FnOnce() -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        println!("\n== step {n}: {what}");
        let t = Instant::now();
        let r = f();
        let line = format!(
            "step {n} {:<4} {:>6.1}s  {what}",
            if r.is_ok() { "ok" } else { "FAIL" },
            t.elapsed().as_secs_f64()
        );
        println!("-- {line}");
        self.lines.push(line);
        r.with_context(|| format!("step {n}: {what}"))
    }
}

pub async fn check(args: CheckArgs) -> anyhow::Result<i32> {
    tokio::task::spawn_blocking(move || check_blocking(args))
        .await
        .context("the check's thread")?
}

fn check_blocking(args: CheckArgs) -> anyhow::Result<i32> {
    let mut docker = Docker::find()?;
    println!(
        "docker client {}, compose: {} (its output: {})",
        docker.docker,
        docker.compose.join(" "),
        work_dir().join("compose.log").display()
    );
    let env = dot_env()?;
    let mut steps = Steps {
        started: Instant::now(),
        lines: Vec::new(),
    };
    // Where the published ports go: as the compose file says unless they are taken on this
    // machine (e.g. by `cargo xtask up`), then on 127.0.0.2, another loopback address.
    let xmpp_bind = std::env::var("MEERKAT_XMPP_BIND").ok();
    let operator_bind = env
        .get("MEERKAT_OPERATOR_BIND")
        .cloned()
        .unwrap_or_else(|| "127.0.0.1".into());
    let taken = XMPP_PORTS
        .iter()
        .any(|p| !free(xmpp_bind.as_deref().unwrap_or("0.0.0.0"), *p))
        || OPERATOR_PORTS.iter().any(|p| !free(&operator_bind, *p));
    let host = if taken && xmpp_bind.is_none() {
        println!("ports of the compose file are in use on this machine: publishing on 127.0.0.2");
        docker
            .env
            .push(("MEERKAT_XMPP_BIND".into(), "127.0.0.2".into()));
        docker
            .env
            .push(("MEERKAT_OPERATOR_BIND".into(), "127.0.0.2".into()));
        "127.0.0.2".to_owned()
    } else {
        match xmpp_bind.as_deref() {
            None | Some("0.0.0.0") => "127.0.0.1".to_owned(),
            Some(a) => a.to_owned(),
        }
    };
    let op_host = if taken && xmpp_bind.is_none() {
        "127.0.0.2".to_owned()
    } else if operator_bind == "0.0.0.0" {
        "127.0.0.1".to_owned()
    } else {
        operator_bind.clone()
    };

    let probe = steps.run(1, "images: base, stand-ins, meerkat:local", || {
        images(&docker, &args)
    })?;
    let result = journey(&docker, &mut steps, &env, &probe, &host, &op_host);
    if let Err(e) = &result {
        eprintln!("\ncompose-check failed: {e:#}");
        let _ = diagnose(&docker);
    }
    if args.keep {
        println!("\n--keep: the stack stays up (`docker-compose down -v` to remove it)");
    } else {
        let down = steps.run(7, "teardown: down -v (volumes included)", || {
            run(docker.compose_logged()?.args([
                "down",
                "-v",
                "--remove-orphans",
                "--timeout",
                "30",
            ]))?;
            let left = output(docker.docker().args([
                "ps",
                "-aq",
                "--filter",
                "label=com.docker.compose.project=meerkat",
            ]))?;
            let volumes = output(docker.docker().args([
                "volume",
                "ls",
                "-q",
                "--filter",
                "label=com.docker.compose.project=meerkat",
            ]))?;
            if !left.trim().is_empty() || !volumes.trim().is_empty() {
                bail!("left behind: containers {left:?}, volumes {volumes:?}");
            }
            Ok(())
        });
        if result.is_ok() {
            down?;
        }
    }
    println!("\ncompose-check report:");
    for l in &steps.lines {
        println!("  {l}");
    }
    println!(
        "  total {:.1}s: {}",
        steps.started.elapsed().as_secs_f64(),
        if result.is_ok() { "passed" } else { "FAILED" }
    );
    result.map(|()| 0)
}

fn journey(
    docker: &Docker,
    steps: &mut Steps,
    env: &BTreeMap<String, String>,
    probe: &Path,
    host: &str,
    op_host: &str,
) -> anyhow::Result<()> {
    let var = |k: &str| {
        env.get(k)
            .cloned()
            .with_context(|| format!("{k} is not set in .env"))
    };
    let domain = var("MEERKAT_DOMAIN")?;
    steps.run(
        2,
        "docker-compose up, until every service is healthy",
        || {
            // A stack of an earlier run that was kept, or failed: start afresh.
            run(docker.compose_logged()?.args([
                "down",
                "-v",
                "--remove-orphans",
                "--timeout",
                "10",
            ]))?;
            run(docker.compose_logged()?.args(["up", "-d", "--no-build"]))?;
            wait_healthy(docker, Duration::from_secs(240))
        },
    )?;

    let prefix = format!(
        "check{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    );
    let password = "compose-check-secret";
    steps.run(3, "the journey through the published ports", || {
        run(Command::new(probe).args([
            "journey",
            &format!("{host}:5222"),
            &format!("{host}:5232"),
            &format!("{host}:5233"),
            &domain,
            &prefix,
            password,
        ]))
    })?;

    steps.run(4, "web clients through the load balancers", || {
        run(Command::new(probe).args([
            "web",
            &format!("{host}:5281"),
            &format!("{host}:5232"),
            &format!("{host}:5291"),
            &domain,
            &prefix,
            password,
        ]))
    })?;

    steps.run(
        5,
        "three gateways at DC 1: new sessions spread behind 5222",
        || {
            run(docker.compose_logged()?.args([
                "up",
                "-d",
                "--no-build",
                "--scale",
                "dc1-gateway=3",
            ]))?;
            wait_healthy(docker, Duration::from_secs(120))?;
            let gateways = docker.containers("dc1-gateway")?;
            if gateways.len() != 3 {
                bail!("{} dc1-gateway containers, 3 wanted", gateways.len());
            }
            run(Command::new(probe).args([
                "lb-wait",
                &format!("http://{op_host}:8404/"),
                "gateways-c2s",
                "3",
            ]))?;
            let sessions = 9;
            let mut holder = Command::new(probe)
                .args([
                    "sessions",
                    &format!("{host}:5222"),
                    &domain,
                    &format!("{prefix}-alice"),
                    password,
                    &sessions.to_string(),
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .context("starting the probe")?;
            let mut lines = BufReader::new(holder.stdout.take().context("probe stdout")?).lines();
            let ready = lines.next().transpose()?.unwrap_or_default();
            let counted = if ready.starts_with("ready") {
                println!("  {sessions} sessions of {prefix}-alice bound through {host}:5222");
                count_sessions(docker, &gateways)
            } else {
                Err(anyhow::anyhow!("the probe's sessions did not all bind"))
            };
            if let Some(mut stdin) = holder.stdin.take() {
                let _ = stdin.write_all(b"");
            }
            let status = holder.wait()?;
            let counts = counted?;
            if !status.success() {
                bail!("the session probe failed: {status}");
            }
            let total: u64 = counts.iter().map(|(_, n)| n).sum();
            if total < sessions || counts.iter().any(|(_, n)| *n == 0) {
                bail!("sessions not spread over the three gateways: {counts:?}");
            }
            Ok(())
        },
    )?;

    steps.run(
        6,
        "a cross-DC message's trace; the federation links' state",
        || {
            run(Command::new(probe).args(["trace", &format!("http://{op_host}:16686")]))?;
            for (dc, port) in [("DC1", 15672), ("DC2", 15673)] {
                println!("  {dc}'s broker (management API on {op_host}:{port}):");
                run(Command::new(probe).args([
                    "links",
                    &format!("http://{op_host}:{port}/"),
                    &var(&format!("{dc}_RABBITMQ_USER"))?,
                    &var(&format!("{dc}_RABBITMQ_PASSWORD"))?,
                ]))?;
            }
            Ok(())
        },
    )?;
    Ok(())
}

/// `meerkat_gateway_sessions` of each gateway container (its admin port, inside it).
fn count_sessions(docker: &Docker, gateways: &[String]) -> anyhow::Result<Vec<(String, u64)>> {
    let mut counts = Vec::new();
    for id in gateways {
        let (name, ..) = docker.state(id)?;
        let metrics = output(docker.docker().args([
            "exec",
            id,
            "curl",
            "-fsS",
            "http://127.0.0.1:9000/metrics",
        ]))?;
        let n = metrics
            .lines()
            .find_map(|l| l.strip_prefix("meerkat_gateway_sessions "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .with_context(|| format!("{name}: no meerkat_gateway_sessions in /metrics"))?;
        println!("    {name}: {n} sessions");
        counts.push((name, n as u64));
    }
    Ok(counts)
}

/// Until every container of the project runs and is healthy (where it has a healthcheck),
/// the one-shot broker setups having exited 0.
fn wait_healthy(docker: &Docker, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let ids: Vec<String> = output(docker.compose().args(["ps", "-q"]))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        let mut waiting = Vec::new();
        for id in &ids {
            let (name, status, health, code) = docker.state(id)?;
            let one_shot = name.contains("broker-setup");
            let ok = if one_shot {
                if status == "exited" && code != 0 {
                    bail!("{name} exited with {code}");
                }
                status == "exited"
            } else {
                status == "running" && (health == "-" || health == "healthy")
            };
            if !ok {
                waiting.push(format!("{name} ({status}, {health})"));
            }
        }
        if waiting.is_empty() && !ids.is_empty() {
            println!("  {} containers up and healthy", ids.len());
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("not healthy within {within:?}: {}", waiting.join(", "));
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// After a failure: what runs, and the last lines of what is not well.
fn diagnose(docker: &Docker) -> anyhow::Result<()> {
    let _ = run(docker.compose().arg("ps"));
    for id in output(docker.compose().args(["ps", "-q"]))?.lines() {
        let (name, status, health, _) = docker.state(id.trim())?;
        if status != "running" || health == "unhealthy" || health == "starting" {
            eprintln!("--- {name} ({status}, {health}): last log lines");
            let _ = run(docker.docker().args(["logs", "--tail", "30", id.trim()]));
        }
    }
    Ok(())
}

/// Step 1: every image the compose file names, and the probe. Returns the probe's path.
fn images(docker: &Docker, args: &CheckArgs) -> anyhow::Result<PathBuf> {
    let work = work_dir();
    std::fs::create_dir_all(&work)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());

    // The client probe and the trace viewer stand-in (debug build: what the tests build).
    let t = Instant::now();
    run(Command::new(&cargo)
        .args([
            "build",
            "-p",
            "meerkat-testkit",
            "--bin",
            "meerkat-compose-probe",
            "--bin",
            "meerkat-otlp-standin",
        ])
        .current_dir(layout::root()))?;
    println!(
        "  probe and OTLP stand-in built ({:.0}s)",
        t.elapsed().as_secs_f64()
    );
    let debug = layout::root().join("target").join("debug");

    // The release build runs meanwhile (its own CPU; the images are mostly downloads).
    let release_log = work.join("release-build.log");
    let release = match &args.binaries {
        Some(_) => None,
        None => {
            let log = std::fs::File::create(&release_log)?;
            let mut build = Command::new(&cargo);
            build
                .args(["build", "--release", "--locked"])
                .current_dir(layout::root())
                .stdout(log.try_clone()?)
                .stderr(log);
            for b in BINARIES {
                build.args(["-p", b]);
            }
            println!(
                "  release build of the five binaries started (log: {})",
                release_log.display()
            );
            Some((
                build.spawn().context("cargo build --release")?,
                Instant::now(),
            ))
        }
    };

    if args.rebuild || !docker.has_image(BASE) {
        base_image(docker)?;
    } else {
        println!("  {BASE}: present");
    }

    // The stand-ins for missing upstream images, built side by side.
    let mut builds = Vec::new();
    for (dir, tag) in STANDINS {
        if !args.rebuild && docker.has_image(tag) {
            println!("  {tag}: present");
            continue;
        }
        let src = layout::root().join("deploy").join("standins").join(dir);
        let context = if dir == "jaeger" {
            let ctx = work.join("jaeger");
            std::fs::create_dir_all(&ctx)?;
            std::fs::copy(
                debug.join("meerkat-otlp-standin"),
                ctx.join("meerkat-otlp-standin"),
            )
            .context("copying meerkat-otlp-standin")?;
            ctx
        } else {
            src.clone()
        };
        let log = work.join(format!("standin-{dir}.log"));
        let file = std::fs::File::create(&log)?;
        let child = docker
            .docker()
            .args([
                "build",
                "--build-arg",
                &format!("BASE={BASE}"),
                "-f",
                &src.join("Dockerfile").to_string_lossy(),
                "-t",
                tag,
                &context.to_string_lossy(),
            ])
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("docker build")?;
        builds.push((dir, tag, log, child, Instant::now()));
    }
    for (dir, tag, log, mut child, t) in builds {
        if !child.wait()?.success() {
            bail!("building the stand-in {tag} failed: {}", log.display());
        }
        println!(
            "  {tag}: stand-in built from deploy/standins/{dir} ({:.0}s)",
            t.elapsed().as_secs_f64()
        );
    }

    // meerkat:local from deploy/Dockerfile, with this checkout's release binaries.
    let bins = work.join("binaries");
    let out = bins.join("out");
    std::fs::create_dir_all(&out)?;
    let from = match (&args.binaries, release) {
        (Some(dir), _) => dir.clone(),
        (None, Some((mut child, t))) => {
            if !child.wait()?.success() {
                bail!("cargo build --release failed: {}", release_log.display());
            }
            println!(
                "  release binaries built ({:.0}s)",
                t.elapsed().as_secs_f64()
            );
            layout::root().join("target").join("release")
        }
        (None, None) => bail!("no binaries: neither --binaries nor a release build"),
    };
    for b in BINARIES {
        std::fs::copy(from.join(b), out.join(b))
            .with_context(|| format!("copying {}", from.join(b).display()))?;
    }
    std::fs::write(bins.join("Dockerfile"), "FROM scratch\nCOPY out/ /out/\n")?;
    let t = Instant::now();
    run(docker
        .docker()
        .args([
            "build",
            "-q",
            "-t",
            "meerkat-binaries:local",
            &bins.to_string_lossy(),
        ])
        .stdout(Stdio::null()))?;
    run(docker
        .docker()
        .args([
            "build",
            "-q",
            "-f",
            "deploy/Dockerfile",
            "--build-arg",
            &format!("RUST_IMAGE={BASE}"),
            "--build-arg",
            &format!("RUNTIME_IMAGE={BASE}"),
            "--build-arg",
            "BINARIES_FROM=meerkat-binaries:local",
            "-t",
            "meerkat:local",
            ".",
        ])
        .stdout(Stdio::null()))?;
    println!(
        "  meerkat:local built from deploy/Dockerfile with the binaries of {} ({:.0}s)",
        from.display(),
        t.elapsed().as_secs_f64()
    );
    // The binaries are in meerkat:local now; the images this replaced are dangling.
    let _ = Command::new(&docker.docker)
        .args(["rmi", "meerkat-binaries:local"])
        .stdout(Stdio::null())
        .status();
    let _ = Command::new(&docker.docker)
        .args(["image", "prune", "-f"])
        .stdout(Stdio::null())
        .status();
    Ok(debug.join("meerkat-compose-probe"))
}

/// Debian bookworm (minbase) from debootstrap, kept in target/compose-check/rootfs, imported.
fn base_image(docker: &Docker) -> anyhow::Result<()> {
    let t = Instant::now();
    let rootfs = work_dir().join("rootfs");
    let done = work_dir().join("rootfs.done");
    if !done.exists() {
        let _ = std::fs::remove_dir_all(&rootfs);
        let mirror = std::env::var("MEERKAT_DEBIAN_MIRROR")
            .unwrap_or_else(|_| "http://deb.debian.org/debian".into());
        println!("  debootstrap bookworm from {mirror}...");
        let log = std::fs::File::create(work_dir().join("debootstrap.log"))?;
        run(Command::new("debootstrap")
            .args(["--variant=minbase", "bookworm"])
            .arg(&rootfs)
            .arg(&mirror)
            .stdout(log.try_clone()?)
            .stderr(log))
        .context("debootstrap (target/compose-check/debootstrap.log)")?;
        // No service starts while packages install in an image build.
        let policy = rootfs.join("usr/sbin/policy-rc.d");
        std::fs::write(&policy, "#!/bin/sh\nexit 101\n")?;
        run(Command::new("chmod").arg("755").arg(&policy))?;
        let archives = rootfs.join("var/cache/apt/archives");
        for e in std::fs::read_dir(&archives)?.flatten() {
            if e.path().extension().is_some_and(|x| x == "deb") {
                std::fs::remove_file(e.path())?;
            }
        }
        std::fs::write(&done, "")?;
    }
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .context("tar")?;
    let tar_out = tar.stdout.take().context("tar stdout")?;
    run(Command::new(&docker.docker)
        .args(["import", "-", BASE])
        .stdin(tar_out)
        .stdout(Stdio::null()))?;
    if !tar.wait()?.success() {
        bail!("tar of {} failed", rootfs.display());
    }
    println!("  {BASE}: imported ({:.0}s)", t.elapsed().as_secs_f64());
    Ok(())
}
