//! `sessions`: the session directory of one DC, as its router holds it in memory
//! (`GET /directory` on the router's admin port), grouped by the DC where each session is.

use std::collections::BTreeMap;
use std::process::ExitCode;

use serde::Deserialize;

use crate::cli::{Cli, SessionsArgs};
use crate::endpoints;

/// `GET /directory` of a router.
#[derive(Debug, Deserialize)]
struct Directory {
    dc: String,
    instance: String,
    sessions: Vec<Session>,
}

#[derive(Debug, Deserialize)]
struct Session {
    jid: String,
    dc: String,
    gateway: String,
    available: bool,
    priority: i8,
}

pub async fn run(cli: &Cli, args: &SessionsArgs) -> anyhow::Result<ExitCode> {
    let base = endpoints::admin_base(
        &cli.endpoints,
        args.dc.as_deref(),
        args.router.as_deref(),
        "router",
        |d| d.routers.first(),
    )?;
    let dir: Directory =
        endpoints::get_json(&format!("{base}/directory"), "router", "a directory").await?;
    print!("{}", render(&dir));
    Ok(ExitCode::SUCCESS)
}

/// A header line, then per DC (in name order) its count and a line per session.
fn render(dir: &Directory) -> String {
    let mut by_dc: BTreeMap<&str, Vec<&Session>> = BTreeMap::new();
    for s in &dir.sessions {
        by_dc.entry(&s.dc).or_default().push(s);
    }
    let width = dir.sessions.iter().map(|s| s.jid.len()).max().unwrap_or(0);
    let gw_width = dir
        .sessions
        .iter()
        .map(|s| s.gateway.len())
        .max()
        .unwrap_or(0);
    let mut out = format!(
        "directory of {} (router {}): {}\n",
        dir.dc,
        dir.instance,
        count(dir.sessions.len())
    );
    for (dc, mut sessions) in by_dc {
        sessions.sort_by(|a, b| a.jid.cmp(&b.jid));
        out.push_str(&format!("{dc}: {}\n", count(sessions.len())));
        for s in sessions {
            out.push_str(&format!(
                "  {:<width$}  {}  {:<gw_width$}  priority {:>4}  {}\n",
                s.jid,
                s.dc,
                s.gateway,
                s.priority,
                if s.available {
                    "available"
                } else {
                    "unavailable"
                },
            ));
        }
    }
    out
}

fn count(n: usize) -> String {
    if n == 1 {
        "1 session".into()
    } else {
        format!("{n} sessions")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(jid: &str, dc: &str, available: bool) -> Session {
        Session {
            jid: jid.into(),
            dc: dc.into(),
            gateway: format!("{dc}-gw1"),
            available,
            priority: 0,
        }
    }

    #[test]
    fn grouped_by_dc_with_counts() {
        let dir = Directory {
            dc: "dc1".into(),
            instance: "dc1-router1".into(),
            sessions: vec![
                s("bob@example.com/desk", "dc2", true),
                s("alice@example.com/phone", "dc1", false),
                s("alice@example.com/laptop", "dc2", true),
            ],
        };
        assert_eq!(
            render(&dir),
            "directory of dc1 (router dc1-router1): 3 sessions\n\
             dc1: 1 session\n\
             \x20 alice@example.com/phone   dc1  dc1-gw1  priority    0  unavailable\n\
             dc2: 2 sessions\n\
             \x20 alice@example.com/laptop  dc2  dc2-gw1  priority    0  available\n\
             \x20 bob@example.com/desk      dc2  dc2-gw1  priority    0  available\n"
        );
    }

    #[test]
    fn empty_directory() {
        let dir = Directory {
            dc: "dc2".into(),
            instance: "r".into(),
            sessions: vec![],
        };
        assert_eq!(render(&dir), "directory of dc2 (router r): 0 sessions\n");
    }
}
