//! Persistent-data replication, measured as a user sees it: an account registered in-band at
//! DC 1 (XEP-0077) exists at DC 2 once a ping (XEP-0199) from DC 2 to its bare JID is answered
//! by the server with a result rather than an error (no such account).
//!
//! Lag: registrations one after another at DC 1; for each, the time from the registration's
//! answer until DC 2 first answers a ping to the new account (one ping in flight at a time).
//!
//! Catch-up: DC 2 is cut off (`--cut-off`, a shell command, e.g. pausing its replicator),
//! N accounts are registered at DC 1, DC 2 is reconnected (`--reconnect`); the time from the
//! reconnection until DC 2 has the last accounts written, then a check that it has all N.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use hdrhistogram::Histogram;
use tokio::sync::mpsc;

use crate::client::{BenchClient, Writer};

/// A registration not visible at DC 2 within this counts as failed (lag).
const GIVE_UP: Duration = Duration::from_secs(30);
/// Registrations in flight at once while DC 2 is cut off.
const WRITERS: usize = 16;
/// Pings in flight at once when checking many accounts.
const PIPELINE: usize = 200;

pub struct DataArgs<'a> {
    pub write_at: SocketAddr,
    pub probe_from: SocketAddr,
    pub domain: &'a str,
    pub prefix: &'a str,
    pub password: &'a str,
    pub run: &'a str,
}

/// A client at DC 2 that asks whether accounts exist there.
struct Prober {
    writer: Writer,
    answers: mpsc::UnboundedReceiver<(String, bool)>,
    next: u64,
}

impl Prober {
    async fn new(a: &DataArgs<'_>) -> anyhow::Result<Prober> {
        let user = format!("{}dataprobe", a.prefix);
        let client = BenchClient::login(a.probe_from, a.domain, &user, a.password, true)
            .await
            .context("probe login at the second DC")?;
        let (mut reader, writer) = client.split();
        let (tx, answers) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(answer) = reader.next_iq_answer().await {
                if tx.send(answer).is_err() {
                    break;
                }
            }
        });
        Ok(Prober {
            writer,
            answers,
            next: 0,
        })
    }

    /// Which of `users` exist at DC 2 now (pings pipelined).
    async fn exist(&mut self, users: &[String], domain: &str) -> anyhow::Result<Vec<bool>> {
        let mut out = vec![false; users.len()];
        for (c, chunk) in users.chunks(PIPELINE).enumerate() {
            let base = self.next;
            self.next += chunk.len() as u64;
            for (k, u) in chunk.iter().enumerate() {
                let id = format!("dp{}", base + k as u64);
                self.writer.send_ping(&format!("{u}@{domain}"), &id).await?;
            }
            let mut left = chunk.len();
            while left > 0 {
                let (id, ok) = tokio::time::timeout(GIVE_UP, self.answers.recv())
                    .await
                    .context("no answer to a ping from the second DC")?
                    .context("the probe's stream at the second DC closed")?;
                let Some(n) = id.strip_prefix("dp").and_then(|n| n.parse::<u64>().ok()) else {
                    continue;
                };
                if (base..self.next).contains(&n) {
                    out[c * PIPELINE + (n - base) as usize] = ok;
                    left -= 1;
                }
            }
        }
        Ok(out)
    }

    /// Polls until every one of `users` exists at DC 2, or `give_up` passes (false).
    async fn wait_all(
        &mut self,
        users: &[String],
        domain: &str,
        give_up: Duration,
    ) -> anyhow::Result<bool> {
        let deadline = Instant::now() + give_up;
        loop {
            if self.exist(users, domain).await?.iter().all(|x| *x) {
                return Ok(true);
            }
            if Instant::now() > deadline {
                return Ok(false);
            }
        }
    }
}

async fn register(a: &DataArgs<'_>, user: &str) -> anyhow::Result<()> {
    if !BenchClient::register(a.write_at, a.domain, user, a.password).await? {
        bail!("{user}: registration refused at the first DC");
    }
    Ok(())
}

/// Lag in µs over `n` registrations, and how many never showed up within [`GIVE_UP`].
pub async fn lag(a: &DataArgs<'_>, n: usize) -> anyhow::Result<(Histogram<u64>, usize)> {
    let mut probe = Prober::new(a).await?;
    let mut h = Histogram::new_with_bounds(1, 60_000_000, 3)?;
    let mut failed = 0;
    for i in 0..n {
        let user = format!("{}dl{}x{i}", a.prefix, a.run);
        register(a, &user).await?;
        let written = Instant::now();
        let users = [user];
        if probe.wait_all(&users, a.domain, GIVE_UP).await? {
            h.record(u64::try_from(written.elapsed().as_micros())?.max(1))?;
        } else {
            failed += 1;
        }
    }
    Ok((h, failed))
}

pub struct CatchUp {
    /// Registering the N accounts at DC 1 while DC 2 was cut off.
    pub write: Duration,
    /// From the reconnection until the last accounts written were at DC 2.
    pub catch_up: Duration,
    /// Accounts missing at DC 2 after that (should be 0).
    pub missing: usize,
}

fn shell(cmd: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("sh")
        .args(["-c", cmd])
        .status()
        .with_context(|| format!("running {cmd:?}"))?;
    anyhow::ensure!(status.success(), "{cmd:?} failed: {status}");
    Ok(())
}

pub async fn catch_up(
    a: &DataArgs<'_>,
    n: usize,
    cut_off: &str,
    reconnect: &str,
) -> anyhow::Result<CatchUp> {
    let mut probe = Prober::new(a).await?;
    let users: Vec<String> = (0..n)
        .map(|i| format!("{}dc{}x{i}", a.prefix, a.run))
        .collect();
    shell(cut_off)?;
    let started = Instant::now();
    // WRITERS registrations in flight; `done` in the order they were answered.
    let mut done = Vec::with_capacity(n);
    let written: anyhow::Result<()> = async {
        let mut pending = users.iter();
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            while tasks.len() < WRITERS {
                let Some(u) = pending.next() else { break };
                let (addr, domain, user, pw) = (
                    a.write_at,
                    a.domain.to_owned(),
                    u.clone(),
                    a.password.to_owned(),
                );
                tasks.spawn(async move {
                    let ok = BenchClient::register(addr, &domain, &user, &pw).await?;
                    anyhow::ensure!(ok, "{user}: registration refused at the first DC");
                    Ok(user)
                });
            }
            match tasks.join_next().await {
                Some(r) => done.push(r??),
                None => return Ok(()),
            }
        }
    }
    .await;
    let write = started.elapsed();
    // Reconnect whatever happened, so a failed run does not leave DC 2 cut off.
    shell(reconnect)?;
    let reconnected = Instant::now();
    written?;
    // The last accounts answered include the last one written (at most WRITERS were in
    // flight); DC 2 applies DC 1's changes in order, so once they are there, all should be.
    let last = &done[done.len().saturating_sub(WRITERS)..];
    if !probe
        .wait_all(last, a.domain, Duration::from_secs(600))
        .await?
    {
        bail!("DC 2 did not catch up within 600 s");
    }
    let catch_up = reconnected.elapsed();
    let missing = probe
        .exist(&users, a.domain)
        .await?
        .iter()
        .filter(|x| !**x)
        .count();
    Ok(CatchUp {
        write,
        catch_up,
        missing,
    })
}
