//! A kill round: Alice at DC 1 and Bob at DC 2 are mutual contacts and Alice writes to Bob's
//! bare JID throughout. DC 2 dies (every service killed, its links cut). Measured: until DC 1's
//! health service declares it down, until Alice is told Bob is gone, and, once Bob's device
//! has reconnected at DC 1, until messages reach him again and until every message sent to
//! him has. Then DC 2 comes back (links healed, services started again: a new life) and Bob
//! stays connected a little longer, so a message delivered twice would show.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use meerkat_testkit::multi::MultiDc;

use super::chat::{self, Actor, Event, Log, Seen, Sending, Tally};
use super::{probe, Ctx, CONVERGE, QUIET, SETTLED, TOLD};

/// Connections, as the event log names them.
const ALICE: usize = 0;
const BOB_AT_DC2: usize = 1;
const BOB_AT_DC1: usize = 2;

pub struct KillRound {
    pub round: usize,
    /// Kill until DC 1's health service declared DC 2 down.
    pub detected: Duration,
    /// DC 2's last heartbeat at DC 1 until DC 1 declared it down (DC 1's metric).
    pub silence: Option<Duration>,
    /// Kill until Alice got Bob's unavailable presence.
    pub told: Duration,
    /// Bob's reconnection at DC 1 (login started) until his first message there.
    pub first_message: Duration,
    /// Bob's reconnection until every message sent to him so far (and until he was back) had
    /// arrived; `None` if some never did.
    pub all_messages: Option<Duration>,
    /// The longest sent-to-delivered time of the messages sent once he was back.
    pub latency_back: Option<Duration>,
    pub sent: usize,
    pub lost: usize,
    pub duplicates: usize,
    /// Which messages came twice, and where (see [`Tally::duplicate_detail`]).
    pub duplicate_detail: String,
    /// Copies received after DC 2 came back.
    pub after_return: usize,
    pub bounced: usize,
}

pub async fn round(m: &mut MultiDc, ctx: &Ctx, n: usize) -> anyhow::Result<KillRound> {
    let tag = format!("{}k{n}", ctx.run);
    let (a, b) = (format!("alice{tag}"), format!("bob{tag}"));
    chat::account(m.dc(1), &a, &ctx.password).await?;
    chat::account(m.dc(1), &b, &ctx.password).await?;
    let mut alice = chat::online(m.dc(1), &a, &ctx.password, "phone").await?;
    let mut bob = chat::online(m.dc(2), &b, &ctx.password, "car").await?;
    // Both available in every directory first: a subscription request to a contact a DC does
    // not yet know as available is kept for the contact's next login, not delivered now.
    probe::wait_available(m, &[alice.jid(), bob.jid()], CONVERGE).await?;
    if let Err(e) = chat::befriend(&mut alice, &mut bob).await {
        eprintln!("befriending failed: {e:#}; the brokers now:");
        probe::dump_brokers(m).await;
        return Err(e);
    }
    let bob_full = bob.jid().to_owned();
    let to = bob.bare_jid().to_owned();

    let (mut log, tx) = Log::new();
    let bob_dc2 = Actor::spawn(bob, BOB_AT_DC2, &tag, tx.clone(), None);
    let every = ctx.send_every;
    let alice = Actor::spawn(alice, ALICE, &tag, tx.clone(), Some(Sending { to, every }));
    tokio::time::sleep(Duration::from_secs(1)).await;

    let health1 = probe::health(m, 1)?;
    let kill_wall = probe::wall_ms();
    let killed = Instant::now();
    m.kill_dc(2);
    let down = tokio::spawn(probe::wait_peer_state(health1, "dc2".into(), "down", TOLD));
    let told = log
        .wait(TOLD, |e| is_gone(e, ALICE, &bob_full))
        .await
        .context("Alice was not told that Bob is gone")?;
    let down_since = down.await.context("health probe")??;
    let silence = probe::dc_metric(health1, "meerkat_health_detection_seconds", "dc2")
        .await
        .map(Duration::from_secs_f64);

    // Bob's device reconnects at DC 1.
    let reconnect = Instant::now();
    let bob = chat::online(m.dc(1), &b, &ctx.password, "car").await?;
    let back = Instant::now();
    let bob_dc1 = Actor::spawn(bob, BOB_AT_DC1, &tag, tx.clone(), None);
    tokio::time::sleep(Duration::from_secs(2)).await;
    alice.stop_sending();
    // Let the last send be reported before waiting for what was sent.
    tokio::time::sleep(every).await;
    let all_in = log.wait_all_received(SETTLED).await;
    tokio::time::sleep(QUIET).await;

    // DC 2 returns with a new life; a copy of anything from its previous life would show now.
    let returned = Instant::now();
    m.links.heal();
    m.dc_mut(2).revive().await.context("reviving DC 2")?;
    m.wait_inter_bindings().await?;
    probe::wait_peer_state(health1, "dc2".into(), "up", CONVERGE).await?;
    tokio::time::sleep(QUIET).await;
    alice.finish().await?;
    bob_dc1.finish().await?;
    bob_dc2.finish().await?;
    m.wait_directory_sessions(0, CONVERGE).await?;
    // The next round starts from a whole mesh.
    m.wait_links_running().await?;

    log.drain();
    let tally = Tally::of(&log.events);
    let first = tally
        .first_on(BOB_AT_DC1)
        .context("nothing reached Bob at DC 1")?;
    Ok(KillRound {
        round: n,
        detected: Duration::from_millis(down_since.saturating_sub(kill_wall)),
        silence,
        told: told - killed,
        first_message: first - reconnect,
        all_messages: all_in.map(|t| t.saturating_duration_since(reconnect)),
        latency_back: tally.max_latency_sent_after(back),
        sent: tally.sent.len(),
        lost: tally.missing().len(),
        duplicates: tally.duplicates(),
        duplicate_detail: tally.duplicate_detail(killed),
        after_return: tally.received_after(returned),
        bounced: Tally::bounced(&log.events),
    })
}

/// `conn` got unavailable presence from `jid`.
pub fn is_gone(e: &Event, conn: usize, jid: &str) -> bool {
    matches!(&e.seen, Seen::Presence { conn: c, from, available: false } if *c == conn && from == jid)
}
