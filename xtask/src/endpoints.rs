//! `target/meerkat/endpoints.json`: what `up` started and where to reach it; `down` and
//! `status` read it back.

use std::path::PathBuf;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::layout;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Endpoints {
    pub domain: String,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// `up` ran with `--infra-only`: brokers and database, no services.
    pub infra_only: bool,
    pub postgres_port: u16,
    pub gateways_per_dc: u16,
    pub routers_per_dc: u16,
    /// `up --production-limits`: no relaxed throttles for loopback.
    #[serde(default)]
    pub production_limits: bool,
    pub dcs: Vec<DcEndpoints>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DcEndpoints {
    pub dc: String,
    /// TCP with STARTTLS.
    pub c2s: String,
    /// Direct TLS (XEP-0368).
    pub direct_tls: String,
    /// XMPP over WebSocket (RFC 7395) on the plain HTTP port, and on the HTTPS one.
    #[serde(default)]
    pub websocket: String,
    #[serde(default)]
    pub websocket_tls: String,
    /// BOSH (XEP-0206) on the plain HTTP port, and on the HTTPS one.
    #[serde(default)]
    pub bosh: String,
    #[serde(default)]
    pub bosh_tls: String,
    /// XEP-0156 discovery (`host-meta`; `host-meta.json` beside it).
    #[serde(default)]
    pub host_meta: String,
    pub gateways: Vec<AdminEndpoint>,
    pub routers: Vec<AdminEndpoint>,
    /// The session replicator (multi-DC stacks only).
    #[serde(default)]
    pub replicators: Vec<AdminEndpoint>,
    /// The health service (`/status` beside the usual three).
    #[serde(default)]
    pub health: Vec<AdminEndpoint>,
    pub amqp_url: String,
    pub management_url: String,
    pub management_user: String,
    pub management_password: String,
    pub database_url: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AdminEndpoint {
    pub instance_id: String,
    pub admin_url: String,
    pub healthz: String,
    pub readyz: String,
    pub metrics: String,
}

impl AdminEndpoint {
    pub fn new(instance_id: &str, admin_url: &str) -> AdminEndpoint {
        AdminEndpoint {
            instance_id: instance_id.into(),
            admin_url: admin_url.into(),
            healthz: format!("{admin_url}/healthz"),
            readyz: format!("{admin_url}/readyz"),
            metrics: format!("{admin_url}/metrics"),
        }
    }
}

impl Endpoints {
    pub fn read() -> anyhow::Result<Option<Endpoints>> {
        let path = layout::endpoints_file();
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", path.display()))
                .map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    pub fn write(&self) -> anyhow::Result<()> {
        let path = layout::endpoints_file();
        let text = serde_json::to_string_pretty(self).context("serializing endpoints")?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// Same shape of stack (what `up` would start), whatever runs now.
    pub fn same_shape(&self, other: &Endpoints) -> bool {
        self.domain == other.domain
            && self.infra_only == other.infra_only
            && self.postgres_port == other.postgres_port
            && self.gateways_per_dc == other.gateways_per_dc
            && self.routers_per_dc == other.routers_per_dc
            && self.production_limits == other.production_limits
            && self.dcs.len() == other.dcs.len()
    }

    pub fn print(&self) {
        if self.infra_only {
            println!("domain {}  (brokers and database only)", self.domain);
        } else {
            println!(
                "domain {}  (certificate {})",
                self.domain,
                self.cert_path.display()
            );
        }
        for dc in &self.dcs {
            println!("{}:", dc.dc);
            if !self.infra_only {
                println!("  XMPP c2s (STARTTLS)  {}", dc.c2s);
                println!("  XMPP direct TLS      {}", dc.direct_tls);
                println!(
                    "  XMPP over WebSocket  {}  {}",
                    dc.websocket, dc.websocket_tls
                );
                println!("  BOSH                 {}  {}", dc.bosh, dc.bosh_tls);
                println!("  XEP-0156 host-meta   {}", dc.host_meta);
                let services = dc.gateways.iter().chain(&dc.routers).chain(&dc.replicators);
                for s in services.chain(&dc.health) {
                    println!(
                        "  {:<20} {}  (/healthz /readyz /metrics)",
                        s.instance_id, s.admin_url
                    );
                }
            }
            println!("  AMQP                 {}", dc.amqp_url);
            println!(
                "  management UI        {}  ({}/{})",
                dc.management_url, dc.management_user, dc.management_password
            );
            println!("  database             {}", dc.database_url);
        }
        println!("(also in {})", layout::endpoints_file().display());
    }
}
