//! `telemetry::init` installs process-wide state, so each case runs in a child copy of this test
//! binary with its own environment.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use meerkat_runtime::telemetry;

const CHILD: &str = "RUNTIME_TEST_INIT_CHILD";

fn run_child(test: &str, otlp: Option<&str>, protocol: Option<&str>) -> std::process::Output {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", test, "--nocapture"])
        .env(CHILD, "1")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_PROTOCOL")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .env("RUST_LOG", "info");
    if let Some(endpoint) = otlp {
        command.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint);
    }
    if let Some(protocol) = protocol {
        command.env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol);
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "child failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The child side of both cases: init twice, make a span, drop the guard (which flushes).
/// Services do this inside `#[tokio::main]`, so the export case runs inside a runtime.
fn child_body(expect_export: bool) {
    if expect_export {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async { init_span_and_flush(true) });
    } else {
        init_span_and_flush(false);
    }
}

fn init_span_and_flush(expect_export: bool) {
    let guard = telemetry::init("meerkat-init-test");
    assert_eq!(guard.exports_traces(), expect_export);
    let again = telemetry::init("meerkat-init-test");
    assert!(!again.exports_traces(), "a second init is a no-op");
    drop(again);
    let span = tracing::info_span!("stanza_routed");
    // Without an exporter a service pays nothing for its spans: they are never created.
    assert_eq!(span.is_disabled(), !expect_export);
    span.in_scope(|| tracing::info!("routing one stanza"));
    // Ended before the guard flushes, or it would never be exported.
    drop(span);
    drop(guard);
}

#[test]
fn init_without_endpoint_logs_and_exports_nothing() {
    if std::env::var_os(CHILD).is_some() {
        child_body(false);
        return;
    }
    let output = run_child(
        "telemetry_init::init_without_endpoint_logs_and_exports_nothing",
        None,
        None,
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("routing one stanza"), "{stdout}");
}

#[test]
fn init_with_endpoint_exports_spans_over_otlp_http() {
    if std::env::var_os(CHILD).is_some() {
        child_body(true);
        return;
    }
    // A one-request OTLP/HTTP collector: records the request, answers 200.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let collector = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut head = Vec::new();
        let mut content_length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    content_length = value.trim().parse().unwrap();
                }
            }
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push(line);
        }
        let mut body = vec![0; content_length];
        reader.read_exact(&mut body).unwrap();
        let mut stream = stream;
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .unwrap();
        (head, body)
    });

    run_child(
        "telemetry_init::init_with_endpoint_exports_spans_over_otlp_http",
        Some(&endpoint),
        None,
    );
    let (head, body) = collector.join().unwrap();
    assert!(head[0].starts_with("POST /v1/traces "), "{head:?}");
    let body = String::from_utf8_lossy(&body);
    assert!(
        body.contains("meerkat-init-test"),
        "service.name in the resource"
    );
    assert!(body.contains("stanza_routed"), "the span itself");
}

#[test]
fn init_with_grpc_protocol_speaks_http2_to_the_endpoint() {
    if std::env::var_os(CHILD).is_some() {
        child_body(true);
        return;
    }
    // Enough of a collector to see the exporter open an HTTP/2 (gRPC) connection; closing it
    // right after makes the export fail fast, which the child only logs.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let collector = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut preface = [0; 24];
        stream.read_exact(&mut preface).unwrap();
        preface
    });
    run_child(
        "telemetry_init::init_with_grpc_protocol_speaks_http2_to_the_endpoint",
        Some(&endpoint),
        Some("grpc"),
    );
    assert_eq!(
        &collector.join().unwrap(),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    );
}
