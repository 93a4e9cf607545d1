//! Where the local stack keeps its files and which ports each DC gets.

use std::path::PathBuf;

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// `target/meerkat/`: everything `cargo xtask up` writes.
pub fn stack_dir() -> PathBuf {
    root().join("target").join("meerkat")
}
pub fn certs_dir() -> PathBuf {
    stack_dir().join("certs")
}
pub fn logs_dir() -> PathBuf {
    stack_dir().join("logs")
}
pub fn run_dir() -> PathBuf {
    stack_dir().join("run")
}
/// Pid files of the link proxies (apart from the services', which `run/` holds).
pub fn links_dir() -> PathBuf {
    run_dir().join("links")
}
/// The partitions made by `cargo xtask partition`, until `heal`.
pub fn partitions_file() -> PathBuf {
    run_dir().join("partitions.json")
}
pub fn rabbit_dir(dc: u16) -> PathBuf {
    stack_dir().join("rabbitmq").join(dc_id(dc))
}
pub fn pg_dir() -> PathBuf {
    stack_dir().join("postgres")
}
pub fn endpoints_file() -> PathBuf {
    stack_dir().join("endpoints.json")
}
/// `target/meerkat-test/`: test runs' shared infrastructure, one subdirectory per run.
pub fn test_dir() -> PathBuf {
    root().join("target").join("meerkat-test")
}
pub fn release_bin(name: &str) -> PathBuf {
    root().join("target").join("release").join(name)
}

/// The most DCs `up` starts (the port plan leaves room for three).
pub const MAX_DCS: u16 = 3;
pub const PG_PORT: u16 = 55432;

/// `dc1`, `dc2`, ... for DC number 1, 2, ...
pub fn dc_id(dc: u16) -> String {
    format!("dc{dc}")
}

/// Ports of DC number `dc` (1-based): each DC shifts the well-known ports by 10, admin ports
/// by 100.
#[derive(Clone, Copy, Debug)]
pub struct DcPorts {
    pub amqp: u16,
    pub mgmt: u16,
    pub dist: u16,
    pub c2s: u16,
    pub tls: u16,
    /// The gateways' plain HTTP and HTTPS (XMPP over WebSocket, XEP-0156 discovery).
    pub http: u16,
    pub https: u16,
    admin_base: u16,
}

impl DcPorts {
    pub fn of(dc: u16) -> DcPorts {
        let k = dc - 1;
        DcPorts {
            amqp: 5672 + 10 * k,
            mgmt: 15672 + 10 * k,
            dist: 25672 + 10 * k,
            c2s: 5222 + 10 * k,
            tls: 5223 + 10 * k,
            http: 5280 + 10 * k,
            https: 5281 + 10 * k,
            admin_base: 8000 + 100 * k,
        }
    }
    /// Admin port of gateway `i` (1-based).
    pub fn gateway_admin(&self, i: u16) -> u16 {
        self.admin_base + i
    }
    /// Admin port of router `r` (1-based).
    pub fn router_admin(&self, r: u16) -> u16 {
        self.admin_base + 50 + r
    }
    /// Admin port of the DC's session replicator (between the gateways' 1..49 and the
    /// routers' 51..99).
    pub fn replicator_admin(&self) -> u16 {
        self.admin_base + 50
    }
    /// Admin port of the DC's health service: the block's base, below the gateways'.
    pub fn health_admin(&self) -> u16 {
        self.admin_base
    }
}

/// `target/meerkat/against/`: the instances of the servers `cargo xtask bench --against` runs.
pub fn against_dir() -> PathBuf {
    stack_dir().join("against")
}
