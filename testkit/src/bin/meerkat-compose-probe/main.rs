//! The client side of `cargo xtask compose-check`: what it does through the compose stack's
//! published ports, with the tests' XMPP client. One subcommand per step:
//!
//! - `journey DC1_ADDR DC2_ADDR DC2_TLS_ADDR DOMAIN PREFIX PASSWORD`: two accounts registered
//!   in-band, one per DC, mutual subscription, presence, chat both ways, offline delivery;
//! - `web DC1_HTTPS_ADDR DC2_ADDR DC2_HTTPS_ADDR DOMAIN PREFIX PASSWORD`: the web clients'
//!   endpoints through the load balancers' HTTPS ports, with the journey's two accounts:
//!   XEP-0156 discovery at both DCs, alice over WebSocket at DC 1 chatting with bob over TCP
//!   (STARTTLS) at DC 2, then bob over BOSH at DC 2 (session, SASL PLAIN, restart, bind)
//!   chatting with alice's WebSocket session (`web.rs`);
//! - `sessions ADDR DOMAIN USER PASSWORD N`: N sessions of USER (resources s1..sN) at ADDR,
//!   prints `ready` once all are bound, holds them until standard input closes;
//! - `lb-wait STATS_URL BACKEND N`: waits until the HAProxy backend has N servers UP;
//! - `trace QUERY_URL`: waits for a cross-DC message's trace in the trace viewer (Jaeger's
//!   query API: the upstream image or `meerkat-otlp-standin`) and prints its chain;
//! - `links MANAGEMENT_URL USER PASSWORD`: the broker's federation links, all `running`.
//!
//! Exits non-zero with the reason on the first failure.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use meerkat_testkit::client::pred::{message_with_body, presence_of_type};
use meerkat_testkit::client::{Client, ClientConfig};
use meerkat_xmpp::{ns, Element};
use serde_json::Value;
use tokio::io::AsyncReadExt as _;

mod web;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let strs: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match strs.as_slice() {
        ["journey", dc1, dc2, dc2_tls, domain, prefix, password] => {
            journey(dc1, dc2, dc2_tls, domain, prefix, password).await
        }
        ["web", dc1_https, dc2, dc2_https, domain, prefix, password] => {
            web::web(dc1_https, dc2, dc2_https, domain, prefix, password).await
        }
        ["sessions", addr, domain, user, password, n] => {
            sessions(addr, domain, user, password, n).await
        }
        ["lb-wait", url, backend, n] => lb_wait(url, backend, n).await,
        ["trace", url] => trace(url).await,
        ["links", url, user, password] => links(url, user, password).await,
        _ => Err(anyhow::anyhow!(
            "usage: meerkat-compose-probe journey|web|sessions|lb-wait|trace|links ... (see the source)"
        )),
    };
    if let Err(e) = result {
        eprintln!("meerkat-compose-probe: {e:#}");
        std::process::exit(1);
    }
}

fn addr(s: &str) -> anyhow::Result<SocketAddr> {
    s.parse().with_context(|| format!("address {s}"))
}

fn step(started: Instant, what: &str) {
    println!("  ok {:>6.2}s  {what}", started.elapsed().as_secs_f64());
}

fn presence(kind: &str, to: &str) -> Element {
    Element::new("presence", ns::CLIENT)
        .with_attr("type", kind)
        .with_attr("to", to)
}

/// Logged in (SCRAM-SHA-256) as `resource`, roster fetched, available.
async fn online(
    cfg: &ClientConfig,
    user: &str,
    password: &str,
    resource: &str,
) -> anyhow::Result<Client> {
    let mut c = Client::login(cfg, user, password, Some(resource)).await?;
    c.iq_ok("get", None, Element::new("query", ns::ROSTER))
        .await?;
    c.send_presence().await?;
    Ok(c)
}

async fn journey(
    dc1: &str,
    dc2: &str,
    dc2_tls: &str,
    domain: &str,
    prefix: &str,
    password: &str,
) -> anyhow::Result<()> {
    let t = Instant::now();
    let at_dc1 = ClientConfig::new(addr(dc1)?, domain);
    let at_dc2 = ClientConfig::new(addr(dc2)?, domain);
    let at_dc2_tls = ClientConfig::direct_tls(addr(dc2_tls)?, domain);
    let (a, b) = (format!("{prefix}-alice"), format!("{prefix}-bob"));
    let (aj, bj) = (format!("{a}@{domain}"), format!("{b}@{domain}"));

    Client::register_account(&at_dc1, &a, password)
        .await
        .context("registration at DC 1")?;
    step(
        t,
        &format!("{aj} registered in-band at DC 1 ({dc1}, STARTTLS)"),
    );
    Client::register_account(&at_dc2_tls, &b, password)
        .await
        .context("registration at DC 2")?;
    step(
        t,
        &format!("{bj} registered in-band at DC 2 ({dc2_tls}, direct TLS)"),
    );

    let mut alice = online(&at_dc1, &a, password, "compose")
        .await
        .context("login at DC 1")?;
    let mut bob = online(&at_dc2_tls, &b, password, "compose")
        .await
        .context("login at DC 2")?;
    step(
        t,
        "both logged in (SCRAM-SHA-256), roster fetched, available",
    );

    alice.send(&presence("subscribe", &bj)).await?;
    bob.expect(
        "alice's subscription request",
        presence_of_type(&aj, Some("subscribe")),
    )
    .await?;
    bob.send(&presence("subscribed", &aj)).await?;
    alice
        .expect("bob's presence", presence_of_type(bob.jid(), None))
        .await?;
    bob.send(&presence("subscribe", &aj)).await?;
    alice
        .expect(
            "bob's subscription request",
            presence_of_type(&bj, Some("subscribe")),
        )
        .await?;
    alice.send(&presence("subscribed", &bj)).await?;
    bob.expect("alice's presence", presence_of_type(alice.jid(), None))
        .await?;
    step(
        t,
        "subscribed to each other across the DCs; each sees the other's presence",
    );

    alice.send_message(&bj, "hello from DC 1").await?;
    bob.expect("alice's message", message_with_body("hello from DC 1"))
        .await?;
    step(t, "chat DC 1 -> DC 2 delivered");
    bob.send_message(&aj, "hello from DC 2").await?;
    alice
        .expect("bob's message", message_with_body("hello from DC 2"))
        .await?;
    step(t, "chat DC 2 -> DC 1 delivered");

    let bob_full = bob.jid().to_owned();
    bob.close().await?;
    alice
        .expect(
            "bob's unavailable presence",
            presence_of_type(&bob_full, Some("unavailable")),
        )
        .await?;
    alice.send_message(&bj, "while you were away").await?;
    // Stored by the time the router has handled it; give it a moment before logging in.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut bob = Client::login(&at_dc2, &b, password, Some("back")).await?;
    bob.send_presence().await?;
    bob.expect(
        "the offline message",
        message_with_body("while you were away"),
    )
    .await?;
    step(
        t,
        &format!("offline delivery: sent while bob was away, delivered at his next login ({dc2}, STARTTLS)"),
    );
    bob.close().await?;
    alice.close().await?;
    Ok(())
}

async fn sessions(
    addr_s: &str,
    domain: &str,
    user: &str,
    password: &str,
    n: &str,
) -> anyhow::Result<()> {
    let n: usize = n.parse().context("N")?;
    let cfg = ClientConfig::new(addr(addr_s)?, domain);
    let mut clients = Vec::new();
    for i in 1..=n {
        let resource = format!("s{i}");
        clients.push(
            Client::login(&cfg, user, password, Some(&resource))
                .await
                .with_context(|| format!("session {i}"))?,
        );
    }
    println!("ready {n}");
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    while stdin.read(&mut buf).await.map(|n| n > 0).unwrap_or(false) {}
    for c in clients {
        let _ = c.close().await;
    }
    Ok(())
}

fn http() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?)
}

async fn lb_wait(url: &str, backend: &str, n: &str) -> anyhow::Result<()> {
    let n: usize = n.parse().context("N")?;
    let url = format!("{};csv", url.trim_end_matches('/').to_owned() + "/");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = http()?.get(&url).send().await?.text().await?;
        // pxname,svname,...,status (the 18th field)
        let up: Vec<String> = text
            .lines()
            .map(|l| l.split(',').collect::<Vec<_>>())
            .filter(|f| f.len() > 17 && f[0] == backend && f[1] != "BACKEND" && f[17] == "UP")
            .map(|f| f[1].to_owned())
            .collect();
        if up.len() >= n {
            println!("  {backend}: {} servers UP ({})", up.len(), up.join(", "));
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{backend}: {} servers UP after 60 s, {n} wanted", up.len());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One span of Jaeger's JSON, with its process's service and DC.
struct Span {
    id: String,
    parent: String,
    name: String,
    service: String,
    dc: String,
    /// `xmpp.stanza` (the root span's: `message`, `presence`, `iq`).
    stanza: String,
}

fn spans_of(trace: &Value) -> Vec<Span> {
    let processes = &trace["processes"];
    trace["spans"]
        .as_array()
        .map(|spans| {
            spans
                .iter()
                .map(|s| {
                    let process = &processes[s["processID"].as_str().unwrap_or_default()];
                    let dc = process["tags"]
                        .as_array()
                        .and_then(|tags| tags.iter().find(|t| t["key"] == "meerkat.dc"))
                        .and_then(|t| t["value"].as_str())
                        .unwrap_or("?")
                        .to_owned();
                    let parent = s["references"]
                        .as_array()
                        .and_then(|r| r.iter().find(|r| r["refType"] == "CHILD_OF"))
                        .and_then(|r| r["spanID"].as_str())
                        .unwrap_or_default()
                        .to_owned();
                    let stanza = s["tags"]
                        .as_array()
                        .and_then(|tags| tags.iter().find(|t| t["key"] == "xmpp.stanza"))
                        .and_then(|t| t["value"].as_str())
                        .unwrap_or_default()
                        .to_owned();
                    Span {
                        stanza,
                        id: s["spanID"].as_str().unwrap_or_default().to_owned(),
                        parent,
                        name: s["operationName"].as_str().unwrap_or_default().to_owned(),
                        service: process["serviceName"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                        dc,
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The chain of docs/observability.md "One trace per stanza" for a stanza from DC 1 to DC 2
/// (a `<message/>`: the root span's `xmpp.stanza`).
const CHAIN: [(&str, &str, &str); 8] = [
    ("c2s-gateway", "dc1", "publish meerkat.route"),
    ("router", "dc1", "process meerkat.route"),
    ("router", "dc1", "publish meerkat.inter.stanzas"),
    ("router", "dc2", "process meerkat.inter.stanzas"),
    ("router", "dc2", "publish meerkat.route"),
    ("router", "dc2", "process meerkat.route"),
    ("router", "dc2", "publish meerkat.deliver"),
    ("c2s-gateway", "dc2", "process meerkat.deliver"),
];

/// The chain's spans in `spans`, each the child of the one before, if all are there.
fn chain(spans: &[Span]) -> Option<Vec<&Span>> {
    let is = |s: &Span, (service, dc, name): (&str, &str, &str)| {
        s.service == service && s.dc == dc && s.name == name
    };
    for root in spans
        .iter()
        .filter(|s| s.parent.is_empty() && s.stanza == "message" && is(s, CHAIN[0]))
    {
        let mut found = vec![root];
        // Depth first: a span may have several children of the same name (one per delivery).
        if extend(spans, &mut found, &is) {
            return Some(found);
        }
    }
    None
}

fn extend<'a>(
    spans: &'a [Span],
    found: &mut Vec<&'a Span>,
    is: &impl Fn(&Span, (&str, &str, &str)) -> bool,
) -> bool {
    let Some(&want) = CHAIN.get(found.len()) else {
        return true;
    };
    let parent = found[found.len() - 1].id.clone();
    for s in spans.iter().filter(|s| s.parent == parent && is(s, want)) {
        found.push(s);
        if extend(spans, found, is) {
            return true;
        }
        found.pop();
    }
    false
}

async fn trace(url: &str) -> anyhow::Result<()> {
    let url = format!(
        "{}/api/traces?service=c2s-gateway&operation=publish%20meerkat.route&lookback=1h&limit=1000",
        url.trim_end_matches('/')
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body: Value = http()?.get(&url).send().await?.json().await?;
        let traces = body["data"].as_array().cloned().unwrap_or_default();
        for t in &traces {
            let spans = spans_of(t);
            if let Some(found) = chain(&spans) {
                println!(
                    "  trace {} of a <message/> ({} spans):",
                    t["traceID"].as_str().unwrap_or_default(),
                    spans.len()
                );
                for s in found {
                    println!("    {:<12} {}  {}", s.service, s.dc, s.name);
                }
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!(
                "no trace from DC 1's gateway to DC 2's in {} traces after 60 s",
                traces.len()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn links(url: &str, user: &str, password: &str) -> anyhow::Result<()> {
    let url = format!("{}/api/federation-links", url.trim_end_matches('/'));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let links: Vec<Value> = http()?
            .get(&url)
            .basic_auth(user, Some(password))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let mut states: BTreeMap<String, String> = BTreeMap::new();
        for l in &links {
            states.insert(
                format!(
                    "{} <- {}",
                    l["exchange"].as_str().unwrap_or("?"),
                    l["upstream"].as_str().unwrap_or("?")
                ),
                l["status"].as_str().unwrap_or("?").to_owned(),
            );
        }
        if !states.is_empty() && states.values().all(|s| s == "running") {
            for (link, state) in &states {
                println!("    {link}: {state}");
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("federation links not all running after 30 s: {states:?}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
