//! A service of one DC restarting while users at two DCs chat: the session replicator (the
//! directories must converge again and no stanza is lost or repeated) and a router (stanzas
//! wait in the durable queues and come out in order).
//!
//! Each user has a sending and a receiving resource, so traffic flows both ways at once:
//! alice/tx (dc1) → bob/rx (dc2) and bob/tx (dc2) → alice/rx (dc1).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use meerkat_testkit::client::Client;
use meerkat_testkit::multi::MultiDc;
use tokio::task::JoinHandle;

use crate::{available, multi, register, user, CONVERGE};

/// Pause between two messages of one sender.
const PACE: Duration = Duration::from_millis(10);

/// A client sending `<prefix><n>` for n = 0, 1, ... to `to` until stopped; yields how many.
fn sender(
    mut c: Client,
    to: String,
    prefix: &'static str,
    stop: Arc<AtomicBool>,
) -> JoinHandle<usize> {
    tokio::spawn(async move {
        let mut n = 0;
        while !stop.load(Ordering::Acquire) {
            c.send_message(&to, &format!("{prefix}{n}")).await.unwrap();
            n += 1;
            tokio::time::sleep(PACE).await;
        }
        // Keep the session until its stanzas are through: the stream ends when `c` drops.
        tokio::time::sleep(Duration::from_secs(1)).await;
        n
    })
}

/// Expects the messages `<prefix><from>..<prefix><to>` at `c`, exactly in that order.
async fn expect_run(c: &mut Client, prefix: &str, from: usize, to: usize) {
    for n in from..to {
        let got = c
            .expect("the next message", |e| {
                e.is("message", meerkat_xmpp::ns::CLIENT)
            })
            .await
            .unwrap();
        assert_eq!(
            got.child_text("body", meerkat_xmpp::ns::CLIENT),
            Some(format!("{prefix}{n}")),
            "at {}",
            c.jid()
        );
    }
}

/// Two users at two DCs, each with a sending and a receiving resource, directories converged.
struct Pair {
    m: MultiDc,
    alice_rx: Client,
    bob_rx: Client,
    stop: Arc<AtomicBool>,
    to_bob: JoinHandle<usize>,
    to_alice: JoinHandle<usize>,
}

async fn chatting_pair() -> Pair {
    let m = multi(2).await;
    let (a, b) = (user("a"), user("b"));
    register(m.dc(1), &a).await;
    register(m.dc(2), &b).await;
    let alice_rx = available(m.dc(1), &a, "rx").await;
    let alice_tx = available(m.dc(1), &a, "tx").await;
    let bob_rx = available(m.dc(2), &b, "rx").await;
    let bob_tx = available(m.dc(2), &b, "tx").await;
    m.wait_directory_sessions(4, CONVERGE).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let to_bob = sender(alice_tx, bob_rx.jid().to_owned(), "a", stop.clone());
    let to_alice = sender(bob_tx, alice_rx.jid().to_owned(), "b", stop.clone());
    Pair {
        m,
        alice_rx,
        bob_rx,
        stop,
        to_bob,
        to_alice,
    }
}

impl Pair {
    /// Both ways, the next messages after `from`, up to `to`.
    async fn expect_both(&mut self, from: usize, to: usize) {
        expect_run(&mut self.bob_rx, "a", from, to).await;
        expect_run(&mut self.alice_rx, "b", from, to).await;
    }

    /// Stops the senders; expects everything they sent after `from`, then nothing more.
    async fn finish(mut self, from: usize) -> MultiDc {
        self.stop.store(true, Ordering::Release);
        let to_bob = (&mut self.to_bob).await.unwrap();
        let to_alice = (&mut self.to_alice).await.unwrap();
        expect_run(&mut self.bob_rx, "a", from, to_bob).await;
        expect_run(&mut self.alice_rx, "b", from, to_alice).await;
        let any_message = |e: &meerkat_xmpp::Element| e.is("message", meerkat_xmpp::ns::CLIENT);
        self.bob_rx
            .expect_none(Duration::from_millis(500), any_message)
            .await
            .unwrap();
        self.alice_rx
            .expect_none(Duration::from_millis(100), any_message)
            .await
            .unwrap();
        self.m
    }
}

#[tokio::test]
async fn a_session_replicator_restart_loses_and_repeats_nothing() {
    let mut p = chatting_pair().await;
    p.expect_both(0, 20).await;

    // DC 1 applies a snapshot of DC 2's new life once that replicator has started.
    let dc1_replicator = p.m.dc(1).replicators[0].admin;
    let applied = r#"meerkat_replicator_snapshots_applied_total{dc="dc2"}"#;
    let before = crate::metric(dc1_replicator, applied).await;
    p.m.dc_mut(2).restart_replicator().await.unwrap();
    let deadline = tokio::time::Instant::now() + CONVERGE;
    while crate::metric(dc1_replicator, applied).await <= before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "dc1 applied no snapshot of dc2's new epoch"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The new epoch's snapshot closed nothing that is alive: both DCs hold all four sessions,
    // and the messages keep coming.
    p.m.wait_directory_sessions(4, CONVERGE).await.unwrap();
    p.expect_both(20, 40).await;
    p.finish(40).await.stop().await.unwrap();
}

#[tokio::test]
async fn a_router_restart_during_cross_dc_chat_loses_nothing_and_keeps_order() {
    let mut p = chatting_pair().await;
    p.expect_both(0, 20).await;
    // DC 2's only router: it takes bob's stanzas for dc1 and dc1's stanzas for bob. While it
    // is gone both wait in DC 2's queues.
    p.m.dc_mut(2).restart_router(0).await.unwrap();
    p.expect_both(20, 40).await;
    // The new router rebuilt its directory: every session, local and remote.
    p.m.wait_directory_sessions(4, CONVERGE).await.unwrap();
    p.finish(40).await.stop().await.unwrap();
}
