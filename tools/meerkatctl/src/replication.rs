//! `dc replication`: persistent-data replication as one DC's database records it
//! (docs/replication.md): its own outbox, and per other DC how far this DC has applied that
//! DC's changes ("in") and how far that DC reports having applied ours ("out").

use std::process::ExitCode;

use anyhow::Context;
use meerkat_store::{Applied, PeerState, Store};

use crate::cli::{Cli, ReplicationArgs};
use crate::endpoints;

pub async fn run(cli: &Cli, args: &ReplicationArgs) -> anyhow::Result<ExitCode> {
    let url = match (&args.dc, &cli.database_url) {
        (None, Some(url)) => url.clone(),
        (dc, _) => {
            let d = endpoints::dc(&cli.endpoints, dc.as_deref())?;
            d.database_url
                .with_context(|| format!("no database URL for {} in {}", d.dc, cli.endpoints))?
        }
    };
    let store = Store::connect(&url)
        .await
        .context("cannot connect to the database")?;
    let me = store.identity().await?;
    let first = store.outbox_first().await?;
    let now = now_micros();
    println!(
        "{}  epoch {}  outbox head {}  kept from {}",
        display_dc(&me.dc),
        me.epoch,
        me.head,
        first
    );
    let peers = store.peers().await?;
    if peers.is_empty() {
        println!("no other DC heard of yet");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<8} {:>10} {:>10} {:>8} {:>12}   {:>10} {:>8} {:>12}",
        "peer",
        "in:applied",
        "their head",
        "behind",
        "last apply",
        "out:acked",
        "backlog",
        "last report"
    );
    for p in &peers {
        println!("{}", line(p, &me.epoch, me.head, now));
    }
    Ok(ExitCode::SUCCESS)
}

fn display_dc(dc: &str) -> &str {
    if dc.is_empty() {
        "(unclaimed)"
    } else {
        dc
    }
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

fn ago(at: Option<i64>, now: i64) -> String {
    match at {
        Some(t) => format!("{:.1} s ago", (now - t).max(0) as f64 / 1e6),
        None => "never".into(),
    }
}

/// One peer's row. "behind" compares with the peer's last reported head (same database
/// epoch); "backlog" is our head minus what the peer reported applying of it.
fn line(p: &PeerState, own_epoch: &str, own_head: i64, now: i64) -> String {
    let seq = |a: &Option<Applied>| a.as_ref().map_or("-".to_owned(), |a| a.seq.to_string());
    let behind = match (&p.applied, &p.head) {
        (Some(a), Some(h)) if a.epoch == h.epoch => (h.seq - a.seq).max(0).to_string(),
        (None, Some(h)) => h.seq.to_string(),
        (_, Some(_)) => "new epoch".into(),
        (_, None) => "-".into(),
    };
    let backlog = match &p.acked {
        Some(a) if a.epoch == own_epoch => (own_head - a.seq).max(0).to_string(),
        _ => own_head.to_string(),
    };
    format!(
        "{:<8} {:>10} {:>10} {:>8} {:>12}   {:>10} {:>8} {:>12}",
        p.dc,
        seq(&p.applied),
        seq(&p.head),
        behind,
        ago(p.applied_at, now),
        seq(&p.acked),
        backlog,
        ago(p.seen_at, now)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(epoch: &str, seq: i64) -> Option<Applied> {
        Some(Applied {
            epoch: epoch.into(),
            seq,
        })
    }

    #[test]
    fn behind_and_backlog_are_counted_within_an_epoch() {
        let p = PeerState {
            dc: "dc2".into(),
            applied: applied("e2", 7),
            applied_at: Some(0),
            head: applied("e2", 10),
            acked: applied("e1", 40),
            seen_at: Some(500_000),
        };
        let l = line(&p, "e1", 42, 1_000_000);
        let cols: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(cols[..4], ["dc2", "7", "10", "3"]);
        assert!(l.contains("40"), "{l}");
        assert!(l.contains(" 2 "), "{l}");
        assert!(l.contains("0.5 s ago"), "{l}");
        // The peer has not reported on our current database: all of it is backlog.
        let l = line(&p, "e9", 42, 1_000_000);
        assert!(l.contains(" 42 "), "{l}");
    }
}
