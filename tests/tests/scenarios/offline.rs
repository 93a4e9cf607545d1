//! Offline storage racing an initial presence: a message stored while its recipient's
//! first presence is being handled must still reach that session, not wait for the next login;
//! a backlog larger than what may wait for a session reaches it whole.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::num::NonZeroU32;
use std::time::Duration;

use meerkat_testkit::client::Client;
use meerkat_testkit::stack::{Dc, StackOptions};
use meerkat_xmpp::{ns, Element};

use crate::{online, user};

/// Messages per round, and the pause between two of them: fast enough that, in most rounds,
/// one of them is stored while the router handles the recipient's initial presence (before the
/// fix, about one round in five left a message stored until the next login).
const MESSAGES: usize = 600;
const PACE: Duration = Duration::from_micros(500);
const ROUNDS: usize = 10;

#[tokio::test]
async fn messages_sent_while_the_recipient_comes_online_all_arrive_in_that_session() {
    // The sender goes at the test's pace, not at the 50 stanzas per second a client gets by
    // default (past its burst of 200, that made each round last 8 s and spread the messages
    // 20 ms apart, thinner than the race this test is after).
    let dc = Dc::start(StackOptions {
        gateway: Some(c2s_gateway::Config {
            client_stanzas_per_sec: NonZeroU32::new(10_000).unwrap(),
            client_burst_stanzas: NonZeroU32::new(MESSAGES as u32).unwrap(),
            client_bytes_per_sec: NonZeroU32::new(10_000_000).unwrap(),
            ..c2s_gateway::Config::default()
        }),
        ..StackOptions::default()
    })
    .await
    .unwrap();
    for round in 0..ROUNDS {
        let (a, b) = (user("sa"), user("sb"));
        let mut alice = online(&dc, &a, "phone").await;
        Client::register_account(&dc.client(), &b, "secret-pw")
            .await
            .unwrap();
        let bob_bare = format!("{b}@example.com");

        // Alice keeps writing to Bob's bare JID while Bob logs in and becomes available:
        // the first messages are stored offline, the last delivered live, and some are routed
        // while his initial presence is being handled.
        let send = async {
            for i in 0..MESSAGES {
                alice
                    .send_message(&bob_bare, &format!("m{i}"))
                    .await
                    .unwrap();
                tokio::time::sleep(PACE).await;
            }
        };
        let receive = async {
            tokio::time::sleep(PACE * (MESSAGES as u32) / 3).await;
            let mut bob = Client::login(&dc.client(), &b, "secret-pw", Some("desk"))
                .await
                .unwrap();
            bob.send_presence().await.unwrap();
            let mut seen = BTreeSet::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while seen.len() < MESSAGES {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let Ok(el) = bob.next(left).await else { break };
                if let Some(body) = el.child_text("body", ns::CLIENT) {
                    assert!(seen.insert(body.clone()), "round {round}: {body} twice");
                }
            }
            seen
        };
        let ((), seen) = tokio::join!(send, receive);
        let missing: Vec<String> = (0..MESSAGES)
            .map(|i| format!("m{i}"))
            .filter(|m| !seen.contains(m))
            .collect();
        assert!(
            missing.is_empty(),
            "round {round}: {} of {MESSAGES} messages not delivered to the new session: {missing:?}",
            missing.len()
        );
    }
    dc.stop().await.unwrap();
}

/// A login's offline backlog many times what may wait for one session (`max_queued_bytes`)
/// arrives whole and in order, even when it comes while the session is busy with its client's
/// own stanzas: it is taken at the pace the session writes, not counted against the cap at
/// once. Before that, a backlog that came while the session waited for the broker (on its
/// presence, here on the client's burst of messages) ended it with `<policy-violation/>`, and
/// the backlog went back to storage until the next login.
#[tokio::test]
async fn an_offline_backlog_many_times_the_sessions_cap_arrives_whole_while_it_is_busy() {
    backlog_at_login(false).await;
}

/// The same backlog to a client with stream management that acknowledges when asked: the
/// session writes no more while half of what it may keep is unacknowledged, and goes on as
/// the acks come. Before that, the gateway wrote the backlog at the socket's pace, faster than
/// any ack came back, and cut the client for not acknowledging (`<policy-violation/>`) after
/// 9 of 60.
#[tokio::test]
async fn an_offline_backlog_many_times_the_cap_reaches_a_client_acknowledging_as_asked() {
    backlog_at_login(true).await;
}

async fn backlog_at_login(sm: bool) {
    const BACKLOG: usize = 60;
    let dc = Dc::start(StackOptions {
        max_stanza_bytes: 16 * 1024,
        gateway: Some(c2s_gateway::Config {
            max_queued_bytes: 32 * 1024,
            client_stanzas_per_sec: NonZeroU32::new(10_000).unwrap(),
            client_burst_stanzas: NonZeroU32::new(1_000).unwrap(),
            client_bytes_per_sec: NonZeroU32::new(10_000_000).unwrap(),
            ..c2s_gateway::Config::default()
        }),
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let (a, b) = (user("ba"), user("bb"));
    let mut alice = online(&dc, &a, "phone").await;
    Client::register_account(&dc.client(), &b, "secret-pw")
        .await
        .unwrap();
    let bob_bare = format!("{b}@example.com");
    // About six times the cap, stored while Bob is away.
    let padding = "x".repeat(3000);
    let sent: Vec<String> = (0..BACKLOG).map(|i| format!("{i:02} {padding}")).collect();
    for body in &sent {
        alice.send_message(&bob_bare, body).await.unwrap();
    }
    // Stored: an iq to Bob's account is answered once the router has handled what Alice sent
    // before it (each sender's stanzas in order).
    alice
        .iq(
            "get",
            Some(&bob_bare),
            Element::new("query", ns::DISCO_INFO),
        )
        .await
        .unwrap();

    let mut bob = Client::login(&dc.client(), &b, "secret-pw", Some("desk"))
        .await
        .unwrap();
    if sm {
        bob.enable_sm(None).await.unwrap();
    }
    // Initial presence and, at once, a burst of his own: the session publishes them one after
    // another while the backlog comes.
    let mut burst = String::from("<presence/>");
    for i in 0..100 {
        burst.push_str(&format!(
            "<message to='{a}@example.com' type='chat'><body>b{i}</body></message>"
        ));
    }
    bob.send_raw(&burst).await.unwrap();
    let mut got = Vec::new();
    let mut handled = 0u32;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while got.len() < BACKLOG {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match bob.next(left).await {
            Ok(el) if el.is("r", ns::SM) => bob.sm_ack(handled).await.unwrap(),
            Ok(el) => {
                handled += 1;
                got.extend(el.child_text("body", ns::CLIENT));
            }
            Err(e) => panic!("{} of {BACKLOG} arrived, then: {e}", got.len()),
        }
    }
    assert_eq!(got, sent, "the whole backlog, in order");
    assert!(
        bob.expect_stream_end_within(Duration::from_millis(300))
            .await
            .is_err(),
        "the session goes on"
    );
    dc.stop().await.unwrap();
}
