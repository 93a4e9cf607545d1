//! What the services say over their admin ports: a health service's view of another DC
//! (`GET /status`, `/metrics`) and the size of each router's session directory.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use meerkat_testkit::multi::MultiDc;

/// Between two looks at an admin port.
const POLL: Duration = Duration::from_millis(20);

/// Milliseconds since the Unix epoch (what `/status` states its times in).
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The health service's admin port of DC `k`.
pub fn health(m: &MultiDc, k: usize) -> anyhow::Result<SocketAddr> {
    m.dc(k)
        .health
        .first()
        .map(|h| h.admin)
        .with_context(|| format!("DC {k} runs no health service"))
}

/// Waits until the health service at `admin` holds `peer` in `state` (`up`, `suspect`,
/// `down`); returns when that state began by the service's own account (ms since the Unix
/// epoch), which does not depend on how often this looks.
pub async fn wait_peer_state(
    admin: SocketAddr,
    peer: String,
    state: &'static str,
    within: Duration,
) -> anyhow::Result<u64> {
    let url = format!("http://{admin}/status");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + within;
    loop {
        if let Ok(resp) = client.get(&url).send().await {
            if let Ok(status) = resp.json::<serde_json::Value>().await {
                let view = status["peers"]
                    .as_array()
                    .and_then(|ps| ps.iter().find(|p| p["dc"].as_str() == Some(peer.as_str())));
                if let Some(v) = view.filter(|v| v["state"].as_str() == Some(state)) {
                    return v["since"]
                        .as_u64()
                        .with_context(|| format!("{url}: no `since` for {peer}"));
                }
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{url}: {peer} not {state} within {within:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// A sample `<name>{dc="<dc>"} <value>` of the service's `/metrics`.
pub async fn dc_metric(admin: SocketAddr, name: &str, dc: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let key = format!("{name}{{dc=\"{dc}\"}}");
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(key.as_str()))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// The router's `meerkat_router_directory_sessions` gauge.
async fn directory_sessions(admin: SocketAddr) -> Option<u64> {
    let text = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.split_whitespace().next() == Some("meerkat_router_directory_sessions"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
}

/// Waits until every router of every DC has held exactly `expected` sessions for `hold`;
/// returns when that stretch began.
pub async fn wait_directories(
    m: &MultiDc,
    expected: u64,
    hold: Duration,
    within: Duration,
) -> anyhow::Result<Instant> {
    let routers: Vec<SocketAddr> = m
        .dcs
        .iter()
        .flat_map(|dc| dc.routers.iter().map(|r| r.admin))
        .collect();
    let deadline = Instant::now() + within;
    let mut since: Option<Instant> = None;
    loop {
        let at = Instant::now();
        let mut all = true;
        let mut seen = Vec::with_capacity(routers.len());
        for r in &routers {
            let n = directory_sessions(*r).await;
            all &= n == Some(expected);
            seen.push(n);
        }
        since = if all { since.or(Some(at)) } else { None };
        if let Some(s) = since.filter(|s| s.elapsed() >= hold) {
            return Ok(s);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "directories not at {expected} sessions within {within:?}: {seen:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The broker's version (`GET /api/overview` of the test infrastructure's RabbitMQ).
pub async fn rabbit_version() -> Option<String> {
    let infra = meerkat_testkit::infra().await.ok()?;
    let overview: serde_json::Value = reqwest::Client::new()
        .get(format!("{}api/overview", infra.rabbit().mgmt_url()))
        .basic_auth("guest", Some("guest"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    overview["rabbitmq_version"].as_str().map(str::to_owned)
}
