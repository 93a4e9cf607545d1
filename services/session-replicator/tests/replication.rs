//! Two DCs as two federated vhosts of the run's shared broker, a replicator each, started in
//! this process. The tests play the gateways (publishing session events into DC 1's
//! `meerkat.sessions`) and the routers (reading DC 2's `meerkat.sessions`).

use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt as _;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};
use meerkat_testkit::multi::{federated_vhosts, wait_binding_propagated, DcBroker};
use meerkat_wire::{
    topology as names, ReplicatedEvent, SessionEvent, SessionEventKind, SessionInfo,
};
use session_replicator::{Config, Peer, SessionReplicator};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);

struct Running {
    admin: SocketAddr,
    epoch: String,
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("replicator stops")
            .expect("task")
            .expect("run");
    }
}

async fn start(me: &DcBroker, all: &[DcBroker]) -> Running {
    let config = Config {
        common: meerkat_runtime::Common {
            dc: me.dc.clone(),
            amqp_url: me.vhost.amqp_url.as_str().into(),
            ..Default::default()
        },
        peers: all
            .iter()
            .filter(|o| o.dc != me.dc)
            .map(|o| Peer {
                dc: o.dc.clone(),
                upstream_uri: o.federation.amqp_uri.clone(),
            })
            .collect(),
        snapshot_warmup_ms: 300,
        ..Config::default()
    };
    let stop = CancellationToken::new();
    let r = SessionReplicator::build(config, stop.clone())
        .await
        .expect("build");
    let admin = r.admin_addr();
    let epoch = r.epoch().to_owned();
    let task = tokio::spawn(r.run());
    let url = format!("http://{admin}/readyz/local");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(resp) = reqwest::get(&url).await {
            if resp.status().is_success() {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "replicator not ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Running {
        admin,
        epoch,
        stop,
        task,
    }
}

/// Waits until each DC's replicator bindings on the inter-DC exchanges reached the other DC.
async fn wait_bindings(b: &[DcBroker]) {
    for (down, up) in [(&b[0], &b[1]), (&b[1], &b[0])] {
        wait_binding_propagated(up, down, names::INTER_SESSIONS_EXCHANGE, &up.dc, WAIT)
            .await
            .expect("sessions binding");
        wait_binding_propagated(up, down, names::INTER_CONTROL_EXCHANGE, &down.dc, WAIT)
            .await
            .expect("control binding");
    }
}

async fn channel(b: &DcBroker) -> (Connection, Channel) {
    let props = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    let conn = Connection::connect(&b.vhost.amqp_url, props)
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    meerkat_bus::topology::declare_exchanges(&ch)
        .await
        .expect("exchanges");
    (conn, ch)
}

/// What a router of the DC sees: an exclusive queue on `meerkat.sessions`.
async fn watch_sessions(ch: &Channel) -> Consumer {
    let q = ch
        .queue_declare(
            "",
            QueueDeclareOptions {
                exclusive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("queue");
    ch.queue_bind(
        q.name().as_str(),
        names::SESSIONS_EXCHANGE,
        "",
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind");
    ch.basic_consume(
        q.name().as_str(),
        "test",
        BasicConsumeOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("consume")
}

fn session(dc: &str, n: u128, version: u64) -> SessionInfo {
    SessionInfo {
        jid: format!("user{n}@example.com/res"),
        session_id: Uuid::from_u128(n),
        version,
        dc: dc.into(),
        gateway: format!("{dc}-gw1"),
        available: true,
        priority: 0,
        presence: None,
        interested: false,
        carbons: false,
        blocklist: false,
    }
}

/// Publishes as a service of this version would: stamped with the current wire version (a
/// message without one is parked, not handled).
async fn publish(ch: &Channel, exchange: &str, key: &str, body: &[u8], mut headers: FieldTable) {
    headers.insert(
        ShortString::from(meerkat_wire::headers::WIRE),
        AMQPValue::LongString(LongString::from(meerkat_wire::version::CURRENT.to_string())),
    );
    ch.basic_publish(
        exchange,
        key,
        BasicPublishOptions::default(),
        body,
        BasicProperties::default().with_headers(headers),
    )
    .await
    .expect("publish")
    .await
    .expect("confirm");
}

/// A local gateway's session event.
async fn gateway_event(ch: &Channel, kind: SessionEventKind, info: SessionInfo) {
    let ev = SessionEvent {
        v: 1,
        kind,
        epoch: "gw".into(),
        session: info,
    };
    publish(
        ch,
        names::SESSIONS_EXCHANGE,
        "",
        &ev.to_json(),
        FieldTable::default(),
    )
    .await;
}

/// Reads session events until `want` (kind, session number) have all been seen; returns
/// everything read.
async fn expect_events(c: &mut Consumer, want: &[(SessionEventKind, u128)]) -> Vec<SessionEvent> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let missing: Vec<_> = want
            .iter()
            .filter(|(k, n)| {
                !seen.iter().any(|e: &SessionEvent| {
                    e.kind == *k && e.session.session_id == Uuid::from_u128(*n)
                })
            })
            .collect();
        if missing.is_empty() {
            return seen;
        }
        let next = tokio::time::timeout_at(deadline, c.next()).await;
        let Ok(Some(Ok(d))) = next else {
            panic!("missing {missing:?}; seen {seen:?}");
        };
        d.ack(BasicAckOptions::default()).await.expect("ack");
        seen.push(SessionEvent::from_json(&d.data).expect("session event"));
    }
}

/// The value of one sample on the admin port's `/metrics`, 0 when absent.
async fn metric(admin: SocketAddr, sample: &str) -> f64 {
    let text = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

async fn wait_metric(admin: SocketAddr, sample: &str, at_least: f64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let v = metric(admin, sample).await;
        if v >= at_least {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{sample} = {v}, wanted >= {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn sessions_cross_and_a_restart_is_repaired_by_a_snapshot() {
    use SessionEventKind::*;
    let b = federated_vhosts(2).await.expect("federated vhosts");
    let r1 = start(&b[0], &b).await;
    let r2 = start(&b[1], &b).await;
    wait_bindings(&b).await;
    // Each has the other's snapshot (its stream is live from then on).
    wait_metric(
        r2.admin,
        r#"meerkat_replicator_snapshots_applied_total{dc="dc1"}"#,
        1.0,
    )
    .await;
    wait_metric(
        r1.admin,
        r#"meerkat_replicator_snapshots_applied_total{dc="dc2"}"#,
        1.0,
    )
    .await;

    let (_c1, ch1) = channel(&b[0]).await;
    let (_c2, ch2) = channel(&b[1]).await;
    let mut dc2_sessions = watch_sessions(&ch2).await;

    gateway_event(&ch1, Open, session("dc1", 1, 1)).await;
    gateway_event(&ch1, Open, session("dc1", 2, 1)).await;
    let seen = expect_events(&mut dc2_sessions, &[(Open, 1), (Open, 2)]).await;
    // Republished unchanged: still dc1's session at dc1's gateway.
    assert!(seen
        .iter()
        .all(|e| e.session.dc == "dc1" && e.session.gateway == "dc1-gw1"));
    wait_metric(
        r2.admin,
        r#"meerkat_replicator_events_in_total{dc="dc1"}"#,
        2.0,
    )
    .await;
    wait_metric(
        r2.admin,
        r#"meerkat_replicator_remote_sessions{dc="dc1"}"#,
        2.0,
    )
    .await;
    // Counted once the broker confirmed, which may come after DC 2 already has them.
    wait_metric(r1.admin, "meerkat_replicator_events_out_total", 2.0).await;
    assert_eq!(
        metric(r1.admin, "meerkat_replicator_events_out_total").await,
        2.0
    );

    // DC 1's replicator restarts with an empty view (no gateway answers its resync): a new
    // epoch. Session 3 opens meanwhile; sessions 1 and 2 are no longer there.
    let old_epoch = r1.epoch.clone();
    r1.stop().await;
    let gaps_before = metric(r2.admin, r#"meerkat_replicator_gaps_total{dc="dc1"}"#).await;
    let r1 = start(&b[0], &b).await;
    assert!(r1.epoch > old_epoch, "epochs grow");
    gateway_event(&ch1, Open, session("dc1", 3, 1)).await;
    let seen = expect_events(&mut dc2_sessions, &[(Close, 1), (Close, 2)]).await;
    for e in seen.iter().filter(|e| e.kind == Close) {
        assert_eq!(
            e.session.version, 2,
            "closed one version above the last known"
        );
    }
    // Session 3 arrives, as part of the snapshot or as the event after it.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut all = seen;
    while !all
        .iter()
        .any(|e| e.session.session_id == Uuid::from_u128(3) && matches!(e.kind, Open | Announce))
    {
        let next = tokio::time::timeout_at(deadline, dc2_sessions.next()).await;
        let Ok(Some(Ok(d))) = next else {
            panic!("session 3 never announced; seen {all:?}");
        };
        d.ack(BasicAckOptions::default()).await.expect("ack");
        all.push(SessionEvent::from_json(&d.data).expect("event"));
    }
    // The gauge follows once the whole snapshot is applied.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let known = metric(r2.admin, r#"meerkat_replicator_remote_sessions{dc="dc1"}"#).await;
        if known == 1.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "dc2 knows {known} sessions of dc1, wanted 1"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The new epoch's event was a gap that asked for a snapshot, unless the snapshot DC 1
    // sends at start got there first (then the event was simply next in the new epoch).
    let gaps = metric(r2.admin, r#"meerkat_replicator_gaps_total{dc="dc1"}"#).await;
    let applied = metric(
        r2.admin,
        r#"meerkat_replicator_snapshots_applied_total{dc="dc1"}"#,
    )
    .await;
    assert!(
        applied >= 2.0,
        "snapshot of the new epoch applied ({applied})"
    );
    if gaps > gaps_before {
        assert!(
            metric(
                r2.admin,
                r#"meerkat_replicator_snapshots_requested_total{dc="dc1"}"#
            )
            .await
                >= 2.0
        );
    }
    assert_eq!(
        metric(r1.admin, r#"meerkat_replicator_refused_total{dc="dc2"}"#).await,
        0.0
    );
    r1.stop().await;
    r2.stop().await;
}

#[tokio::test]
async fn an_unknown_epoch_holds_the_stream_and_asks_for_a_snapshot() {
    use SessionEventKind::*;
    let b = federated_vhosts(2).await.expect("federated vhosts");
    let r1 = start(&b[0], &b).await;
    let r2 = start(&b[1], &b).await;
    wait_bindings(&b).await;
    wait_metric(
        r2.admin,
        r#"meerkat_replicator_snapshots_applied_total{dc="dc1"}"#,
        1.0,
    )
    .await;
    let (_c1, ch1) = channel(&b[0]).await;
    let (_c2, ch2) = channel(&b[1]).await;
    let mut dc2_sessions = watch_sessions(&ch2).await;
    gateway_event(&ch1, Open, session("dc1", 1, 1)).await;
    expect_events(&mut dc2_sessions, &[(Open, 1)]).await;

    // A forged stream event of a new dc1 epoch, sent over the real link (published on dc1's
    // inter exchange, so it carries dc1's x-received-from): dc2 sees an unknown epoch and asks
    // dc1 for a snapshot, which (dc1's real epoch being older) is stale; dc2 keeps asking.
    let requested = metric(
        r2.admin,
        r#"meerkat_replicator_snapshots_requested_total{dc="dc1"}"#,
    )
    .await;
    let ev = ReplicatedEvent {
        v: 1,
        origin_dc: "dc1".into(),
        epoch: Uuid::now_v7().to_string(),
        seq: 5,
        event: SessionEvent {
            v: 1,
            kind: Open,
            epoch: "gw".into(),
            session: session("dc1", 9, 1),
        },
    };
    publish(
        &ch1,
        names::INTER_SESSIONS_EXCHANGE,
        "dc1",
        &ev.to_json(),
        FieldTable::default(),
    )
    .await;
    wait_metric(r2.admin, r#"meerkat_replicator_gaps_total{dc="dc1"}"#, 1.0).await;
    wait_metric(
        r2.admin,
        r#"meerkat_replicator_snapshots_requested_total{dc="dc1"}"#,
        requested + 1.0,
    )
    .await;
    wait_metric(
        r1.admin,
        r#"meerkat_replicator_snapshots_served_total{dc="dc2"}"#,
        2.0,
    )
    .await;
    r1.stop().await;
    r2.stop().await;
}

fn received_from(uri: &str) -> FieldTable {
    let mut hop = FieldTable::default();
    hop.insert(
        ShortString::from("uri"),
        AMQPValue::LongString(LongString::from(uri)),
    );
    let mut h = FieldTable::default();
    h.insert(
        ShortString::from("x-received-from"),
        AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(hop)])),
    );
    h
}

#[tokio::test]
async fn events_with_a_forged_origin_are_refused() {
    use SessionEventKind::*;
    let b = federated_vhosts(2).await.expect("federated vhosts");
    let r2 = start(&b[1], &b).await;
    let (_c2, ch2) = channel(&b[1]).await;
    let mut dc2_sessions = watch_sessions(&ch2).await;
    let forged = |seq: u64, n: u128| ReplicatedEvent {
        v: 1,
        origin_dc: "dc1".into(),
        epoch: Uuid::now_v7().to_string(),
        seq,
        event: SessionEvent {
            v: 1,
            kind: Open,
            epoch: "gw".into(),
            session: session("dc1", n, 1),
        },
    };
    // Published in DC 2 itself: no x-received-from at all.
    publish(
        &ch2,
        names::INTER_SESSIONS_EXCHANGE,
        "dc1",
        &forged(1, 66).to_json(),
        FieldTable::default(),
    )
    .await;
    // A header naming a link that is not dc1's.
    publish(
        &ch2,
        names::INTER_SESSIONS_EXCHANGE,
        "dc1",
        &forged(1, 67).to_json(),
        received_from("amqp://127.0.0.1:1/elsewhere"),
    )
    .await;
    wait_metric(
        r2.admin,
        r#"meerkat_replicator_refused_total{dc="dc1"}"#,
        2.0,
    )
    .await;
    assert_eq!(
        metric(r2.admin, r#"meerkat_replicator_gaps_total{dc="dc1"}"#).await,
        0.0,
        "a refused event does not even count as a gap"
    );
    // Nothing of it reached DC 2's directory.
    let next = tokio::time::timeout(Duration::from_millis(700), dc2_sessions.next()).await;
    assert!(next.is_err(), "nothing published locally: {next:?}");
    r2.stop().await;
}
