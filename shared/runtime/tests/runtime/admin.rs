use axum::body::Body;
use axum::http::{Request, StatusCode};
use meerkat_runtime::admin::{router, serve, AdminState};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

fn state() -> AdminState {
    let mut registry = Registry::default();
    let stanzas: Counter = Counter::default();
    stanzas.inc_by(3);
    registry.register("stanzas_routed", "Stanzas routed", stanzas);
    AdminState::new(registry)
}

async fn get(state: &AdminState, path: &str) -> (StatusCode, Option<String>, String) {
    let response = router(state.clone())
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        content_type,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

#[tokio::test]
async fn healthz_is_ok() {
    let (status, _, body) = get(&state(), "/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "ok");
}

#[tokio::test]
async fn readyz_follows_the_flag() {
    let state = state();
    let (status, _, body) = get(&state, "/readyz").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    );
    state.set_ready(true);
    let (status, _, body) = get(&state, "/readyz").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ready"));
    state.set_ready(false);
    let (status, _, _) = get(&state, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn metrics_are_openmetrics_text() {
    let (status, content_type, body) = get(&state(), "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        content_type.as_deref(),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(body.contains("stanzas_routed_total 3"), "{body}");
    assert!(body.ends_with("# EOF\n"), "{body}");
}

#[tokio::test]
async fn unknown_path_is_404() {
    let (status, _, _) = get(&state(), "/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn serve_binds_port_zero_and_stops_on_cancel() {
    let state = state();
    state.set_ready(true);
    let shutdown = CancellationToken::new();
    let (addr, task) = serve("127.0.0.1:0".parse().unwrap(), state, shutdown.clone())
        .await
        .unwrap();
    assert_ne!(addr.port(), 0);

    // A raw HTTP/1.0 request: enough to prove the port serves the router.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /readyz HTTP/1.0\r\nHost: admin\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.0 200"), "{response}");
    assert!(response.ends_with("ready"), "{response}");

    shutdown.cancel();
    tokio::time::timeout(std::time::Duration::from_secs(5), task)
        .await
        .expect("admin server stops after cancel")
        .unwrap();
}

#[tokio::test]
async fn serve_with_adds_a_service_route_beside_the_common_ones() {
    let shutdown = CancellationToken::new();
    let extra = axum::Router::new().route("/directory", axum::routing::get(|| async { "[]" }));
    let (addr, task) = meerkat_runtime::admin::serve_with(
        "127.0.0.1:0".parse().unwrap(),
        state(),
        extra,
        shutdown.clone(),
    )
    .await
    .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for (path, want) in [("/directory", "[]"), ("/healthz", "ok")] {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: admin\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.0 200"), "{response}");
        assert!(response.ends_with(want), "{response}");
    }
    shutdown.cancel();
    task.await.unwrap();
}
