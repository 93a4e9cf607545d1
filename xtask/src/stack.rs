//! `cargo xtask up`, `down` and `status`: the local multi-DC stack on loopback.

use std::time::Duration;

use anyhow::{bail, Context as _};
use meerkat_localstack::federation::{self, FederatedDc};
use meerkat_localstack::{
    ensure_installed, port_open, PgCluster, PgConfig, RabbitConfig, RabbitNode,
};

use crate::endpoints::{AdminEndpoint, DcEndpoints, Endpoints};
use crate::layout::{self, DcPorts, MAX_DCS, PG_PORT};
use crate::services::{self, DcEnv, Service};

/// How long a DC's services get to answer XMPP after starting.
const XMPP_TIMEOUT: Duration = Duration::from_secs(90);
/// How long the federation links between the DCs' brokers get to run.
const FEDERATION_TIMEOUT: Duration = Duration::from_secs(60);

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
}

fn rabbit(dc: u16) -> RabbitNode {
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
fn postgres(port: u16) -> PgCluster {
    PgCluster::new(PgConfig {
        dir: layout::pg_dir(),
        port,
    })
}

fn database(dc: u16) -> String {
    format!("meerkat_{}", layout::dc_id(dc))
}

fn dc_env<'a>(dc: u16, e: &'a Endpoints) -> DcEnv<'a> {
    let d = &e.dcs[usize::from(dc - 1)];
    DcEnv {
        dc,
        domain: &e.domain,
        amqp_url: d.amqp_url.clone(),
        database_url: d.database_url.clone(),
        cert: &e.cert_path,
        key: &e.key_path,
        peers: e
            .dcs
            .iter()
            .filter(|o| o.dc != d.dc)
            .map(|o| format!("{}={}", o.dc, o.amqp_url))
            .collect::<Vec<_>>()
            .join(","),
        management_url: d.management_url.clone(),
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
        dcs: Vec::new(),
    };
    for dc in 1..=args.dcs {
        let p = DcPorts::of(dc);
        let node = rabbit(dc).endpoint();
        e.dcs.push(DcEndpoints {
            dc: layout::dc_id(dc),
            c2s: format!("127.0.0.1:{}", p.c2s),
            direct_tls: format!("127.0.0.1:{}", p.tls),
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

fn everything_running(e: &Endpoints) -> bool {
    let dcs = e.dcs.len() as u16;
    (1..=dcs).all(|dc| rabbit(dc).is_running())
        && postgres(e.postgres_port).is_running()
        && (e.infra_only
            || (1..=dcs).all(|dc| {
                services::plan(&dc_env(dc, e), e.gateways_per_dc, e.routers_per_dc)
                    .iter()
                    .all(|s| s.pid().is_some())
            }))
}

pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    let want = wanted(&args);
    if let Some(have) = Endpoints::read()? {
        if anything_running() && !have.same_shape(&want) {
            bail!(
                "a stack of another shape is running ({} DCs, domain {}, infra_only {}); \
                 `cargo xtask down` first",
                have.dcs.len(),
                have.domain,
                have.infra_only
            );
        }
        if everything_running(&have) && have.same_shape(&want) {
            println!("already up");
            have.print();
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
    want.write()?;
    start_infra(args.dcs, args.pg_port).await?;
    federate(&want).await?;
    if !args.infra_only {
        start_services(&want).await?;
    }
    println!("up");
    want.print();
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

/// Full-mesh exchange federation between the DCs' brokers (none for one DC). Idempotent, so
/// a repeated `up` repairs it.
async fn federate(e: &Endpoints) -> anyhow::Result<()> {
    if e.dcs.len() < 2 {
        return Ok(());
    }
    let dcs: Vec<FederatedDc> = e
        .dcs
        .iter()
        .map(|d| FederatedDc {
            dc: d.dc.clone(),
            mgmt_url: d.management_url.clone(),
            user: d.management_user.clone(),
            password: d.management_password.clone(),
            vhost: "/".into(),
            amqp_uri: d.amqp_url.clone(),
            via: Default::default(),
        })
        .collect();
    println!("federating {} DCs (full mesh)", dcs.len());
    federation::configure(&dcs).await?;
    federation::wait_links_running(&dcs, FEDERATION_TIMEOUT).await
}

async fn start_services(e: &Endpoints) -> anyhow::Result<()> {
    let mut per_dc: Vec<(u16, Vec<Service>)> = Vec::new();
    for dc in 1..=e.dcs.len() as u16 {
        let plan = services::plan(&dc_env(dc, e), e.gateways_per_dc, e.routers_per_dc);
        for s in &plan {
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
    Ok(())
}

pub async fn down() -> anyhow::Result<()> {
    services::stop_all().await?;
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
    let services = services::pid_files();
    let mut any = false;
    for dc in 1..=MAX_DCS {
        let node = rabbit(dc);
        let id = layout::dc_id(dc);
        let own: Vec<_> = services
            .iter()
            .filter(|(s, _)| s.starts_with(&format!("{id}-")))
            .collect();
        if !node.is_running() && own.is_empty() {
            continue;
        }
        any = true;
        println!("{id}:");
        match node.pid() {
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
        for (instance, file) in own {
            match services::live_pid(file) {
                Some((pid, _)) => println!("  {instance:<37} pid {pid}"),
                None => println!("  {instance:<37} not running"),
            }
        }
    }
    let pg_port = endpoints.as_ref().map_or(PG_PORT, |e| e.postgres_port);
    if let Some(pid) = postgres(pg_port).pid() {
        any = true;
        println!("PostgreSQL 127.0.0.1:{pg_port} pid {pid}");
    }
    if !any {
        println!("nothing running");
    } else if endpoints.is_some() {
        println!("endpoints: {}", layout::endpoints_file().display());
    }
    Ok(())
}
