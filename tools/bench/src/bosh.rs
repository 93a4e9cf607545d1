//! `--bosh-loop C`: how many BOSH requests per second a gateway answers. C clients (users
//! `<prefix>bosh<i>`, registered over TCP at `--addr` first) each create a BOSH session at
//! `--bosh-url` (`hold='1'`, `wait='60'`), authenticate with SASL PLAIN, restart and bind, 20
//! at a time; then, for `--duration` seconds, each sends one request after another, each
//! carrying an XEP-0199 ping to the server, and sends the next once the response holding the
//! ping's result came (a response without it, which only `wait` passing gives, is followed by an
//! empty request until it comes). Prints requests answered per second and the round trip of
//! each ping (p50/p99). Every request is a new HTTP request on the client's kept-alive
//! connection, as browsers send them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use base64::Engine as _;
use meerkat_xmpp::{ns, Element};

use crate::client::BenchClient;
use crate::Args;

const HTTPBIND: &str = "http://jabber.org/protocol/httpbind";

struct Session {
    http: reqwest::Client,
    url: Arc<str>,
    sid: String,
    rid: u64,
}

/// Posts one body; the response's `<body/>`, refused if it ends the session.
async fn post(http: &reqwest::Client, url: &str, body: String) -> anyhow::Result<Element> {
    let text = http
        .post(url)
        .header("content-type", "text/xml; charset=utf-8")
        .body(body)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let el = Element::parse(&text).map_err(|e| anyhow::anyhow!("{e}: {text}"))?;
    if el.attr("type") == Some("terminate") {
        bail!("the session ended: {text}");
    }
    Ok(el)
}

impl Session {
    /// The next request, with `attrs` and `children` (XML text); its response's children.
    async fn send(&mut self, attrs: &str, children: &str) -> anyhow::Result<Vec<Element>> {
        let body = format!(
            "<body xmlns='{HTTPBIND}' xmlns:xmpp='urn:xmpp:xbosh' rid='{}' sid='{}'{attrs}>{children}</body>",
            self.rid, self.sid
        );
        self.rid += 1;
        let el = post(&self.http, &self.url, body).await?;
        Ok(el.children().cloned().collect())
    }

    /// Requests (the first with `attrs` and `children`, then empty ones) until a child
    /// matches `pred`; returns how many requests that took.
    async fn until(
        &mut self,
        attrs: &str,
        children: &str,
        what: &str,
        pred: impl Fn(&Element) -> bool,
    ) -> anyhow::Result<u64> {
        let mut got = self.send(attrs, children).await?;
        let mut requests = 1;
        while !got.iter().any(&pred) {
            if requests > 10 {
                bail!("no {what} in 10 responses");
            }
            got = self.send("", "").await?;
            requests += 1;
        }
        Ok(requests)
    }

    /// Creation, SASL PLAIN, restart, bind.
    async fn login(
        http: reqwest::Client,
        url: Arc<str>,
        domain: &str,
        user: &str,
        password: &str,
    ) -> anyhow::Result<Session> {
        let rid = 1_000_000 + u64::from(std::process::id() % 1000) * 1000;
        let created = post(
            &http,
            &url,
            format!("<body xmlns='{HTTPBIND}' xmlns:xmpp='urn:xmpp:xbosh' rid='{rid}' to='{domain}' wait='60' hold='1' ver='1.6' xmpp:version='1.0'/>"),
        )
        .await?;
        let sid = created
            .attr("sid")
            .with_context(|| format!("no sid: {created}"))?
            .to_owned();
        let mut s = Session {
            http,
            url,
            sid,
            rid: rid + 1,
        };
        if !created.children().any(|c| c.is("features", ns::STREAM)) {
            s.until("", "", "features", |c| c.is("features", ns::STREAM))
                .await?;
        }
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        let auth = format!(
            "<auth xmlns='{}' mechanism='PLAIN'>{token}</auth>",
            ns::SASL
        );
        s.until("", &auth, "SASL success", |c| c.is("success", ns::SASL))
            .await?;
        let restart = format!(" xmpp:restart='true' to='{domain}'");
        s.until(&restart, "", "features", |c| c.is("features", ns::STREAM))
            .await?;
        let bind = "<iq xmlns='jabber:client' type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>bosh</resource></bind></iq>";
        s.until("", bind, "the bind result", |c| {
            c.attr("id") == Some("bind")
        })
        .await?;
        Ok(s)
    }
}

pub async fn run(args: &Args) -> anyhow::Result<()> {
    let clients = args.bosh_loop;
    let http = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()?;
    let url: Arc<str> = args.bosh_url.clone().into();
    let names: Vec<String> = (0..clients)
        .map(|i| format!("{}bosh{i}", args.prefix))
        .collect();
    for name in &names {
        BenchClient::register(args.addr, &args.domain, name, &args.password).await?;
    }
    let started = Instant::now();
    let mut sessions = Vec::with_capacity(clients);
    for chunk in names.chunks(20) {
        let batch: Vec<_> = chunk
            .iter()
            .map(|name| {
                let (http, url) = (http.clone(), url.clone());
                let (domain, name, password) =
                    (args.domain.clone(), name.clone(), args.password.clone());
                tokio::spawn(
                    async move { Session::login(http, url, &domain, &name, &password).await },
                )
            })
            .collect();
        for b in batch {
            sessions.push(b.await??);
        }
    }
    println!(
        "bosh: {clients} sessions logged in at {} in {:.1} s; {} s of requests",
        args.bosh_url,
        started.elapsed().as_secs_f64(),
        args.duration
    );
    let duration = Duration::from_secs(args.duration.max(1));
    let begun = Instant::now();
    let workers: Vec<_> = sessions
        .into_iter()
        .map(|mut s| {
            let domain = args.domain.clone();
            tokio::spawn(async move {
                let mut latency = crate::chat::histogram();
                let (mut requests, mut n) = (0u64, 0u64);
                while begun.elapsed() < duration {
                    n += 1;
                    let id = format!("p{n}");
                    let ping = format!(
                        "<iq xmlns='jabber:client' type='get' id='{id}' to='{domain}'><ping xmlns='urn:xmpp:ping'/></iq>"
                    );
                    let sent = Instant::now();
                    requests += s
                        .until("", &ping, "the ping's result", |c| {
                            c.attr("id") == Some(id.as_str())
                        })
                        .await?;
                    let us = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                    latency.record(us.max(1))?;
                }
                let _ = s.send(" type='terminate'", "").await;
                Ok::<_, anyhow::Error>((requests, latency))
            })
        })
        .collect();
    let mut requests = 0;
    let mut latency = crate::chat::histogram();
    let mut failed = 0;
    for w in workers {
        match w.await? {
            Ok((r, h)) => {
                requests += r;
                latency.add(h)?;
            }
            Err(e) => {
                failed += 1;
                eprintln!("bosh: a client failed: {e:#}");
            }
        }
    }
    let wall = begun.elapsed().as_secs_f64();
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "bosh: {clients} clients, {requests} requests answered in {wall:.1} s = {:.0} requests/s; ping round trip p50 {:.2} ms, p99 {:.2} ms; {failed} clients failed",
        requests as f64 / wall,
        ms(0.5),
        ms(0.99)
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "workload": "bosh-loop", "clients": clients, "requests": requests,
                "seconds": wall, "requests_per_s": requests as f64 / wall,
                "p50_ms": ms(0.5), "p99_ms": ms(0.99), "failed": failed,
            })
        );
    }
    if failed > 0 {
        bail!("{failed} BOSH clients failed");
    }
    Ok(())
}
