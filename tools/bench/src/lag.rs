//! Session replication lag, measured as a user sees it: clients at DC 2 keep pinging
//! (XEP-0199) a full JID that does not exist yet; a client logs in with that full JID at DC 1;
//! the lag is the time from the end of its resource binding until the first ping reaches it
//! (DC 2 learned of the session and routed to it). Until then DC 2 answers each ping with an
//! error (no such session).
//!
//! Each DC 2 client has at most one ping in flight (the next waits for the error), so pings
//! never queue up behind each other and inflate the figure; a few clients take turns, one
//! ping per millisecond in all.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use hdrhistogram::Histogram;
use tokio::sync::mpsc;

use crate::client::{BenchClient, Writer};

/// Between two pings (of all DC 2 clients together).
const PROBE_INTERVAL: Duration = Duration::from_millis(1);
/// DC 2 clients taking turns at pinging.
const PROBES: usize = 4;
/// A login whose session has not been reached within this is counted as failed.
const GIVE_UP: Duration = Duration::from_secs(10);

pub struct LagArgs<'a> {
    pub login_at: SocketAddr,
    pub probe_from: SocketAddr,
    pub domain: &'a str,
    pub prefix: &'a str,
    pub password: &'a str,
    pub run: &'a str,
    pub logins: usize,
}

/// Lag figures in µs: until a ping arrived, and until the first ping that got through was
/// sent (a lower bound: routing at DC 2 happened between the two).
pub struct Lag {
    pub arrived: Histogram<u64>,
    pub sent: Histogram<u64>,
    pub failed: usize,
}

/// One DC 2 client: its writer and the id of its ping awaiting an answer.
struct Probe {
    writer: Writer,
    in_flight: Option<String>,
}

pub async fn measure(a: &LagArgs<'_>) -> anyhow::Result<Lag> {
    let clock = Instant::now();
    let us = move || u64::try_from(clock.elapsed().as_micros()).unwrap_or(u64::MAX);
    // Answers to the pings: (client, iq id), from a reader task per client.
    let (answers_tx, mut answers) = mpsc::unbounded_channel::<(usize, String)>();
    let mut probes = Vec::with_capacity(PROBES);
    for k in 0..PROBES {
        let user = format!("{}probe{k}", a.prefix);
        let client = BenchClient::login(a.probe_from, a.domain, &user, a.password, true)
            .await
            .context("probe login at the second DC")?;
        let (mut reader, writer) = client.split();
        let tx = answers_tx.clone();
        tokio::spawn(async move {
            while let Some(id) = reader.next_iq_reply().await {
                if tx.send((k, id)).is_err() {
                    break;
                }
            }
        });
        probes.push(Probe {
            writer,
            in_flight: None,
        });
    }
    let mut lag = Lag {
        arrived: Histogram::new_with_bounds(1, 60_000_000, 3)?,
        sent: Histogram::new_with_bounds(1, 60_000_000, 3)?,
        failed: 0,
    };
    let prefix = format!("lag-{}-", a.run);
    let mut turn = 0usize;
    for i in 0..a.logins {
        let user = format!("{}lag{i}", a.prefix);
        let resource = format!("{prefix}{i}");
        let target = format!("{user}@{}/{resource}", a.domain);
        let client =
            BenchClient::login_as(a.login_at, a.domain, &user, a.password, true, &resource)
                .await
                .with_context(|| format!("{user}: login at the first DC"))?;
        let bound = us();
        let (mut reader, mut writer) = client.split();
        let wanted = prefix.clone();
        let mut arrival =
            tokio::spawn(async move { (reader.next_iq_request(&wanted).await, us()) });
        // Pings of the previous login may still be answered: they are not awaited any more.
        for p in &mut probes {
            p.in_flight = None;
        }
        let mut tick = tokio::time::interval(PROBE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let deadline = tokio::time::Instant::now() + GIVE_UP;
        let got = loop {
            tokio::select! {
                done = &mut arrival => break Some(done?),
                Some((k, id)) = answers.recv() => {
                    if probes[k].in_flight.as_deref() == Some(id.as_str()) {
                        probes[k].in_flight = None;
                    }
                }
                _ = tick.tick() => {
                    if tokio::time::Instant::now() > deadline {
                        arrival.abort();
                        break None;
                    }
                    turn = (turn + 1) % PROBES;
                    let p = &mut probes[turn];
                    if p.in_flight.is_none() {
                        let id = format!("{prefix}{}", us());
                        p.writer.send_ping(&target, &id).await?;
                        p.in_flight = Some(id);
                    }
                }
            }
        };
        match got {
            Some((Some(sent_us), at)) => {
                lag.arrived.record(at.saturating_sub(bound).max(1))?;
                lag.sent.record(sent_us.saturating_sub(bound).max(1))?;
            }
            Some((None, _)) => bail!("{target}: stream closed before any ping arrived"),
            None => lag.failed += 1,
        }
        let _ = writer.close().await;
    }
    for mut p in probes {
        let _ = p.writer.close().await;
    }
    Ok(lag)
}
