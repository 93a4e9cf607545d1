//! `meerkat-bench`: N users log in over a ramp, then each sends 64-byte chat messages to
//! another online user at a fixed mean rate; prints delivered messages per second, end-to-end
//! latency percentiles (timestamp in the body, one clock) and messages lost.
//!
//! Inter-DC mode (`--to-addr`): the senders log in at `--addr` (DC 1), their partners at
//! `--to-addr` (DC 2), and only the senders send, so every message crosses between the DCs.
//! `--lag-logins N` also measures session replication lag (see `lag.rs`); `--data-lag N` and
//! `--data-catch-up N` measure persistent-data replication (see `data.rs`).
//!
//! Login mode (`--login-loop C`): C clients in a closed loop of connect, STARTTLS, SASL PLAIN,
//! bind, close for `--duration` seconds; prints logins per second and their latency.
//!
//! Peak mode (`--peak`): chat steps at rising rates until p99 reaches 100 ms or a message is
//! lost; prints the highest rate that held. Idle mode (`--idle`): logs the users in and holds
//! them, for measuring the server's memory per connected user (see `chat.rs`).
//!
//! Stream management (`--sm`): every user enables XEP-0198 with resumption after binding and
//! acknowledges what it receives. `--resume-burst N`: N such users drop their connections at
//! once and resume (see `resume.rs`).
//!
//! Gateway-kill mode (`--gateway-kill N`): what a gateway crash costs the sessions it held
//! (see `gwkill.rs`); like `--failover` it starts its own DC.
//!
//! Web transports: `--transport ws` logs the users of the chat, `--peak` and `--idle` workloads
//! in over WebSocket (RFC 7395) at `--http-addr` instead of TCP; `--bosh-loop C`: C BOSH
//! clients, each in a closed loop of requests that are answered at once (see `bosh.rs`).
//!
//! Group chat mode (`--muc N`): N users join one room, then send groupchat messages into it;
//! prints join times, deliveries per second, their latency and loss (see `muc.rs`).
//!
//! Failover mode (`--failover`): starts two DCs of its own and measures what users see when
//! one dies or they are cut apart (see `failover.rs`); the other options do not apply.

mod archive;
mod bosh;
mod chat;
mod client;
mod data;
mod failover;
mod fanout;
mod gwkill;
mod lag;
mod latency;
mod muc;
mod replag;
mod resume;
mod websocket;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use tokio::sync::Mutex;

#[derive(Parser, Debug, Clone)]
#[command(about = "XMPP chat load generator")]
pub struct Args {
    /// Server address (STARTTLS port).
    #[arg(long, default_value = "127.0.0.1:5222")]
    addr: SocketAddr,
    #[arg(long, default_value = "example.com")]
    domain: String,
    /// Number of users (an even number: users chat in pairs).
    #[arg(long, default_value_t = 100)]
    users: usize,
    /// Total offered message rate, messages per second.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Seconds of chat after everyone is online.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Register the users in-band first (ignores "already exists").
    #[arg(long, default_value_t = true)]
    register: bool,
    #[arg(long, default_value = "benchuser")]
    prefix: String,
    #[arg(long, default_value = "bench-password")]
    password: String,
    /// Print the result as one JSON line as well.
    #[arg(long)]
    json: bool,
    /// Inter-DC mode: the receiving half of the users logs in here (another DC's STARTTLS
    /// port) and only the half at --addr sends.
    #[arg(long)]
    to_addr: Option<SocketAddr>,
    /// After the chat, measure session replication lag over this many logins at --addr, seen
    /// from --to-addr (needs --to-addr). `--duration 0` skips the chat.
    #[arg(long, default_value_t = 0)]
    lag_logins: usize,
    /// Persistent-data replication lag over this many registrations at --addr, each until it
    /// is visible at --to-addr (needs --to-addr).
    #[arg(long, default_value_t = 0)]
    data_lag: usize,
    /// Catch-up of a cut-off DC: runs --cut-off, registers this many accounts at --addr, runs
    /// --reconnect, then times until --to-addr has them (needs all three).
    #[arg(long, default_value_t = 0)]
    data_catch_up: usize,
    /// Shell command that cuts the DC at --to-addr off from data replication.
    #[arg(long)]
    cut_off: Option<String>,
    /// Shell command that undoes --cut-off.
    #[arg(long)]
    reconnect: Option<String>,
    /// Failover figures instead of chat load: two DCs started in this process (on the
    /// infrastructure `MEERKAT_TEST_INFRA` names, else on its own), DC 2 killed and revived
    /// --kills times, then cut off from DC 1 and healed --partitions times.
    #[arg(long)]
    failover: bool,
    /// Kill rounds of --failover.
    #[arg(long, default_value_t = 5)]
    kills: usize,
    /// Partition rounds of --failover.
    #[arg(long, default_value_t = 3)]
    partitions: usize,
    /// Login workload instead of chat: this many clients, each in a closed loop of connect,
    /// STARTTLS, SASL PLAIN, bind, close, for --duration seconds (users `<prefix>login<i>`,
    /// registered first).
    #[arg(long, default_value_t = 0)]
    login_loop: usize,
    /// Peak workload instead of chat: steps of --duration seconds from --rate up, doubling
    /// until p99 reaches 100 ms or a message is lost, then narrowing in; prints the highest
    /// rate that held.
    #[arg(long)]
    peak: bool,
    /// Idle workload instead of chat: log --users users in, hold them --duration seconds
    /// (for measuring the server's memory meanwhile), close.
    #[arg(long)]
    idle: bool,
    /// Stream management: every user enables XEP-0198 with resumption after binding, counts
    /// the stanzas it receives and answers the server's `<r/>` with `<a h/>` (and sends `<r/>`
    /// itself every 50th message). Applies to the chat, --peak and --idle workloads.
    #[arg(long)]
    sm: bool,
    /// Message carbons (XEP-0280) for half the users: each even user logs in a second resource
    /// (`bench-copy`), both enable carbons, and every message goes to its partner's full JID,
    /// so each message of a pair gives exactly one carbon (sent or received) at an even user's
    /// second resource; counted and timed like the messages. Applies to the chat workload.
    #[arg(long)]
    carbons: bool,
    /// Archive queries instead of chat: fills one user's message archive to --archive-size
    /// messages in the database (--database-url), then times this many queries for the last
    /// 50 messages of one conversation and of the whole archive (see `archive.rs`).
    #[arg(long, default_value_t = 0)]
    archive_query: usize,
    /// Messages in the archive of --archive-query.
    #[arg(long, default_value_t = 1_000_000)]
    archive_size: usize,
    /// The DC's database, for --archive-query (the local stack's DC 1 by default).
    #[arg(
        long,
        default_value = "postgres://postgres@127.0.0.1:55432/meerkat_dc1"
    )]
    database_url: String,
    /// Every user sets its archiving preference to `never` (XEP-0313 `<prefs default='never'/>`)
    /// right after logging in: the chat workload without the message archive, for comparison.
    /// Without it every user sets `always`, so a run reusing the names is archived again.
    #[arg(long)]
    archive_off: bool,
    /// Resumption burst instead of chat: this many users with stream management (users
    /// `<prefix>resume<i>`) get a few messages, drop their TCP connections at once (no stream
    /// close), reconnect and resume; prints the time from the drop until the first stanza
    /// sent while they were away arrives.
    #[arg(long, default_value_t = 0)]
    resume_burst: usize,
    /// Where the users of --resume-burst reconnect and resume (default --addr): another
    /// gateway's or another DC's STARTTLS port, which moves each session there.
    #[arg(long)]
    resume_addr: Option<SocketAddr>,
    /// The users of --resume-burst reconnect with direct TLS (XEP-0368), as phones do where
    /// the domain publishes `_xmpps-client`: --resume-addr is then a direct TLS port (5223 at
    /// DC 1, 5233 at DC 2 on the local stack), and the STARTTLS exchange is saved.
    #[arg(long, requires = "resume_addr")]
    resume_direct_tls: bool,
    /// The users of --resume-burst resume inline in SASL2 (XEP-0388, XEP-0198 §7.2): no stream
    /// restart and no separate `<resume/>` round trip; needs --scram.
    #[arg(long, requires = "scram")]
    resume_sasl2: bool,
    /// The users of --resume-burst reconnect through a relay that adds this round trip
    /// (milliseconds, half each way), as a phone network would; 0: straight.
    #[arg(long, default_value_t = 0)]
    resume_rtt_ms: u64,
    /// How long the users of --resume-burst stay idle after their chat before they drop
    /// (milliseconds): with 0 the drop comes while the stack still archives and replicates
    /// that chat and the logins before it; phones that lose their network are mostly idle.
    #[arg(long, default_value_t = 0)]
    resume_idle_ms: u64,
    /// The users of --resume-burst resume with their id as a gateway of wire 1.8 gave it,
    /// naming no gateway: the resuming gateway asks through the routers, not the gateway that
    /// holds the session (for comparison).
    #[arg(long)]
    resume_unnamed: bool,
    /// The users of --resume-burst leave the last message before the drop unacknowledged (a
    /// phone whose connection died with it in flight) and resume with the `h` before it, so
    /// the gateway sends it again right after `<resumed/>`; prints the time from the drop
    /// until it arrives (the first resumed stanza) besides the rest.
    #[arg(long)]
    resume_unacked: bool,
    /// The senders of --resume-burst send the messages for the users away only once every
    /// user has resumed (or failed): the resumptions alone, without 100 messages routed,
    /// archived and replicated in the same moment (for comparison).
    #[arg(long)]
    resume_quiet: bool,
    /// Gateway-kill figures instead of chat: this many users' phones hold unacknowledged
    /// messages at a gateway that is then killed (see `gwkill.rs`); starts a DC of its own in
    /// this process, like --failover (on the infrastructure `MEERKAT_TEST_INFRA` names, else on
    /// its own); the other options do not apply.
    #[arg(long, default_value_t = 0)]
    gateway_kill: usize,
    /// Messages each phone holds unacknowledged in --gateway-kill.
    #[arg(long, default_value_t = 4)]
    kill_messages: usize,
    /// Seconds after the kill before the last third of --gateway-kill's users log in again.
    #[arg(long, default_value_t = 20)]
    kill_late: u64,
    /// Authenticate with SCRAM-SHA-256 instead of PLAIN, keeping the salted password of a
    /// user's first login for its next ones (as mobile clients do): a reconnection then costs
    /// no PBKDF2 on either side. Applies to the chat workloads and --resume-burst.
    #[arg(long)]
    scram: bool,
    /// The receiving DC's session replicator metrics (`http://…/metrics`): read before and
    /// after the chat, they give the replication lag of the data the chat wrote (with the
    /// archive on: the archived messages) from --lag-origin (see `replag.rs`).
    #[arg(long)]
    lag_metrics: Option<String>,
    /// The DC whose changes --lag-metrics measures.
    #[arg(long, default_value = "dc1")]
    lag_origin: String,
    /// PEP notification fan-out instead of chat: this many users (`<prefix>fanout<i>`) in a
    /// ring, each subscribed both ways to its --pep-contacts nearest, each publishing
    /// --pep-rate times a second for --duration seconds (see `fanout.rs`); with --to-addr the
    /// odd users log in there.
    #[arg(long, default_value_t = 0)]
    pep_fanout: usize,
    /// Contacts per user in --pep-fanout (even).
    #[arg(long, default_value_t = 50)]
    pep_contacts: usize,
    /// Publishes per user per second in --pep-fanout.
    #[arg(long, default_value_t = 1.0)]
    pep_rate: f64,
    /// How the users of the chat, --peak and --idle workloads connect: `tcp` (STARTTLS at
    /// --addr) or `ws` (XMPP over WebSocket, RFC 7395, `wss://` --http-addr
    /// `/xmpp-websocket`).
    #[arg(long, value_enum, default_value = "tcp")]
    transport: Transport,
    /// A gateway's HTTPS listener, for --transport ws.
    #[arg(long, default_value = "127.0.0.1:5281")]
    http_addr: SocketAddr,
    /// BOSH requests per second instead of chat: this many BOSH clients (users
    /// `<prefix>bosh<i>`) log in at --bosh-url, then each sends one request after another for
    /// --duration seconds, each carrying an XEP-0199 ping the gateway answers in the response
    /// (see `bosh.rs`).
    #[arg(long, default_value_t = 0)]
    bosh_loop: usize,
    /// The BOSH endpoint of --bosh-loop (any certificate is accepted).
    #[arg(long, default_value = "https://127.0.0.1:5281/http-bind")]
    bosh_url: String,
    /// Group chat fan-out instead of chat: this many users (`<prefix>muc<i>`) join one new
    /// room (XEP-0045), then the occupants send --rate groupchat messages a second in all into
    /// it for --duration seconds (see `muc.rs`); with --to-addr the odd users log in there.
    #[arg(long, default_value_t = 0)]
    muc: usize,
    /// The MUC service of --muc (default `conference.<domain>`).
    #[arg(long)]
    muc_host: Option<String>,
    /// Milliseconds between two messages of the sender in --failover rounds.
    #[arg(long, default_value_t = 100)]
    send_every_ms: u64,
}

/// How bench users connect.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// TCP with STARTTLS.
    Tcp,
    /// XMPP over WebSocket (RFC 7395) on a gateway's HTTPS listener.
    Ws,
}

impl Args {
    /// The login every bench user does (resource `bench`).
    fn login_opts(&self) -> client::LoginOpts {
        client::LoginOpts {
            websocket: (self.transport == Transport::Ws).then_some(self.http_addr),
            sm: self.sm,
            sasl: if self.scram {
                client::Sasl::Scram(None)
            } else {
                client::Sasl::Plain
            },
            ..client::LoginOpts::resource("bench")
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    meerkat_localstack::exit_quietly_on_closed_pipe();
    let args = Args::parse();
    if args.gateway_kill > 0 {
        return gwkill::run(&gwkill::KillArgs {
            users: args.gateway_kill,
            messages: args.kill_messages,
            late: Duration::from_secs(args.kill_late),
            password: args.password.clone(),
            json: args.json,
        })
        .await;
    }
    if args.failover {
        return failover::run(&failover::FailoverArgs {
            kills: args.kills,
            partitions: args.partitions,
            send_every: Duration::from_millis(args.send_every_ms.max(1)),
            password: args.password.clone(),
            json: args.json,
        })
        .await;
    }
    if args.lag_logins > 0 && args.to_addr.is_none() {
        anyhow::bail!("--lag-logins needs --to-addr (the DC that must learn of the sessions)");
    }
    if (args.data_lag > 0 || args.data_catch_up > 0) && args.to_addr.is_none() {
        anyhow::bail!(
            "--data-lag and --data-catch-up need --to-addr (the DC that must learn of the writes)"
        );
    }
    if args.data_catch_up > 0 && (args.cut_off.is_none() || args.reconnect.is_none()) {
        anyhow::bail!("--data-catch-up needs --cut-off and --reconnect");
    }
    if args.transport == Transport::Ws && args.to_addr.is_some() {
        anyhow::bail!("--transport ws is for one DC: without --to-addr");
    }
    if args.bosh_loop > 0 {
        return bosh::run(&args).await;
    }
    if args.login_loop > 0 {
        return login_loop(&args).await;
    }
    if args.pep_fanout > 0 {
        return fanout::run(&args).await;
    }
    if args.muc > 0 {
        return muc::run(&args).await;
    }
    if args.archive_query > 0 {
        return archive::query(&args).await;
    }
    if args.resume_burst > 0 {
        return resume::burst(&args).await;
    }
    if args.peak {
        return chat::peak(&args).await;
    }
    if args.idle {
        return chat::idle(&args).await;
    }
    if args.duration > 0 {
        let before = match &args.lag_metrics {
            Some(url) => Some(replag::read(url, &args.lag_origin).await?),
            None => None,
        };
        chat(&args).await?;
        if let (Some(url), Some(before)) = (&args.lag_metrics, before) {
            // What the run wrote last has a moment to arrive.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let after = replag::read(url, &args.lag_origin).await?;
            let (n, q) = replag::quantiles(&before, &after, &[0.5, 0.99, 1.0]);
            println!(
                "data replication lag from {} during the run: {n} changes applied; p50 ≤ {:.1} ms  p99 ≤ {:.1} ms  max ≤ {:.1} ms (histogram bucket bounds)",
                args.lag_origin,
                q[0] * 1000.0,
                q[1] * 1000.0,
                q[2] * 1000.0
            );
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "replication_changes": n, "replication_lag_p50_ms": q[0] * 1000.0,
                        "replication_lag_p99_ms": q[1] * 1000.0,
                    })
                );
            }
        }
    }
    if let Some(to_addr) = args.to_addr {
        data_figures(&args, to_addr).await?;
    }
    if let (Some(to_addr), true) = (args.to_addr, args.lag_logins > 0) {
        let run = format!("{:x}", std::process::id());
        let lag = lag::measure(&lag::LagArgs {
            login_at: args.addr,
            probe_from: to_addr,
            domain: &args.domain,
            prefix: &args.prefix,
            password: &args.password,
            run: &run,
            logins: args.lag_logins,
        })
        .await?;
        let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "session replication lag over {} logins (failed {}): until a ping arrives p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms; until the first ping that got through was sent p50 {:.2} ms  p99 {:.2} ms",
            args.lag_logins,
            lag.failed,
            ms(&lag.arrived, 0.5),
            ms(&lag.arrived, 0.99),
            lag.arrived.max() as f64 / 1000.0,
            ms(&lag.sent, 0.5),
            ms(&lag.sent, 0.99),
        );
        if args.json {
            println!(
                "{}",
                serde_json::json!({
                    "lag_logins": args.lag_logins, "lag_failed": lag.failed,
                    "lag_p50_ms": ms(&lag.arrived, 0.5), "lag_p99_ms": ms(&lag.arrived, 0.99),
                    "lag_max_ms": lag.arrived.max() as f64 / 1000.0,
                    "lag_sent_p50_ms": ms(&lag.sent, 0.5), "lag_sent_p99_ms": ms(&lag.sent, 0.99),
                })
            );
        }
    }
    Ok(())
}

/// Persistent-data replication figures (`--data-lag`, `--data-catch-up`).
async fn data_figures(args: &Args, to_addr: SocketAddr) -> anyhow::Result<()> {
    let run = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis()
    );
    let a = data::DataArgs {
        write_at: args.addr,
        probe_from: to_addr,
        domain: &args.domain,
        prefix: &args.prefix,
        password: &args.password,
        run: &run,
    };
    if args.data_lag > 0 {
        let (h, failed) = data::lag(&a, args.data_lag).await?;
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "data replication lag over {} registrations (failed {failed}): registered at DC 1 until visible at DC 2 p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            args.data_lag,
            ms(0.5),
            ms(0.99),
            h.max() as f64 / 1000.0,
        );
        if args.json {
            println!(
                "{}",
                serde_json::json!({
                    "data_lag_writes": args.data_lag, "data_lag_failed": failed,
                    "data_lag_p50_ms": ms(0.5), "data_lag_p99_ms": ms(0.99),
                    "data_lag_max_ms": h.max() as f64 / 1000.0,
                })
            );
        }
    }
    if let (n @ 1.., Some(cut), Some(back)) = (args.data_catch_up, &args.cut_off, &args.reconnect) {
        let c = data::catch_up(&a, n, cut, back).await?;
        println!(
            "data catch-up of a cut-off DC: {n} registrations at DC 1 in {:.1} s; DC 2 had them {:.2} s after reconnecting ({:.0} changes/s); missing {}",
            c.write.as_secs_f64(),
            c.catch_up.as_secs_f64(),
            n as f64 / c.catch_up.as_secs_f64(),
            c.missing,
        );
        if args.json {
            println!(
                "{}",
                serde_json::json!({
                    "catch_up_writes": n, "catch_up_write_s": c.write.as_secs_f64(),
                    "catch_up_s": c.catch_up.as_secs_f64(), "catch_up_missing": c.missing,
                })
            );
        }
    }
    Ok(())
}

/// The login workload: `--login-loop` clients log in and out in a closed loop.
async fn login_loop(args: &Args) -> anyhow::Result<()> {
    let clients = args.login_loop;
    for i in 0..clients {
        let name = format!("{}login{i}", args.prefix);
        // false: the account exists already, which is fine.
        client::BenchClient::register(args.addr, &args.domain, &name, &args.password).await?;
    }
    let latency = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let end = started + Duration::from_secs(args.duration.max(1));
    let mut tasks = Vec::new();
    for i in 0..clients {
        let (args, latency, failed) = (args.clone(), latency.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let name = format!("{}login{i}", args.prefix);
            while Instant::now() < end {
                let t = Instant::now();
                match client::BenchClient::login_and_close(
                    args.addr,
                    &args.domain,
                    &name,
                    &args.password,
                )
                .await
                {
                    Ok(()) => {
                        let us = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
                        let _ = latency.lock().await.record(us.max(1));
                    }
                    Err(e) => {
                        if failed.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("first failed login: {e:#}");
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let h = latency.lock().await;
    let failed = failed.load(Ordering::Relaxed);
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let logins = h.len();
    println!(
        "login loop: {clients} clients  logins {logins}  failed {failed}  rate {:.0}/s  latency p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        logins as f64 / elapsed,
        ms(0.5),
        ms(0.99),
        h.max() as f64 / 1000.0,
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "workload": "login", "clients": clients, "logins": logins, "failed": failed,
                "rate": logins as f64 / elapsed, "p50_ms": ms(0.5), "p99_ms": ms(0.99),
                "max_ms": h.max() as f64 / 1000.0,
            })
        );
    }
    Ok(())
}

/// The chat load: log everyone in, send for `duration`, drain, print.
async fn chat(args: &Args) -> anyhow::Result<()> {
    let mut online = chat::Online::login(args).await?;
    let users = online.users();
    eprintln!("{users} users online in {:.1} s", online.login_secs);
    let inter_dc = args.to_addr.is_some();
    let s = online
        .step(args.rate, Duration::from_secs(args.duration))
        .await?;
    let login_secs = online.login_secs;
    online.close().await;
    println!(
        "{}users {users}{}  {s}  logins {:.0}/s",
        if inter_dc {
            "inter-DC (senders at DC 1, receivers at DC 2)  "
        } else {
            ""
        },
        [
            (args.sm, " (stream management)"),
            (args.carbons, " (carbons for half)"),
            (args.archive_off, " (archive off)"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, what)| *what)
        .collect::<String>(),
        users as f64 / login_secs,
    );
    if args.json {
        let mut j = s.json();
        j["workload"] = "chat".into();
        j["inter_dc"] = inter_dc.into();
        j["users"] = users.into();
        j["sm"] = args.sm.into();
        j["carbons"] = args.carbons.into();
        j["archive_off"] = args.archive_off.into();
        println!("{j}");
    }
    Ok(())
}
