//! The Meerkat services of the local stack as detached processes: their environment, pid
//! files, logs, stopping, and waiting until a DC's client port speaks XMPP.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use meerkat_localstack::process;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::layout::{self, DcPorts};

/// One service process of the stack.
#[derive(Clone, Debug)]
pub struct Service {
    /// `c2s-gateway`, `router`, `session-replicator` or `dc-health`: the binary's name.
    pub binary: &'static str,
    /// `dc1-gw1`, `dc1-router1`: the instance id, and the name of its log and pid files.
    pub instance_id: String,
    pub admin_port: u16,
    pub env: Vec<(String, String)>,
}

/// What every service of one DC shares.
#[derive(Clone)]
pub struct DcEnv<'a> {
    pub dc: u16,
    pub domain: &'a str,
    pub amqp_url: String,
    pub database_url: String,
    pub cert: &'a Path,
    pub key: &'a Path,
    /// The other DCs for the session replicator and the health service,
    /// `dc2=amqp://...,dc3=...`; empty for a single DC (its replicator then only trims the
    /// outbox).
    pub peers: String,
    /// The management API of the DC's broker (the health service shows the federation links).
    pub management_url: String,
    /// `up --production-limits`: the gateways' throttles hold for loopback too.
    pub production_limits: bool,
}

/// The fake-SCRAM-salt secret every gateway of the local stack shares (all DCs), as every
/// gateway of a deployment must. The local stack listens on loopback only.
pub const LOCAL_SCRAM_SECRET: &str = "local-stack-only-scram-secret";

impl Service {
    pub fn log_file(&self) -> PathBuf {
        layout::logs_dir().join(format!("{}.log", self.instance_id))
    }
    pub fn pid_file(&self) -> PathBuf {
        layout::run_dir().join(format!("{}.pid", self.instance_id))
    }
    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }
    fn exe(&self) -> PathBuf {
        layout::release_bin(self.binary)
    }
    /// The pid, if the process runs.
    pub fn pid(&self) -> Option<u32> {
        let exe = self.exe();
        process::read_pid_file(&self.pid_file())
            .filter(|p| process::pid_alive(*p, &exe.to_string_lossy()))
    }

    /// Starts it detached unless it already runs.
    pub fn start(&self) -> anyhow::Result<()> {
        if self.pid().is_some() {
            return Ok(());
        }
        let exe = self.exe();
        if !exe.is_file() {
            bail!(
                "{} is missing; `cargo build --release -p {}`",
                exe.display(),
                self.binary
            );
        }
        for dir in [layout::logs_dir(), layout::run_dir()] {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file())
            .with_context(|| format!("opening {}", self.log_file().display()))?;
        let log2 = log.try_clone().context("cloning log handle")?;
        let child = process::detached(&exe)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        std::fs::write(self.pid_file(), child.id().to_string())
            .with_context(|| format!("writing {}", self.pid_file().display()))?;
        Ok(())
    }
}

/// The routers, gateways, health service and session replicator of one DC, with
/// their environment.
pub fn plan(env: &DcEnv<'_>, gateways: u16, routers: u16) -> Vec<Service> {
    let ports = DcPorts::of(env.dc);
    let dc = layout::dc_id(env.dc);
    let common = |instance: &str, admin: u16| {
        vec![
            ("MEERKAT_DC".to_string(), dc.clone()),
            ("MEERKAT_DOMAIN".into(), env.domain.to_string()),
            ("MEERKAT_AMQP_URL".into(), env.amqp_url.clone()),
            ("MEERKAT_DATABASE_URL".into(), env.database_url.clone()),
            ("MEERKAT_ADMIN_ADDR".into(), format!("127.0.0.1:{admin}")),
            ("MEERKAT_INSTANCE_ID".into(), instance.to_string()),
        ]
    };
    let mut out = Vec::new();
    for r in 1..=routers {
        let id = format!("{dc}-router{r}");
        let admin = ports.router_admin(r);
        let mut e = common(&id, admin);
        // Stanzas from another DC are believed only through that DC's link.
        if !env.peers.is_empty() {
            e.push(("MEERKAT_PEERS".into(), env.peers.clone()));
        }
        out.push(Service {
            binary: "router",
            env: e,
            instance_id: id,
            admin_port: admin,
        });
    }
    for i in 1..=gateways {
        let id = format!("{dc}-gw{i}");
        let admin = ports.gateway_admin(i);
        let mut e = common(&id, admin);
        e.extend([
            (
                "MEERKAT_C2S_ADDR".to_string(),
                format!("127.0.0.1:{}", ports.c2s),
            ),
            (
                "MEERKAT_TLS_ADDR".into(),
                format!("127.0.0.1:{}", ports.tls),
            ),
            (
                "MEERKAT_HTTP_ADDR".into(),
                format!("127.0.0.1:{}", ports.http),
            ),
            (
                "MEERKAT_HTTPS_ADDR".into(),
                format!("127.0.0.1:{}", ports.https),
            ),
            // Loopback only: a browser on this machine may use ws:// for local development
            // and log in as over TLS (docs/websocket.md).
            ("MEERKAT_PLAIN_HTTP_IS_SECURE".into(), "true".into()),
            ("MEERKAT_CERT_PATH".into(), env.cert.display().to_string()),
            ("MEERKAT_KEY_PATH".into(), env.key.display().to_string()),
            ("MEERKAT_REGISTRATION".into(), "true".into()),
            ("MEERKAT_SCRAM_SECRET".into(), LOCAL_SCRAM_SECRET.into()),
        ]);
        if !env.production_limits {
            // Only the registration and login throttles, only for loopback: local clients and
            // tests create many accounts.
            e.push((
                "MEERKAT_THROTTLE_RELAXED_FOR".into(),
                "127.0.0.0/8,::1".into(),
            ));
        }
        out.push(Service {
            binary: "c2s-gateway",
            env: e,
            instance_id: id,
            admin_port: admin,
        });
    }
    // One health service per DC, also alone: it watches the gateways.
    let id = format!("{dc}-health");
    let admin = ports.health_admin();
    let mut e = common(&id, admin);
    e.push(("MEERKAT_MANAGEMENT_URL".into(), env.management_url.clone()));
    if !env.peers.is_empty() {
        e.push(("MEERKAT_PEERS".into(), env.peers.clone()));
    }
    out.push(Service {
        binary: "dc-health",
        env: e,
        instance_id: id,
        admin_port: admin,
    });
    // A replicator in every DC, alone too: it keeps the DC's outbox trimmed (with no peers,
    // of everything it has read).
    let id = format!("{dc}-replicator");
    let admin = ports.replicator_admin();
    let mut e = common(&id, admin);
    if !env.peers.is_empty() {
        e.push(("MEERKAT_PEERS".into(), env.peers.clone()));
    }
    out.push(Service {
        binary: "session-replicator",
        env: e,
        instance_id: id,
        admin_port: admin,
    });
    out
}

/// Waits until `port` answers a stream header with `<stream:features`, failing early if one
/// of `services` died, and pointing at the logs either way.
pub async fn wait_xmpp(
    domain: &str,
    port: u16,
    services: &[Service],
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let logs = || {
        services
            .iter()
            .map(|s| s.log_file().display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    loop {
        if let Some(dead) = services.iter().find(|s| s.pid().is_none()) {
            bail!(
                "{} exited; its log {}:\n{}",
                dead.instance_id,
                dead.log_file().display(),
                process::log_tail(&dead.log_file(), 20)
            );
        }
        match probe(domain, port).await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                bail!(
                    "127.0.0.1:{port} did not answer XMPP within {timeout:?} ({e:#}); see {}",
                    logs()
                )
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Waits until every one of `services` answers 200 on `/readyz` (ready, cross-DC work
/// included: docs/operations.md), failing early if one died, and naming those not ready and
/// their logs on timeout.
pub async fn wait_ready(services: &[Service], timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(dead) = services.iter().find(|s| s.pid().is_none()) {
            bail!(
                "{} exited; its log {}:\n{}",
                dead.instance_id,
                dead.log_file().display(),
                process::log_tail(&dead.log_file(), 20)
            );
        }
        let mut waiting = Vec::new();
        for s in services {
            if !readyz(s.admin_port).await {
                waiting.push(s);
            }
        }
        if waiting.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let names: Vec<String> = waiting
                .iter()
                .map(|s| format!("{} (log {})", s.instance_id, s.log_file().display()))
                .collect();
            bail!(
                "not ready within {timeout:?} (GET /readyz on the admin port): {}",
                names.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether `GET /readyz` on admin port `port` answers 200.
async fn readyz(port: u16) -> bool {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(b"GET /readyz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await?;
        let mut head = Vec::new();
        let mut buf = [0u8; 256];
        while !head.contains(&b'\n') {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        std::io::Result::Ok(head)
    };
    match tokio::time::timeout(Duration::from_secs(2), attempt).await {
        Ok(Ok(head)) => {
            let line = String::from_utf8_lossy(&head);
            line.split_whitespace().nth(1) == Some("200")
        }
        _ => false,
    }
}

async fn probe(domain: &str, port: u16) -> anyhow::Result<()> {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .context("connect")?;
        let header = format!(
            "<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' xmlns='jabber:client' \
             xmlns:stream='http://etherx.jabber.org/streams'>"
        );
        s.write_all(header.as_bytes()).await.context("write")?;
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).await.context("read")?;
            if n == 0 {
                bail!("closed before <stream:features>");
            }
            seen.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&seen).contains("<stream:features") {
                return Ok(());
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .context("no answer in 5 s")?
}

/// Every service pid file in the run directory: (instance id, pid file).
pub fn pid_files() -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(layout::run_dir()) else {
        return Vec::new();
    };
    let mut out: Vec<(String, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pid"))
        .filter_map(|p| Some((p.file_stem()?.to_string_lossy().into_owned(), p)))
        .collect();
    out.sort();
    out
}

/// The live pid of the service with this pid file (any of our binaries) and its executable path.
pub fn live_pid(pid_file: &Path) -> Option<(u32, String)> {
    let pid = process::read_pid_file(pid_file)?;
    ["c2s-gateway", "router", "session-replicator", "dc-health"]
        .iter()
        .map(|b| layout::release_bin(b).to_string_lossy().into_owned())
        .find(|exe| process::pid_alive(pid, exe))
        .map(|exe| (pid, exe))
}

/// SIGTERM every service, wait for their graceful shutdown, SIGKILL stragglers.
pub async fn stop_all() -> anyhow::Result<()> {
    let stops = pid_files().into_iter().map(|(id, file)| async move {
        if let Some((pid, exe)) = live_pid(&file) {
            println!("stopping {id} (pid {pid})");
            process::terminate(pid, &exe, Duration::from_secs(15)).await?;
        }
        std::fs::remove_file(&file).with_context(|| format!("removing {}", file.display()))
    });
    futures::future::try_join_all(stops).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that answers any stream header the way a gateway does.
    async fn fake_gateway(reply: &'static str) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(reply.as_bytes()).await;
            }
        });
        port
    }

    #[tokio::test]
    async fn probe_sees_stream_features() {
        let port = fake_gateway(
            "<?xml version='1.0'?><stream:stream from='example.com' id='1' version='1.0' \
             xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>\
             <stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:features>",
        )
        .await;
        probe("example.com", port).await.unwrap();
    }

    #[tokio::test]
    async fn probe_rejects_a_server_that_closes() {
        let port = fake_gateway("HTTP/1.1 400 Bad Request\r\n\r\n").await;
        assert!(probe("example.com", port).await.is_err());
    }

    #[tokio::test]
    async fn readyz_is_ready_on_200_only() {
        let ready = fake_gateway("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nready").await;
        assert!(readyz(ready).await);
        let not_ready =
            fake_gateway("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 9\r\n\r\nnot ready")
                .await;
        assert!(!readyz(not_ready).await);
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        assert!(!readyz(port).await);
    }

    #[test]
    fn plan_gives_each_instance_its_ports_and_ids() {
        let cert = PathBuf::from("/c.pem");
        let key = PathBuf::from("/k.pem");
        let env = DcEnv {
            dc: 2,
            domain: "example.com",
            amqp_url: "amqp://guest:guest@127.0.0.1:5682/%2f".into(),
            database_url: "postgres://postgres@127.0.0.1:55432/meerkat_dc2".into(),
            cert: &cert,
            key: &key,
            peers: String::new(),
            management_url: "http://127.0.0.1:15682/".into(),
            production_limits: false,
        };
        let plan = plan(&env, 2, 1);
        let ids: Vec<_> = plan
            .iter()
            .map(|s| (s.instance_id.as_str(), s.admin_port))
            .collect();
        assert_eq!(
            ids,
            [
                ("dc2-router1", 8151),
                ("dc2-gw1", 8101),
                ("dc2-gw2", 8102),
                ("dc2-health", 8100),
                ("dc2-replicator", 8150)
            ]
        );
        // Alone, the replicator has no peers (it keeps the outbox trimmed).
        assert!(plan[4].env.iter().all(|(k, _)| k != "MEERKAT_PEERS"));
        let health = &plan[3];
        assert_eq!(health.binary, "dc-health");
        assert!(health.env.contains(&(
            "MEERKAT_MANAGEMENT_URL".into(),
            "http://127.0.0.1:15682/".into()
        )));
        assert!(health.env.iter().all(|(k, _)| k != "MEERKAT_PEERS"));
        let gw = &plan[1].env;
        let get = |k: &str| gw.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        assert_eq!(get("MEERKAT_C2S_ADDR"), Some("127.0.0.1:5232"));
        assert_eq!(get("MEERKAT_TLS_ADDR"), Some("127.0.0.1:5233"));
        assert_eq!(get("MEERKAT_DC"), Some("dc2"));
        assert_eq!(get("MEERKAT_REGISTRATION"), Some("true"));
        assert_eq!(get("MEERKAT_THROTTLE_RELAXED_FOR"), Some("127.0.0.0/8,::1"));
        assert_eq!(get("MEERKAT_SCRAM_SECRET"), Some(LOCAL_SCRAM_SECRET));
        let strict = super::plan(
            &DcEnv {
                production_limits: true,
                ..env.clone()
            },
            2,
            1,
        );
        assert!(strict[1]
            .env
            .iter()
            .all(|(k, _)| k != "MEERKAT_THROTTLE_RELAXED_FOR"));
        assert!(plan[0].env.iter().all(|(k, _)| k != "MEERKAT_C2S_ADDR"));

        // With other DCs, the session replicator is told its peers.
        let env = DcEnv {
            peers: "dc1=amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            ..env
        };
        let with_peers = super::plan(&env, 1, 1);
        let r = with_peers.last().expect("replicator");
        assert_eq!(
            (r.binary, r.instance_id.as_str(), r.admin_port),
            ("session-replicator", "dc2-replicator", 8150)
        );
        let get = |k: &str| {
            r.env
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(
            get("MEERKAT_PEERS"),
            Some("dc1=amqp://guest:guest@127.0.0.1:5672/%2f")
        );
        // The router too: it checks where stanzas from other DCs came from.
        let router = with_peers
            .iter()
            .find(|s| s.binary == "router")
            .expect("router");
        assert!(router.env.contains(&(
            "MEERKAT_PEERS".into(),
            "dc1=amqp://guest:guest@127.0.0.1:5672/%2f".into()
        )));
        assert!(plan[0].env.iter().all(|(k, _)| k != "MEERKAT_PEERS"));
        // The health service is told the same peers.
        let h = with_peers
            .iter()
            .find(|s| s.binary == "dc-health")
            .expect("health");
        assert!(h.env.contains(&(
            "MEERKAT_PEERS".into(),
            "dc1=amqp://guest:guest@127.0.0.1:5672/%2f".into()
        )));
    }
}
