use lapin::types::{AMQPValue, ByteArray, FieldTable, LongString};
use meerkat_runtime::telemetry::{
    extract_context, inject_context, set_parent_from_headers, TRACEPARENT_HEADER, TRACESTATE_HEADER,
};
use opentelemetry::trace::{SpanId, TraceContextExt, TraceId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

/// Runs `f` under a thread-local subscriber that records spans in memory (no global state, so
/// tests stay independent), then returns the finished spans.
fn with_tracing(f: impl FnOnce()) -> Vec<opentelemetry_sdk::trace::SpanData> {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("runtime-test")));
    tracing::subscriber::with_default(subscriber, f);
    provider.force_flush().unwrap();
    exporter.get_finished_spans().unwrap()
}

fn text(headers: &FieldTable, name: &str) -> Option<String> {
    match headers.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8(s.as_bytes().to_vec()).unwrap()),
        other => panic!("{name} is not a long string: {other:?}"),
    }
}

#[test]
fn context_round_trips_through_amqp_headers() {
    let mut headers = FieldTable::default();
    let mut sent = (TraceId::INVALID, SpanId::INVALID);
    let spans = with_tracing(|| {
        let publish = tracing::info_span!("publish");
        publish.in_scope(|| inject_context(&mut headers));
        let cx = publish.context();
        sent = (
            cx.span().span_context().trace_id(),
            cx.span().span_context().span_id(),
        );
        drop(publish);

        // The consumer side: a fresh span whose parent comes from the message.
        let consume = tracing::info_span!("consume");
        set_parent_from_headers(&consume, Some(&headers));
        drop(consume);
    });

    let traceparent = text(&headers, TRACEPARENT_HEADER).expect("traceparent injected");
    assert_eq!(traceparent, format!("00-{}-{}-01", sent.0, sent.1));

    let consume = spans.iter().find(|s| s.name == "consume").unwrap();
    assert_eq!(consume.span_context.trace_id(), sent.0);
    assert_eq!(consume.parent_span_id, sent.1);
}

#[test]
fn tracestate_and_byte_array_values_are_read() {
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let span_id = "00f067aa0ba902b7";
    let mut incoming = FieldTable::default();
    incoming.insert(
        TRACEPARENT_HEADER.into(),
        AMQPValue::ByteArray(ByteArray::from(
            format!("00-{trace_id}-{span_id}-01").into_bytes(),
        )),
    );
    incoming.insert(
        TRACESTATE_HEADER.into(),
        AMQPValue::LongString(LongString::from("meerkat=dc1")),
    );

    let cx = extract_context(Some(&incoming));
    let remote = cx.span().span_context().clone();
    assert!(remote.is_valid() && remote.is_remote());
    assert_eq!(remote.trace_id().to_string(), trace_id);
    assert_eq!(remote.span_id().to_string(), span_id);
    assert_eq!(remote.trace_state().header(), "meerkat=dc1");

    // Forwarding (router to another DC) keeps the trace and its state.
    let mut outgoing = FieldTable::default();
    with_tracing(|| {
        let forward = tracing::info_span!("forward");
        set_parent_from_headers(&forward, Some(&incoming));
        forward.in_scope(|| inject_context(&mut outgoing));
    });
    let traceparent = text(&outgoing, TRACEPARENT_HEADER).unwrap();
    assert!(
        traceparent.starts_with(&format!("00-{trace_id}-")),
        "{traceparent}"
    );
    assert!(
        !traceparent.contains(span_id),
        "a new span id: {traceparent}"
    );
    assert_eq!(
        text(&outgoing, TRACESTATE_HEADER).as_deref(),
        Some("meerkat=dc1")
    );
}

#[test]
fn absent_or_malformed_headers_give_an_empty_context() {
    assert!(!extract_context(None).span().span_context().is_valid());
    assert!(!extract_context(Some(&FieldTable::default()))
        .span()
        .span_context()
        .is_valid());
    let mut bad = FieldTable::default();
    bad.insert(
        TRACEPARENT_HEADER.into(),
        AMQPValue::LongString(LongString::from("not a traceparent")),
    );
    assert!(!extract_context(Some(&bad)).span().span_context().is_valid());
    let mut wrong_type = FieldTable::default();
    wrong_type.insert(TRACEPARENT_HEADER.into(), AMQPValue::LongUInt(7));
    assert!(!extract_context(Some(&wrong_type))
        .span()
        .span_context()
        .is_valid());
}

#[test]
fn without_an_otel_layer_nothing_is_injected() {
    let mut headers = FieldTable::default();
    let subscriber = tracing_subscriber::registry();
    tracing::subscriber::with_default(subscriber, || {
        tracing::info_span!("plain").in_scope(|| inject_context(&mut headers));
    });
    assert!(headers.inner().is_empty());
}
