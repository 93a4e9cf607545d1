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

/// One session as a router's `GET /directory` lists it: full JID, session id, available.
type Entry = (String, String, bool);

/// The sessions in the directory of the router at `admin`, sorted.
async fn directory(client: &reqwest::Client, admin: SocketAddr) -> Option<Vec<Entry>> {
    let view: serde_json::Value = client
        .get(format!("http://{admin}/directory"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let mut out: Vec<Entry> = view["sessions"]
        .as_array()?
        .iter()
        .map(|s| {
            (
                s["jid"].as_str().unwrap_or_default().to_owned(),
                s["session_id"].as_str().unwrap_or_default().to_owned(),
                s["available"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    out.sort();
    Some(out)
}

/// Every router's directory, DC by DC.
async fn directories(client: &reqwest::Client, m: &MultiDc) -> Vec<Option<Vec<Entry>>> {
    let mut out = Vec::new();
    for dc in &m.dcs {
        for r in &dc.routers {
            out.push(directory(client, r.admin).await);
        }
    }
    out
}

/// Waits until every router of every DC lists exactly the sessions of `jids` (full JIDs),
/// each available: the DCs agree on who is online where and a contact's presence counts.
pub async fn wait_available(m: &MultiDc, jids: &[&str], within: Duration) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let mut want: Vec<&str> = jids.to_vec();
    want.sort_unstable();
    let deadline = Instant::now() + within;
    loop {
        let dirs = directories(&client, m).await;
        let ok = dirs.iter().all(|d| {
            d.as_ref().is_some_and(|d| {
                d.iter().all(|(_, _, available)| *available)
                    && d.iter()
                        .map(|(j, _, _)| j.as_str())
                        .eq(want.iter().copied())
            })
        });
        if ok {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "directories not at {want:?}, all available, within {within:?}: {dirs:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until every router of every DC lists the same `expected` sessions (same session
/// ids) and has kept them for `hold`; returns when that stretch began.
pub async fn wait_directories(
    m: &MultiDc,
    expected: usize,
    hold: Duration,
    within: Duration,
) -> anyhow::Result<Instant> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + within;
    let mut stretch: Option<(Instant, Vec<Entry>)> = None;
    loop {
        let at = Instant::now();
        let dirs = directories(&client, m).await;
        let first = dirs.first().cloned().flatten();
        let agreed =
            first.filter(|f| f.len() == expected && dirs.iter().all(|d| d.as_ref() == Some(f)));
        stretch = match (stretch, agreed) {
            (Some((since, held)), Some(now)) if held == now => Some((since, held)),
            (_, Some(now)) => Some((at, now)),
            (_, None) => None,
        };
        if let Some((since, _)) = stretch.as_ref().filter(|(s, _)| s.elapsed() >= hold) {
            return Ok(*since);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "directories do not agree on {expected} sessions within {within:?}: {dirs:?}"
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

/// Each DC's queues (messages ready / unacked, consumers) and federation links, on stderr:
/// what to look at when a round fails.
pub async fn dump_brokers(m: &MultiDc) {
    let client = reqwest::Client::new();
    for b in &m.brokers {
        // Fresh vhosts are named `t-<hex>`: nothing to encode.
        let vhost = &b.vhost.name;
        for what in ["queues", "federation-links"] {
            let url = format!("{}api/{what}/{vhost}", b.vhost.mgmt_url);
            let list: Vec<serde_json::Value> = match client
                .get(&url)
                .basic_auth("guest", Some("guest"))
                .send()
                .await
            {
                Ok(r) => r.json().await.unwrap_or_default(),
                Err(_) => Vec::new(),
            };
            for x in list {
                if what == "queues" {
                    eprintln!(
                        "  {} queue {}: ready {} unacked {} consumers {}",
                        b.dc,
                        x["name"],
                        x["messages_ready"],
                        x["messages_unacknowledged"],
                        x["consumers"]
                    );
                } else {
                    eprintln!(
                        "  {} link {} from {}: {}",
                        b.dc, x["exchange"], x["upstream"], x["status"]
                    );
                }
            }
        }
    }
}
