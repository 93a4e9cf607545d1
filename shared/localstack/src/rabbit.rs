//! A RabbitMQ node of our own: its files in a directory we own, started as root through the
//! real server script, stopped gracefully or killed, and started again on the same data.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{bail, Context as _};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::process::{self, pid_alive};
use crate::rabbit_api::RabbitEndpoint;

/// The settings every node shares (also used by docker compose).
pub const BASE_CONF: &str = include_str!("../../../deploy/rabbitmq/rabbitmq.conf");
/// Management, consistent-hash exchange and federation plugins.
pub const ENABLED_PLUGINS: &str = include_str!("../../../deploy/rabbitmq/enabled_plugins");

/// A node boots in about 10 s when the machine is idle; tests load it, so allow much more.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
const STOP_GRACE: Duration = Duration::from_secs(30);
/// What a live node's command line contains (the beam VM), to tell it from a recycled pid.
const BEAM: &str = "beam";

/// Where and how one node runs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RabbitConfig {
    /// Node name without host, e.g. `meerkat-dc1`; unique on this machine (epmd).
    pub name: String,
    /// `cluster_name`: federation names upstream queues after the downstream's cluster name.
    pub cluster_name: String,
    /// Directory owned by this node: config, cookie, Mnesia, logs, pid file.
    pub dir: PathBuf,
    pub amqp_port: u16,
    pub mgmt_port: u16,
    /// Erlang distribution port (CLI tools and clustering).
    pub dist_port: u16,
}

impl RabbitConfig {
    /// `name@localhost`.
    pub fn node(&self) -> String {
        format!("{}@localhost", self.name)
    }
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("rabbitmq.pid")
    }
    pub fn home(&self) -> PathBuf {
        self.dir.join("home")
    }
    /// The node's own log.
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("log").join(format!("{}.log", self.node()))
    }
    /// What the server script prints (early boot failures land here).
    pub fn console_log(&self) -> PathBuf {
        self.dir.join("console.log")
    }
    pub fn endpoint(&self) -> RabbitEndpoint {
        RabbitEndpoint::loopback(self.amqp_port, self.mgmt_port)
    }

    fn conf(&self) -> String {
        format!(
            "{BASE_CONF}\n# Per node (written by meerkat-localstack).\n\
             management.tcp.ip = 127.0.0.1\n\
             management.tcp.port = {}\n\
             cluster_name = {}\n\
             log.console = false\n\
             log.file.level = info\n",
            self.mgmt_port, self.cluster_name
        )
    }

    /// Writes config, plugins and cookie; keeps Mnesia and the cookie if they exist, so a
    /// restart finds its data.
    fn write_files(&self) -> anyhow::Result<()> {
        for d in [
            self.dir.clone(),
            self.home(),
            self.dir.join("mnesia"),
            self.dir.join("log"),
        ] {
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        write(&self.dir.join("rabbitmq.conf"), &self.conf())?;
        write(&self.dir.join("enabled_plugins"), ENABLED_PLUGINS)?;
        // rabbitmq-env reads this file; ours is empty so /etc/rabbitmq settings stay out.
        write(&self.dir.join("rabbitmq-env.conf"), "")?;
        let cookie = self.home().join(".erlang.cookie");
        if !cookie.exists() {
            use std::os::unix::fs::PermissionsExt as _;
            write(
                &cookie,
                &format!(
                    "MEERKAT{}",
                    self.name.to_uppercase().replace(['-', '.', '_'], "")
                ),
            )?;
            // Erlang refuses a cookie that others can read.
            std::fs::set_permissions(&cookie, std::fs::Permissions::from_mode(0o400))
                .with_context(|| format!("chmod 0400 {}", cookie.display()))?;
        }
        Ok(())
    }

    fn command(&self) -> anyhow::Result<std::process::Command> {
        let script = crate::install::rabbit_sbin()?.join("rabbitmq-server");
        let mut cmd = process::detached(&script);
        let d = |p: &str| self.dir.join(p);
        // A clean environment: stray RABBITMQ_* variables of the caller must not leak in.
        cmd.env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("LANG", "C.UTF-8")
            .env("LC_ALL", "C.UTF-8")
            .env("HOME", self.home())
            .env("RABBITMQ_NODENAME", self.node())
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.amqp_port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", d("mnesia"))
            .env("RABBITMQ_LOG_BASE", d("log"))
            .env("RABBITMQ_CONFIG_FILE", d("rabbitmq.conf"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", d("advanced.config"))
            .env("RABBITMQ_CONF_ENV_FILE", d("rabbitmq-env.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d("enabled_plugins"))
            .env("RABBITMQ_PID_FILE", self.pid_file())
            // Distribution on loopback only; epmd too when this node is the one starting it.
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            )
            .env("ERL_EPMD_ADDRESS", "127.0.0.1");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.console_log())
            .with_context(|| format!("opening {}", self.console_log().display()))?;
        let log2 = log.try_clone().context("cloning log handle")?;
        cmd.stdout(Stdio::from(log)).stderr(Stdio::from(log2));
        Ok(cmd)
    }
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// A node we started or found running. Methods take `&self` so tests can share it.
pub struct RabbitNode {
    config: RabbitConfig,
    /// The server script when this process started the node (reaped after it exits).
    child: Mutex<Option<Child>>,
}

impl RabbitNode {
    /// A handle; nothing is started.
    pub fn new(config: RabbitConfig) -> RabbitNode {
        RabbitNode {
            config,
            child: Mutex::new(None),
        }
    }

    pub fn config(&self) -> &RabbitConfig {
        &self.config
    }

    pub fn endpoint(&self) -> RabbitEndpoint {
        self.config.endpoint()
    }

    /// The beam process's pid, when it runs.
    pub fn pid(&self) -> Option<u32> {
        process::read_pid_file(&self.config.pid_file()).filter(|pid| pid_alive(*pid, BEAM))
    }

    pub fn is_running(&self) -> bool {
        self.pid().is_some()
    }

    /// Starts the node (on its existing data, if any) and waits until it serves AMQP and the
    /// management API. Does nothing if it already runs.
    pub async fn start(&self) -> anyhow::Result<()> {
        if self.is_running() {
            return self.config.endpoint().wait_ready(BOOT_TIMEOUT).await;
        }
        self.reap();
        self.config.write_files()?;
        // A stale pid file would make a failed boot look alive.
        let _ = std::fs::remove_file(self.config.pid_file());
        let child = self
            .config
            .command()?
            .spawn()
            .context("spawning rabbitmq-server")?;
        *self.child.lock() = Some(child);
        match self.wait_booted().await {
            Ok(()) => Ok(()),
            Err(e) => {
                self.kill_now();
                Err(e.context(format!(
                    "RabbitMQ node {} did not start; its log {}:\n{}\nconsole {}:\n{}",
                    self.config.node(),
                    self.config.log_file().display(),
                    process::log_tail(&self.config.log_file(), 20),
                    self.config.console_log().display(),
                    process::log_tail(&self.config.console_log(), 10),
                )))
            }
        }
    }

    async fn wait_booted(&self) -> anyhow::Result<()> {
        let endpoint = self.config.endpoint();
        let deadline = std::time::Instant::now() + BOOT_TIMEOUT;
        loop {
            if let Some(child) = self.child.lock().as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    bail!("rabbitmq-server exited during boot: {status}");
                }
            }
            if self.is_running() && endpoint.is_ready().await {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                bail!("not ready within {BOOT_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Graceful stop. SIGTERM makes the node shut down cleanly (the same path as
    /// `rabbitmqctl stop`, without booting the Erlang CLI, which costs seconds of CPU);
    /// SIGKILL if it hangs.
    pub async fn stop(&self) -> anyhow::Result<()> {
        if let Some(pid) = self.pid() {
            process::terminate(pid, BEAM, STOP_GRACE)
                .await
                .with_context(|| format!("stopping RabbitMQ node {}", self.config.node()))?;
        }
        self.wait_child().await;
        Ok(())
    }

    /// Abrupt death: SIGKILL to the beam process, as a crash or an OOM kill would do.
    pub async fn kill(&self) -> anyhow::Result<()> {
        if let Some(pid) = self.pid() {
            let _ = process::signal(pid, "KILL");
            if !process::wait_gone(pid, BEAM, Duration::from_secs(10)).await {
                bail!(
                    "RabbitMQ node {} (pid {pid}) survived SIGKILL",
                    self.config.node()
                );
            }
        }
        self.wait_child().await;
        Ok(())
    }

    /// SIGKILL without waiting; for `Drop` and cleanup paths that cannot await.
    pub fn kill_now(&self) {
        if let Some(pid) = self.pid() {
            let _ = process::signal(pid, "KILL");
        }
        if let Some(child) = self.child.lock().as_mut() {
            // Before the pid file exists the script is all there is to kill; it forwards TERM.
            let _ = process::signal(child.id(), "TERM");
        }
    }

    /// Gives the server script a moment to notice its node is gone, then reaps it.
    async fn wait_child(&self) {
        for _ in 0..50 {
            let done = match self.child.lock().as_mut() {
                Some(child) => !matches!(child.try_wait(), Ok(None)),
                None => true,
            };
            if done {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.reap();
    }

    fn reap(&self) {
        let mut guard = self.child.lock();
        if let Some(child) = guard.as_mut() {
            if !matches!(child.try_wait(), Ok(None)) {
                *guard = None;
            }
        }
    }

    /// A shell snippet that kills this node (for `process::spawn_reaper`).
    pub fn reaper_snippet(&self) -> String {
        let pid_file = process::shell_quote(&self.config.pid_file().to_string_lossy());
        // Only if that pid is still a beam VM: pids get recycled.
        format!(
            "p=$(head -n1 {pid_file} 2>/dev/null); \
             [ -n \"$p\" ] && grep -q beam /proc/$p/cmdline 2>/dev/null && kill -9 $p"
        )
    }
}
