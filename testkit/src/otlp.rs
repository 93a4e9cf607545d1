//! An OTLP/HTTP trace receiver for tests: `POST /v1/traces` with a protobuf
//! `ExportTraceServiceRequest` (what the services export with `OTEL_EXPORTER_OTLP_ENDPOINT`
//! set), decoded and kept so a test can look at the spans it produced.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use parking_lot::Mutex;
use prost::Message as _;
use tokio::task::JoinHandle;

/// One exported span, flattened: ids in lowercase hex, attribute values as text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportedSpan {
    /// The `service.name` resource attribute of the process that exported it.
    pub service: String,
    /// Every resource attribute of that process (`service.instance.id`, ...).
    pub resource: BTreeMap<String, String>,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    /// `internal`, `server`, `client`, `producer`, `consumer` (or `unspecified`).
    pub kind: &'static str,
    pub attributes: BTreeMap<String, String>,
    /// (trace id, span id) of each linked span.
    pub links: Vec<(String, String)>,
}

impl ExportedSpan {
    /// The attribute `key` as text, if set.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

type Spans = Arc<Mutex<Vec<ExportedSpan>>>;

/// The receiver; it stops when dropped.
pub struct OtlpReceiver {
    addr: SocketAddr,
    spans: Spans,
    task: JoinHandle<()>,
}

impl OtlpReceiver {
    /// Listens on a free port of 127.0.0.1.
    pub async fn start() -> anyhow::Result<OtlpReceiver> {
        OtlpReceiver::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Listens on `addr` (the trace viewer stand-in of `cargo xtask compose-check`:
    /// `0.0.0.0:4318`, the OTLP/HTTP port).
    pub async fn start_on(addr: SocketAddr) -> anyhow::Result<OtlpReceiver> {
        let spans = Spans::default();
        let app = axum::Router::new()
            .route("/v1/traces", axum::routing::post(export))
            .with_state(spans.clone());
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the OTLP receiver to {addr}"))?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(OtlpReceiver { addr, spans, task })
    }

    /// The value for `OTEL_EXPORTER_OTLP_ENDPOINT` (the exporter appends `/v1/traces`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ExportedSpan> {
        self.spans.lock().clone()
    }

    /// Polls the spans received until `done` holds for them, or fails after `timeout` with
    /// what had arrived.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&[ExportedSpan]) -> bool,
    ) -> anyhow::Result<Vec<ExportedSpan>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if done(&spans) {
                return Ok(spans);
            }
            if tokio::time::Instant::now() > deadline {
                let seen: Vec<String> = spans
                    .iter()
                    .map(|s| format!("{} {} {}", s.service, s.name, s.trace_id))
                    .collect();
                anyhow::bail!(
                    "{what}: not within {timeout:?}; {} spans received: {}",
                    spans.len(),
                    seen.join("; ")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn export(State(spans): State<Spans>, headers: HeaderMap, body: Bytes) -> impl IntoResponse {
    let protobuf = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-protobuf"));
    if !protobuf {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            [(header::CONTENT_TYPE, "text/plain")],
            b"only application/x-protobuf".to_vec(),
        );
    }
    let request = match ExportTraceServiceRequest::decode(body) {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                [(header::CONTENT_TYPE, "text/plain")],
                e.to_string().into_bytes(),
            )
        }
    };
    let mut received = Vec::new();
    for rs in request.resource_spans {
        let resource = rs
            .resource
            .as_ref()
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
            received.push(ExportedSpan {
                service: service.clone(),
                resource: resource.clone(),
                kind: kind_name(span.kind),
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent_span_id: hex(&span.parent_span_id),
                attributes: attributes(&span.attributes),
                links: span
                    .links
                    .iter()
                    .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                    .collect(),
                name: span.name,
            });
        }
    }
    spans.lock().extend(received);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The OTLP `Span.SpanKind` numbers.
fn kind_name(kind: i32) -> &'static str {
    match kind {
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "unspecified",
    }
}
