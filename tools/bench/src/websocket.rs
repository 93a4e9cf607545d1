//! The bench client's WebSocket transport (RFC 7395): a `wss://…/xmpp-websocket` connection
//! bridged to an in-memory pipe that the client reads and writes exactly as a TCP stream. Up:
//! what the client wrote is cut into one message per element by the framing the gateway
//! itself uses (`meerkat_xmpp::framing::frames`: stream header → `<open/>`,
//! `</stream:stream>` → `<close/>`). Down: each message is written to the pipe as it came,
//! `<open/>` turned into a stream header and `<close/>` into `</stream:stream>`. The bridge
//! costs the load generator a parse of what it sends, not the server anything.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use anyhow::Context as _;
use futures::{SinkExt, StreamExt};
use meerkat_xmpp::framing::frames;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

use crate::client::BenchClient;

/// What the client reads and writes: a TLS connection (TCP, after STARTTLS) or the pipe to a
/// WebSocket bridge.
pub enum Io {
    Tls(Box<TlsStream<TcpStream>>),
    Pipe(DuplexStream),
}

/// Opens `wss://at/xmpp-websocket` (subprotocol `xmpp`; TLS SNI `domain`, any certificate)
/// and returns the pipe to its bridge.
pub async fn connect(at: SocketAddr, domain: &str) -> anyhow::Result<Io> {
    let tcp = TcpStream::connect(at)
        .await
        .with_context(|| format!("connect {at}"))?;
    tcp.set_nodelay(true)?;
    let tls = BenchClient::tls_connect(tcp, domain).await?;
    let mut request = format!("wss://{at}/xmpp-websocket").into_client_request()?;
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("xmpp"));
    let (ws, _) = tokio_tungstenite::client_async(request, tls)
        .await
        .context("WebSocket handshake")?;
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    tokio::spawn(bridge(ws, theirs));
    Ok(Io::Pipe(ours))
}

/// The most the client may have written that is not yet whole elements.
const MAX_PENDING: usize = 1 << 20;

async fn bridge(ws: tokio_tungstenite::WebSocketStream<TlsStream<TcpStream>>, pipe: DuplexStream) {
    let (mut sink, mut stream) = ws.split();
    let (mut from_client, mut to_client) = tokio::io::split(pipe);
    let up = async move {
        let mut pending = Vec::new();
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            let n = from_client.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            pending.extend_from_slice(&chunk[..n]);
            // A read may end inside a character or an element: wait for the rest.
            let Ok(text) = std::str::from_utf8(&pending) else {
                continue;
            };
            match frames(text) {
                Ok(messages) => {
                    for m in messages {
                        sink.feed(Message::text(m)).await?;
                    }
                    sink.flush().await?;
                    pending.clear();
                }
                Err(e) if pending.len() >= MAX_PENDING => anyhow::bail!("not XML: {e}"),
                Err(_) => {}
            }
        }
        let _ = sink.close().await;
        Ok::<_, anyhow::Error>(())
    };
    let down = async move {
        while let Some(m) = stream.next().await {
            let Message::Text(text) = m? else { continue };
            let text = text.as_str();
            if text.starts_with("<open") {
                to_client
                    .write_all(b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>")
                    .await?;
            } else if text.starts_with("<close") {
                to_client.write_all(b"</stream:stream>").await?;
            } else {
                to_client.write_all(text.as_bytes()).await?;
            }
        }
        let _ = to_client.shutdown().await;
        Ok::<_, anyhow::Error>(())
    };
    let _ = tokio::join!(up, down);
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Io::Pipe(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Io::Pipe(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Io::Pipe(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Io::Pipe(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
