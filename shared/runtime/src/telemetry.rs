//! Logs and traces for a service: a `tracing` fmt subscriber always, an OpenTelemetry OTLP
//! exporter only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and W3C trace context carried in AMQP
//! headers so one stanza's trace spans every service and DC it crosses.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Environment variable that turns OTLP export on (e.g. `http://127.0.0.1:4318`).
pub const OTLP_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// Environment variable choosing the OTLP transport: `http/protobuf` (default) or `grpc`.
pub const OTLP_PROTOCOL_ENV: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
/// Traces-only override of [`OTLP_PROTOCOL_ENV`].
pub const OTLP_TRACES_PROTOCOL_ENV: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
/// AMQP header carrying the W3C `traceparent`.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// AMQP header carrying the W3C `tracestate`.
pub const TRACESTATE_HEADER: &str = "tracestate";

/// Set by the first [`init`]; the global subscriber can be installed only once per process.
static INITIALISED: AtomicBool = AtomicBool::new(false);

/// Keeps the trace pipeline alive; dropping it flushes pending spans and shuts the exporter down.
/// Hold it in `main` until the service has drained.
#[must_use = "dropping the guard shuts the trace exporter down"]
pub struct TelemetryGuard {
    /// `None` when OTLP export is off or another `init` came first.
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Whether this guard owns an OTLP exporter (for start-up logs and tests).
    pub fn exports_traces(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(error) = provider.shutdown() {
                tracing::warn!(%error, "cannot flush traces on shutdown");
            }
        }
    }
}

/// Installs the tracing-subscriber fmt layer (filter from `RUST_LOG`, default `info`), plus an
/// OpenTelemetry OTLP trace exporter (HTTP/protobuf, or gRPC when `OTEL_EXPORTER_OTLP_PROTOCOL=grpc`) ONLY when `OTEL_EXPORTER_OTLP_ENDPOINT` is
/// set; otherwise there is no OTel layer at all. The `service.name` resource is `service_name`.
///
/// Safe to call several times in one process (tests run several services in-process): later
/// calls, and a call made after someone else installed a global subscriber, return a no-op guard.
pub fn init(service_name: &'static str) -> TelemetryGuard {
    if INITIALISED.swap(true, Ordering::AcqRel) {
        return TelemetryGuard { provider: None };
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let otlp_wanted = std::env::var_os(OTLP_ENDPOINT_ENV).is_some_and(|v| !v.is_empty());
    let (provider, export_error) = if otlp_wanted {
        match otlp_provider(service_name) {
            Ok(provider) => (Some(provider), None),
            Err(error) => (None, Some(error)),
        }
    } else {
        (None, None)
    };
    let otel_layer = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service_name)));
    // Spans are for the exporter: without one, a span would still be allocated and its
    // fields formatted for the log layer, on every stanza's path. Disabled at the callsite
    // instead, `info_span!` costs a load and a branch; log lines then carry no span context.
    let exporting = provider.is_some();
    let spans = tracing_subscriber::filter::filter_fn(move |m| exporting || !m.is_span());
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(spans)
        .with(tracing_subscriber::fmt::layer())
        .with(otel_layer)
        .try_init();
    if installed.is_err() {
        // Someone else owns the global subscriber; our spans would never reach the exporter.
        if let Some(provider) = provider {
            let _ = provider.shutdown();
        }
        return TelemetryGuard { provider: None };
    }
    if let Some(error) = export_error {
        tracing::warn!(%error, "OTLP trace export disabled: cannot build the exporter");
    }
    if let Some(provider) = &provider {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        opentelemetry::global::set_tracer_provider(provider.clone());
        tracing::info!(service = service_name, "exporting traces over OTLP");
    }
    TelemetryGuard { provider }
}

fn otlp_provider(service_name: &'static str) -> anyhow::Result<SdkTracerProvider> {
    use opentelemetry_otlp::WithExportConfig as _;
    // The exporter reads OTEL_EXPORTER_OTLP_ENDPOINT itself (and appends /v1/traces for HTTP).
    let exporter = match otlp_protocol().as_deref() {
        Some("grpc") => {
            // tonic's channel runs on the tokio runtime current at build time.
            if tokio::runtime::Handle::try_current().is_err() {
                anyhow::bail!("OTLP over gRPC needs telemetry::init to run inside a tokio runtime");
            }
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .build()?
        }
        Some("http/protobuf") | None => {
            // The batch processor runs on its own thread with a blocking HTTP client, so it
            // needs no tokio runtime and survives the runtime shutting down before the guard.
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .build()?
        }
        Some(other) => {
            anyhow::bail!("unsupported {OTLP_PROTOCOL_ENV} {other:?} (use http/protobuf or grpc)")
        }
    };
    let resource = Resource::builder().with_service_name(service_name).build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// The OTLP protocol asked for, traces-specific variable first, as the OTel spec orders them.
fn otlp_protocol() -> Option<String> {
    [OTLP_TRACES_PROTOCOL_ENV, OTLP_PROTOCOL_ENV]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
}

/// Writes the W3C trace context (`traceparent`/`tracestate`) of the current tracing span into AMQP
/// headers. Writes nothing when the span has no OpenTelemetry context (export off).
pub fn inject_context(headers: &mut FieldTable) {
    let context = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(headers));
}

/// Reads `traceparent`/`tracestate` from AMQP headers (long string or byte array values); an empty
/// Context if absent or malformed.
pub fn extract_context(headers: Option<&FieldTable>) -> opentelemetry::Context {
    let Some(headers) = headers else {
        return opentelemetry::Context::new();
    };
    TraceContextPropagator::new().extract(&HeaderExtractor::new(headers))
}

/// Makes `span` (a consumer's `process` span) a child of the message's creation context found
/// in `headers`, and links it to that context as the OpenTelemetry messaging conventions ask of
/// a consumer span; nothing when the headers carry no (valid) context.
pub fn set_parent_from_headers(span: &tracing::Span, headers: Option<&FieldTable>) {
    let context = extract_context(headers);
    let creation = context.span().span_context().clone();
    if !creation.is_valid() {
        return;
    }
    span.set_parent(context);
    span.add_link(creation);
}

struct HeaderInjector<'a>(&'a mut FieldTable);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(
            ShortString::from(key),
            AMQPValue::LongString(LongString::from(value)),
        );
    }
}

/// The trace headers of a message as text; other headers are left alone.
struct HeaderExtractor(HashMap<&'static str, String>);

impl HeaderExtractor {
    fn new(headers: &FieldTable) -> HeaderExtractor {
        let mut found = HashMap::new();
        for name in [TRACEPARENT_HEADER, TRACESTATE_HEADER] {
            let bytes = match headers.inner().get(name) {
                Some(AMQPValue::LongString(s)) => s.as_bytes(),
                Some(AMQPValue::ByteArray(b)) => b.as_slice(),
                _ => continue,
            };
            // Non-UTF-8 trace headers are malformed; treat them as absent.
            if let Ok(text) = std::str::from_utf8(bytes) {
                found.insert(name, text.to_owned());
            }
        }
        HeaderExtractor(found)
    }
}

impl Extractor for HeaderExtractor {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().copied().collect()
    }
}
