//! Several DCs inside one test: one fresh vhost per DC on the shared broker (`dc1`..`dcN`),
//! federated full mesh by `meerkat_localstack::federation`, and each DC started as a
//! `stack::Dc` on its vhost with a database of its own. Each DC reaches each other DC's vhost
//! through a `LinkProxy` of its own, so a test can cut the links between two DCs (a partition)
//! or around one (with its services killed: a dead DC).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use meerkat_localstack::federation::{self, FederatedDc, FEDERATED_EXCHANGES};
use meerkat_localstack::proxy::LinkProxy;
use meerkat_localstack::rabbit_api::percent_encode;

use crate::stack::{Dc, StackOptions};
use crate::Vhost;

/// How long links and bindings get to come up before a test gives up.
pub const FEDERATION_TIMEOUT: Duration = Duration::from_secs(30);

/// One DC's place on the shared broker.
#[derive(Clone, Debug)]
pub struct DcBroker {
    /// `dc1`, `dc2`, ...
    pub dc: String,
    pub vhost: Vhost,
    pub federation: FederatedDc,
}

/// `n` fresh vhosts named for DCs `dc1`..`dcN`, federated full mesh, links running. No
/// services: for tests of the federation itself.
pub async fn federated_vhosts(n: usize) -> anyhow::Result<Vec<DcBroker>> {
    Ok(vhosts(n, false, None).await?.0)
}

/// The links of a mesh: `(downstream, upstream)` DC numbers -> the proxy by which the
/// downstream DC's broker reaches the upstream's.
pub struct Links {
    proxies: Vec<((usize, usize), LinkProxy)>,
}

impl Links {
    fn each(&self, mut pick: impl FnMut(usize, usize) -> bool) -> impl Iterator<Item = &LinkProxy> {
        self.proxies
            .iter()
            .filter(move |((d, u), _)| pick(*d, *u))
            .map(|(_, p)| p)
    }

    /// Cuts both directions between DCs `k` and `l`.
    pub fn cut(&self, k: usize, l: usize) {
        self.each(|d, u| (d, u) == (k, l) || (d, u) == (l, k))
            .for_each(LinkProxy::cut);
    }

    /// Cuts every link of DC `k`.
    pub fn isolate(&self, k: usize) {
        self.each(|d, u| d == k || u == k).for_each(LinkProxy::cut);
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.each(|_, _| true).for_each(LinkProxy::heal);
    }
}

/// Like [`federated_vhosts`]; with `proxied`, each link goes through a proxy of its own
/// (returned: the links stay up as long as it lives); `stanza_ttl_ms` bounds the stanza
/// backlog towards each DC (`None`: production's).
pub(crate) async fn vhosts(
    n: usize,
    proxied: bool,
    stanza_ttl_ms: Option<u64>,
) -> anyhow::Result<(Vec<DcBroker>, Links)> {
    let infra = crate::infra().await?;
    let mut brokers = Vec::with_capacity(n);
    for k in 1..=n {
        let vhost = infra.fresh_vhost().await?;
        let dc = format!("dc{k}");
        let federation = FederatedDc {
            stanza_backlog_ttl_ms: stanza_ttl_ms,
            ..FederatedDc::new(&dc, &vhost.mgmt_url, &vhost.name, &vhost.amqp_url)
        };
        brokers.push(DcBroker {
            dc,
            vhost,
            federation,
        });
    }
    let broker_addr = std::net::SocketAddr::from(([127, 0, 0, 1], infra.rabbit().amqp_port));
    let mut proxies = Vec::new();
    for up in (1..=n).filter(|_| proxied) {
        for down in (1..=n).filter(|d| *d != up) {
            let proxy = proxy_runtime()?
                .spawn(LinkProxy::start(broker_addr))
                .await
                .context("link proxy task")?
                .context("link proxy")?;
            let b = &mut brokers[up - 1];
            let uri = infra.rabbit().amqp_url(&b.vhost.name).replace(
                &format!(":{}/", broker_addr.port()),
                &format!(":{}/", proxy.addr().port()),
            );
            b.federation.via.insert(format!("dc{down}"), uri);
            proxies.push(((down, up), proxy));
        }
    }
    let feds = federations(&brokers);
    federation::configure(&feds).await?;
    federation::wait_links_running(&feds, FEDERATION_TIMEOUT).await?;
    Ok((brokers, Links { proxies }))
}

/// The runtime the link proxies of every mesh of this process run on: not the test's own.
/// A test's runtime stops polling its tasks while the test blocks, and it blocks when it
/// drops its vhosts (their deletion waits on its own thread): the broker then could not close
/// the federation links that go through the proxies, and each deletion hung until the
/// management API's timeout.
fn proxy_runtime() -> anyhow::Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: std::sync::OnceLock<Result<tokio::runtime::Runtime, String>> =
        std::sync::OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("link-proxies")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| anyhow::anyhow!("link proxy runtime: {e}"))
}

/// The broker's cluster name (`GET /api/overview`).
async fn cluster_name(b: &DcBroker) -> anyhow::Result<String> {
    let url = format!("{}api/overview", b.vhost.mgmt_url);
    let overview: serde_json::Value = reqwest::Client::new()
        .get(&url)
        .basic_auth("guest", Some("guest"))
        .send()
        .await
        .with_context(|| format!("GET {url}"))?
        .json()
        .await
        .with_context(|| format!("parsing {url}"))?;
    overview["cluster_name"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("{url} names no cluster"))
}

fn federations(brokers: &[DcBroker]) -> Vec<FederatedDc> {
    brokers.iter().map(|b| b.federation.clone()).collect()
}

/// Waits until `downstream`'s binding of `exchange` with `routing_key` has reached
/// `upstream`'s broker (bindings travel over the link after it runs; until then the upstream
/// drops what only that binding would route).
pub async fn wait_binding_propagated(
    upstream: &DcBroker,
    downstream: &DcBroker,
    exchange: &str,
    routing_key: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let url = format!(
        "{}api/exchanges/{}/{}/bindings/source",
        upstream.vhost.mgmt_url,
        percent_encode(&upstream.vhost.name),
        percent_encode(exchange)
    );
    // The upstream side of a link is an exchange named after the downstream's cluster, and its
    // vhost and exchange when they differ from the upstream's: `federation: X -> <cluster> B`
    // or `federation: X -> <cluster>:<vhost>:X A` (the last letter alternates when the link
    // rebuilds its bindings).
    let prefix = format!(
        "federation: {exchange} -> {}",
        cluster_name(downstream).await?
    );
    let tail = if upstream.vhost.name == downstream.vhost.name {
        " ".to_owned()
    } else {
        format!(":{}:{exchange} ", downstream.vhost.name)
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let client = reqwest::Client::new();
    loop {
        let bindings: Vec<serde_json::Value> = client
            .get(&url)
            .basic_auth("guest", Some("guest"))
            .send()
            .await
            .with_context(|| format!("GET {url}"))?
            .json()
            .await
            .with_context(|| format!("parsing {url}"))?;
        let found = bindings.iter().any(|b| {
            b["destination"]
                .as_str()
                .and_then(|d| d.strip_prefix(&prefix))
                .is_some_and(|rest| rest.starts_with(&tail) && rest.len() == tail.len() + 1)
                && b["routing_key"].as_str() == Some(routing_key)
        });
        if found {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            let seen: Vec<String> = bindings
                .iter()
                .map(|b| format!("{} [{}]", b["destination"], b["routing_key"]))
                .collect();
            anyhow::bail!(
                "binding {exchange}/{routing_key} of {} not at {} within {timeout:?}; there: {}",
                downstream.dc,
                upstream.dc,
                seen.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `n` DCs of Meerkat, federated, each with its own vhost, database and services.
pub struct MultiDc {
    pub brokers: Vec<DcBroker>,
    pub dcs: Vec<Dc>,
    /// The links between the DCs, to cut and heal.
    pub links: Links,
}

impl MultiDc {
    /// Starts `n` DCs shaped like `options` (its `dc`, `amqp_url`, `peers` are set per DC),
    /// each with a session replicator.
    pub async fn start(n: usize, options: StackOptions) -> anyhow::Result<MultiDc> {
        MultiDc::start_each(n, |_| options.clone()).await
    }

    /// Like [`MultiDc::start`], DC `k` (from 1) shaped like `options(k)`.
    pub async fn start_each(
        n: usize,
        options: impl Fn(usize) -> StackOptions,
    ) -> anyhow::Result<MultiDc> {
        // The backlog towards a DC is the broker's: one profile for the whole mesh.
        let ttl = options(1).timers.stanza_backlog_ttl_ms;
        let (brokers, links) = vhosts(n, true, Some(ttl)).await?;
        let mut starting = Vec::with_capacity(n);
        for (k, b) in brokers.iter().enumerate() {
            let peers = brokers
                .iter()
                .filter(|o| o.dc != b.dc)
                .map(|o| (o.dc.clone(), o.federation.uri_for(&b.dc).to_owned()))
                .collect();
            let opts = StackOptions {
                dc: b.dc.clone(),
                amqp_url: Some(b.vhost.amqp_url.clone()),
                replicator: true,
                peers,
                ..options(k + 1)
            };
            let dc = b.dc.clone();
            starting.push(async move {
                Dc::start(opts)
                    .await
                    .with_context(|| format!("starting {dc}"))
            });
        }
        // Side by side: each DC mostly waits for its own services to be ready.
        let dcs = futures::future::try_join_all(starting).await?;
        let multi = MultiDc {
            brokers,
            dcs,
            links,
        };
        multi.wait_inter_bindings().await?;
        // What `cargo xtask up` waits for too: every service of every DC ready, cross-DC work
        // included (each replicator has applied a snapshot of every other DC).
        for dc in &multi.dcs {
            dc.wait_ready()
                .await
                .with_context(|| format!("{} not ready", dc.options.dc))?;
        }
        Ok(multi)
    }

    /// DC `k`, counting from 1 like the DC ids.
    pub fn dc(&self, k: usize) -> &Dc {
        &self.dcs[k - 1]
    }

    pub fn dc_mut(&mut self, k: usize) -> &mut Dc {
        &mut self.dcs[k - 1]
    }

    /// Every link of the mesh `running`.
    pub async fn wait_links_running(&self) -> anyhow::Result<()> {
        federation::wait_links_running(&federations(&self.brokers), FEDERATION_TIMEOUT).await
    }

    /// Waits until the bindings the services made on the inter-DC exchanges (routing key = own
    /// DC for stanzas and control, `#` for sessions) reached every other DC, so nothing a DC
    /// publishes from now on is dropped for want of a binding. Bindings that no service made
    /// (e.g. a DC without replicator has no sessions queue) are not waited for.
    pub async fn wait_inter_bindings(&self) -> anyhow::Result<()> {
        wait_inter_bindings(&self.brokers).await
    }

    /// Waits until every router of every DC holds exactly `expected` sessions in its directory
    /// (local and remote): the DCs have converged on who is online where.
    pub async fn wait_directory_sessions(
        &self,
        expected: u64,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let routers: Vec<(String, SocketAddr)> = self
            .dcs
            .iter()
            .flat_map(|dc| {
                dc.routers
                    .iter()
                    .map(|r| (format!("{} {}", dc.options.dc, r.name), r.admin))
            })
            .collect();
        wait_routers_hold(&routers, expected, timeout).await
    }

    /// DC `k` dies: every service of it ends without a word and its links are cut (its broker
    /// is unreachable for the others; what it had received stays in its vhost, as on the disk
    /// of a dead broker).
    pub fn kill_dc(&mut self, k: usize) {
        self.links.isolate(k);
        self.dcs[k - 1].kill();
    }

    /// Stops every DC gracefully.
    pub async fn stop(self) -> anyhow::Result<()> {
        for dc in self.dcs {
            dc.stop().await?;
        }
        Ok(())
    }
}

/// [`MultiDc::wait_inter_bindings`] for the DCs on `brokers`, whatever runs their services.
pub(crate) async fn wait_inter_bindings(brokers: &[DcBroker]) -> anyhow::Result<()> {
    for down in brokers {
        let bound = bound_keys(down).await?;
        for (exchange, _) in FEDERATED_EXCHANGES {
            for key in bound.iter().filter(|(x, _)| x == exchange).map(|(_, k)| k) {
                for up in brokers.iter().filter(|u| u.dc != down.dc) {
                    wait_binding_propagated(up, down, exchange, key, FEDERATION_TIMEOUT).await?;
                }
            }
        }
    }
    Ok(())
}

/// (exchange, routing key) of every queue binding on a federated exchange of `b`'s vhost.
async fn bound_keys(b: &DcBroker) -> anyhow::Result<Vec<(String, String)>> {
    let url = format!(
        "{}api/bindings/{}",
        b.vhost.mgmt_url,
        percent_encode(&b.vhost.name)
    );
    let bindings: Vec<serde_json::Value> = reqwest::Client::new()
        .get(&url)
        .basic_auth("guest", Some("guest"))
        .send()
        .await
        .with_context(|| format!("GET {url}"))?
        .json()
        .await
        .with_context(|| format!("parsing {url}"))?;
    Ok(bindings
        .iter()
        .filter(|x| x["destination_type"].as_str() == Some("queue"))
        .filter_map(|x| {
            let source = x["source"].as_str()?;
            let key = x["routing_key"].as_str()?;
            let federated = FEDERATED_EXCHANGES.iter().any(|(e, _)| *e == source);
            federated.then(|| (source.to_owned(), key.to_owned()))
        })
        .collect())
}

/// Polls until every router of `routers` (name, admin address) holds exactly `expected`
/// sessions in its directory, whatever runs the routers (in-process or as processes).
pub(crate) async fn wait_routers_hold(
    routers: &[(String, SocketAddr)],
    expected: u64,
    timeout: Duration,
) -> anyhow::Result<()> {
    poll_routers(
        routers,
        timeout,
        &format!("directories not at {expected} sessions"),
        |name, admin| async move {
            let n = directory_sessions(admin).await;
            (n != Some(expected)).then(|| format!("{name}: {n:?}"))
        },
    )
    .await
}

/// Polls every router of `routers` every 100 ms until `check` (name, admin address) finds
/// nothing wrong with any of them; past `timeout`, fails with `what` and what each said.
async fn poll_routers<C, F>(
    routers: &[(String, SocketAddr)],
    timeout: Duration,
    what: &str,
    check: C,
) -> anyhow::Result<()>
where
    C: Fn(String, SocketAddr) -> F,
    F: std::future::Future<Output = Option<String>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let mut off = Vec::new();
        for (name, admin) in routers {
            if let Some(why) = check(name.clone(), *admin).await {
                off.push(why);
            }
        }
        if off.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("{what} within {timeout:?}: {}", off.join("; "));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The router's `meerkat_router_directory_sessions` gauge, from its admin `/metrics`.
pub(crate) async fn directory_sessions(admin: SocketAddr) -> Option<u64> {
    let text = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with("meerkat_router_directory_sessions"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
}

/// The sessions a router's `GET /directory` lists (none if it does not answer).
async fn directory(client: &reqwest::Client, admin: SocketAddr) -> Vec<serde_json::Value> {
    match client.get(format!("http://{admin}/directory")).send().await {
        Ok(resp) => resp
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|v| v["sessions"].as_array().cloned())
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

/// Polls until every router of `routers` (name, admin address) has each of `jids` (full JIDs)
/// in its directory (`GET /directory`) exactly once (one session per full JID), whatever
/// else it holds.
pub(crate) async fn wait_routers_hold_jids(
    routers: &[(String, SocketAddr)],
    jids: &[&str],
    timeout: Duration,
) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    poll_routers(
        routers,
        timeout,
        "directories without the sessions",
        |name, admin| {
            let client = client.clone();
            async move {
                let held: Vec<String> = directory(&client, admin)
                    .await
                    .iter()
                    .filter_map(|x| x["jid"].as_str().map(str::to_owned))
                    .collect();
                let missing: Vec<&str> = jids
                    .iter()
                    .copied()
                    .filter(|j| held.iter().filter(|h| h == j).count() != 1)
                    .collect();
                (!missing.is_empty())
                    .then(|| format!("{name} {admin}: not once {}", missing.join(", ")))
            }
        },
    )
    .await
}

/// Waits until every router of `routers` shows each of `jids` (full JIDs) with the boolean
/// `flag` of its directory entry true (e.g. `carbons`): a session's change reached them all.
pub(crate) async fn wait_routers_flag(
    routers: &[(String, SocketAddr)],
    jids: &[&str],
    flag: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    poll_routers(
        routers,
        timeout,
        &format!("directories without {flag}"),
        |name, admin| {
            let client = client.clone();
            async move {
                let sessions = directory(&client, admin).await;
                let off: Vec<&str> = jids
                    .iter()
                    .copied()
                    .filter(|j| {
                        !sessions
                            .iter()
                            .any(|s| s["jid"].as_str() == Some(*j) && s[flag] == true)
                    })
                    .collect();
                (!off.is_empty()).then(|| format!("{name} {admin}: no {flag} {}", off.join(", ")))
            }
        },
    )
    .await
}
