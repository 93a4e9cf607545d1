//! A client connection's byte stream and XML framing: plain TCP or TLS, STARTTLS upgrade,
//! stream restarts, and an activity clock (whitespace keepalives count as activity).
//!
//! Negotiation and sessions only use [`Transport`]'s read/write/restart, so another framing
//! (WebSocket, RFC 7395) can provide the same operations and reuse them.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use meerkat_xmpp::{Inbound, Limits, ReadError, StreamReader};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

pub enum Socket {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_flush(cx),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Milliseconds since a fixed start at which the peer last sent a byte.
#[derive(Clone)]
pub struct Activity {
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    pub fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(now, Ordering::Relaxed);
    }

    /// Time since the peer last sent anything.
    pub fn idle_for(&self) -> std::time::Duration {
        let last = self.last_ms.load(Ordering::Relaxed);
        self.start
            .elapsed()
            .saturating_sub(std::time::Duration::from_millis(last))
    }
}

impl Default for Activity {
    fn default() -> Activity {
        Activity::new()
    }
}

/// Read half that records activity.
pub struct Tracked {
    inner: ReadHalf<Socket>,
    activity: Activity,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

pub type Reader = StreamReader<BufReader<Tracked>>;

/// The read buffer in front of the XML parser. Small: under TLS, rustls already holds each
/// decrypted record, and the parser copies what it needs; every connection pays for it while
/// idle (tokio's default of 8 KiB was a fifth of an idle user's memory).
const READ_BUFFER: usize = 2048;

/// One client stream: XML in, text out.
pub struct Transport {
    reader: Reader,
    writer: WriteHalf<Socket>,
    secure: bool,
    limits: Limits,
    activity: Activity,
}

impl Transport {
    pub fn new(socket: Socket, limits: Limits) -> Transport {
        Transport::with_activity(socket, limits, Activity::new())
    }

    fn with_activity(socket: Socket, limits: Limits, activity: Activity) -> Transport {
        let secure = matches!(socket, Socket::Tls(_));
        activity.touch();
        let (read, writer) = tokio::io::split(socket);
        let tracked = Tracked {
            inner: read,
            activity: activity.clone(),
        };
        Transport {
            reader: StreamReader::new(BufReader::with_capacity(READ_BUFFER, tracked), limits),
            writer,
            secure,
            limits,
            activity,
        }
    }

    pub fn is_secure(&self) -> bool {
        self.secure
    }

    pub fn activity(&self) -> Activity {
        self.activity.clone()
    }

    pub async fn read(&mut self) -> Result<Inbound, ReadError> {
        self.reader.next().await
    }

    pub async fn write(&mut self, data: &str) -> io::Result<()> {
        self.writer.write_all(data.as_bytes()).await?;
        self.writer.flush().await
    }

    /// A new XML document begins on the same connection (after SASL success).
    pub fn restart(self) -> Transport {
        Transport {
            reader: self.reader.restart(),
            ..self
        }
    }

    /// Upgrades a plain connection to TLS after `<proceed/>` was sent.
    pub async fn starttls(self, acceptor: &TlsAcceptor) -> io::Result<Transport> {
        let buffered = self.reader.into_inner();
        if !buffered.buffer().is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "data received after <starttls/> before the TLS handshake",
            ));
        }
        let tracked = buffered.into_inner();
        let socket = tracked.inner.unsplit(self.writer);
        let Socket::Plain(tcp) = socket else {
            return Err(io::Error::other("TLS is already on"));
        };
        let tls = acceptor.accept(tcp).await?;
        Ok(Transport::with_activity(
            Socket::Tls(Box::new(tls)),
            self.limits,
            tracked.activity,
        ))
    }

    /// Splits the transport for a bound session: the reader goes to its own task.
    pub fn into_parts(self) -> (Reader, WriteHalf<Socket>) {
        (self.reader, self.writer)
    }
}
