//! A session's way to its client: the connection it has now (none while detached under stream
//! management), and everything written through it. Every stanza goes through [`Link::stanza`]:
//! without stream management its broker delivery is acknowledged once it is written; with it,
//! once the client's `<a h/>` covers it (sm.rs), and it is kept meanwhile, for resumption or to
//! go back to the routers.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use meerkat_xmpp::{Inbound, ReadError, StreamError};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::conn::{Activity, Transport, Writer};
use crate::csi::{Csi, CsiLimits, Offer};
use crate::handoff::{Counted, End};
use crate::handover::Settle;
use crate::registry::{Acks, Delivered};
use crate::roster_order::RosterOrder;
use crate::sm::{self, Sm};
use crate::Ctx;

/// A new connection that resumes a session (XEP-0198), handed over by negotiation.
pub struct Resumption {
    pub transport: Transport,
    pub counted: Counted,
    /// The client's `h`: what it received of the session's stanzas.
    pub h: u32,
    /// The `previd` it resumed, echoed in `<resumed/>`, and how that is written.
    pub resumed: sm::ResumedAs,
}

/// One client connection of a session: its read task (parsed input arrives in `input`), and
/// the write half with a deadline on every write.
pub struct Conn {
    writer: Writer,
    pub input: mpsc::Receiver<Box<Result<Inbound, ReadError>>>,
    read_task: JoinHandle<()>,
    /// Cancelled after a stream error: the read task then reads and discards what the client
    /// still sends, briefly, instead of ending ([`crate::conn::Reader::drain`]).
    linger: CancellationToken,
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
        let linger = CancellationToken::new();
        let read_task = tokio::spawn(crate::session::read_loop(
            reader,
            tx,
            linger.clone(),
            activity.clone(),
            ctx.config.client_rates(),
            ctx.metrics.throttled.clone(),
        ));
        Conn {
            writer,
            input,
            read_task,
            linger,
            activity,
            _counted: counted,
            timeout: Duration::from_secs(ctx.config.write_timeout_secs.get()),
            pinged: false,
        }
    }

    pub async fn send(&mut self, xml: &str) -> Result<(), End> {
        match tokio::time::timeout(self.timeout, self.writer.send(xml)).await {
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
        // The client is owed the error: it must be able to read it, so its input is read
        // and discarded while it does (the task ends by itself, in at most a second).
        if matches!(end, End::Error(_)) {
            self.linger.cancel();
        } else {
            self.read_task.abort();
        }
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
                let _ = self.writer.send(&text).await;
            }
            self.writer.shutdown().await;
        })
        .await;
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if !self.linger.is_cancelled() {
            self.read_task.abort();
        }
    }
}

/// What a session writes through, and what it keeps of what it wrote.
pub struct Link {
    pub conn: Option<Conn>,
    /// Stream management, once the client enabled it.
    pub sm: Option<Sm<Delivered>>,
    /// Client state indication, once the client said it is inactive (XEP-0352).
    csi: Option<Box<Csi<Delivered>>>,
    /// Stanzas decided to be written, in order, not yet taken to write (a batch a flush of
    /// the CSI queue released): what a cut-off write leaves behind stays here.
    pending: VecDeque<Delivered>,
    /// Without stream management: the stanza whose write did not complete (it goes back to
    /// the routers first).
    pub unwritten: Option<Delivered>,
    /// Bytes of unacknowledged stanzas that may be kept (`max_queued_bytes`).
    cap: usize,
    pub acks: Acks,
    /// `meerkat_gateway_csi_saved_stanzas` and `_bytes`.
    saved: (Counter, Counter),
    /// After the session moved here: what reached it directly, held a moment
    /// ([`crate::handover::Settle`]).
    settle: Option<Box<Settle<Delivered>>>,
    /// The versions of the roster pushes written, per item ([`RosterOrder`]).
    roster: RosterOrder,
}

impl Link {
    pub fn new(ctx: &Ctx, conn: Conn) -> Link {
        Link {
            conn: Some(conn),
            sm: None,
            csi: None,
            pending: VecDeque::new(),
            unwritten: None,
            cap: ctx.config.max_queued_bytes,
            acks: ctx.acks.clone(),
            saved: (
                ctx.metrics.csi_saved.clone(),
                ctx.metrics.csi_saved_bytes.clone(),
            ),
            settle: None,
            roster: RosterOrder::default(),
        }
    }

    /// A stanza for the client: written now, or held while the client is inactive (CSI).
    /// Cancel-safe: what a cut-off write leaves is kept (pending, unacknowledged, or
    /// `unwritten`), for [`Link::take_kept`].
    pub async fn stanza(&mut self, d: Delivered) -> Result<(), End> {
        self.enqueue(d);
        self.flush().await
    }

    /// Takes a stanza to write: pending, or held by CSI.
    fn enqueue(&mut self, d: Delivered) {
        // A roster push older than one written for its item: done with, never written.
        if self.roster.stale(&d.xml) {
            tracing::debug!(id = ?d.id, "stale roster push not written");
            d.settle(&self.acks);
            return;
        }
        match self.csi.as_mut() {
            Some(csi) if self.conn.is_some() => {
                let xml = d.xml.clone();
                match csi.offer(d, &xml) {
                    Offer::Send(batch) => self.pending.extend(batch),
                    Offer::Held { superseded } => {
                        // A presence replaced by a newer one from the same sender: never
                        // written, done with.
                        if let Some(old) = superseded {
                            self.saved.0.inc();
                            self.saved.1.inc_by(old.xml.len() as u64);
                            old.settle(&self.acks);
                        }
                    }
                }
            }
            _ => self.pending.push_back(d),
        }
    }

    /// The session moved here and the old holder's fence came: `came` (what reached this
    /// gateway directly before it, each with when it came) and what comes directly for
    /// [`crate::handover::SETTLE`] are held a moment ([`Link::direct`]).
    pub async fn settle(&mut self, came: Vec<(Instant, Delivered)>) -> Result<(), End> {
        self.settle = Some(Box::new(Settle::new(Instant::now(), came)));
        self.release_due().await
    }

    /// A stanza that reached this gateway directly (not forwarded by an old holder): held a
    /// moment while the session settles after a move, else as [`Link::stanza`].
    pub async fn direct(&mut self, d: Delivered) -> Result<(), End> {
        let d = match self.settle.as_mut() {
            Some(s) => match s.hold(Instant::now(), d) {
                Ok(()) => return self.release_due().await,
                Err(d) => d,
            },
            None => d,
        };
        self.release_due().await?;
        self.stanza(d).await
    }

    /// When held direct stanzas are next due, if any are held.
    pub fn next_release(&self) -> Option<Instant> {
        self.settle.as_ref().and_then(|s| s.next())
    }

    /// Writes the held direct stanzas that are due; the settling ends once it is over.
    /// Cancel-safe: what is due is taken to write before anything is written.
    pub async fn release_due(&mut self) -> Result<(), End> {
        let Some(s) = self.settle.as_mut() else {
            return Ok(());
        };
        let now = Instant::now();
        let due = s.due(now);
        if s.over(now) {
            self.settle = None;
        }
        for d in due {
            self.enqueue(d);
        }
        self.flush().await
    }

    /// With stream management: what the client has yet to acknowledge is over half of what
    /// may be kept for it. The session then writes nothing more until acks come (a client
    /// whose acks lag behind a backlog written at the socket's pace is not cut for it); what
    /// comes meanwhile waits in the mailbox, against its cap.
    pub fn awaits_acks(&self) -> bool {
        self.conn.is_some()
            && self
                .sm
                .as_ref()
                .is_some_and(|sm| sm.unacked_bytes() > self.cap / 2)
    }

    /// The client said `<inactive/>`.
    pub fn inactive(&mut self) {
        self.csi
            .get_or_insert_with(|| Box::new(Csi::new(CsiLimits::default())))
            .set_inactive();
    }

    /// The client said `<active/>`: what was held is written, in order.
    pub async fn active(&mut self) -> Result<(), End> {
        if let Some(mut csi) = self.csi.take() {
            self.pending.extend(csi.set_active());
        }
        self.flush().await
    }

    /// The connection is gone: what CSI held is due like everything else (kept with stream
    /// management, sent back otherwise); the next connection starts active.
    pub fn release_held(&mut self) {
        if let Some(mut csi) = self.csi.take() {
            self.pending.extend(csi.take_all());
        }
        if let Some(mut s) = self.settle.take() {
            self.pending.extend(s.take_all());
        }
    }

    /// Writes what is pending, in order.
    async fn flush(&mut self) -> Result<(), End> {
        while let Some(d) = self.pending.pop_front() {
            self.write(d).await?;
        }
        Ok(())
    }

    /// Writes one stanza (with stream management: numbers and keeps it, and while detached
    /// only keeps it).
    async fn write(&mut self, d: Delivered) -> Result<(), End> {
        let Link {
            conn,
            sm,
            unwritten,
            cap,
            acks,
            ..
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
            if sm.should_request() || (sm.requested.is_none() && sm.unacked_bytes() > *cap / 2) {
                sm.requested = Some(std::time::Instant::now());
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
    /// unacknowledged stanzas or the one whose write did not complete, then what was pending
    /// or held.
    pub fn take_kept(&mut self) -> Vec<Delivered> {
        self.release_held();
        let mut out = self
            .sm
            .as_mut()
            .map(|sm| sm.take_unacked())
            .unwrap_or_default();
        out.extend(self.unwritten.take());
        out.extend(self.pending.drain(..));
        out
    }
}
