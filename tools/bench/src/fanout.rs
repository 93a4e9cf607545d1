//! PEP notification fan-out (XEP-0163): `--pep-fanout N` users in a ring, each subscribed both
//! ways to its `--pep-contacts` nearest neighbours (each asks, each approves what it is asked), every client's entity capabilities
//! (XEP-0115) asking for the bench node's notifications; then every user publishes to that node
//! `--pep-rate` times a second for `--duration` seconds. Prints the notifications due (one per
//! contact per publish), delivered and lost, the rate they were delivered at, and their latency
//! from the publish to the contact, at the same DC and (with `--to-addr`: the odd users log in
//! there) across DCs. The clients answer the server's disco#info query for their caps.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use hdrhistogram::Histogram;
use meerkat_xmpp::{ns, Element};
use sha1::{Digest as _, Sha1};
use tokio::sync::Mutex;

use crate::chat::histogram;
use crate::client::{Reader, Writer};
use crate::Args;

/// The node every user publishes to; its `+notify` is in every client's caps.
const NODE: &str = "urn:meerkat:bench:fanout";
const CAPS_NODE: &str = "https://meerkat.example/bench";
const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const PUBSUB_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
const CAPS: &str = "http://jabber.org/protocol/caps";

/// The bench client's disco#info identity and features, sorted as XEP-0115 §5.1 hashes them.
fn features() -> Vec<String> {
    let mut f = vec![
        CAPS.to_owned(),
        ns::DISCO_INFO.to_owned(),
        format!("{NODE}+notify"),
    ];
    f.sort();
    f
}

/// The XEP-0115 verification string of [`features`] with the identity `client/bot`.
fn caps_ver() -> String {
    let mut s = String::from("client/bot//meerkat-bench<");
    for f in features() {
        s.push_str(&f);
        s.push('<');
    }
    base64::engine::general_purpose::STANDARD.encode(Sha1::digest(s.as_bytes()))
}

/// The disco#info result for the server's query `q` (its id, `from` and `node`).
fn disco_answer(q: &Element) -> String {
    let mut vars = String::new();
    for f in features() {
        vars.push_str(&format!("<feature var='{f}'/>"));
    }
    let node = q
        .get_child("query", ns::DISCO_INFO)
        .and_then(|q| q.attr("node"))
        .map(|n| format!(" node='{n}'"))
        .unwrap_or_default();
    format!(
        "<iq type='result' id='{}' to='{}'><query xmlns='{}'{node}><identity category='client' type='bot' name='meerkat-bench'/>{vars}</query></iq>",
        q.attr("id").unwrap_or_default(),
        q.attr("from").unwrap_or_default(),
        ns::DISCO_INFO,
    )
}

/// What the reader tasks count.
struct Counts {
    same_dc: Mutex<Histogram<u64>>,
    cross_dc: Mutex<Histogram<u64>>,
    delivered: AtomicU64,
    /// Per user: its roster items with subscription `both`, and those whose contact sees its
    /// presence (`from` or `both`: the contacts its notifications are due to), from its last
    /// roster get.
    both: Vec<AtomicUsize>,
    entitled: Vec<AtomicUsize>,
}

pub async fn run(args: &Args) -> anyhow::Result<()> {
    let users = args.pep_fanout;
    let contacts = (args.pep_contacts & !1).min(users.saturating_sub(1) & !1);
    anyhow::ensure!(
        contacts >= 2,
        "--pep-fanout needs at least 3 users and 2 contacts"
    );
    let clock = Arc::new(Instant::now());
    let run = format!("{:x}", std::process::id());
    let inter_dc = args.to_addr.is_some();

    // Everyone online (registered in-band), 20 at a time, with caps in its presence.
    let started = Instant::now();
    let clients = crate::client::login_many(args, users, name).await?;
    let counts = Arc::new(Counts {
        same_dc: Mutex::new(histogram()),
        cross_dc: Mutex::new(histogram()),
        delivered: AtomicU64::new(0),
        both: (0..users).map(|_| AtomicUsize::new(0)).collect(),
        entitled: (0..users).map(|_| AtomicUsize::new(0)).collect(),
    });
    let mut writers: Vec<Writer> = Vec::with_capacity(users);
    for (i, c) in clients.into_iter().enumerate() {
        let (reader, writer) = c.split();
        writers.push(writer);
        let (counts, clock, run) = (counts.clone(), clock.clone(), run.clone());
        tokio::spawn(read(reader, i, inter_dc, counts, clock, run));
    }
    let caps = format!(
        "<presence><c xmlns='{}' hash='sha-1' node='{CAPS_NODE}' ver='{}'/></presence>",
        CAPS,
        caps_ver()
    );
    for w in &mut writers {
        w.send(&caps).await?;
    }
    println!(
        "pep-fanout: {users} users online in {:.1} s ({}), {contacts} contacts each",
        started.elapsed().as_secs_f64(),
        if inter_dc {
            "odd users at --to-addr"
        } else {
            "one DC"
        }
    );

    // The ring: each user asks its neighbours; each reader approves what it is asked (as a
    // client that accepts its contacts does), so every pair ends subscribed both ways.
    let started = Instant::now();
    let jid = |i: usize| format!("{}@{}", name(args, i), args.domain);
    for (i, w) in writers.iter_mut().enumerate() {
        let mut xml = String::new();
        for k in 1..=contacts / 2 {
            for j in [(i + k) % users, (i + users - k) % users] {
                xml.push_str(&format!("<presence type='subscribe' to='{}'/>", jid(j)));
            }
        }
        w.send(&xml).await?;
    }
    // Until every pair is subscribed both ways, or nothing changed for 20 s (then the
    // notifications due count only the contacts that do see the publisher's presence).
    let mut last_done = usize::MAX;
    let mut still_since = Instant::now();
    let incomplete = loop {
        for w in &mut writers {
            w.send(&format!(
                "<iq type='get' id='fanout-roster'><query xmlns='{}'/></iq>",
                ns::ROSTER
            ))
            .await?;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let done = counts
            .both
            .iter()
            .filter(|b| b.load(Ordering::Relaxed) >= contacts)
            .count();
        if done == users {
            break 0;
        }
        let progress: usize = counts.both.iter().map(|b| b.load(Ordering::Relaxed)).sum();
        if progress != last_done {
            last_done = progress;
            still_since = Instant::now();
        } else if still_since.elapsed() > Duration::from_secs(20) {
            break users - done;
        }
    };
    println!(
        "pep-fanout: {} subscriptions asked both ways in {:.1} s; users with a contact not subscribed both ways: {incomplete}",
        users * contacts / 2,
        started.elapsed().as_secs_f64()
    );
    let entitled: Vec<u64> = counts
        .entitled
        .iter()
        .map(|e| e.load(Ordering::Relaxed) as u64)
        .collect();
    // Time for the server to verify the one caps hash (a disco#info to one client).
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Every user publishes --pep-rate times a second, the users spread over the interval.
    let rate = args.pep_rate.max(0.01);
    let every = Duration::from_secs_f64(1.0 / rate);
    let duration = Duration::from_secs(args.duration.max(1));
    let sent = Arc::new(AtomicU64::new(0));
    let due_total = Arc::new(AtomicU64::new(0));
    let begin = Instant::now();
    let mut tasks = Vec::with_capacity(users);
    for (i, mut w) in writers.into_iter().enumerate() {
        let (clock, run, sent) = (clock.clone(), run.clone(), sent.clone());
        let (due_total, entitled) = (due_total.clone(), entitled[i]);
        let offset = every.mul_f64(i as f64 / users as f64);
        tasks.push(tokio::spawn(async move {
            let mut next = begin + offset;
            let mut n = 0u64;
            while next < begin + duration {
                tokio::time::sleep_until(next.into()).await;
                let micros = u64::try_from(clock.elapsed().as_micros()).unwrap_or(u64::MAX);
                let xml = format!(
                    "<iq type='set' id='fanout-{n}'><pubsub xmlns='{PUBSUB}'><publish node='{NODE}'><item id='current'><x xmlns='{NODE}'>{run}:{i}:{micros}</x></item></publish></pubsub></iq>"
                );
                if w.send(&xml).await.is_err() {
                    break;
                }
                sent.fetch_add(1, Ordering::Relaxed);
                due_total.fetch_add(entitled, Ordering::Relaxed);
                n += 1;
                next += every;
            }
            w
        }));
    }
    let mut writers = Vec::with_capacity(users);
    for t in tasks {
        writers.push(t.await?);
    }
    let publishes = sent.load(Ordering::Relaxed);
    let due = due_total.load(Ordering::Relaxed);
    // Drain: until everything due arrived, or nothing more came for 3 s.
    let mut last = counts.delivered.load(Ordering::Relaxed);
    let mut quiet_since = Instant::now();
    let mut last_arrival = Instant::now();
    while last < due && quiet_since.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = counts.delivered.load(Ordering::Relaxed);
        if now != last {
            last = now;
            quiet_since = Instant::now();
            last_arrival = Instant::now();
        }
    }
    let delivered = counts.delivered.load(Ordering::Relaxed);
    let secs = last_arrival.duration_since(begin).as_secs_f64().max(0.001);
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let same = counts.same_dc.lock().await;
    let cross = counts.cross_dc.lock().await;
    println!(
        "pep-fanout: publishes {publishes} ({:.0}/s offered)  notifications due {due}  delivered {delivered}  lost {}  rate {:.0} notifications/s",
        rate * users as f64,
        due.saturating_sub(delivered),
        delivered as f64 / secs,
    );
    println!(
        "pep-fanout: same DC  n {}  p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        same.len(),
        ms(&same, 0.5),
        ms(&same, 0.99),
        same.max() as f64 / 1000.0
    );
    if inter_dc {
        println!(
            "pep-fanout: cross DC n {}  p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            cross.len(),
            ms(&cross, 0.5),
            ms(&cross, 0.99),
            cross.max() as f64 / 1000.0
        );
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "workload": "pep-fanout", "users": users, "contacts": contacts,
                "publishes": publishes, "due": due, "delivered": delivered,
                "lost": due.saturating_sub(delivered), "rate": delivered as f64 / secs,
                "same_dc_p50_ms": ms(&same, 0.5), "same_dc_p99_ms": ms(&same, 0.99),
                "cross_dc_p50_ms": ms(&cross, 0.5), "cross_dc_p99_ms": ms(&cross, 0.99),
            })
        );
    }
    drop(writers);
    Ok(())
}

fn name(args: &Args, i: usize) -> String {
    format!("{}fanout{i}", args.prefix)
}

/// One user's reader: answers the server's disco#info (caps verification), records its roster
/// (subscriptions both ways), and times the notifications of this run from its contacts.
async fn read(
    mut r: Reader,
    me: usize,
    inter_dc: bool,
    counts: Arc<Counts>,
    clock: Arc<Instant>,
    run: String,
) {
    while let Some(el) = r.next_stanza().await {
        match el.name() {
            "iq" if el.attr("type") == Some("get")
                && el.has_child("query", ns::DISCO_INFO)
                && r.reply(&disco_answer(&el)).await.is_err() =>
            {
                return;
            }
            "presence" if el.attr("type") == Some("subscribe") => {
                let Some(from) = el.attr("from") else {
                    continue;
                };
                let approve = format!("<presence type='subscribed' to='{from}'/>");
                if r.reply(&approve).await.is_err() {
                    return;
                }
            }
            "iq" if el.attr("id") == Some("fanout-roster") => {
                let count = |states: &[&str]| {
                    el.get_child("query", ns::ROSTER)
                        .map(|q| {
                            q.children()
                                .filter(|i| {
                                    i.attr("subscription").is_some_and(|s| states.contains(&s))
                                })
                                .count()
                        })
                        .unwrap_or(0)
                };
                counts.both[me].store(count(&["both"]), Ordering::Relaxed);
                counts.entitled[me].store(count(&["from", "both"]), Ordering::Relaxed);
            }
            "message" => {
                let Some(items) = el
                    .get_child("event", PUBSUB_EVENT)
                    .and_then(|e| e.get_child("items", PUBSUB_EVENT))
                    .filter(|i| i.attr("node") == Some(NODE))
                else {
                    continue;
                };
                let now = u64::try_from(clock.elapsed().as_micros()).unwrap_or(u64::MAX);
                for item in items.children() {
                    let Some(text) = item.get_child("x", NODE).map(|x| x.text()) else {
                        continue;
                    };
                    let mut f = text.split(':');
                    let (Some(r), Some(from), Some(at)) = (f.next(), f.next(), f.next()) else {
                        continue;
                    };
                    let (Ok(from), Ok(at)) = (from.parse::<usize>(), at.parse::<u64>()) else {
                        continue;
                    };
                    // The owner's own resource is notified too: not a contact's notification.
                    if r != run || from == me {
                        continue;
                    }
                    let latency = now.saturating_sub(at).max(1);
                    // Inter-DC: the odd users are at the other DC.
                    let h = if !inter_dc || from % 2 == me % 2 {
                        &counts.same_dc
                    } else {
                        &counts.cross_dc
                    };
                    let _ = h.lock().await.record(latency);
                    counts.delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// XEP-0115 §5.2's example hashes to its published verification string; the bench's own
    /// is built the same way.
    #[test]
    fn caps_ver_is_xep0115s_hash() {
        let s = "client/pc//Exodus 0.9.1<http://jabber.org/protocol/caps<http://jabber.org/protocol/disco#info<http://jabber.org/protocol/disco#items<http://jabber.org/protocol/muc<";
        let ver = base64::engine::general_purpose::STANDARD.encode(Sha1::digest(s.as_bytes()));
        assert_eq!(ver, "QgayPKawpkPSDYmwT/WM94uAlu0=");
        assert_eq!(caps_ver().len(), 28);
    }
}
