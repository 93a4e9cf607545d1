//! The gateway's configuration: defaults, then a TOML file, then `MEERKAT_*` variables.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// This DC's id (`dc1`, ...).
    pub dc: String,
    /// The XMPP domain served.
    pub domain: String,
    pub amqp_url: String,
    pub database_url: String,
    /// Connections to PostgreSQL this process keeps at most.
    pub database_pool: NonZeroU32,
    /// Admin HTTP port (healthz, readyz, metrics).
    pub admin_addr: SocketAddr,
    /// Unique per gateway process; names its delivery queue. Empty: generated.
    pub instance_id: String,
    /// Client-to-server TCP with STARTTLS.
    pub c2s_addr: SocketAddr,
    /// Direct TLS (XEP-0368); none to disable.
    pub tls_addr: Option<SocketAddr>,
    /// PEM certificate chain and key. When absent a self-signed certificate for the domain is
    /// generated in memory (development only).
    pub cert_path: Option<PathBuf>,
    pub key_path: Option<PathBuf>,
    /// Refuse authentication before TLS.
    pub tls_required: bool,
    /// XEP-0077 in-band registration.
    pub registration: bool,
    /// Largest stanza accepted, in bytes.
    pub max_stanza_bytes: usize,
    /// A connection that sends nothing (not even whitespace) for this long is closed.
    pub idle_timeout_secs: u64,
    /// Time allowed from connect to a bound resource.
    pub negotiation_timeout_secs: u64,
    pub max_connections: usize,
    /// Resources one account may have bound on this gateway at once; the next bind gets
    /// `<resource-constraint/>` (RFC 6120 §7.6.2.1). Counted per gateway instance.
    pub max_sessions_per_account: usize,
    /// Failed authentications from one address before answers are delayed.
    pub auth_failures_before_delay: u32,
    /// How often the gateway tells the DC's health service it lives; well below the health
    /// service's `gateway_down_after_ms`.
    pub heartbeat_interval_ms: u64,
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
            c2s_addr: SocketAddr::from(([127, 0, 0, 1], 5222)),
            tls_addr: Some(SocketAddr::from(([127, 0, 0, 1], 5223))),
            cert_path: None,
            key_path: None,
            tls_required: true,
            registration: false,
            max_stanza_bytes: 256 * 1024,
            idle_timeout_secs: 600,
            negotiation_timeout_secs: 60,
            max_connections: 100_000,
            max_sessions_per_account: 10,
            auth_failures_before_delay: 3,
            heartbeat_interval_ms: 1000,
        }
    }
}
