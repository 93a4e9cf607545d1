//! Talking to a running RabbitMQ node from outside: its AMQP URL and the management HTTP API
//! (readiness, vhosts and permissions). Serializable so a test runner can hand it to tests.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};

/// How to reach one RabbitMQ node.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RabbitEndpoint {
    pub host: String,
    pub amqp_port: u16,
    pub mgmt_port: u16,
    pub user: String,
    pub password: String,
}

impl RabbitEndpoint {
    /// The node on 127.0.0.1 with the default guest account (allowed from loopback).
    pub fn loopback(amqp_port: u16, mgmt_port: u16) -> RabbitEndpoint {
        RabbitEndpoint {
            host: "127.0.0.1".into(),
            amqp_port,
            mgmt_port,
            user: "guest".into(),
            password: "guest".into(),
        }
    }

    /// `amqp://user:pass@host:port/<vhost>`, the vhost percent-encoded (`/` is `%2f`).
    pub fn amqp_url(&self, vhost: &str) -> String {
        format!(
            "amqp://{}:{}@{}:{}/{}",
            self.user,
            self.password,
            self.host,
            self.amqp_port,
            percent_encode(vhost)
        )
    }

    /// The management UI and API root, e.g. `http://127.0.0.1:15672/`.
    pub fn mgmt_url(&self) -> String {
        format!("http://{}:{}/", self.host, self.mgmt_port)
    }

    fn api(&self, path: &str) -> String {
        format!("http://{}:{}/api/{path}", self.host, self.mgmt_port)
    }

    // A client per call: a pooled connection is tied to the tokio runtime that opened it, and
    // tests run many runtimes against one endpoint.
    fn client() -> anyhow::Result<reqwest::Client> {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .context("building HTTP client")
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<reqwest::Response> {
        let mut req = Self::client()?
            .request(method.clone(), self.api(path))
            .basic_auth(&self.user, Some(&self.password));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {} (is the node up?)", self.api(path)))?;
        Ok(resp)
    }

    async fn send_ok(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<()> {
        let resp = self.send(method.clone(), path, body).await?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            bail!("{method} {}: {status}: {text}", self.api(path));
        }
        Ok(())
    }

    /// `GET /api/overview` (cluster name, versions, listeners).
    pub async fn overview(&self) -> anyhow::Result<serde_json::Value> {
        let resp = self.send(reqwest::Method::GET, "overview", None).await?;
        let status = resp.status();
        if !status.is_success() {
            bail!("GET {}: {status}", self.api("overview"));
        }
        resp.json().await.context("parsing /api/overview")
    }

    /// True when the management API answers and the AMQP port accepts connections (the
    /// management plugin starts after the AMQP listener, but checking both costs nothing).
    pub async fn is_ready(&self) -> bool {
        self.overview().await.is_ok() && crate::ports::port_open(self.amqp_port)
    }

    /// Polls until ready or `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while !self.is_ready().await {
            if Instant::now() >= deadline {
                bail!(
                    "RabbitMQ at {} not ready within {timeout:?}",
                    self.mgmt_url()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Ok(())
    }

    /// Creates `name` (no error if it exists) and gives our user full permissions on it.
    pub async fn create_vhost(&self, name: &str) -> anyhow::Result<()> {
        let vhost = percent_encode(name);
        self.send_ok(reqwest::Method::PUT, &format!("vhosts/{vhost}"), None)
            .await
            .with_context(|| format!("creating vhost {name}"))?;
        let perms = serde_json::json!({ "configure": ".*", "write": ".*", "read": ".*" });
        let user = percent_encode(&self.user);
        self.send_ok(
            reqwest::Method::PUT,
            &format!("permissions/{vhost}/{user}"),
            Some(perms),
        )
        .await
        .with_context(|| format!("granting {} on vhost {name}", self.user))
    }

    /// Deletes `name` with everything in it; a missing vhost is not an error.
    pub async fn delete_vhost(&self, name: &str) -> anyhow::Result<()> {
        let path = format!("vhosts/{}", percent_encode(name));
        let resp = self.send(reqwest::Method::DELETE, &path, None).await?;
        let status = resp.status();
        if status.is_success() || status == reqwest::StatusCode::NOT_FOUND {
            Ok(())
        } else {
            bail!("deleting vhost {name}: {status}")
        }
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_vhost_is_encoded() {
        let e = RabbitEndpoint::loopback(5672, 15672);
        assert_eq!(e.amqp_url("/"), "amqp://guest:guest@127.0.0.1:5672/%2f");
        assert_eq!(e.amqp_url("t-1"), "amqp://guest:guest@127.0.0.1:5672/t-1");
    }
}
