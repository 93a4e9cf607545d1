//! One two-DC stack shared by the multi-DC tests that kill, restart, stop and cut nothing:
//! they only log users in and talk, so each can use the same two DCs with account names of
//! its own, and several can run at once. Starting two DCs is most of such a test's time.
//!
//! nextest runs every test in a process of its own, so the stack lives outside them:
//! `cargo xtask test` starts it (the `meerkat-shared-dcs` binary of this crate: a
//! [`MultiDc`] of two DCs on the run's shared broker and database, with the tests' fast
//! timers) and names its description in `MEERKAT_TEST_SHARED_DCS`. Without it (plain
//! `cargo test`), the first test of a process starts one in-process and keeps it for the
//! process's other tests.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use crate::client::ClientConfig;
use crate::multi::MultiDc;
use crate::stack::{Dc, StackOptions};

/// Names the description file of the run's shared two DCs.
pub const SHARED_DCS_ENV: &str = "MEERKAT_TEST_SHARED_DCS";

/// What a test needs to reach one DC that runs elsewhere (or here): its client ports, its
/// database and its services' admin addresses.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DcInfo {
    /// `dc1`, `dc2`.
    pub dc: String,
    pub domain: String,
    /// STARTTLS client port.
    pub c2s: SocketAddr,
    /// HTTPS port (XMPP over WebSocket, XEP-0156).
    #[serde(default)]
    pub https: Option<SocketAddr>,
    pub database_url: String,
    pub amqp_url: String,
    /// Admin addresses of its routers.
    pub routers: Vec<SocketAddr>,
    /// Admin addresses of its session replicators.
    #[serde(default)]
    pub replicators: Vec<SocketAddr>,
}

impl DcInfo {
    /// What a test reads of `dc`.
    pub fn of(dc: &Dc) -> DcInfo {
        DcInfo {
            dc: dc.options.dc.clone(),
            domain: dc.options.domain.clone(),
            c2s: dc.c2s,
            https: dc.https,
            database_url: dc.database_url.clone(),
            amqp_url: dc.amqp_url.clone(),
            routers: dc.routers.iter().map(|r| r.admin).collect(),
            replicators: dc.replicators.iter().map(|r| r.admin).collect(),
        }
    }

    /// Client settings for this DC's STARTTLS port.
    pub fn client(&self) -> ClientConfig {
        ClientConfig::new(self.c2s, self.domain.as_str())
    }

    /// Client settings for XMPP over WebSocket on this DC's HTTPS port (`wss://`).
    pub fn client_websocket(&self) -> ClientConfig {
        ClientConfig::websocket(self.https.unwrap_or(self.c2s), self.domain.as_str(), true)
    }
}

/// A DC, whether this process runs it ([`Dc`]) or only reaches it ([`DcInfo`]): what test
/// helpers need.
pub trait DcAccess {
    fn client(&self) -> ClientConfig;
    fn database_url(&self) -> &str;
}

impl DcAccess for Dc {
    fn client(&self) -> ClientConfig {
        Dc::client(self)
    }
    fn database_url(&self) -> &str {
        &self.database_url
    }
}

impl DcAccess for DcInfo {
    fn client(&self) -> ClientConfig {
        DcInfo::client(self)
    }
    fn database_url(&self) -> &str {
        &self.database_url
    }
}

/// The run's shared two DCs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SharedDcs {
    pub dcs: Vec<DcInfo>,
}

impl SharedDcs {
    /// What a test reads of `m`.
    pub fn of(m: &MultiDc) -> SharedDcs {
        SharedDcs {
            dcs: m.dcs.iter().map(DcInfo::of).collect(),
        }
    }

    /// DC `k`, counting from 1 like the DC ids.
    pub fn dc(&self, k: usize) -> &DcInfo {
        &self.dcs[k - 1]
    }

    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
    }

    pub fn read(path: &Path) -> anyhow::Result<SharedDcs> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
    }

    /// Waits until every router of both DCs has each of `jids` (full JIDs) in its directory,
    /// once: the DCs agree these sessions are online. Other tests' sessions do not matter.
    pub async fn wait_directory_holds(
        &self,
        jids: &[&str],
        timeout: Duration,
    ) -> anyhow::Result<()> {
        crate::multi::wait_routers_hold_jids(&self.routers(), jids, timeout).await
    }

    /// Waits until every router of both DCs shows each of `jids` with `flag` true in its
    /// directory (e.g. `carbons`).
    pub async fn wait_directory_flag(
        &self,
        jids: &[&str],
        flag: &str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        crate::multi::wait_routers_flag(&self.routers(), jids, flag, timeout).await
    }

    fn routers(&self) -> Vec<(String, SocketAddr)> {
        self.dcs
            .iter()
            .flat_map(|dc| dc.routers.iter().map(|a| (dc.dc.clone(), *a)))
            .collect()
    }
}

/// The stack of this process when it started one itself (no `MEERKAT_TEST_SHARED_DCS`): kept
/// until the process exits.
static OWN: OnceCell<MultiDc> = OnceCell::const_new();
static SHARED: OnceCell<SharedDcs> = OnceCell::const_new();

/// The run's shared two DCs: those `cargo xtask test` started, or two started now for this
/// process.
pub async fn two_dcs() -> anyhow::Result<&'static SharedDcs> {
    SHARED
        .get_or_try_init(|| async {
            if let Some(path) = std::env::var_os(SHARED_DCS_ENV) {
                return SharedDcs::read(Path::new(&path));
            }
            let m = OWN.get_or_try_init(start).await?;
            Ok(SharedDcs::of(m))
        })
        .await
}

/// Two DCs as the shared stack runs them: federated, each with a replicator and a health
/// service, the tests' fast timers, the message archive on.
pub async fn start() -> anyhow::Result<MultiDc> {
    MultiDc::start(
        2,
        StackOptions {
            archive: true,
            ..StackOptions::default()
        },
    )
    .await
}
