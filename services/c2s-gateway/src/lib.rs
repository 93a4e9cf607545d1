//! The c2s gateway: owns client connections (TCP + STARTTLS, direct TLS, WebSocket over HTTP
//! and HTTPS), negotiates streams
//! (TLS, SASL, registration, binding), stamps the authenticated sender on every stanza and
//! hands it to the routers, announces sessions, and writes what the routers deliver.

mod accounts;
mod cidr;
mod config;
mod conn;
pub mod csi;
mod delivery;
mod events;
mod handoff;
mod handover;
mod heartbeat;
mod link;
mod metrics;
mod negotiate;
pub mod proxy;
mod register;
mod registry;
mod roster_order;
mod sasl;
mod session;
mod shaper;
pub mod sm;
mod throttle;
mod tls;
mod web;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use meerkat_bus::{Bus, Publisher};
use meerkat_runtime::admin::AdminState;
use meerkat_runtime::service::{Admin, Base, Service};
use meerkat_store::Store;
use meerkat_xmpp::Limits;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{CidrList, Config, Invalid, Secret};

/// What the fuzz targets (`fuzz/`) reach of modules that are otherwise the gateway's own.
pub mod fuzzing {
    pub use crate::roster_order::RosterOrder;
    pub use crate::sasl::{initial_response, Profile};
}

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
    /// Resumptions waiting for another gateway's answer, and sessions that moved away.
    pub handovers: handover::Handovers,
    /// BOSH sessions held here, and BOSH requests forwarded to their holders.
    pub bosh: web::bosh::Sessions,
    /// Deliveries the sessions are done with, to acknowledge to the broker.
    pub acks: registry::Acks,
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
    to_acknowledge: tokio::sync::mpsc::UnboundedReceiver<meerkat_bus::lapin::acker::Acker>,
    c2s: TcpListener,
    direct_tls: Option<TcpListener>,
    /// Web clients: plain HTTP and HTTPS (WebSocket, XEP-0156 discovery).
    http: Option<TcpListener>,
    https: Option<TcpListener>,
    base: Base,
    admin: Admin,
}

impl Gateway {
    /// Connects to PostgreSQL and RabbitMQ, binds the client and admin ports.
    pub async fn build(mut config: Config, shutdown: CancellationToken) -> anyhow::Result<Gateway> {
        config.check()?;
        let instance = config.instance_or(|dc, hex| format!("{dc}-gw-{hex}"));
        let tls = tls::acceptor(&config)?;
        let store = Store::connect_with(
            config.database.database_url.expose(),
            config.database.database_pool,
        )
        .await
        .context("database_url: cannot connect to PostgreSQL")?;
        store.claim_dc(&config.dc).await.context("database_url")?;
        // The bus outlives the sessions so they can announce their end during shutdown.
        let base = Base::connect(&config.amqp_url, &instance, shutdown.clone());
        let c2s = reuseport_listener(config.c2s_addr).context("c2s_addr")?;
        let direct_tls = match config.tls_addr {
            Some(addr) => Some(reuseport_listener(addr).context("tls_addr")?),
            None => None,
        };
        let http = match config.http_addr {
            Some(addr) => Some(reuseport_listener(addr).context("http_addr")?),
            None => None,
        };
        let https = match config.https_addr {
            Some(addr) => Some(reuseport_listener(addr).context("https_addr")?),
            None => None,
        };
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = metrics::Metrics::register(&mut registry);
        base.parker.register(&mut registry);
        let admin = base
            .serve_admin(
                config.admin_addr,
                AdminState::new(registry),
                Default::default(),
            )
            .await?;
        let limits = Limits {
            max_stanza_bytes: config.max_stanza_bytes,
            ..Limits::default()
        };
        let (acks, to_acknowledge) = tokio::sync::mpsc::unbounded_channel();
        let ctx = Arc::new(Ctx {
            throttle: throttle::Throttles::new(&config, store.clone()),
            instance,
            epoch: uuid::Uuid::now_v7().to_string(),
            store,
            bus: base.bus.clone(),
            publisher: base.publisher.clone(),
            parker: base.parker.clone(),
            tls,
            registry: registry::Registry::default(),
            handovers: handover::Handovers::default(),
            bosh: web::bosh::Sessions::default(),
            acks,
            limits,
            metrics,
            shutdown,
            config,
        });
        Ok(Gateway {
            ctx,
            to_acknowledge,
            c2s,
            direct_tls,
            http,
            https,
            base,
            admin,
        })
    }

    pub fn c2s_addr(&self) -> SocketAddr {
        self.c2s.local_addr().unwrap_or(self.ctx.config.c2s_addr)
    }

    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.direct_tls.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Where the plain HTTP listener (WebSocket, XEP-0156) listens, if it does.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Where the HTTPS listener listens, if it does.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.addr
    }

    pub fn instance_id(&self) -> &str {
        &self.ctx.instance
    }

    /// Serves until the shutdown token is cancelled, then ends every session with
    /// `<system-shutdown/>` (announcing each end) within a bounded time.
    pub async fn run(mut self) -> anyhow::Result<()> {
        let ctx = self.ctx.clone();
        let tracker = TaskTracker::new();
        tracker.spawn(delivery::run(ctx.clone()));
        // Ends with the last session's sender (the gateway's context).
        let (_, idle) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(registry::acknowledge(std::mem::replace(
            &mut self.to_acknowledge,
            idle,
        )));
        tracker.spawn(events::run_control(ctx.clone()));
        tracker.spawn(heartbeat::run(ctx.clone()));
        {
            let ctx = ctx.clone();
            tracker.spawn(async move { ctx.throttle.run_expiry(ctx.shutdown.clone()).await });
        }
        let readiness = {
            let ctx = ctx.clone();
            self.admin
                .publish_readiness(ctx.shutdown.clone(), move || ctx.bus.is_connected())
        };
        let sessions = TaskTracker::new();
        let permits = Arc::new(Semaphore::new(ctx.config.max_connections));
        tracing::info!(
            instance = %ctx.instance,
            c2s = %self.c2s_addr(),
            tls = ?self.tls_addr(),
            http = ?self.http_addr(),
            https = ?self.https_addr(),
            "c2s gateway serving"
        );
        let web = web::Web {
            ctx: ctx.clone(),
            sessions: sessions.clone(),
            permits: permits.clone(),
        };
        for (listener, tls) in [(self.http.take(), false), (self.https.take(), true)] {
            if let Some(listener) = listener {
                tracker.spawn(web::serve(web.clone(), listener, tls, permits.clone()));
            }
        }
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
        // The tasks left (delivery, control, heartbeat) end with the broker connection.
        self.base.close_bus();
        readiness.abort();
        self.base.drain(self.admin, tracker).await;
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

impl Service for Gateway {
    const NAME: &'static str = "c2s-gateway";
    type Config = Config;

    fn validate(config: &Config) -> anyhow::Result<()> {
        Ok(config.check()?)
    }

    async fn build(config: Config, shutdown: CancellationToken) -> anyhow::Result<Self> {
        Gateway::build(config, shutdown).await
    }

    async fn run(self) -> anyhow::Result<()> {
        Gateway::run(self).await
    }
}
