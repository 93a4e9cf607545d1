//! The session replicator: the DC's authority on sessions between DCs. It turns the local
//! gateways' session events into a sequenced stream (DC id, epoch, seq) for the other DCs,
//! applies the other DCs' streams into the local `meerkat.sessions` (so every router's
//! directory holds remote sessions too), detects gaps and new epochs and repairs them with
//! snapshots, serves snapshots of its live local sessions, and refuses whatever did not come
//! through the federation link of the DC it claims. With a database configured it also
//! replicates the DC's persistent data (`data.rs`, docs/replication.md).

mod accounts;
mod actions;
mod config;
mod control;
mod data;
mod inbound;
mod local;
mod metrics;
pub use meerkat_bus::origin;
mod publish;
pub mod sequencer;
pub mod streams;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use meerkat_bus::{Bus, Publisher};
use meerkat_runtime::admin::AdminState;
use meerkat_runtime::service::{Admin, Base, Service};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{parse_peers, Config, Invalid, Peer};

/// How often unanswered snapshot requests are looked at.
const TICK: Duration = Duration::from_millis(500);
/// Consumers that must be subscribed for the replicator to be ready.
const CONSUMERS: usize = 4;

/// What every task needs.
pub(crate) struct Ctx {
    pub config: Config,
    pub instance: String,
    /// This start's epoch (UUIDv7: later starts compare greater).
    pub epoch: String,
    pub bus: Bus,
    pub publisher: Publisher,
    pub sequencer: parking_lot::Mutex<sequencer::Sequencer>,
    pub streams: parking_lot::Mutex<streams::Streams>,
    pub origins: origin::Origins,
    /// Where deliveries this version cannot take go (the DC's `meerkat.parked`).
    pub parker: meerkat_bus::Parker,
    pub metrics: metrics::Metrics,
    /// Snapshot requests are answered from then on (see `Config::snapshot_warmup_ms`).
    pub warm_at: tokio::time::Instant,
    /// The DC's database, when persistent data is replicated too.
    pub store: Option<meerkat_store::Store>,
    pub data: parking_lot::Mutex<data::DataState>,
}

impl Ctx {
    /// The other DCs' ids: what this DC's inter-DC queues are bound with.
    pub(crate) fn peer_ids(&self) -> Vec<String> {
        self.config.peers.iter().map(|p| p.dc.clone()).collect()
    }
}

pub struct SessionReplicator {
    ctx: Arc<Ctx>,
    base: Base,
    admin: Admin,
}

impl SessionReplicator {
    /// Checks the config, makes the epoch, starts the AMQP supervisor, binds the admin port.
    pub async fn build(
        mut config: Config,
        shutdown: CancellationToken,
    ) -> anyhow::Result<SessionReplicator> {
        config.validate()?;
        let instance = config.instance_or(|dc, hex| format!("replicator-{dc}-{hex}"));
        let epoch = uuid::Uuid::now_v7().to_string();
        let mut base = Base::connect(&config.amqp_url, &instance, shutdown);
        if config.test_newer_minor_wire {
            base.publisher = base.publisher.clone().speaking_newer_minor();
        }
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
        let origins = origin::Origins::new(
            config
                .peers
                .iter()
                .map(|p| (p.dc.as_str(), p.upstream_uri.as_str())),
        );
        let streams =
            streams::Streams::new(config.peers.iter().map(|p| p.dc.as_str()), Instant::now())
                .with_retry_after(Duration::from_secs(2));
        let warm_at =
            tokio::time::Instant::now() + Duration::from_millis(config.snapshot_warmup_ms);
        let store = if config.database.database_url.is_empty() {
            None
        } else {
            let store = meerkat_store::Store::connect_with(
                config.database.database_url.expose(),
                config.database.database_pool,
            )
            .await
            .context("database_url")?;
            store.claim_dc(&config.dc).await.context("database_url")?;
            Some(store)
        };
        let ctx = Arc::new(Ctx {
            instance,
            sequencer: parking_lot::Mutex::new(sequencer::Sequencer::new(&config.dc, &epoch)),
            epoch,
            bus: base.bus.clone(),
            publisher: base.publisher.clone(),
            streams: parking_lot::Mutex::new(streams),
            origins,
            parker: base.parker.clone(),
            metrics,
            warm_at,
            store,
            data: parking_lot::Mutex::new(data::DataState::default()),
            config,
        });
        Ok(SessionReplicator { ctx, base, admin })
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.addr
    }

    /// This start's epoch: the other DCs see a new one after every restart.
    pub fn epoch(&self) -> &str {
        &self.ctx.epoch
    }

    /// Serves until `shutdown` is cancelled; then stops consuming, finishes in-flight work
    /// (bounded, ~5 s) and returns.
    pub async fn run(self) -> anyhow::Result<()> {
        let ctx = self.ctx.clone();
        let consuming = Arc::new(AtomicUsize::new(0));
        let tracker = TaskTracker::new();
        let stop = self.base.shutdown.clone();
        tracker.spawn(local::run(ctx.clone(), stop.clone(), consuming.clone()));
        tracker.spawn(inbound::run(ctx.clone(), stop.clone(), consuming.clone()));
        tracker.spawn(control::run_inter(
            ctx.clone(),
            stop.clone(),
            consuming.clone(),
        ));
        tracker.spawn(control::run_local(
            ctx.clone(),
            stop.clone(),
            consuming.clone(),
        ));
        tracker.spawn(ask_peers_then_retry(ctx.clone(), stop.clone()));
        let mut consumers = CONSUMERS;
        if ctx.store.is_some() {
            consumers += 1;
            tracker.spawn(data::run_inbound(
                ctx.clone(),
                stop.clone(),
                consuming.clone(),
            ));
            tracker.spawn(data::ship(ctx.clone(), stop.clone()));
            let every = Duration::from_millis(ctx.config.data_status_ms.max(100));
            tracker.spawn(data::report(ctx.clone(), stop.clone(), every));
        }
        tracing::info!(
            instance = %ctx.instance, dc = %ctx.config.dc, epoch = %ctx.epoch,
            admin = %self.admin.addr, "session replicator serving"
        );
        // Its own DC is served once connected and consuming; cross-DC work once, besides, a
        // snapshot of every peer DC was applied (the links both ways carried a request and
        // its answer) or the peer was declared down, or after `peer_wait_ms` whatever lacks.
        let gave_up_at =
            tokio::time::Instant::now() + Duration::from_millis(ctx.config.peer_wait_ms);
        let mut gave_up = false;
        let readiness = || {
            let local = ctx.bus.is_connected() && consuming.load(Ordering::Acquire) >= consumers;
            if gave_up {
                return (local, true);
            }
            let streams = ctx.streams.lock();
            let unsettled = streams.unsettled();
            if unsettled.is_empty() {
                return (local, true);
            }
            if tokio::time::Instant::now() >= gave_up_at {
                tracing::warn!(
                    peers = %unsettled.join(","), wait_ms = ctx.config.peer_wait_ms,
                    "no snapshot from these peer DCs, and not declared down: ready without them"
                );
                gave_up = true;
                return (local, true);
            }
            (local, false)
        };
        self.base
            .serve_cross_dc(self.admin, tracker, readiness)
            .await?;
        tracing::info!(instance = %ctx.instance, "session replicator stopped");
        Ok(())
    }
}

impl Service for SessionReplicator {
    const NAME: &'static str = "session-replicator";
    type Config = Config;

    fn validate(config: &Config) -> anyhow::Result<()> {
        Ok(config.validate()?)
    }

    async fn build(config: Config, shutdown: CancellationToken) -> anyhow::Result<Self> {
        SessionReplicator::build(config, shutdown).await
    }

    async fn run(self) -> anyhow::Result<()> {
        SessionReplicator::run(self).await
    }
}

/// At start every peer's stream is on hold: ask each for a snapshot, send each ours, then keep
/// asking those that have not answered (the request or the answer may have found no binding
/// yet).
async fn ask_peers_then_retry(ctx: Arc<Ctx>, stop: CancellationToken) {
    let peers = ctx.peer_ids();
    for dc in peers {
        tokio::select! {
            _ = actions::request_snapshot(&ctx, &dc) => {}
            _ = stop.cancelled() => return,
        }
    }
    // Tell the peers of this start (a new epoch) at once, rather than at this DC's next
    // session event: they close what this DC's previous life had and no longer has.
    tokio::select! {
        _ = tokio::time::sleep_until(ctx.warm_at) => {}
        _ = stop.cancelled() => return,
    }
    for peer in &ctx.config.peers {
        control::serve_snapshot(&ctx, &peer.dc).await;
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = stop.cancelled() => return,
        }
        let todo = ctx.streams.lock().tick(Instant::now());
        for action in todo {
            if let streams::Action::RequestSnapshot(dc) = action {
                tracing::debug!(%dc, "snapshot request unanswered: asking again");
                actions::request_snapshot(&ctx, &dc).await;
            }
        }
        actions::update_gauges(&ctx);
    }
}
