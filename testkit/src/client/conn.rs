//! The test client's socket: plain TCP or TLS (accepting any certificate: tests talk to
//! servers with self-signed ones), split into a writer and an XML reader whose pending read
//! survives a timeout, so waiting "a little while" for a stanza never loses bytes.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use meerkat_xmpp::{Inbound, Limits, ReadError, StreamReader};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A client connection before or after TLS.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Conn {
    /// Wraps a plain connection in TLS; `domain` is the SNI name.
    pub async fn into_tls(self, domain: &str) -> anyhow::Result<Conn> {
        let Conn::Plain(tcp) = self else {
            anyhow::bail!("connection is already encrypted");
        };
        let name = ServerName::try_from(domain.to_owned()).context("domain as TLS name")?;
        let tls = connector()?
            .connect(name, tcp)
            .await
            .context("TLS handshake")?;
        Ok(Conn::Tls(Box::new(tls)))
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Conn::Tls(_))
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

type Reader = StreamReader<BufReader<ReadHalf<Conn>>>;
type PendingRead =
    Pin<Box<dyn Future<Output = (Reader, Result<Inbound, ReadError>)> + Send + Sync>>;

/// One client connection: an XML stream over TCP, or RFC 7395 messages over a WebSocket.
pub enum Wire {
    Xml(XmlConn),
    Ws(super::ws::WsConn),
}

impl Wire {
    pub fn is_tls(&self) -> bool {
        match self {
            Wire::Xml(x) => x.is_tls(),
            Wire::Ws(w) => w.is_tls(),
        }
    }

    pub async fn write(&mut self, data: &str) -> anyhow::Result<()> {
        match self {
            Wire::Xml(x) => x.write(data).await,
            Wire::Ws(w) => w.write(data).await,
        }
    }

    pub async fn shutdown(&mut self) {
        match self {
            Wire::Xml(x) => x.shutdown().await,
            Wire::Ws(w) => w.shutdown().await,
        }
    }

    pub async fn read(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<Option<Result<Inbound, ReadError>>> {
        match self {
            Wire::Xml(x) => x.read(timeout).await,
            Wire::Ws(w) => w.read(timeout).await,
        }
    }

    /// A new stream after SASL success: a new XML document on TCP; on a WebSocket every
    /// message stands alone already.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        match self {
            Wire::Xml(x) => x.restart(),
            Wire::Ws(_) => Ok(()),
        }
    }
}

/// Reading and writing halves of one XML stream.
pub struct XmlConn {
    /// The reader when no read is in flight; inside `pending` otherwise.
    reader: Option<Reader>,
    /// A read that timed out keeps running here and is resumed by the next read, because
    /// dropping it half-way would lose the bytes it already consumed.
    pending: Option<PendingRead>,
    writer: WriteHalf<Conn>,
    tls: bool,
}

impl XmlConn {
    pub fn new(conn: Conn) -> XmlConn {
        let tls = conn.is_tls();
        let (r, w) = tokio::io::split(conn);
        XmlConn {
            reader: Some(StreamReader::new(BufReader::new(r), limits())),
            pending: None,
            writer: w,
            tls,
        }
    }

    pub fn is_tls(&self) -> bool {
        self.tls
    }

    pub async fn write(&mut self, data: &str) -> anyhow::Result<()> {
        self.writer
            .write_all(data.as_bytes())
            .await
            .context("write to server")?;
        self.writer.flush().await.context("flush to server")
    }

    pub async fn shutdown(&mut self) {
        let _ = self.writer.shutdown().await;
    }

    /// The next event, or `None` if nothing complete arrived within `timeout`.
    pub async fn read(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<Option<Result<Inbound, ReadError>>> {
        let mut pending = match self.pending.take() {
            Some(p) => p,
            None => {
                let mut reader = self
                    .reader
                    .take()
                    .context("the stream reader was lost after an earlier failure")?;
                Box::pin(async move {
                    let r = reader.next().await;
                    (reader, r)
                })
            }
        };
        match tokio::time::timeout(timeout, pending.as_mut()).await {
            Ok((reader, r)) => {
                self.reader = Some(reader);
                Ok(Some(r))
            }
            Err(_) => {
                self.pending = Some(pending);
                Ok(None)
            }
        }
    }

    /// Starts a new XML document on the same bytes (after SASL success).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        let reader = self.idle_reader()?;
        self.reader = Some(reader.restart());
        Ok(())
    }

    /// Upgrades to TLS after `<proceed/>`. The server sends nothing more in clear text, so
    /// the reader's buffer must be empty.
    pub async fn starttls(self, domain: &str) -> anyhow::Result<XmlConn> {
        let XmlConn {
            reader,
            pending,
            writer,
            ..
        } = self;
        anyhow::ensure!(pending.is_none(), "a read is still in flight");
        let reader = reader.context("the stream reader was lost")?;
        let buffered = reader.into_inner();
        anyhow::ensure!(
            buffered.buffer().is_empty(),
            "server sent clear text after <proceed/>"
        );
        let conn = buffered.into_inner().unsplit(writer);
        Ok(XmlConn::new(conn.into_tls(domain).await?))
    }

    fn idle_reader(&mut self) -> anyhow::Result<Reader> {
        anyhow::ensure!(self.pending.is_none(), "a read is still in flight");
        self.reader.take().context("the stream reader was lost")
    }
}

pub(super) fn limits() -> Limits {
    // Generous: tests receive big rosters and archives; the server is the one under test.
    // Characters and names are still checked, so a test sees a poison stanza as an error.
    Limits {
        max_stanza_bytes: 16 * 1024 * 1024,
        max_depth: 64,
        ..Limits::internal()
    }
}

fn connector() -> anyhow::Result<TlsConnector> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Accepts every server certificate: the servers under test use self-signed ones. Never
/// use outside tests.
#[derive(Debug)]
struct AcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
