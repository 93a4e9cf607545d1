//! `--resume-burst N`: N users with stream management (XEP-0198, resumption enabled) chat a
//! little in pairs (three messages each way, acknowledged), then all drop their TCP connections
//! at the same moment, without closing their streams, as phones losing their network. Right
//! after the drop 20 other users, online throughout, send each of them one message to their
//! full JID; each dropped user connects again (at `--resume-addr` if given: another gateway or
//! DC; with `--resume-direct-tls` over direct TLS instead of STARTTLS), authenticates (PLAIN, or
//! with `--scram` SCRAM-SHA-256 reusing the salted password of its first login, as a phone does)
//! and resumes (`<resume/>`). Per user: the time from its drop
//! until `<resumed/>`, and until that message (the first stanza sent while it was away) arrives
//! on the resumed stream. With `--resume-unacked` each user leaves the last message before the
//! drop unacknowledged and resumes with the `h` before it: the time until that one, sent again
//! after `<resumed/>`, arrives too (the first resumed stanza).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use tokio::sync::Barrier;

use crate::chat::histogram;
use crate::client::{BenchClient, LoginOpts, ResumeVia};
use crate::Args;

/// Messages each user gets from its partner before the drop.
const BEFORE: u64 = 3;
/// Users online throughout who send the messages while the others are away.
const SENDERS: usize = 20;
/// How long a user waits for a step (login, resumption, the message) before counting as failed.
const PATIENCE: Duration = Duration::from_secs(30);

/// What one user saw, each from its drop: until TLS was up, until SASL succeeded, until
/// `<resumed/>`, until the message sent meanwhile, and (`--resume-unacked`) until the one it
/// had not acknowledged came again.
type Timings = [Duration; 5];

pub async fn burst(args: &Args) -> anyhow::Result<()> {
    let n = args.resume_burst.max(2) & !1;
    let clock = Instant::now();
    let run = format!("{:x}", std::process::id() ^ clock.elapsed().subsec_nanos());
    let (before_run, away_run): (Arc<str>, Arc<str>) =
        (format!("{run}b").into(), format!("{run}a").into());
    let user = |i: usize| format!("{}resume{i}", args.prefix);
    // Where the dropped users come back: through a relay adding a round trip, if asked.
    let resume_at = args.resume_addr.unwrap_or(args.addr);
    let resume_via = if args.resume_rtt_ms > 0 {
        let one_way = Duration::from_millis(args.resume_rtt_ms) / 2;
        crate::latency::relay(resume_at, one_way).await?
    } else {
        resume_at
    };

    // Everyone online with stream management, 20 logins at a time.
    let mut clients = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(20) {
        let mut batch = Vec::new();
        for &i in chunk {
            let (args, name) = (args.clone(), user(i));
            batch.push(tokio::spawn(async move {
                let opts = LoginOpts {
                    sm: true,
                    ..args.login_opts()
                };
                BenchClient::login_with(
                    args.addr,
                    &args.domain,
                    &name,
                    &args.password,
                    args.register,
                    &opts,
                )
                .await
            }));
        }
        for b in batch {
            clients.push(b.await??);
        }
    }
    // The senders of the messages while away: several, since a session's stanzas go to the
    // routers one after another (each confirmed before the next), so one sender's hundredth
    // message would leave a hundred confirmations after the drop.
    let mut senders = Vec::with_capacity(SENDERS);
    for s in 0..SENDERS {
        let sender = BenchClient::login(
            args.addr,
            &args.domain,
            &format!("{}resumesender{s}", args.prefix),
            &args.password,
            args.register,
        )
        .await?;
        senders.push(sender.split());
    }
    eprintln!(
        "{n} users with stream management online in {:.1} s",
        clock.elapsed().as_secs_f64()
    );

    // Every user and this task: all ready to drop, then all dropped.
    let ready = Arc::new(Barrier::new(n + 1));
    // Passed after `--resume-idle-ms`.
    let go = Arc::new(Barrier::new(n + 1));
    let dropped = Arc::new(Barrier::new(n + 1));
    // With --resume-quiet: users whose resumption ended (resumed or failed).
    let settled = Arc::new((
        std::sync::atomic::AtomicUsize::new(0),
        tokio::sync::Notify::new(),
    ));
    let mut tasks = Vec::with_capacity(n);
    for (i, client) in clients.into_iter().enumerate() {
        let (args, name, partner) = (args.clone(), user(i), user(i ^ 1));
        let (ready, go, dropped) = (ready.clone(), go.clone(), dropped.clone());
        let settled = Settled(settled.clone());
        let (before_run, away_run) = (before_run.clone(), away_run.clone());
        tasks.push(tokio::spawn(async move {
            let sasl = client.sasl().clone();
            let (mut reader, mut writer) = client.split();
            let partner = format!("{partner}@{}", args.domain);
            let mut failure = None;
            for k in 0..BEFORE {
                if writer.send_chat(&partner, &before_run, k).await.is_err() {
                    failure = Some("sending before the drop failed");
                }
            }
            // With --resume-unacked: what was handled before the last message, the `h` to
            // resume with.
            let mut before_last = None;
            for k in 0..BEFORE {
                if args.resume_unacked && k == BEFORE - 1 {
                    // Everything before it acknowledged; it and what follows never are.
                    if reader.ack().await.is_err() {
                        failure = Some("acknowledging before the drop failed");
                    }
                    reader.never_acknowledge();
                    before_last = reader.sm().map(|sm| sm.h);
                }
                match tokio::time::timeout(PATIENCE, reader.next_bench_message(&before_run)).await {
                    Ok(Ok(Some(_))) => {}
                    _ => failure = Some("a message before the drop did not arrive"),
                }
            }
            // Acknowledge everything (unless --resume-unacked), so the first stanza after
            // resuming is the one sent while away.
            if before_last.is_none() && reader.ack().await.is_err() {
                failure = Some("acknowledging before the drop failed");
            }
            let mut sm = reader.sm().cloned();
            if let (Some(sm), Some(h)) = (sm.as_mut(), before_last) {
                sm.h = h;
            }
            // Every task reaches both barriers, whatever failed.
            ready.wait().await;
            go.wait().await;
            let at = Instant::now();
            drop(reader);
            drop(writer);
            dropped.wait().await;
            if let Some(f) = failure {
                anyhow::bail!("{name}: {f}");
            }
            let mut sm = sm.context("no stream management")?;
            if args.resume_unnamed {
                sm.id = unnamed(&sm.id);
            }
            let resumed = tokio::time::timeout(
                PATIENCE,
                BenchClient::resume(
                    resume_via,
                    ResumeVia {
                        direct_tls: args.resume_direct_tls,
                        sasl2: args.resume_sasl2,
                    },
                    &args.domain,
                    &name,
                    &args.password,
                    sm,
                    sasl,
                ),
            )
            .await
            .with_context(|| format!("{name}: no <resumed/> within {PATIENCE:?}"))??;
            let to_resumed = at.elapsed();
            drop(settled);
            let (resumed, phases) = resumed;
            let (mut reader, mut writer) = resumed.split();
            let mut to_resent = Duration::ZERO;
            if before_last.is_some() {
                let again = tokio::time::timeout(PATIENCE, reader.next_bench_message(&before_run))
                    .await
                    .with_context(|| {
                        format!("{name}: the unacknowledged message did not come again")
                    })?;
                anyhow::ensure!(
                    matches!(again, Ok(Some(_))),
                    "{name}: the resumed stream ended before the unacknowledged message"
                );
                to_resent = at.elapsed();
            }
            let first = tokio::time::timeout(PATIENCE, reader.next_bench_message(&away_run))
                .await
                .with_context(|| format!("{name}: nothing sent while away arrived"))?;
            let to_first = at.elapsed();
            anyhow::ensure!(
                matches!(first, Ok(Some(_))),
                "{name}: the resumed stream ended before the message sent while away"
            );
            let _ = writer.close().await;
            Ok::<Timings, anyhow::Error>([
                phases.secure - at,
                phases.authenticated - at,
                to_resumed,
                to_first,
                to_resent,
            ])
        }));
    }
    ready.wait().await;
    tokio::time::sleep(Duration::from_millis(args.resume_idle_ms)).await;
    go.wait().await;
    dropped.wait().await;
    if args.resume_quiet {
        let (count, changed) = &*settled;
        let all = async {
            loop {
                let notified = changed.notified();
                if count.load(std::sync::atomic::Ordering::Acquire) >= n {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(PATIENCE, all).await;
    }
    let away_from = clock.elapsed();
    // For lining the burst up with the services' logs and a CPU sampler's record.
    if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        eprintln!("dropped at {} ms (Unix time)", d.as_millis());
    }
    let mut sending = Vec::with_capacity(SENDERS);
    for (s, (reader, mut writer)) in senders.into_iter().enumerate() {
        let (args, away_run) = (args.clone(), away_run.clone());
        let to: Vec<String> = (s..n).step_by(SENDERS).map(user).collect();
        sending.push(tokio::spawn(async move {
            for name in to {
                let us = u64::try_from(clock.elapsed().as_micros()).unwrap_or(u64::MAX);
                writer
                    .send_chat(&format!("{name}@{}/bench", args.domain), &away_run, us)
                    .await?;
            }
            Ok::<_, anyhow::Error>((reader, writer))
        }));
    }
    let mut senders = Vec::with_capacity(SENDERS);
    for s in sending {
        senders.push(s.await??);
    }
    let away_secs = (clock.elapsed() - away_from).as_secs_f64();

    let mut phases = [
        histogram(),
        histogram(),
        histogram(),
        histogram(),
        histogram(),
    ];
    let mut failed = 0;
    for t in tasks {
        match t.await? {
            Ok(timings) => {
                let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
                for (h, d) in phases.iter_mut().zip(timings) {
                    h.record(us(d))?;
                }
            }
            Err(e) => {
                if failed == 0 {
                    eprintln!("first failure: {e:#}");
                }
                failed += 1;
            }
        }
    }
    for (_, mut writer) in senders {
        let _ = writer.close().await;
    }
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let max = |h: &Histogram<u64>| h.max() as f64 / 1000.0;
    let [secure, authenticated, to_resumed, to_first, to_resent] = &phases;
    let line = |h: &Histogram<u64>| {
        format!(
            "p50 {:.1} / p99 {:.1} / max {:.1} ms",
            ms(h, 0.5),
            ms(h, 0.99),
            max(h)
        )
    };
    println!(
        "resume burst ({}, resumed at {}{}{}{}): {n} users dropped at once, resumed {}  failed {failed} (the {n} messages sent in {:.1} ms after the drop); from the drop until: TLS up {}; SASL done {}; <resumed/> {}; first stanza sent while away {}{}",
        if args.scram { "SCRAM-SHA-256 with the salted password kept" } else { "PLAIN" },
        resume_at,
        if args.resume_rtt_ms > 0 {
            format!(", through a {} ms round trip", args.resume_rtt_ms)
        } else {
            String::new()
        },
        match (args.resume_direct_tls, args.resume_sasl2) {
            (true, true) => ", direct TLS, SASL2 inline",
            (true, false) => ", direct TLS",
            (false, true) => ", SASL2 inline",
            (false, false) => "",
        },
        if args.resume_quiet {
            ", the messages sent once all resumed"
        } else {
            ""
        },
        to_first.len(),
        away_secs * 1000.0,
        line(secure),
        line(authenticated),
        line(to_resumed),
        line(to_first),
        if args.resume_unacked {
            format!("; the unacknowledged stanza again {}", line(to_resent))
        } else {
            String::new()
        },
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "workload": "resume-burst", "users": n, "resumed": to_first.len(),
                "failed": failed, "scram": args.scram,
                "tls_p50_ms": ms(secure, 0.5), "tls_p99_ms": ms(secure, 0.99),
                "sasl_p50_ms": ms(authenticated, 0.5), "sasl_p99_ms": ms(authenticated, 0.99),
                "resumed_p50_ms": ms(to_resumed, 0.5), "resumed_p99_ms": ms(to_resumed, 0.99),
                "resumed_max_ms": max(to_resumed),
                "first_p50_ms": ms(to_first, 0.5), "first_p99_ms": ms(to_first, 0.99),
                "first_max_ms": max(to_first),
                "resent_p50_ms": args.resume_unacked.then(|| ms(to_resent, 0.5)),
                "resent_p99_ms": args.resume_unacked.then(|| ms(to_resent, 0.99)),
                "resent_max_ms": args.resume_unacked.then(|| max(to_resent)),
            })
        );
    }
    Ok(())
}

/// Counts a user's resumption as ended when dropped (resumed, or failed on the way).
struct Settled(Arc<(std::sync::atomic::AtomicUsize, tokio::sync::Notify)>);

impl Drop for Settled {
    fn drop(&mut self) {
        self.0 .0.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.0 .1.notify_waiters();
    }
}

/// A resumption id without the DC and gateway it names (docs/stream-management.md), as a
/// gateway of wire 1.8 gave it: the 16-byte secret and the full JID.
fn unnamed(id: &str) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let Ok(raw) = b64.decode(id) else {
        return id.to_owned();
    };
    let end = raw
        .iter()
        .skip(16)
        .position(|b| *b == 0)
        .map_or(raw.len(), |at| 16 + at);
    b64.encode(&raw[..end])
}
