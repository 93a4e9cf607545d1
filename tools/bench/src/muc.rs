//! Group chat fan-out (XEP-0045): `--muc N` users (`<prefix>muc<i>`; with `--to-addr` the odd
//! ones log in there) join one new room at the MUC service (`--muc-host`, default
//! `conference.<domain>`) as a client does: user 0's join creates the room, which it accepts as
//! an instant room (an empty `muc#owner` form); then the others join, 20 at a time. Then the
//! occupants, in turn, send `--rate` groupchat messages a second in all into the room for
//! `--duration` seconds; every occupant (the sender too) receives each as the room's reflection.
//!
//! Prints the join time (per join, from the presence sent to the occupant's own presence with
//! status 110, and for the whole room), the deliveries (messages × occupants) per second,
//! their latency (from the send to each occupant, one clock), and the reflections lost. Between
//! the phases it prints `muc: online`, `muc: joined` and `muc: delivered` lines and pauses, so
//! that `cargo xtask bench` can read the server's memory and CPU per phase.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use meerkat_xmpp::{ns, Element};
use tokio::sync::{mpsc, Mutex};

use crate::chat::histogram;
use crate::client::{bench_stamp, login_many, Reader, Writer};
use crate::Args;

const MUC: &str = "http://jabber.org/protocol/muc";
const MUC_USER: &str = "http://jabber.org/protocol/muc#user";
const MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
const PING: &str = "urn:xmpp:ping";

/// How long a join or the room's configuration may take before it counts as refused.
const ANSWER_WITHIN: Duration = Duration::from_secs(180);

/// What a user's reader tells the joins.
enum Event {
    /// Its own presence from the room (status 110) arrived then.
    Joined(Instant),
    /// The room answered its join with an error.
    Refused(String),
    /// The answer to the creator's configuration form: an error's text, or none.
    Configured(Option<String>),
}

/// The reflections of this run's messages, counted by every reader.
struct Deliveries {
    latency: Mutex<Histogram<u64>>,
    count: AtomicU64,
}

fn name(args: &Args, i: usize) -> String {
    format!("{}muc{i}", args.prefix)
}

fn micros(clock: &Instant) -> u64 {
    u64::try_from(clock.elapsed().as_micros()).unwrap_or(u64::MAX)
}

pub async fn run(args: &Args) -> anyhow::Result<()> {
    let n = args.muc;
    anyhow::ensure!(n >= 2, "--muc needs at least 2 occupants");
    let clock = Arc::new(Instant::now());
    let run = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis()
    );
    let host = match &args.muc_host {
        Some(h) => h.clone(),
        None => format!("conference.{}", args.domain),
    };
    let room = format!("bench-{run}@{host}");
    let at = if args.to_addr.is_some() {
        "odd users at --to-addr"
    } else {
        "one server"
    };

    let started = Instant::now();
    let clients = login_many(args, n, name).await?;
    let login_secs = started.elapsed().as_secs_f64();
    let deliveries = Arc::new(Deliveries {
        latency: Mutex::new(histogram()),
        count: AtomicU64::new(0),
    });
    let mut writers: Vec<Writer> = Vec::with_capacity(n);
    let mut events = Vec::with_capacity(n);
    for c in clients {
        let (reader, writer) = c.split();
        let (tx, rx) = mpsc::unbounded_channel();
        writers.push(writer);
        events.push(rx);
        let (room, d, clock, run) = (room.clone(), deliveries.clone(), clock.clone(), run.clone());
        tokio::spawn(read(reader, room, tx, d, clock, run));
    }
    // Settled, then a moment for the memory to be read.
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!("muc: online: {n} users in {login_secs:.1} s ({at}), room {room}");
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The joins: the creator alone first, its room accepted as an instant room.
    let joins_started = Instant::now();
    let mut join_latency = histogram();
    let mut joined = vec![false; n];
    let mut refusals = Vec::new();
    let presence = |i: usize| format!("<presence to='{room}/u{i}'><x xmlns='{MUC}'/></presence>");
    writers[0].send(&presence(0)).await?;
    let sent_at = Instant::now();
    match next_event(&mut events[0], |_| true).await {
        Some(Event::Joined(t)) => {
            let _ = join_latency.record(micros_between(sent_at, t));
            joined[0] = true;
        }
        Some(Event::Refused(e)) => anyhow::bail!("the room's creator could not join: {e}"),
        _ => anyhow::bail!("the room's creator had no answer to its join"),
    }
    writers[0]
        .send(&format!(
            "<iq type='set' id='muc-create' to='{room}'><query xmlns='{MUC_OWNER}'><x xmlns='{}' type='submit'/></query></iq>",
            ns::DATA_FORMS
        ))
        .await?;
    match next_event(&mut events[0], |e| matches!(e, Event::Configured(_))).await {
        Some(Event::Configured(None)) => {}
        Some(Event::Configured(Some(e))) => anyhow::bail!("the room refused the instant room: {e}"),
        _ => anyhow::bail!("no answer to the room's configuration"),
    }
    for chunk in (1..n).collect::<Vec<_>>().chunks(20) {
        let mut sent = Vec::with_capacity(chunk.len());
        for &i in chunk {
            writers[i].send(&presence(i)).await?;
            sent.push((i, Instant::now()));
        }
        for (i, sent_at) in sent {
            match next_event(&mut events[i], |_| true).await {
                Some(Event::Joined(t)) => {
                    let _ = join_latency.record(micros_between(sent_at, t));
                    joined[i] = true;
                }
                Some(Event::Refused(e)) => refusals.push(e),
                _ => refusals.push(format!(
                    "u{i}: no answer within {ANSWER_WITHIN:?}, or its connection ended"
                )),
            }
        }
    }
    let join_secs = joins_started.elapsed().as_secs_f64();
    let occupants: Vec<usize> = (0..n).filter(|&i| joined[i]).collect();
    if let Some(first) = refusals.first() {
        eprintln!("muc: {} joins refused; the first: {first}", refusals.len());
    }
    let jms = |q: f64| join_latency.value_at_quantile(q) as f64 / 1000.0;
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!(
        "muc: joined: {} of {n} occupants in {join_secs:.1} s; per join p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        occupants.len(),
        jms(0.5),
        jms(0.99),
        join_latency.max() as f64 / 1000.0,
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The messages: the occupants in turn, at the offered rate in all.
    let every = Duration::from_secs_f64(1.0 / args.rate.max(0.001));
    let duration = Duration::from_secs(args.duration.max(1));
    let begin = Instant::now();
    let mut sent = 0u64;
    let mut next = begin;
    // Occupants whose connection the server closed: they send no more (their reflections
    // count as lost).
    let mut closed = Vec::new();
    let mut turn = 0usize;
    while next < begin + duration && closed.len() < occupants.len() {
        tokio::time::sleep_until(next.into()).await;
        let i = occupants[turn % occupants.len()];
        turn += 1;
        if closed.contains(&i) {
            continue;
        }
        match writers[i]
            .send_typed(&room, "groupchat", &run, micros(&clock))
            .await
        {
            Ok(()) => sent += 1,
            Err(e) => {
                eprintln!("muc: u{i}'s connection failed: {e}");
                closed.push(i);
                continue;
            }
        }
        next += every;
    }
    let late = begin.elapsed() > duration.mul_f64(1.2) + every;
    let due = sent * occupants.len() as u64;
    // Until every reflection arrived, or none came for 10 s.
    let mut last = (deliveries.count.load(Ordering::Relaxed), Instant::now());
    while last.0 < due && last.1.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let got = deliveries.count.load(Ordering::Relaxed);
        if got != last.0 {
            last = (got, Instant::now());
        }
    }
    let delivered = last.0;
    let secs = last.1.duration_since(begin).as_secs_f64().max(0.001);
    let h = deliveries.latency.lock().await;
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "muc: delivered: messages {sent} ({:.0}/s offered{}{})  deliveries due {due}  delivered {delivered}  lost {}  rate {:.0} deliveries/s  latency p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        args.rate,
        if late { ", sending fell behind" } else { "" },
        if closed.is_empty() {
            String::new()
        } else {
            format!(", {} occupants' connections failed", closed.len())
        },
        due.saturating_sub(delivered),
        delivered as f64 / secs,
        ms(0.5),
        ms(0.99),
        h.max() as f64 / 1000.0,
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "workload": "muc", "inter_dc": args.to_addr.is_some(), "users": n,
                "joined": occupants.len(), "join_total_s": join_secs,
                "join_p50_ms": jms(0.5), "join_p99_ms": jms(0.99),
                "join_max_ms": join_latency.max() as f64 / 1000.0,
                "sent": sent, "offered_rate": args.rate, "late": late, "due": due,
                "delivered": delivered, "lost": due.saturating_sub(delivered),
                "rate": delivered as f64 / secs, "p50_ms": ms(0.5), "p99_ms": ms(0.99),
                "max_ms": h.max() as f64 / 1000.0, "closed": closed.len(),
            })
        );
    }
    // Closing the streams takes everyone out of the room, which then goes away.
    for w in &mut writers {
        let _ = w.close().await;
    }
    Ok(())
}

fn micros_between(from: Instant, to: Instant) -> u64 {
    u64::try_from(to.saturating_duration_since(from).as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// The next event `wanted` takes, skipping others, within [`ANSWER_WITHIN`].
async fn next_event(
    rx: &mut mpsc::UnboundedReceiver<Event>,
    wanted: impl Fn(&Event) -> bool,
) -> Option<Event> {
    let deadline = tokio::time::Instant::now() + ANSWER_WITHIN;
    loop {
        let e = tokio::time::timeout_at(deadline, rx.recv()).await.ok()??;
        if wanted(&e) {
            return Some(e);
        }
    }
}

/// Whether a presence from the room is the occupant's own (XEP-0045 status 110).
fn is_own_presence(el: &Element) -> bool {
    el.get_child("x", MUC_USER).is_some_and(|x| {
        x.children()
            .any(|c| c.name() == "status" && c.attr("code") == Some("110"))
    })
}

/// One user's reader: its join's answer and the configuration's go to the joins; this run's
/// reflections are timed and counted (history, delayed, is not a delivery of this run); the
/// server's pings are answered.
async fn read(
    mut r: Reader,
    room: String,
    events: mpsc::UnboundedSender<Event>,
    d: Arc<Deliveries>,
    clock: Arc<Instant>,
    run: String,
) {
    let in_room = |el: &Element| {
        el.attr("from").is_some_and(|f| {
            f == room
                || f.strip_prefix(room.as_str())
                    .is_some_and(|r| r.starts_with('/'))
        })
    };
    while let Some(el) = r.next_stanza().await {
        let event = match el.name() {
            "message" if el.attr("type") == Some("groupchat") => {
                let stamp = el
                    .child_text("body", ns::CLIENT)
                    .and_then(|b| bench_stamp(&b, &run));
                if let (Some(at), false) = (stamp, el.has_child("delay", ns::DELAY)) {
                    let latency = micros(&clock).saturating_sub(at).max(1);
                    let _ = d.latency.lock().await.record(latency);
                    d.count.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
            "presence" if in_room(&el) && el.attr("type") == Some("error") => {
                Event::Refused(el.to_string())
            }
            "presence" if in_room(&el) && is_own_presence(&el) => Event::Joined(Instant::now()),
            // The server's keepalive (XEP-0199): a user idle in a slow join must stay online.
            "iq" if el.attr("type") == Some("get") && el.has_child("ping", PING) => {
                let to = el
                    .attr("from")
                    .map(|f| format!(" to='{f}'"))
                    .unwrap_or_default();
                let id = el.attr("id").unwrap_or_default();
                let pong = format!("<iq type='result' id='{id}'{to}/>");
                if r.reply(&pong).await.is_err() {
                    return;
                }
                continue;
            }
            "iq" if el.attr("id") == Some("muc-create") => {
                Event::Configured((el.attr("type") != Some("result")).then(|| el.to_string()))
            }
            _ => continue,
        };
        let _ = events.send(event);
    }
}
