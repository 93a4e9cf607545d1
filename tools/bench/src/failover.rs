//! `--failover`: what users see when a DC dies or is cut off, in figures. Two DCs run inside
//! this process (meerkat-testkit: the services from their libraries, each DC on its own vhost
//! and database of the test infrastructure's RabbitMQ and PostgreSQL, the DC-to-DC links through
//! proxies that can be cut), driven by real XMPP clients. Kill rounds (`kill.rs`), then
//! partition rounds (`partition.rs`), each with fresh users; a line per round, then a summary.
//!
//! The infrastructure is the one `MEERKAT_TEST_INFRA` names, or one this process starts and
//! that is stopped when it exits.

mod chat;
mod kill;
mod partition;
mod probe;

use std::time::{Duration, Instant};

use anyhow::Context as _;
use meerkat_testkit::multi::MultiDc;
use meerkat_testkit::stack::StackOptions;

use kill::KillRound;
use partition::PartitionRound;

/// Detection (dc-health's default: down 4 s after the last beat) plus the purge reaching a
/// client, with room for a loaded machine.
const TOLD: Duration = Duration::from_secs(20);
/// Longer than a stanza may wait in the federation queue towards a dead DC (10 s) plus the
/// detection time.
const SETTLED: Duration = Duration::from_secs(40);
/// For session replication and resync to show in every directory.
const CONVERGE: Duration = Duration::from_secs(20);
/// How long to keep listening for a late copy.
const QUIET: Duration = Duration::from_secs(2);

pub struct FailoverArgs {
    pub kills: usize,
    pub partitions: usize,
    pub send_every: Duration,
    pub password: String,
    pub json: bool,
}

/// What every round shares.
pub struct Ctx {
    /// Unique per run: user names are `alice<run>k<round>` and alike.
    run: String,
    password: String,
    send_every: Duration,
}

pub async fn run(args: &FailoverArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut m = MultiDc::start(2, StackOptions::default())
        .await
        .context("starting two DCs")?;
    eprintln!(
        "two DCs up in {:.1} s (RabbitMQ {}); Alice sends Bob a message every {} ms in every round",
        started.elapsed().as_secs_f64(),
        probe::rabbit_version().await.unwrap_or_else(|| "?".into()),
        args.send_every.as_millis(),
    );
    let ctx = Ctx {
        run: format!("{:x}", probe::wall_ms() % 0xff_ffff),
        password: args.password.clone(),
        send_every: args.send_every,
    };
    let mut kills = Vec::new();
    for n in 1..=args.kills {
        let r = kill::round(&mut m, &ctx, n)
            .await
            .with_context(|| format!("kill round {n}"))?;
        println!("{}", kill_line(&r));
        kills.push(r);
    }
    let mut partitions = Vec::new();
    for n in 1..=args.partitions {
        let r = partition::round(&mut m, &ctx, n)
            .await
            .with_context(|| format!("partition round {n}"))?;
        println!("{}", partition_line(&r));
        partitions.push(r);
    }
    summary(&kills, &partitions, args.json);
    eprintln!("done in {:.0} s", started.elapsed().as_secs_f64());
    m.stop().await
}

fn s(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn opt(d: Option<Duration>) -> String {
    d.map_or_else(|| "never".into(), s)
}

fn kill_line(r: &KillRound) -> String {
    format!(
        "kill {}: DC 2 declared down {} after the kill ({} after its last heartbeat); contact told {}; \
         reconnected at DC 1: first message {}, all {}, latency once back ≤ {}; \
         sent {} lost {} duplicates {}{} (after DC 2 returned {}) bounced {}",
        r.round,
        s(r.detected),
        opt(r.silence),
        s(r.told),
        s(r.first_message),
        opt(r.all_messages),
        r.latency_back
            .map_or_else(|| "-".into(), |d| format!("{:.0} ms", d.as_secs_f64() * 1e3)),
        r.sent,
        r.lost,
        r.duplicates,
        detail(&r.duplicate_detail),
        r.after_return,
        r.bounced,
    )
}

fn partition_line(r: &PartitionRound) -> String {
    format!(
        "partition {}: declared down {} (DC 1) / {} (DC 2) after the cut; told {} / {}; \
         after the heal: both up {}, {} {}, directories converged {}; \
         sent {} lost {} duplicates {}{} bounced {}",
        r.round,
        s(r.detected[0]),
        s(r.detected[1]),
        s(r.told[0]),
        s(r.told[1]),
        s(r.up_again),
        r.conflict_condition.as_deref().unwrap_or("stream closed"),
        s(r.conflict),
        s(r.converged),
        r.sent,
        r.lost,
        r.duplicates,
        detail(&r.duplicate_detail),
        r.bounced,
    )
}

/// ` [seq@ms:conns ...]` when there is something to say.
fn detail(d: &str) -> String {
    if d.is_empty() {
        String::new()
    } else {
        format!(" [{d}]")
    }
}

/// Median (the lower one of an even count), min and max, in seconds.
fn stats(mut v: Vec<f64>) -> Option<(f64, f64, f64)> {
    v.sort_by(f64::total_cmp);
    let p50 = *v.get((v.len().checked_sub(1)?) / 2)?;
    Some((p50, v[0], v[v.len() - 1]))
}

fn stat_line(what: &str, v: Vec<f64>) -> (String, serde_json::Value) {
    match stats(v) {
        Some((p50, min, max)) => (
            format!("  {what}: p50 {p50:.2} s  min {min:.2} s  max {max:.2} s"),
            serde_json::json!({ "p50_s": p50, "min_s": min, "max_s": max }),
        ),
        None => (format!("  {what}: -"), serde_json::Value::Null),
    }
}

fn summary(kills: &[KillRound], partitions: &[PartitionRound], json: bool) {
    let secs = |d: Duration| d.as_secs_f64();
    let mut out = serde_json::Map::new();
    let mut lines = Vec::new();
    let mut add = |key: &str, what: &str, v: Vec<f64>| {
        let (line, value) = stat_line(what, v);
        lines.push(line);
        out.insert(key.into(), value);
    };
    add(
        "kill_detected",
        "kill -> DC 1 declares DC 2 down",
        kills.iter().map(|r| secs(r.detected)).collect(),
    );
    add(
        "kill_silence",
        "last heartbeat -> down",
        kills.iter().filter_map(|r| r.silence.map(secs)).collect(),
    );
    add(
        "kill_told",
        "kill -> contact told (unavailable)",
        kills.iter().map(|r| secs(r.told)).collect(),
    );
    add(
        "reconnect_first_message",
        "reconnect at DC 1 -> first message",
        kills.iter().map(|r| secs(r.first_message)).collect(),
    );
    add(
        "reconnect_all_messages",
        "reconnect at DC 1 -> every message",
        kills
            .iter()
            .filter_map(|r| r.all_messages.map(secs))
            .collect(),
    );
    add(
        "partition_detected",
        "cut -> declared down (both sides)",
        partitions
            .iter()
            .flat_map(|r| r.detected.map(secs))
            .collect(),
    );
    add(
        "partition_told",
        "cut -> told (both sides)",
        partitions.iter().flat_map(|r| r.told.map(secs)).collect(),
    );
    add(
        "heal_up",
        "heal -> both DCs up again",
        partitions.iter().map(|r| secs(r.up_again)).collect(),
    );
    add(
        "heal_conflict",
        "heal -> duplicate session ended",
        partitions.iter().map(|r| secs(r.conflict)).collect(),
    );
    add(
        "heal_converged",
        "heal -> directories converged",
        partitions.iter().map(|r| secs(r.converged)).collect(),
    );
    let sum = |f: &dyn Fn(&KillRound) -> usize| kills.iter().map(f).sum::<usize>();
    let psum = |f: &dyn Fn(&PartitionRound) -> usize| partitions.iter().map(f).sum::<usize>();
    let messages = format!(
        "  messages: kill rounds sent {} lost {} duplicates {} bounced {}; partition rounds sent {} lost {} duplicates {} bounced {}",
        sum(&|r| r.sent),
        sum(&|r| r.lost),
        sum(&|r| r.duplicates),
        sum(&|r| r.bounced),
        psum(&|r| r.sent),
        psum(&|r| r.lost),
        psum(&|r| r.duplicates),
        psum(&|r| r.bounced),
    );
    println!(
        "failover over {} kill rounds and {} partition rounds:",
        kills.len(),
        partitions.len()
    );
    for l in lines {
        println!("{l}");
    }
    println!("{messages}");
    if json {
        out.insert("kill_rounds".into(), kills.len().into());
        out.insert("partition_rounds".into(), partitions.len().into());
        out.insert("kill_sent".into(), sum(&|r| r.sent).into());
        out.insert("kill_lost".into(), sum(&|r| r.lost).into());
        out.insert("kill_duplicates".into(), sum(&|r| r.duplicates).into());
        out.insert("partition_sent".into(), psum(&|r| r.sent).into());
        out.insert("partition_lost".into(), psum(&|r| r.lost).into());
        out.insert(
            "partition_duplicates".into(),
            psum(&|r| r.duplicates).into(),
        );
        println!("{}", serde_json::Value::Object(out));
    }
}
