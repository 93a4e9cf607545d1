//! `/http-bind`: BOSH (XEP-0124) carrying XMPP (XEP-0206). A BOSH session is a [`Transport`]
//! like a TCP connection or a WebSocket: its reader yields the children of each request's
//! `<body/>` (in `rid` order), its writer collects what the engine writes for the next response
//! (`meerkat_xmpp::bosh` frames both ways). Negotiation, SASL, binding, stream management,
//! CSI, limits and pings are the TCP connection's own code.
//!
//! The `sid` names the gateway instance holding the session (`<instance>.<random>`); a request
//! that reaches another gateway of the DC (they share the port) goes to the holder over
//! RabbitMQ as a `handover` step (`bosh-request`), and the holder's answer (`bosh-reply`) is
//! the HTTP response (docs/websocket.md "BOSH", docs/protocol.md "Handover").
//!
//! [`Transport`]: crate::conn::Transport

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body as HttpBody;
use axum::extract::{Extension, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use meerkat_wire::handover::{self as step, BoshReply, BoshRequest};
use meerkat_xmpp::bosh::{self, Head};
use meerkat_xmpp::{ns, Inbound, Limits, ReadError, StreamError, StreamHeader};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use super::{Connection, Web};
use crate::conn::Activity;
use crate::handover::Peer;
use crate::Ctx;

/// The path of the BOSH endpoint.
pub const BOSH_PATH: &str = "/http-bind";
/// XEP-0124 §7: requests the client may have open at once (`hold` + 1).
const REQUESTS: u64 = 2;
/// Requests held waiting for something to say.
const HOLD: u64 = 1;
/// The shortest interval between polls a client must keep (`polling`), in seconds.
const POLLING: u64 = 2;
/// The BOSH version spoken.
const VERSION: &str = "1.11";
/// Bytes past `max_stanza_bytes` read of a request body, so a body a little over the limit is
/// answered with the stanza limit's error, not cut.
const BODY_SLACK: usize = 64 * 1024;
/// What the engine may have written that no request took yet, before its writes wait (a TCP
/// socket's buffer, the same idea).
const OUT_CAP: usize = 1024 * 1024;
/// How much longer than `wait` a gateway waits for the holder's answer to a forwarded request.
const FORWARD_SLACK: Duration = Duration::from_secs(10);

/// The BOSH sessions this gateway holds, and the forwarded requests it waits answers for.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Arc<Session>>>,
    forwards: Mutex<HashMap<Uuid, oneshot::Sender<String>>>,
}

impl Sessions {
    fn get(&self, sid: &str) -> Option<Arc<Session>> {
        self.map.lock().get(sid).cloned()
    }

    fn remove(&self, sid: &str) {
        self.map.lock().remove(sid);
    }
}

/// How a session ended, for the `terminate` body that says so.
#[derive(Clone, Copy, Debug)]
enum Ended {
    /// `</stream:stream>`: the stream's clean end.
    Closed,
    /// A stream error was written (it is in the body).
    StreamError,
    /// Ended without a word to the client: inactivity, a bad request, the gateway.
    Condition(&'static str),
}

impl Ended {
    fn condition(self) -> Option<&'static str> {
        match self {
            Ended::Closed => None,
            Ended::StreamError => Some("remote-stream-error"),
            Ended::Condition(c) => Some(c),
        }
    }
}

pub struct Session {
    sid: String,
    /// The domain the client asked for (the stream's `to` at each restart).
    to: Option<String>,
    lang: Option<String>,
    wait: Duration,
    hold: u64,
    inactivity: Duration,
    /// The longest pause a client may ask for (`None`: pauses are not offered).
    max_pause: Option<u64>,
    state: Mutex<SessionState>,
    /// Bumped on every change a waiting request may care about.
    version: watch::Sender<u64>,
    inbound: mpsc::UnboundedSender<Result<Inbound, ReadError>>,
    activity: Activity,
}

struct SessionState {
    /// The `rid` expected next.
    next_rid: u64,
    /// The newest `rid` taken in (it holds; older held requests are answered empty).
    newest: u64,
    /// Responses of the last [`REQUESTS`] requests, by `rid` (for repeats).
    replies: VecDeque<(u64, String)>,
    /// Requests in progress (held or waiting for their turn).
    pending: u64,
    /// When a request last came or was answered.
    last_request: Instant,
    /// The inactivity limit of the pause the last request asked for (XEP-0124 §12), until the
    /// next request.
    pause: Option<Duration>,
    /// Key sequencing (XEP-0124 §15): the hex SHA-1 the next request's `key` must hash to;
    /// `None` when the client did not ask for it (no `newkey` at creation).
    key: Option<String>,
    out: Vec<String>,
    out_bytes: usize,
    ended: Option<Ended>,
    limits: Limits,
}

impl SessionState {
    /// Key sequencing (XEP-0124 §15), checked in `rid` order: with a key expected, the request
    /// must carry `key` whose SHA-1 (hex) is it; that `key`, or the `newkey` the request
    /// starts a new sequence with, is expected next. False: the session must end
    /// (`item-not-found`).
    fn next_key(&mut self, head: &Head) -> bool {
        let Some(expected) = &self.key else {
            return true;
        };
        let Some(key) = head.get("key") else {
            return false;
        };
        if sha1_hex(key) != *expected {
            return false;
        }
        self.key = Some(head.get("newkey").unwrap_or(key).to_ascii_lowercase());
        true
    }
}

fn sha1_hex(text: &str) -> String {
    use sha1::Digest as _;
    sha1::Sha1::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Session {
    fn changed(&self) {
        self.version.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Ends the session: waiting requests answer with a terminate body, the engine reads the
    /// connection's loss.
    fn end(&self, how: Ended) {
        {
            let mut st = self.state.lock();
            if st.ended.is_none() {
                st.ended = Some(how);
            }
        }
        let _ = self.inbound.send(Err(ReadError::Eof));
        self.changed();
    }

    fn idle(&self) -> bool {
        let st = self.state.lock();
        st.pending == 0 && st.last_request.elapsed() >= st.pause.unwrap_or(self.inactivity)
    }

    fn header(&self, head: &Head) -> StreamHeader {
        StreamHeader {
            stream_ns: ns::STREAM.to_owned(),
            name: "stream".to_owned(),
            default_ns: Some(ns::CLIENT.to_owned()),
            to: head
                .get("to")
                .map(str::to_owned)
                .or_else(|| self.to.clone()),
            from: None,
            version: Some(head.get("xmpp:version").unwrap_or("1.0").to_owned()),
            lang: head
                .get("xml:lang")
                .map(str::to_owned)
                .or_else(|| self.lang.clone()),
        }
    }
}

/// A request's share of `pending`, given back when it is answered (or dropped).
struct Pending<'a>(&'a Session);

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        {
            let mut st = self.0.state.lock();
            st.pending = st.pending.saturating_sub(1);
            st.last_request = Instant::now();
        }
        self.0.changed();
    }
}

/// `POST /http-bind`.
pub(super) async fn post(
    State(web): State<Web>,
    Extension(conn): Extension<Connection>,
    headers: HeaderMap,
    body: HttpBody,
) -> Response {
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    if !web.ctx.config.websocket_origins.allows(origin) {
        return (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
    }
    let max = web.ctx.config.max_stanza_bytes.saturating_add(BODY_SLACK);
    let answer = match axum::body::to_bytes(body, max).await {
        Ok(bytes) => match std::str::from_utf8(&bytes) {
            Ok(text) => handle(&web, &conn, text).await,
            Err(_) => bosh::terminate(Some("bad-request"), &[]),
        },
        Err(_) => bosh::terminate(Some("bad-request"), &[]),
    };
    let mut response = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/xml; charset=utf-8"),
        )],
        answer,
    )
        .into_response();
    cors(&mut response, origin);
    response
}

/// `OPTIONS /http-bind`: the CORS preflight of a browser client on another origin.
pub(super) async fn options(State(web): State<Web>, headers: HeaderMap) -> Response {
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    if !web.ctx.config.websocket_origins.allows(origin) {
        return (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
    }
    let mut response = StatusCode::OK.into_response();
    cors(&mut response, origin);
    let h = response.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Content-Type"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    response
}

/// The allowed origin echoed (or `*` for a request without one).
fn cors(response: &mut Response, origin: Option<&str>) {
    let value = origin
        .and_then(|o| HeaderValue::from_str(o).ok())
        .unwrap_or(HeaderValue::from_static("*"));
    response
        .headers_mut()
        .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
}

async fn handle(web: &Web, conn: &Connection, text: &str) -> String {
    let head = match bosh::parse_head(text) {
        Ok(h) => h,
        Err(_) => return bosh::terminate(Some("bad-request"), &[]),
    };
    let Some(sid) = head.sid().map(str::to_owned) else {
        return create(web, conn, &head).await;
    };
    let ctx = &web.ctx;
    if let Some(session) = ctx.bosh.get(&sid) {
        return serve(&session, &head, text).await;
    }
    match holder(&sid) {
        Some(instance) if instance != ctx.instance => forward(ctx, instance, text).await,
        // Ours and gone, or no sid of this system's making.
        _ => bosh::terminate(Some("item-not-found"), &[]),
    }
}

/// The gateway instance a `sid` names.
fn holder(sid: &str) -> Option<&str> {
    let (instance, random) = sid.rsplit_once('.')?;
    (!instance.is_empty() && random.len() == 64 && random.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some(instance)
}

fn new_sid(instance: &str) -> String {
    // Two v4 UUIDs: 244 random bits.
    format!(
        "{instance}.{}{}",
        Uuid::new_v4().simple(),
        Uuid::new_v4().simple()
    )
}

/// A request without `sid`: a new session (XEP-0124 §7.1).
async fn create(web: &Web, conn: &Connection, head: &Head) -> String {
    let ctx = web.ctx.clone();
    let Some(rid) = head.rid() else {
        return bosh::terminate(Some("bad-request"), &[]);
    };
    if head.get("to").is_none() {
        return bosh::terminate(Some("improper-addressing"), &[]);
    }
    // The session takes one of `max_connections`, as a TCP connection does.
    let Ok(permit) = web.permits.clone().try_acquire_owned() else {
        return bosh::terminate(Some("remote-connection-failed"), &[]);
    };
    let max_wait = ctx.config.bosh_max_wait_secs.max(1);
    let wait = head.number("wait").unwrap_or(max_wait).clamp(1, max_wait);
    let hold = head.number("hold").unwrap_or(HOLD).min(HOLD);
    let inactivity = ctx.config.bosh_inactivity_secs.max(1);
    let max_pause = Some(ctx.config.bosh_max_pause_secs).filter(|p| *p > 0);
    let (inbound, rx) = mpsc::unbounded_channel();
    let activity = Activity::new();
    activity.touch();
    let session = Arc::new(Session {
        sid: new_sid(&ctx.instance),
        to: head.get("to").map(str::to_owned),
        lang: head.get("xml:lang").map(str::to_owned),
        wait: Duration::from_secs(wait),
        hold,
        inactivity: Duration::from_secs(inactivity),
        max_pause,
        state: Mutex::new(SessionState {
            next_rid: rid.saturating_add(1),
            newest: rid,
            replies: VecDeque::new(),
            pending: 1,
            last_request: Instant::now(),
            pause: None,
            key: head.get("newkey").map(str::to_ascii_lowercase),
            out: Vec::new(),
            out_bytes: 0,
            ended: None,
            limits: ctx.limits.unauthenticated(),
        }),
        version: watch::channel(0).0,
        inbound,
        activity: activity.clone(),
    });
    let pending = Pending(&session);
    ctx.bosh
        .map
        .lock()
        .insert(session.sid.clone(), session.clone());
    let secure = conn.tls || ctx.config.plain_http_is_secure;
    let transport = crate::conn::Transport::bosh(
        BoshReader {
            session: session.clone(),
            rx,
        },
        BoshWriter {
            session: session.clone(),
            ctx: ctx.clone(),
        },
        ctx.limits,
        secure,
        activity,
    );
    let _ = session
        .inbound
        .send(Ok(Inbound::Open(session.header(head))));
    let sessions = web.sessions.clone();
    let peer = conn.peer;
    let engine_ctx = ctx.clone();
    web.sessions.spawn(async move {
        if let Some(s) =
            crate::negotiate::serve_transport(engine_ctx, transport, peer, permit).await
        {
            sessions.spawn(s);
        }
    });
    let (ended, elements) = output(&session, rid, Answer::Creation).await;
    drop(pending);
    if let Some(how) = ended {
        return bosh::terminate(how.condition(), &elements);
    }
    let mut attrs = vec![
        ("sid", session.sid.clone()),
        ("wait", wait.to_string()),
        ("hold", hold.to_string()),
        ("requests", REQUESTS.to_string()),
        ("inactivity", inactivity.to_string()),
        ("polling", POLLING.to_string()),
        ("ver", VERSION.to_owned()),
        ("from", session.to.clone().unwrap_or_default()),
        ("xmpp:version", "1.0".to_owned()),
        ("xmpp:restartlogic", "true".to_owned()),
    ];
    if let Some(p) = max_pause {
        attrs.push(("maxpause", p.to_string()));
    }
    let reply = bosh::body(&attrs, &elements);
    session.state.lock().replies.push_back((rid, reply.clone()));
    reply
}

/// A request of a session this gateway holds.
async fn serve(session: &Session, head: &Head, text: &str) -> String {
    let Some(rid) = head.rid() else {
        session.end(Ended::Condition("bad-request"));
        return bosh::terminate(Some("bad-request"), &[]);
    };
    enum Admit {
        Yes,
        Reply(String),
        Repeat,
        End(&'static str),
    }
    let admit = {
        let mut st = session.state.lock();
        if st.ended.is_some() {
            Admit::Reply(bosh::terminate(Some("item-not-found"), &[]))
        } else if rid < st.next_rid {
            // A repeat (XEP-0124 §14.3): the response given, if it is among those kept.
            match st.replies.iter().find(|(r, _)| *r == rid) {
                Some((_, r)) => Admit::Reply(r.clone()),
                None => Admit::Repeat,
            }
        } else if rid >= st.next_rid.saturating_add(REQUESTS) {
            Admit::End("item-not-found")
        } else if st.pending >= REQUESTS {
            Admit::End("policy-violation")
        } else {
            st.pending += 1;
            st.last_request = Instant::now();
            // A request ends a pause (XEP-0124 §12).
            st.pause = None;
            Admit::Yes
        }
    };
    match admit {
        Admit::Yes => {}
        Admit::Reply(r) => return r,
        Admit::Repeat => return repeat_later(session, rid).await,
        Admit::End(condition) => {
            session.end(Ended::Condition(condition));
            return bosh::terminate(Some(condition), &[]);
        }
    }
    let pending = Pending(session);
    session.activity.read(text.len());
    // A request ahead waits for the missing ones.
    let mut rx = session.version.subscribe();
    let turn = tokio::time::timeout(session.wait + FORWARD_SLACK, async {
        loop {
            {
                let st = session.state.lock();
                if st.next_rid == rid || st.ended.is_some() {
                    return;
                }
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    if turn.is_err() || !session.state.lock().next_key(head) {
        session.end(Ended::Condition("item-not-found"));
        return bosh::terminate(Some("item-not-found"), &[]);
    }
    // A pause (XEP-0124 §12): longer than `maxpause` ends the session; else this request
    // and any held are answered at once, and the session may go without requests that long.
    let pause = match (head.number("pause"), session.max_pause) {
        (Some(p), Some(max)) if p > max => {
            session.end(Ended::Condition("policy-violation"));
            return bosh::terminate(Some("policy-violation"), &[]);
        }
        (Some(p), Some(_)) => Some(Duration::from_secs(p)),
        _ => None,
    };
    let limits = session.state.lock().limits;
    match bosh::parse_children(text, &limits) {
        Ok(children) => {
            for c in children {
                let _ = session.inbound.send(Ok(Inbound::Stanza(c)));
            }
            if head.restarts() {
                let _ = session
                    .inbound
                    .send(Ok(Inbound::Open(session.header(head))));
            }
            if head.terminates() {
                let _ = session.inbound.send(Ok(Inbound::Close));
            }
        }
        // The stream's error for what the stream would refuse (too large, not well-formed,
        // restricted XML); a body that is no `<body/>` is XML the stream cannot process.
        Err(ReadError::Stream(e)) if e.condition == "bad-request" => {
            let _ = session
                .inbound
                .send(Err(ReadError::Stream(StreamError::with_text(
                    "bad-format",
                    e.text.unwrap_or_default(),
                ))));
        }
        Err(e) => {
            let _ = session.inbound.send(Err(e));
        }
    }
    {
        let mut st = session.state.lock();
        st.next_rid = rid.saturating_add(1);
        st.newest = st.newest.max(rid);
        if pause.is_some() {
            st.pause = pause;
        }
    }
    session.changed();
    let answer = if pause.is_some() {
        Answer::Now
    } else {
        Answer::Held
    };
    let (ended, elements) = output(session, rid, answer).await;
    drop(pending);
    let reply = match ended {
        Some(how) => bosh::terminate(how.condition(), &elements),
        None => bosh::body(&[], &elements),
    };
    let mut st = session.state.lock();
    st.replies.push_back((rid, reply.clone()));
    while st.replies.len() > REQUESTS as usize {
        st.replies.pop_front();
    }
    reply
}

/// A repeat of a request still held: its response, once given.
async fn repeat_later(session: &Session, rid: u64) -> String {
    let mut rx = session.version.subscribe();
    let found = tokio::time::timeout(session.wait + FORWARD_SLACK, async {
        loop {
            {
                let st = session.state.lock();
                if let Some((_, r)) = st.replies.iter().find(|(r, _)| *r == rid) {
                    return Some(r.clone());
                }
                if st.ended.is_some() || st.next_rid > rid.saturating_add(REQUESTS) {
                    return None;
                }
            }
            if rx.changed().await.is_err() {
                return None;
            }
        }
    })
    .await;
    found
        .ok()
        .flatten()
        .unwrap_or_else(|| bosh::terminate(Some("item-not-found"), &[]))
}

/// How long a request may wait for something to say.
#[derive(Clone, Copy, PartialEq)]
enum Answer {
    /// The session creation response: it waits for the stream features, even with `hold='0'`.
    Creation,
    /// An ordinary request: held up to `wait`, unless `hold='0'`.
    Held,
    /// A pause request: answered with what there is now.
    Now,
}

/// Waits until there is something to say to request `rid` (or `wait` passed, or a newer
/// request holds instead): how the session ended, if it did, and the elements to send.
async fn output(session: &Session, rid: u64, answer: Answer) -> (Option<Ended>, Vec<String>) {
    let deadline = tokio::time::Instant::now()
        + match answer {
            Answer::Now => Duration::ZERO,
            Answer::Held if session.hold == 0 => Duration::ZERO,
            Answer::Held | Answer::Creation => session.wait,
        };
    let mut rx = session.version.subscribe();
    loop {
        {
            let mut st = session.state.lock();
            if let Some(how) = st.ended {
                let out = std::mem::take(&mut st.out);
                st.out_bytes = 0;
                return (Some(how), out);
            }
            if st.newest > rid {
                return (None, Vec::new());
            }
            if !st.out.is_empty() {
                let out = std::mem::take(&mut st.out);
                st.out_bytes = 0;
                drop(st);
                // A writer waiting for room may go on.
                session.changed();
                return (None, out);
            }
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return (None, Vec::new()) },
            _ = tokio::time::sleep_until(deadline) => return (None, Vec::new()),
        }
    }
}

/// A request for a session another gateway of the DC holds: there over RabbitMQ, and its
/// answer back.
async fn forward(ctx: &Ctx, instance: &str, text: &str) -> String {
    let request = Uuid::now_v7();
    let (tx, rx) = oneshot::channel();
    ctx.bosh.forwards.lock().insert(request, tx);
    let body = serde_json::to_vec(&BoshRequest {
        request,
        reply_dc: ctx.config.dc.clone(),
        reply_gateway: ctx.instance.clone(),
        body: text.to_owned(),
    })
    .unwrap_or_default();
    let to = Peer {
        dc: ctx.config.dc.clone(),
        gateway: instance.to_owned(),
        session: Uuid::nil(),
        direct: false,
    };
    let within = Duration::from_secs(ctx.config.bosh_max_wait_secs.max(1)) + FORWARD_SLACK;
    let answer = if crate::handover::send(ctx, &to, step::BOSH_REQUEST, None, 1, &body).await {
        tokio::time::timeout(within, rx)
            .await
            .ok()
            .and_then(Result::ok)
    } else {
        None
    };
    ctx.bosh.forwards.lock().remove(&request);
    answer.unwrap_or_else(|| {
        tracing::info!(
            gateway = instance,
            "no answer from the BOSH session's gateway"
        );
        bosh::terminate(Some("remote-connection-failed"), &[])
    })
}

/// `bosh-request`: a request another gateway took for a session of this one. Answers it.
pub async fn forwarded(ctx: Arc<Ctx>, data: Vec<u8>) {
    let Ok(req) = serde_json::from_slice::<BoshRequest>(&data) else {
        return;
    };
    let reply = match bosh::parse_head(&req.body) {
        Ok(head) => match head.sid().and_then(|sid| ctx.bosh.get(sid)) {
            Some(session) => serve(&session, &head, &req.body).await,
            None => bosh::terminate(Some("item-not-found"), &[]),
        },
        Err(_) => bosh::terminate(Some("bad-request"), &[]),
    };
    let body = serde_json::to_vec(&BoshReply {
        request: req.request,
        body: reply,
    })
    .unwrap_or_default();
    let to = Peer {
        dc: req.reply_dc,
        gateway: req.reply_gateway,
        session: Uuid::nil(),
        direct: false,
    };
    crate::handover::send(&ctx, &to, step::BOSH_REPLY, None, 1, &body).await;
}

/// `bosh-reply`: the holder's answer to a request this gateway forwarded.
pub fn replied(ctx: &Ctx, data: &[u8]) {
    if let Ok(r) = serde_json::from_slice::<BoshReply>(data) {
        if let Some(tx) = ctx.bosh.forwards.lock().remove(&r.request) {
            let _ = tx.send(r.body);
        }
    }
}

/// The reading half: the children of each body, in `rid` order; the connection's loss after
/// `inactivity` without a request.
pub struct BoshReader {
    session: Arc<Session>,
    rx: mpsc::UnboundedReceiver<Result<Inbound, ReadError>>,
}

impl BoshReader {
    pub async fn next(&mut self) -> Result<Inbound, ReadError> {
        loop {
            tokio::select! {
                item = self.rx.recv() => return item.unwrap_or(Err(ReadError::Eof)),
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    if self.session.idle() {
                        tracing::debug!(sid = %self.session.sid, "BOSH session inactive");
                        self.session.end(Ended::Condition("item-not-found"));
                        return Err(ReadError::Eof);
                    }
                }
            }
        }
    }

    pub(crate) fn set_limits(&mut self, limits: Limits) {
        self.session.state.lock().limits = limits;
    }
}

/// The writing half: what the engine writes waits for the next response.
pub struct BoshWriter {
    session: Arc<Session>,
    ctx: Arc<Ctx>,
}

impl BoshWriter {
    pub async fn send(&mut self, text: &str) -> std::io::Result<()> {
        let out = bosh::outbound(text).map_err(std::io::Error::other)?;
        let session = &self.session;
        let mut rx = session.version.subscribe();
        {
            let mut st = session.state.lock();
            if st.ended.is_some() {
                return Err(std::io::ErrorKind::BrokenPipe.into());
            }
            let error = out.elements.iter().any(|e| e.starts_with("<stream:error"));
            for e in out.elements {
                st.out_bytes += e.len();
                st.out.push(e);
            }
            if out.close || error {
                st.ended = Some(if error {
                    Ended::StreamError
                } else {
                    Ended::Closed
                });
            }
        }
        session.changed();
        // Backpressure, as a full socket buffer gives: wait until a request takes it.
        loop {
            {
                let st = session.state.lock();
                if st.ended.is_some() || st.out_bytes <= OUT_CAP {
                    return Ok(());
                }
            }
            if rx.changed().await.is_err() {
                return Ok(());
            }
        }
    }

    pub async fn close(&mut self) {
        self.session
            .end(Ended::Condition("remote-connection-failed"));
    }
}

impl Drop for BoshWriter {
    fn drop(&mut self) {
        self.session
            .end(Ended::Condition("remote-connection-failed"));
        self.ctx.bosh.remove(&self.session.sid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sid_names_its_gateway() {
        let sid = new_sid("dc1-gw1-abc.x");
        assert_eq!(holder(&sid), Some("dc1-gw1-abc.x"));
        assert_eq!(holder("nope"), None);
        assert_eq!(holder("gw.1234"), None);
    }
}
