//! The test client's WebSocket mode (RFC 7395): the same [`super::Client`] API over
//! `/xmpp-websocket`, so every helper works unchanged. What the client writes as TCP text
//! (stream header, stanzas, `</stream:stream>`) is cut into messages by the same
//! `meerkat_xmpp::framing` the gateway uses; what it receives is read one message at a time.
//! [`WsConn::send_frame`] and [`WsConn::send_binary`] send messages as they are, for
//! bad-input tests.

use std::time::Duration;

use anyhow::Context as _;
use futures::{SinkExt, StreamExt};
use meerkat_xmpp::framing::{frames, parse_frame};
use meerkat_xmpp::{Inbound, ReadError, StreamError};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::conn::Conn;

pub struct WsConn {
    ws: WebSocketStream<Conn>,
    tls: bool,
}

/// The handshake's subprotocol header, and optionally an `Origin`.
pub struct Handshake<'a> {
    pub protocol: Option<&'a str>,
    pub origin: Option<&'a str>,
}

impl Default for Handshake<'_> {
    fn default() -> Self {
        Handshake {
            protocol: Some("xmpp"),
            origin: None,
        }
    }
}

impl WsConn {
    /// The WebSocket handshake on `conn` (plain or TLS) for `/xmpp-websocket`.
    pub async fn connect(conn: Conn, host: &str, hs: &Handshake<'_>) -> anyhow::Result<WsConn> {
        let tls = conn.is_tls();
        let scheme = if tls { "wss" } else { "ws" };
        let mut request = format!("{scheme}://{host}/xmpp-websocket")
            .into_client_request()
            .context("WebSocket request")?;
        if let Some(p) = hs.protocol {
            request
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", HeaderValue::from_str(p)?);
        }
        if let Some(o) = hs.origin {
            request
                .headers_mut()
                .insert("Origin", HeaderValue::from_str(o)?);
        }
        let (ws, response) = tokio_tungstenite::client_async(request, conn)
            .await
            .context("WebSocket handshake")?;
        let agreed = response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok());
        anyhow::ensure!(
            agreed == Some("xmpp"),
            "the server did not agree to the xmpp subprotocol (RFC 7395 §3.1): {agreed:?}"
        );
        Ok(WsConn { ws, tls })
    }

    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Text as a TCP client would write it, sent as RFC 7395 messages.
    pub async fn write(&mut self, data: &str) -> anyhow::Result<()> {
        for frame in frames(data).map_err(|e| anyhow::anyhow!("not XML: {e}"))? {
            self.ws.feed(Message::text(frame)).await?;
        }
        self.ws.flush().await.context("write to server")
    }

    /// One text message, exactly as given.
    pub async fn send_frame(&mut self, text: &str) -> anyhow::Result<()> {
        self.ws
            .send(Message::text(text.to_owned()))
            .await
            .context("write to server")
    }

    /// One binary message.
    pub async fn send_binary(&mut self, data: &[u8]) -> anyhow::Result<()> {
        self.ws
            .send(Message::binary(data.to_vec()))
            .await
            .context("write to server")
    }

    pub async fn shutdown(&mut self) {
        let _ = self.ws.close(None).await;
    }

    /// The next message as what a TCP stream would have carried, or `None` if none came
    /// within `timeout` (a WebSocket read can be abandoned without losing anything).
    pub async fn read(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<Option<Result<Inbound, ReadError>>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let next = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Ok(None),
                Ok(None) => return Ok(Some(Err(ReadError::Eof))),
                Ok(Some(Err(e))) => return Ok(Some(Err(ReadError::Io(std::io::Error::other(e))))),
                Ok(Some(Ok(m))) => m,
            };
            match next {
                Message::Text(text) => match parse_frame(text.as_str(), &super::conn::limits()) {
                    Ok(None) => {}
                    Ok(Some(inbound)) => return Ok(Some(Ok(inbound))),
                    Err(e) => return Ok(Some(Err(e))),
                },
                Message::Binary(_) => {
                    return Ok(Some(Err(ReadError::Stream(StreamError::with_text(
                        "unsupported-encoding",
                        "the server sent a binary message",
                    )))))
                }
                Message::Close(_) => return Ok(Some(Err(ReadError::Eof))),
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }

    /// Sends a WebSocket ping and waits for its pong (other messages that arrive meanwhile
    /// are an error: use it on a quiet stream).
    pub async fn ping(&mut self, payload: &[u8], timeout: Duration) -> anyhow::Result<()> {
        self.ws.send(Message::Ping(payload.to_vec().into())).await?;
        let pong = tokio::time::timeout(timeout, self.ws.next())
            .await
            .context("no pong")?
            .context("connection closed")??;
        match pong {
            Message::Pong(p) if p.as_ref() == payload => Ok(()),
            other => anyhow::bail!("expected a pong, got {other:?}"),
        }
    }
}
