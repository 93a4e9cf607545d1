//! The router: consumes client stanzas from the route partitions, decides where each goes
//! (RFC 6120 §10, RFC 6121), runs the server-side handlers (roster, subscriptions, presence,
//! offline storage, disco, ping, version) and delivers to the gateways — or, for a session at
//! another DC, wraps the stanza for that DC. Its session directory lives in memory, fed by the
//! session events of the DC's gateways and of the other DCs (republished by the replicator).

mod admin_api;
mod config;
pub mod directory;
mod failure;
mod handlers;
mod inbound;
mod inter;
mod jids;
mod metrics;
mod outbox;
mod partition;
mod reply;
mod route;
pub mod salvage;
mod sessions;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use meerkat_bus::{Bus, Publisher};
use meerkat_runtime::admin::{self, AdminState};
use meerkat_store::Store;
use meerkat_wire::topology as names;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{Config, Peer};

/// How long in-flight work may take after shutdown is requested.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// What every handler needs.
pub(crate) struct Ctx {
    pub config: Config,
    pub instance: String,
    pub store: Store,
    pub bus: Bus,
    pub publisher: Publisher,
    pub sessions: sessions::Sessions,
    pub metrics: metrics::Metrics,
    /// The federation upstream of each peer DC: where a stanza claiming that DC must come from.
    pub origins: meerkat_bus::origin::Origins,
    /// Where deliveries this version cannot take go (the DC's `meerkat.parked`).
    pub parker: meerkat_bus::Parker,
}

pub struct Router {
    ctx: Arc<Ctx>,
    admin_addr: SocketAddr,
    admin_task: tokio::task::JoinHandle<()>,
    admin_state: AdminState,
    /// Cancelled by the caller: stop consuming and drain.
    shutdown: CancellationToken,
    /// Cancelled by us after draining: closes the AMQP connection.
    bus_shutdown: CancellationToken,
}

impl Router {
    /// Connects to PostgreSQL (migrations), starts the AMQP supervisor, binds the admin port.
    pub async fn build(mut config: Config, shutdown: CancellationToken) -> anyhow::Result<Router> {
        config.validate()?;
        if config.instance_id.is_empty() {
            let id = uuid::Uuid::new_v4().simple().to_string();
            config.instance_id = format!("router-{}", &id[..8]);
        }
        let instance = config.instance_id.clone();
        let store = Store::connect_with(&config.database_url, config.database_pool)
            .await
            .context("database_url: cannot connect to PostgreSQL")?;
        store.claim_dc(&config.dc).await.context("database_url")?;
        let bus_shutdown = CancellationToken::new();
        let bus = Bus::start(&config.amqp_url, &instance, bus_shutdown.clone());
        let mut publisher = Publisher::new(bus.clone());
        if config.test_newer_minor_wire {
            publisher = publisher.speaking_newer_minor();
        }
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = metrics::Metrics::register(&mut registry);
        let parker = meerkat_bus::Parker::new(bus.clone());
        parker.register(&mut registry);
        let admin_state = AdminState::new(registry);
        let admin_addr = config.admin_addr;
        let origins = meerkat_bus::origin::Origins::new(
            config
                .peers
                .iter()
                .map(|p| (p.dc.as_str(), p.upstream_uri.as_str())),
        );
        let ctx = Arc::new(Ctx {
            origins,
            parker,
            instance,
            store,
            bus,
            publisher,
            sessions: sessions::Sessions::default(),
            metrics,
            config,
        });
        let (admin_addr, admin_task) = admin::serve_with(
            admin_addr,
            admin_state.clone(),
            admin_api::routes(ctx.clone()),
            shutdown.clone(),
        )
        .await
        .context("admin_addr")?;
        Ok(Router {
            ctx,
            admin_addr,
            admin_task,
            admin_state,
            shutdown,
            bus_shutdown,
        })
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    pub fn instance_id(&self) -> &str {
        &self.ctx.instance
    }

    /// Serves until `shutdown` is cancelled; then stops consuming, finishes in-flight work
    /// (bounded, ~5 s) and returns.
    pub async fn run(self) -> anyhow::Result<()> {
        let ctx = self.ctx.clone();
        let consuming = Arc::new(AtomicUsize::new(0));
        let tracker = TaskTracker::new();
        tracker.spawn(sessions::run(
            ctx.clone(),
            self.shutdown.clone(),
            consuming.clone(),
        ));
        let dedup = Arc::new(parking_lot::Mutex::new(meerkat_bus::Dedup::new(65_536)));
        for n in 0..names::ROUTE_PARTITIONS {
            tracker.spawn(partition::run(
                ctx.clone(),
                n,
                dedup.clone(),
                self.shutdown.clone(),
                consuming.clone(),
            ));
        }
        tracker.spawn(inter::run(
            ctx.clone(),
            self.shutdown.clone(),
            consuming.clone(),
        ));
        tracker.spawn(inter::run_returned(
            ctx.clone(),
            self.shutdown.clone(),
            consuming.clone(),
        ));
        tracker.close();
        // Partitions, the session queue, the inter-DC queue and the returned queue.
        let expected = usize::from(names::ROUTE_PARTITIONS) + 3;
        tracing::info!(instance = %ctx.instance, admin = %self.admin_addr, "router serving");
        loop {
            let ready = ctx.bus.is_connected() && consuming.load(Ordering::Acquire) >= expected;
            self.admin_state.set_ready(ready);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = self.shutdown.cancelled() => break,
            }
        }
        self.admin_state.set_ready(false);
        if tokio::time::timeout(DRAIN_LIMIT, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("in-flight work did not finish within {DRAIN_LIMIT:?}");
        }
        self.bus_shutdown.cancel();
        let _ = self.admin_task.await;
        tracing::info!(instance = %ctx.instance, "router stopped");
        Ok(())
    }
}
