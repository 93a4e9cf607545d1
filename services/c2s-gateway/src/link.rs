//! A session's way to its client: the connection it has now (none while detached under stream
//! management), and everything written through it. Every stanza goes through [`Link::stanza`]:
//! without stream management its broker delivery is acknowledged once it is written; with it,
//! once the client's `<a h/>` covers it (sm.rs), and it is kept meanwhile, for resumption or to
//! go back to the routers.

use std::time::Duration;

use meerkat_xmpp::{Inbound, ReadError, StreamError};
use tokio::io::{AsyncWriteExt, WriteHalf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::conn::{Activity, Socket, Transport};
use crate::handoff::{Counted, End};
use crate::registry::{Acks, Delivered};
use crate::sm::{self, Sm};
use crate::Ctx;

/// A new connection that resumes a session (XEP-0198), handed over by negotiation.
pub struct Resumption {
    pub transport: Transport,
    pub counted: Counted,
    /// The client's `h`: what it received of the session's stanzas.
    pub h: u32,
    /// The `previd` it resumed, echoed in `<resumed/>`.
    pub previd: String,
}

/// One client connection of a session: its read task (parsed input arrives in `input`), and
/// the write half with a deadline on every write.
pub struct Conn {
    writer: WriteHalf<Socket>,
    pub input: mpsc::Receiver<Box<Result<Inbound, ReadError>>>,
    read_task: JoinHandle<()>,
    pub activity: Activity,
    _counted: Counted,
    /// Longest one write may take: past it the client has stopped reading.
    timeout: Duration,
    /// A ping went out and nothing came back since (`idle_timeout_secs`).
    pub pinged: bool,
}

impl Conn {
    /// Takes over a negotiated transport; its reader runs on a task of its own.
    pub fn open(ctx: &Ctx, transport: Transport, counted: Counted) -> Conn {
        let activity = transport.activity();
        let (reader, writer) = transport.into_parts();
        // What the client sends waits in the channel until the session takes it.
        let (tx, input) = mpsc::channel(64);
        let read_task = tokio::spawn(crate::session::read_loop(
            reader,
            tx,
            activity.clone(),
            ctx.config.client_rates(),
            ctx.metrics.throttled.clone(),
        ));
        Conn {
            writer,
            input,
            read_task,
            activity,
            _counted: counted,
            timeout: Duration::from_secs(ctx.config.write_timeout_secs.get()),
            pinged: false,
        }
    }

    pub async fn send(&mut self, xml: &str) -> Result<(), End> {
        let write = async {
            self.writer.write_all(xml.as_bytes()).await?;
            self.writer.flush().await
        };
        match tokio::time::timeout(self.timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Gone),
            // RFC 6120 §4.9.3.4: the other party seems to have lost the ability to communicate.
            Err(_) => Err(End::Error(StreamError::with_text(
                "connection-timeout",
                "the client does not read what it is sent",
            ))),
        }
    }

    /// Ends the connection: the stream error or close it is owed, then the socket.
    pub async fn finish(mut self, ctx: &Ctx, end: End) {
        self.read_task.abort();
        let text = match &end {
            End::Error(e) => {
                ctx.metrics
                    .stream_errors
                    .get_or_create(&crate::metrics::KindLabel {
                        kind: e.condition.to_owned(),
                    })
                    .inc();
                format!("{}</stream:stream>", e.to_xml())
            }
            End::ClientClosed => "</stream:stream>".to_owned(),
            End::Gone => String::new(),
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            if !text.is_empty() {
                let _ = self.writer.write_all(text.as_bytes()).await;
                let _ = self.writer.flush().await;
            }
            let _ = self.writer.shutdown().await;
        })
        .await;
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.read_task.abort();
    }
}

/// What a session writes through, and what it keeps of what it wrote.
pub struct Link {
    pub conn: Option<Conn>,
    /// Stream management, once the client enabled it.
    pub sm: Option<Sm<Delivered>>,
    /// Without stream management: the stanza whose write did not complete (it goes back to
    /// the routers first).
    pub unwritten: Option<Delivered>,
    /// Bytes of unacknowledged stanzas that may be kept (`max_queued_bytes`).
    cap: usize,
    pub acks: Acks,
}

impl Link {
    pub fn new(conn: Conn, cap: usize, acks: Acks) -> Link {
        Link {
            conn: Some(conn),
            sm: None,
            unwritten: None,
            cap,
            acks,
        }
    }

    /// Writes a stanza to the client (with stream management: numbers and keeps it, and while
    /// detached only keeps it). Cancel-safe: a stanza whose write was cut off is kept (in the
    /// unacknowledged queue, or as `unwritten`).
    pub async fn stanza(&mut self, d: Delivered) -> Result<(), End> {
        let Link {
            conn,
            sm,
            unwritten,
            cap,
            acks,
        } = self;
        if let Some(sm) = sm {
            let len = d.xml.len();
            sm.wrote(d, len);
            if sm.unacked_bytes() > *cap {
                return Err(End::Error(StreamError::with_text(
                    "policy-violation",
                    format!(
                        "too many unacknowledged stanzas ({} bytes): the client does not acknowledge",
                        sm.unacked_bytes()
                    ),
                )));
            }
            let Some(conn) = conn else { return Ok(()) };
            if let Some(last) = sm.newest() {
                conn.send(&last.xml).await?;
            }
            if sm.should_request() {
                sm.requested = true;
                conn.send(&sm::request()).await?;
            }
            return Ok(());
        }
        let Some(conn) = conn else {
            *unwritten = Some(d);
            return Err(End::Gone);
        };
        let pending = unwritten.insert(d);
        conn.send(&pending.xml).await?;
        if let Some(d) = unwritten.take() {
            d.settle(acks);
        }
        Ok(())
    }

    /// Writes something that is not a stanza (stream management's own elements).
    pub async fn raw(&mut self, xml: &str) -> Result<(), End> {
        match &mut self.conn {
            Some(conn) => conn.send(xml).await,
            None => Ok(()),
        }
    }

    /// Everything kept for the client, oldest first, to go back to the routers: the
    /// unacknowledged stanzas, or the one whose write did not complete.
    pub fn take_kept(&mut self) -> Vec<Delivered> {
        let mut out = self
            .sm
            .as_mut()
            .map(|sm| sm.take_unacked())
            .unwrap_or_default();
        out.extend(self.unwritten.take());
        out
    }
}
