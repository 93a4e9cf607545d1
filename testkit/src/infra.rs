//! The broker and database tests run against. `cargo xtask test` starts one RabbitMQ node and
//! one PostgreSQL for the whole run and names its description in `MEERKAT_TEST_INFRA` (nextest
//! runs every test in a process of its own, so nothing can be shared in memory); under plain
//! `cargo test` each test process starts its own. Tests isolate with a fresh vhost and a fresh
//! database each. Fault tests that stop or kill a broker get a dedicated one.

use std::path::PathBuf;

use anyhow::Context as _;
use meerkat_localstack::{
    ensure_installed, free_rabbit_config, process, unique_dir, unique_node_name, InfraSpec,
    LocalInfra, PgEndpoint, RabbitEndpoint, RabbitNode, TEST_INFRA_ENV,
};
use tokio::sync::OnceCell;

/// The shared test infrastructure of this run.
pub struct Infra {
    spec: InfraSpec,
    /// Set when this process started the infrastructure itself; a reaper stops it when the
    /// process exits (statics are never dropped).
    _owned: Option<LocalInfra>,
}

/// A vhost of its own on the shared broker; the guest user has full permissions on it. The
/// vhost is deleted when the last clone of this goes (see [`VhostLease`]).
#[derive(Clone, Debug)]
pub struct Vhost {
    /// `amqp://guest:guest@127.0.0.1:<port>/<name>`
    pub amqp_url: String,
    pub name: String,
    /// Management UI and API root of the broker, e.g. `http://127.0.0.1:15672/`.
    pub mgmt_url: String,
    _lease: Option<std::sync::Arc<VhostLease>>,
}

impl Vhost {
    /// A vhost this harness did not make (e.g. the default vhost of a dedicated broker):
    /// never deleted by it.
    pub fn unowned(amqp_url: String, name: String, mgmt_url: String) -> Vhost {
        Vhost {
            amqp_url,
            name,
            mgmt_url,
            _lease: None,
        }
    }
}

/// Deletes a test's vhost when the test is done with it (also when it panics): its durable
/// queues go, and so do the federation links of its DCs, which would otherwise keep trying
/// their vanished link proxies every second for the rest of the run and slow the shared
/// broker (and its management API) down for every later test.
#[derive(Debug)]
struct VhostLease {
    rabbit: RabbitEndpoint,
    name: String,
}

impl Drop for VhostLease {
    fn drop(&mut self) {
        let (rabbit, name) = (self.rabbit.clone(), std::mem::take(&mut self.name));
        // Its own thread and runtime: this may run inside a runtime, or during unwinding.
        let deleting = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            let deleted = rt.block_on(async {
                tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    rabbit.delete_vhost(&name),
                )
                .await
            });
            match deleted {
                Ok(Ok(())) => {}
                Ok(Err(error)) => eprintln!("test vhost {name} not deleted: {error:#}"),
                Err(_) => eprintln!("test vhost {name} not deleted within 10 s"),
            }
        });
        let _ = deleting.join();
    }
}

static INFRA: OnceCell<Infra> = OnceCell::const_new();

/// The run's shared infrastructure, started on first use when `MEERKAT_TEST_INFRA` is unset.
pub async fn infra() -> anyhow::Result<&'static Infra> {
    log_to_file_if_asked();
    INFRA.get_or_try_init(start_or_find).await
}

/// With `MEERKAT_TEST_LOG=<dir>` (and `RUST_LOG` as usual, default `info`), the services a
/// test runs in-process log to `<dir>/<pid>.log`: what to read when a test fails.
fn log_to_file_if_asked() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    let Some(dir) = std::env::var_os("MEERKAT_TEST_LOG") else {
        return;
    };
    ONCE.call_once(|| {
        let path = PathBuf::from(dir).join(format!("{}.log", std::process::id()));
        let Ok(file) = std::fs::File::create(&path) else {
            return;
        };
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::sync::Arc::new(file))
            .with_ansi(false)
            .try_init();
    });
}

async fn start_or_find() -> anyhow::Result<Infra> {
    if let Some(path) = std::env::var_os(TEST_INFRA_ENV) {
        let spec = InfraSpec::read(&PathBuf::from(&path)).with_context(|| {
            format!("{TEST_INFRA_ENV} names a file that is not a test infrastructure")
        })?;
        return Ok(Infra { spec, _owned: None });
    }
    ensure_installed().await?;
    let owned = LocalInfra::start(&unique_dir("meerkat-testinfra"), Some(std::process::id()))
        .await
        .context("starting test infrastructure (run `cargo xtask test` to share one per run)")?;
    Ok(Infra {
        spec: owned.spec(),
        _owned: Some(owned),
    })
}

impl Infra {
    pub fn rabbit(&self) -> &RabbitEndpoint {
        &self.spec.rabbit
    }

    pub fn postgres(&self) -> &PgEndpoint {
        &self.spec.postgres
    }

    /// A new, uniquely named, empty vhost.
    pub async fn fresh_vhost(&self) -> anyhow::Result<Vhost> {
        let name = format!("t-{}", uuid::Uuid::new_v4().simple());
        self.spec.rabbit.create_vhost(&name).await?;
        Ok(Vhost {
            amqp_url: self.spec.rabbit.amqp_url(&name),
            mgmt_url: self.spec.rabbit.mgmt_url(),
            _lease: Some(std::sync::Arc::new(VhostLease {
                rabbit: self.spec.rabbit.clone(),
                name: name.clone(),
            })),
            name,
        })
    }

    /// The URL of a new, empty database.
    pub async fn fresh_database(&self) -> anyhow::Result<String> {
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        self.spec.postgres.create_database(&name).await
    }
}

/// A RabbitMQ node of the test's own, on free ports, for tests that stop or kill a broker.
/// Dropping it kills the node and deletes its files.
pub struct DedicatedBroker {
    node: RabbitNode,
    dir: PathBuf,
}

/// A dedicated broker with cluster name `meerkat-broker`.
pub async fn dedicated_broker() -> anyhow::Result<DedicatedBroker> {
    dedicated_broker_named("meerkat-broker").await
}

/// A dedicated broker with the given cluster name (federation names its upstream queues after
/// the downstream's cluster name, so DCs under test need distinct ones).
pub async fn dedicated_broker_named(cluster_name: &str) -> anyhow::Result<DedicatedBroker> {
    ensure_installed().await?;
    let dir = unique_dir("meerkat-broker");
    let node = RabbitNode::new(free_rabbit_config(
        &dir,
        unique_node_name("broker"),
        cluster_name,
    )?);
    // Cleans up even if the test process dies without running Drop.
    let cleanup = format!(
        "{}\nrm -rf {}",
        node.reaper_snippet(),
        process::shell_quote(&dir.to_string_lossy())
    );
    process::spawn_reaper(std::process::id(), &cleanup)?;
    let broker = DedicatedBroker { node, dir };
    broker.node.start().await?;
    Ok(broker)
}

impl DedicatedBroker {
    /// The default vhost: `amqp://guest:guest@127.0.0.1:<port>/%2f`.
    pub fn amqp_url(&self) -> String {
        self.node.endpoint().amqp_url("/")
    }

    pub fn mgmt_url(&self) -> String {
        self.node.endpoint().mgmt_url()
    }

    /// Ports, credentials and the management API client.
    pub fn endpoint(&self) -> RabbitEndpoint {
        self.node.endpoint()
    }

    pub fn is_running(&self) -> bool {
        self.node.is_running()
    }

    /// Graceful shutdown: clients see their connections closed by the broker.
    pub async fn stop(&self) -> anyhow::Result<()> {
        self.node.stop().await
    }

    /// SIGKILL: connections drop without a close, unconfirmed work is lost.
    pub async fn kill(&self) -> anyhow::Result<()> {
        self.node.kill().await
    }

    /// Starts it again on the same ports and data (durable queues and messages survive).
    pub async fn start(&self) -> anyhow::Result<()> {
        self.node.start().await
    }
}

impl Drop for DedicatedBroker {
    fn drop(&mut self) {
        self.node.kill_now();
        // The dying VM may still hold files open; the reaper removes what is left.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
