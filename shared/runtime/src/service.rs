//! The one way a Meerkat service starts, serves and stops.
//!
//! A binary is `fn main() -> ExitCode { meerkat_runtime::service::main::<MyService>() }`:
//! telemetry, then the config (defaults, file, `MEERKAT_*`; a bad one exits 2 with one line),
//! then the signal handler, then `build` (connections, ports; a failure exits 1 with one
//! line), then `run` until SIGINT/SIGTERM. Tests build and run a service in-process through
//! the same [`Service`] methods, with a token of their own as the signal.
//!
//! Inside, every service uses [`Base`] for what they all do alike: one broker connection that
//! outlives the drain, the admin port, readiness published until shutdown, and the drain of
//! in-flight work within a deadline.

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use meerkat_bus::{Bus, Parker, Publisher};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{self, AdminState};
use crate::secret::SecretUrl;

/// How long in-flight work may take after shutdown is requested.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(5);
/// How often readiness is re-evaluated while serving.
const READY_EVERY: Duration = Duration::from_millis(100);

/// A service the skeleton can start.
pub trait Service: Sized {
    /// The binary's name, in logs, traces (`service.name`) and error lines.
    const NAME: &'static str;
    type Config: DeserializeOwned + Serialize + Default;

    /// The checks the types cannot make; one line naming the key on failure. `build` makes
    /// them too (tests build without `main`).
    fn validate(config: &Self::Config) -> anyhow::Result<()>;

    /// Connects, binds its ports; serves nothing yet.
    fn build(
        config: Self::Config,
        shutdown: CancellationToken,
    ) -> impl Future<Output = anyhow::Result<Self>>;

    /// Serves until the `shutdown` given to `build` is cancelled, then drains and returns.
    fn run(self) -> impl Future<Output = anyhow::Result<()>>;
}

/// The whole life of a service binary (see the module's documentation). Exit codes: 0 after a
/// graceful stop, 2 for a bad config, 1 when it cannot start or fails while serving.
pub fn main<S: Service>() -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{}: cannot start the async runtime: {e}", S::NAME);
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let _telemetry = crate::telemetry::init(S::NAME);
        let config: S::Config = crate::config::load_or_exit();
        if let Err(e) = S::validate(&config) {
            eprintln!("meerkat: {e}");
            return ExitCode::from(2);
        }
        let shutdown = crate::shutdown::on_signal();
        let service = match S::build(config, shutdown).await {
            Ok(service) => service,
            Err(e) => {
                eprintln!("{}: {e:#}", S::NAME);
                return ExitCode::FAILURE;
            }
        };
        match service.run().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{}: {e:#}", S::NAME);
                ExitCode::FAILURE
            }
        }
    })
}

/// What every service holds alike: its broker connection and its shutdown order.
pub struct Base {
    pub bus: Bus,
    pub publisher: Publisher,
    /// Moves what this service cannot take to the DC's parking queue (its counter goes into
    /// the service's registry: `Parker::register`).
    pub parker: Parker,
    /// Cancelled by the caller (a signal, a test): stop taking work, then drain.
    pub shutdown: CancellationToken,
    /// Cancelled once in-flight work is done: closes the broker connection, which the work
    /// being drained still needs to acknowledge and publish.
    bus_shutdown: CancellationToken,
}

impl Base {
    /// Starts the broker connection (named `instance` in the management UI). Returns at
    /// once; the connection may still be pending.
    pub fn connect(amqp_url: &SecretUrl, instance: &str, shutdown: CancellationToken) -> Base {
        let bus_shutdown = CancellationToken::new();
        let bus = Bus::start(amqp_url.expose(), instance, bus_shutdown.clone());
        Base {
            publisher: Publisher::new(bus.clone()),
            parker: Parker::new(bus.clone()),
            bus,
            shutdown,
            bus_shutdown,
        }
    }

    /// Binds the admin port (`/healthz`, `/readyz`, `/metrics`, and `routes`), served until
    /// shutdown.
    pub async fn serve_admin(
        &self,
        addr: SocketAddr,
        state: AdminState,
        routes: axum::Router,
    ) -> anyhow::Result<Admin> {
        let (addr, task) = admin::serve_with(addr, state.clone(), routes, self.shutdown.clone())
            .await
            .context("admin_addr")?;
        Ok(Admin { state, addr, task })
    }

    /// Closes the broker connection now (a service whose remaining tasks end only with it).
    pub fn close_bus(&self) {
        self.bus_shutdown.cancel();
    }

    /// Publishes `ready()` on `/readyz` and `/readyz/local` every 100 ms until shutdown, then
    /// drains: see [`Base::drain`].
    pub async fn serve(
        self,
        admin: Admin,
        tracker: TaskTracker,
        mut ready: impl FnMut() -> bool,
    ) -> anyhow::Result<()> {
        self.serve_cross_dc(admin, tracker, || (ready(), true))
            .await
    }

    /// Like [`Base::serve`] for a service with a cross-DC condition of its own: `readiness()`
    /// gives (serving its own DC, ready for cross-DC work); `/readyz` needs both.
    pub async fn serve_cross_dc(
        self,
        admin: Admin,
        tracker: TaskTracker,
        mut readiness: impl FnMut() -> (bool, bool),
    ) -> anyhow::Result<()> {
        loop {
            let (local, cross) = readiness();
            admin.state.set_readiness(local, cross);
            tokio::select! {
                _ = tokio::time::sleep(READY_EVERY) => {}
                _ = self.shutdown.cancelled() => break,
            }
        }
        self.drain(admin, tracker).await;
        Ok(())
    }

    /// Not ready any more; the tasks of `tracker` get [`DRAIN_LIMIT`] to finish their
    /// in-flight work; then the broker connection and the admin port close.
    pub async fn drain(self, admin: Admin, tracker: TaskTracker) {
        admin.state.set_ready(false);
        tracker.close();
        if tokio::time::timeout(DRAIN_LIMIT, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("in-flight work did not finish within {DRAIN_LIMIT:?}");
        }
        self.bus_shutdown.cancel();
        let _ = admin.task.await;
    }
}

/// A service's admin port, bound.
pub struct Admin {
    /// Readiness and metrics.
    pub state: AdminState,
    /// Where it listens (the port picked when 0 was configured).
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Admin {
    /// Publishes `ready()` every 100 ms until `stop`, then not ready: for a service whose own
    /// loop runs in the meantime (the gateway's accept loop).
    pub fn publish_readiness(
        &self,
        stop: CancellationToken,
        ready: impl Fn() -> bool + Send + 'static,
    ) -> JoinHandle<()> {
        let state = self.state.clone();
        tokio::spawn(async move {
            loop {
                state.set_ready(ready());
                tokio::select! {
                    _ = tokio::time::sleep(READY_EVERY) => {}
                    _ = stop.cancelled() => { state.set_ready(false); return; }
                }
            }
        })
    }
}
