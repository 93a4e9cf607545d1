//! DC failure drills on the running local stack: stop a DC gracefully, kill it without a word,
//! start it again, cut the links between two DCs and restore them. Each says what it did and
//! how long it took.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use meerkat_localstack::federation;
use meerkat_localstack::process;

use crate::endpoints::Endpoints;
use crate::layout;
use crate::links::{self, Link, Partitions};
use crate::procfs;
use crate::services::{self, Service};
use crate::stack;

/// How long a service gets to shut down gracefully before SIGKILL.
const SERVICE_GRACE: Duration = Duration::from_secs(15);
/// How long the brokers get to notice a cut link.
const CUT_NOTICED: Duration = Duration::from_secs(15);

#[derive(clap::Subcommand, Debug)]
pub enum DcAction {
    /// Stop DC K gracefully: SIGTERM to its gateways (they end their sessions), then to its
    /// other services (the routers route what the gateways said last), then a clean stop of
    /// its broker.
    Stop {
        /// The DC: its number (2) or id (dc2).
        #[arg(value_parser = parse_dc)]
        dc: u16,
    },
    /// Kill DC K: SIGKILL to every process of it at once (services, the broker's Erlang VM,
    /// its launcher and helpers), no goodbye.
    Kill {
        #[arg(value_parser = parse_dc)]
        dc: u16,
    },
    /// Start DC K again: its broker (on its data, federation included), its links, its
    /// services. Partitions stay.
    Start {
        #[arg(value_parser = parse_dc)]
        dc: u16,
    },
}

/// `2` or `dc2` -> 2.
pub fn parse_dc(s: &str) -> Result<u16, String> {
    let digits = s.strip_prefix("dc").unwrap_or(s);
    match digits.parse::<u16>() {
        Ok(k) if k >= 1 => Ok(k),
        _ => Err(format!(
            "`{s}` is not a DC: give its number (2) or id (dc2)"
        )),
    }
}

pub async fn dc(action: DcAction) -> anyhow::Result<()> {
    match action {
        DcAction::Stop { dc } => stop(dc).await,
        DcAction::Kill { dc } => kill(dc).await,
        DcAction::Start { dc } => start(dc).await,
    }
}

/// The stack `up` started, if it is up (its database runs: every DC needs it).
fn running_stack() -> anyhow::Result<Endpoints> {
    let not_up = "the local stack is not up: `cargo xtask up --dcs 2` first";
    let e = Endpoints::read()?.context(not_up)?;
    if !stack::postgres(e.postgres_port).is_running() {
        bail!(not_up);
    }
    Ok(e)
}

/// Checks that DC `k` is one of the stack's.
fn check_dc(e: &Endpoints, k: u16) -> anyhow::Result<()> {
    check_dc_number(e.dcs.len() as u16, k)
}

fn check_dc_number(dcs: u16, k: u16) -> anyhow::Result<()> {
    if k == 0 || k > dcs {
        match dcs {
            1 => bail!("no DC {k}: the stack has one DC (dc1)"),
            n => bail!("no DC {k}: the stack has DCs 1 to {n}"),
        }
    }
    Ok(())
}

/// DC `k`'s services (none on a `--infra-only` stack).
fn dc_services(e: &Endpoints, k: u16) -> Vec<Service> {
    if e.infra_only {
        return Vec::new();
    }
    services::plan(&stack::dc_env(k, e), e.gateways_per_dc, e.routers_per_dc)
}

fn exe(s: &Service) -> String {
    layout::release_bin(s.binary).to_string_lossy().into_owned()
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

async fn stop(k: u16) -> anyhow::Result<()> {
    let e = running_stack()?;
    check_dc(&e, k)?;
    let id = layout::dc_id(k);
    let started = Instant::now();
    let running: Vec<(Service, u32)> = dc_services(&e, k)
        .into_iter()
        .filter_map(|s| s.pid().map(|pid| (s, pid)))
        .collect();
    // The gateways first: they end their sessions and hand the routers each session's last
    // unavailable presence, which the routers (still running) send to the contacts at every DC.
    let (gateways, rest): (Vec<_>, Vec<_>) =
        running.iter().partition(|(s, _)| s.binary == "c2s-gateway");
    for wave in [gateways, rest] {
        for (s, pid) in &wave {
            println!("{id}: SIGTERM to {} (pid {pid})", s.instance_id);
        }
        let stops = wave
            .iter()
            .map(|(s, pid)| async move { process::terminate(*pid, &exe(s), SERVICE_GRACE).await });
        futures::future::try_join_all(stops).await?;
    }
    let services_took = started.elapsed();
    let node = stack::rabbit(k);
    let broker = node.pid();
    if let Some(pid) = broker {
        println!(
            "{id}: stopping RabbitMQ {} (pid {pid}) cleanly",
            node.config().node()
        );
        node.stop().await?;
    }
    if running.is_empty() && broker.is_none() {
        println!("{id} was not running");
        return Ok(());
    }
    println!(
        "{id} stopped gracefully in {}: {} service(s) in {}, then the broker in {} (`cargo xtask dc start {k}` starts it again)",
        secs(started.elapsed()),
        running.len(),
        secs(services_took),
        secs(started.elapsed() - services_took),
    );
    Ok(())
}

async fn kill(k: u16) -> anyhow::Result<()> {
    let e = running_stack()?;
    check_dc(&e, k)?;
    let id = layout::dc_id(k);
    // (what, pid, what its command line holds)
    let mut victims: Vec<(String, u32, String)> = dc_services(&e, k)
        .into_iter()
        .filter_map(|s| s.pid().map(|pid| (s.instance_id.clone(), pid, exe(&s))))
        .collect();
    let node = stack::rabbit(k);
    if let Some(beam) = node.pid() {
        // The VM from the pid file the node writes; its launcher script is its parent and its
        // helpers (erl_child_setup, inet_gethost) its descendants.
        victims.push((
            format!("RabbitMQ {} (Erlang VM)", node.config().node()),
            beam,
            "beam".into(),
        ));
        if let Some(parent) =
            procfs::parent_of(beam).filter(|p| process::pid_alive(*p, "rabbitmq-server"))
        {
            victims.push((
                "its launcher script".into(),
                parent,
                "rabbitmq-server".into(),
            ));
        }
        for child in procfs::descendants(beam) {
            if let Some(name) = procfs::command_name(child) {
                victims.push((format!("its helper {name}"), child, name));
            }
        }
    }
    if victims.is_empty() {
        println!("{id} was not running");
        return Ok(());
    }
    let started = Instant::now();
    for (_, pid, _) in &victims {
        // Gone already (a helper that died with the VM) is fine.
        let _ = process::signal(*pid, "KILL");
    }
    for (what, pid, needle) in &victims {
        if !process::wait_gone(*pid, needle, Duration::from_secs(10)).await {
            bail!("{what} (pid {pid}) survived SIGKILL");
        }
    }
    for (what, pid, _) in &victims {
        println!("{id}: SIGKILL to {what} (pid {pid})");
    }
    println!(
        "{id} killed: {} processes gone {} after the signals, no goodbye (`cargo xtask dc start {k}` starts it again)",
        victims.len(),
        secs(started.elapsed())
    );
    Ok(())
}

async fn start(k: u16) -> anyhow::Result<()> {
    let e = running_stack()?;
    check_dc(&e, k)?;
    let id = layout::dc_id(k);
    let partitions = Partitions::load()?;
    let started = Instant::now();
    let node = stack::rabbit(k);
    if node.is_running() {
        println!("{id}: RabbitMQ {} already runs", node.config().node());
    } else {
        println!(
            "{id}: starting RabbitMQ {} on its data",
            node.config().node()
        );
    }
    node.start().await?;
    let broker_took = started.elapsed();
    stack::start_links(&e, &[k], &partitions).await?;
    let n = e.dcs.len() as u16;
    let links: Vec<Link> = Link::all(n)
        .into_iter()
        .filter(|l| l.touches(k) && !partitions.cuts(l))
        .filter(|l| stack::rabbit(if l.from == k { l.to } else { l.from }).is_running())
        .collect();
    stack::wait_links(&e, &links, stack::FEDERATION_TIMEOUT).await?;
    let links_took = started.elapsed() - broker_took;
    stack::start_services(&e, &[k]).await?;
    let services_took = started.elapsed() - broker_took - links_took;
    let links_said = match links.len() {
        0 => "no link to another running DC to wait for".to_owned(),
        n => format!(
            "its {n} federation links running {} later",
            secs(links_took)
        ),
    };
    println!(
        "{id} started in {}: broker ready in {}, {links_said}, services serving XMPP {} after that",
        secs(started.elapsed()),
        secs(broker_took),
        secs(services_took),
    );
    links::print_partitions_kept(&partitions);
    Ok(())
}

pub async fn partition(k: u16, l: u16) -> anyhow::Result<()> {
    let e = running_stack()?;
    check_dc(&e, k)?;
    check_dc(&e, l)?;
    if k == l {
        bail!("a partition needs two different DCs");
    }
    let (a, b) = (layout::dc_id(k), layout::dc_id(l));
    // Remembered first, so that an `up` meanwhile does not start the proxies again.
    let mut partitions = Partitions::load()?;
    if !partitions.add(k, l) {
        println!("{a} | {b} was already partitioned");
    }
    partitions.save()?;
    let started = Instant::now();
    for link in Link::all(e.dcs.len() as u16)
        .iter()
        .filter(|x| x.joins(k, l))
    {
        match link.stop().await? {
            Some(pid) => println!(
                "stopped link proxy {} (pid {pid}): {} refuses connections",
                link.label(),
                link.listen()
            ),
            None => println!("link proxy {} was not running", link.label()),
        }
    }
    let cut_took = started.elapsed();
    let noticed = wait_cut_noticed(&e, k, l).await?;
    println!(
        "partitioned {a} | {b}: links cut in {}; {} (`cargo xtask heal` restores them)",
        secs(cut_took),
        match noticed {
            Some(d) => format!(
                "the brokers report the links between them down {} later",
                secs(d)
            ),
            None => format!(
                "a broker still reported a link running after {}",
                secs(CUT_NOTICED)
            ),
        }
    );
    Ok(())
}

/// How long until the running brokers of `k` and `l` report no link from the other running;
/// None if one still does after [`CUT_NOTICED`].
async fn wait_cut_noticed(e: &Endpoints, k: u16, l: u16) -> anyhow::Result<Option<Duration>> {
    let feds = stack::federated_dcs(e);
    let started = Instant::now();
    loop {
        let mut running = false;
        for (down, up) in [(k, l), (l, k)] {
            if !stack::rabbit(down).is_running() {
                continue;
            }
            let fed = &feds[usize::from(down - 1)];
            let upstream = fed.upstream_name_of(&layout::dc_id(up));
            // An unanswered query counts as still running: nothing is known yet.
            running |= federation::link_status(fed).await.map_or(true, |all| {
                all.iter()
                    .any(|s| s.upstream == upstream && s.status == "running")
            });
        }
        if !running {
            return Ok(Some(started.elapsed()));
        }
        if started.elapsed() >= CUT_NOTICED {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn heal() -> anyhow::Result<()> {
    let e = running_stack()?;
    let n = e.dcs.len() as u16;
    let mut partitions = Partitions::load()?;
    let healed = partitions.describe();
    let was_cut = !partitions.clear().is_empty();
    partitions.save()?;
    let started = Instant::now();
    let mut restarted = Vec::new();
    for link in Link::all(n) {
        if link.pid().is_none() {
            link.start().await?;
            restarted.push(link);
        }
    }
    if !was_cut && restarted.is_empty() {
        println!("nothing to heal: no partition, every link proxy runs");
        return Ok(());
    }
    for link in &restarted {
        println!(
            "started link proxy {} ({} → {})",
            link.label(),
            link.listen(),
            link.target()
        );
    }
    let proxies_took = started.elapsed();
    // The links between DCs whose brokers run (a stopped DC's come back with `dc start`).
    let live: Vec<Link> = Link::all(n)
        .into_iter()
        .filter(|l| stack::rabbit(l.from).is_running() && stack::rabbit(l.to).is_running())
        .collect();
    stack::wait_links(&e, &live, stack::FEDERATION_TIMEOUT).await?;
    println!(
        "healed{}: {} link proxies started in {}; every federation link between running DCs runs {} later",
        if was_cut {
            format!(" {healed}")
        } else {
            String::new()
        },
        restarted.len(),
        secs(proxies_took),
        secs(started.elapsed() - proxies_took),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dc_is_its_number_or_its_id() {
        assert_eq!(parse_dc("2"), Ok(2));
        assert_eq!(parse_dc("dc3"), Ok(3));
        assert!(parse_dc("0").is_err());
        assert!(parse_dc("dc").is_err());
        assert!(parse_dc("two").is_err());
        assert!(parse_dc("-1").is_err());
    }

    #[test]
    fn a_dc_outside_the_stack_is_refused_in_one_line() {
        assert!(check_dc_number(2, 2).is_ok());
        let e = check_dc_number(2, 3).unwrap_err().to_string();
        assert_eq!(e, "no DC 3: the stack has DCs 1 to 2");
        let e = check_dc_number(1, 2).unwrap_err().to_string();
        assert_eq!(e, "no DC 2: the stack has one DC (dc1)");
    }
}
