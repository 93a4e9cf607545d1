//! The c2s gateway: owns client connections (TCP + STARTTLS, direct TLS), negotiates streams
//! (TLS, SASL, registration, binding), stamps the authenticated sender on every stanza and
//! hands it to the routers, announces sessions, and writes what the routers deliver.

mod accounts;
mod cidr;
mod config;
mod conn;
mod delivery;
mod events;
mod heartbeat;
mod metrics;
mod negotiate;
pub mod proxy;
mod register;
mod registry;
mod sasl;
mod session;
mod shaper;
mod throttle;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use meerkat_bus::{Bus, Publisher};
use meerkat_runtime::admin::{self, AdminState};
use meerkat_store::Store;
use meerkat_xmpp::Limits;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{CidrList, Config, Secret};

/// Everything a connection task needs, shared by all of them.
pub(crate) struct Ctx {
    pub config: Config,
    pub instance: String,
    /// Epoch of this gateway's life: sessions it announces carry it.
    pub epoch: String,
    pub store: Store,
    pub bus: Bus,
    pub publisher: Publisher,
    /// Where deliveries this version cannot take go (the DC's `meerkat.parked`).
    pub parker: meerkat_bus::Parker,
    pub tls: TlsAcceptor,
    pub registry: registry::Registry,
    /// Registration and login throttles, shared with the DC's other gateways through
    /// PostgreSQL.
    pub throttle: throttle::Throttles,
    pub limits: Limits,
    pub metrics: metrics::Metrics,
    /// Cancelled when the gateway shuts down: sessions say `<system-shutdown/>`.
    pub shutdown: CancellationToken,
}

pub struct Gateway {
    ctx: Arc<Ctx>,
    c2s: TcpListener,
    direct_tls: Option<TcpListener>,
    admin_addr: SocketAddr,
    admin_task: tokio::task::JoinHandle<()>,
    admin_state: AdminState,
    bus_shutdown: CancellationToken,
}

impl Gateway {
    /// Connects to PostgreSQL and RabbitMQ, binds the client and admin ports.
    pub async fn build(mut config: Config, shutdown: CancellationToken) -> anyhow::Result<Gateway> {
        config.check()?;
        anyhow::ensure!(
            config.max_queued_bytes >= config.max_stanza_bytes,
            "max_queued_bytes: must be at least max_stanza_bytes ({}), or one stanza could end a session",
            config.max_stanza_bytes
        );
        anyhow::ensure!(
            config.max_sessions_per_account > 0,
            "max_sessions_per_account: must be above 0 (no account could bind a resource)"
        );
        if config.instance_id.is_empty() {
            config.instance_id = format!(
                "{}-gw-{}",
                config.dc,
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            );
        }
        let instance = config.instance_id.clone();
        let tls = tls::acceptor(&config)?;
        let store = Store::connect_with(&config.database_url, config.database_pool)
            .await
            .context("database_url: cannot connect to PostgreSQL")?;
        store.claim_dc(&config.dc).await.context("database_url")?;
        // The bus outlives the sessions so they can announce their end during shutdown.
        let bus_shutdown = CancellationToken::new();
        let bus = Bus::start(&config.amqp_url, &instance, bus_shutdown.clone());
        let publisher = Publisher::new(bus.clone());
        let c2s = reuseport_listener(config.c2s_addr).context("c2s_addr")?;
        let direct_tls = match config.tls_addr {
            Some(addr) => Some(reuseport_listener(addr).context("tls_addr")?),
            None => None,
        };
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = metrics::Metrics::register(&mut registry);
        let parker = meerkat_bus::Parker::new(bus.clone());
        parker.register(&mut registry);
        let admin_state = AdminState::new(registry);
        let (admin_addr, admin_task) =
            admin::serve(config.admin_addr, admin_state.clone(), shutdown.clone())
                .await
                .context("admin_addr")?;
        let limits = Limits {
            max_stanza_bytes: config.max_stanza_bytes,
            ..Limits::default()
        };
        let ctx = Arc::new(Ctx {
            throttle: throttle::Throttles::new(&config, store.clone()),
            instance,
            epoch: uuid::Uuid::now_v7().to_string(),
            store,
            bus,
            publisher,
            parker,
            tls,
            registry: registry::Registry::default(),
            limits,
            metrics,
            shutdown,
            config,
        });
        Ok(Gateway {
            ctx,
            c2s,
            direct_tls,
            admin_addr,
            admin_task,
            admin_state,
            bus_shutdown,
        })
    }

    pub fn c2s_addr(&self) -> SocketAddr {
        self.c2s.local_addr().unwrap_or(self.ctx.config.c2s_addr)
    }

    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.direct_tls.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    pub fn instance_id(&self) -> &str {
        &self.ctx.instance
    }

    /// Serves until the shutdown token is cancelled, then ends every session with
    /// `<system-shutdown/>` (announcing each end) within a bounded time.
    pub async fn run(self) -> anyhow::Result<()> {
        let ctx = self.ctx.clone();
        let tracker = TaskTracker::new();
        tracker.spawn(delivery::run(ctx.clone()));
        tracker.spawn(events::run_control(ctx.clone()));
        tracker.spawn(heartbeat::run(ctx.clone()));
        {
            let ctx = ctx.clone();
            tracker.spawn(async move { ctx.throttle.run_expiry(ctx.shutdown.clone()).await });
        }
        let readiness = {
            let ctx = ctx.clone();
            let state = self.admin_state.clone();
            tokio::spawn(async move {
                loop {
                    state.set_ready(ctx.bus.is_connected());
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                        _ = ctx.shutdown.cancelled() => { state.set_ready(false); return; }
                    }
                }
            })
        };
        let sessions = TaskTracker::new();
        let permits = Arc::new(Semaphore::new(ctx.config.max_connections));
        tracing::info!(
            instance = %ctx.instance,
            c2s = %self.c2s_addr(),
            tls = ?self.tls_addr(),
            "c2s gateway serving"
        );
        let direct = self.direct_tls;
        loop {
            let accepted = tokio::select! {
                a = self.c2s.accept() => a.map(|(s, p)| (s, p, false)),
                a = accept_opt(direct.as_ref()) => a.map(|(s, p)| (s, p, true)),
                _ = ctx.shutdown.cancelled() => break,
            };
            let (stream, peer, direct_tls) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                tracing::warn!(%peer, "connection limit reached");
                drop(stream);
                continue;
            };
            let ctx = ctx.clone();
            let tracker = sessions.clone();
            sessions.spawn(async move {
                if let Some(session) =
                    negotiate::serve_connection(ctx, stream, peer, direct_tls, permit).await
                {
                    tracker.spawn(session);
                }
            });
        }
        sessions.close();
        if tokio::time::timeout(Duration::from_secs(10), sessions.wait())
            .await
            .is_err()
        {
            tracing::warn!("sessions did not finish within 10 s");
        }
        self.bus_shutdown.cancel();
        tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
        readiness.abort();
        let _ = self.admin_task.await;
        tracing::info!("c2s gateway stopped");
        Ok(())
    }
}

async fn accept_opt(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// Several gateway processes of one DC may share the client port (SO_REUSEPORT).
fn reuseport_listener(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket
        .bind(&addr.into())
        .with_context(|| format!("cannot listen on {addr}"))?;
    socket.listen(1024)?;
    Ok(TcpListener::from_std(socket.into())?)
}
