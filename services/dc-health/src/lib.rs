//! dc-health: the DC's reliable signal of failure. It sends this DC's heartbeat to every other
//! DC (`meerkat.inter.health`), judges the other DCs by the age of their last heartbeat (up,
//! suspect, down within a configured bound) and tells its own DC (`DcStatus` on
//! `meerkat.control`); it watches the DC's gateways the same way (`meerkat.health`) and ends
//! the sessions of one that dies without a word: contacts told, directories cleaned, its queue
//! re-routed. The federation link status from the management API is shown beside, as
//! information. See docs/dc-health.md.

mod config;
pub mod detector;
pub mod gateways;
mod inbound;
mod links;
mod local;
mod metrics;
mod publish;
mod reaper;
mod status;
mod watch;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meerkat_bus::heartbeat::Beater;
use meerkat_bus::origin::Origins;
use meerkat_bus::{Bus, Publisher};
use meerkat_runtime::admin::AdminState;
use meerkat_runtime::service::{Admin, Base, Service};
use meerkat_wire::{topology as names, ControlEvent};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{parse_peers, Config, Invalid, Peer, CHECK_TICK};

/// Whether a heartbeat consumer listens, and how often it subscribed: silence counts only
/// while it listens, and only from its latest subscription on.
#[derive(Default)]
pub(crate) struct Ear {
    pub subscribed: Arc<AtomicUsize>,
    pub subscriptions: AtomicU64,
}

impl Ear {
    /// Called on every (re)subscription.
    pub fn subscribing(&self) {
        self.subscriptions.fetch_add(1, Ordering::AcqRel);
    }

    fn listens(&self) -> bool {
        self.subscribed.load(Ordering::Acquire) > 0
    }
}

/// What every task needs.
pub(crate) struct Ctx {
    pub config: Config,
    pub instance: String,
    /// This start's epoch (UUIDv7): the other DCs see a new one after every restart.
    pub epoch: String,
    pub bus: Bus,
    pub publisher: Publisher,
    /// Where deliveries this version cannot take go (the DC's `meerkat.parked`).
    pub parker: meerkat_bus::Parker,
    pub origins: Origins,
    pub detector: parking_lot::Mutex<detector::Detector>,
    pub gateways: parking_lot::Mutex<gateways::GatewayWatch>,
    pub links: parking_lot::Mutex<links::LinkView>,
    pub metrics: metrics::Metrics,
    /// The consumer of the other DCs' heartbeats.
    pub peers_ear: Ear,
    /// The consumer of the gateways' heartbeats.
    pub gateways_ear: Ear,
    /// DC status events to publish, in order.
    pub announce: mpsc::UnboundedSender<ControlEvent>,
    /// Gateway lives that ended, to act on, in order.
    pub losses: mpsc::UnboundedSender<gateways::Loss>,
}

pub struct DcHealth {
    ctx: Arc<Ctx>,
    base: Base,
    admin: Admin,
    announcements: mpsc::UnboundedReceiver<ControlEvent>,
    losses: mpsc::UnboundedReceiver<gateways::Loss>,
}

impl DcHealth {
    /// Checks the config, makes the epoch, starts the AMQP supervisor, binds the admin port.
    /// Every peer counts as heard now.
    pub async fn build(
        mut config: Config,
        shutdown: CancellationToken,
    ) -> anyhow::Result<DcHealth> {
        config.validate()?;
        config.instance_id = config.instance();
        let instance = config.instance_id.clone();
        let epoch = uuid::Uuid::now_v7().to_string();
        let base = Base::connect(&config.amqp_url, &instance, shutdown);
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = metrics::Metrics::register(&mut registry);
        base.parker.register(&mut registry);
        let origins = Origins::new(
            config
                .peers
                .iter()
                .map(|p| (p.dc.as_str(), p.upstream_uri.as_str())),
        );
        let detector = detector::Detector::new(
            config.peers.iter().map(|p| p.dc.as_str()),
            Duration::from_millis(config.suspect_after_ms),
            Duration::from_millis(config.down_after_ms),
            Instant::now(),
        );
        let gateways = gateways::GatewayWatch::new(
            &config.dc,
            Duration::from_millis(config.gateway_down_after_ms),
        );
        let (announce, announcements) = mpsc::unbounded_channel();
        let (loss_tx, losses) = mpsc::unbounded_channel();
        let ctx = Arc::new(Ctx {
            instance,
            epoch,
            bus: base.bus.clone(),
            publisher: base.publisher.clone(),
            parker: base.parker.clone(),
            origins,
            detector: parking_lot::Mutex::new(detector),
            gateways: parking_lot::Mutex::new(gateways),
            links: parking_lot::Mutex::new(links::LinkView::default()),
            metrics,
            peers_ear: Ear::default(),
            gateways_ear: Ear::default(),
            announce,
            losses: loss_tx,
            config,
        });
        let admin = base
            .serve_admin(
                ctx.config.admin_addr,
                AdminState::new(registry),
                status::routes(ctx.clone()),
            )
            .await?;
        Ok(DcHealth {
            ctx,
            base,
            admin,
            announcements,
            losses,
        })
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.addr
    }

    /// This start's epoch.
    pub fn epoch(&self) -> &str {
        &self.ctx.epoch
    }

    /// Serves until `shutdown` is cancelled; then stops, finishes in-flight work (bounded) and
    /// returns. No last word: the other DCs judge by silence alone.
    pub async fn run(self) -> anyhow::Result<()> {
        let ctx = self.ctx.clone();
        let consuming = Arc::new(AtomicUsize::new(0));
        let tracker = TaskTracker::new();
        let stop = self.base.shutdown.clone();
        let beater = Beater {
            exchange: names::INTER_HEALTH_EXCHANGE,
            routing_key: ctx.config.dc.clone(),
            dc: ctx.config.dc.clone(),
            instance: ctx.instance.clone(),
            epoch: ctx.epoch.clone(),
            interval: ctx.config.heartbeat_interval(),
        };
        let sent = ctx.clone();
        tracker.spawn(beater.run(
            ctx.bus.clone(),
            ctx.publisher.clone(),
            stop.clone(),
            move |_| {
                sent.metrics.heartbeats_sent.inc();
            },
        ));
        tracker.spawn(inbound::run(ctx.clone(), stop.clone()));
        tracker.spawn(local::run_beats(ctx.clone(), stop.clone()));
        tracker.spawn(local::run_sessions(
            ctx.clone(),
            stop.clone(),
            consuming.clone(),
        ));
        tracker.spawn(local::run_control(
            ctx.clone(),
            stop.clone(),
            consuming.clone(),
        ));
        tracker.spawn(watch::run(ctx.clone(), stop.clone()));
        tracker.spawn(watch::announcer(
            ctx.clone(),
            self.announcements,
            stop.clone(),
        ));
        tracker.spawn(reaper::run(ctx.clone(), self.losses, stop.clone()));
        tracker.spawn(links::poll(ctx.clone(), stop.clone()));
        tracing::info!(
            instance = %ctx.instance, dc = %ctx.config.dc, epoch = %ctx.epoch,
            peers = ctx.config.peers.len(), admin = %self.admin.addr, "dc-health serving"
        );
        // Its own DC: the session events and the control queue, and both heartbeat consumers.
        // Cross-DC: besides, the state of every peer DC is known (a heartbeat heard, or
        // silence judged: within `suspect_after_ms` of the start), so `dc status` and the
        // other services are told no mere presumption.
        let readiness = || {
            let local = ctx.bus.is_connected()
                && consuming.load(Ordering::Acquire) >= 2
                && ctx.peers_ear.listens()
                && ctx.gateways_ear.listens();
            let detector = ctx.detector.lock();
            (local, detector.known().count() == detector.peers().count())
        };
        self.base
            .serve_cross_dc(self.admin, tracker, readiness)
            .await?;
        tracing::info!(instance = %ctx.instance, "dc-health stopped");
        Ok(())
    }
}

impl Service for DcHealth {
    const NAME: &'static str = "dc-health";
    type Config = Config;

    fn validate(config: &Config) -> anyhow::Result<()> {
        Ok(config.validate()?)
    }

    async fn build(config: Config, shutdown: CancellationToken) -> anyhow::Result<Self> {
        DcHealth::build(config, shutdown).await
    }

    async fn run(self) -> anyhow::Result<()> {
        DcHealth::run(self).await
    }
}
