//! The trace viewer of `cargo xtask compose-check`, standing in for Jaeger all-in-one where
//! its image cannot be pulled: accepts OTLP/HTTP protobuf exports (`POST /v1/traces` on 4318,
//! what the services send with `OTEL_EXPORTER_OTLP_ENDPOINT=http://jaeger:4318`), keeps every
//! span in memory, and answers the subset of Jaeger's HTTP query API the check reads on 16686:
//! `GET /api/services` and `GET /api/traces?service=NAME` (every trace holding a span of that
//! service, in Jaeger's JSON shape: `traceID`, `spans` with `spanID`, `operationName`,
//! `references`, `tags`, `processID`, and `processes` with `serviceName` and `tags`). No UI,
//! no other query parameter, no gRPC, no storage beyond the process.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::Json;
use meerkat_testkit::otlp::{ExportedSpan, OtlpReceiver};
use serde_json::{json, Value};

type Receiver = Arc<OtlpReceiver>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let otlp: SocketAddr = std::env::var("OTLP_ADDR")
        .unwrap_or_else(|_| "0.0.0.0:4318".into())
        .parse()?;
    let query: SocketAddr = std::env::var("QUERY_ADDR")
        .unwrap_or_else(|_| "0.0.0.0:16686".into())
        .parse()?;
    let receiver = Arc::new(OtlpReceiver::start_on(otlp).await?);
    let app = axum::Router::new()
        .route("/api/services", axum::routing::get(services))
        .route("/api/traces", axum::routing::get(traces))
        .with_state(receiver);
    let listener = tokio::net::TcpListener::bind(query).await?;
    println!("meerkat-otlp-standin: OTLP/HTTP on {otlp}, query API on {query}");
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

async fn services(State(r): State<Receiver>) -> Json<Value> {
    let names: BTreeSet<String> = r.spans().into_iter().map(|s| s.service).collect();
    Json(json!({ "data": names, "total": names.len() }))
}

async fn traces(
    State(r): State<Receiver>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Json<Value> {
    let spans = r.spans();
    let service = q.get("service").cloned().unwrap_or_default();
    let wanted: BTreeSet<&str> = spans
        .iter()
        .filter(|s| service.is_empty() || s.service == service)
        .map(|s| s.trace_id.as_str())
        .collect();
    let mut by_trace: BTreeMap<&str, Vec<&ExportedSpan>> = BTreeMap::new();
    for s in spans
        .iter()
        .filter(|s| wanted.contains(s.trace_id.as_str()))
    {
        by_trace.entry(&s.trace_id).or_default().push(s);
    }
    let data: Vec<Value> = by_trace
        .into_iter()
        .map(|(trace_id, spans)| trace_json(trace_id, &spans))
        .collect();
    Json(json!({ "data": data, "total": data.len() }))
}

/// One trace in Jaeger's JSON: a process per distinct resource.
fn trace_json(trace_id: &str, spans: &[&ExportedSpan]) -> Value {
    let mut processes: Vec<&BTreeMap<String, String>> = Vec::new();
    let mut out = Vec::new();
    for s in spans {
        let index = match processes.iter().position(|p| **p == s.resource) {
            Some(i) => i,
            None => {
                processes.push(&s.resource);
                processes.len() - 1
            }
        };
        let mut references = Vec::new();
        if !s.parent_span_id.is_empty() {
            references.push(json!({
                "refType": "CHILD_OF", "traceID": trace_id, "spanID": s.parent_span_id,
            }));
        }
        for (t, l) in &s.links {
            references.push(json!({ "refType": "FOLLOWS_FROM", "traceID": t, "spanID": l }));
        }
        let mut tags = tags(&s.attributes);
        tags.push(json!({ "key": "span.kind", "type": "string", "value": s.kind }));
        out.push(json!({
            "traceID": trace_id,
            "spanID": s.span_id,
            "operationName": s.name,
            "references": references,
            "tags": tags,
            "processID": format!("p{}", index + 1),
        }));
    }
    let processes: serde_json::Map<String, Value> = processes
        .iter()
        .enumerate()
        .map(|(i, resource)| {
            let service = resource.get("service.name").cloned().unwrap_or_default();
            (
                format!("p{}", i + 1),
                json!({ "serviceName": service, "tags": tags(resource) }),
            )
        })
        .collect();
    json!({ "traceID": trace_id, "spans": out, "processes": processes })
}

fn tags(attributes: &BTreeMap<String, String>) -> Vec<Value> {
    attributes
        .iter()
        .map(|(k, v)| json!({ "key": k, "type": "string", "value": v }))
        .collect()
}
