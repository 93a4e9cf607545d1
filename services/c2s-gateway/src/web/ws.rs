//! `/xmpp-websocket`: XMPP over WebSocket (RFC 7395). The upgrade checks what the RFC and the
//! configuration ask (the `xmpp` subprotocol, an allowed origin); the connection then becomes a
//! [`Transport`] whose reader parses one element per message and whose writer cuts the
//! engine's text into messages (`meerkat_xmpp::framing`). Negotiation, SASL, binding, stream
//! management, CSI, limits and rate shaping are the TCP connection's own code.

use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use meerkat_xmpp::framing::{frames, parse_frame};
use meerkat_xmpp::{Inbound, Limits, ReadError, StreamError};

use super::{Connection, Web};
use crate::conn::{Activity, Transport};

/// Bytes past `max_stanza_bytes` the WebSocket layer still reads as one message.
const LIBRARY_SLACK: usize = 64 * 1024;

/// What the WebSocket layer reads from the socket at a time, and the read buffer every
/// connection starts with: as a TCP connection's buffered reader (8 KiB). The library's default
/// (128 KiB, reserved at the upgrade) made an idle WebSocket session cost four times a TCP one
/// (docs/benchmarks.md, "Web transports"); a larger message grows the buffer as it comes.
const READ_BUFFER: usize = 8 * 1024;

/// RFC 7395 §3.1: the subprotocol a client must ask for, and the server name in its answer.
const SUBPROTOCOL: &str = "xmpp";

pub(super) async fn upgrade(
    State(web): State<Web>,
    Extension(conn): Extension<Connection>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        // Not a WebSocket handshake: axum's answer (405, 400, 426) says what is missing.
        Err(rejection) => return rejection.into_response(),
    };
    if !asks_for_xmpp(&headers) {
        return (
            StatusCode::BAD_REQUEST,
            "XMPP over WebSocket needs the subprotocol 'xmpp' in Sec-WebSocket-Protocol (RFC 7395 §3.1)\n",
        )
            .into_response();
    }
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    if !web.ctx.config.websocket_origins.allows(origin) {
        tracing::debug!(peer = %conn.peer, ?origin, "WebSocket from an origin not allowed");
        return (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
    }
    let Some(permit) = conn.permit.lock().take() else {
        // One upgrade per HTTP connection: the connection's place went with the first.
        return (StatusCode::BAD_REQUEST, "already upgraded\n").into_response();
    };
    // The library refuses a message past this as soon as a frame header announces it, before
    // buffering it; below it, the stream's own limit (10 KiB before authentication,
    // `max_stanza_bytes` after) is checked on the whole message. The slack lets a message a
    // little over the limit be read off and answered (`<policy-violation/>`) rather than cut
    // while the client still writes it, as the TCP reader reads off what follows an error.
    let max = web
        .ctx
        .config
        .max_stanza_bytes
        .saturating_add(LIBRARY_SLACK);
    let secure = conn.tls || web.ctx.config.plain_http_is_secure;
    ws.protocols([SUBPROTOCOL])
        .max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| async move {
            let ctx = web.ctx.clone();
            let transport = Transport::websocket(socket, ctx.limits, secure);
            let sessions = web.sessions.clone();
            web.sessions.spawn(async move {
                if let Some(session) =
                    crate::negotiate::serve_transport(ctx, transport, conn.peer, permit).await
                {
                    sessions.spawn(session);
                }
            });
        })
}

/// Whether `Sec-WebSocket-Protocol` lists `xmpp` (comma-separated, possibly over several
/// header lines).
fn asks_for_xmpp(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case(SUBPROTOCOL))
}

/// Splits an upgraded connection into the transport's reader and writer.
pub fn split(socket: WebSocket, limits: Limits, activity: Activity) -> (FrameReader, FrameWriter) {
    let (sink, stream) = socket.split();
    (
        FrameReader {
            stream,
            limits,
            activity,
        },
        FrameWriter { sink },
    )
}

/// The reading half: one [`Inbound`] per text message.
pub struct FrameReader {
    stream: SplitStream<WebSocket>,
    /// The current limits (those before authentication until the stream restarts).
    pub(crate) limits: Limits,
    activity: Activity,
}

impl FrameReader {
    pub async fn next(&mut self) -> Result<Inbound, ReadError> {
        loop {
            let message = match self.stream.next().await {
                None => return Err(ReadError::Eof),
                Some(Ok(m)) => m,
                Some(Err(e)) => return Err(read_error(e)),
            };
            match message {
                Message::Text(text) => {
                    self.activity.read(text.len());
                    if let Some(inbound) = parse_frame(text.as_str(), &self.limits)? {
                        return Ok(inbound);
                    }
                }
                Message::Binary(data) => {
                    self.activity.read(data.len());
                    // RFC 7395: XMPP travels in text messages of UTF-8 only. RFC 6120
                    // §4.9.3.22: a stream not encoded as the server supports.
                    return Err(ReadError::Stream(StreamError::with_text(
                        "unsupported-encoding",
                        "binary WebSocket messages are not XMPP: send text messages (RFC 7395)",
                    )));
                }
                // The library answers pings; either way the client is alive.
                Message::Ping(_) | Message::Pong(_) => self.activity.read(0),
                // The client closed the WebSocket without `<close/>`: the connection is gone
                // (with stream management the session waits for a resumption).
                Message::Close(_) => return Err(ReadError::Eof),
            }
        }
    }

    /// After a stream error: reads off what the client still sends until its close, briefly,
    /// so that it reads the error before the connection goes.
    pub async fn drain(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Some(Ok(_)) = self.stream.next().await {}
        })
        .await;
    }
}

fn read_error(e: axum::Error) -> ReadError {
    use tokio_tungstenite::tungstenite::Error as WsError;
    match e.into_inner().downcast::<WsError>().map(|b| *b) {
        Ok(WsError::Capacity(_)) => ReadError::Stream(StreamError::with_text(
            "policy-violation",
            "stanza too large",
        )),
        Ok(WsError::Utf8(_)) => ReadError::Stream(StreamError::with_text(
            "unsupported-encoding",
            "a text message that is not UTF-8",
        )),
        Ok(WsError::Protocol(p)) => ReadError::Stream(StreamError::with_text(
            "not-well-formed",
            format!("WebSocket protocol violation: {p}"),
        )),
        Ok(WsError::Io(io)) => ReadError::Io(io),
        _ => ReadError::Eof,
    }
}

/// The writing half: each element the engine writes becomes one text message.
pub struct FrameWriter {
    sink: SplitSink<WebSocket, Message>,
}

impl FrameWriter {
    pub async fn send(&mut self, text: &str) -> std::io::Result<()> {
        let messages = frames(text).map_err(std::io::Error::other)?;
        for m in messages {
            self.sink
                .feed(Message::Text(m.into()))
                .await
                .map_err(std::io::Error::other)?;
        }
        self.sink.flush().await.map_err(std::io::Error::other)
    }

    /// Sends the WebSocket close frame (after `<close/>`, RFC 7395 §3.6).
    pub async fn close(&mut self) {
        let _ = self.sink.close().await;
    }
}
