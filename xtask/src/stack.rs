//! `cargo xtask up`, `down` and `status`: the local multi-DC stack on loopback. With several
//! DCs, each reaches each other through a link proxy of its own (see `links`).

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use meerkat_localstack::federation::{self, FederatedDc};
use meerkat_localstack::{
    ensure_installed, port_open, PgCluster, PgConfig, RabbitConfig, RabbitNode,
};

use crate::endpoints::{AdminEndpoint, DcEndpoints, Endpoints};
use crate::layout::{self, DcPorts, MAX_DCS, PG_PORT};
use crate::links::{self, Link, Partitions};
use crate::services::{self, DcEnv, Service};

/// How long a DC's services get to answer XMPP after starting.
const XMPP_TIMEOUT: Duration = Duration::from_secs(90);
/// How long every service then gets to say ready: beyond the replicator's own bound for a peer
/// DC that never answers (`peer_wait_ms`, 30 s).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the federation links between the DCs' brokers get to run.
pub(crate) const FEDERATION_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// Number of datacenters.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=MAX_DCS as i64))]
    pub dcs: u16,
    /// c2s-gateway processes per DC (they share the client ports).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=49))]
    pub gateways: u16,
    /// Router processes per DC.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=49))]
    pub routers: u16,
    /// The XMPP domain served.
    #[arg(long, default_value = "example.com")]
    pub domain: String,
    /// Brokers and database only; no build, no services.
    #[arg(long)]
    pub infra_only: bool,
    /// PostgreSQL's port (when another PostgreSQL holds the default).
    #[arg(long, default_value_t = PG_PORT)]
    pub pg_port: u16,
    /// Every production default, including the registration and login throttles for
    /// loopback (without it, loopback clients may register and log in without limit).
    #[arg(long)]
    pub production_limits: bool,
}

pub(crate) fn rabbit(dc: u16) -> RabbitNode {
    let p = DcPorts::of(dc);
    RabbitNode::new(RabbitConfig {
        name: format!("meerkat-{}", layout::dc_id(dc)),
        cluster_name: format!("meerkat-{}", layout::dc_id(dc)),
        dir: layout::rabbit_dir(dc),
        amqp_port: p.amqp,
        mgmt_port: p.mgmt,
        dist_port: p.dist,
    })
}

/// The stack's PostgreSQL; the port matters only for starting it (stopping goes by pid).
pub(crate) fn postgres(port: u16) -> PgCluster {
    PgCluster::new(PgConfig {
        dir: layout::pg_dir(),
        port,
    })
}

fn database(dc: u16) -> String {
    format!("meerkat_{}", layout::dc_id(dc))
}

pub(crate) fn dc_env<'a>(dc: u16, e: &'a Endpoints) -> DcEnv<'a> {
    let d = &e.dcs[usize::from(dc - 1)];
    DcEnv {
        dc,
        domain: &e.domain,
        amqp_url: d.amqp_url.clone(),
        database_url: d.database_url.clone(),
        cert: &e.cert_path,
        key: &e.key_path,
        peers: links::peers(dc, e.dcs.len() as u16),
        management_url: d.management_url.clone(),
        production_limits: e.production_limits,
    }
}

/// What `up` with these arguments starts.
fn wanted(args: &UpArgs) -> Endpoints {
    let certs = layout::certs_dir();
    let mut e = Endpoints {
        domain: args.domain.clone(),
        cert_path: certs.join("cert.pem"),
        key_path: certs.join("key.pem"),
        infra_only: args.infra_only,
        postgres_port: args.pg_port,
        gateways_per_dc: args.gateways,
        routers_per_dc: args.routers,
        production_limits: args.production_limits,
        dcs: Vec::new(),
    };
    for dc in 1..=args.dcs {
        let p = DcPorts::of(dc);
        let node = rabbit(dc).endpoint();
        e.dcs.push(DcEndpoints {
            dc: layout::dc_id(dc),
            c2s: format!("127.0.0.1:{}", p.c2s),
            direct_tls: format!("127.0.0.1:{}", p.tls),
            websocket: format!("ws://127.0.0.1:{}/xmpp-websocket", p.http),
            websocket_tls: format!("wss://127.0.0.1:{}/xmpp-websocket", p.https),
            bosh: format!("http://127.0.0.1:{}/http-bind", p.http),
            bosh_tls: format!("https://127.0.0.1:{}/http-bind", p.https),
            host_meta: format!("https://127.0.0.1:{}/.well-known/host-meta", p.https),
            gateways: Vec::new(),
            routers: Vec::new(),
            replicators: Vec::new(),
            health: Vec::new(),
            amqp_url: node.amqp_url("/"),
            management_url: node.mgmt_url(),
            management_user: node.user.clone(),
            management_password: node.password.clone(),
            database_url: postgres(args.pg_port).endpoint().url(&database(dc)),
        });
    }
    if !args.infra_only {
        for dc in 1..=args.dcs {
            let plan = services::plan(&dc_env(dc, &e), args.gateways, args.routers);
            let d = &mut e.dcs[usize::from(dc - 1)];
            for s in plan {
                let admin = AdminEndpoint::new(&s.instance_id, &s.admin_url());
                match s.binary {
                    "router" => d.routers.push(admin),
                    "session-replicator" => d.replicators.push(admin),
                    "dc-health" => d.health.push(admin),
                    _ => d.gateways.push(admin),
                }
            }
        }
    }
    e
}

/// Anything of the stack running (any DC, the database, any service).
fn anything_running() -> bool {
    (1..=MAX_DCS).any(|dc| rabbit(dc).is_running())
        || postgres(PG_PORT).is_running()
        || services::pid_files()
            .iter()
            .any(|(_, f)| services::live_pid(f).is_some())
}

fn everything_running(e: &Endpoints, partitions: &Partitions) -> bool {
    let dcs = e.dcs.len() as u16;
    (1..=dcs).all(|dc| rabbit(dc).is_running())
        && postgres(e.postgres_port).is_running()
        && Link::all(dcs)
            .iter()
            .all(|l| partitions.cuts(l) || l.pid().is_some())
        && (e.infra_only
            || (1..=dcs).all(|dc| {
                services::plan(&dc_env(dc, e), e.gateways_per_dc, e.routers_per_dc)
                    .iter()
                    .all(|s| s.pid().is_some())
            }))
}

pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    let want = wanted(&args);
    let partitions = Partitions::load()?;
    let previous = Endpoints::read()?;
    if let Some(have) = &previous {
        if anything_running() && !have.same_shape(&want) {
            bail!(
                "a stack of another shape is running ({} DCs, domain {}, infra_only {}); \
                 `cargo xtask down` first",
                have.dcs.len(),
                have.domain,
                have.infra_only
            );
        }
        if everything_running(have, &partitions) && have.same_shape(&want) {
            println!("already up");
            have.print();
            links::print_partitions_kept(&partitions);
            return Ok(());
        }
    }
    ensure_installed().await?;
    if !args.infra_only {
        build_services().await?;
        crate::certs::ensure(&args.domain)?;
    }
    // Written first so that after a failure half-way, `status` and a retried `up` know the
    // shape that was asked for.
    std::fs::create_dir_all(layout::stack_dir())
        .with_context(|| format!("creating {}", layout::stack_dir().display()))?;
    if let Some(have) = previous.filter(|h| h.dcs.len() != want.dcs.len()) {
        forget_broker_state(have.dcs.len())?;
    }
    want.write()?;
    start_infra(args.dcs, args.pg_port).await?;
    let all: Vec<u16> = (1..=args.dcs).collect();
    start_links(&want, &all, &partitions).await?;
    federate(&want, &partitions).await?;
    if !args.infra_only {
        start_services(&want, &all).await?;
    }
    println!("up");
    want.print();
    links::print_partitions_kept(&partitions);
    Ok(())
}

/// A stack of another DC count starts with empty brokers: their queues and federation were
/// made for the old count (e.g. DC 1 of a former two-DC stack would keep a federation link to
/// a DC that is gone and a session-replicator queue that no service consumes and that grows
/// with every login). Accounts and other data in PostgreSQL are kept.
fn forget_broker_state(old_dcs: usize) -> anyhow::Result<()> {
    for dc in 1..=MAX_DCS {
        let mnesia = layout::rabbit_dir(dc).join("mnesia");
        if mnesia.exists() {
            std::fs::remove_dir_all(&mnesia)
                .with_context(|| format!("removing {}", mnesia.display()))?;
        }
    }
    println!(
        "the stack had {old_dcs} DC(s): its brokers start empty (their topology was for that many); accounts are kept"
    );
    Ok(())
}

/// Starts the link proxies of DCs `dcs` that no partition cuts (none for one DC).
pub(crate) async fn start_links(
    e: &Endpoints,
    dcs: &[u16],
    partitions: &Partitions,
) -> anyhow::Result<()> {
    for l in Link::all(e.dcs.len() as u16) {
        if partitions.cuts(&l) || !dcs.iter().any(|k| l.touches(*k)) {
            continue;
        }
        if l.pid().is_none() {
            println!(
                "starting link proxy {} ({} → {}, log {})",
                l.label(),
                l.listen(),
                l.target(),
                l.log_file().display()
            );
        }
        l.start().await?;
    }
    Ok(())
}

async fn build_services() -> anyhow::Result<()> {
    println!("building services (release)...");
    let status =
        tokio::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "build",
                "--release",
                "-p",
                "c2s-gateway",
                "-p",
                "router",
                "-p",
                "session-replicator",
                "-p",
                "dc-health",
                "-p",
                "meerkatctl",
                // The link proxies between DCs run `xtask link-proxy` (see `links`).
                "-p",
                "xtask",
            ])
            .current_dir(layout::root())
            .status()
            .await
            .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build --release failed: {status}");
    }
    Ok(())
}

async fn start_infra(dcs: u16, pg_port: u16) -> anyhow::Result<()> {
    let nodes: Vec<RabbitNode> = (1..=dcs).map(rabbit).collect();
    for n in &nodes {
        let c = n.config();
        if !n.is_running() {
            for port in [c.amqp_port, c.mgmt_port, c.dist_port] {
                if port_open(port) {
                    bail!("port {port} (for {}) is taken by another process", c.node());
                }
            }
            println!(
                "starting RabbitMQ {} (AMQP {}, management {})",
                c.node(),
                c.amqp_port,
                c.mgmt_port
            );
        }
    }
    let pg = postgres(pg_port);
    if !pg.is_running() {
        if port_open(pg_port) {
            bail!("port {pg_port} (for PostgreSQL) is taken by another process; try --pg-port");
        }
        println!("starting PostgreSQL on 127.0.0.1:{pg_port}");
    }
    let brokers = futures::future::try_join_all(nodes.iter().map(|n| n.start()));
    let (b, p) = tokio::join!(brokers, pg.start());
    b?;
    p?;
    let endpoint = pg.endpoint();
    for dc in 1..=dcs {
        if !endpoint.database_exists(&database(dc)).await? {
            endpoint.create_database(&database(dc)).await?;
        }
    }
    Ok(())
}

/// The DCs as federation sees them: each reaches each other through its link proxy.
pub(crate) fn federated_dcs(e: &Endpoints) -> Vec<FederatedDc> {
    let links = Link::all(e.dcs.len() as u16);
    (1..=e.dcs.len() as u16)
        .zip(&e.dcs)
        .map(|(dc, d)| FederatedDc {
            dc: d.dc.clone(),
            mgmt_url: d.management_url.clone(),
            user: d.management_user.clone(),
            password: d.management_password.clone(),
            vhost: "/".into(),
            amqp_uri: d.amqp_url.clone(),
            via: links
                .iter()
                .filter(|l| l.to == dc)
                .map(|l| (layout::dc_id(l.from), l.uri()))
                .collect(),
            // The links log in as a user of their own, not as the administrator.
            link: Some(federation::LinkUser::local()),
            stanza_backlog_ttl_ms: None,
        })
        .collect()
}

/// Full-mesh exchange federation between the DCs' brokers (none for one DC), each link
/// through its proxy. Idempotent, so a repeated `up` repairs it.
async fn federate(e: &Endpoints, partitions: &Partitions) -> anyhow::Result<()> {
    if e.dcs.len() < 2 {
        return Ok(());
    }
    let dcs = federated_dcs(e);
    println!(
        "federating {} DCs (full mesh, through the link proxies)",
        dcs.len()
    );
    federation::configure(&dcs).await?;
    let uncut: Vec<Link> = Link::all(e.dcs.len() as u16)
        .into_iter()
        .filter(|l| !partitions.cuts(l))
        .collect();
    wait_links(e, &uncut, FEDERATION_TIMEOUT).await
}

/// Waits until each of `links` runs for every federated exchange, as the management API of
/// its downstream DC reports it.
pub(crate) async fn wait_links(
    e: &Endpoints,
    links: &[Link],
    timeout: Duration,
) -> anyhow::Result<()> {
    let feds = federated_dcs(e);
    let deadline = Instant::now() + timeout;
    loop {
        let mut missing = Vec::new();
        for (down, fed) in (1..).zip(&feds) {
            let ups: Vec<FederatedDc> = links
                .iter()
                .filter(|l| l.from == down)
                .map(|l| feds[usize::from(l.to - 1)].clone())
                .collect();
            if ups.is_empty() {
                continue;
            }
            match federation::links_not_running(fed, &ups).await {
                Ok(m) => missing.extend(m.into_iter().map(|m| format!("{}: {m}", fed.dc))),
                Err(e) => missing.push(format!("{}: {e:#}", fed.dc)),
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "federation links not running within {timeout:?}: {}",
                missing.join("; ")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Starts the services of DCs `dcs` that do not run (and restarts those started with other
/// peers, e.g. before their links went through the proxies), then waits until each DC
/// serves XMPP.
pub(crate) async fn start_services(e: &Endpoints, dcs: &[u16]) -> anyhow::Result<()> {
    let mut per_dc: Vec<(u16, Vec<Service>)> = Vec::new();
    for &dc in dcs {
        let plan = services::plan(&dc_env(dc, e), e.gateways_per_dc, e.routers_per_dc);
        for s in &plan {
            restart_if_peers_changed(s).await?;
            if s.pid().is_none() {
                println!(
                    "starting {} (log {})",
                    s.instance_id,
                    s.log_file().display()
                );
            }
            s.start()?;
        }
        per_dc.push((dc, plan));
    }
    let waits = per_dc.iter().map(|(dc, plan)| async move {
        services::wait_xmpp(&e.domain, DcPorts::of(*dc).c2s, plan, XMPP_TIMEOUT)
            .await
            .with_context(|| format!("{} is not serving XMPP", layout::dc_id(*dc)))
    });
    futures::future::try_join_all(waits).await?;
    // Serving XMPP is not all: `up` returns once every service is ready, cross-DC work
    // included (each replicator holds a snapshot of every other DC that is not declared down).
    let all: Vec<Service> = per_dc.into_iter().flat_map(|(_, plan)| plan).collect();
    services::wait_ready(&all, READY_TIMEOUT).await?;
    Ok(())
}

/// A running service whose `MEERKAT_PEERS` is not what it should be now is stopped (for
/// `start` to start it again): it would refuse what arrives through the links.
async fn restart_if_peers_changed(s: &Service) -> anyhow::Result<()> {
    const PEERS: &str = "MEERKAT_PEERS";
    let Some(pid) = s.pid() else {
        return Ok(());
    };
    let wanted = s
        .env
        .iter()
        .find(|(k, _)| k == PEERS)
        .map(|(_, v)| v.clone());
    if started_env(pid, PEERS) != wanted {
        println!(
            "restarting {} (pid {pid}): its peers changed",
            s.instance_id
        );
        let exe = layout::release_bin(s.binary);
        meerkat_localstack::process::terminate(
            pid,
            &exe.to_string_lossy(),
            Duration::from_secs(15),
        )
        .await?;
    }
    Ok(())
}

/// The value of `key` in the environment process `pid` was started with.
fn started_env(pid: u32, key: &str) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    environ.split(|b| *b == 0).find_map(|kv| {
        let kv = String::from_utf8_lossy(kv);
        kv.strip_prefix(key)?.strip_prefix('=').map(str::to_owned)
    })
}

pub async fn down() -> anyhow::Result<()> {
    services::stop_all().await?;
    for l in links::recorded() {
        if let Some(pid) = l.stop().await? {
            println!("stopping link proxy {} (pid {pid})", l.label());
        }
    }
    let nodes: Vec<RabbitNode> = (1..=MAX_DCS)
        .map(rabbit)
        .filter(|n| n.is_running())
        .collect();
    for n in &nodes {
        println!("stopping RabbitMQ {}", n.config().node());
    }
    let pg = postgres(PG_PORT);
    if pg.is_running() {
        println!("stopping PostgreSQL");
    }
    let (b, p) = tokio::join!(
        futures::future::try_join_all(nodes.iter().map(|n| n.stop())),
        pg.stop()
    );
    b?;
    p?;
    println!("down (data kept under {})", layout::stack_dir().display());
    Ok(())
}

pub async fn status() -> anyhow::Result<()> {
    let endpoints = Endpoints::read()?;
    let pid_files = services::pid_files();
    let partitions = Partitions::load()?;
    let shape = endpoints.as_ref().map_or(0, |e| e.dcs.len() as u16);
    let pg_port = endpoints.as_ref().map_or(PG_PORT, |e| e.postgres_port);
    let pg = postgres(pg_port).pid();
    let proxies = links::recorded();
    if !anything_running() && pg.is_none() && proxies.iter().all(|l| l.pid().is_none()) {
        println!("nothing running");
        links::print_partitions_kept(&partitions);
        return Ok(());
    }
    for dc in 1..=MAX_DCS {
        let node = rabbit(dc);
        let id = layout::dc_id(dc);
        let own: Vec<_> = pid_files
            .iter()
            .filter(|(s, _)| s.starts_with(&format!("{id}-")))
            .map(|(s, f)| (s, services::live_pid(f).map(|(pid, _)| pid)))
            .collect();
        let node_pid = node.pid();
        let live = own.iter().filter(|(_, pid)| pid.is_some()).count();
        if dc > shape && node_pid.is_none() && live == 0 {
            continue;
        }
        let state = match (node_pid.is_some(), live) {
            (true, n) if n == own.len() => "up",
            (false, 0) => "down",
            _ => "partly up",
        };
        println!("{id}: {state}");
        match node_pid {
            Some(pid) => {
                let ready = if node.endpoint().is_ready().await {
                    "ready"
                } else {
                    "not ready"
                };
                println!(
                    "  RabbitMQ {:<28} pid {pid:<8} {ready}  {}",
                    node.config().node(),
                    node.endpoint().mgmt_url()
                );
            }
            None => println!("  RabbitMQ {:<28} stopped", node.config().node()),
        }
        for (instance, pid) in own {
            match pid {
                Some(pid) => println!("  {instance:<37} pid {pid}"),
                None => println!("  {instance:<37} not running"),
            }
        }
    }
    let mut all_links = Link::all(shape);
    all_links.extend(proxies);
    all_links.sort();
    all_links.dedup();
    if !all_links.is_empty() {
        println!("links (DC K's broker reaches DC L's through a proxy on 127.0.0.1:57KL):");
        for l in &all_links {
            let state = match l.pid() {
                Some(pid) => format!("pid {pid}"),
                None if partitions.cuts(l) => "cut (partition)".to_owned(),
                None => "not running (`cargo xtask up` starts it)".to_owned(),
            };
            println!(
                "  {:<9} {} → {}  {state}",
                l.label(),
                l.listen(),
                l.target()
            );
        }
    }
    links::print_partitions_kept(&partitions);
    if let Some(pid) = pg {
        println!("PostgreSQL 127.0.0.1:{pg_port} pid {pid}");
    }
    if endpoints.is_some() {
        println!("endpoints: {}", layout::endpoints_file().display());
    }
    Ok(())
}
