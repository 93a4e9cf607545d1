//! `--gateway-kill N`: what a gateway crash costs the users it held, in figures. One DC runs in
//! this process (meerkat-testkit: the services from their libraries, with production timers)
//! with two gateways. N users ("phones") log in at the first with stream management and never
//! acknowledge anything; 20 senders at the second send each phone `--kill-messages` messages to
//! its full JID, and each phone reads them all. Then the first gateway is killed (every task
//! dropped, its sockets and broker connection cut: no goodbye), and every message the phones
//! had read but not acknowledged must reach their accounts again, by the route RFC 6121 gives a
//! message to a resource that is gone:
//!
//! - a third of the users have a second device, online at the second gateway throughout;
//! - a third reconnect at once at the second gateway (a fresh bind, no resumption);
//! - a third reconnect only after `--kill-late` seconds: their messages wait in offline
//!   storage, and come with a XEP-0203 delay.
//!
//! Per group: messages sent, delivered (each counted once), duplicates, how many came stored
//! offline, and the time from the kill until each arrived.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use meerkat_testkit::stack::{Dc, StackOptions};
use meerkat_testkit::timers::Timers;
use tokio::sync::{watch, Barrier};

use crate::client::{BenchClient, LoginOpts, Reader};

/// Users online throughout who send the messages.
const SENDERS: usize = 20;
/// How long a step (a login, the messages before the kill) may take before the run fails.
const PATIENCE: Duration = Duration::from_secs(60);
/// How long after the kill a user waits for its last message before counting it lost.
const SETTLE: Duration = Duration::from_secs(120);

pub struct KillArgs {
    pub users: usize,
    pub messages: usize,
    pub late: Duration,
    pub password: String,
    pub json: bool,
}

/// How a user gets its messages back after the kill.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Group {
    SecondDevice,
    ReconnectAtOnce,
    ReconnectLate,
}

const GROUPS: [Group; 3] = [
    Group::SecondDevice,
    Group::ReconnectAtOnce,
    Group::ReconnectLate,
];

impl Group {
    fn of(i: usize) -> Group {
        GROUPS[i % GROUPS.len()]
    }

    fn describe(self) -> &'static str {
        match self {
            Group::SecondDevice => "second device online",
            Group::ReconnectAtOnce => "reconnect at once",
            Group::ReconnectLate => "reconnect late (offline storage)",
        }
    }
}

/// What one user got back after the kill: per message id, the time from the kill to its
/// arrival and whether it was stored offline on the way.
struct Outcome {
    group: Group,
    sent: usize,
    arrivals: Vec<(u64, Duration, bool)>,
}

pub async fn run(args: &KillArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut dc = Dc::start(StackOptions {
        timers: Timers::production(),
        ..StackOptions::default()
    })
    .await
    .context("starting a DC")?;
    let doomed = dc.client().addr;
    let survivor = dc.start_gateway_on_own_port().await?.addr;
    let domain = StackOptions::default().domain;
    let run = format!(
        "{:x}",
        std::process::id() ^ started.elapsed().subsec_nanos()
    );
    let (n, k) = (args.users.max(GROUPS.len()), args.messages.max(1));
    eprintln!(
        "one DC with two gateways up in {:.1} s; {n} phones at the first, {k} messages each",
        started.elapsed().as_secs_f64()
    );
    let user = |i: usize| format!("gk{run}u{i}");
    let login = |addr: SocketAddr, name: String, resource: &str, sm: bool| {
        let (domain, password) = (domain.clone(), args.password.clone());
        let opts = LoginOpts {
            sm,
            ..LoginOpts::resource(resource)
        };
        async move {
            tokio::time::timeout(
                PATIENCE,
                BenchClient::login_with(addr, &domain, &name, &password, true, &opts),
            )
            .await
            .with_context(|| format!("{name}: login took over {PATIENCE:?}"))?
        }
    };

    // The phones (and the second devices of a third of the users), 20 logins at a time.
    let mut phones = Vec::with_capacity(n);
    let mut desks = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(20) {
        let mut batch = Vec::new();
        for &i in chunk {
            batch.push(tokio::spawn(login(doomed, user(i), "phone", true)));
            if Group::of(i) == Group::SecondDevice {
                desks.push((i, tokio::spawn(login(survivor, user(i), "desk", false))));
            }
        }
        for b in batch {
            phones.push(b.await??);
        }
    }
    let mut second = Vec::with_capacity(desks.len());
    for (i, d) in desks {
        second.push((i, d.await??));
    }
    let mut senders = Vec::with_capacity(SENDERS);
    for s in 0..SENDERS {
        senders.push(login(survivor, format!("gk{run}s{s}"), "bench", false).await?);
    }
    eprintln!(
        "{} clients online in {:.1} s",
        phones.len() + second.len() + senders.len(),
        started.elapsed().as_secs_f64()
    );

    // Every phone reads its k messages (acknowledging none), then waits for the kill.
    let (kill_tx, kill_rx) = watch::channel(None::<Instant>);
    let all_read = Arc::new(Barrier::new(n + 1));
    let mut tasks = Vec::with_capacity(n);
    let mut desks: Vec<Option<BenchClient>> = (0..n).map(|_| None).collect();
    for (i, d) in second {
        desks[i] = Some(d);
    }
    for (i, phone) in phones.into_iter().enumerate() {
        let (name, run, password, domain) =
            (user(i), run.clone(), args.password.clone(), domain.clone());
        let (all_read, mut kill_rx) = (all_read.clone(), kill_rx.clone());
        let desk = desks[i].take();
        let late = args.late;
        tasks.push(tokio::spawn(async move {
            let (mut reader, writer) = phone.split();
            reader.never_acknowledge();
            let mut read = 0;
            while read < k {
                match tokio::time::timeout(PATIENCE, reader.next_bench_message(&run)).await {
                    Ok(Ok(Some(_))) => read += 1,
                    _ => break,
                }
            }
            all_read.wait().await;
            anyhow::ensure!(read == k, "{name}: read {read} of {k} before the kill");
            let killed = loop {
                if let Some(at) = *kill_rx.borrow_and_update() {
                    break at;
                }
                kill_rx.changed().await?;
            };
            drop((reader, writer));
            let group = Group::of(i);
            let mut again = match (group, desk) {
                (Group::SecondDevice, Some(desk)) => desk.split().0,
                (Group::SecondDevice, None) => anyhow::bail!("{name}: no second device"),
                (Group::ReconnectAtOnce | Group::ReconnectLate, _) => {
                    if group == Group::ReconnectLate {
                        tokio::time::sleep_until((killed + late).into()).await;
                    }
                    let opts = LoginOpts::resource("phone-again");
                    BenchClient::login_with(survivor, &domain, &name, &password, false, &opts)
                        .await
                        .with_context(|| format!("{name}: logging in again"))?
                        .split()
                        .0
                }
            };
            let arrivals = collect(&mut again, &run, k, killed).await;
            Ok::<Outcome, anyhow::Error>(Outcome {
                group,
                sent: k,
                arrivals,
            })
        }));
    }
    let mut sending = Vec::with_capacity(SENDERS);
    for (s, sender) in senders.into_iter().enumerate() {
        let (run, domain) = (run.clone(), domain.clone());
        let to: Vec<usize> = (s..n).step_by(SENDERS).collect();
        sending.push(tokio::spawn(async move {
            let (reader, mut writer) = sender.split();
            for i in to {
                for m in 0..k {
                    let id = (i * k + m) as u64;
                    writer
                        .send_chat(&format!("gk{run}u{i}@{domain}/phone"), &run, id)
                        .await?;
                }
            }
            Ok::<_, anyhow::Error>((reader, writer))
        }));
    }
    let mut keep = Vec::with_capacity(SENDERS);
    for s in sending {
        keep.push(s.await??);
    }
    all_read.wait().await;
    let killed = Instant::now();
    dc.kill_gateway(0)?;
    kill_tx.send(Some(killed))?;
    eprintln!(
        "{} messages read and unacknowledged by the phones; the first gateway killed",
        n * k
    );

    let mut outcomes = Vec::with_capacity(n);
    let mut failures = 0;
    for t in tasks {
        match t.await? {
            Ok(o) => outcomes.push(o),
            Err(e) => {
                if failures == 0 {
                    eprintln!("first failure: {e:#}");
                }
                failures += 1;
            }
        }
    }
    report(args, &outcomes, failures, n * k)?;
    for (_, mut writer) in keep {
        let _ = writer.close().await;
    }
    dc.shutdown().await?;
    Ok(())
}

/// This run's messages arriving on `reader` until all `k` of them came or [`SETTLE`] passed
/// since the kill (duplicates included: each arrival once).
async fn collect(
    reader: &mut Reader,
    run: &str,
    k: usize,
    killed: Instant,
) -> Vec<(u64, Duration, bool)> {
    let mut arrivals = Vec::new();
    let mut distinct = HashSet::new();
    let deadline = killed + SETTLE;
    while distinct.len() < k {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, reader.next_bench(run)).await {
            Ok(Ok(Some((id, delayed)))) => {
                distinct.insert(id);
                arrivals.push((id, killed.elapsed(), delayed));
            }
            _ => break,
        }
    }
    // A moment more, so a copy arriving twice would show.
    while let Ok(Ok(Some((id, delayed)))) =
        tokio::time::timeout(Duration::from_secs(1), reader.next_bench(run)).await
    {
        arrivals.push((id, killed.elapsed(), delayed));
    }
    arrivals
}

fn report(
    args: &KillArgs,
    outcomes: &[Outcome],
    failures: usize,
    total: usize,
) -> anyhow::Result<()> {
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let mut all_delivered = 0;
    let mut json = Vec::new();
    for group in GROUPS {
        let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
        let (mut sent, mut delivered, mut duplicates, mut stored) = (0, 0, 0, 0);
        for o in outcomes.iter().filter(|o| o.group == group) {
            sent += o.sent;
            let mut seen = HashSet::new();
            for &(id, at, delayed) in &o.arrivals {
                if !seen.insert(id) {
                    duplicates += 1;
                    continue;
                }
                delivered += 1;
                stored += usize::from(delayed);
                h.record(u64::try_from(at.as_micros()).unwrap_or(u64::MAX).max(1))?;
            }
        }
        all_delivered += delivered;
        println!(
            "{:<34} sent {sent:>5}  delivered {delivered:>5}  lost {:>4}  duplicates {duplicates:>3}  stored offline {stored:>5}; kill -> arrival p50 {:.0} ms  p99 {:.0} ms  last {:.0} ms",
            group.describe(),
            sent.saturating_sub(delivered),
            ms(&h, 0.5),
            ms(&h, 0.99),
            h.max() as f64 / 1000.0,
        );
        json.push(serde_json::json!({
            "group": group.describe(), "sent": sent, "delivered": delivered,
            "duplicates": duplicates, "stored_offline": stored,
            "p50_ms": ms(&h, 0.5), "p99_ms": ms(&h, 0.99), "last_ms": h.max() as f64 / 1000.0,
        }));
    }
    println!(
        "gateway kill: {} users, {total} unacknowledged messages, {all_delivered} delivered again ({} users failed)",
        outcomes.len() + failures,
        failures
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({"workload": "gateway-kill", "messages": total,
                "delivered": all_delivered, "failed_users": failures, "groups": json})
        );
    }
    Ok(())
}
