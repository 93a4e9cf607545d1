//! The router's configuration: defaults, then a TOML file, then `MEERKAT_*` variables.

use std::net::SocketAddr;
use std::num::NonZeroU32;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// This DC's id (`dc1`).
    pub dc: String,
    /// The XMPP domain served.
    pub domain: String,
    pub amqp_url: String,
    pub database_url: String,
    /// Connections to PostgreSQL this process keeps at most.
    pub database_pool: NonZeroU32,
    /// Admin HTTP port (`/healthz`, `/readyz`, `/metrics`); port 0 picks one.
    pub admin_addr: SocketAddr,
    /// Unique instance id; empty = `router-<8 hex>`. Names the session-event queue.
    pub instance_id: String,
    /// Offline messages kept per user (XEP-0160); more are refused with resource-constraint.
    pub max_offline: u32,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            dc: "dc1".into(),
            domain: "example.com".into(),
            amqp_url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            database_url: "postgres://postgres@127.0.0.1:55432/meerkat_dc1".into(),
            database_pool: meerkat_store::DEFAULT_POOL,
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            instance_id: String::new(),
            max_offline: 1000,
        }
    }
}
