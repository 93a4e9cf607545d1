//! The chat workloads: users log in once ([`Online::login`]), then chat in steps at a given
//! offered rate ([`Online::step`]). `--peak` runs steps at rising rates until delivery falls
//! behind; `--idle` only logs everyone in and holds the sessions open.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::client::{BenchClient, LoginOpts, Writer};
use crate::Args;

/// What one step of chat gave.
#[derive(Clone, Debug)]
pub struct Step {
    pub offered: f64,
    pub sent: u64,
    pub delivered: u64,
    /// Delivered messages per second over the step and its drain.
    pub rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Sending fell behind the rate: the senders took longer than the step's duration plus
    /// their staggered start (a server that stops reading its sockets, or a load generator
    /// short of CPU).
    pub late: bool,
    /// With `--carbons`: carbons due (one per message), delivered, and their latency p99 (ms).
    pub carbons: Option<(u64, u64, f64)>,
}

/// `offered … msg/s  sent …  delivered …  lost …  rate … msg/s  latency p50 … ms  p99 … ms  max … ms`
impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "offered {:.0} msg/s  sent {}  delivered {}  lost {}  rate {:.0} msg/s  latency p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            self.offered,
            self.sent,
            self.delivered,
            self.lost(),
            self.rate,
            self.p50_ms,
            self.p99_ms,
            self.max_ms,
        )?;
        if let Some((due, got, p99)) = self.carbons {
            write!(f, "  carbons due {due} delivered {got} p99 {p99:.2} ms")?;
        }
        Ok(())
    }
}

impl Step {
    pub fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.delivered)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "offered_rate": self.offered, "sent": self.sent, "delivered": self.delivered,
            "lost": self.lost(), "rate": self.rate, "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms, "max_ms": self.max_ms,
            "carbons_due": self.carbons.map(|c| c.0),
            "carbons_delivered": self.carbons.map(|c| c.1),
            "carbons_p99_ms": self.carbons.map(|c| c.2),
        })
    }
}

/// Latencies and a count of what arrived, shared by the reader tasks.
type Counted = (Arc<Mutex<Histogram<u64>>>, Arc<AtomicU64>);

/// Every user online, a reader task per user counting what arrives.
pub struct Online {
    users: usize,
    inter_dc: bool,
    /// Per user: its writer while no step runs, and its partner's bare JID.
    writers: Vec<(Option<Writer>, String)>,
    readers: Vec<JoinHandle<()>>,
    latency: Arc<Mutex<Histogram<u64>>>,
    received: Arc<AtomicU64>,
    /// With `--carbons`: the copies' latency and count, at the even users' second resources.
    carbons: Option<Counted>,
    clock: Arc<Instant>,
    run: Arc<str>,
    pub login_secs: f64,
}

/// Latencies from 1 µs to 60 s, 3 significant digits (every bench workload's histogram).
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("1 µs to 60 s, 3 digits")
}

impl Online {
    /// Logs `--users` users in (20 at a time), with stream management if `--sm`. Inter-DC:
    /// the odd users (the receivers) at `--to-addr`.
    pub async fn login(args: &Args) -> anyhow::Result<Online> {
        let users = args.users.max(2) & !1;
        let started = Instant::now();
        let run: Arc<str> = format!(
            "{:x}",
            std::process::id() ^ (started.elapsed().subsec_nanos())
        )
        .into();
        let mut sessions = Vec::with_capacity(users);
        let mut copies = Vec::new();
        for chunk in (0..users).collect::<Vec<_>>().chunks(20) {
            let mut batch = Vec::new();
            for &i in chunk {
                let args = args.clone();
                batch.push(tokio::spawn(async move {
                    let name = format!("{}{i}", args.prefix);
                    let addr = match args.to_addr {
                        Some(to) if i % 2 == 1 => to,
                        _ => args.addr,
                    };
                    let mut c = BenchClient::login_with(
                        addr,
                        &args.domain,
                        &name,
                        &args.password,
                        args.register,
                        &args.login_opts(),
                    )
                    .await?;
                    // Set either way: the preference stays with the account, and a run
                    // reusing the names of an `--archive-off` run would archive nothing.
                    c.archive_default(if args.archive_off { "never" } else { "always" })
                        .await?;
                    let mut copy = None;
                    if args.carbons && i % 2 == 0 {
                        c.enable_carbons().await?;
                        let mut second = BenchClient::login_with(
                            addr,
                            &args.domain,
                            &name,
                            &args.password,
                            false,
                            &LoginOpts::resource("bench-copy"),
                        )
                        .await?;
                        second.enable_carbons().await?;
                        copy = Some(second);
                    }
                    Ok::<_, anyhow::Error>((c, copy))
                }));
            }
            for b in batch {
                let (c, copy) = b.await??;
                sessions.push(c);
                copies.extend(copy);
            }
        }
        let login_secs = started.elapsed().as_secs_f64();
        if args.to_addr.is_some() {
            // The receivers' presence must reach DC 1 before the first message to their bare
            // JID, or DC 1 stores it offline (no available resource yet): give replication a
            // moment (its lag is measured by --lag-logins; tens of milliseconds).
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let mut online = Online {
            users,
            inter_dc: args.to_addr.is_some(),
            writers: Vec::with_capacity(users),
            readers: Vec::with_capacity(users),
            latency: Arc::new(Mutex::new(histogram())),
            received: Arc::new(AtomicU64::new(0)),
            carbons: args.carbons.then(|| {
                (
                    Arc::new(Mutex::new(histogram())),
                    Arc::new(AtomicU64::new(0)),
                )
            }),
            clock: Arc::new(started),
            run,
            login_secs,
        };
        for (i, s) in sessions.into_iter().enumerate() {
            let (mut reader, writer) = s.split();
            let (latency, received) = (online.latency.clone(), online.received.clone());
            let (clock, run) = (online.clock.clone(), online.run.clone());
            online.readers.push(tokio::spawn(async move {
                while let Ok(Some(sent_us)) = reader.next_bench_message(&run).await {
                    let now = u64::try_from(clock.elapsed().as_micros()).unwrap_or(u64::MAX);
                    received.fetch_add(1, Ordering::Relaxed);
                    let _ = latency
                        .lock()
                        .await
                        .record(now.saturating_sub(sent_us).max(1));
                }
            }));
            // With carbons, to the partner's one resource: a message to the bare JID would go
            // to both of an even user's resources (equal priority) rather than as a carbon.
            let partner = format!(
                "{}{}@{}{}",
                args.prefix,
                i ^ 1,
                args.domain,
                if args.carbons { "/bench" } else { "" }
            );
            online.writers.push((Some(writer), partner));
        }
        if let Some((latency, received)) = &online.carbons {
            for copy in copies {
                let (mut reader, writer) = copy.split();
                let (latency, received) = (latency.clone(), received.clone());
                let (clock, run) = (online.clock.clone(), online.run.clone());
                online.readers.push(tokio::spawn(async move {
                    let _keep = writer;
                    while let Ok(Some(sent_us)) = reader.next_bench_carbon(&run).await {
                        let now = u64::try_from(clock.elapsed().as_micros()).unwrap_or(u64::MAX);
                        received.fetch_add(1, Ordering::Relaxed);
                        let _ = latency
                            .lock()
                            .await
                            .record(now.saturating_sub(sent_us).max(1));
                    }
                }));
            }
        }
        Ok(online)
    }

    pub fn users(&self) -> usize {
        self.users
    }

    /// Chat at `rate` messages per second in all for `duration`, then wait until everything
    /// sent has arrived (or nothing arrived for 10 s). Inter-DC only the DC 1 half sends.
    pub async fn step(&mut self, rate: f64, duration: Duration) -> anyhow::Result<Step> {
        let senders = if self.inter_dc {
            self.users / 2
        } else {
            self.users
        };
        let interval = Duration::from_secs_f64(senders as f64 / rate.max(0.001));
        *self.latency.lock().await = histogram();
        self.received.store(0, Ordering::Relaxed);
        if let Some((latency, received)) = &self.carbons {
            *latency.lock().await = histogram();
            received.store(0, Ordering::Relaxed);
        }
        let sent = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for (i, (slot, partner)) in self.writers.iter_mut().enumerate() {
            if self.inter_dc && i % 2 == 1 {
                continue;
            }
            let Some(mut writer) = slot.take() else {
                continue;
            };
            let (partner, sent) = (partner.clone(), sent.clone());
            let (clock, run) = (self.clock.clone(), self.run.clone());
            tasks.push((
                i,
                tokio::spawn(async move {
                    // Spread the first sends so the load is smooth.
                    tokio::time::sleep(interval.mul_f64((i as f64 * 0.618).fract())).await;
                    let end = Instant::now() + duration;
                    let mut tick = tokio::time::interval(interval);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                    while Instant::now() < end {
                        tick.tick().await;
                        let us = u64::try_from(clock.elapsed().as_micros()).unwrap_or(u64::MAX);
                        if writer.send_chat(&partner, &run, us).await.is_err() {
                            return None;
                        }
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(writer)
                }),
            ));
        }
        for (i, task) in tasks {
            self.writers[i].0 = task.await?;
        }
        // Each sender starts within one interval and sends for `duration`.
        let late = started.elapsed() > (duration + interval).mul_f64(1.2);
        let sent = sent.load(Ordering::Relaxed);
        // Every message of a pair involves one even user: one carbon each.
        let carbons_due = if self.carbons.is_some() { sent } else { 0 };
        let copies = || {
            self.carbons
                .as_ref()
                .map_or(0, |(_, n)| n.load(Ordering::Relaxed))
        };
        let mut last = (self.received.load(Ordering::Relaxed), Instant::now());
        loop {
            let got = self.received.load(Ordering::Relaxed);
            let done = got >= sent && copies() >= carbons_due;
            if done || last.1.elapsed() > Duration::from_secs(10) {
                break;
            }
            if got != last.0 {
                last = (got, Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let delivered = self.received.load(Ordering::Relaxed);
        let h = self.latency.lock().await;
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Ok(Step {
            offered: rate,
            sent,
            delivered,
            rate: delivered as f64 / elapsed,
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            max_ms: h.max() as f64 / 1000.0,
            late,
            carbons: match &self.carbons {
                Some((latency, _)) => Some((
                    carbons_due,
                    copies(),
                    latency.lock().await.value_at_quantile(0.99) as f64 / 1000.0,
                )),
                None => None,
            },
        })
    }

    /// Closes every stream.
    pub async fn close(mut self) {
        for (w, _) in &mut self.writers {
            if let Some(w) = w {
                let _ = w.close().await;
            }
        }
        for r in &self.readers {
            r.abort();
        }
    }
}

/// `--peak`: steps of `--duration` seconds from `--rate` up, doubling until a step fails, then
/// halving the gap between the last good and the first failed rate three times. A step is good
/// when nothing is lost and p99 stays under 100 ms. Prints every step and the peak.
pub async fn peak(args: &Args) -> anyhow::Result<()> {
    let mut online = Online::login(args).await?;
    eprintln!(
        "{} users online in {:.1} s",
        online.users(),
        online.login_secs
    );
    let duration = Duration::from_secs(args.duration.max(1));
    let mut steps: Vec<Step> = Vec::new();
    let mut good: Option<Step> = None;
    let mut bad: Option<f64> = None;
    let mut rate = args.rate.max(1.0);
    let mut bisections = 0;
    loop {
        let s = online.step(rate, duration).await?;
        // The load must have been offered: sending that fell behind (a server that stops
        // reading its sockets, or a generator short of CPU) fails the step too.
        let ok = s.lost() == 0 && s.p99_ms < 100.0 && !s.late;
        println!(
            "peak step: {s}  {}",
            if ok {
                "ok"
            } else if s.late {
                "FAILED (sending fell behind the rate: the server read too slowly, or the load generator lacked CPU)"
            } else {
                "FAILED"
            }
        );
        steps.push(s.clone());
        if ok {
            good = Some(s);
        } else {
            bad = Some(rate);
        }
        rate = match (good.as_ref().map(|g| g.offered), bad) {
            (Some(g), None) => g * 2.0,
            (None, Some(b)) if bisections < 3 => {
                bisections += 1;
                b / 2.0
            }
            (Some(g), Some(b)) if bisections < 3 && b - g > g * 0.05 => {
                bisections += 1;
                (g + b) / 2.0
            }
            _ => break,
        };
        // Let queues empty and the server settle between steps.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    online.close().await;
    match &good {
        Some(g) => println!(
            "peak: {:.0} msg/s with p99 {:.2} ms and nothing lost ({} users)",
            g.offered, g.p99_ms, args.users
        ),
        None => println!(
            "peak: no rate from {:.0} msg/s up held p99 < 100 ms",
            args.rate
        ),
    }
    if args.json {
        let best = good.as_ref();
        println!(
            "{}",
            serde_json::json!({
                "workload": "peak", "users": args.users,
                "rate": best.map_or(0.0, |g| g.offered),
                "p50_ms": best.map_or(0.0, |g| g.p50_ms),
                "p99_ms": best.map_or(0.0, |g| g.p99_ms),
                "max_ms": best.map_or(0.0, |g| g.max_ms),
                "lost": best.map_or(0, Step::lost),
                "steps": steps.iter().map(Step::json).collect::<Vec<_>>(),
            })
        );
    }
    Ok(())
}

/// `--idle`: logs `--users` users in, prints `online` (one JSON line with `--json`), holds
/// the sessions open for `--duration` seconds, closes them.
pub async fn idle(args: &Args) -> anyhow::Result<()> {
    let online = Online::login(args).await?;
    println!(
        "idle: {} users online{} in {:.1} s; holding them {} s",
        online.users(),
        if args.sm {
            " with stream management"
        } else {
            ""
        },
        online.login_secs,
        args.duration
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({"workload": "idle", "users": online.users(), "online": true})
        );
    }
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    tokio::time::sleep(Duration::from_secs(args.duration)).await;
    online.close().await;
    Ok(())
}
