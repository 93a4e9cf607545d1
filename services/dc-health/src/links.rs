//! The federation links of this DC's broker, from the RabbitMQ management API
//! (`GET /api/federation-links/<vhost>`), read every `links_poll_ms`. Information only: a link
//! can say `running` while nothing passes, so the heartbeats decide whether a DC is up.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::metrics::LinkLabel;
use crate::Ctx;

/// One link whose downstream is this DC, as the management API reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// Upstream name, `meerkat-<dc>`.
    pub upstream: String,
    #[serde(default)]
    pub exchange: Option<String>,
    /// `starting`, `running` or `error`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The last answer (or why there was none).
#[derive(Clone, Debug, Default, Serialize)]
pub struct LinkView {
    pub links: Vec<Link>,
    /// Why the last poll failed, if it did (the links are then those of the poll before).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Milliseconds since the Unix epoch of the last successful poll.
    pub polled_at_ms: Option<u64>,
}

pub async fn poll(ctx: Arc<Ctx>, stop: CancellationToken) {
    if ctx.config.management_url.is_empty() {
        return;
    }
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "no HTTP client: federation links not watched");
            return;
        }
    };
    let every = Duration::from_millis(ctx.config.links_poll_ms);
    let mut shown: HashSet<LinkLabel> = HashSet::new();
    loop {
        match fetch(&ctx, &client).await {
            Ok(mut links) => {
                links.sort_by(|a, b| (&a.upstream, &a.exchange).cmp(&(&b.upstream, &b.exchange)));
                let mut now_shown = HashSet::new();
                for l in &links {
                    let label = LinkLabel {
                        upstream: l.upstream.clone(),
                        exchange: l.exchange.clone().unwrap_or_default(),
                    };
                    ctx.metrics
                        .link_running
                        .get_or_create(&label)
                        .set(i64::from(l.status == "running"));
                    now_shown.insert(label);
                }
                // A link that disappeared is not running.
                for gone in shown.difference(&now_shown) {
                    ctx.metrics.link_running.get_or_create(gone).set(0);
                }
                shown.extend(now_shown);
                let mut view = ctx.links.lock();
                view.links = links;
                view.error = None;
                view.polled_at_ms = Some(meerkat_bus::heartbeat::now_ms());
            }
            Err(e) => {
                tracing::debug!(error = %format!("{e:#}"), "federation links not read");
                ctx.links.lock().error = Some(format!("{e:#}"));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
    }
}

async fn fetch(ctx: &Ctx, client: &reqwest::Client) -> anyhow::Result<Vec<Link>> {
    let url = format!(
        "{}/api/federation-links/{}",
        ctx.config.management_url.trim_end_matches('/'),
        percent_encode(&ctx.config.vhost)
    );
    let resp = client
        .get(&url)
        .basic_auth(
            &ctx.config.management_user,
            Some(ctx.config.management_password.expose()),
        )
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    anyhow::ensure!(status.is_success(), "GET {url}: {status}");
    resp.json().await.with_context(|| format!("parsing {url}"))
}

/// A vhost name as one path segment (`/` is `%2F`).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vhosts_as_path_segments() {
        assert_eq!(percent_encode("/"), "%2F");
        assert_eq!(percent_encode("t-1a2b"), "t-1a2b");
    }

    #[test]
    fn the_management_api_answer_reads() {
        let json = r#"[{"node":"n","exchange":"meerkat.inter.health","upstream_exchange":"meerkat.inter.health","type":"exchange","vhost":"/","upstream":"meerkat-dc2","id":"x","status":"running","local_connection":"c","uri":"amqp://h","timestamp":"t"},
                       {"upstream":"meerkat-dc3","exchange":"meerkat.inter.health","status":"error","error":"econnrefused"}]"#;
        let links: Vec<Link> = serde_json::from_str(json).expect("parse");
        assert_eq!(links[0].status, "running");
        assert_eq!(links[1].error.as_deref(), Some("econnrefused"));
    }
}
