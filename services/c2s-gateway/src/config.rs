//! The gateway's configuration: defaults, then a TOML file, then `MEERKAT_*` variables.

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroU64};
use std::path::PathBuf;

use meerkat_runtime::config::invalid;
pub use meerkat_runtime::config::Invalid;
pub use meerkat_runtime::Secret;
use meerkat_runtime::{Common, Database};
use serde::{Deserialize, Serialize};

pub use crate::cidr::CidrList;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `dc`, `domain`, `amqp_url`, `admin_addr`, `instance_id` (unique per gateway process;
    /// names its delivery queue; empty = `<dc>-gw-<8 hex>`).
    #[serde(flatten)]
    pub common: Common,
    /// `database_url`, `database_pool`.
    #[serde(flatten)]
    pub database: Database,
    /// Client-to-server TCP with STARTTLS.
    pub c2s_addr: SocketAddr,
    /// Direct TLS (XEP-0368); none to disable.
    pub tls_addr: Option<SocketAddr>,
    /// HTTP for web clients: XMPP over WebSocket at `/xmpp-websocket` (RFC 7395) and XEP-0156
    /// discovery at `/.well-known/host-meta` and `/.well-known/host-meta.json`; none to
    /// disable. Gateways of a DC may share it (SO_REUSEPORT), as they share `c2s_addr`.
    pub http_addr: Option<SocketAddr>,
    /// The same over HTTPS, with the certificate of `cert_path`; none to disable.
    pub https_addr: Option<SocketAddr>,
    /// WebSocket connections on `http_addr` count as encrypted (SASL PLAIN offered,
    /// `tls_required` satisfied), like Prosody's `consider_websocket_secure`. Only for a port
    /// that nobody reaches but through a TLS-terminating proxy, or on loopback (the local
    /// stack). Off: they are treated like unencrypted TCP, which cannot STARTTLS.
    pub plain_http_is_secure: bool,
    /// Web origins allowed to open a WebSocket (the `Origin` header), comma-separated; `*`
    /// allows all (the default, as ejabberd's: SASL on the stream, not a cookie, authenticates).
    pub websocket_origins: crate::web::origins::Origins,
    /// The public base URL of the HTTP listener, as clients reach it through any proxy
    /// (`https://xmpp.example.com`): XEP-0156 discovery advertises `wss://` (or `ws://`) there
    /// + `/xmpp-websocket`. Unset: the scheme and `Host` of each discovery request.
    pub http_public_url: Option<String>,
    /// BOSH (`/http-bind`): the longest a request is held waiting for something to say
    /// (a client asking more gets this), in seconds.
    pub bosh_max_wait_secs: u64,
    /// BOSH: a session with no request for this long (none held either) has lost its client,
    /// as a TCP connection that dropped (with stream management it waits for a resumption).
    pub bosh_inactivity_secs: u64,
    /// BOSH: the longest pause (XEP-0124 §12) a client may ask for, in seconds, advertised as
    /// `maxpause`; during a pause the session's inactivity limit is the pause asked for. `0`:
    /// pauses are not offered (no `maxpause`, `pause` attributes ignored).
    pub bosh_max_pause_secs: u64,
    /// PEM certificate chain and key. When absent a self-signed certificate for the domain is
    /// generated in memory (development only).
    pub cert_path: Option<PathBuf>,
    pub key_path: Option<PathBuf>,
    /// Refuse authentication before TLS.
    pub tls_required: bool,
    /// XEP-0077 in-band registration.
    pub registration: bool,
    /// XEP-0388 SASL2 offered (inside TLS only), with XEP-0198 resumption inline.
    pub sasl2: bool,
    /// Largest stanza accepted, in bytes.
    pub max_stanza_bytes: usize,
    /// A connection that sends nothing (not even whitespace) for this long is closed
    /// (`<connection-timeout/>`); after two thirds of it the gateway pings the client (an
    /// XEP-0199 ping, or with stream management `<r/>`), which any answer satisfies.
    pub idle_timeout_secs: u64,
    /// Longest resumption window (XEP-0198 `max`) a session with stream management gets: a
    /// client that asks for less gets what it asks. At most 1200 (the broker's delivery
    /// acknowledgement timeout is 30 minutes, and unacknowledged stanzas wait in it).
    pub sm_resume_max_secs: u64,
    /// Time allowed from connect to a bound resource.
    pub negotiation_timeout_secs: u64,
    pub max_connections: usize,
    /// Resources one account may have bound on this gateway at once; the next bind gets
    /// `<resource-constraint/>` (RFC 6120 §7.6.2.1). Counted per gateway instance.
    pub max_sessions_per_account: usize,
    /// Failed authentications counted against one address (within `auth_window_secs`, at
    /// every gateway of the DC) before each further failure is answered more slowly.
    pub auth_failures_before_delay: u32,
    /// The window of the authentication throttles: counts start at an address's or an
    /// account's first failure and are forgotten this long after it.
    pub auth_window_secs: u64,
    /// Authentication attempts on one account, from anywhere, that may fail within a window;
    /// beyond it the account's attempts are refused (`<temporary-auth-failure/>`) unverified
    /// until the window ends. 0: no limit.
    pub auth_max_failures_per_account: u32,
    /// Failed authentication attempts from one address (IPv6: its /64) within a window; beyond
    /// it that address's attempts are refused unverified. 0: no limit.
    pub auth_max_failures_per_address: u32,
    /// In-band registrations one address (IPv6: its /64) may make per
    /// `registration_window_secs`; beyond it `<resource-constraint/>`. 0: no limit.
    pub registrations_per_address: u32,
    pub registration_window_secs: u64,
    /// Addresses whose registrations and logins are not throttled (the local stack's
    /// loopback); empty in production.
    pub throttle_relaxed_for: CidrList,
    /// Load balancers whose connections open with a PROXY protocol header (v1 or v2) naming
    /// the real client; any other source sending one is cut off. Empty: no PROXY protocol.
    pub proxy_protocol_from: CidrList,
    /// Keys the fake SCRAM salts answered for unknown users. Required, and the same at every
    /// gateway of every DC: a gateway with another secret answers other salts, which tells an
    /// attacker who asks two which accounts do not exist. At least 16 characters.
    pub scram_secret: Secret,
    /// How often the gateway tells the DC's health service it lives; well below the health
    /// service's `gateway_down_after_ms`.
    pub heartbeat_interval_ms: u64,
    /// Longest a write of one stanza to a client may take (the client not reading: its
    /// socket buffers full). Past it the session ends and what was not written goes back to
    /// the routers.
    pub write_timeout_secs: NonZeroU64,
    /// Bytes of stanzas that may wait for one session beyond what its socket holds. Past it
    /// the session ends with `<policy-violation/>` and what waited goes back to the routers.
    /// At least `max_stanza_bytes`.
    pub max_queued_bytes: usize,
    /// What a session's client may send, in bytes per second, on average (reading slows down
    /// beyond it)...
    pub client_bytes_per_sec: NonZeroU32,
    /// ... and at once after a pause.
    pub client_burst_bytes: NonZeroU32,
    /// Stanzas per second a session's client may send on average (reading slows down beyond
    /// it)...
    pub client_stanzas_per_sec: NonZeroU32,
    /// ... and at once after a pause.
    pub client_burst_stanzas: NonZeroU32,
}

impl Config {
    /// The per-session rate limits on what clients send.
    pub(crate) fn client_rates(&self) -> crate::shaper::Rates {
        crate::shaper::Rates {
            bytes_per_sec: self.client_bytes_per_sec.get(),
            burst_bytes: self.client_burst_bytes.get(),
            stanzas_per_sec: self.client_stanzas_per_sec.get(),
            burst_stanzas: self.client_burst_stanzas.get(),
        }
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            common: Common::default(),
            database: Database::default(),
            c2s_addr: SocketAddr::from(([127, 0, 0, 1], 5222)),
            tls_addr: Some(SocketAddr::from(([127, 0, 0, 1], 5223))),
            http_addr: Some(SocketAddr::from(([127, 0, 0, 1], 5280))),
            https_addr: Some(SocketAddr::from(([127, 0, 0, 1], 5281))),
            plain_http_is_secure: false,
            websocket_origins: crate::web::origins::Origins::default(),
            http_public_url: None,
            bosh_max_wait_secs: 60,
            bosh_inactivity_secs: 60,
            bosh_max_pause_secs: 120,
            cert_path: None,
            key_path: None,
            tls_required: true,
            registration: false,
            sasl2: true,
            max_stanza_bytes: 256 * 1024,
            idle_timeout_secs: 90,
            sm_resume_max_secs: 300,
            negotiation_timeout_secs: 60,
            max_connections: 100_000,
            max_sessions_per_account: 10,
            auth_failures_before_delay: 3,
            auth_window_secs: 900,
            auth_max_failures_per_account: 10,
            auth_max_failures_per_address: 20,
            registrations_per_address: 1,
            registration_window_secs: 600,
            throttle_relaxed_for: CidrList::default(),
            proxy_protocol_from: CidrList::default(),
            scram_secret: Secret::default(),
            heartbeat_interval_ms: 1000,
            write_timeout_secs: NonZeroU64::new(30).unwrap_or(NonZeroU64::MIN),
            max_queued_bytes: 2 * 1024 * 1024,
            client_bytes_per_sec: NonZeroU32::new(50_000).unwrap_or(NonZeroU32::MIN),
            client_burst_bytes: NonZeroU32::new(256 * 1024).unwrap_or(NonZeroU32::MIN),
            client_stanzas_per_sec: NonZeroU32::new(50).unwrap_or(NonZeroU32::MIN),
            client_burst_stanzas: NonZeroU32::new(200).unwrap_or(NonZeroU32::MIN),
        }
    }
}

impl Config {
    /// Refuses settings the gateway cannot run with, in one line each.
    pub fn check(&self) -> Result<(), Invalid> {
        self.common.validate()?;
        if self.heartbeat_interval_ms == 0 {
            return Err(invalid(
                "heartbeat_interval_ms",
                "must be above 0 (the DC's health service takes a silent gateway for dead)",
            ));
        }
        if self.scram_secret.expose().len() < 16 {
            return Err(invalid(
                "scram_secret",
                "required, at least 16 characters, the same at every gateway of every DC (it keys the fake SCRAM salts of unknown users)",
            ));
        }
        if self.auth_window_secs == 0 || self.registration_window_secs == 0 {
            return Err(invalid(
                "auth_window_secs, registration_window_secs",
                "must be above 0",
            ));
        }
        if self.max_queued_bytes < self.max_stanza_bytes {
            return Err(invalid(
                "max_queued_bytes",
                format!(
                    "must be at least max_stanza_bytes ({}), or one stanza could end a session",
                    self.max_stanza_bytes
                ),
            ));
        }
        if self.idle_timeout_secs == 0 {
            return Err(invalid(
                "idle_timeout_secs",
                "must be above 0 (every connection would time out at once)",
            ));
        }
        if self.sm_resume_max_secs > 1200 {
            return Err(invalid(
                "sm_resume_max_secs",
                "must be at most 1200 (stanzas kept for a detached session wait unacknowledged in the broker, which gives up on a delivery after 30 minutes)",
            ));
        }
        if let Some(url) = &self.http_public_url {
            let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
            if !matches!(scheme.as_deref(), Some("http" | "https")) {
                return Err(invalid(
                    "http_public_url",
                    "must start with https:// or http:// (the base URL clients reach the HTTP listener at)",
                ));
            }
        }
        if self.max_sessions_per_account == 0 {
            return Err(invalid(
                "max_sessions_per_account",
                "must be above 0 (no account could bind a resource)",
            ));
        }
        Ok(())
    }
}

/// The settings every service has are the gateway's own: `config.dc`.
impl std::ops::Deref for Config {
    type Target = Common;
    fn deref(&self) -> &Common {
        &self.common
    }
}

impl std::ops::DerefMut for Config {
    fn deref_mut(&mut self) -> &mut Common {
        &mut self.common
    }
}
