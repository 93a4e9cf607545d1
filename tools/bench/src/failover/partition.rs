//! A partition round: Alice at DC 1 and Bob at DC 2 are mutual contacts and Alice writes to
//! Bob's bare JID throughout. The links between the DCs are cut; each side declares the other
//! down and tells its users. Bob's device reconnects on Alice's side under the same full JID
//! while its old connection to DC 2 stays open. The links heal. Measured: until each side is
//! told, and from the heal until the DCs see each other up again, until one of Bob's two
//! sessions ends with a `conflict` (one session per full JID), and until every router's
//! directory holds the two sessions left (Alice and Bob's survivor).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use meerkat_testkit::multi::MultiDc;

use super::chat::{self, Actor, Log, Seen, Sending, Tally};
use super::kill::is_gone;
use super::{probe, Ctx, CONVERGE, QUIET, SETTLED, TOLD};

const ALICE: usize = 0;
const BOB_AT_DC2: usize = 1;
const BOB_AT_DC1: usize = 2;

/// How long the directories must hold still to count as converged.
const HOLD: Duration = Duration::from_secs(1);

pub struct PartitionRound {
    pub round: usize,
    /// Cut until DC 1 declared DC 2 down, and DC 2 DC 1.
    pub detected: [Duration; 2],
    /// Cut until Alice (DC 1) was told Bob is gone, and Bob (DC 2) Alice.
    pub told: [Duration; 2],
    /// Heal until each side's health service saw the other up again (the later of the two).
    pub up_again: Duration,
    /// Heal until one of Bob's two sessions was ended, and its condition.
    pub conflict: Duration,
    pub conflict_condition: Option<String>,
    /// Heal until every router's directory held the same two sessions, and kept them.
    pub converged: Duration,
    pub sent: usize,
    pub lost: usize,
    pub duplicates: usize,
    /// Which messages came twice, and where (see [`Tally::duplicate_detail`]).
    pub duplicate_detail: String,
    pub bounced: usize,
}

pub async fn round(m: &mut MultiDc, ctx: &Ctx, n: usize) -> anyhow::Result<PartitionRound> {
    let tag = format!("{}p{n}", ctx.run);
    let (a, b) = (format!("alice{tag}"), format!("bob{tag}"));
    chat::account(m.dc(1), &a, &ctx.password).await?;
    chat::account(m.dc(1), &b, &ctx.password).await?;
    let mut alice = chat::online(m.dc(1), &a, &ctx.password, "phone").await?;
    let mut bob = chat::online(m.dc(2), &b, &ctx.password, "desk").await?;
    // Both available in every directory first: a subscription request to a contact a DC does
    // not yet know as available is kept for the contact's next login, not delivered now.
    probe::wait_available(m, &[alice.jid(), bob.jid()], CONVERGE).await?;
    if let Err(e) = chat::befriend(&mut alice, &mut bob).await {
        eprintln!("befriending failed: {e:#}; the brokers now:");
        probe::dump_brokers(m).await;
        return Err(e);
    }
    let (alice_full, bob_full) = (alice.jid().to_owned(), bob.jid().to_owned());
    let to = bob.bare_jid().to_owned();

    let (mut log, tx) = Log::new();
    let bob_dc2 = Actor::spawn(bob, BOB_AT_DC2, &tag, tx.clone(), None);
    let every = ctx.send_every;
    let alice = Actor::spawn(alice, ALICE, &tag, tx.clone(), Some(Sending { to, every }));
    tokio::time::sleep(Duration::from_secs(1)).await;

    let (health1, health2) = (probe::health(m, 1)?, probe::health(m, 2)?);
    let cut_wall = probe::wall_ms();
    let cut = Instant::now();
    m.links.cut(1, 2);
    let down1 = tokio::spawn(probe::wait_peer_state(health1, "dc2".into(), "down", TOLD));
    let down2 = tokio::spawn(probe::wait_peer_state(health2, "dc1".into(), "down", TOLD));
    let told1 = log
        .wait(TOLD, |e| is_gone(e, ALICE, &bob_full))
        .await
        .context("Alice was not told that Bob is gone")?;
    let told2 = log
        .wait(TOLD, |e| is_gone(e, BOB_AT_DC2, &alice_full))
        .await
        .context("Bob was not told that Alice is gone")?;
    let detected = [
        down1.await.context("health probe")??,
        down2.await.context("health probe")??,
    ]
    .map(|since| Duration::from_millis(since.saturating_sub(cut_wall)));

    // Bob's device reconnects on Alice's side, its old connection still open.
    let bob = chat::online(m.dc(1), &b, &ctx.password, "desk").await?;
    let bob_dc1 = Actor::spawn(bob, BOB_AT_DC1, &tag, tx.clone(), None);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let heal_wall = probe::wall_ms();
    let healed = Instant::now();
    m.links.heal();
    let up1 = tokio::spawn(probe::wait_peer_state(health1, "dc2".into(), "up", SETTLED));
    let up2 = tokio::spawn(probe::wait_peer_state(health2, "dc1".into(), "up", SETTLED));
    let (ended, stable) = tokio::join!(
        log.wait(SETTLED, |e| matches!(e.seen, Seen::Ended { .. })),
        probe::wait_directories(m, 2, HOLD, SETTLED),
    );
    let ended = ended.context("neither of Bob's sessions ended after the heal")?;
    let stable = stable?;
    let up_since = up1.await.context("health probe")??.max(up2.await??);
    tokio::time::sleep(Duration::from_secs(1)).await;
    alice.stop_sending();
    tokio::time::sleep(every).await;
    log.wait_all_received(SETTLED).await;
    tokio::time::sleep(QUIET).await;
    alice.finish().await?;
    bob_dc1.finish().await?;
    bob_dc2.finish().await?;
    m.wait_directory_sessions(0, CONVERGE).await?;
    // The next round starts from a whole mesh.
    m.wait_links_running().await?;

    log.drain();
    let tally = Tally::of(&log.events);
    let conflict_condition = log.events.iter().find_map(|e| match &e.seen {
        Seen::Ended { condition, .. } => Some(condition.clone()),
        _ => None,
    });
    Ok(PartitionRound {
        round: n,
        detected,
        told: [told1 - cut, told2 - cut],
        up_again: Duration::from_millis(up_since.saturating_sub(heal_wall)),
        conflict: ended - healed,
        conflict_condition: conflict_condition.flatten(),
        converged: stable - healed,
        sent: tally.sent.len(),
        lost: tally.missing().len(),
        duplicates: tally.duplicates(),
        duplicate_detail: tally.duplicate_detail(cut),
        bounced: Tally::bounced(&log.events),
    })
}
