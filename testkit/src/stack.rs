//! One DC of Meerkat started inside the test process: routers and gateways from their
//! libraries, on a fresh vhost of the shared broker and a fresh database, with client
//! ports picked by the OS. Tests then talk to it over real sockets.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::client::ClientConfig;
use crate::timers::Timers;

/// How to shape the DC under test.
#[derive(Clone, Debug)]
pub struct StackOptions {
    pub domain: String,
    pub dc: String,
    pub gateways: usize,
    pub routers: usize,
    pub registration: bool,
    pub tls_required: bool,
    pub max_stanza_bytes: usize,
    pub idle_timeout_secs: u64,
    /// Use this AMQP URL (e.g. a dedicated broker) instead of a fresh vhost of the shared one.
    pub amqp_url: Option<String>,
    /// Start a session replicator too (multi-DC tests; `multi::MultiDc` sets it).
    pub replicator: bool,
    /// The other DCs, as (DC id, upstream URI of its broker): the peers of the replicator, the
    /// health service and the routers.
    pub peers: Vec<(String, String)>,
    /// The replicator's `outbox_retention_secs` (its default when `None`).
    pub outbox_retention_secs: Option<u64>,
    /// The replicator's `data_status_ms` (its default when `None`).
    pub data_status_ms: Option<u64>,
    /// The replicator's `full_copy_batch` (its default when `None`).
    pub full_copy_batch: Option<std::num::NonZeroUsize>,
    /// Start the DC's health service (dc-health; its peers are `peers`): it watches the
    /// gateways, and with peers the other DCs.
    pub health: bool,
    /// The routers' `max_offline` (offline messages kept per user; their default when `None`).
    pub max_offline: Option<u32>,
    /// The routers' `archive` (XEP-0313 message archive; on by default, as in production).
    pub archive: bool,
    /// The routers' `max_pep_items` and `max_pep_nodes` (their defaults when `None`): PEP's
    /// limits, small for the tests that reach them.
    pub pep_limits: Option<(u32, u32)>,
    /// The gateways' configuration to start from (their defaults when `None`): the stack
    /// still sets the DC, domain, URLs, addresses, instance id and the options above.
    pub gateway: Option<c2s_gateway::Config>,
    /// Keep the gateways' registration and login throttles at their production defaults for
    /// loopback too. Off by default: tests, like the local stack, create many accounts from
    /// 127.0.0.1 (`throttle_relaxed_for` loopback).
    pub production_throttles: bool,
    /// The routers and the replicator speak the next minor wire version (their test-only
    /// `test_newer_minor_wire`): the mixed-version test's newer DC.
    pub newer_minor_wire: bool,
    /// Failure detection, heartbeats and the stanza backlog towards other DCs: the tests'
    /// fast profile by default, production's for the test of the detection bound.
    pub timers: Timers,
}

/// The SCRAM secret every gateway of a test run shares, as every gateway of a deployment must.
pub const TEST_SCRAM_SECRET: &str = "meerkat-test-scram-secret";

impl Default for StackOptions {
    fn default() -> StackOptions {
        StackOptions {
            domain: "example.com".into(),
            dc: "dc1".into(),
            gateways: 1,
            routers: 1,
            registration: true,
            tls_required: true,
            max_stanza_bytes: 256 * 1024,
            idle_timeout_secs: 600,
            amqp_url: None,
            replicator: false,
            peers: Vec::new(),
            outbox_retention_secs: None,
            data_status_ms: None,
            full_copy_batch: None,
            health: true,
            max_offline: None,
            pep_limits: None,
            archive: true,
            gateway: None,
            production_throttles: false,
            newer_minor_wire: false,
            timers: Timers::fast(),
        }
    }
}

/// A running service: its own tokio runtime (so that killing it ends every task it spawned,
/// as a crashed process would) and the token that stops it gracefully.
pub struct ServiceHandle {
    pub name: String,
    /// The instance id the service runs under (a gateway's delivery queue's routing key);
    /// empty when the service chose its own.
    pub instance: String,
    pub admin: SocketAddr,
    stop: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl ServiceHandle {
    /// Builds a service with `build` and runs it with `run`, both on a runtime of its own.
    /// `build` returns the service and its admin address.
    pub async fn spawn<S, B, BF, R, RF>(
        name: &str,
        build: B,
        run: R,
    ) -> anyhow::Result<ServiceHandle>
    where
        S: Send + 'static,
        B: FnOnce(CancellationToken) -> BF + Send + 'static,
        BF: std::future::Future<Output = anyhow::Result<(S, SocketAddr)>> + Send + 'static,
        R: FnOnce(S) -> RF + Send + 'static,
        RF: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("svc-{name}"))
            .enable_all()
            .build()
            .context("service runtime")?;
        let stop = CancellationToken::new();
        let (built_tx, built_rx) = tokio::sync::oneshot::channel();
        let token = stop.clone();
        let task = runtime.spawn(async move {
            match build(token).await {
                Ok((service, admin)) => {
                    let _ = built_tx.send(Ok(admin));
                    run(service).await
                }
                Err(e) => {
                    let _ = built_tx.send(Err(e));
                    Ok(())
                }
            }
        });
        let mut handle = ServiceHandle {
            name: name.to_owned(),
            instance: String::new(),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            stop,
            task: Some(task),
            runtime: Some(runtime),
        };
        handle.admin = built_rx
            .await
            .map_err(|_| anyhow::anyhow!("{name} did not build"))??;
        Ok(handle)
    }

    /// Graceful stop: cancels the service and waits for `run` to return.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.stop.cancel();
        let result = match self.task.take() {
            Some(task) => tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .context("service did not stop within 30 s")
                .and_then(|r| r.context("service task"))
                .and_then(|r| r),
            None => Ok(()),
        };
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
        result
    }

    /// Ends the service at once, without a word: every task it spawned is dropped, its
    /// sockets and broker connections close as if the process had been killed.
    pub fn kill(&mut self) {
        self.task.take();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }

    /// Whether it still runs.
    pub fn is_running(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl Drop for ServiceHandle {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// The client ports of a DC's gateways (they share them).
#[derive(Clone, Copy, Debug)]
struct GatewayPorts {
    c2s: SocketAddr,
    tls: Option<SocketAddr>,
    http: Option<SocketAddr>,
    https: Option<SocketAddr>,
}

pub struct Dc {
    pub options: StackOptions,
    pub amqp_url: String,
    pub database_url: String,
    pub c2s: SocketAddr,
    pub tls: Option<SocketAddr>,
    /// The gateways' plain HTTP and HTTPS ports (XMPP over WebSocket, XEP-0156).
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
    pub gateways: Vec<ServiceHandle>,
    pub routers: Vec<ServiceHandle>,
    /// The session replicator, when `options.replicator`.
    pub replicators: Vec<ServiceHandle>,
    /// The health service, when `options.health`.
    pub health: Vec<ServiceHandle>,
    /// The DC's own vhost, when it made one: deleted when the DC goes (after its services,
    /// which are dropped first).
    _vhost: Option<crate::infra::Vhost>,
}

impl Dc {
    pub async fn start(options: StackOptions) -> anyhow::Result<Dc> {
        let infra = crate::infra().await?;
        let (amqp_url, vhost) = match &options.amqp_url {
            Some(url) => (url.clone(), None),
            None => {
                let v = infra.fresh_vhost().await?;
                (v.amqp_url.clone(), Some(v))
            }
        };
        let database_url = infra.fresh_database().await?;
        let mut dc = Dc {
            options,
            amqp_url,
            database_url,
            c2s: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: None,
            http: None,
            https: None,
            gateways: Vec::new(),
            routers: Vec::new(),
            replicators: Vec::new(),
            health: Vec::new(),
            _vhost: vhost,
        };
        if dc.options.replicator {
            dc.start_replicator().await?;
        }
        if dc.options.health {
            dc.start_health().await?;
        }
        for _ in 0..dc.options.routers {
            dc.start_router().await?;
        }
        // A stanza published before the routers have declared and bound the route partitions
        // would be dropped by the exchange: clients come only once they consume.
        for r in &dc.routers {
            wait_ready(r.admin).await?;
        }
        for _ in 0..dc.options.gateways {
            dc.start_gateway().await?;
        }
        Ok(dc)
    }

    /// The settings every service of this DC shares; an empty `instance_id` lets the service
    /// name itself.
    fn common(&self, instance_id: String) -> meerkat_runtime::Common {
        meerkat_runtime::Common {
            dc: self.options.dc.clone(),
            domain: self.options.domain.clone(),
            amqp_url: self.amqp_url.as_str().into(),
            instance_id,
            ..Default::default()
        }
    }

    /// The DC's database, as its services are given it.
    fn database(&self) -> meerkat_runtime::Database {
        meerkat_runtime::Database {
            database_url: self.database_url.as_str().into(),
            ..Default::default()
        }
    }

    pub async fn start_router(&mut self) -> anyhow::Result<()> {
        let n = self.routers.len() + 1;
        let defaults = router::Config::default();
        let config = router::Config {
            common: self.common(format!("{}-router{n}-{}", self.options.dc, short_id())),
            database: self.database(),
            max_offline: self.options.max_offline.unwrap_or(defaults.max_offline),
            peers: self
                .options
                .peers
                .iter()
                .map(|(dc, uri)| router::Peer {
                    dc: dc.clone(),
                    upstream_uri: uri.clone(),
                })
                .collect(),
            test_newer_minor_wire: self.options.newer_minor_wire,
            archive: self.options.archive,
            max_pep_items: self
                .options
                .pep_limits
                .map_or(defaults.max_pep_items, |l| l.0),
            max_pep_nodes: self
                .options
                .pep_limits
                .map_or(defaults.max_pep_nodes, |l| l.1),
            ..defaults
        };
        let handle = ServiceHandle::spawn(
            &format!("{}-router{n}", self.options.dc),
            |stop| async move {
                let r = router::Router::build(config, stop).await?;
                let admin = r.admin_addr();
                Ok((r, admin))
            },
            |r| r.run(),
        )
        .await?;
        self.routers.push(handle);
        Ok(())
    }

    /// Stops router `i` (an index into `routers`) gracefully and forgets it.
    pub async fn stop_router(&mut self, i: usize) -> anyhow::Result<()> {
        anyhow::ensure!(i < self.routers.len(), "no router {i}");
        let mut r = self.routers.remove(i);
        r.stop().await
    }

    /// Restarts router `i`: a graceful stop, then a new router (new instance id, empty
    /// directory, as after a process restart), waited for until ready.
    pub async fn restart_router(&mut self, i: usize) -> anyhow::Result<()> {
        self.stop_router(i).await?;
        self.start_router().await?;
        let admin = self.routers.last().map(|r| r.admin).context("router")?;
        wait_ready(admin).await
    }

    /// Stops the session replicator gracefully and forgets it.
    pub async fn stop_replicator(&mut self) -> anyhow::Result<()> {
        for mut r in self.replicators.drain(..) {
            r.stop().await?;
        }
        Ok(())
    }

    /// Restarts the session replicator: a graceful stop, then a new one (new epoch, empty
    /// view, as after a process restart), waited for until ready.
    pub async fn restart_replicator(&mut self) -> anyhow::Result<()> {
        self.stop_replicator().await?;
        self.start_replicator().await?;
        self.wait_ready().await
    }

    /// Waits until every service of the DC says `/readyz`: ready for cross-DC work too (the
    /// replicator holds a snapshot of every peer DC not declared down).
    pub async fn wait_ready(&self) -> anyhow::Result<()> {
        let all = self
            .replicators
            .iter()
            .chain(&self.health)
            .chain(&self.routers)
            .chain(&self.gateways);
        for s in all {
            wait_ready(s.admin).await?;
        }
        Ok(())
    }

    /// Starts the DC's session replicator, its peers from `options.peers`.
    pub async fn start_replicator(&mut self) -> anyhow::Result<()> {
        let defaults = session_replicator::Config::default();
        let config = session_replicator::Config {
            common: self.common(format!("{}-replicator-{}", self.options.dc, short_id())),
            database: self.database(),
            peers: self
                .options
                .peers
                .iter()
                .map(|(dc, uri)| session_replicator::Peer {
                    dc: dc.clone(),
                    upstream_uri: uri.clone(),
                })
                .collect(),
            outbox_retention_secs: self
                .options
                .outbox_retention_secs
                .unwrap_or(defaults.outbox_retention_secs),
            data_status_ms: self
                .options
                .data_status_ms
                .unwrap_or(defaults.data_status_ms),
            full_copy_batch: self
                .options
                .full_copy_batch
                .unwrap_or(defaults.full_copy_batch),
            test_newer_minor_wire: self.options.newer_minor_wire,
            ..defaults
        };
        let handle = ServiceHandle::spawn(
            &format!("{}-replicator", self.options.dc),
            |stop| async move {
                let r = session_replicator::SessionReplicator::build(config, stop).await?;
                let admin = r.admin_addr();
                Ok((r, admin))
            },
            |r| r.run(),
        )
        .await?;
        let admin = handle.admin;
        self.replicators.push(handle);
        // Serving this DC; its view of the peers may wait for DCs not started yet
        // (`MultiDc::start` waits for that).
        wait_local_ready(admin).await
    }

    /// Starts the DC's health service, its peers from `options.peers`, and waits until it is
    /// ready. Its instance id stays the same across restarts, as in a deployment.
    pub async fn start_health(&mut self) -> anyhow::Result<()> {
        let (management_url, vhost) = self.management().await.unwrap_or_default();
        let config = self.options.timers.apply_health(dc_health::Config {
            common: self.common(String::new()),
            peers: self
                .options
                .peers
                .iter()
                .map(|(dc, uri)| dc_health::Peer {
                    dc: dc.clone(),
                    upstream_uri: uri.clone(),
                })
                .collect(),
            management_url,
            vhost,
            ..dc_health::Config::default()
        });
        let handle = ServiceHandle::spawn(
            &format!("{}-health", self.options.dc),
            |stop| async move {
                let h = dc_health::DcHealth::build(config, stop).await?;
                let admin = h.admin_addr();
                Ok((h, admin))
            },
            |h| h.run(),
        )
        .await?;
        let admin = handle.admin;
        self.health.push(handle);
        wait_local_ready(admin).await
    }

    /// Stops the health service gracefully and forgets it.
    pub async fn stop_health(&mut self) -> anyhow::Result<()> {
        for mut h in self.health.drain(..) {
            h.stop().await?;
        }
        Ok(())
    }

    /// Ends the health service at once, without a word (its heartbeats just stop), and forgets
    /// it; [`Dc::start_health`] starts it again (a new epoch).
    pub fn kill_health(&mut self) {
        for mut h in self.health.drain(..) {
            h.kill();
        }
    }

    /// Ends gateway `i` (an index into `gateways`) at once, without a word: its client
    /// connections drop, its sessions are never announced closed, its heartbeats stop.
    pub fn kill_gateway(&mut self, i: usize) -> anyhow::Result<()> {
        anyhow::ensure!(i < self.gateways.len(), "no gateway {i}");
        self.gateways.remove(i).kill();
        Ok(())
    }

    /// The management API root and vhost of the DC's broker when it is the run's shared one.
    async fn management(&self) -> Option<(String, String)> {
        let rabbit = crate::infra().await.ok()?.rabbit();
        let vhost = self.amqp_url.strip_prefix(&rabbit.amqp_url(""))?;
        Some((rabbit.mgmt_url(), vhost.to_owned()))
    }

    /// Starts one more gateway; every gateway after the first shares the first one's ports.
    pub async fn start_gateway(&mut self) -> anyhow::Result<()> {
        let ports = GatewayPorts {
            c2s: self.c2s,
            tls: self.tls,
            http: self.http,
            https: self.https,
        };
        // The ports a stopped gateway left may have been taken meanwhile (another test's
        // outgoing connection can be given one): wait a little for them, then take others.
        let mut tries = 0;
        let ports = loop {
            match self.spawn_gateway(ports).await {
                Err(e) if port_taken(&e) && tries < 5 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) if port_taken(&e) => {
                    let any = SocketAddr::from(([127, 0, 0, 1], 0));
                    eprintln!(
                        "{}: the gateway's ports are taken: new ones ({e:#})",
                        self.options.dc
                    );
                    break self
                        .spawn_gateway(GatewayPorts {
                            c2s: any,
                            tls: Some(any),
                            http: Some(any),
                            https: Some(any),
                        })
                        .await?;
                }
                other => break other?,
            }
        };
        self.c2s = ports.c2s;
        self.tls = ports.tls;
        self.http = ports.http;
        self.https = ports.https;
        Ok(())
    }

    /// Starts one more gateway on ports of its own, as an instance added behind a load
    /// balancer would be, and returns client settings that reach just that instance (STARTTLS).
    /// It serves the DC like every other gateway; `stop_gateway` with the last index ends it.
    pub async fn start_gateway_on_own_port(&mut self) -> anyhow::Result<ClientConfig> {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let ports = GatewayPorts {
            c2s: any,
            tls: Some(any),
            http: Some(any),
            https: Some(any),
        };
        let ports = self.spawn_gateway(ports).await?;
        Ok(ClientConfig {
            addr: ports.c2s,
            ..self.client()
        })
    }

    /// Stops gateway `i` (an index into `gateways`) gracefully, as when an instance is scaled
    /// away: its clients get `<system-shutdown/>` and its sessions end as if they logged out.
    pub async fn stop_gateway(&mut self, i: usize) -> anyhow::Result<()> {
        anyhow::ensure!(i < self.gateways.len(), "no gateway {i}");
        self.gateways.remove(i).stop().await
    }

    /// Spawns a gateway listening on `ports` (port 0 or none: any free port) and waits until
    /// it is ready; returns the addresses it listens on.
    async fn spawn_gateway(&mut self, ports: GatewayPorts) -> anyhow::Result<GatewayPorts> {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let n = self.gateways.len() + 1;
        let instance = format!("{}-gw{n}-{}", self.options.dc, short_id());
        let config = c2s_gateway::Config {
            common: self.common(instance.clone()),
            database: self.database(),
            c2s_addr: ports.c2s,
            tls_addr: Some(ports.tls.unwrap_or(any)),
            http_addr: Some(ports.http.unwrap_or(any)),
            https_addr: Some(ports.https.unwrap_or(any)),
            registration: self.options.registration,
            tls_required: self.options.tls_required,
            max_stanza_bytes: self.options.max_stanza_bytes,
            idle_timeout_secs: self.options.idle_timeout_secs,
            scram_secret: c2s_gateway::Secret::new(TEST_SCRAM_SECRET),
            heartbeat_interval_ms: self.options.timers.gateway_heartbeat_ms,
            throttle_relaxed_for: if self.options.production_throttles {
                c2s_gateway::CidrList::default()
            } else {
                c2s_gateway::CidrList::loopback()
            },
            ..self.options.gateway.clone().unwrap_or_default()
        };
        let (addrs_tx, addrs_rx) = tokio::sync::oneshot::channel();
        let mut handle = ServiceHandle::spawn(
            &format!("{}-gw{n}", self.options.dc),
            |stop| async move {
                let g = c2s_gateway::Gateway::build(config, stop).await?;
                let _ = addrs_tx.send(GatewayPorts {
                    c2s: g.c2s_addr(),
                    tls: g.tls_addr(),
                    http: g.http_addr(),
                    https: g.https_addr(),
                });
                let admin = g.admin_addr();
                Ok((g, admin))
            },
            |g| g.run(),
        )
        .await?;
        let addrs = addrs_rx.await.context("gateway addresses")?;
        let admin = handle.admin;
        handle.instance = instance;
        self.gateways.push(handle);
        wait_ready(admin).await?;
        Ok(addrs)
    }

    /// The DC's database rebuilt empty, as after losing it: every service stops, the DC gets a
    /// fresh database, and its replicator (when it has one), routers and gateways start again
    /// on it (the gateways on the same client ports).
    pub async fn rebuild_database(&mut self) -> anyhow::Result<()> {
        for mut g in self.gateways.drain(..) {
            g.stop().await?;
        }
        for mut r in self.routers.drain(..) {
            r.stop().await?;
        }
        self.stop_replicator().await?;
        self.database_url = crate::infra().await?.fresh_database().await?;
        if self.options.replicator {
            self.start_replicator().await?;
        }
        for _ in 0..self.options.routers {
            self.start_router().await?;
        }
        for _ in 0..self.options.gateways {
            self.start_gateway().await?;
        }
        Ok(())
    }

    /// Client settings for this DC's STARTTLS port.
    pub fn client(&self) -> ClientConfig {
        ClientConfig::new(self.c2s, self.options.domain.as_str())
    }

    /// Client settings for this DC's direct TLS port.
    pub fn client_direct_tls(&self) -> ClientConfig {
        ClientConfig {
            addr: self.tls.unwrap_or(self.c2s),
            domain: self.options.domain.clone(),
            direct_tls: true,
            starttls: false,
            websocket: false,
        }
    }

    /// Client settings for XMPP over WebSocket on this DC's HTTPS port (`wss://`).
    pub fn client_websocket(&self) -> ClientConfig {
        ClientConfig::websocket(
            self.https.unwrap_or(self.c2s),
            self.options.domain.as_str(),
            true,
        )
    }

    /// Client settings for XMPP over WebSocket on this DC's plain HTTP port (`ws://`).
    pub fn client_websocket_plain(&self) -> ClientConfig {
        ClientConfig::websocket(
            self.http.unwrap_or(self.c2s),
            self.options.domain.as_str(),
            false,
        )
    }

    /// Starts another gateway on ports of its own and returns its plain HTTP address (BOSH
    /// and WebSocket at `http://<addr>/…`), so that a test can choose which gateway a request
    /// reaches.
    pub async fn start_gateway_on_own_http(&mut self) -> anyhow::Result<SocketAddr> {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let ports = GatewayPorts {
            c2s: any,
            tls: Some(any),
            http: Some(any),
            https: Some(any),
        };
        let ports = self.spawn_gateway(ports).await?;
        ports.http.context("the gateway's HTTP address")
    }

    /// Ends every service at once, without a word (gateways first), as if the DC's machines
    /// lost power. The services can be started again with `start_*` on the same database.
    pub fn kill(&mut self) {
        let all = self
            .gateways
            .iter_mut()
            .chain(self.routers.iter_mut())
            .chain(self.replicators.iter_mut())
            .chain(self.health.iter_mut());
        for s in all {
            s.kill();
        }
    }

    /// Starts the DC's services again after [`Dc::kill`], on the same database and client
    /// ports: new instances, new epochs, as after a power cut.
    pub async fn revive(&mut self) -> anyhow::Result<()> {
        self.revive_with(self.options.replicator).await
    }

    /// [`Dc::revive`] without the session replicator, which [`Dc::start_replicator`] starts
    /// later: the DC serves from its database as it was, applying nothing of the other DCs
    /// meanwhile.
    pub async fn revive_without_replicator(&mut self) -> anyhow::Result<()> {
        self.revive_with(false).await
    }

    async fn revive_with(&mut self, replicator: bool) -> anyhow::Result<()> {
        self.gateways.clear();
        self.routers.clear();
        self.replicators.clear();
        self.health.clear();
        if replicator {
            self.start_replicator().await?;
        }
        if self.options.health {
            self.start_health().await?;
        }
        for _ in 0..self.options.routers {
            self.start_router().await?;
        }
        for _ in 0..self.options.gateways {
            self.start_gateway().await?;
        }
        self.wait_ready().await
    }

    /// Stops every service gracefully (the health service first, so that gateways saying
    /// goodbye are not taken for dead; then gateways, so their sessions are announced closed).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown().await
    }

    /// [`Dc::stop`] keeping the DC, so that [`Dc::revive`] can start it again.
    pub async fn shutdown(&mut self) -> anyhow::Result<()> {
        self.stop_health().await?;
        for g in &mut self.gateways {
            g.stop().await?;
        }
        for r in &mut self.routers {
            r.stop().await?;
        }
        for r in &mut self.replicators {
            r.stop().await?;
        }
        Ok(())
    }
}

fn short_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..6].to_owned()
}

/// Polls a service's /readyz until it answers 200: serving, cross-DC work included.
pub async fn wait_ready(admin: SocketAddr) -> anyhow::Result<()> {
    wait_path(admin, "/readyz").await
}

/// Polls a service's /readyz/local until it answers 200: serving its own DC (connected,
/// consuming), whatever the other DCs.
pub async fn wait_local_ready(admin: SocketAddr) -> anyhow::Result<()> {
    wait_path(admin, "/readyz/local").await
}

async fn wait_path(admin: SocketAddr, path: &str) -> anyhow::Result<()> {
    let url = format!("http://{admin}{path}");
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(resp) = client.get(&url).send().await {
            if resp.status().is_success() {
                return Ok(());
            }
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("{url} not ready within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether starting a service failed because an address it listens on is in use.
fn port_taken(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::AddrInUse)
    })
}
