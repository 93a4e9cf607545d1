//! The router: consumes client stanzas from the route partitions, decides where each goes
//! (RFC 6120 §10, RFC 6121), runs the server-side handlers (roster, subscriptions, presence,
//! offline storage, disco, ping, version, vCard, private storage, time, last activity, PEP) and delivers to the gateways — or, for a session at
//! another DC, wraps the stanza for that DC. Its session directory lives in memory, fed by the
//! session events of the DC's gateways and of the other DCs (republished by the replicator).

mod admin_api;
mod archive;
mod blocking;
mod config;
pub mod directory;
mod failure;
mod fanout;
mod handlers;
mod handover;
mod inbound;
mod inter;
mod jids;
pub mod mam;
mod metrics;
mod muc;
mod outbox;
mod partition;
mod pep;
mod reply;
mod route;
pub mod salvage;
mod sessions;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use meerkat_bus::{Bus, Publisher};
use meerkat_runtime::admin::AdminState;
use meerkat_runtime::service::{Admin, Base, Service};
use meerkat_store::Store;
use meerkat_wire::topology as names;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{Config, Peer};
pub use handlers::blocking::BlockingRequest;
pub use handlers::private::PrivateRequest;
pub use handlers::vcard::VcardRequest;
pub use muc::health::order as muc_home_order;
pub use muc::kept::record_of as muc_reflection_record;
pub use muc::request as muc_request;
pub use muc::room::Config as RoomConfig;
pub use pep::caps::{ver_of, verification_string, CapsRef};
pub use pep::config::NodeConfig;
pub use pep::form::Form;
pub use pep::request::PubsubRequest;

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
    /// The block lists this router enforces (XEP-0191).
    pub blocking: blocking::Cache,
    /// Writes the message archive, batched across partitions.
    pub archiver: archive::Archiver,
    /// When this router started: the server's uptime (XEP-0012).
    pub started: std::time::Instant,
    /// Verified entity capabilities this router has read (XEP-0115).
    pub caps: pep::caps::Cache,
    /// The DCs declared down, which a room's home follows (muc/health.rs).
    pub muc_liveness: muc::health::Liveness,
    /// Whether rooms wait for this DC to apply what other DCs wrote (muc/catchup.rs).
    pub muc_catch_up: muc::catchup::CatchUp,
}

pub struct Router {
    ctx: Arc<Ctx>,
    base: Base,
    admin: Admin,
}

impl Router {
    /// Connects to PostgreSQL (migrations), starts the AMQP supervisor, binds the admin port.
    pub async fn build(mut config: Config, shutdown: CancellationToken) -> anyhow::Result<Router> {
        config.validate()?;
        let instance = config.instance_or(|_, hex| format!("router-{hex}"));
        let store = Store::connect_with(
            config.database.database_url.expose(),
            config.database.database_pool,
        )
        .await
        .context("database_url: cannot connect to PostgreSQL")?;
        store.claim_dc(&config.dc).await.context("database_url")?;
        let mut base = Base::connect(&config.amqp_url, &instance, shutdown);
        if config.test_newer_minor_wire {
            base.publisher = base.publisher.clone().speaking_newer_minor();
        }
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = metrics::Metrics::register(&mut registry);
        base.parker.register(&mut registry);
        let origins = meerkat_bus::origin::Origins::new(
            config
                .peers
                .iter()
                .map(|p| (p.dc.as_str(), p.upstream_uri.as_str())),
        );
        let ctx = Arc::new(Ctx {
            archiver: archive::Archiver::start(
                store
                    .for_one_writer(config.database.database_url.expose())
                    .context("database_url")?,
                config.archive_default(),
                metrics.archive.clone(),
            ),
            origins,
            parker: base.parker.clone(),
            instance,
            store,
            bus: base.bus.clone(),
            publisher: base.publisher.clone(),
            sessions: sessions::Sessions::default(),
            blocking: blocking::Cache::default(),
            started: std::time::Instant::now(),
            caps: pep::caps::Cache::default(),
            muc_liveness: muc::health::Liveness::default(),
            muc_catch_up: muc::catchup::CatchUp::default(),
            metrics,
            config,
        });
        let admin = base
            .serve_admin(
                ctx.config.admin_addr,
                AdminState::new(registry),
                admin_api::routes(ctx.clone()),
            )
            .await?;
        Ok(Router { ctx, base, admin })
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.addr
    }

    pub fn instance_id(&self) -> &str {
        &self.ctx.instance
    }

    /// Serves until `shutdown` is cancelled; then drains its route and inter-DC queues (what
    /// is queued is routed, until they stay empty for 250 ms, at most 3 s: a stopping gateway's
    /// last unavailable presences reach the contacts), finishes in-flight work and returns.
    pub async fn run(self) -> anyhow::Result<()> {
        let ctx = self.ctx.clone();
        let shutdown = self.base.shutdown.clone();
        let consuming = Arc::new(AtomicUsize::new(0));
        let tracker = TaskTracker::new();
        tracker.spawn(sessions::run(
            ctx.clone(),
            shutdown.clone(),
            consuming.clone(),
        ));
        let dedup = Arc::new(parking_lot::Mutex::new(meerkat_bus::Dedup::new(65_536)));
        for n in 0..names::ROUTE_PARTITIONS {
            tracker.spawn(partition::run(
                ctx.clone(),
                n,
                dedup.clone(),
                shutdown.clone(),
                consuming.clone(),
            ));
        }
        tracker.spawn(handover::run(
            ctx.clone(),
            shutdown.clone(),
            consuming.clone(),
        ));
        tracker.spawn(blocking::listen(ctx.clone(), shutdown.clone()));
        tracker.spawn(inter::run(ctx.clone(), shutdown.clone(), consuming.clone()));
        tracker.spawn(archive::retention(ctx.clone(), shutdown.clone()));
        tracker.spawn(muc::health::run(
            ctx.clone(),
            shutdown.clone(),
            Arc::new(AtomicUsize::new(0)),
        ));
        tracker.spawn(inter::run_returned(
            ctx.clone(),
            shutdown.clone(),
            consuming.clone(),
        ));
        // Partitions, the session queue, the inter-DC queue, the returned queue and the
        // handover requests.
        let expected = usize::from(names::ROUTE_PARTITIONS) + 4;
        tracing::info!(instance = %ctx.instance, admin = %self.admin.addr, "router serving");
        let ready = || ctx.bus.is_connected() && consuming.load(Ordering::Acquire) >= expected;
        self.base.serve(self.admin, tracker, ready).await?;
        tracing::info!(instance = %ctx.instance, "router stopped");
        Ok(())
    }
}

impl Service for Router {
    const NAME: &'static str = "router";
    type Config = Config;

    fn validate(config: &Config) -> anyhow::Result<()> {
        Ok(config.validate()?)
    }

    async fn build(config: Config, shutdown: CancellationToken) -> anyhow::Result<Router> {
        Router::build(config, shutdown).await
    }

    async fn run(self) -> anyhow::Result<()> {
        Router::run(self).await
    }
}
