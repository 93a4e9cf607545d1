//! Per-session rate limits (issue 13): a client that floods is slowed down — the gateway stops
//! reading its socket while it is over its byte or stanza rate — and is not cut off; other
//! users of the same gateway are not affected.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use meerkat_testkit::client::Client;
use meerkat_testkit::stack::{Dc, StackOptions};
use meerkat_xmpp::{ns, Element};

use crate::{online, user};

/// The "on time" bound for another user's delivery (generous: the test machine is shared).
const ON_TIME: Duration = Duration::from_secs(2);

fn nz32(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

fn body(el: &Element) -> Option<String> {
    (el.name() == "message")
        .then(|| el.child_text("body", ns::CLIENT))
        .flatten()
}

async fn available(dc: &Dc, name: &str) -> Client {
    let mut c = online(dc, name, "desk").await;
    c.send_presence().await.unwrap();
    c
}

/// `count` messages with bodies of `body_len` bytes sent at once by one client: returns how
/// long they took to arrive. Meanwhile another user gets a message every 100 ms, each on time.
async fn flood(gateway: c2s_gateway::Config, count: usize, body_len: usize) -> Duration {
    let dc = Dc::start(StackOptions {
        gateway: Some(gateway),
        ..StackOptions::default()
    })
    .await
    .expect("start DC");
    let (f, r, b, c) = (user("flood"), user("recv"), user("bob"), user("carol"));
    let mut flooder = available(&dc, &f).await;
    let mut receiver = available(&dc, &r).await;
    let mut bob = available(&dc, &b).await;
    let mut carol = available(&dc, &c).await;
    let receiver_jid = receiver.bare_jid().to_owned();
    let bob_jid = bob.bare_jid().to_owned();

    let padding = "x".repeat(body_len);
    let started = Instant::now();
    // All written at once: what the gateway does not read yet waits in the sockets.
    let sending = tokio::spawn(async move {
        for i in 0..count {
            flooder
                .send_message(&receiver_jid, &format!("{i} {padding}"))
                .await
                .unwrap();
        }
        flooder
    });
    let receiving = tokio::spawn(async move {
        for i in 0..count {
            let el = receiver
                .expect_within(Duration::from_secs(120), "flooded message", |el| {
                    body(el).is_some()
                })
                .await
                .unwrap();
            let n: usize = body(&el)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(n, i, "the flood arrives in order");
        }
        (started.elapsed(), receiver)
    });

    let mut worst = Duration::ZERO;
    let mut i = 0;
    while !receiving.is_finished() {
        let sent = Instant::now();
        carol
            .send_message(&bob_jid, &format!("ping {i}"))
            .await
            .unwrap();
        let want = format!("ping {i}");
        bob.expect_within(Duration::from_secs(30), "ping", |el| {
            body(el).as_deref() == Some(want.as_str())
        })
        .await
        .unwrap();
        worst = worst.max(sent.elapsed());
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (took, mut receiver) = receiving.await.unwrap();
    let mut flooder = sending.await.unwrap();
    eprintln!(
        "flood of {count} x {body_len} B: arrived in {took:?}; {i} deliveries to another user \
         meanwhile, slowest {worst:?}"
    );
    assert!(worst < ON_TIME, "another user's delivery took {worst:?}");

    // Slowed, not cut off: the flooder's session still works.
    let to = receiver.bare_jid().to_owned();
    flooder.send_message(&to, "still here").await.unwrap();
    receiver
        .expect_within(Duration::from_secs(30), "after the flood", |el| {
            body(el).as_deref() == Some("still here")
        })
        .await
        .unwrap();
    let url = format!("http://{}/metrics", dc.gateways[0].admin);
    let metrics = reqwest::get(&url).await.unwrap().text().await.unwrap();
    let throttled: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("meerkat_gateway_throttled_total "))
        .map_or(0, |v| v.trim().parse().unwrap());
    eprintln!("reading paused {throttled} times");
    assert!(throttled > 0, "the gateway never paused reading");
    dc.stop().await.unwrap();
    took
}

#[tokio::test]
async fn a_client_over_its_stanza_rate_is_slowed_and_others_are_not() {
    // 5 at once, then 20 per second: 60 stanzas need at least (60 - 5 - 1) / 20 = 2.7 s (the
    // debt of the last one is paid after it is passed on).
    let took = flood(
        c2s_gateway::Config {
            client_stanzas_per_sec: nz32(20),
            client_burst_stanzas: nz32(5),
            ..c2s_gateway::Config::default()
        },
        60,
        10,
    )
    .await;
    assert!(took >= Duration::from_millis(2500), "not slowed: {took:?}");
}

#[tokio::test]
async fn a_client_over_its_byte_rate_is_slowed_and_others_are_not() {
    // 10 kB at once, then 10 kB/s: 12 messages of about 4.1 kB need at least
    // (49 - 10 - 4) / 10 = 3.5 s (the debt of the last one is paid after it is passed on).
    let took = flood(
        c2s_gateway::Config {
            client_bytes_per_sec: nz32(10_000),
            client_burst_bytes: nz32(10_000),
            ..c2s_gateway::Config::default()
        },
        12,
        4000,
    )
    .await;
    assert!(took >= Duration::from_secs(3), "not slowed: {took:?}");
}
