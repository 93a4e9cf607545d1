//! The admin HTTP port every service exposes: liveness, readiness and Prometheus metrics.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// The content type of the OpenMetrics text format that prometheus-client writes.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Shared state of the admin endpoint: two levels of readiness. `local` is true while the
/// service is connected and serves its own DC (its consumers subscribed); `ready` is true
/// while, on top of that, it can do its part of cross-DC work (for most services the same;
/// the session replicator also needs a view of every reachable peer DC: docs/operations.md).
#[derive(Clone)]
pub struct AdminState {
    /// True once the service can serve, cross-DC work included; `/readyz` reports it.
    pub ready: Arc<AtomicBool>,
    /// True once the service serves its own DC; `/readyz/local` reports it.
    pub local: Arc<AtomicBool>,
    /// The metrics `/metrics` encodes; services register their metrics before building the state.
    registry: Arc<Registry>,
}

impl AdminState {
    /// State that starts not ready, serving the metrics of `registry`.
    pub fn new(registry: Registry) -> AdminState {
        AdminState {
            ready: Arc::new(AtomicBool::new(false)),
            local: Arc::new(AtomicBool::new(false)),
            registry: Arc::new(registry),
        }
    }

    /// Marks the service ready (connected and serving) or not (starting, draining, disconnected).
    /// Both levels alike (a service with no cross-DC condition of its own).
    pub fn set_ready(&self, ready: bool) {
        self.set_readiness(ready, ready);
    }

    /// Serving its own DC (`local`) and ready for cross-DC work too (`ready`, which implies
    /// `local`).
    pub fn set_readiness(&self, local: bool, ready: bool) {
        self.local.store(local, Ordering::Release);
        self.ready.store(local && ready, Ordering::Release);
    }

    /// Whether `/readyz/local` currently answers 200.
    pub fn is_locally_ready(&self) -> bool {
        self.local.load(Ordering::Acquire)
    }

    /// Whether `/readyz` currently answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The registry `/metrics` encodes.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// GET /healthz -> 200 "ok"; GET /readyz -> 200 "ready" or 503 "not ready"; GET /readyz/local
/// -> the same for serving its own DC only (what a start inside one DC waits for before the
/// next service); GET /metrics ->
/// Prometheus text (content-type application/openmetrics-text; version=1.0.0; charset=utf-8).
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/readyz/local", get(readyz_local))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Binds (port 0 allowed) and serves until `shutdown` is cancelled; returns the bound address and
/// the task.
pub async fn serve(
    addr: SocketAddr,
    state: AdminState,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    serve_with(addr, state, Router::new(), shutdown).await
}

/// Like [`serve`], with a service's own admin routes (e.g. the router's `/directory`) beside
/// the common three.
pub async fn serve_with(
    addr: SocketAddr,
    state: AdminState,
    extra: Router,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = router(state).merge(extra);
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(error) = served {
            tracing::error!(%error, addr = %local, "admin endpoint failed");
        }
    });
    tracing::info!(addr = %local, "admin endpoint listening");
    Ok((local, task))
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AdminState>) -> (StatusCode, &'static str) {
    if state.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn readyz_local(State(state): State<AdminState>) -> (StatusCode, &'static str) {
    if state.is_locally_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, state.registry()) {
        Ok(()) => ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], body).into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot encode metrics");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics").into_response()
        }
    }
}
