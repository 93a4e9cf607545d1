//! `dc status`: the other DCs as one DC's health service sees them (`GET /status` on its admin
//! port): state, epoch and heartbeat age per DC, then its gateways and federation links.
//! Exits non-zero when a DC is not up, so scripts and probes can use it.

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use crate::cli::{Cli, DcStatusArgs};
use crate::endpoints;

/// `GET /status` of a health service (the fields shown).
#[derive(Debug, Deserialize)]
struct Status {
    dc: String,
    instance: String,
    epoch: String,
    down_after_ms: u64,
    detection_bound_ms: u64,
    peers: Vec<Peer>,
    #[serde(default)]
    gateways: Vec<Gateway>,
    #[serde(default)]
    links: Option<Links>,
}

#[derive(Debug, Deserialize)]
struct Peer {
    dc: String,
    state: String,
    epoch: Option<String>,
    age_ms: u64,
    /// Milliseconds since the Unix epoch when the state began.
    since: u64,
}

#[derive(Debug, Deserialize)]
struct Gateway {
    instance: String,
    epoch: Option<String>,
    age_ms: u64,
    sessions: usize,
}

#[derive(Debug, Deserialize)]
struct Links {
    links: Vec<Link>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Link {
    upstream: String,
    #[serde(default)]
    exchange: Option<String>,
    status: String,
}

pub async fn run(cli: &Cli, args: &DcStatusArgs) -> anyhow::Result<ExitCode> {
    let base = endpoints::admin_base(
        &cli.endpoints,
        args.dc.as_deref(),
        args.health.as_deref(),
        "health service",
        |d| d.health.first(),
    )?;
    let status: Status = endpoints::get_json(
        &format!("{base}/status"),
        "health service",
        "a health status",
    )
    .await?;
    print!("{}", render(&status, now_ms()));
    Ok(if status.peers.iter().all(|p| p.state == "up") {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

fn render(s: &Status, now: u64) -> String {
    let mut out = format!(
        "{}  {}  epoch {}  (down after {}, bound {})\n",
        s.dc,
        s.instance,
        s.epoch,
        secs(s.down_after_ms),
        secs(s.detection_bound_ms)
    );
    if s.peers.is_empty() {
        out.push_str("no other DC configured\n");
    } else {
        let rows: Vec<[String; 5]> = s
            .peers
            .iter()
            .map(|p| {
                [
                    p.dc.clone(),
                    p.state.clone(),
                    p.epoch.clone().unwrap_or_else(|| "-".into()),
                    secs(p.age_ms),
                    format!("{} ago", secs(now.saturating_sub(p.since))),
                ]
            })
            .collect();
        out.push_str(&table(
            ["peer", "state", "epoch", "heartbeat age", "since"],
            &rows,
        ));
    }
    if !s.gateways.is_empty() {
        let rows: Vec<[String; 4]> = s
            .gateways
            .iter()
            .map(|g| {
                [
                    g.instance.clone(),
                    g.epoch.clone().unwrap_or_else(|| "-".into()),
                    secs(g.age_ms),
                    g.sessions.to_string(),
                ]
            })
            .collect();
        out.push_str(&table(
            ["gateway", "epoch", "heartbeat age", "sessions"],
            &rows,
        ));
    }
    match &s.links {
        None => out.push_str("federation links: not watched (no management_url)\n"),
        Some(l) => {
            if let Some(e) = &l.error {
                out.push_str(&format!("federation links: last read failed: {e}\n"));
            }
            if l.links.is_empty() {
                out.push_str("no federation links\n");
            } else {
                let rows: Vec<[String; 3]> = l
                    .links
                    .iter()
                    .map(|k| {
                        [
                            k.upstream.clone(),
                            k.exchange.clone().unwrap_or_else(|| "-".into()),
                            k.status.clone(),
                        ]
                    })
                    .collect();
                out.push_str(&table(["upstream", "exchange", "status"], &rows));
            }
        }
    }
    out
}

/// A header and rows in columns two spaces apart, trailing spaces trimmed.
fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (cell, w) in cells.iter().zip(widths) {
            l.push_str(&format!("{cell:<w$}  "));
        }
        format!("{}\n", l.trim_end())
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_gateways_and_links_in_columns() {
        let s: Status = serde_json::from_value(serde_json::json!({
            "dc": "dc1", "instance": "dc1-health", "epoch": "e1",
            "suspect_after_ms": 2000, "down_after_ms": 4000, "detection_bound_ms": 5000,
            "peers": [
                {"dc": "dc2", "state": "up", "epoch": "e2", "age_ms": 420, "since": 90_000},
                {"dc": "dc3", "state": "down", "epoch": null, "age_ms": 12_000, "since": 95_000}
            ],
            "gateways": [{"instance": "dc1-gw1", "epoch": "g1", "age_ms": 200, "beating": true, "sessions": 3}],
            "links": {"links": [{"upstream": "meerkat-dc2", "exchange": "meerkat.inter.health", "status": "running"}], "polled_at_ms": 1}
        }))
        .unwrap();
        assert_eq!(
            render(&s, 100_000),
            "dc1  dc1-health  epoch e1  (down after 4.0 s, bound 5.0 s)\n\
             peer  state  epoch  heartbeat age  since\n\
             dc2   up     e2     0.4 s          10.0 s ago\n\
             dc3   down   -      12.0 s         5.0 s ago\n\
             gateway  epoch  heartbeat age  sessions\n\
             dc1-gw1  g1     0.2 s          3\n\
             upstream     exchange              status\n\
             meerkat-dc2  meerkat.inter.health  running\n"
        );
    }
}
