//! A PostgreSQL 15 cluster of our own: created with initdb in a directory we own, run as the
//! `postgres` user (PostgreSQL refuses root), listening on 127.0.0.1 only with trust auth
//! (development and tests only). Databases are created and dropped through `psql`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};

use crate::install::pg_bin;
use crate::process::{self, run_checked, shell_quote};

/// Development settings shared with docker compose.
pub const DEV_CONF: &str = include_str!("../../../deploy/postgres/meerkat.conf");
const POSTGRES: &str = "postgres";

/// Where and how one cluster runs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PgConfig {
    /// Directory owned by the cluster (chowned to `postgres`): data, socket, log.
    pub dir: PathBuf,
    pub port: u16,
}

impl PgConfig {
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }
    pub fn endpoint(&self) -> PgEndpoint {
        PgEndpoint {
            host: "127.0.0.1".into(),
            port: self.port,
            user: POSTGRES.into(),
        }
    }
}

/// A cluster we started or found running.
pub struct PgCluster {
    config: PgConfig,
}

/// `runuser -u postgres -- <PG_BIN>/<bin>`.
fn as_postgres(bin: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("runuser");
    cmd.args(["-u", POSTGRES, "--"]).arg(pg_bin(bin));
    cmd
}

impl PgCluster {
    pub fn new(config: PgConfig) -> PgCluster {
        PgCluster { config }
    }

    pub fn config(&self) -> &PgConfig {
        &self.config
    }

    pub fn endpoint(&self) -> PgEndpoint {
        self.config.endpoint()
    }

    /// The postmaster's pid, when it runs.
    pub fn pid(&self) -> Option<u32> {
        process::read_pid_file(&self.config.data_dir().join("postmaster.pid"))
            .filter(|pid| process::pid_alive(*pid, POSTGRES))
    }

    pub fn is_running(&self) -> bool {
        self.pid().is_some()
    }

    /// Creates the cluster if needed and starts it; returns once it accepts connections.
    pub async fn start(&self) -> anyhow::Result<()> {
        if self.is_running() {
            return Ok(());
        }
        if !self.config.data_dir().join("PG_VERSION").exists() {
            self.init().await?;
        }
        let data = self.config.data_dir();
        let log = self.config.log_file();
        run_checked(
            as_postgres("pg_ctl")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(&log)
                // The port on the command line, not in postgresql.conf: a cluster made for
                // one port may be started on another.
                .args(["-o", &format!("-p {}", self.config.port)])
                .args(["-w", "-t", "60", "start"])
                .stdout(std::process::Stdio::null()),
            "pg_ctl start",
        )
        .await
        .with_context(|| {
            format!(
                "starting PostgreSQL on port {}; log {}:\n{}",
                self.config.port,
                log.display(),
                process::log_tail(&log, 15)
            )
        })?;
        Ok(())
    }

    async fn init(&self) -> anyhow::Result<()> {
        let dir = &self.config.dir;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        run_checked(
            tokio::process::Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir),
            "chown postgres",
        )
        .await?;
        let data = self.config.data_dir();
        run_checked(
            as_postgres("initdb")
                .arg("-D")
                .arg(&data)
                .args([
                    "--auth=trust",
                    "--username=postgres",
                    "--encoding=UTF8",
                    "--locale=C",
                ])
                .arg("--no-sync"),
            "initdb",
        )
        .await?;
        // Appended settings win over initdb's defaults earlier in the file.
        let extra = format!(
            "\n# meerkat-localstack\n{DEV_CONF}\nlisten_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\nlogging_collector = off\n",
            dir.display()
        );
        append(&data.join("postgresql.conf"), &extra)
    }

    /// Fast shutdown (disconnects clients, then a clean checkpoint).
    pub async fn stop(&self) -> anyhow::Result<()> {
        if !self.is_running() {
            return Ok(());
        }
        run_checked(
            as_postgres("pg_ctl")
                .arg("-D")
                .arg(self.config.data_dir())
                .args(["-m", "fast", "-w", "-t", "60", "stop"]),
            "pg_ctl stop",
        )
        .await
        .map(|_| ())
    }

    /// A shell snippet that stops this cluster at once (for `process::spawn_reaper`).
    pub fn reaper_snippet(&self) -> String {
        format!(
            "runuser -u postgres -- {} -D {} -m immediate stop >/dev/null 2>&1",
            shell_quote(&pg_bin("pg_ctl").to_string_lossy()),
            shell_quote(&self.config.data_dir().to_string_lossy())
        )
    }

    /// SIGQUIT to the postmaster (immediate shutdown) without waiting; for `Drop`.
    pub fn kill_now(&self) {
        if let Some(pid) = self.pid() {
            let _ = process::signal(pid, "QUIT");
        }
    }
}

fn append(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// How to reach a cluster. Serializable so a test runner can hand it to tests.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PgEndpoint {
    pub host: String,
    pub port: u16,
    pub user: String,
}

impl PgEndpoint {
    /// `postgres://postgres@127.0.0.1:<port>/<db>`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{}@{}:{}/{db}", self.user, self.host, self.port)
    }

    async fn psql(&self, sql: &str) -> anyhow::Result<String> {
        let mut cmd = tokio::process::Command::new(pg_bin("psql"));
        cmd.args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            "postgres",
        ])
        .args([
            "-h",
            &self.host,
            "-p",
            &self.port.to_string(),
            "-U",
            &self.user,
        ])
        .args(["-c", sql])
        .env("PGCONNECT_TIMEOUT", "10");
        tokio::time::timeout(Duration::from_secs(60), run_checked(&mut cmd, "psql"))
            .await
            .with_context(|| format!("psql timed out: {sql}"))?
    }

    pub async fn database_exists(&self, name: &str) -> anyhow::Result<bool> {
        check_name(name)?;
        let out = self
            .psql(&format!(
                "SELECT 1 FROM pg_database WHERE datname = '{name}'"
            ))
            .await?;
        Ok(out.trim() == "1")
    }

    /// Creates an empty database `name` and returns its URL. Names are limited to
    /// `[a-z0-9_]`, which keeps the SQL free of quoting problems.
    pub async fn create_database(&self, name: &str) -> anyhow::Result<String> {
        check_name(name)?;
        self.psql(&format!("CREATE DATABASE \"{name}\""))
            .await
            .with_context(|| format!("creating database {name}"))?;
        Ok(self.url(name))
    }

    /// Drops `name`, disconnecting its clients; a missing database is not an error.
    pub async fn drop_database(&self, name: &str) -> anyhow::Result<()> {
        check_name(name)?;
        self.psql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .await
            .with_context(|| format!("dropping database {name}"))
            .map(|_| ())
    }
}

fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !ok {
        bail!("database name {name:?}: use 1-63 characters of [a-z0-9_]");
    }
    Ok(())
}
