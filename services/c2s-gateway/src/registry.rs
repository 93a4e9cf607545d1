//! The sessions this gateway instance holds, by session id and by full JID (sorted, so an
//! account's sessions are one range), and the mailbox into each session's task.
//!
//! A mailbox never makes the one who hands something in wait: the delivery consumer is shared
//! by every session of the gateway, so a session that cannot keep up must not slow the others.
//! Instead each mailbox counts the bytes of the stanzas waiting in it; past its cap the session
//! is told to end, and everything still in it goes back to the routers, in order. A batch the
//! server sends at once (an offline backlog, a bundle) is paced instead: what does not fit in
//! half the cap waits behind, and is let in as the session takes ([`Mailbox::offer_paced`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use meerkat_bus::lapin::{acker::Acker, options::BasicAckOptions};
use parking_lot::Mutex;
use tokio::sync::{mpsc, Notify};
use uuid::Uuid;

use crate::sm::ResumeId;

/// A stanza for the client and, when it came from the broker, its delivery: acknowledged only
/// once the stanza is safe (written; with stream management, acknowledged by the client; or
/// sent back to the routers), so that a gateway that dies leaves it in its queue.
#[derive(Debug)]
pub struct Delivered {
    pub xml: String,
    pub ack: Option<BrokerAck>,
    /// The broker delivery's message id (what a bounce of it is keyed by).
    pub id: Option<Box<str>>,
    /// When the gateway got it (the time a redelivered message is stamped with).
    pub at: std::time::SystemTime,
}

impl Delivered {
    /// A stanza from the broker, acknowledged through `ack`.
    pub fn from_broker(xml: String, ack: Acker, id: Option<&str>) -> Delivered {
        Delivered::copy(xml, BrokerAck::One(Box::new(ack)), id)
    }

    /// One copy of a broker delivery that carried several (a fan-out, crate::delivery).
    pub fn copy(xml: String, ack: BrokerAck, id: Option<&str>) -> Delivered {
        Delivered {
            xml,
            ack: Some(ack),
            id: id.map(Box::from),
            at: std::time::SystemTime::now(),
        }
    }

    /// A stanza the gateway makes itself (a reply): nothing to acknowledge.
    pub fn own(xml: String) -> Delivered {
        Delivered {
            xml,
            ack: None,
            id: None,
            at: std::time::SystemTime::now(),
        }
    }

    /// Acknowledges the broker's delivery, if any (through the gateway's acknowledger: the
    /// session does not wait for it).
    pub fn settle(self, acks: &Acks) {
        if let Some(ack) = self.ack {
            ack.settle(acks);
        }
    }
}

/// What acknowledges a stanza's broker delivery: its own, or a share of one that carried
/// several copies (a fan-out), acknowledged when its last copy is settled.
#[derive(Debug, Clone)]
pub enum BrokerAck {
    /// Boxed: a [`Delivered`] stays small, whichever it holds.
    One(Box<Acker>),
    Shared(Arc<SharedAck>),
}

/// A broker delivery that carried `left` copies still unsettled.
#[derive(Debug)]
pub struct SharedAck {
    acker: Acker,
    left: std::sync::atomic::AtomicUsize,
}

impl SharedAck {
    /// A delivery carrying `copies` copies, each to be settled once.
    pub fn new(acker: Acker, copies: usize) -> Arc<SharedAck> {
        Arc::new(SharedAck {
            acker,
            left: std::sync::atomic::AtomicUsize::new(copies),
        })
    }
}

impl BrokerAck {
    /// One copy is safe: the delivery is acknowledged if it was its own, or its last.
    pub fn settle(self, acks: &Acks) {
        match self {
            BrokerAck::One(ack) => {
                let _ = acks.send(*ack);
            }
            BrokerAck::Shared(shared) => {
                if shared
                    .left
                    .fetch_sub(1, std::sync::atomic::Ordering::AcqRel)
                    == 1
                {
                    let _ = acks.send(shared.acker.clone());
                }
            }
        }
    }
}

/// Where sessions hand the deliveries to acknowledge: one task acknowledges them all
/// ([`acknowledge`]), so no session waits on the broker for it.
pub type Acks = mpsc::UnboundedSender<Acker>;

/// Acknowledges what the sessions hand over, until every sender is gone.
pub async fn acknowledge(mut rx: mpsc::UnboundedReceiver<Acker>) {
    while let Some(ack) = rx.recv().await {
        let _ = ack.ack(BasicAckOptions::default()).await;
    }
}

/// What other parts of the gateway ask of a session task.
#[derive(Debug)]
pub enum Outbound {
    /// A stanza to write to the client.
    Stanza(Delivered),
    /// Another login took this full JID: end with `<conflict/>`.
    Conflict,
    /// Publish the session's state again (a router asked for a resync).
    Announce,
    /// End the stream with this error (the account was removed or its password changed).
    End(meerkat_xmpp::StreamError),
    /// The client resumed at another gateway: hand the session over (crate::handover).
    Handover(Box<meerkat_wire::handover::Request>),
    /// A stanza the previous holder of a session moved here forwarded (crate::handover).
    Forwarded(Delivered),
    /// The previous holder forwards nothing more.
    Fence,
}

impl Outbound {
    /// The stanza this carries, if any (what counts against the mailbox's cap).
    fn stanza(&self) -> Option<&Delivered> {
        match self {
            Outbound::Stanza(d) | Outbound::Forwarded(d) => Some(d),
            _ => None,
        }
    }

    /// The bytes it counts against the mailbox's cap.
    fn len(&self) -> usize {
        self.stanza().map_or(0, |d| d.xml.len())
    }

    /// The stanza of a [`Outbound::Stanza`] or [`Outbound::Forwarded`] made by the mailbox.
    fn into_stanza(self) -> Delivered {
        match self {
            Outbound::Stanza(d) | Outbound::Forwarded(d) => d,
            _ => unreachable!("the mailbox makes only stanzas of what it is offered"),
        }
    }
}

/// Slots an emptied mailbox may keep; beyond, it lets them go.
const IDLE_CAPACITY: usize = 16;

/// The sending side of a session's mailbox: cheap to clone, never blocks.
#[derive(Clone)]
pub struct Mailbox(Arc<Slot>);

/// The session's side of its mailbox.
pub struct Inbox(Arc<Slot>);

struct Slot {
    /// Bytes of stanzas that may wait before the session is ended.
    cap: usize,
    queue: Mutex<Queue>,
    /// Wakes the session: something was handed in, or the mailbox overflowed. One waiter (the
    /// session's task), so a stored permit is never lost.
    wake: Notify,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Outbound>,
    /// Bytes of the stanzas in `items`.
    bytes: usize,
    /// What waits behind `items` ([`Mailbox::offer_paced`]): let in, in order, while `items`
    /// holds at most half the cap. Anything handed in while something waits here queues
    /// behind it, so the order holds.
    held: VecDeque<Outbound>,
    /// Bytes of the stanzas in `held`.
    held_bytes: usize,
    phase: Phase,
}

/// How many times its cap a mailbox may hold back of a paced batch ([`Mailbox::offer_paced`])
/// before its session is told to end: a login's offline backlog (at most the routers'
/// `max_offline` messages) fits, a session that never reads does not pin more.
pub const HELD_FACTOR: usize = 16;

impl Queue {
    /// Lets what waits behind in while the session's side holds at most half of `cap`.
    fn let_in(&mut self, cap: usize) {
        while self.bytes <= cap / 2 {
            let Some(item) = self.held.pop_front() else {
                break;
            };
            if let Some(d) = item.stanza() {
                self.held_bytes -= d.xml.len();
                self.bytes += d.xml.len();
            }
            self.items.push_back(item);
        }
    }

    /// The oldest thing waiting, in `items` or behind them.
    fn pop_any(&mut self) -> Option<Outbound> {
        if let Some(item) = self.items.pop_front() {
            if let Some(d) = item.stanza() {
                self.bytes -= d.xml.len();
            }
            return Some(item);
        }
        let item = self.held.pop_front()?;
        if let Some(d) = item.stanza() {
            self.held_bytes -= d.xml.len();
        }
        Some(item)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Phase {
    /// The session writes what it is handed.
    #[default]
    Open,
    /// The session is ending (its cap was passed, or it ended for another reason): what is
    /// handed in still queues, so that the session bounces everything in the order it came.
    Ending,
    /// The session bounced everything: whoever holds a stanza for it bounces it themselves.
    Gone,
}

/// A new mailbox that holds at most `cap` bytes of stanzas while its session is open.
pub fn mailbox(cap: usize) -> (Mailbox, Inbox) {
    let slot = Arc::new(Slot {
        cap,
        queue: Mutex::new(Queue::default()),
        wake: Notify::new(),
    });
    (Mailbox(slot.clone()), Inbox(slot))
}

impl Mailbox {
    /// Hands a stanza to the session without waiting. Past the cap the session is told to end
    /// (the stanza still queues, behind the others, to be bounced with them). `Ok(true)` when
    /// the mailbox is more than half full (the session is backing up: the caller may let it
    /// write before handing it more). `Err` gives the stanza back when the session is gone: the
    /// caller bounces it.
    pub fn offer(&self, d: Delivered) -> Result<bool, Delivered> {
        self.put(Outbound::Stanza(d), false)
    }

    /// [`Mailbox::offer`] of a stanza forwarded by the session's previous holder.
    pub fn offer_forwarded(&self, d: Delivered) -> Result<bool, Delivered> {
        self.put(Outbound::Forwarded(d), false)
    }

    /// [`Mailbox::offer`] of one stanza of a batch the server sends at once (a bundle: a
    /// login's offline backlog, say), which comes faster than any client reads: what does not
    /// fit in half the cap waits behind, not counted against the cap, and is let in as the
    /// session takes. Past [`HELD_FACTOR`] times the cap waiting behind, the session is told to
    /// end, as past the cap.
    pub fn offer_paced(&self, d: Delivered) -> Result<bool, Delivered> {
        self.put(Outbound::Stanza(d), true)
    }

    fn put(&self, item: Outbound, paced: bool) -> Result<bool, Delivered> {
        let mut q = self.0.queue.lock();
        let cap = self.0.cap;
        let behind = !q.held.is_empty() || (paced && q.bytes + item.len() > cap / 2);
        match q.phase {
            Phase::Gone => return Err(item.into_stanza()),
            // Behind what waits there already: the order holds.
            _ if behind => {
                self.hold(q, item);
                return Ok(true);
            }
            Phase::Open if q.bytes + item.len() > cap => q.phase = Phase::Ending,
            Phase::Open | Phase::Ending => {}
        }
        q.bytes += item.len();
        q.items.push_back(item);
        let backing_up = q.phase == Phase::Open && q.bytes > cap / 2;
        drop(q);
        self.0.wake.notify_one();
        Ok(backing_up)
    }

    /// Queues `item` behind what waits already ([`Queue::held`]).
    fn hold(&self, mut q: parking_lot::MutexGuard<'_, Queue>, item: Outbound) {
        q.held_bytes += item.len();
        if q.phase == Phase::Open && q.held_bytes > self.0.cap.saturating_mul(HELD_FACTOR) {
            q.phase = Phase::Ending;
        }
        q.held.push_back(item);
        drop(q);
        self.0.wake.notify_one();
    }

    /// Asks something of the session (not a stanza: it does not count against the cap).
    /// False when the session is gone.
    pub fn tell(&self, what: Outbound) -> bool {
        let mut q = self.0.queue.lock();
        if q.phase != Phase::Open {
            return q.phase == Phase::Ending;
        }
        if !q.held.is_empty() {
            // In its place behind the stanzas waiting (a handover's fence after its forwards).
            self.hold(q, what);
            return true;
        }
        q.items.push_back(what);
        drop(q);
        self.0.wake.notify_one();
        true
    }
}

/// What the session's task takes from its mailbox.
pub enum Next {
    Item(Outbound),
    /// More waits than the cap allows: the client does not read fast enough.
    Overflowed {
        bytes: usize,
    },
}

impl Inbox {
    /// The next thing to do, in the order handed in; waits when there is none.
    pub async fn next(&self) -> Next {
        loop {
            {
                let mut q = self.0.queue.lock();
                if q.phase != Phase::Open {
                    return Next::Overflowed {
                        bytes: q.bytes + q.held_bytes,
                    };
                }
                if let Some(item) = q.items.pop_front() {
                    if let Some(d) = item.stanza() {
                        q.bytes -= d.xml.len();
                    }
                    q.let_in(self.0.cap);
                    // A burst leaves its capacity behind; an idle session keeps none.
                    if q.items.is_empty() && q.items.capacity() > IDLE_CAPACITY {
                        q.items = VecDeque::new();
                    }
                    if q.held.is_empty() && q.held.capacity() > IDLE_CAPACITY {
                        q.held = VecDeque::new();
                    }
                    return Next::Item(item);
                }
                // Everything let in was taken: what waits behind comes next.
                if !q.held.is_empty() {
                    q.let_in(self.0.cap);
                    continue;
                }
            }
            self.0.wake.notified().await;
        }
    }

    /// While the session writes no stanza (its client has yet to acknowledge what it was
    /// sent): the first request that ends or moves the session, wherever it waits (those do not
    /// depend on the stanzas' order: what waits is bounced or moved in order after them), or
    /// the overflow; waits otherwise. Stanzas and other steps stay in their place.
    pub async fn next_urgent(&self) -> Next {
        let urgent = |o: &Outbound| {
            matches!(
                o,
                Outbound::Handover(_) | Outbound::Conflict | Outbound::End(_)
            )
        };
        loop {
            {
                let mut q = self.0.queue.lock();
                if q.phase != Phase::Open {
                    return Next::Overflowed {
                        bytes: q.bytes + q.held_bytes,
                    };
                }
                if let Some(at) = q.items.iter().position(urgent) {
                    if let Some(item) = q.items.remove(at) {
                        return Next::Item(item);
                    }
                }
                if let Some(at) = q.held.iter().position(urgent) {
                    if let Some(item) = q.held.remove(at) {
                        return Next::Item(item);
                    }
                }
            }
            self.0.wake.notified().await;
        }
    }

    /// Resolves once the mailbox overflowed (to stop a write that does not progress). Not to be
    /// awaited together with [`Inbox::next`].
    pub async fn overflowed(&self) -> usize {
        loop {
            {
                let q = self.0.queue.lock();
                if q.phase != Phase::Open {
                    return q.bytes + q.held_bytes;
                }
            }
            self.0.wake.notified().await;
        }
    }

    /// The session stops writing: from now on what is handed in only queues for [`Inbox::drain`].
    pub fn close(&self) {
        let mut q = self.0.queue.lock();
        if q.phase == Phase::Open {
            q.phase = Phase::Ending;
        }
    }

    /// Takes every stanza waiting now, in order, leaving the mailbox as it is: what comes
    /// later still waits in it (for [`Inbox::drain`]).
    pub fn take_waiting(&self) -> Vec<Delivered> {
        let mut q = self.0.queue.lock();
        let mut taken = Vec::new();
        while let Some(item) = q.pop_any() {
            if let Outbound::Stanza(d) | Outbound::Forwarded(d) = item {
                taken.push(d);
            }
        }
        taken
    }

    /// Takes the oldest stanza left, or, when none is left, marks the mailbox gone in the same
    /// step, so that no stanza can slip in behind the last one taken.
    pub fn drain(&self) -> Option<Delivered> {
        let mut q = self.0.queue.lock();
        while let Some(item) = q.pop_any() {
            if let Outbound::Stanza(d) | Outbound::Forwarded(d) = item {
                return Some(d);
            }
        }
        q.phase = Phase::Gone;
        None
    }
}

#[derive(Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

/// One session: its full JID, the fingerprint of the credentials it authenticated with
/// (`crate::accounts`), its channel, and how a new connection resumes it (stream management).
struct Entry {
    jid: String,
    credentials: u64,
    tx: Mailbox,
    /// Boxed: most sessions never enable resumption.
    resume: Option<Box<Resumable>>,
}

/// How a resumable session is resumed: its id (with the secret its client was given), and the
/// channel that hands it a new connection.
pub struct Resumable {
    pub id: ResumeId,
    /// A channel's slots are allocated in blocks of 32: what it carries is boxed.
    pub tx: mpsc::Sender<Box<crate::session::Resumption>>,
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<Uuid, Entry>,
    by_jid: BTreeMap<String, Uuid>,
}

impl Registry {
    /// Adds a session; returns the mailbox of a session this one replaces (same full JID).
    pub fn insert(&self, id: Uuid, jid: &str, credentials: u64, tx: Mailbox) -> Option<Mailbox> {
        let mut inner = self.inner.lock();
        let replaced = inner
            .by_jid
            .insert(jid.to_owned(), id)
            .and_then(|old| inner.by_id.remove(&old))
            .map(|e| e.tx);
        inner.by_id.insert(
            id,
            Entry {
                jid: jid.to_owned(),
                credentials,
                tx,
                resume: None,
            },
        );
        replaced
    }

    pub fn remove(&self, id: Uuid) {
        let mut inner = self.inner.lock();
        if let Some(e) = inner.by_id.remove(&id) {
            if inner.by_jid.get(&e.jid) == Some(&id) {
                inner.by_jid.remove(&e.jid);
            }
        }
    }

    pub fn get(&self, id: Uuid) -> Option<Mailbox> {
        self.inner.lock().by_id.get(&id).map(|e| e.tx.clone())
    }

    /// The session bound to a full JID now.
    pub fn get_by_jid(&self, jid: &str) -> Option<Mailbox> {
        let inner = self.inner.lock();
        let id = inner.by_jid.get(jid)?;
        inner.by_id.get(id).map(|e| e.tx.clone())
    }

    pub fn all(&self) -> Vec<Mailbox> {
        self.inner
            .lock()
            .by_id
            .values()
            .map(|e| e.tx.clone())
            .collect()
    }

    /// The sessions of account `bare` (a normalised bare JID): fingerprint and channel.
    pub fn of_account(&self, bare: &str) -> Vec<(u64, Mailbox)> {
        let inner = self.inner.lock();
        let prefix = format!("{bare}/");
        inner
            .by_jid
            .range(prefix.clone()..)
            .take_while(|(jid, _)| jid.starts_with(&prefix))
            .filter_map(|(_, id)| inner.by_id.get(id))
            .map(|e| (e.credentials, e.tx.clone()))
            .collect()
    }

    /// How many sessions account `bare` has here, not counting `full` (a bind of a full JID
    /// already bound replaces that session rather than adding one).
    pub fn count_account(&self, bare: &str, full: &str) -> usize {
        let inner = self.inner.lock();
        let prefix = format!("{bare}/");
        inner
            .by_jid
            .range(prefix.clone()..)
            .take_while(|(jid, _)| jid.starts_with(&prefix))
            .filter(|(jid, _)| jid.as_str() != full)
            .count()
    }

    /// The session can be resumed from now on (stream management with resumption enabled).
    pub fn set_resumable(&self, id: Uuid, resumable: Resumable) {
        if let Some(e) = self.inner.lock().by_id.get_mut(&id) {
            e.resume = Some(Box::new(resumable));
        }
    }

    /// Where to hand a connection that resumes `rid`, if this gateway holds that resumable
    /// session of account `bare` and `rid` carries its secret. Anything else (unknown, ended,
    /// another account's, a wrong secret) is the same `None`.
    pub fn resumable(
        &self,
        rid: &ResumeId,
        bare: &str,
    ) -> Option<mpsc::Sender<Box<crate::session::Resumption>>> {
        let inner = self.inner.lock();
        let e = inner.by_id.get(inner.by_jid.get(&rid.jid)?)?;
        let r = e.resume.as_ref()?;
        let owner = e.jid.split('/').next() == Some(bare);
        (owner & r.id.same_secret(rid)).then(|| r.tx.clone())
    }

    /// The session changed its own account's password: its credentials are the new ones.
    pub fn set_credentials(&self, id: Uuid, credentials: u64) {
        if let Some(e) = self.inner.lock().by_id.get_mut(&id) {
            e.credentials = credentials;
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().by_id.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stanza(n: usize) -> String {
        format!("<message id='{n}'/>")
    }

    fn d(n: usize) -> Delivered {
        Delivered::own(stanza(n))
    }

    fn xml(d: Option<Delivered>) -> Option<String> {
        d.map(|d| d.xml)
    }

    fn take(inbox: &Inbox) -> Option<Next> {
        poll_once(inbox.next())
    }

    /// Polls a future once: the mailbox answers at once or waits.
    fn poll_once<F: std::future::Future>(f: F) -> Option<F::Output> {
        let mut f = std::pin::pin!(f);
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        }
    }

    #[test]
    fn stanzas_come_out_in_the_order_handed_in() {
        let (tx, rx) = mailbox(1024);
        for n in 0..3 {
            tx.offer(d(n)).unwrap();
        }
        for n in 0..3 {
            match take(&rx) {
                Some(Next::Item(Outbound::Stanza(got))) => assert_eq!(got.xml, stanza(n)),
                _ => panic!("expected stanza {n}"),
            }
        }
        assert!(take(&rx).is_none(), "an empty mailbox waits");
    }

    #[test]
    fn past_the_cap_the_session_is_told_to_end_and_nothing_is_lost_or_reordered() {
        let one = stanza(0).len();
        let (tx, rx) = mailbox(one * 2);
        tx.offer(d(0)).unwrap();
        tx.offer(d(1)).unwrap();
        assert!(poll_once(rx.overflowed()).is_none(), "at the cap: fine");
        tx.offer(d(2)).unwrap();
        assert_eq!(poll_once(rx.overflowed()), Some(one * 3));
        assert!(matches!(take(&rx), Some(Next::Overflowed { .. })));
        // Still handed in while the session ends: queued behind the others.
        tx.offer(d(3)).unwrap();
        rx.close();
        let drained: Vec<String> = std::iter::from_fn(|| xml(rx.drain())).collect();
        assert_eq!(drained, (0..4).map(stanza).collect::<Vec<_>>());
        // Gone: the caller gets the stanza back to bounce it itself.
        assert_eq!(tx.offer(d(4)).map_err(|d| d.xml), Err(stanza(4)));
        assert!(!tx.tell(Outbound::Conflict));
    }

    fn taken(inbox: &Inbox) -> Vec<String> {
        std::iter::from_fn(|| match take(inbox) {
            Some(Next::Item(Outbound::Stanza(d) | Outbound::Forwarded(d))) => Some(d.xml),
            Some(Next::Item(Outbound::Fence)) => Some("fence".to_owned()),
            _ => None,
        })
        .collect()
    }

    #[test]
    fn a_paced_batch_past_the_cap_waits_behind_and_comes_whole_and_in_order() {
        let one = stanza(0).len();
        let (tx, rx) = mailbox(one * 4);
        // Ten times the cap, handed in while the session takes nothing.
        for n in 0..40 {
            tx.offer_paced(d(n)).unwrap();
        }
        assert!(
            poll_once(rx.overflowed()).is_none(),
            "a paced batch is no overflow"
        );
        // What comes meanwhile, a stanza or a step, queues behind the batch.
        tx.offer(d(40)).unwrap();
        tx.offer_forwarded(d(41)).unwrap();
        assert!(tx.tell(Outbound::Fence));
        let q = rx.0.queue.lock();
        assert!(q.bytes <= one * 2, "let in: half the cap at most");
        drop(q);
        let mut want: Vec<String> = (0..42).map(stanza).collect();
        want.push("fence".to_owned());
        assert_eq!(taken(&rx), want);
        let q = rx.0.queue.lock();
        assert_eq!((q.bytes, q.held_bytes, q.held.len()), (0, 0, 0));
        drop(q);
        // Emptied, the mailbox takes stanzas as before.
        tx.offer(d(42)).unwrap();
        assert_eq!(taken(&rx), vec![stanza(42)]);
    }

    #[test]
    fn a_paced_batch_past_its_bound_ends_the_session_and_nothing_is_lost_or_reordered() {
        let one = stanza(0).len();
        let (tx, rx) = mailbox(one * 2);
        let past = 2 * HELD_FACTOR + 2;
        for n in 0..past {
            tx.offer_paced(d(n)).unwrap();
        }
        assert!(poll_once(rx.overflowed()).is_some());
        assert!(matches!(take(&rx), Some(Next::Overflowed { .. })));
        tx.offer(d(past)).unwrap();
        rx.close();
        let drained: Vec<String> = std::iter::from_fn(|| xml(rx.drain())).collect();
        assert_eq!(drained, (0..=past).map(stanza).collect::<Vec<_>>());
        assert!(tx.offer_paced(d(0)).is_err(), "gone: given back");
    }

    #[test]
    fn what_waits_behind_is_taken_by_a_handover_too() {
        let one = stanza(0).len();
        let (tx, rx) = mailbox(one * 2);
        for n in 0..6 {
            tx.offer_paced(d(n)).unwrap();
        }
        let waiting: Vec<String> = rx.take_waiting().into_iter().map(|d| d.xml).collect();
        assert_eq!(waiting, (0..6).map(stanza).collect::<Vec<_>>());
        assert!(take(&rx).is_none(), "nothing left");
    }

    #[test]
    fn while_no_stanza_is_taken_only_an_end_or_a_move_is() {
        let one = stanza(0).len();
        let (tx, rx) = mailbox(one * 4);
        tx.offer(d(0)).unwrap();
        assert!(tx.tell(Outbound::Fence));
        assert!(
            poll_once(rx.next_urgent()).is_none(),
            "a stanza and a fence wait"
        );
        assert!(tx.tell(Outbound::Conflict));
        assert!(matches!(
            poll_once(rx.next_urgent()),
            Some(Next::Item(Outbound::Conflict))
        ));
        assert_eq!(taken(&rx), vec![stanza(0), "fence".to_owned()]);
        for n in 1..6 {
            tx.offer(d(n)).unwrap();
        }
        assert!(matches!(
            poll_once(rx.next_urgent()),
            Some(Next::Overflowed { .. })
        ));
    }

    #[test]
    fn taking_a_stanza_frees_its_bytes() {
        let one = stanza(0).len();
        let (tx, rx) = mailbox(one);
        for n in 0..10 {
            tx.offer(d(n)).unwrap();
            assert!(matches!(take(&rx), Some(Next::Item(_))));
        }
        assert!(poll_once(rx.overflowed()).is_none());
    }

    #[test]
    fn an_emptied_mailbox_lets_its_burst_capacity_go() {
        let (tx, rx) = mailbox(usize::MAX);
        for n in 0..100 {
            tx.offer(d(n)).unwrap();
        }
        for _ in 0..100 {
            assert!(matches!(take(&rx), Some(Next::Item(_))));
        }
        assert_eq!(rx.0.queue.lock().items.capacity(), 0);
    }

    #[test]
    fn an_account_is_one_range() {
        let r = Registry::default();
        let (tx, _rx) = mailbox(1024);
        let ids: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
        r.insert(ids[0], "al@example.com/a", 1, tx.clone());
        r.insert(ids[1], "al@example.com/b", 2, tx.clone());
        r.insert(ids[2], "alice@example.com/a", 3, tx.clone());
        r.insert(ids[3], "al@example.co/a", 4, tx.clone());
        r.insert(ids[4], "ak@example.com/z", 5, tx.clone());
        let fps: Vec<u64> = r.of_account("al@example.com").iter().map(|s| s.0).collect();
        assert_eq!(fps, vec![1, 2]);
        assert_eq!(r.count_account("al@example.com", "al@example.com/c"), 2);
        assert_eq!(r.count_account("al@example.com", "al@example.com/a"), 1);
        r.set_credentials(ids[1], 9);
        let fps: Vec<u64> = r.of_account("al@example.com").iter().map(|s| s.0).collect();
        assert_eq!(fps, vec![1, 9]);
        r.remove(ids[0]);
        assert_eq!(r.count_account("al@example.com", ""), 1);
        assert!(r.of_account("nobody@example.com").is_empty());
    }
}
