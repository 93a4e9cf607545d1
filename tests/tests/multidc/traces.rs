//! One trace per stanza across services and DCs, as exported over OTLP: the services run as
//! real processes (`meerkat_testkit::procs`, each with its own `service.name`, as deployed)
//! exporting to an OTLP/HTTP receiver in the test (`meerkat_testkit::otlp`); a message from a
//! user at DC 1 to a user at DC 2 must give one trace from the sender's gateway through DC 1's
//! router, the federation link and DC 2's router to the recipient's gateway, its spans named
//! and attributed by the OpenTelemetry messaging conventions.

use std::time::Duration;

use meerkat_testkit::client::pred::message_with_body;
use meerkat_testkit::client::Client;
use meerkat_testkit::otlp::{ExportedSpan, OtlpReceiver};
use meerkat_testkit::procs::{ProcDc, ProcMultiDc};
use meerkat_xmpp::{ns, Element};

use crate::{user, CONVERGE};

/// How long the batch exporters get to deliver a trace (they flush every 100 ms here; a loaded
/// machine may take much longer).
const EXPORTED: Duration = Duration::from_secs(60);

async fn online(dc: &ProcDc, name: &str, resource: &str) -> Client {
    Client::register_account(&dc.client(), name, "secret-pw")
        .await
        .expect("register");
    let mut c = Client::login(&dc.client(), name, "secret-pw", Some(resource))
        .await
        .expect("login");
    c.iq_ok("get", None, Element::new("query", ns::ROSTER))
        .await
        .expect("roster get");
    c.send_presence().await.expect("presence");
    c
}

fn dc_of(s: &ExportedSpan) -> &str {
    s.resource.get("meerkat.dc").map_or("", String::as_str)
}

/// The span of `trace` exported by `service` at `dc` named `name` whose parent is `parent`
/// (its span id); fails with the trace's spans when there is none.
fn child<'a>(
    trace: &'a [ExportedSpan],
    parent: &ExportedSpan,
    service: &str,
    dc: &str,
    name: &str,
) -> &'a ExportedSpan {
    trace
        .iter()
        .find(|s| {
            s.parent_span_id == parent.span_id
                && s.service == service
                && dc_of(s) == dc
                && s.name == name
        })
        .unwrap_or_else(|| {
            panic!(
                "no span {name:?} of {service} at {dc} under {:?} ({} {}); the trace: {:#?}",
                parent.name, parent.service, parent.span_id, trace
            )
        })
}

/// The messaging attributes every span of the chain carries.
fn assert_messaging(
    s: &ExportedSpan,
    kind: &str,
    operation: &str,
    destination: &str,
    routing_key: &str,
) {
    assert_eq!(s.name, format!("{operation} {destination}"), "{s:#?}");
    assert_eq!(s.kind, kind, "{s:#?}");
    assert_eq!(s.attr("messaging.system"), Some("rabbitmq"), "{s:#?}");
    assert_eq!(
        s.attr("messaging.operation.type"),
        Some(operation),
        "{s:#?}"
    );
    assert_eq!(
        s.attr("messaging.operation.name"),
        Some(operation),
        "{s:#?}"
    );
    assert_eq!(
        s.attr("messaging.destination.name"),
        Some(destination),
        "{s:#?}"
    );
    assert_eq!(
        s.attr("messaging.rabbitmq.destination.routing_key"),
        Some(routing_key),
        "{s:#?}"
    );
    assert!(
        s.attr("messaging.message.id")
            .is_some_and(|id| !id.is_empty()),
        "{s:#?}"
    );
}

/// A consumer span: a child of the publish span that created its message, linked to it too.
fn assert_consumes(consumer: &ExportedSpan, producer: &ExportedSpan) {
    assert_eq!(consumer.parent_span_id, producer.span_id, "{consumer:#?}");
    assert!(
        consumer
            .links
            .contains(&(producer.trace_id.clone(), producer.span_id.clone())),
        "{consumer:#?} does not link to {producer:#?}"
    );
    assert_eq!(
        consumer.attr("messaging.message.id"),
        producer.attr("messaging.message.id"),
        "the consumer names the message its producer published"
    );
}

#[tokio::test]
async fn a_message_across_dcs_is_one_trace_from_gateway_to_gateway() {
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let endpoint = receiver.endpoint();
    let m = ProcMultiDc::start(
        2,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            // Batches leave every 100 ms rather than every 5 s.
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .await
    .expect("start DCs of processes");
    let (gw1, gw2) = (
        m.dc(1).gateways[0].name.clone(),
        m.dc(2).gateways[0].name.clone(),
    );
    let mut alice = online(m.dc(1), &user("a"), "phone").await;
    let mut bob = online(m.dc(2), &user("b"), "desk").await;
    m.wait_directory_sessions(2, CONVERGE).await.unwrap();
    let alice_bare = alice.bare_jid().to_owned();

    alice
        .send_message(bob.jid(), "traced across DCs")
        .await
        .unwrap();
    bob.expect("alice's message", message_with_body("traced across DCs"))
        .await
        .unwrap();

    // The root: alice's gateway publishing her message to DC 1's routers.
    let is_root = |s: &ExportedSpan| {
        s.service == "c2s-gateway"
            && dc_of(s) == "dc1"
            && s.name == "publish meerkat.route"
            && s.attr("xmpp.stanza") == Some("message")
            && s.attr("messaging.rabbitmq.destination.routing_key") == Some(alice_bare.as_str())
    };
    let spans = receiver
        .wait_for(
            EXPORTED,
            "the message's publish at dc1's gateway",
            |spans| spans.iter().any(is_root),
        )
        .await
        .unwrap();
    let roots: Vec<&ExportedSpan> = spans.iter().filter(|s| is_root(s)).collect();
    assert_eq!(roots.len(), 1, "one message sent, one root: {roots:#?}");
    let trace_id = roots[0].trace_id.clone();
    // The whole trace: until bob's gateway's span (the last hop) has arrived too, and the
    // exporters have had a moment for anything in the same batch window.
    let in_trace = |spans: &[ExportedSpan]| -> Vec<ExportedSpan> {
        spans
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    };
    receiver
        .wait_for(EXPORTED, "the trace reaching dc2's gateway", |spans| {
            in_trace(spans).iter().any(|s| {
                s.service == "c2s-gateway"
                    && dc_of(s) == "dc2"
                    && s.name == "process meerkat.deliver"
            })
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let trace = in_trace(&receiver.spans());

    // Every span of the trace under one root: nothing of it started a trace of its own.
    let root = roots[0];
    assert!(root.parent_span_id.is_empty(), "{root:#?}");
    for s in &trace {
        assert!(
            s.span_id == root.span_id || trace.iter().any(|p| p.span_id == s.parent_span_id),
            "{s:#?} has no parent in the trace"
        );
    }
    // The services of both DCs are in it.
    for (service, dc) in [
        ("c2s-gateway", "dc1"),
        ("router", "dc1"),
        ("router", "dc2"),
        ("c2s-gateway", "dc2"),
    ] {
        assert!(
            trace.iter().any(|s| s.service == service && dc_of(s) == dc),
            "no span of {service} at {dc} in {trace:#?}"
        );
    }

    // The path, hop by hop.
    assert_messaging(root, "producer", "publish", "meerkat.route", &alice_bare);
    let routed1 = child(&trace, root, "router", "dc1", "process meerkat.route");
    assert_messaging(routed1, "consumer", "process", "meerkat.route", &alice_bare);
    assert_consumes(routed1, root);

    let across = child(
        &trace,
        routed1,
        "router",
        "dc1",
        "publish meerkat.inter.stanzas",
    );
    assert_messaging(
        across,
        "producer",
        "publish",
        "meerkat.inter.stanzas",
        "dc2",
    );

    // The federation hop: the link forwarded the message's headers, trace context included.
    let arrived = child(
        &trace,
        across,
        "router",
        "dc2",
        "process meerkat.inter.stanzas",
    );
    assert_messaging(
        arrived,
        "consumer",
        "process",
        "meerkat.inter.stanzas",
        "dc2",
    );
    assert_consumes(arrived, across);

    let republished = child(&trace, arrived, "router", "dc2", "publish meerkat.route");
    assert_messaging(
        republished,
        "producer",
        "publish",
        "meerkat.route",
        &alice_bare,
    );
    let routed2 = child(
        &trace,
        republished,
        "router",
        "dc2",
        "process meerkat.route",
    );
    assert_messaging(routed2, "consumer", "process", "meerkat.route", &alice_bare);
    assert_consumes(routed2, republished);

    let delivering = child(&trace, routed2, "router", "dc2", "publish meerkat.deliver");
    assert_messaging(delivering, "producer", "publish", "meerkat.deliver", &gw2);
    let delivered = child(
        &trace,
        delivering,
        "c2s-gateway",
        "dc2",
        "process meerkat.deliver",
    );
    assert_messaging(delivered, "consumer", "process", "meerkat.deliver", &gw2);
    assert_consumes(delivered, delivering);
    assert_eq!(
        delivered.resource.get("service.instance.id"),
        Some(&gw2),
        "delivered by bob's gateway"
    );
    assert_eq!(
        root.resource.get("service.instance.id"),
        Some(&gw1),
        "published by alice's gateway"
    );

    m.stop().await.unwrap();
}
