//! dc-health between two real federated DCs with every service (`meerkat_testkit::MultiDc`):
//! a DC whose health service dies is declared down within the bound and up again under a new
//! epoch when it returns; a restarted health service raises no false alarm; a gateway that
//! dies without a word has its sessions ended (contacts told, directories cleaned, what was
//! queued for them kept).

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, Consumer};
use meerkat_testkit::client::pred::{message_with_body, presence_of_type};
use meerkat_testkit::client::Client;
use meerkat_testkit::multi::MultiDc;
use meerkat_testkit::stack::{Dc, StackOptions};
use meerkat_testkit::timers::Timers;
use meerkat_wire::{topology as names, ControlEvent, DcState};
use meerkat_xmpp::{ns, Element};
use serde_json::Value;

/// The documented bound: a silent DC is declared down at most this long after its last beat
/// (production's timers, which the test of the bound keeps).
const BOUND: Duration = Duration::from_millis(5000);
const WAIT: Duration = Duration::from_secs(20);

async fn two_dcs(options: StackOptions) -> MultiDc {
    MultiDc::start(2, options).await.expect("start DCs")
}

fn health(dc: &Dc) -> SocketAddr {
    dc.health.first().expect("a health service").admin
}

async fn status(admin: SocketAddr) -> Value {
    reqwest::get(format!("http://{admin}/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// `peer` as `admin`'s health service sees it.
async fn peer(admin: SocketAddr, peer: &str) -> Value {
    let s = status(admin).await;
    s["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["dc"] == peer)
        .cloned()
        .unwrap_or_else(|| panic!("{peer} not in {s}"))
}

/// Polls `admin`'s view of `dc` until `pred` holds.
async fn wait_peer(
    admin: SocketAddr,
    dc: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let until = Instant::now() + WAIT;
    loop {
        let p = peer(admin, dc).await;
        if pred(&p) {
            return p;
        }
        assert!(Instant::now() < until, "{what}: not within {WAIT:?}: {p}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A metric's value from `admin`'s `/metrics`, by its line prefix (name and labels).
async fn metric(admin: SocketAddr, prefix: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
}

/// A queue of our own on a DC's `meerkat.control`: what its services are told.
struct ControlTap {
    _conn: Connection,
    consumer: Consumer,
}

impl ControlTap {
    async fn bind(dc: &Dc) -> ControlTap {
        let props = ConnectionProperties::default()
            .with_executor(tokio_executor_trait::Tokio::current())
            .with_reactor(tokio_reactor_trait::Tokio);
        let conn = Connection::connect(&dc.amqp_url, props).await.unwrap();
        let ch = conn.create_channel().await.unwrap();
        let q = ch
            .queue_declare(
                "",
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        ch.queue_bind(
            q.name().as_str(),
            names::CONTROL_EXCHANGE,
            "",
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let consumer = ch
            .basic_consume(
                q.name().as_str(),
                "test-tap",
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        ControlTap {
            _conn: conn,
            consumer,
        }
    }

    /// The next control event matching `pred` within `within`, if any.
    async fn next_matching(
        &mut self,
        within: Duration,
        pred: impl Fn(&ControlEvent) -> bool,
    ) -> Option<ControlEvent> {
        let until = tokio::time::Instant::now() + within;
        loop {
            let d = tokio::time::timeout_at(until, self.consumer.next())
                .await
                .ok()??
                .unwrap();
            let event = ControlEvent::from_json(&d.data).unwrap();
            if pred(&event) {
                return Some(event);
            }
        }
    }
}

fn dc_status<'a>(dc: &'a str, state: DcState) -> impl Fn(&ControlEvent) -> bool + 'a {
    move |e| matches!(e, ControlEvent::DcStatus { dc: d, state: s, .. } if d == dc && *s == state)
}

#[tokio::test]
async fn a_dc_whose_heartbeats_stop_is_down_within_the_bound_and_up_again_under_a_new_epoch() {
    // The one test on production's timers: it checks the bound a deployment promises.
    let mut m = two_dcs(StackOptions {
        timers: Timers::production(),
        ..StackOptions::default()
    })
    .await;
    assert_eq!(Timers::production().detection_bound(), BOUND);
    let (h1, h2) = (health(m.dc(1)), health(m.dc(2)));
    let first = wait_peer(h1, "dc2", "dc2 heard at dc1", |p| {
        p["state"] == "up" && p["epoch"].is_string()
    })
    .await;
    let old_epoch = status(h2).await["epoch"].as_str().unwrap().to_owned();
    assert_eq!(first["epoch"], old_epoch.as_str());
    wait_peer(h2, "dc1", "dc1 heard at dc2", |p| {
        p["state"] == "up" && p["epoch"].is_string()
    })
    .await;
    let mut tap = ControlTap::bind(m.dc(1)).await;

    // DC 2's health service dies without a word: its beats stop.
    let killed = Instant::now();
    m.dc_mut(2).kill_health();
    let down = tap
        .next_matching(WAIT, dc_status("dc2", DcState::Down))
        .await
        .expect("DcStatus down for dc2 on dc1's control exchange");
    let kill_to_down = killed.elapsed();
    let ControlEvent::DcStatus {
        epoch, reported_by, ..
    } = down
    else {
        unreachable!()
    };
    assert_eq!(epoch.as_deref(), Some(old_epoch.as_str()));
    assert_eq!(reported_by, "dc1-health");
    let p = peer(h1, "dc2").await;
    assert_eq!(p["state"], "down", "{p}");
    let detection = metric(h1, "meerkat_health_detection_seconds{dc=\"dc2\"}")
        .await
        .expect("detection time metric");
    println!(
        "measured detection: last heartbeat received -> down {detection:.3} s; \
         health service killed -> DcStatus down received {:.3} s (bound {:?})",
        kill_to_down.as_secs_f64(),
        BOUND
    );
    assert!(
        detection <= BOUND.as_secs_f64(),
        "declared down {detection} s after the last heartbeat"
    );
    // Suspect came first.
    assert_eq!(
        metric(
            h1,
            "meerkat_health_transitions_total{dc=\"dc2\",state=\"suspect\"}"
        )
        .await,
        Some(1.0)
    );

    // It comes back: up again, under a new epoch.
    m.dc_mut(2).start_health().await.unwrap();
    let new_epoch = status(health(m.dc(2))).await["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new_epoch, old_epoch);
    let up = tap
        .next_matching(WAIT, dc_status("dc2", DcState::Up))
        .await
        .expect("DcStatus up for dc2");
    let ControlEvent::DcStatus { epoch, .. } = up else {
        unreachable!()
    };
    assert_eq!(epoch.as_deref(), Some(new_epoch.as_str()));
    let p = peer(h1, "dc2").await;
    assert_eq!(
        (&p["state"], &p["epoch"]),
        (&Value::from("up"), &Value::from(new_epoch))
    );
    m.stop().await.unwrap();
}

#[tokio::test]
async fn a_restarted_health_service_raises_no_false_alarm() {
    let mut m = two_dcs(StackOptions::default()).await;
    let h1 = health(m.dc(1));
    wait_peer(h1, "dc2", "dc2 heard at dc1", |p| {
        p["state"] == "up" && p["epoch"].is_string()
    })
    .await;
    let mut tap = ControlTap::bind(m.dc(1)).await;

    // Killed, away for a while (half of `down_after_ms`: longer, and the other DCs would
    // rightly declare this DC down, its heartbeat having stopped), started again.
    let timers = m.dc(1).options.timers;
    m.dc_mut(1).kill_health();
    tokio::time::sleep(Duration::from_millis(timers.down_after_ms / 2)).await;
    m.dc_mut(1).start_health().await.unwrap();
    let h1 = health(m.dc(1));
    // Longer than the bound: had it judged dc2 by the time it was away, it would say so now.
    let alarm = tap
        .next_matching(
            timers.detection_bound() + Duration::from_secs(3),
            |e| matches!(e, ControlEvent::DcStatus { state, .. } if *state != DcState::Up),
        )
        .await;
    assert_eq!(alarm, None, "a false alarm after the restart");
    let p = peer(h1, "dc2").await;
    assert_eq!(p["state"], "up", "{p}");
    assert!(p["epoch"].is_string(), "dc2's beats heard again: {p}");
    m.stop().await.unwrap();
}

/// Mutual presence subscription between two clients of one DC.
async fn befriend(a: &mut Client, b: &mut Client) {
    subscribe(a, b).await;
    subscribe(b, a).await;
}

/// `x` asks to see `y`'s presence; `y` agrees.
async fn subscribe(x: &mut Client, y: &mut Client) {
    let (xj, yj) = (x.bare_jid().to_owned(), y.bare_jid().to_owned());
    x.send(&presence("subscribe", &yj)).await.unwrap();
    y.expect("subscribe", presence_of_type(&xj, Some("subscribe")))
        .await
        .unwrap();
    y.send(&presence("subscribed", &xj)).await.unwrap();
    x.expect("subscribed", presence_of_type(&yj, Some("subscribed")))
        .await
        .unwrap();
}

fn presence(kind: &str, to: &str) -> Element {
    Element::new("presence", ns::CLIENT)
        .with_attr("type", kind)
        .with_attr("to", to)
}

fn user(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// The gateway instance `jid`'s session is on, from the first router's directory of `dc`.
async fn gateway_of(dc: &Dc, jid: &str) -> Option<String> {
    let admin = dc.routers[0].admin;
    let dir: Value = reqwest::get(format!("http://{admin}/directory"))
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    dir["sessions"]
        .as_array()?
        .iter()
        .find(|s| s["jid"] == jid)
        .and_then(|s| s["gateway"].as_str())
        .map(str::to_owned)
}

async fn wait_gateway_of(dc: &Dc, jid: &str) -> String {
    let until = Instant::now() + WAIT;
    loop {
        if let Some(gw) = gateway_of(dc, jid).await {
            return gw;
        }
        assert!(Instant::now() < until, "{jid} not in the directory");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Logged in, available, on a gateway other than `avoid` (the gateways share the client port,
/// the kernel picks one per connection).
async fn online_elsewhere(dc: &Dc, name: &str, avoid: Option<&str>) -> (Client, String) {
    for _ in 0..30 {
        let mut c = Client::login(&dc.client(), name, "secret-pw", Some("desk"))
            .await
            .unwrap();
        c.iq_ok("get", None, Element::new("query", ns::ROSTER))
            .await
            .unwrap();
        c.send_presence().await.unwrap();
        let gw = wait_gateway_of(dc, c.jid()).await;
        if avoid != Some(gw.as_str()) {
            return (c, gw);
        }
        c.close().await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("every login of {name} landed on {avoid:?}");
}

#[tokio::test]
async fn a_gateway_that_dies_without_a_word_has_its_sessions_ended() {
    let mut m = two_dcs(StackOptions {
        gateways: 2,
        ..StackOptions::default()
    })
    .await;
    let (a, b) = (user("alice"), user("bob"));
    for name in [&a, &b] {
        Client::register_account(&m.dc(1).client(), name, "secret-pw")
            .await
            .unwrap();
    }
    let (mut bob, bob_gw) = online_elsewhere(m.dc(1), &b, None).await;
    let (mut alice, alice_gw) = online_elsewhere(m.dc(1), &a, Some(&bob_gw)).await;
    befriend(&mut alice, &mut bob).await;
    let alice_full = alice.jid().to_owned();
    let alice_bare = alice.bare_jid().to_owned();
    m.wait_directory_sessions(2, WAIT).await.unwrap();

    // Alice's gateway dies: no goodbye, no close event, no unavailable presence from it.
    let i = m
        .dc(1)
        .gateways
        .iter()
        .position(|g| alice_gw.starts_with(&format!("{}-", g.name)))
        .expect("alice's gateway");
    let mut tap = ControlTap::bind(m.dc(1)).await;
    let killed = Instant::now();
    m.dc_mut(1).kill_gateway(i).unwrap();
    drop(alice);
    // What Bob sends her meanwhile goes to the dead gateway's queue.
    for n in 1..=3 {
        let msg = Element::new("message", ns::CLIENT)
            .with_attr("type", "chat")
            .with_attr("to", alice_full.clone())
            .with_child(Element::new("body", ns::CLIENT).with_text(format!("while gone {n}")));
        bob.send(&msg).await.unwrap();
    }
    // And what a session's old holder had handed to it in a `moved` (wire 1.8: the stanzas
    // the client had not acknowledged, for a resumption there), with the fence that came with
    // it: the stanzas are routed again, the steps themselves carry nothing more.
    handed_over(m.dc(1), &alice_gw, bob.jid(), &alice_full).await;

    // Bob is told, from Alice's full JID, as if she had logged out.
    bob.expect_within(
        WAIT,
        "alice unavailable",
        presence_of_type(&alice_full, Some("unavailable")),
    )
    .await
    .unwrap();
    println!(
        "gateway killed -> contact told: {:.3} s",
        killed.elapsed().as_secs_f64()
    );
    let down = tap
        .next_matching(WAIT, |e| matches!(e, ControlEvent::GatewayDown { .. }))
        .await
        .expect("GatewayDown");
    let ControlEvent::GatewayDown {
        instance,
        reported_by,
        ..
    } = down
    else {
        unreachable!()
    };
    assert_eq!(
        (instance.as_str(), reported_by.as_str()),
        (alice_gw.as_str(), "dc1-health")
    );
    // Every directory of both DCs drops her session; Bob's stays.
    m.wait_directory_sessions(1, WAIT).await.unwrap();
    assert_eq!(gateway_of(m.dc(1), &alice_full).await, None);
    let h1 = health(m.dc(1));
    assert_eq!(
        metric(h1, "meerkat_health_gateway_sessions_closed_total").await,
        Some(1.0)
    );

    // Nothing sent to her was lost: it waits offline for her next login.
    let mut alice = Client::login(&m.dc(1).client(), &a, "secret-pw", Some("phone"))
        .await
        .unwrap();
    alice.send_presence().await.unwrap();
    for n in 1..=3 {
        alice
            .expect(
                &format!("message {n}"),
                message_with_body(&format!("while gone {n}")),
            )
            .await
            .unwrap();
    }
    for body in ["kept 1", "kept 2"] {
        alice.expect(body, message_with_body(body)).await.unwrap();
    }
    assert!(alice_bare.starts_with(&a));
    m.stop().await.unwrap();
}

/// Puts into the delivery queue of `gateway` a `moved` carrying two stanzas from `from` to
/// `to` (what an old holder hands a resuming gateway, wire 1.8), then that resumption's
/// `fence`.
async fn handed_over(dc: &Dc, gateway: &str, from: &str, to: &str) {
    use lapin::options::BasicPublishOptions;
    use meerkat_wire::handover::{self as step, Kept, Moved};
    use meerkat_wire::{headers as h, RouteKind, SessionInfo};
    let props = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    let conn = Connection::connect(&dc.amqp_url, props).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let request = uuid::Uuid::now_v7();
    let kept = ["kept 1", "kept 2"].map(|body| Kept {
        id: Some(uuid::Uuid::new_v4().to_string()),
        xml: Element::new("message", ns::CLIENT)
            .with_attr("type", "chat")
            .with_attr("from", from.to_owned())
            .with_attr("to", to.to_owned())
            .with_child(Element::new("body", ns::CLIENT).with_text(body))
            .to_xml(),
    });
    let moved = Moved {
        request,
        session: SessionInfo {
            jid: to.to_owned(),
            session_id: uuid::Uuid::now_v7(),
            version: 1,
            dc: dc.options.dc.clone(),
            gateway: "the-old-holder".into(),
            available: true,
            priority: 0,
            presence: None,
            interested: false,
            carbons: false,
            blocklist: false,
        },
        directed: Vec::new(),
        handled: 0,
        max_secs: 300,
        kept: kept.to_vec(),
        fenced: false,
    };
    let fence = serde_json::json!({ "request": request });
    for (which, body) in [
        (step::MOVED, serde_json::to_vec(&moved).unwrap()),
        (step::FENCE, serde_json::to_vec(&fence).unwrap()),
    ] {
        let props = meerkat_bus::Props::stanza(RouteKind::Handover, &dc.options.dc)
            .str(h::HANDOVER, which)
            .str(h::WIRE, "1.8")
            .u64(h::HOPS, 2);
        ch.basic_publish(
            "",
            &names::gateway_queue(gateway),
            BasicPublishOptions::default(),
            &body,
            props.build(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
}
