//! A client connection's byte stream and XML framing: plain TCP or TLS, STARTTLS upgrade,
//! stream restarts, and an activity clock (whitespace keepalives count as activity).
//!
//! Negotiation and sessions only use [`Transport`]'s read/write/restart, so a WebSocket
//! connection (RFC 7395, `crate::web::ws`) is a [`Transport`] too: its reader yields the same
//! [`Inbound`] items, its writer takes the same text, and the one protocol engine serves both;
//! so is a BOSH session (XEP-0206, `crate::web::bosh`).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use meerkat_xmpp::{Inbound, Limits, ReadError, StreamReader};
use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf, ReadHalf, WriteHalf};
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

/// Milliseconds since a fixed start at which the peer last sent a byte, and how many bytes it
/// sent (what the session's byte rate limit charges).
#[derive(Clone)]
pub struct Activity {
    start: Instant,
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    last_ms: AtomicU64,
    bytes: AtomicU64,
}

impl Activity {
    pub fn new() -> Activity {
        Activity {
            start: Instant::now(),
            counters: Arc::default(),
        }
    }

    pub(crate) fn touch(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.counters.last_ms.store(now, Ordering::Relaxed);
    }

    pub(crate) fn read(&self, n: usize) {
        self.touch();
        self.counters
            .bytes
            .fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Bytes the peer sent so far.
    pub fn bytes_read(&self) -> u64 {
        self.counters.bytes.load(Ordering::Relaxed)
    }

    /// Time since the peer last sent anything.
    pub fn idle_for(&self) -> std::time::Duration {
        let last = self.counters.last_ms.load(Ordering::Relaxed);
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

/// The client's read half, buffered for the XML parser and recording activity. The buffer
/// exists only while it holds bytes not yet parsed: an idle connection keeps none (a fixed
/// buffer cost every idle user its size; under TLS rustls holds the records anyway, and the
/// parser copies what it needs).
pub struct Tracked {
    inner: ReadHalf<Socket>,
    activity: Activity,
    /// Read but not yet consumed: `buf[pos..]`; empty and unallocated when all is consumed.
    buf: Vec<u8>,
    pos: usize,
}

/// The most read from the socket at once (on the stack, then copied into a buffer of the size
/// actually read).
const READ_CHUNK: usize = 4096;

impl Tracked {
    fn new(inner: ReadHalf<Socket>, activity: Activity) -> Tracked {
        Tracked {
            inner,
            activity,
            buf: Vec::new(),
            pos: 0,
        }
    }

    /// Bytes read and not yet consumed.
    fn buffer(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Reads from the socket into `buf`, recording activity when bytes came.
    fn poll_socket(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read(buf.filled().len() - before);
        }
        r
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos == self.buf.len() {
            return self.poll_socket(cx, buf);
        }
        let n = self.buffer().len().min(buf.remaining());
        buf.put_slice(&self.buffer()[..n]);
        self.consume(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncBufRead for Tracked {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        if this.pos == this.buf.len() {
            let mut chunk = [0u8; READ_CHUNK];
            let mut read = ReadBuf::new(&mut chunk);
            std::task::ready!(this.poll_socket(cx, &mut read))?;
            this.buf = read.filled().to_vec();
            this.pos = 0;
        }
        Poll::Ready(Ok(&this.buf[this.pos..]))
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        this.pos = (this.pos + amt).min(this.buf.len());
        if this.pos == this.buf.len() {
            this.buf = Vec::new();
            this.pos = 0;
        }
    }
}

/// What a client sends, as stream headers, stanzas and the stream's end.
// The TCP reader is the larger and the common case: boxing it would cost each TCP connection
// an allocation and a pointer for the sake of keeping WebSocket ones smaller.
#[allow(clippy::large_enum_variant)]
pub enum Reader {
    /// An XML stream over TCP (plain or TLS).
    Xml(StreamReader<Tracked>),
    /// One element per WebSocket message.
    Frames(crate::web::ws::FrameReader),
    /// The children of BOSH request bodies.
    Bosh(crate::web::bosh::BoshReader),
}

impl Reader {
    pub async fn next(&mut self) -> Result<Inbound, ReadError> {
        match self {
            Reader::Xml(r) => r.next().await,
            Reader::Frames(f) => f.next().await,
            Reader::Bosh(b) => b.next().await,
        }
    }

    /// Reads and discards what the client still sends, for at most a second and 256 KiB, or
    /// until it closes: what lets the client read a stream error before the socket closes
    /// (closing one that holds unread input makes the kernel reset the connection, and the
    /// reset can destroy the error in the client's receive buffer).
    pub async fn drain(&mut self) {
        use tokio::io::AsyncReadExt;
        let tracked = match self {
            Reader::Xml(r) => r.get_mut(),
            Reader::Frames(f) => return f.drain().await,
            // Nothing to read off: what a request brought was taken whole.
            Reader::Bosh(_) => return,
        };
        let mut sink = [0u8; 4096];
        let mut left: usize = 256 * 1024;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
            while left > 0 {
                match tracked.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        })
        .await;
    }

    fn restart_with(self, limits: Limits) -> Reader {
        match self {
            Reader::Xml(r) => Reader::Xml(r.restart_with(limits)),
            Reader::Frames(mut f) => {
                f.limits = limits;
                Reader::Frames(f)
            }
            Reader::Bosh(mut b) => {
                b.set_limits(limits);
                Reader::Bosh(b)
            }
        }
    }
}

/// Where text for the client goes: the socket, or WebSocket messages cut from it.
pub enum Writer {
    Stream(WriteHalf<Socket>),
    Frames(crate::web::ws::FrameWriter),
    Bosh(crate::web::bosh::BoshWriter),
}

impl Writer {
    /// Writes and flushes.
    pub async fn send(&mut self, data: &str) -> io::Result<()> {
        match self {
            Writer::Stream(w) => {
                w.write_all(data.as_bytes()).await?;
                w.flush().await
            }
            Writer::Frames(f) => f.send(data).await,
            Writer::Bosh(b) => b.send(data).await,
        }
    }

    /// Ends the connection's sending side (a WebSocket close frame on a WebSocket).
    pub async fn shutdown(&mut self) {
        match self {
            Writer::Stream(w) => {
                let _ = w.shutdown().await;
            }
            Writer::Frames(f) => f.close().await,
            Writer::Bosh(b) => b.close().await,
        }
    }
}

/// One client stream: XML in, text out.
pub struct Transport {
    reader: Reader,
    writer: Writer,
    secure: bool,
    /// STARTTLS can upgrade it (plain TCP; a WebSocket's TLS is the HTTPS listener's).
    upgradable: bool,
    /// The limits once authenticated; before, [`Limits::unauthenticated`] of them.
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
        Transport {
            // Until SASL succeeds the peer is anonymous: small stanzas only (see `restart`).
            reader: Reader::Xml(StreamReader::new(
                Tracked::new(read, activity.clone()),
                limits.unauthenticated(),
            )),
            writer: Writer::Stream(writer),
            secure,
            upgradable: !secure,
            limits,
            activity,
        }
    }

    /// A WebSocket connection (RFC 7395): `secure` when it came over HTTPS, or over plain
    /// HTTP that the configuration trusts (`plain_http_is_secure`).
    pub fn websocket(
        socket: axum::extract::ws::WebSocket,
        limits: Limits,
        secure: bool,
    ) -> Transport {
        let activity = Activity::new();
        activity.touch();
        let (reader, writer) =
            crate::web::ws::split(socket, limits.unauthenticated(), activity.clone());
        Transport {
            reader: Reader::Frames(reader),
            writer: Writer::Frames(writer),
            secure,
            upgradable: false,
            limits,
            activity,
        }
    }

    /// A BOSH session (XEP-0124/0206): `secure` as for a WebSocket.
    pub fn bosh(
        reader: crate::web::bosh::BoshReader,
        writer: crate::web::bosh::BoshWriter,
        limits: Limits,
        secure: bool,
        activity: Activity,
    ) -> Transport {
        Transport {
            reader: Reader::Bosh(reader),
            writer: Writer::Bosh(writer),
            secure,
            upgradable: false,
            limits,
            activity,
        }
    }

    /// Whether STARTTLS may be offered.
    pub fn can_starttls(&self) -> bool {
        self.upgradable
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
        self.writer.send(data).await
    }

    /// After a stream error: stop writing, then let the client read the error
    /// ([`Reader::drain`]).
    pub async fn linger(&mut self) {
        self.writer.shutdown().await;
        self.reader.drain().await;
    }

    /// A new XML document begins on the same connection after SASL success: the peer is
    /// authenticated now and gets the full limits.
    pub fn restart(self) -> Transport {
        Transport {
            reader: self.reader.restart_with(self.limits),
            ..self
        }
    }

    /// Upgrades a plain connection to TLS after `<proceed/>` was sent.
    pub async fn starttls(self, acceptor: &TlsAcceptor) -> io::Result<Transport> {
        let (Reader::Xml(reader), Writer::Stream(writer)) = (self.reader, self.writer) else {
            return Err(io::Error::other("no STARTTLS on a WebSocket"));
        };
        let tracked = reader.into_inner();
        if !tracked.buffer().is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "data received after <starttls/> before the TLS handshake",
            ));
        }
        let socket = tracked.inner.unsplit(writer);
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
    pub fn into_parts(self) -> (Reader, Writer) {
        (self.reader, self.writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    use tokio::net::TcpListener;

    /// A plain connection's read half and the client's end of it.
    async fn pair() -> (Tracked, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (read, _write) = tokio::io::split(Socket::Plain(server));
        (Tracked::new(read, Activity::new()), client)
    }

    #[tokio::test]
    async fn the_read_buffer_is_released_once_everything_read_is_consumed() {
        let (mut tracked, mut client) = pair().await;
        client.write_all(b"<message>hello</message>").await.unwrap();
        let got = tracked.fill_buf().await.unwrap().to_vec();
        assert_eq!(got, b"<message>hello</message>");
        Pin::new(&mut tracked).consume(9);
        assert_eq!(tracked.buffer(), b"hello</message>");
        let mut rest = [0u8; 5];
        tracked.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"hello");
        Pin::new(&mut tracked).consume(10);
        assert_eq!(
            tracked.buf.capacity(),
            0,
            "an idle connection keeps no buffer"
        );

        client.write_all(b"<presence/>").await.unwrap();
        let mut line = Vec::new();
        tracked.read_until(b'>', &mut line).await.unwrap();
        assert_eq!(line, b"<presence/>");
        assert_eq!(tracked.buf.capacity(), 0);
    }

    #[tokio::test]
    async fn data_after_the_buffer_is_read_from_the_socket() {
        let (mut tracked, mut client) = pair().await;
        client.write_all(b"ab").await.unwrap();
        assert_eq!(tracked.fill_buf().await.unwrap(), b"ab");
        client.write_all(b"cd").await.unwrap();
        drop(client);
        let mut all = Vec::new();
        tracked.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"abcd");
    }
}
