//! Exchange federation between DCs, full mesh, through the RabbitMQ management API: on every
//! DC's broker/vhost, one upstream `meerkat-<other dc>` per other DC and a policy per federated
//! exchange that applies them all (`federation-upstream-set: all`); and reading the links'
//! status. Works for one broker per DC and for one vhost per DC on a single broker (the
//! federation plugin names its upstream queues after the downstream vhost when they differ).

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};

use crate::rabbit_api::percent_encode;

pub use meerkat_wire::federation::{
    FederatedExchange, HEARTBEAT_TTL_MS, REPLICATION_BACKLOG_TTL_MS, RETURNED_EXCHANGE,
    STANZA_BACKLOG_TTL_MS,
};
use meerkat_wire::federation::{
    BACKLOG_POLICIES, UPSTREAM_ACK_MODE, UPSTREAM_MAX_HOPS, UPSTREAM_RECONNECT_DELAY_S,
};

/// The exchanges federated between DCs with their AMQP type (`meerkat_wire::federation`).
pub const FEDERATED_EXCHANGES: [(&str, &str); 5] = {
    let e = meerkat_wire::federation::FEDERATED_EXCHANGES;
    [
        (e[0].name, e[0].kind),
        (e[1].name, e[1].kind),
        (e[2].name, e[2].kind),
        (e[3].name, e[3].kind),
        (e[4].name, e[4].kind),
    ]
};

/// The queue policies on the upstream side of the links (`federation: <exchange> -> ...`) of
/// `dc`: (policy name, exchange pattern, definition).
fn backlog_policies(dc: &FederatedDc) -> Vec<(&'static str, &'static str, serde_json::Value)> {
    BACKLOG_POLICIES
        .iter()
        .map(|p| {
            let ttl = match dc.stanza_backlog_ttl_ms {
                Some(ttl) if p.dead_letter_exchange == Some(RETURNED_EXCHANGE) => ttl,
                _ => p.message_ttl_ms,
            };
            let mut def = serde_json::json!({ "message-ttl": ttl });
            if let Some(dlx) = p.dead_letter_exchange {
                def["dead-letter-exchange"] = serde_json::Value::from(dlx);
            }
            (p.name, p.exchanges, def)
        })
        .collect()
}

/// The broker user the other DCs' federation links log in as on a DC's broker: not the
/// administrator, and with only what a link needs (see [`link_permissions`]), so a leaked
/// upstream URI cannot publish to the DC's routers, read its gateways' queues or manage the
/// broker. No tags: it cannot use the management API.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LinkUser {
    pub name: String,
    pub password: String,
}

/// The link user's default name.
pub const LINK_USER: &str = "meerkat-link";

impl LinkUser {
    /// The local stack's and the tests' link user (loopback brokers only): fixed, so that
    /// every process sharing a broker agrees on it.
    pub fn local() -> LinkUser {
        LinkUser {
            name: LINK_USER.into(),
            password: "meerkat-link-local".into(),
        }
    }
}

/// A link's permissions on the upstream vhost, as (configure, write, read) regular expressions.
/// On the upstream broker a link declares its queue `federation: <exchange> -> <downstream>`
/// and an internal exchange `federation: <exchange> -> <downstream> B`, binds them to each
/// other and the exchange's bindings to the federated exchange, and consumes the queue. So:
/// configure and write on those two names, read on them and on the federated exchanges.
/// Nothing else (not `meerkat.route`, not a gateway's queue, not the default exchange).
pub fn link_permissions() -> (String, String, String) {
    let exchanges = FEDERATED_EXCHANGES
        .iter()
        .map(|(name, _)| name.replace('.', "\\."))
        .collect::<Vec<_>>()
        .join("|");
    let link_objects = format!("^federation: ({exchanges}) -> ");
    let read = format!("^(federation: ({exchanges}) -> .*|{exchanges})$");
    (link_objects.clone(), link_objects, read)
}

/// `uri` with `user:password@` replaced by the link user's.
pub fn with_link_user(uri: &str, link: &LinkUser) -> String {
    let bare = strip_credentials(uri);
    let Some((scheme, rest)) = bare.split_once("://") else {
        return uri.to_owned();
    };
    format!(
        "{scheme}://{}:{}@{rest}",
        percent_encode(&link.name),
        percent_encode(&link.password)
    )
}

/// One DC as federation sees it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FederatedDc {
    /// `dc1`, `dc2`, ...
    pub dc: String,
    /// Management API root of the DC's broker, e.g. `http://127.0.0.1:15672/`.
    pub mgmt_url: String,
    pub user: String,
    pub password: String,
    /// The DC's vhost on that broker.
    pub vhost: String,
    /// The AMQP URI by which the *other* DCs reach this one (the upstream URI they configure).
    pub amqp_uri: String,
    /// Other DC id -> the URI by which that DC reaches this one instead of `amqp_uri` (e.g.
    /// through a proxy that can cut the link between just those two).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub via: std::collections::BTreeMap<String, String>,
    /// The user the other DCs' links log in as here: created by [`configure`] and
    /// [`configure_dc`], and put into the upstream URIs [`configure`] gives the other DCs.
    /// `None`: the links use the credentials of `amqp_uri` (not for production).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkUser>,
    /// How long a stanza may wait towards another DC before it comes back to this DC's
    /// routers; `None`: [`STANZA_BACKLOG_TTL_MS`]. Only the tests' fast timers shorten it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stanza_backlog_ttl_ms: Option<u64>,
}

impl FederatedDc {
    /// A DC whose management API takes the default guest account.
    pub fn new(dc: &str, mgmt_url: &str, vhost: &str, amqp_uri: &str) -> FederatedDc {
        FederatedDc {
            dc: dc.into(),
            mgmt_url: mgmt_url.into(),
            user: "guest".into(),
            password: "guest".into(),
            vhost: vhost.into(),
            amqp_uri: amqp_uri.into(),
            via: Default::default(),
            link: Some(LinkUser::local()),
            stanza_backlog_ttl_ms: None,
        }
    }

    /// The URI by which DC `downstream` reaches this one, as the link user when there is one.
    pub fn uri_for(&self, downstream: &str) -> String {
        let uri = self.via.get(downstream).unwrap_or(&self.amqp_uri);
        match &self.link {
            Some(link) => with_link_user(uri, link),
            None => uri.clone(),
        }
    }

    fn api(&self, path: &str) -> String {
        format!("{}/api/{path}", self.mgmt_url.trim_end_matches('/'))
    }

    /// PUTs a definition. A 5xx is retried for a few seconds: right after a vhost is created
    /// the broker may not have started everything the runtime parameters need.
    async fn put(&self, path: &str, body: serde_json::Value) -> anyhow::Result<()> {
        let url = self.api(path);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let resp = client()?
                .put(&url)
                .basic_auth(&self.user, Some(&self.password))
                .json(&body)
                .send()
                .await
                .with_context(|| format!("PUT {url} (is the broker up?)"))?;
            let status = resp.status();
            if status.is_success() {
                return Ok(());
            }
            let text = resp.text().await.unwrap_or_default();
            if !status.is_server_error() || attempt >= 20 {
                bail!("PUT {url}: {status}: {text}");
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }
}

/// Name of the upstream that pulls from `dc` (a DC with a broker of its own, vhost `/`).
pub fn upstream_name(dc: &str) -> String {
    format!("meerkat-{dc}")
}

impl FederatedDc {
    /// Name of this DC's upstream that pulls from `other`: [`upstream_name`], with this DC's
    /// vhost after an `@` when it is not `/`. RabbitMQ restarts the links of every upstream of
    /// a changed upstream's *name* in every vhost (its notification carries no vhost), and a
    /// restarting link re-creates its bindings on the upstream exchange, dropping what is
    /// published meanwhile: DCs sharing a broker (the tests' vhosts) need names of their own.
    pub fn upstream_name_of(&self, other: &str) -> String {
        if self.vhost == "/" {
            upstream_name(other)
        } else {
            format!("{}@{}", upstream_name(other), self.vhost)
        }
    }
}

/// Name of the policy that federates `exchange`.
pub fn policy_name(exchange: &str) -> String {
    format!("meerkat-federate-{exchange}")
}

/// `uri` without `user:password@`: the form the federation plugin writes into the
/// `x-received-from` header of what it forwards, so the form receivers compare against.
pub fn strip_credentials(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => uri.to_owned(),
    }
}

impl FederatedDc {
    /// POSTs a definition (bindings are created by POST).
    async fn post(&self, path: &str, body: serde_json::Value) -> anyhow::Result<()> {
        let url = self.api(path);
        let resp = client()?
            .post(&url)
            .basic_auth(&self.user, Some(&self.password))
            .json(&body)
            .send()
            .await
            .with_context(|| format!("POST {url} (is the broker up?)"))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            bail!("POST {url}: {status}: {text}");
        }
        Ok(())
    }
}

// A client per call: a pooled connection is tied to the tokio runtime that opened it.
fn client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .context("building HTTP client")
}

/// Declares the federated exchanges on `dc` (durable, as the services declare them), so the
/// links can start before any service has run: a link whose upstream exchange is missing
/// fails and waits `reconnect-delay` before trying again.
pub async fn declare_exchanges(dc: &FederatedDc) -> anyhow::Result<()> {
    let vhost = percent_encode(&dc.vhost);
    for (name, kind) in FEDERATED_EXCHANGES {
        let body = serde_json::json!({
            "type": kind, "durable": true, "auto_delete": false, "internal": false,
            "arguments": {}
        });
        dc.put(&format!("exchanges/{vhost}/{}", percent_encode(name)), body)
            .await
            .with_context(|| format!("declaring {name} on {}", dc.dc))?;
    }
    Ok(())
}

/// Another DC as one DC's broker pulls from it: its id and the AMQP URI by which this DC
/// reaches it (what the upstream is configured with, and what the federation plugin names in
/// the `x-received-from` header of what comes through; services get the same URI as a peer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    pub dc: String,
    pub uri: String,
}

/// Parses `dc2=amqp://...,dc3=amqp://...` (the form of the services' `MEERKAT_PEERS`; empty =
/// none).
pub fn parse_upstreams(spec: &str) -> anyhow::Result<Vec<Upstream>> {
    spec.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((dc, uri)) if !dc.trim().is_empty() && !uri.trim().is_empty() => Ok(Upstream {
                dc: dc.trim().to_owned(),
                uri: uri.trim().to_owned(),
            }),
            _ => bail!("peers: expected `dc=uri[,dc=uri...]`, got `{p}`"),
        })
        .collect()
}

/// Configures the full mesh: on every DC, the federated exchanges, one upstream per other DC
/// and the policies. Idempotent (every call is a PUT), so it also repairs a drifted broker.
/// Every DC's exchanges exist before any link is defined, so no link starts towards a missing
/// exchange (it would wait `reconnect-delay` before trying again).
pub async fn configure(dcs: &[FederatedDc]) -> anyhow::Result<()> {
    for dc in dcs {
        declare_local(dc).await?;
    }
    for dc in dcs {
        let upstreams: Vec<Upstream> = dcs
            .iter()
            .filter(|o| o.dc != dc.dc)
            .map(|o| Upstream {
                dc: o.dc.clone(),
                uri: o.uri_for(&dc.dc),
            })
            .collect();
        federate(dc, &upstreams).await?;
    }
    Ok(())
}

/// Configures one DC's broker for the mesh, knowing only how it reaches the other DCs: what
/// [`configure`] does on each DC, for a deployment where each DC is set up on its own
/// (`meerkatctl broker setup`, run by docker compose).
pub async fn configure_dc(dc: &FederatedDc, upstreams: &[Upstream]) -> anyhow::Result<()> {
    declare_local(dc).await?;
    federate(dc, upstreams).await
}

/// What a DC's broker holds for the mesh before any link: the federated exchanges and the
/// returned-stanza exchange and queue.
async fn declare_local(dc: &FederatedDc) -> anyhow::Result<()> {
    declare_exchanges(dc).await?;
    declare_returned_queue(dc).await?;
    match &dc.link {
        Some(link) => declare_link_user(dc, link).await,
        None => Ok(()),
    }
}

/// The link user on `dc`'s broker, with [`link_permissions`] on the DC's vhost and no tags.
/// Idempotent; a PUT also sets the password again.
async fn declare_link_user(dc: &FederatedDc, link: &LinkUser) -> anyhow::Result<()> {
    let user = percent_encode(&link.name);
    dc.put(
        &format!("users/{user}"),
        serde_json::json!({ "password": link.password, "tags": "" }),
    )
    .await
    .with_context(|| format!("link user {} on {}", link.name, dc.dc))?;
    let (configure, write, read) = link_permissions();
    dc.put(
        &format!("permissions/{}/{user}", percent_encode(&dc.vhost)),
        serde_json::json!({ "configure": configure, "write": write, "read": read }),
    )
    .await
    .with_context(|| format!("permissions of link user {} on {}", link.name, dc.dc))
}

/// On `dc`'s broker: one upstream per other DC, a policy federating each exchange from all of
/// them, and the policies bounding the backlog towards them.
async fn federate(dc: &FederatedDc, upstreams: &[Upstream]) -> anyhow::Result<()> {
    let vhost = percent_encode(&dc.vhost);
    for other in upstreams {
        let name = dc.upstream_name_of(&other.dc);
        dc.put(
            &format!(
                "parameters/federation-upstream/{vhost}/{}",
                percent_encode(&name)
            ),
            serde_json::json!({ "value": upstream_definition(&other.uri) }),
        )
        .await
        .with_context(|| format!("upstream {name} on {}", dc.dc))?;
    }
    for (exchange, _) in FEDERATED_EXCHANGES {
        let name = policy_name(exchange);
        let body = serde_json::json!({
            "pattern": format!("^{}$", exchange.replace('.', "\\.")),
            "apply-to": "exchanges",
            "priority": 0,
            "definition": { "federation-upstream-set": "all" },
        });
        dc.put(&format!("policies/{vhost}/{}", percent_encode(&name)), body)
            .await
            .with_context(|| format!("policy {name} on {}", dc.dc))?;
    }
    for (name, exchange, definition) in backlog_policies(dc) {
        let body = serde_json::json!({
            "pattern": format!("^federation: {exchange} -> "),
            "apply-to": "queues",
            "priority": 0,
            "definition": definition,
        });
        dc.put(&format!("policies/{vhost}/{name}"), body)
            .await
            .with_context(|| format!("policy {name} on {}", dc.dc))?;
    }
    Ok(())
}

/// The value of the federation upstream that pulls from the DC reached by `uri`.
fn upstream_definition(uri: &str) -> serde_json::Value {
    serde_json::json!({
        "uri": uri,
        "ack-mode": UPSTREAM_ACK_MODE,
        "max-hops": UPSTREAM_MAX_HOPS,
        "trust-user-id": false,
        "reconnect-delay": UPSTREAM_RECONNECT_DELAY_S,
    })
}

/// The dead-letter exchange of the stanza backlog and the DC's queue on it (as the routers
/// declare them), so what expires before any router ran is kept.
async fn declare_returned_queue(dc: &FederatedDc) -> anyhow::Result<()> {
    let vhost = percent_encode(&dc.vhost);
    dc.put(
        &format!("exchanges/{vhost}/{}", percent_encode(RETURNED_EXCHANGE)),
        serde_json::json!({
            "type": "fanout", "durable": true, "auto_delete": false, "internal": false,
            "arguments": {}
        }),
    )
    .await
    .with_context(|| format!("declaring {RETURNED_EXCHANGE} on {}", dc.dc))?;
    let queue = format!("{RETURNED_EXCHANGE}.{}", dc.dc);
    dc.put(
        &format!("queues/{vhost}/{}", percent_encode(&queue)),
        serde_json::json!({ "durable": true, "auto_delete": false, "arguments": {} }),
    )
    .await
    .with_context(|| format!("declaring {queue} on {}", dc.dc))?;
    dc.post(
        &format!(
            "bindings/{vhost}/e/{}/q/{}",
            percent_encode(RETURNED_EXCHANGE),
            percent_encode(&queue)
        ),
        serde_json::json!({ "routing_key": "", "arguments": {} }),
    )
    .await
    .with_context(|| format!("binding {queue} on {}", dc.dc))
}

/// One federation link of a downstream DC, as the management API reports it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct LinkStatus {
    /// Upstream name, `meerkat-<dc>`.
    pub upstream: String,
    /// Federated exchange (absent for queue federation).
    #[serde(default)]
    pub exchange: Option<String>,
    /// `starting`, `running` or `error`.
    pub status: String,
    #[serde(default)]
    pub error: Option<String>,
}

/// `GET /api/federation-links/<vhost>`: every link whose downstream is `dc`.
///
/// The broker gathers link status from every federation link process it runs, within a
/// timeout of its own; a busy broker answers 500 now and then, so a 5xx is asked again a few
/// times before it counts.
pub async fn link_status(dc: &FederatedDc) -> anyhow::Result<Vec<LinkStatus>> {
    let url = dc.api(&format!("federation-links/{}", percent_encode(&dc.vhost)));
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let resp = client()?
            .get(&url)
            .basic_auth(&dc.user, Some(&dc.password))
            .send()
            .await
            .with_context(|| format!("GET {url} (is the broker up?)"))?;
        let status = resp.status();
        if status.is_success() {
            return resp.json().await.with_context(|| format!("parsing {url}"));
        }
        if !status.is_server_error() || attempt >= 4 {
            bail!("GET {url}: {status}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The links of `dc` the mesh needs that are not `running` (`upstream exchange: status`).
pub async fn links_not_running(
    dc: &FederatedDc,
    all: &[FederatedDc],
) -> anyhow::Result<Vec<String>> {
    let links = link_status(dc).await?;
    let mut missing = Vec::new();
    for other in all.iter().filter(|o| o.dc != dc.dc) {
        let upstream = dc.upstream_name_of(&other.dc);
        for (exchange, _) in FEDERATED_EXCHANGES {
            let link = links
                .iter()
                .find(|l| l.upstream == upstream && l.exchange.as_deref() == Some(exchange));
            match link {
                Some(l) if l.status == "running" => {}
                Some(l) => missing.push(format!(
                    "{upstream} {exchange}: {} {}",
                    l.status,
                    l.error.as_deref().unwrap_or("")
                )),
                None => missing.push(format!("{upstream} {exchange}: absent")),
            }
        }
    }
    Ok(missing)
}

/// Polls until every DC has a running link from every other DC for every federated exchange.
/// A link reports `running` once its channel is up; whether traffic flows is another matter
/// (heartbeats tell that), but until then nothing can flow at all.
pub async fn wait_links_running(dcs: &[FederatedDc], timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut missing = Vec::new();
        for dc in dcs {
            match links_not_running(dc, dcs).await {
                Ok(m) => missing.extend(m.into_iter().map(|m| format!("{}: {m}", dc.dc))),
                Err(e) => missing.push(format!("{}: {e:#}", dc.dc)),
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "federation links not running within {timeout:?}: {}",
                missing.join("; ")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_stripped() {
        assert_eq!(
            strip_credentials("amqp://guest:guest@127.0.0.1:5672/t-1"),
            "amqp://127.0.0.1:5672/t-1"
        );
        assert_eq!(
            strip_credentials("amqp://127.0.0.1:5672/%2f"),
            "amqp://127.0.0.1:5672/%2f"
        );
        assert_eq!(strip_credentials("amqp://u@h"), "amqp://h");
    }

    #[test]
    fn upstreams_from_peers_spec() {
        assert_eq!(
            parse_upstreams(" dc2=amqp://u:p@dc2-rabbitmq:5672/%2f , dc3=amqp://h/x").unwrap(),
            vec![
                Upstream {
                    dc: "dc2".into(),
                    uri: "amqp://u:p@dc2-rabbitmq:5672/%2f".into()
                },
                Upstream {
                    dc: "dc3".into(),
                    uri: "amqp://h/x".into()
                },
            ]
        );
        assert_eq!(parse_upstreams("").unwrap(), vec![]);
        assert!(parse_upstreams("dc2").is_err());
        assert!(parse_upstreams("=amqp://h").is_err());
    }

    #[test]
    fn dcs_sharing_a_broker_name_their_upstreams_apart() {
        let own = FederatedDc::new("dc1", "http://m", "/", "amqp://h/%2f");
        assert_eq!(own.upstream_name_of("dc2"), "meerkat-dc2");
        let shared = FederatedDc::new("dc1", "http://m", "t-1", "amqp://h/t-1");
        let other = FederatedDc::new("dc1", "http://m", "t-2", "amqp://h/t-2");
        assert_eq!(shared.upstream_name_of("dc2"), "meerkat-dc2@t-1");
        assert_ne!(
            shared.upstream_name_of("dc2"),
            other.upstream_name_of("dc2")
        );
    }

    #[test]
    fn link_user_uri_and_permissions() {
        let link = LinkUser {
            name: "meerkat-link".into(),
            password: "p@ss".into(),
        };
        assert_eq!(
            with_link_user("amqp://guest:guest@10.0.0.2:5672/%2f", &link),
            "amqp://meerkat-link:p%40ss@10.0.0.2:5672/%2f"
        );
        assert_eq!(
            with_link_user("amqp://10.0.0.2:5672/t-1", &link),
            "amqp://meerkat-link:p%40ss@10.0.0.2:5672/t-1"
        );
        let (configure, write, read) = link_permissions();
        let xs = r"meerkat\.inter\.stanzas|meerkat\.inter\.sessions|meerkat\.inter\.control|meerkat\.inter\.data|meerkat\.inter\.health";
        assert_eq!(configure, format!("^federation: ({xs}) -> "));
        assert_eq!(write, configure);
        assert_eq!(read, format!("^(federation: ({xs}) -> .*|{xs})$"));
    }

    #[test]
    fn names() {
        assert_eq!(upstream_name("dc2"), "meerkat-dc2");
        assert_eq!(
            policy_name("meerkat.inter.stanzas"),
            "meerkat-federate-meerkat.inter.stanzas"
        );
    }
}
