//! `meerkat-compose-probe web`: the web clients' endpoints (docs/websocket.md) through the
//! load balancers' published HTTPS ports. XEP-0156 discovery at each DC, a login over
//! WebSocket (RFC 7395) at DC 1 chatting with a TCP session at DC 2, then a BOSH session
//! (XEP-0124/0206) at DC 2 — created, logged in with SASL PLAIN, restarted, bound — chatting
//! with the WebSocket session, and terminated.
//!
//! The HTTPS ports, not the plain ones: the compose file leaves `plain_http_is_secure` off, so
//! on plain HTTP the gateways offer no mechanism that a client could log in with there.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use meerkat_testkit::client::pred::{message_with_body, presence_of_type};
use meerkat_testkit::client::{chat, ClientConfig};
use meerkat_xmpp::{bosh, escape_attr, ns, Element};
use serde_json::Value;

use super::{addr, online, step};

const WEBSOCKET_REL: &str = "urn:xmpp:alt-connections:websocket";
const BOSH_REL: &str = "urn:xmpp:alt-connections:xbosh";

/// How long the gateway may hold a BOSH request with nothing to answer (`wait`).
const BOSH_WAIT_SECS: u64 = 10;

pub async fn web(
    dc1_https: &str,
    dc2_tcp: &str,
    dc2_https: &str,
    domain: &str,
    prefix: &str,
    password: &str,
) -> anyhow::Result<()> {
    let t = Instant::now();
    // The gateways' certificates are self-signed, as for the XMPP client.
    let http = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(BOSH_WAIT_SECS + 20))
        .build()?;
    let (a, b) = (format!("{prefix}-alice"), format!("{prefix}-bob"));

    let dc1 = discover(&http, dc1_https)
        .await
        .context("discovery at DC 1")?;
    step(
        t,
        &format!(
            "host-meta and host-meta.json at DC 1 (https://{dc1_https}/.well-known/) name {} and {}",
            dc1.websocket, dc1.bosh
        ),
    );

    // Where discovery said: wss://HOST:PORT/xmpp-websocket.
    let ws_at = dc1
        .websocket
        .strip_prefix("wss://")
        .and_then(|r| r.strip_suffix("/xmpp-websocket"))
        .with_context(|| format!("not a wss:// URL of /xmpp-websocket: {}", dc1.websocket))?;
    let mut bob_tcp = online(
        &ClientConfig::new(addr(dc2_tcp)?, domain),
        &b,
        password,
        "desk",
    )
    .await
    .context("bob's login over TCP at DC 2")?;
    let mut alice = online(
        &ClientConfig::websocket(addr(ws_at)?, domain, true),
        &a,
        password,
        "web",
    )
    .await
    .context("alice's login over WebSocket at DC 1")?;
    bob_tcp
        .expect(
            "alice's presence from her WebSocket session",
            presence_of_type(alice.jid(), None),
        )
        .await?;
    alice
        .expect("bob's presence", presence_of_type(bob_tcp.jid(), None))
        .await?;
    step(
        t,
        &format!(
            "{} logged in over WebSocket at DC 1 ({}, SCRAM-SHA-256), {} over TCP at DC 2 ({dc2_tcp}); each sees the other's presence",
            alice.jid(),
            dc1.websocket,
            bob_tcp.jid()
        ),
    );

    let (alice_jid, bob_tcp_jid) = (alice.jid().to_owned(), bob_tcp.jid().to_owned());
    alice
        .send_message(&bob_tcp_jid, "hello over WebSocket")
        .await?;
    bob_tcp
        .expect(
            "the WebSocket session's message",
            message_with_body("hello over WebSocket"),
        )
        .await?;
    step(t, "chat WebSocket at DC 1 -> TCP at DC 2 delivered");
    bob_tcp
        .send_message(&alice_jid, "hello to the WebSocket")
        .await?;
    alice
        .expect(
            "the TCP session's message",
            message_with_body("hello to the WebSocket"),
        )
        .await?;
    step(t, "chat TCP at DC 2 -> WebSocket at DC 1 delivered");

    let dc2 = discover(&http, dc2_https)
        .await
        .context("discovery at DC 2")?;
    let mut session = Bosh::create(&http, &dc2.bosh, domain)
        .await
        .context("BOSH session creation at DC 2")?;
    let features = session
        .expect("stream features", |e| e.is("features", ns::STREAM))
        .await?;
    let mechanisms: Vec<String> = features
        .get_child("mechanisms", ns::SASL)
        .map(|m| m.children().map(Element::text).collect())
        .unwrap_or_default();
    if !mechanisms.iter().any(|m| m == "PLAIN") {
        bail!("BOSH at DC 2 offers no SASL PLAIN (is HTTPS taken for encrypted?): {features}");
    }
    step(
        t,
        &format!(
            "BOSH session created at DC 2 ({}, from its host-meta): sid of {}, SASL {}",
            dc2.bosh,
            // `<gateway instance>.<random>`: the holder's name, not the secret part.
            session.sid.split('.').next().unwrap_or_default(),
            mechanisms.join(", ")
        ),
    );

    let bob_web = session
        .login(&b, password, domain, "bosh")
        .await
        .context("bob's login over BOSH at DC 2")?;
    session
        .send(&[], &[Element::new("presence", ns::CLIENT)])
        .await?;
    alice
        .expect(
            "bob's presence from his BOSH session",
            presence_of_type(&bob_web, None),
        )
        .await?;
    step(
        t,
        &format!(
            "{bob_web} logged in over BOSH (SASL PLAIN, restart, bind), available; alice at DC 1 sees it"
        ),
    );

    alice.send_message(&bob_web, "hello over BOSH").await?;
    session
        .expect("alice's message", message_with_body("hello over BOSH"))
        .await?;
    step(t, "chat WebSocket at DC 1 -> BOSH at DC 2 delivered");

    // A request with nothing to answer is held up to `wait`: send this one aside, as a
    // browser's client does, and let the terminate release it.
    let reply = chat(&alice_jid, "hello from BOSH");
    let (http, url, body) = session.request(&[], &[reply]);
    let sent = tokio::spawn(async move { post(&http, &url, body).await });
    alice
        .expect(
            "the BOSH session's message",
            message_with_body("hello from BOSH"),
        )
        .await?;
    step(t, "chat BOSH at DC 2 -> WebSocket at DC 1 delivered");

    let unavailable = Element::new("presence", ns::CLIENT).with_attr("type", "unavailable");
    let end = session
        .send(&[("type", "terminate")], &[unavailable])
        .await?;
    sent.await.context("the held request")??;
    if end.attr("type") != Some("terminate") {
        bail!("terminate answered with {end}");
    }
    alice
        .expect(
            "bob's BOSH session going",
            presence_of_type(&bob_web, Some("unavailable")),
        )
        .await?;
    step(
        t,
        "BOSH session terminated; alice sees bob's BOSH resource go",
    );

    bob_tcp.close().await?;
    alice.close().await?;
    Ok(())
}

/// What a DC's discovery names (XEP-0156).
struct Endpoints {
    websocket: String,
    bosh: String,
}

/// host-meta.json and host-meta (XRD) at `https` (HOST:PORT): both must name the WebSocket
/// and BOSH URLs of that address, as a gateway without `http_public_url` answers.
async fn discover(http: &reqwest::Client, https: &str) -> anyhow::Result<Endpoints> {
    let want = Endpoints {
        websocket: format!("wss://{https}/xmpp-websocket"),
        bosh: format!("https://{https}/http-bind"),
    };
    let json: Value = http
        .get(format!("https://{https}/.well-known/host-meta.json"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await
        .context("host-meta.json")?;
    let from_json = |rel: &str| {
        json["links"]
            .as_array()
            .and_then(|ls| ls.iter().find(|l| l["rel"] == rel))
            .and_then(|l| l["href"].as_str())
            .map(str::to_owned)
    };
    let xrd = http
        .get(format!("https://{https}/.well-known/host-meta"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let xrd = Element::parse(&xrd).with_context(|| format!("host-meta: {xrd}"))?;
    let from_xrd = |rel: &str| {
        xrd.children()
            .find(|l| l.name() == "Link" && l.attr("rel") == Some(rel))
            .and_then(|l| l.attr("href"))
            .map(str::to_owned)
    };
    for (rel, url) in [(WEBSOCKET_REL, &want.websocket), (BOSH_REL, &want.bosh)] {
        let (j, x) = (from_json(rel), from_xrd(rel));
        if j.as_deref() != Some(url) || x.as_deref() != Some(url) {
            bail!("{rel}: host-meta.json names {j:?}, host-meta {x:?}; {url} wanted");
        }
    }
    Ok(want)
}

/// One BOSH session seen from the client: requests one after the other, `rid` counted.
struct Bosh {
    http: reqwest::Client,
    url: String,
    sid: String,
    rid: u64,
    /// Children received and not yet expected.
    inbox: Vec<Element>,
}

/// One `<body/>` with `attrs` around `children`.
fn body_xml(attrs: &[(&str, String)], children: &[Element]) -> String {
    let mut s = format!("<body xmlns='{}' xmlns:xmpp='urn:xmpp:xbosh'", bosh::NS);
    for (k, v) in attrs {
        s.push_str(&format!(" {k}='{}'", escape_attr(v)));
    }
    s.push('>');
    for c in children {
        s.push_str(&c.to_xml());
    }
    s.push_str("</body>");
    s
}

/// POSTs a body; the answer's `<body/>`.
async fn post(http: &reqwest::Client, url: &str, body: String) -> anyhow::Result<Element> {
    let r = http
        .post(url)
        .header("content-type", "text/xml; charset=utf-8")
        .body(body)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?
        .error_for_status()?;
    let text = r.text().await?;
    let el = Element::parse(&text).with_context(|| format!("BOSH answer: {text}"))?;
    if !el.is("body", bosh::NS) {
        bail!("BOSH answer is not a <body/>: {text}");
    }
    Ok(el)
}

impl Bosh {
    /// Session creation (XEP-0124 §7.1, XEP-0206 §4): a `sid` must come back.
    async fn create(http: &reqwest::Client, url: &str, domain: &str) -> anyhow::Result<Bosh> {
        let rid = 1_000_000 + u64::from(rand::random::<u32>());
        let attrs = [
            ("rid", rid.to_string()),
            ("to", domain.to_owned()),
            ("xml:lang", "en".to_owned()),
            ("wait", BOSH_WAIT_SECS.to_string()),
            ("hold", "1".to_owned()),
            ("ver", "1.6".to_owned()),
            ("xmpp:version", "1.0".to_owned()),
        ];
        let el = post(http, url, body_xml(&attrs, &[])).await?;
        let Some(sid) = el.attr("sid").filter(|s| !s.is_empty()) else {
            bail!("no sid in the session creation response: {el}");
        };
        Ok(Bosh {
            http: http.clone(),
            url: url.to_owned(),
            sid: sid.to_owned(),
            rid: rid + 1,
            inbox: el.children().cloned().collect(),
        })
    }

    /// The next request (client, URL, body), its `rid` taken: for sending aside.
    fn request(
        &mut self,
        extra: &[(&str, &str)],
        children: &[Element],
    ) -> (reqwest::Client, String, String) {
        let mut attrs = vec![("rid", self.rid.to_string()), ("sid", self.sid.clone())];
        attrs.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        self.rid += 1;
        (
            self.http.clone(),
            self.url.clone(),
            body_xml(&attrs, children),
        )
    }

    /// Sends `children` in the next request and keeps what the answer carries.
    async fn send(
        &mut self,
        extra: &[(&str, &str)],
        children: &[Element],
    ) -> anyhow::Result<Element> {
        let (http, url, body) = self.request(extra, children);
        let el = post(&http, &url, body).await?;
        self.inbox.extend(el.children().cloned());
        Ok(el)
    }

    /// The first child received that matches `pred`, polling (each poll held up to `wait`)
    /// for up to 30 s.
    async fn expect(
        &mut self,
        what: &str,
        pred: impl Fn(&Element) -> bool,
    ) -> anyhow::Result<Element> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(i) = self.inbox.iter().position(&pred) {
                return Ok(self.inbox.remove(i));
            }
            if Instant::now() > deadline {
                bail!("BOSH: no {what} within 30 s; received: {:?}", self.inbox);
            }
            let el = self.send(&[], &[]).await?;
            if el.attr("type") == Some("terminate") {
                bail!(
                    "BOSH session ended while waiting for {what}: {}",
                    el.attr("condition").unwrap_or("no condition")
                );
            }
        }
    }

    /// SASL PLAIN, the stream restart (`xmpp:restart`), the bind; the bound full JID.
    async fn login(
        &mut self,
        user: &str,
        password: &str,
        domain: &str,
        resource: &str,
    ) -> anyhow::Result<String> {
        let creds = B64.encode(format!("\0{user}\0{password}"));
        let auth = Element::new("auth", ns::SASL)
            .with_attr("mechanism", "PLAIN")
            .with_text(creds);
        self.send(&[], &[auth]).await?;
        let outcome = self
            .expect("the SASL outcome", |e| {
                e.ns() == ns::SASL && matches!(e.name(), "success" | "failure")
            })
            .await?;
        if outcome.name() != "success" {
            bail!("SASL PLAIN failed: {outcome}");
        }
        self.send(&[("xmpp:restart", "true"), ("to", domain)], &[])
            .await?;
        let features = self
            .expect("the features after the restart", |e| {
                e.is("features", ns::STREAM)
            })
            .await?;
        if !features.has_child("bind", ns::BIND) {
            bail!("no resource binding offered after the restart: {features}");
        }
        let bind = Element::new("iq", ns::CLIENT)
            .with_attr("type", "set")
            .with_attr("id", "bind1")
            .with_child(
                Element::new("bind", ns::BIND)
                    .with_child(Element::new("resource", ns::BIND).with_text(resource)),
            );
        self.send(&[], &[bind]).await?;
        let result = self
            .expect("the bind result", |e| e.attr("id") == Some("bind1"))
            .await?;
        result
            .get_child("bind", ns::BIND)
            .and_then(|b| b.child_text("jid", ns::BIND))
            .filter(|_| result.attr("type") == Some("result"))
            .with_context(|| format!("bind failed: {result}"))
    }
}
