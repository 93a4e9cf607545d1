//! The federation between DC vhosts, without services: what one DC publishes on an inter-DC
//! exchange reaches the DCs that bound it, once, in order, marked by `x-received-from`.

use std::time::Duration;

use futures::StreamExt as _;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};
use meerkat_localstack::federation::{self, strip_credentials};
use meerkat_testkit::multi::{federated_vhosts, wait_binding_propagated, DcBroker};

const STANZAS: &str = "meerkat.inter.stanzas";
const SESSIONS: &str = "meerkat.inter.sessions";

async fn channel(b: &DcBroker) -> (Connection, Channel) {
    let props = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    let conn = Connection::connect(&b.vhost.amqp_url, props).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    (conn, ch)
}

/// Declares `queue` durable, bound to `exchange` with `key`, and consumes it.
async fn bound_consumer(ch: &Channel, exchange: &str, queue: &str, key: &str) -> Consumer {
    ch.queue_declare(
        queue,
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        queue,
        exchange,
        key,
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.basic_consume(
        queue,
        "test",
        BasicConsumeOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap()
}

async fn publish(ch: &Channel, exchange: &str, key: &str, body: &[u8]) {
    ch.basic_publish(
        exchange,
        key,
        BasicPublishOptions::default(),
        body,
        BasicProperties::default(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
}

/// The `uri` of the last `x-received-from` entry: the link the message came through.
fn received_from_uri(d: &lapin::message::Delivery) -> Option<String> {
    let headers = d.properties.headers().as_ref()?;
    let AMQPValue::FieldArray(hops) = headers.inner().get("x-received-from")? else {
        return None;
    };
    let AMQPValue::FieldTable(last) = hops.as_slice().last()? else {
        return None;
    };
    match last.inner().get("uri")? {
        AMQPValue::LongString(s) => Some(s.to_string()),
        _ => None,
    }
}

/// The next delivery within `timeout`; None when nothing came.
async fn next_delivery(c: &mut Consumer, timeout: Duration) -> Option<lapin::message::Delivery> {
    tokio::time::timeout(timeout, c.next()).await.ok()??.ok()
}

#[tokio::test]
async fn stanzas_cross_to_the_target_dc_in_order_with_the_link_named() {
    let b = federated_vhosts(2).await.unwrap();
    let (_c1, ch1) = channel(&b[0]).await;
    let (_c2, ch2) = channel(&b[1]).await;
    let mut in1 = bound_consumer(&ch1, STANZAS, "meerkat.inter.stanzas.dc1", "dc1").await;
    let mut in2 = bound_consumer(&ch2, STANZAS, "meerkat.inter.stanzas.dc2", "dc2").await;
    let t = Duration::from_secs(10);
    wait_binding_propagated(&b[0], &b[1], STANZAS, "dc2", t)
        .await
        .unwrap();
    wait_binding_propagated(&b[1], &b[0], STANZAS, "dc1", t)
        .await
        .unwrap();

    for n in 0..100 {
        publish(&ch1, STANZAS, "dc2", format!("m{n}").as_bytes()).await;
    }
    let upstream1 = strip_credentials(&b[0].vhost.amqp_url);
    for n in 0..100 {
        let d = next_delivery(&mut in2, t).await.expect("federated message");
        assert_eq!(d.data, format!("m{n}").as_bytes());
        assert_eq!(received_from_uri(&d).as_deref(), Some(upstream1.as_str()));
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    // Routed by target DC: DC 1 keeps nothing of it.
    assert!(next_delivery(&mut in1, Duration::from_millis(300))
        .await
        .is_none());

    // And back.
    publish(&ch2, STANZAS, "dc1", b"back").await;
    let d = next_delivery(&mut in1, t).await.expect("federated back");
    assert_eq!(d.data, b"back");
    assert_eq!(
        received_from_uri(&d),
        Some(strip_credentials(&b[1].vhost.amqp_url))
    );
    // A message a DC addresses to itself stays local and carries no link.
    publish(&ch2, STANZAS, "dc2", b"local").await;
    let d = next_delivery(&mut in2, t).await.expect("local message");
    assert_eq!(d.data, b"local");
    assert_eq!(received_from_uri(&d), None);
}

#[tokio::test]
async fn session_events_reach_every_other_dc_exactly_once() {
    let b = federated_vhosts(3).await.unwrap();
    let mut chans = Vec::new();
    let mut consumers = Vec::new();
    for broker in &b {
        let (conn, ch) = channel(broker).await;
        let queue = format!("meerkat.inter.sessions.{}", broker.dc);
        consumers.push(bound_consumer(&ch, SESSIONS, &queue, "#").await);
        chans.push((conn, ch));
    }
    let t = Duration::from_secs(10);
    for up in &b {
        for down in b.iter().filter(|d| d.dc != up.dc) {
            wait_binding_propagated(up, down, SESSIONS, "#", t)
                .await
                .unwrap();
        }
    }
    publish(&chans[0].1, SESSIONS, "dc1", b"event-of-dc1").await;
    for (k, c) in consumers.iter_mut().enumerate() {
        let d = next_delivery(c, t).await.expect("event");
        assert_eq!(d.data, b"event-of-dc1");
        // DC 1's own queue gets it locally; the others through their link from DC 1.
        let expected = (k > 0).then(|| strip_credentials(&b[0].vhost.amqp_url));
        assert_eq!(received_from_uri(&d), expected, "at dc{}", k + 1);
        d.ack(BasicAckOptions::default()).await.unwrap();
        // max-hops 1: DC 2 does not pass DC 1's event on to DC 3 a second time.
        assert!(next_delivery(c, Duration::from_millis(500)).await.is_none());
    }
}

#[tokio::test]
async fn configuring_again_changes_nothing() {
    let b = federated_vhosts(2).await.unwrap();
    let feds: Vec<_> = b.iter().map(|x| x.federation.clone()).collect();
    federation::configure(&feds).await.unwrap();
    federation::wait_links_running(&feds, Duration::from_secs(10))
        .await
        .unwrap();
    let links = federation::link_status(&feds[1]).await.unwrap();
    // One link per federated exchange, from the one other DC.
    assert_eq!(
        links.len(),
        federation::FEDERATED_EXCHANGES.len(),
        "{links:?}"
    );
    let upstream = feds[1].upstream_name_of("dc1");
    assert!(links
        .iter()
        .all(|l| l.upstream == upstream && l.status == "running"));
}

/// The `cargo xtask up --dcs 2` shape: a broker per DC (distinct cluster names), default vhost.
#[tokio::test]
async fn one_broker_per_dc_federates_too() {
    let (n1, n2) = tokio::join!(
        meerkat_testkit::dedicated_broker_named("meerkat-dc1"),
        meerkat_testkit::dedicated_broker_named("meerkat-dc2")
    );
    let (n1, n2) = (n1.unwrap(), n2.unwrap());
    let b: Vec<DcBroker> = [("dc1", &n1), ("dc2", &n2)]
        .into_iter()
        .map(|(dc, n)| {
            let vhost = meerkat_testkit::Vhost::unowned(n.amqp_url(), "/".into(), n.mgmt_url());
            let federation =
                federation::FederatedDc::new(dc, &vhost.mgmt_url, "/", &vhost.amqp_url);
            DcBroker {
                dc: dc.into(),
                vhost,
                federation,
            }
        })
        .collect();
    let feds: Vec<_> = b.iter().map(|x| x.federation.clone()).collect();
    federation::configure(&feds).await.unwrap();
    federation::wait_links_running(&feds, Duration::from_secs(30))
        .await
        .unwrap();
    let (_c1, ch1) = channel(&b[0]).await;
    let (_c2, ch2) = channel(&b[1]).await;
    let mut in2 = bound_consumer(&ch2, STANZAS, "meerkat.inter.stanzas.dc2", "dc2").await;
    wait_binding_propagated(&b[0], &b[1], STANZAS, "dc2", Duration::from_secs(10))
        .await
        .unwrap();
    publish(&ch1, STANZAS, "dc2", b"across brokers").await;
    let d = next_delivery(&mut in2, Duration::from_secs(10))
        .await
        .expect("federated message");
    assert_eq!(d.data, b"across brokers");
    assert_eq!(
        received_from_uri(&d),
        Some(strip_credentials(&n1.amqp_url()))
    );
}

/// Whether `e` is the broker's `ACCESS_REFUSED` for the link user.
fn refused_to_link_user(e: &lapin::Error) -> bool {
    let text = e.to_string();
    text.contains("ACCESS_REFUSED") && text.contains(federation::LINK_USER)
}

/// The links log in as the link user (not the broker's administrator), which can federate
/// and nothing else: a leaked upstream URI cannot publish to the routers, read a gateway's
/// queue, declare anything or use the management API.
#[tokio::test]
async fn links_log_in_as_a_user_that_can_only_federate() {
    let b = federated_vhosts(2).await.unwrap();
    let link = federation::LinkUser::local();
    // Every upstream names the link user, and the links run with it (federated_vhosts waited).
    let http = reqwest::Client::new();
    for (down, up) in [(&b[1], "dc1"), (&b[0], "dc2")] {
        let url = format!(
            "{}api/parameters/federation-upstream/{}/{}",
            down.vhost.mgmt_url,
            down.vhost.name,
            down.federation.upstream_name_of(up).replace('@', "%40")
        );
        let def: serde_json::Value = http
            .get(&url)
            .basic_auth("guest", Some("guest"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let uri = def["value"]["uri"].as_str().unwrap();
        assert!(uri.starts_with("amqp://meerkat-link:"), "{uri}");
    }
    // And what the links carry still crosses.
    let (_c1, ch1) = channel(&b[0]).await;
    let (_c2, ch2) = channel(&b[1]).await;
    let mut in2 = bound_consumer(&ch2, STANZAS, "meerkat.inter.stanzas.dc2", "dc2").await;
    wait_binding_propagated(&b[0], &b[1], STANZAS, "dc2", Duration::from_secs(10))
        .await
        .unwrap();
    publish(&ch1, STANZAS, "dc2", b"via the link user").await;
    let d = next_delivery(&mut in2, Duration::from_secs(10))
        .await
        .expect("federated message");
    assert_eq!(d.data, b"via the link user");

    // What a DC's services use, on DC 1: the route exchange and a gateway's queue.
    ch1.exchange_declare(
        "meerkat.route",
        lapin::ExchangeKind::Direct,
        lapin::options::ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch1.queue_declare(
        "meerkat.gateway.dc1-gw-1",
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();

    let uri = federation::with_link_user(&b[0].vhost.amqp_url, &link);
    let props = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    let conn = Connection::connect(&uri, props)
        .await
        .expect("the link user logs in");
    for exchange in ["meerkat.route", STANZAS] {
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        let r = async {
            ch.basic_publish(
                exchange,
                "alice@example.com",
                BasicPublishOptions::default(),
                b"<message/>",
                BasicProperties::default(),
            )
            .await?
            .await
        }
        .await;
        // The broker closes the channel; the confirm or the next call reports why.
        let err = match r {
            Err(e) => e,
            Ok(_) => ch
                .queue_declare("x", QueueDeclareOptions::default(), FieldTable::default())
                .await
                .expect_err("channel closed"),
        };
        assert!(refused_to_link_user(&err), "publish to {exchange}: {err}");
    }
    let ch = conn.create_channel().await.unwrap();
    let err = ch
        .basic_consume(
            "meerkat.gateway.dc1-gw-1",
            "thief",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect_err("reading a gateway's queue");
    assert!(refused_to_link_user(&err), "{err}");
    let ch = conn.create_channel().await.unwrap();
    let err = ch
        .queue_declare(
            "anything",
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect_err("declaring a queue");
    assert!(refused_to_link_user(&err), "{err}");
    // No tags: the management API is closed to it.
    let status = http
        .get(format!("{}api/overview", b[0].vhost.mgmt_url))
        .basic_auth(&link.name, Some(&link.password))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, reqwest::StatusCode::UNAUTHORIZED);
}
