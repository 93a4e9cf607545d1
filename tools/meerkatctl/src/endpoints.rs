//! The local stack's `endpoints.json` (written by `cargo xtask up`): where a DC's router admin
//! port and broker are. Only the fields meerkatctl needs are read.

use anyhow::{bail, Context};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Endpoints {
    dcs: Vec<DcEndpoints>,
}

/// One DC of the file.
#[derive(Debug, Deserialize)]
pub struct DcEndpoints {
    pub dc: String,
    #[serde(default)]
    pub routers: Vec<AdminEndpoint>,
    /// The DC's health service.
    #[serde(default)]
    pub health: Vec<AdminEndpoint>,
    pub amqp_url: String,
    pub management_url: String,
    pub management_user: String,
    pub management_password: String,
    #[serde(default)]
    pub database_url: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct AdminEndpoint {
    pub admin_url: String,
}

/// DC `dc` of the file at `path`, or its first DC when `dc` is None.
pub fn dc(path: &str, dc: Option<&str>) -> anyhow::Result<DcEndpoints> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!("cannot read {path} (is the local stack up? or give the URL explicitly)")
    })?;
    let file: Endpoints =
        serde_json::from_str(&text).with_context(|| format!("malformed {path}"))?;
    let known: Vec<String> = file.dcs.iter().map(|d| d.dc.clone()).collect();
    let found = match dc {
        Some(want) => file.dcs.into_iter().find(|d| d.dc == want),
        None => file.dcs.into_iter().next(),
    };
    match found {
        Some(d) => Ok(d),
        None => bail!(
            "no DC {} in {path} (it has: {})",
            dc.unwrap_or("at all"),
            known.join(", ")
        ),
    }
}

/// The admin URL of a service of a DC: `explicit` when given without a `--dc`, else the first
/// service `pick` finds in DC `dc` (or the first DC) of the endpoints file; `what` names the
/// service in errors ("router", "health service").
pub fn admin_base(
    path: &str,
    dc: Option<&str>,
    explicit: Option<&str>,
    what: &str,
    pick: impl FnOnce(&DcEndpoints) -> Option<&AdminEndpoint>,
) -> anyhow::Result<String> {
    if let (None, Some(url)) = (dc, explicit) {
        return Ok(url.trim().trim_end_matches('/').to_owned());
    }
    let d = self::dc(path, dc)?;
    match pick(&d) {
        Some(s) => Ok(s.admin_url.trim_end_matches('/').to_owned()),
        None => bail!("{} has no {what} in {path}", d.dc),
    }
}

/// GETs `url` and reads its JSON body as `T`; `what` names the service ("router") and the body
/// ("directory") in errors.
pub async fn get_json<T: serde::de::DeserializeOwned>(
    url: &str,
    service: &str,
    body: &str,
) -> anyhow::Result<T> {
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .context("building HTTP client")?;
    let resp = http
        .get(url)
        .send()
        .await
        .with_context(|| format!("cannot reach the {service} at {url}"))?;
    if !resp.status().is_success() {
        bail!("GET {url}: {}", resp.status());
    }
    resp.json()
        .await
        .with_context(|| format!("GET {url}: not {body}"))
}

/// The vhost an AMQP URL names (`amqp://user:pass@host:port/<vhost>`, percent-encoded; `/`
/// when the path is empty).
pub fn vhost_of(amqp_url: &str) -> String {
    let rest = amqp_url.split_once("://").map_or(amqp_url, |(_, r)| r);
    let path = rest.split_once('/').map_or("", |(_, p)| p);
    let path = path.split(['?', '#']).next().unwrap_or("");
    if path.is_empty() {
        return "/".into();
    }
    percent_decode(path)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::vhost_of;

    #[test]
    fn vhosts() {
        assert_eq!(vhost_of("amqp://guest:guest@127.0.0.1:5672/%2f"), "/");
        assert_eq!(vhost_of("amqp://guest:guest@127.0.0.1:5672/%2F"), "/");
        assert_eq!(vhost_of("amqp://127.0.0.1:5672"), "/");
        assert_eq!(vhost_of("amqp://127.0.0.1:5672/"), "/");
        assert_eq!(vhost_of("amqp://h:1/t-1234?heartbeat=5"), "t-1234");
        assert_eq!(vhost_of("amqp://h:1/a%zz"), "a%zz");
    }
}
