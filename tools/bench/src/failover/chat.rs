//! The users of a round: accounts, logins, mutual subscription, and the actors that drive
//! their connections on tasks of their own and report what they see, time-stamped, to the
//! round's event log. An actor may also send a numbered message at a fixed interval.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use meerkat_testkit::client::pred::presence_of_type;
use meerkat_testkit::client::Client;
use meerkat_testkit::stack::Dc;
use meerkat_xmpp::{ns, Element};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long a login may keep failing while the account travels to the DC (data replication).
const ACCOUNT_ARRIVES: Duration = Duration::from_secs(20);
/// How often an actor looks at its stop flag while nothing arrives.
const POLL: Duration = Duration::from_millis(50);

/// Which connection saw it: an index the round chooses.
pub type Conn = usize;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// The sending actor sent message number `seq`.
    Sent(u64),
    /// Message number `seq` of this round arrived.
    Received { conn: Conn, seq: u64 },
    /// Message number `seq` came back as an error.
    Bounced { conn: Conn, seq: u64 },
    /// A presence from `from` (a full JID), available or not.
    Presence {
        conn: Conn,
        from: String,
        available: bool,
    },
    /// The server ended the stream (with a stream error condition, or none).
    Ended {
        conn: Conn,
        condition: Option<String>,
    },
}

#[derive(Clone, Debug)]
pub struct Event {
    pub at: Instant,
    pub seen: Seen,
}

pub type Tx = mpsc::UnboundedSender<Event>;

/// Everything the actors of a round reported, in arrival order.
pub struct Log {
    rx: mpsc::UnboundedReceiver<Event>,
    pub events: Vec<Event>,
}

impl Log {
    pub fn new() -> (Log, Tx) {
        let (tx, rx) = mpsc::unbounded_channel();
        let log = Log {
            rx,
            events: Vec::new(),
        };
        (log, tx)
    }

    /// Takes in what has been reported so far.
    pub fn drain(&mut self) {
        while let Ok(e) = self.rx.try_recv() {
            self.events.push(e);
        }
    }

    /// The time of the first event (reported so far or within `within`) that `pred` accepts.
    pub async fn wait(
        &mut self,
        within: Duration,
        pred: impl Fn(&Event) -> bool,
    ) -> Option<Instant> {
        let deadline = tokio::time::Instant::now() + within;
        self.drain();
        if let Some(e) = self.events.iter().find(|e| pred(e)) {
            return Some(e.at);
        }
        loop {
            let e = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .ok()??;
            let hit = pred(&e).then_some(e.at);
            self.events.push(e);
            if hit.is_some() {
                return hit;
            }
        }
    }

    /// Waits until every message sent so far has been received at least once, for at most
    /// `within`; the arrival of the last one to come, if all came.
    pub async fn wait_all_received(&mut self, within: Duration) -> Option<Instant> {
        let deadline = Instant::now() + within;
        loop {
            self.drain();
            let tally = Tally::of(&self.events);
            if tally.missing().is_empty() {
                return tally.last_first_arrival();
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Messages of a round: when each was sent and when each copy arrived.
pub struct Tally {
    /// By sequence number (from 1): the send time.
    pub sent: Vec<Instant>,
    /// By sequence number (from 1): every arrival, in order.
    pub arrivals: Vec<Vec<(Conn, Instant)>>,
}

impl Tally {
    pub fn of(events: &[Event]) -> Tally {
        let mut sent = Vec::new();
        for e in events {
            if let Seen::Sent(seq) = e.seen {
                debug_assert_eq!(seq as usize, sent.len() + 1);
                sent.push(e.at);
            }
        }
        let mut arrivals = vec![Vec::new(); sent.len()];
        for e in events {
            if let Seen::Received { conn, seq } = e.seen {
                if let Some(a) = (seq as usize)
                    .checked_sub(1)
                    .and_then(|i| arrivals.get_mut(i))
                {
                    a.push((conn, e.at));
                }
            }
        }
        Tally { sent, arrivals }
    }

    /// Sequence numbers sent and never received.
    pub fn missing(&self) -> Vec<u64> {
        (1..=self.sent.len() as u64)
            .filter(|s| self.arrivals[*s as usize - 1].is_empty())
            .collect()
    }

    /// Messages that came back to their sender as errors.
    pub fn bounced(events: &[Event]) -> usize {
        events
            .iter()
            .filter(|e| matches!(e.seen, Seen::Bounced { .. }))
            .count()
    }

    /// Copies received beyond the first of each message.
    pub fn duplicates(&self) -> usize {
        self.arrivals
            .iter()
            .map(|a| a.len().saturating_sub(1))
            .sum()
    }

    /// The messages received more than once, as `seq@ms:conn,conn`: sent `ms` after `t0`
    /// (negative: before), and the connection of each copy.
    pub fn duplicate_detail(&self, t0: Instant) -> String {
        let mut out = Vec::new();
        for (i, a) in self
            .arrivals
            .iter()
            .enumerate()
            .filter(|(_, a)| a.len() > 1)
        {
            let conns: Vec<String> = a.iter().map(|(c, _)| c.to_string()).collect();
            let ms = if self.sent[i] >= t0 {
                (self.sent[i] - t0).as_millis() as i128
            } else {
                -((t0 - self.sent[i]).as_millis() as i128)
            };
            out.push(format!("{}@{ms}:{}", i + 1, conns.join(",")));
        }
        out.join(" ")
    }

    /// Copies received after `t` (on any connection).
    pub fn received_after(&self, t: Instant) -> usize {
        self.arrivals
            .iter()
            .flatten()
            .filter(|(_, at)| *at > t)
            .count()
    }

    /// The latest first arrival: when the last message to come had come.
    pub fn last_first_arrival(&self) -> Option<Instant> {
        self.arrivals
            .iter()
            .map(|a| a.first().map(|(_, at)| *at))
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .max()
    }

    /// The first arrival on `conn`.
    pub fn first_on(&self, conn: Conn) -> Option<Instant> {
        self.arrivals
            .iter()
            .flatten()
            .filter(|(c, _)| *c == conn)
            .map(|(_, at)| *at)
            .min()
    }

    /// The longest time from sending to first arrival of the messages sent after `t`.
    pub fn max_latency_sent_after(&self, t: Instant) -> Option<Duration> {
        self.sent
            .iter()
            .zip(&self.arrivals)
            .filter(|(sent, _)| **sent >= t)
            .filter_map(|(sent, a)| a.first().map(|(_, at)| at.saturating_duration_since(*sent)))
            .max()
    }
}

/// Registers `name` at `dc` (an existing account is fine).
pub async fn account(dc: &Dc, name: &str, password: &str) -> anyhow::Result<()> {
    Client::register_account(&dc.client(), name, password)
        .await
        .with_context(|| format!("registering {name}"))
}

/// Logs `name` in at `dc` (waiting for the account to reach the DC), asks for the roster and
/// sends initial presence.
pub async fn online(dc: &Dc, name: &str, password: &str, resource: &str) -> anyhow::Result<Client> {
    let deadline = Instant::now() + ACCOUNT_ARRIVES;
    let mut c = loop {
        match Client::login(&dc.client(), name, password, Some(resource)).await {
            Ok(c) => break c,
            Err(e) if Instant::now() >= deadline => {
                return Err(e.context(format!("{name} cannot log in at {}", dc.options.dc)))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    c.iq_ok("get", None, Element::new("query", ns::ROSTER))
        .await
        .context("roster get")?;
    c.send_presence().await?;
    Ok(c)
}

fn presence(kind: &str, to: &str) -> Element {
    Element::new("presence", ns::CLIENT)
        .with_attr("type", kind)
        .with_attr("to", to)
}

/// Mutual presence subscription between two available clients.
pub async fn befriend(a: &mut Client, b: &mut Client) -> anyhow::Result<()> {
    subscribe(a, b).await?;
    subscribe(b, a).await
}

/// `a` subscribes to `b`'s presence, `b` accepts, `a` gets `b`'s presence.
async fn subscribe(a: &mut Client, b: &mut Client) -> anyhow::Result<()> {
    let (aj, bj) = (a.bare_jid().to_owned(), b.bare_jid().to_owned());
    a.send(&presence("subscribe", &bj)).await?;
    b.expect("subscribe", presence_of_type(&aj, Some("subscribe")))
        .await?;
    b.send(&presence("subscribed", &aj)).await?;
    a.expect("their presence", presence_of_type(&bj, None))
        .await?;
    Ok(())
}

/// One connection driven on a task of its own.
pub struct Actor {
    sending: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    task: JoinHandle<anyhow::Result<Option<Client>>>,
}

/// What an actor sends: message bodies `<tag>-<seq>` to `to`, one every `every`.
pub struct Sending {
    pub to: String,
    pub every: Duration,
}

impl Actor {
    /// Reports what `client` receives as connection `conn` (messages of this round are those
    /// whose body starts with `<tag>-`), and sends if asked to.
    pub fn spawn(client: Client, conn: Conn, tag: &str, tx: Tx, send: Option<Sending>) -> Actor {
        let sending = Arc::new(AtomicBool::new(send.is_some()));
        let done = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(drive(
            client,
            conn,
            format!("{tag}-"),
            tx,
            send,
            sending.clone(),
            done.clone(),
        ));
        Actor {
            sending,
            done,
            task,
        }
    }

    pub fn stop_sending(&self) {
        self.sending.store(false, Ordering::Relaxed);
    }

    /// Stops the actor and closes its stream if the server has not ended it.
    pub async fn finish(self) -> anyhow::Result<()> {
        self.done.store(true, Ordering::Relaxed);
        if let Some(c) = self.task.await.context("actor task")?? {
            let _ = c.close().await;
        }
        Ok(())
    }
}

async fn drive(
    mut c: Client,
    conn: Conn,
    prefix: String,
    tx: Tx,
    send: Option<Sending>,
    sending: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
) -> anyhow::Result<Option<Client>> {
    let mut seq = 0u64;
    let mut next_send = Instant::now();
    while !done.load(Ordering::Relaxed) {
        let mut wait = POLL;
        if let (Some(s), true) = (&send, sending.load(Ordering::Relaxed)) {
            if Instant::now() >= next_send {
                seq += 1;
                let at = Instant::now();
                c.send_message(&s.to, &format!("{prefix}{seq}"))
                    .await
                    .context("sending")?;
                let _ = tx.send(Event {
                    at,
                    seen: Seen::Sent(seq),
                });
                // Behind (a slow write): the next one an interval from now, not a burst.
                next_send = if next_send + s.every < at {
                    at + s.every
                } else {
                    next_send + s.every
                };
            }
            wait = wait.min(next_send.saturating_duration_since(Instant::now()));
        }
        match c.next(wait).await {
            Ok(el) => {
                if let Some(seen) = classify(&el, conn, &prefix) {
                    let _ = tx.send(Event {
                        at: Instant::now(),
                        seen,
                    });
                }
            }
            // Nothing within `wait`, or the stream is over: a zero wait for its end tells.
            Err(_) => {
                if let Ok(condition) = c.expect_stream_end_within(Duration::ZERO).await {
                    let _ = tx.send(Event {
                        at: Instant::now(),
                        seen: Seen::Ended { conn, condition },
                    });
                    return Ok(None);
                }
            }
        }
    }
    Ok(Some(c))
}

fn classify(el: &Element, conn: Conn, prefix: &str) -> Option<Seen> {
    if el.is("message", ns::CLIENT) {
        let body = el.child_text("body", ns::CLIENT)?;
        let seq = body.strip_prefix(prefix)?.parse().ok()?;
        if el.attr("type") == Some("error") {
            return Some(Seen::Bounced { conn, seq });
        }
        return Some(Seen::Received { conn, seq });
    }
    if el.is("presence", ns::CLIENT) {
        let kind = el.attr("type");
        if kind.is_some() && kind != Some("unavailable") {
            return None;
        }
        return Some(Seen::Presence {
            conn,
            from: el.attr("from")?.to_owned(),
            available: kind.is_none(),
        });
    }
    None
}
