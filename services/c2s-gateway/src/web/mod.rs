//! The HTTP listener for web clients, plain and over TLS: XMPP over WebSocket
//! (`/xmpp-websocket`, RFC 7395, [`ws`]), BOSH (`/http-bind`, XEP-0124/0206, [`bosh`]) and where to find it (`/.well-known/host-meta` and
//! `/.well-known/host-meta.json`, XEP-0156, [`host_meta`]). It accepts connections itself, so
//! they take one of `max_connections` like TCP clients, may open with a PROXY header from a
//! listed load balancer, and get the gateway's certificate on the HTTPS port.

pub mod bosh;
mod host_meta;
pub mod origins;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::{Extension, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;

use crate::conn::Socket;
use crate::Ctx;

/// The path of the WebSocket endpoint.
pub const WEBSOCKET_PATH: &str = "/xmpp-websocket";

/// What every request handler shares.
#[derive(Clone)]
pub(crate) struct Web {
    pub ctx: Arc<Ctx>,
    /// The gateway's session tasks: a WebSocket session is drained at shutdown like the others.
    pub sessions: TaskTracker,
    /// The gateway's `max_connections`: a BOSH session takes one of them, as a connection.
    pub permits: Arc<Semaphore>,
}

/// The HTTP connection a request came on.
#[derive(Clone)]
pub(crate) struct Connection {
    /// The client (after a PROXY header, the one it names).
    pub peer: SocketAddr,
    /// Came over the HTTPS listener.
    pub tls: bool,
    /// The connection's place among `max_connections`; a WebSocket upgrade takes it along.
    pub permit: Arc<Mutex<Option<OwnedSemaphorePermit>>>,
}

fn router(web: Web) -> Router {
    Router::new()
        .route(WEBSOCKET_PATH, get(ws::upgrade))
        .route(
            bosh::BOSH_PATH,
            axum::routing::post(bosh::post).options(bosh::options),
        )
        .route("/.well-known/host-meta", get(host_meta::host_meta))
        .route("/.well-known/host-meta.json", get(host_meta::host_meta))
        .with_state(web)
}

/// Longest a client may take to send a request's headers (a slow client holds a permit).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts HTTP connections on `listener` (`tls`: the HTTPS one) until shutdown.
pub(crate) async fn serve(web: Web, listener: TcpListener, tls: bool, permits: Arc<Semaphore>) {
    let app = router(web.clone());
    let ctx = web.ctx.clone();
    loop {
        let (tcp, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = ctx.shutdown.cancelled() => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "connection limit reached");
            continue;
        };
        let app = app.clone();
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let Some(socket) = accept(&ctx, tcp, peer, tls).await else {
                return;
            };
            let (socket, peer) = socket;
            let conn = Connection {
                peer,
                tls,
                permit: Arc::new(Mutex::new(Some(permit))),
            };
            let service = TowerToHyperService::new(app.layer(Extension(conn)));
            let http = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(socket), service)
                .with_upgrades();
            tokio::select! {
                r = http => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "HTTP connection ended");
                    }
                }
                // An upgraded connection has left `http` already; this ends idle keep-alives.
                _ = ctx.shutdown.cancelled() => {}
            }
        });
    }
}

/// The PROXY header (from a listed balancer), then TLS on the HTTPS listener.
async fn accept(
    ctx: &Ctx,
    mut tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: bool,
) -> Option<(Socket, SocketAddr)> {
    let _ = tcp.set_nodelay(true);
    let peer =
        crate::proxy::client_address(&mut tcp, peer, &ctx.config.proxy_protocol_from).await?;
    if !tls {
        return Some((Socket::Plain(tcp), peer));
    }
    match tokio::time::timeout(Duration::from_secs(10), ctx.tls.accept(tcp)).await {
        Ok(Ok(stream)) => Some((Socket::Tls(Box::new(stream)), peer)),
        _ => None,
    }
}
