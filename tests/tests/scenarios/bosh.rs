//! BOSH (XEP-0124/0206) at `/http-bind`: a client over plain HTTP requests (reqwest) finds the
//! endpoint by XEP-0156 discovery, creates a session, authenticates with SASL PLAIN, restarts the stream, binds, chats with a TCP user
//! (what reaches it comes in a held request), and ends the session; repeated, out-of-window
//! and foreign requests get XEP-0124's answers; inactivity ends a session; the requests of one
//! session may reach different gateways of the DC.

use std::net::SocketAddr;

use base64::Engine as _;
use meerkat_testkit::client::pred::{message_with_body, presence_of_type};
use meerkat_testkit::client::Client;
use meerkat_testkit::stack::{Dc, StackOptions};
use meerkat_xmpp::{ns, Element};

use crate::{online, user};

const PW: &str = "secret-pw";
const HTTPBIND: &str = "http://jabber.org/protocol/httpbind";

/// A DC whose plain HTTP port counts as secure (PLAIN offered), with short BOSH timers.
async fn bosh_dc(inactivity: u64) -> Dc {
    Dc::start(StackOptions {
        gateway: Some(c2s_gateway::Config {
            plain_http_is_secure: true,
            bosh_max_wait_secs: 5,
            bosh_inactivity_secs: inactivity,
            ..c2s_gateway::Config::default()
        }),
        ..StackOptions::default()
    })
    .await
    .expect("start DC")
}

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}/http-bind")
}

/// One BOSH session seen from the client.
struct Bosh {
    http: reqwest::Client,
    sid: String,
    rid: u64,
    /// Children received and not yet expected.
    inbox: Vec<Element>,
}

async fn post(http: &reqwest::Client, to: &str, body: String) -> (String, Element) {
    let r = http
        .post(to)
        .header("content-type", "text/xml; charset=utf-8")
        .body(body)
        .send()
        .await
        .expect("HTTP request");
    assert_eq!(r.status(), 200);
    let text = r.text().await.expect("HTTP body");
    let el = Element::parse(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert!(el.is("body", HTTPBIND), "{text}");
    (text, el)
}

fn body_xml(attrs: &[(&str, String)], children: &[Element]) -> String {
    let mut s = format!("<body xmlns='{HTTPBIND}' xmlns:xmpp='urn:xmpp:xbosh'");
    for (k, v) in attrs {
        s.push_str(&format!(" {k}='{v}'"));
    }
    s.push('>');
    for c in children {
        s.push_str(&c.to_xml());
    }
    s.push_str("</body>");
    s
}

impl Bosh {
    /// Creates a session at `to`; returns it and the creation response (raw and parsed).
    async fn create(to: &str, domain: &str) -> (Bosh, String, Element) {
        Bosh::create_with(to, domain, &[]).await
    }

    /// [`Bosh::create`] with `extra` attributes on the creation request.
    async fn create_with(
        to: &str,
        domain: &str,
        extra: &[(&str, &str)],
    ) -> (Bosh, String, Element) {
        let http = reqwest::Client::new();
        let rid = 4_000_000 + u64::from(rand_u16());
        let mut attrs = vec![
            ("rid", rid.to_string()),
            ("to", domain.to_owned()),
            ("xml:lang", "en".to_owned()),
            ("wait", "5".to_owned()),
            ("hold", "1".to_owned()),
            ("ver", "1.6".to_owned()),
            ("xmpp:version", "1.0".to_owned()),
        ];
        attrs.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
        attrs.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        let (text, el) = post(&http, to, body_xml(&attrs, &[])).await;
        let sid = el
            .attr("sid")
            .unwrap_or_else(|| panic!("{text}"))
            .to_owned();
        let inbox = el.children().cloned().collect();
        (
            Bosh {
                http,
                sid,
                rid: rid + 1,
                inbox,
            },
            text,
            el,
        )
    }

    /// Sends `children` (with `extra` attributes) in the next request at `to`; keeps what comes.
    async fn send_at(&mut self, to: &str, extra: &[(&str, &str)], children: &[Element]) -> Element {
        let mut attrs = vec![("rid", self.rid.to_string()), ("sid", self.sid.clone())];
        attrs.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        self.rid += 1;
        let (_, el) = post(&self.http, to, body_xml(&attrs, children)).await;
        self.inbox.extend(el.children().cloned());
        el
    }

    /// Polls at `to` until a child matches `pred`.
    async fn expect_at(
        &mut self,
        to: &str,
        what: &str,
        pred: impl Fn(&Element) -> bool,
    ) -> Element {
        for _ in 0..30 {
            if let Some(i) = self.inbox.iter().position(&pred) {
                return self.inbox.remove(i);
            }
            let el = self.send_at(to, &[], &[]).await;
            assert_ne!(
                el.attr("type"),
                Some("terminate"),
                "waiting for {what}: {el:?}"
            );
        }
        panic!("{what} never came: {:?}", self.inbox);
    }

    /// SASL PLAIN and the restart, with requests alternating between `at`'s URLs; returns the
    /// features after the restart.
    async fn authenticate(&mut self, at: &[String], name: &str, domain: &str) -> Element {
        let pick = |i: usize| at[i % at.len()].clone();
        let mechanisms = self
            .expect_at(&pick(0), "features", |e| e.is("features", ns::STREAM))
            .await;
        assert!(mechanisms.to_xml().contains("PLAIN"), "{mechanisms:?}");
        let creds = base64::engine::general_purpose::STANDARD.encode(format!("\0{name}\0{PW}"));
        let auth = Element::new("auth", ns::SASL)
            .with_attr("mechanism", "PLAIN")
            .with_text(creds);
        self.send_at(&pick(1), &[], &[auth]).await;
        self.expect_at(&pick(2), "SASL success", |e| e.is("success", ns::SASL))
            .await;
        self.send_at(&pick(3), &[("xmpp:restart", "true"), ("to", domain)], &[])
            .await;
        let features = self
            .expect_at(&pick(4), "features after the restart", |e| {
                e.is("features", ns::STREAM)
            })
            .await;
        assert!(features.has_child("bind", ns::BIND), "{features:?}");
        features
    }

    /// SASL PLAIN, the restart, and the bind, with requests alternating between `at`'s URLs.
    async fn login(&mut self, at: &[String], name: &str, domain: &str) -> String {
        let pick = |i: usize| at[i % at.len()].clone();
        self.authenticate(at, name, domain).await;
        let bind = Element::new("iq", ns::CLIENT)
            .with_attr("type", "set")
            .with_attr("id", "bind1")
            .with_child(
                Element::new("bind", ns::BIND)
                    .with_child(Element::new("resource", ns::BIND).with_text("web")),
            );
        self.send_at(&pick(5), &[], &[bind]).await;
        let result = self
            .expect_at(&pick(6), "the bind result", |e| {
                e.attr("id") == Some("bind1")
            })
            .await;
        assert_eq!(result.attr("type"), Some("result"), "{result:?}");
        result
            .get_child("bind", ns::BIND)
            .and_then(|b| b.child_text("jid", ns::BIND))
            .expect("bound JID")
    }
}

fn rand_u16() -> u16 {
    let b = uuid::Uuid::new_v4();
    u16::from_be_bytes([b.as_bytes()[0], b.as_bytes()[1]])
}

async fn register(dc: &Dc, name: &str) {
    Client::register_account(&dc.client(), name, PW)
        .await
        .expect("register");
}

fn message(to: &str, text: &str) -> Element {
    Element::new("message", ns::CLIENT)
        .with_attr("to", to)
        .with_attr("type", "chat")
        .with_child(Element::new("body", ns::CLIENT).with_text(text))
}

fn directed_presence(to: &str) -> Element {
    Element::new("presence", ns::CLIENT).with_attr("to", to)
}

#[tokio::test]
async fn a_bosh_client_logs_in_chats_with_a_tcp_client_and_terminates() {
    let dc = bosh_dc(60).await;
    let domain = dc.options.domain.clone();
    // XEP-0156 discovery names the endpoint.
    let http = dc.http.expect("HTTP port");
    let meta: serde_json::Value = reqwest::get(format!("http://{http}/.well-known/host-meta.json"))
        .await
        .expect("host-meta.json")
        .json()
        .await
        .expect("JSON");
    let at = meta["links"]
        .as_array()
        .expect("links")
        .iter()
        .find(|l| l["rel"] == "urn:xmpp:alt-connections:xbosh")
        .and_then(|l| l["href"].as_str())
        .expect("a BOSH link")
        .to_owned();
    assert_eq!(at, url(http));
    let (w, t) = (user("bosh"), user("tcp"));
    register(&dc, &w).await;
    let mut tcp = online(&dc, &t, "desk").await;
    let tj = tcp.jid().to_owned();

    let (mut web, raw, created) = Bosh::create(&at, &domain).await;
    for (k, v) in [
        ("requests", "2"),
        ("hold", "1"),
        ("wait", "5"),
        ("polling", "2"),
        ("inactivity", "60"),
        ("from", domain.as_str()),
    ] {
        assert_eq!(created.attr(k), Some(v), "{k} in {raw}");
    }
    assert!(created.attr("ver").is_some(), "{raw}");
    assert!(raw.contains("xmpp:restartlogic='true'"), "{raw}");
    assert!(raw.contains("xmpp:version='1.0'"), "{raw}");
    let wj = web.login(std::slice::from_ref(&at), &w, &domain).await;
    assert!(wj.ends_with("/web"), "{wj}");

    // Available, and directed presence to the TCP user (who then sees it end).
    web.send_at(
        &at,
        &[],
        &[Element::new("presence", ns::CLIENT), directed_presence(&tj)],
    )
    .await;
    tcp.expect("the BOSH user's presence", presence_of_type(&wj, None))
        .await
        .unwrap();
    web.send_at(&at, &[], &[message(&tj, "over BOSH")]).await;
    let got = tcp
        .expect("the BOSH message", message_with_body("over BOSH"))
        .await
        .unwrap();
    assert_eq!(got.attr("from"), Some(wj.as_str()));

    // A request ahead of its turn waits for the one before: what they carry keeps `rid` order.
    let (first, second) = (web.rid, web.rid + 1);
    web.rid += 2;
    let ahead = {
        let http = web.http.clone();
        let body = body_xml(
            &[("rid", second.to_string()), ("sid", web.sid.clone())],
            &[message(&tj, "second")],
        );
        let at = at.clone();
        tokio::spawn(async move { post(&http, &at, body).await.1 })
    };
    let (_, el) = post(
        &web.http,
        &at,
        body_xml(
            &[("rid", first.to_string()), ("sid", web.sid.clone())],
            &[message(&tj, "first")],
        ),
    )
    .await;
    web.inbox.extend(el.children().cloned());
    let el = ahead.await.unwrap();
    web.inbox.extend(el.children().cloned());
    for text in ["first", "second"] {
        tcp.expect(text, message_with_body(text)).await.unwrap();
    }

    // A held request brings what reaches the session.
    let held = {
        let http = web.http.clone();
        let body = body_xml(
            &[("rid", web.rid.to_string()), ("sid", web.sid.clone())],
            &[],
        );
        let at = at.clone();
        web.rid += 1;
        tokio::spawn(async move { post(&http, &at, body).await.1 })
    };
    tcp.send_message(&wj, "to BOSH").await.unwrap();
    let answer = held.await.unwrap();
    web.inbox.extend(answer.children().cloned());
    let got = web
        .expect_at(&at, "the TCP user's message", |e| {
            e.is("message", ns::CLIENT)
                && e.child_text("body", ns::CLIENT).as_deref() == Some("to BOSH")
        })
        .await;
    assert_eq!(got.attr("from"), Some(tj.as_str()));

    // The client ends the session: the contact sees it go; the sid is then unknown.
    let end = web.send_at(&at, &[("type", "terminate")], &[]).await;
    assert_eq!(end.attr("type"), Some("terminate"), "{end:?}");
    tcp.expect("unavailable", presence_of_type(&wj, Some("unavailable")))
        .await
        .unwrap();
    let after = web.send_at(&at, &[], &[]).await;
    assert_eq!(after.attr("type"), Some("terminate"));
    assert_eq!(after.attr("condition"), Some("item-not-found"));
}

#[tokio::test]
async fn bosh_repeats_answer_the_same_and_foreign_or_far_requests_get_item_not_found() {
    let dc = bosh_dc(60).await;
    let domain = dc.options.domain.clone();
    let at = url(dc.http.expect("HTTP port"));
    let w = user("boshr");
    register(&dc, &w).await;
    let (mut web, _, _) = Bosh::create(&at, &domain).await;
    web.login(std::slice::from_ref(&at), &w, &domain).await;

    // A repeated rid gets the same response again.
    let ping = Element::new("iq", ns::CLIENT)
        .with_attr("type", "get")
        .with_attr("id", "p1")
        .with_attr("to", domain.as_str())
        .with_child(Element::new("ping", ns::PING));
    let rid = web.rid;
    let first = loop {
        let el = web.send_at(&at, &[], std::slice::from_ref(&ping)).await;
        if el.children().any(|c| c.attr("id") == Some("p1")) {
            break el;
        }
        // Answered before the pong (a repeat of an earlier request's output): try again.
    };
    let replay_rid = web.rid - 1;
    assert!(replay_rid >= rid);
    web.rid = replay_rid;
    let again = web.send_at(&at, &[], std::slice::from_ref(&ping)).await;
    assert_eq!(again, first, "a repeat gets the same body");

    // A wrong sid.
    let http = reqwest::Client::new();
    let (_, el) = post(
        &http,
        &at,
        body_xml(&[("rid", "1".into()), ("sid", "nobody.1234".into())], &[]),
    )
    .await;
    assert_eq!(el.attr("type"), Some("terminate"));
    assert_eq!(el.attr("condition"), Some("item-not-found"));
    // Not a body at all.
    let r = http.post(&at).body("<message/>").send().await.unwrap();
    let text = r.text().await.unwrap();
    assert!(text.contains("condition='bad-request'"), "{text}");

    // A rid far ahead of the window ends the session; what follows finds nothing.
    web.rid += 10;
    let far = web.send_at(&at, &[], &[]).await;
    assert_eq!(far.attr("type"), Some("terminate"));
    assert_eq!(far.attr("condition"), Some("item-not-found"));
    web.rid -= 10;
    let after = web.send_at(&at, &[], &[]).await;
    assert_eq!(after.attr("condition"), Some("item-not-found"));

    // A body past the stanza limit (10 KiB before authentication) gets the stream's error.
    let (mut big, _, _) = Bosh::create(&at, &domain).await;
    let end = big
        .send_at(
            &at,
            &[],
            &[message("x@example.com", &"x".repeat(20 * 1024))],
        )
        .await;
    assert_eq!(end.attr("type"), Some("terminate"), "{end:?}");
    assert_eq!(end.attr("condition"), Some("remote-stream-error"));
    let error = end
        .get_child("error", ns::STREAM)
        .unwrap_or_else(|| panic!("a stream error in {end:?}"));
    assert!(
        error.has_child("policy-violation", ns::STREAMS_ERR),
        "{error:?}"
    );
}

#[tokio::test]
async fn an_inactive_bosh_session_ends_and_its_contact_sees_it_go() {
    let dc = bosh_dc(2).await;
    let domain = dc.options.domain.clone();
    let at = url(dc.http.expect("HTTP port"));
    let (w, t) = (user("boshi"), user("tcpi"));
    register(&dc, &w).await;
    let mut tcp = online(&dc, &t, "desk").await;
    let tj = tcp.jid().to_owned();
    let (mut web, _, _) = Bosh::create(&at, &domain).await;
    let wj = web.login(std::slice::from_ref(&at), &w, &domain).await;
    web.send_at(&at, &[], &[directed_presence(&tj)]).await;
    tcp.expect("the BOSH user's presence", presence_of_type(&wj, None))
        .await
        .unwrap();
    // No more requests: after `inactivity` the session is a lost connection.
    tcp.expect("unavailable", presence_of_type(&wj, Some("unavailable")))
        .await
        .unwrap();
    let after = web.send_at(&at, &[], &[]).await;
    assert_eq!(after.attr("condition"), Some("item-not-found"));
}

/// XEP-0124 §12: the creation response offers `maxpause`; a client that pauses its session
/// (a request with `pause`, answered at once) may stay silent past `inactivity` up to the
/// pause, and what reaches the session meanwhile waits for its next request, which ends the
/// pause: from then on `inactivity` holds again. A pause past `maxpause` ends the session.
#[tokio::test]
async fn a_paused_bosh_session_outlives_its_inactivity_and_a_pause_past_maxpause_ends_it() {
    let dc = bosh_dc(2).await;
    let domain = dc.options.domain.clone();
    let at = url(dc.http.expect("HTTP port"));
    let (w, t) = (user("boshp"), user("tcpp"));
    register(&dc, &w).await;
    let mut tcp = online(&dc, &t, "desk").await;
    let tj = tcp.jid().to_owned();
    let (mut web, raw, created) = Bosh::create(&at, &domain).await;
    assert_eq!(created.attr("maxpause"), Some("120"), "{raw}");
    let wj = web.login(std::slice::from_ref(&at), &w, &domain).await;
    web.send_at(&at, &[], &[directed_presence(&tj)]).await;
    tcp.expect("the BOSH user's presence", presence_of_type(&wj, None))
        .await
        .unwrap();

    let paused = web.send_at(&at, &[("pause", "12")], &[]).await;
    assert_ne!(paused.attr("type"), Some("terminate"), "{paused:?}");
    tcp.send_message(&wj, "while paused").await.unwrap();
    // More than twice `inactivity` (2 s) without a request: unpaused, the session would have
    // ended (an_inactive_bosh_session_ends_and_its_contact_sees_it_go).
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let got = web
        .expect_at(&at, "the message sent during the pause", |e| {
            e.child_text("body", ns::CLIENT).as_deref() == Some("while paused")
        })
        .await;
    assert_eq!(got.attr("from"), Some(tj.as_str()));
    // The pause is over: silence past `inactivity` ends the session, and the contact sees it
    // go (the first unavailable presence it gets: none came during the pause).
    let gone = tcp
        .expect("a presence of the BOSH user", |e| {
            e.is("presence", ns::CLIENT) && e.attr("from") == Some(wj.as_str())
        })
        .await
        .unwrap();
    assert_eq!(gone.attr("type"), Some("unavailable"), "{gone:?}");

    // Asking for more than `maxpause` ends the session.
    let (mut other, _, _) = Bosh::create(&at, &domain).await;
    let end = other.send_at(&at, &[("pause", "121")], &[]).await;
    assert_eq!(end.attr("type"), Some("terminate"), "{end:?}");
    assert_eq!(end.attr("condition"), Some("policy-violation"), "{end:?}");
    let after = other.send_at(&at, &[], &[]).await;
    assert_eq!(after.attr("condition"), Some("item-not-found"));
}

/// XEP-0124 §15 key sequencing, as a client does it: keys K(n) = hex(SHA-1(K(n−1))), used
/// from the last down.
fn key_chain(seed: &str, n: usize) -> Vec<String> {
    use sha1::Digest as _;
    let mut keys = vec![seed.to_owned()];
    let mut last = seed.to_owned();
    for _ in 0..n {
        last = sha1::Sha1::digest(last.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        keys.push(last.clone());
    }
    keys
}

/// XEP-0124 §15: a session created with `newkey` takes each request only with the `key` that
/// hashes to the previous one; a request can start a new sequence (`newkey` beside its
/// `key`); a wrong or missing key ends the session with `item-not-found`, and a repeated
/// request is answered as before, key and all.
#[tokio::test]
async fn bosh_key_sequencing_takes_each_key_once_in_order() {
    let dc = bosh_dc(60).await;
    let domain = dc.options.domain.clone();
    let at = url(dc.http.expect("HTTP port"));
    let one = key_chain("first sequence", 3);
    let two = key_chain("second sequence", 3);
    // `hold='0'`: every request is answered at once.
    let (mut web, raw, _) =
        Bosh::create_with(&at, &domain, &[("newkey", &one[3]), ("hold", "0")]).await;
    let ok = |el: &Element| el.attr("type") != Some("terminate");
    let r = web.send_at(&at, &[("key", &one[2])], &[]).await;
    assert!(ok(&r), "{raw} then {r:?}");
    let r = web.send_at(&at, &[("key", &one[1])], &[]).await;
    assert!(ok(&r), "{r:?}");
    // The last key of the first sequence, and the start of a second.
    let r = web
        .send_at(&at, &[("key", &one[0]), ("newkey", &two[3])], &[])
        .await;
    assert!(ok(&r), "{r:?}");
    // A repeat of that request: its answer again.
    web.rid -= 1;
    let again = web
        .send_at(&at, &[("key", &one[0]), ("newkey", &two[3])], &[])
        .await;
    assert_eq!(again.to_xml(), r.to_xml());
    let r = web.send_at(&at, &[("key", &two[2])], &[]).await;
    assert!(ok(&r), "{r:?}");
    // A key already used (one who saw it on the wire) ends the session.
    let r = web.send_at(&at, &[("key", &two[2])], &[]).await;
    assert_eq!(r.attr("type"), Some("terminate"), "{r:?}");
    assert_eq!(r.attr("condition"), Some("item-not-found"), "{r:?}");

    // No key at all, in a session that asked for them.
    let (mut other, _, _) =
        Bosh::create_with(&at, &domain, &[("newkey", &one[3]), ("hold", "0")]).await;
    let r = other.send_at(&at, &[], &[]).await;
    assert_eq!(r.attr("condition"), Some("item-not-found"), "{r:?}");
}

#[tokio::test]
async fn the_requests_of_one_bosh_session_may_reach_different_gateways() {
    let mut dc = bosh_dc(60).await;
    let domain = dc.options.domain.clone();
    let a = url(dc.start_gateway_on_own_http().await.unwrap());
    let b = url(dc.start_gateway_on_own_http().await.unwrap());
    let (w, t) = (user("bosh2"), user("tcp2"));
    register(&dc, &w).await;
    let mut tcp = online(&dc, &t, "desk").await;
    let tj = tcp.jid().to_owned();

    let (mut web, _, _) = Bosh::create(&a, &domain).await;
    // Every step alternates between the gateway that holds the session and the other.
    let wj = web.login(&[a.clone(), b.clone()], &w, &domain).await;
    web.send_at(&b, &[], &[message(&tj, "via the other gateway")])
        .await;
    tcp.expect("the message", message_with_body("via the other gateway"))
        .await
        .unwrap();
    tcp.send_message(&wj, "back").await.unwrap();
    let got = web
        .expect_at(&b, "the answer at the other gateway", |e| {
            e.child_text("body", ns::CLIENT).as_deref() == Some("back")
        })
        .await;
    assert_eq!(got.attr("from"), Some(tj.as_str()));
    let end = web.send_at(&b, &[("type", "terminate")], &[]).await;
    assert_eq!(end.attr("type"), Some("terminate"));
}

#[tokio::test]
async fn a_bosh_session_gone_inactive_resumes_with_stream_management_in_a_new_one() {
    let dc = bosh_dc(2).await;
    let domain = dc.options.domain.clone();
    let at = url(dc.http.expect("HTTP port"));
    let (w, t) = (user("boshsm"), user("tcpsm"));
    register(&dc, &w).await;
    let mut tcp = online(&dc, &t, "desk").await;
    let (mut web, _, _) = Bosh::create(&at, &domain).await;
    let wj = web.login(std::slice::from_ref(&at), &w, &domain).await;
    // The bind result waits for the broker's confirm of the session's announcement, not for
    // the routers to have applied it: a message to the new full JID routed before they have
    // is stored offline (RFC 6121 §8.5.3.2.1), and this session, which never sends presence,
    // would not get it. A stanza from the session is routed only once the router's directory
    // has its announcement (router partition.rs `wait_seen`): once the TCP user has this one,
    // the session is reachable.
    web.send_at(
        &at,
        &[],
        &[
            message(tcp.jid(), "reachable"),
            Element::new("enable", ns::SM).with_attr("resume", "true"),
        ],
    )
    .await;
    tcp.expect(
        "the BOSH user's first message",
        message_with_body("reachable"),
    )
    .await
    .unwrap();
    let enabled = web
        .expect_at(&at, "<enabled/>", |e| e.is("enabled", ns::SM))
        .await;
    let previd = enabled.attr("id").expect("a resumption id").to_owned();

    // The client stops asking (its connection is gone); a message reaches its session meanwhile.
    tcp.send_message(&wj, "while you were away").await.unwrap();

    // A new BOSH session resumes the old one and gets what the old one never delivered.
    let (mut again, _, _) = Bosh::create(&at, &domain).await;
    again
        .authenticate(std::slice::from_ref(&at), &w, &domain)
        .await;
    again
        .send_at(
            &at,
            &[],
            &[Element::new("resume", ns::SM)
                .with_attr("previd", previd)
                .with_attr("h", "0")],
        )
        .await;
    again
        .expect_at(&at, "<resumed/>", |e| e.is("resumed", ns::SM))
        .await;
    let got = again
        .expect_at(&at, "the message sent meanwhile", |e| {
            e.child_text("body", ns::CLIENT).as_deref() == Some("while you were away")
        })
        .await;
    assert_eq!(got.attr("to"), Some(wj.as_str()));
    // The old session's sid is gone.
    let old = web.send_at(&at, &[], &[]).await;
    assert_eq!(old.attr("condition"), Some("item-not-found"));
}
