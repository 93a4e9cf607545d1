//! DCs whose services run as real processes: the service binaries of this workspace, started
//! with `MEERKAT_*` configuration in their environment like `cargo xtask up` starts them, on the
//! test run's infrastructure (one fresh vhost and database per DC, federated full mesh through
//! link proxies, as `multi::MultiDc`).
//!
//! For what in-process services cannot show: each process installs its own global tracing
//! subscriber, so each exports its spans under its own `service.name` (`Dc`/`MultiDc` run every
//! service in the test process, where only the first `telemetry::init` would count).
//!
//! The binaries are the debug builds next to the test executable (`target/debug/<name>`), built
//! by `cargo nextest run --workspace` (`cargo xtask test`): a package's binaries are built for
//! its integration tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use tokio::process::{Child, Command};

use crate::client::ClientConfig;
use crate::multi::{self, DcBroker, Links};

/// How long a service process gets to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The path of a service binary of this workspace (`c2s-gateway`, `router`, ...).
pub fn service_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("the test executable")?;
    // target/debug/deps/<test>-<hash> -> target/debug/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("the test executable has no target directory")?;
    let path = dir.join(name);
    anyhow::ensure!(
        path.is_file(),
        "{} is missing: it is built with the workspace's tests (`cargo xtask test`) or by `cargo build -p {name}`",
        path.display()
    );
    Ok(path)
}

/// A free TCP port of 127.0.0.1 (free when asked; a service binds it right after).
fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0)).context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// One service process; killed when dropped.
pub struct ProcService {
    /// `dc1-router1`, `dc2-gw1`, ...: also its instance id.
    pub name: String,
    pub admin: SocketAddr,
    /// Its stdout and stderr.
    pub log: PathBuf,
    child: Child,
}

impl ProcService {
    /// Starts `binary` of DC `dc` with `env` (plus its admin address and instance id, and the
    /// trace resource attributes `service.instance.id` = `name` and `meerkat.dc` = `dc`).
    fn spawn(
        binary: &str,
        dc: &str,
        name: &str,
        env: &[(String, String)],
        logs: &std::path::Path,
    ) -> anyhow::Result<ProcService> {
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let log = logs.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).with_context(|| format!("{}", log.display()))?;
        let err = out.try_clone()?;
        let child = Command::new(service_binary(binary)?)
            // What the test process was told about traces is not for the services.
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .env_remove("MEERKAT_CONFIG")
            // The filter also decides which spans are exported: info, whatever the test's.
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("MEERKAT_ADMIN_ADDR", admin.to_string())
            .env("MEERKAT_INSTANCE_ID", name)
            .env(
                "OTEL_RESOURCE_ATTRIBUTES",
                format!("service.instance.id={name},meerkat.dc={dc}"),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {binary} as {name}"))?;
        Ok(ProcService {
            name: name.to_owned(),
            admin,
            log,
            child,
        })
    }

    /// Waits until its `/readyz` answers 200; fails at once if the process exits.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        self.wait_path("/readyz").await
    }

    /// Waits until its `/readyz/local` answers 200 (serving its own DC).
    async fn wait_local_ready(&mut self) -> anyhow::Result<()> {
        self.wait_path("/readyz/local").await
    }

    async fn wait_path(&mut self, path: &str) -> anyhow::Result<()> {
        let url = format!("http://{}{path}", self.admin);
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!(
                    "{} exited ({status}); its log {}:\n{}",
                    self.name,
                    self.log.display(),
                    meerkat_localstack::process::log_tail(&self.log, 30)
                );
            }
            if let Ok(resp) = client.get(&url).send().await {
                if resp.status().is_success() {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!(
                    "{} not ready within {READY_TIMEOUT:?}; its log {}:\n{}",
                    self.name,
                    self.log.display(),
                    meerkat_localstack::process::log_tail(&self.log, 30)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops it with SIGTERM (it drains and flushes its traces), killing it after `grace`.
    pub async fn stop(mut self, grace: Duration) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            meerkat_localstack::process::signal(pid, "TERM")?;
        }
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            self.child.kill().await?;
            anyhow::bail!("{} did not stop within {grace:?}", self.name);
        }
        Ok(())
    }
}

/// One DC of processes: a session replicator, routers, gateways.
pub struct ProcDc {
    pub dc: String,
    pub domain: String,
    pub amqp_url: String,
    pub database_url: String,
    /// The STARTTLS client port of its gateway.
    pub c2s: SocketAddr,
    pub replicator: ProcService,
    pub routers: Vec<ProcService>,
    pub gateways: Vec<ProcService>,
}

impl ProcDc {
    /// Client settings for this DC's STARTTLS port.
    pub fn client(&self) -> ClientConfig {
        ClientConfig::new(self.c2s, self.domain.as_str())
    }

    /// Stops every service with SIGTERM, gateways first (their sessions are announced closed).
    pub async fn stop(self) -> anyhow::Result<()> {
        let grace = Duration::from_secs(20);
        for s in self.gateways.into_iter().chain(self.routers) {
            s.stop(grace).await?;
        }
        self.replicator.stop(grace).await
    }
}

/// `n` federated DCs whose services run as processes.
pub struct ProcMultiDc {
    pub brokers: Vec<DcBroker>,
    pub dcs: Vec<ProcDc>,
    /// The links between the DCs; they stay up while this lives.
    pub links: Links,
    /// Where the services' logs are.
    pub logs: PathBuf,
}

impl ProcMultiDc {
    /// Starts `n` DCs, each with one session replicator, one router and one gateway (domain
    /// `example.com`, registration open). `env` is added to every service's environment (e.g.
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub async fn start(n: usize, env: &[(&str, &str)]) -> anyhow::Result<ProcMultiDc> {
        let infra = crate::infra().await?;
        let (brokers, links) = multi::vhosts(n, true, None).await?;
        let logs = std::env::temp_dir().join(format!(
            "meerkat-procs-{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..6]
        ));
        std::fs::create_dir_all(&logs).with_context(|| format!("{}", logs.display()))?;
        let domain = "example.com";
        let mut dcs = Vec::with_capacity(n);
        for b in &brokers {
            let database_url = infra.fresh_database().await?;
            let mut common: Vec<(String, String)> = vec![
                ("MEERKAT_DC".into(), b.dc.clone()),
                ("MEERKAT_DOMAIN".into(), domain.into()),
                ("MEERKAT_AMQP_URL".into(), b.vhost.amqp_url.clone()),
                ("MEERKAT_DATABASE_URL".into(), database_url.clone()),
            ];
            common.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
            let peers = brokers
                .iter()
                .filter(|o| o.dc != b.dc)
                .map(|o| format!("{}={}", o.dc, o.federation.uri_for(&b.dc)))
                .collect::<Vec<_>>()
                .join(",");
            let mut e = common.clone();
            e.push(("MEERKAT_PEERS".into(), peers));
            let mut replicator = ProcService::spawn(
                "session-replicator",
                &b.dc,
                &format!("{}-replicator", b.dc),
                &e,
                &logs,
            )?;
            replicator.wait_local_ready().await?;
            let mut router =
                ProcService::spawn("router", &b.dc, &format!("{}-router1", b.dc), &e, &logs)?;
            // A stanza published before the routers consume would be dropped.
            router.wait_ready().await?;
            let c2s = SocketAddr::from(([127, 0, 0, 1], free_port()?));
            let mut e = common.clone();
            e.extend([
                ("MEERKAT_C2S_ADDR".to_owned(), c2s.to_string()),
                (
                    "MEERKAT_TLS_ADDR".to_owned(),
                    format!("127.0.0.1:{}", free_port()?),
                ),
                (
                    "MEERKAT_HTTP_ADDR".to_owned(),
                    format!("127.0.0.1:{}", free_port()?),
                ),
                (
                    "MEERKAT_HTTPS_ADDR".to_owned(),
                    format!("127.0.0.1:{}", free_port()?),
                ),
                ("MEERKAT_REGISTRATION".to_owned(), "true".to_owned()),
                (
                    "MEERKAT_SCRAM_SECRET".to_owned(),
                    crate::stack::TEST_SCRAM_SECRET.to_owned(),
                ),
                (
                    "MEERKAT_THROTTLE_RELAXED_FOR".to_owned(),
                    "127.0.0.0/8,::1".to_owned(),
                ),
            ]);
            let mut gateway =
                ProcService::spawn("c2s-gateway", &b.dc, &format!("{}-gw1", b.dc), &e, &logs)?;
            gateway.wait_ready().await?;
            dcs.push(ProcDc {
                dc: b.dc.clone(),
                domain: domain.into(),
                amqp_url: b.vhost.amqp_url.clone(),
                database_url,
                c2s,
                replicator,
                routers: vec![router],
                gateways: vec![gateway],
            });
        }
        multi::wait_inter_bindings(&brokers).await?;
        // Every replicator ready for cross-DC work: the other DCs have started by now.
        for dc in &mut dcs {
            dc.replicator.wait_ready().await?;
        }
        Ok(ProcMultiDc {
            brokers,
            dcs,
            links,
            logs,
        })
    }

    /// DC `k`, counting from 1 like the DC ids.
    pub fn dc(&self, k: usize) -> &ProcDc {
        &self.dcs[k - 1]
    }

    /// Waits until every router of every DC holds exactly `expected` sessions in its directory.
    pub async fn wait_directory_sessions(
        &self,
        expected: u64,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let routers: Vec<(String, SocketAddr)> = self
            .dcs
            .iter()
            .flat_map(|dc| dc.routers.iter().map(|r| (r.name.clone(), r.admin)))
            .collect();
        multi::wait_routers_hold(&routers, expected, timeout).await
    }

    /// Stops every DC's services gracefully, then removes the logs.
    pub async fn stop(self) -> anyhow::Result<()> {
        for dc in self.dcs {
            dc.stop().await?;
        }
        let _ = std::fs::remove_dir_all(&self.logs);
        Ok(())
    }
}
