//! The infrastructure one test run shares: one RabbitMQ node and one PostgreSQL cluster on
//! free ports, described by a JSON file whose path travels in `MEERKAT_TEST_INFRA`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::postgres::{PgCluster, PgConfig, PgEndpoint};
use crate::rabbit::{RabbitConfig, RabbitNode};
use crate::rabbit_api::RabbitEndpoint;
use crate::{ports, process};

/// Names the JSON file describing a running test infrastructure.
pub const TEST_INFRA_ENV: &str = "MEERKAT_TEST_INFRA";

/// What tests need to know about the shared infrastructure.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct InfraSpec {
    pub rabbit: RabbitEndpoint,
    pub postgres: PgEndpoint,
}

impl InfraSpec {
    pub fn read(path: &Path) -> anyhow::Result<InfraSpec> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self).context("serializing infra spec")?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }
}

/// A directory under the system temp dir that no other process or call uses.
pub fn unique_dir(prefix: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!(
        "{prefix}-{}-{}-{nanos:08x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// A unique node name for this process (`meerkat-<tag>-<pid>-<n>`).
pub fn unique_node_name(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "meerkat-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A RabbitMQ config on three free ports with its files in `dir`.
pub fn free_rabbit_config(
    dir: &Path,
    name: String,
    cluster_name: &str,
) -> anyhow::Result<RabbitConfig> {
    let p = ports::free_ports(3)?;
    Ok(RabbitConfig {
        name,
        cluster_name: cluster_name.into(),
        dir: dir.to_path_buf(),
        amqp_port: p[0],
        mgmt_port: p[1],
        dist_port: p[2],
    })
}

/// A running broker node and database cluster that this process started.
pub struct LocalInfra {
    pub rabbit: RabbitNode,
    pub postgres: PgCluster,
    dir: PathBuf,
}

impl LocalInfra {
    /// Starts both in `dir` (emptied first) on free ports. With `reap_when_gone`, a reaper
    /// kills them and deletes `dir` once that process exits, whatever way it exits.
    pub async fn start(dir: &Path, reap_when_gone: Option<u32>) -> anyhow::Result<LocalInfra> {
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("emptying {}", dir.display()))?;
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let rabbit = RabbitNode::new(free_rabbit_config(
            &dir.join("rabbit"),
            unique_node_name("test"),
            "meerkat-test",
        )?);
        let postgres = PgCluster::new(PgConfig {
            dir: dir.join("pg"),
            port: ports::free_port()?,
        });
        let infra = LocalInfra {
            rabbit,
            postgres,
            dir: dir.to_path_buf(),
        };
        if let Some(owner) = reap_when_gone {
            process::spawn_reaper(owner, &infra.reaper_snippet())?;
        }
        let (r, p) = tokio::join!(infra.rabbit.start(), infra.postgres.start());
        if let Err(e) = r.and(p) {
            infra.stop_now();
            return Err(e);
        }
        Ok(infra)
    }

    pub fn spec(&self) -> InfraSpec {
        InfraSpec {
            rabbit: self.rabbit.endpoint(),
            postgres: self.postgres.endpoint(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn reaper_snippet(&self) -> String {
        format!(
            "{}\n{}\nrm -rf {}",
            self.rabbit.reaper_snippet(),
            self.postgres.reaper_snippet(),
            process::shell_quote(&self.dir.to_string_lossy())
        )
    }

    /// Stops both at once (test data is thrown away, no need for grace) and deletes the files.
    pub async fn stop(&self) -> anyhow::Result<()> {
        let rabbit = self.rabbit.kill();
        let pg = async {
            if self.postgres.is_running() {
                let mut cmd = tokio::process::Command::new("sh");
                cmd.arg("-c").arg(self.postgres.reaper_snippet());
                process::run_checked(&mut cmd, "stopping PostgreSQL").await?;
            }
            anyhow::Ok(())
        };
        let (r, p) = tokio::join!(rabbit, pg);
        r.and(p)?;
        std::fs::remove_dir_all(&self.dir)
            .with_context(|| format!("removing {}", self.dir.display()))
    }

    /// Kills both without waiting; for `Drop` and error paths.
    pub fn stop_now(&self) {
        self.rabbit.kill_now();
        self.postgres.kill_now();
    }
}
