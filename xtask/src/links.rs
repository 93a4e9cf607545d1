//! The links between the DCs of the local stack. DC K's broker reaches DC L's broker through a
//! TCP proxy of its own (`xtask link-proxy`, a detached process listening on 127.0.0.1:57KL),
//! named in the upstream URI of K's federation and in the peers of K's replicator and health
//! service. Stopping the two proxies of a pair separates just those two DCs, as a network
//! partition would; the partitions made by `cargo xtask partition` are remembered in
//! `target/meerkat/run/partitions.json`, so that `up` and `dc start` keep them until `heal`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use meerkat_localstack::{port_open, process, RabbitEndpoint};
use serde::{Deserialize, Serialize};

use crate::layout::{self, DcPorts};

/// What every proxy's command line holds, to tell it from a recycled pid.
const SUBCOMMAND: &str = "link-proxy";
/// How long a stopping proxy gets before SIGKILL (it has nothing to drain).
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The TCP connection DC `from`'s broker opens to DC `to`'s: it carries what `from` receives
/// from `to` (the federation link whose downstream is `from` and upstream is `to`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Link {
    pub from: u16,
    pub to: u16,
}

impl Link {
    /// Every ordered pair of `dcs` DCs.
    pub fn all(dcs: u16) -> Vec<Link> {
        (1..=dcs)
            .flat_map(|from| {
                (1..=dcs)
                    .filter(move |to| *to != from)
                    .map(move |to| Link { from, to })
            })
            .collect()
    }

    /// 57KL: DC K reaches DC L here (K, L <= 9, so the ports 5711..5799 never collide).
    pub fn port(&self) -> u16 {
        5700 + 10 * self.from + self.to
    }

    pub fn listen(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port()))
    }

    /// DC `to`'s AMQP port.
    pub fn target(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], DcPorts::of(self.to).amqp))
    }

    /// The upstream URI DC `from` uses for DC `to` (and the form its services compare the
    /// `x-received-from` header with).
    pub fn uri(&self) -> String {
        RabbitEndpoint::loopback(self.port(), DcPorts::of(self.to).mgmt).amqp_url("/")
    }

    /// `dc1-dc2`: the name of its pid and log files.
    pub fn name(&self) -> String {
        format!("{}-{}", layout::dc_id(self.from), layout::dc_id(self.to))
    }

    /// `dc1→dc2`, for people.
    pub fn label(&self) -> String {
        format!("{}→{}", layout::dc_id(self.from), layout::dc_id(self.to))
    }

    /// Whether it joins DCs `k` and `l` (either way).
    pub fn joins(&self, k: u16, l: u16) -> bool {
        (self.from, self.to) == (k, l) || (self.from, self.to) == (l, k)
    }

    pub fn touches(&self, k: u16) -> bool {
        self.from == k || self.to == k
    }

    fn pid_file(&self) -> PathBuf {
        layout::links_dir().join(format!("{}.pid", self.name()))
    }

    pub fn log_file(&self) -> PathBuf {
        layout::logs_dir().join(format!("link-{}.log", self.name()))
    }

    /// The proxy's pid, if it runs.
    pub fn pid(&self) -> Option<u32> {
        let listen = self.listen().to_string();
        process::read_pid_file(&self.pid_file())
            .filter(|p| process::pid_alive(*p, SUBCOMMAND) && process::pid_alive(*p, &listen))
    }

    /// Starts the proxy detached (this same xtask binary, `link-proxy`) unless it runs, and
    /// waits until it listens.
    pub async fn start(&self) -> anyhow::Result<()> {
        if self.pid().is_some() {
            return Ok(());
        }
        if port_open(self.port()) {
            bail!(
                "port {} (link proxy {}) is taken by another process",
                self.port(),
                self.label()
            );
        }
        for dir in [layout::logs_dir(), layout::links_dir()] {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let exe = proxy_exe()?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file())
            .with_context(|| format!("opening {}", self.log_file().display()))?;
        let log2 = log.try_clone().context("cloning log handle")?;
        let mut child = process::detached(&exe)
            .arg(SUBCOMMAND)
            .arg("--listen")
            .arg(self.listen().to_string())
            .arg("--to")
            .arg(self.target().to_string())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .spawn()
            .with_context(|| format!("starting link proxy {}", self.label()))?;
        std::fs::write(self.pid_file(), child.id().to_string())
            .with_context(|| format!("writing {}", self.pid_file().display()))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !port_open(self.port()) {
            let exited = child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() >= deadline {
                bail!(
                    "link proxy {} did not listen on {} ({}); its log {}:\n{}",
                    self.label(),
                    self.listen(),
                    exited.map_or("still starting".to_owned(), |s| format!("exited: {s}")),
                    self.log_file().display(),
                    process::log_tail(&self.log_file(), 10)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Stops the proxy (its connections close, new ones are refused); the pid it had.
    pub async fn stop(&self) -> anyhow::Result<Option<u32>> {
        let pid = self.pid();
        if let Some(pid) = pid {
            process::terminate(pid, SUBCOMMAND, STOP_GRACE)
                .await
                .with_context(|| format!("stopping link proxy {}", self.label()))?;
        }
        let _ = std::fs::remove_file(self.pid_file());
        Ok(pid)
    }
}

/// The release build of xtask, which `up` builds with the services (every message between
/// DCs passes a proxy, and a debug build costs several times the CPU per message); this very
/// binary when there is none (`up --infra-only` builds nothing).
fn proxy_exe() -> anyhow::Result<PathBuf> {
    let release = layout::release_bin("xtask");
    if release.is_file() {
        return Ok(release);
    }
    std::env::current_exe().context("locating the xtask binary")
}

/// Every link proxy with a pid file (whatever the stack's shape now), for `down`.
pub fn recorded() -> Vec<Link> {
    let Ok(entries) = std::fs::read_dir(layout::links_dir()) else {
        return Vec::new();
    };
    let mut out: Vec<Link> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| parse_name(e.path().file_stem()?.to_str()?))
        .collect();
    out.sort();
    out
}

/// `dc1-dc2` -> the link from DC 1 to DC 2.
fn parse_name(name: &str) -> Option<Link> {
    let (from, to) = name.split_once('-')?;
    let num = |s: &str| s.strip_prefix("dc")?.parse::<u16>().ok();
    Some(Link {
        from: num(from)?,
        to: num(to)?,
    })
}

/// `xtask link-proxy`: forwards `listen` to `to` until SIGTERM or Ctrl-C.
pub async fn serve(listen: SocketAddr, to: SocketAddr) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let proxy = meerkat_localstack::proxy::LinkProxy::bind(listen, to)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    println!("link proxy {} -> {}", proxy.addr(), proxy.target());
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    // Dropping it resets the connections through it.
    drop(proxy);
    println!("link proxy {listen} stopped");
    Ok(())
}

/// Says which links stay cut, and how to restore them.
pub fn print_partitions_kept(partitions: &Partitions) {
    if !partitions.is_empty() {
        println!(
            "partitioned: {} (by `cargo xtask partition`; `cargo xtask heal` restores the links)",
            partitions.describe()
        );
    }
}

/// The `MEERKAT_PEERS` of DC `dc`'s routers, replicator and health service in a stack of
/// `dcs` DCs: each other DC by the URI `dc`'s links reach it through, the same URI its federation names
/// and so the one `x-received-from` carries (credentials apart).
pub fn peers(dc: u16, dcs: u16) -> String {
    Link::all(dcs)
        .iter()
        .filter(|l| l.from == dc)
        .map(|l| format!("{}={}", layout::dc_id(l.to), l.uri()))
        .collect::<Vec<_>>()
        .join(",")
}

/// The pairs of DCs cut off from each other by `cargo xtask partition`, kept until `heal`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partitions {
    /// `(k, l)` with `k < l`.
    pairs: BTreeSet<(u16, u16)>,
}

impl Partitions {
    /// The stack's partitions (none when the file is missing).
    pub fn load() -> anyhow::Result<Partitions> {
        Partitions::load_from(&layout::partitions_file())
    }

    pub fn save(&self) -> anyhow::Result<()> {
        self.save_to(&layout::partitions_file())
    }

    fn load_from(path: &Path) -> anyhow::Result<Partitions> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Partitions::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes the file, or removes it when nothing is cut.
    fn save_to(&self, path: &Path) -> anyhow::Result<()> {
        if self.pairs.is_empty() {
            return match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(e).with_context(|| format!("removing {}", path.display()))
                }
                _ => Ok(()),
            };
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let text = serde_json::to_string_pretty(self).context("serializing partitions")?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// Records a cut between `k` and `l`; false if it was already there.
    pub fn add(&mut self, k: u16, l: u16) -> bool {
        self.pairs.insert((k.min(l), k.max(l)))
    }

    /// Forgets every cut; the pairs that were cut.
    pub fn clear(&mut self) -> Vec<(u16, u16)> {
        std::mem::take(&mut self.pairs).into_iter().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Whether `link` is cut by one of them.
    pub fn cuts(&self, link: &Link) -> bool {
        self.pairs.iter().any(|(k, l)| link.joins(*k, *l))
    }

    /// `dc1 | dc2, dc2 | dc3`.
    pub fn describe(&self) -> String {
        self.pairs
            .iter()
            .map(|(k, l)| format!("{} | {}", layout::dc_id(*k), layout::dc_id(*l)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ordered_pair_has_its_own_port_and_uri() {
        let links = Link::all(3);
        assert_eq!(links.len(), 6);
        let ports: BTreeSet<u16> = links.iter().map(Link::port).collect();
        assert_eq!(
            ports.into_iter().collect::<Vec<_>>(),
            [5712, 5713, 5721, 5723, 5731, 5732]
        );
        let l = Link { from: 1, to: 2 };
        assert_eq!(l.target().to_string(), "127.0.0.1:5682");
        assert_eq!(l.uri(), "amqp://guest:guest@127.0.0.1:5712/%2f");
        assert_eq!(l.name(), "dc1-dc2");
        assert_eq!(parse_name("dc1-dc2"), Some(l));
        assert_eq!(parse_name("dc1-gw1"), None);
        assert!(Link::all(1).is_empty());
    }

    #[test]
    fn peers_are_reached_through_the_dcs_own_links() {
        assert_eq!(
            peers(2, 3),
            "dc1=amqp://guest:guest@127.0.0.1:5721/%2f,dc3=amqp://guest:guest@127.0.0.1:5723/%2f"
        );
        assert_eq!(peers(1, 1), "");
    }

    #[test]
    fn a_partition_cuts_both_directions_of_its_pair_only() {
        let mut p = Partitions::default();
        assert!(p.add(2, 1));
        assert!(!p.add(1, 2), "the same pair either way round");
        assert!(p.cuts(&Link { from: 1, to: 2 }));
        assert!(p.cuts(&Link { from: 2, to: 1 }));
        assert!(!p.cuts(&Link { from: 1, to: 3 }));
        assert!(!p.cuts(&Link { from: 3, to: 2 }));
        assert_eq!(p.describe(), "dc1 | dc2");
        assert_eq!(p.clear(), [(1, 2)]);
        assert!(p.is_empty());
    }

    #[test]
    fn partitions_survive_in_their_file_until_healed() {
        let dir = std::env::temp_dir().join(format!("xtask-partitions-{}", std::process::id()));
        let file = dir.join("partitions.json");
        assert_eq!(Partitions::load_from(&file).unwrap(), Partitions::default());
        let mut p = Partitions::default();
        p.add(1, 3);
        p.add(2, 1);
        p.save_to(&file).unwrap();
        let back = Partitions::load_from(&file).unwrap();
        assert_eq!(back, p);
        assert_eq!(
            back.pairs.iter().copied().collect::<Vec<_>>(),
            [(1, 2), (1, 3)]
        );
        // Nothing cut: no file.
        Partitions::default().save_to(&file).unwrap();
        assert!(!file.exists());
        Partitions::default().save_to(&file).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
