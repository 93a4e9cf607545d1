//! The health service's configuration: defaults, then a TOML file, then `MEERKAT_*` variables.
//! `peers` takes a list of tables in TOML, or one string `dc2=amqp://...,dc3=amqp://...` (what
//! `MEERKAT_PEERS` can carry), as the session replicator's does.

use std::time::Duration;

use meerkat_runtime::config::invalid;
pub use meerkat_runtime::config::Invalid;
pub use meerkat_runtime::peers::{parse_peers, Peer};
use meerkat_runtime::{Common, Secret};
use serde::{Deserialize, Serialize};

/// How often peers and gateways are looked at: part of the detection bound.
pub const CHECK_TICK: Duration = Duration::from_millis(250);

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `dc`, `domain`, `amqp_url`, `admin_addr` (also `/status`), `instance_id` (empty =
    /// `<dc>-health`; reported in DC status events, names its queues).
    #[serde(flatten)]
    pub common: Common,
    /// The other DCs: id and the federation upstream URI they are reached by (used to check
    /// that a heartbeat came through the link of the DC it claims).
    #[serde(deserialize_with = "meerkat_runtime::peers::list_or_spec")]
    pub peers: Vec<Peer>,
    /// How often this DC's heartbeat goes to the other DCs.
    pub heartbeat_interval_ms: u64,
    /// A DC silent this long (since its last heartbeat was received) is suspect.
    pub suspect_after_ms: u64,
    /// A DC silent this long is down: its sessions are purged, its contacts told.
    pub down_after_ms: u64,
    /// A gateway of this DC silent this long is down: its sessions are closed.
    pub gateway_down_after_ms: u64,
    /// The promise: a silent DC or gateway is declared down at most this long after its last
    /// heartbeat arrived. `down_after_ms` plus the check tick must stay within it.
    pub detection_bound_ms: u64,
    /// How often the whole view is published again (services that start late learn it).
    pub status_repeat_ms: u64,
    /// RabbitMQ management API root (`http://127.0.0.1:15672/`) of this DC's broker; empty = no
    /// federation link status.
    pub management_url: String,
    pub management_user: String,
    pub management_password: Secret,
    /// This DC's vhost on that broker.
    pub vhost: String,
    /// How often the federation link status is read.
    pub links_poll_ms: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            common: Common::default(),
            peers: Vec::new(),
            heartbeat_interval_ms: 1000,
            suspect_after_ms: 2000,
            down_after_ms: 4000,
            gateway_down_after_ms: 4000,
            detection_bound_ms: 5000,
            status_repeat_ms: 10_000,
            management_url: String::new(),
            management_user: "guest".into(),
            management_password: Secret::new("guest"),
            vhost: "/".into(),
            links_poll_ms: 5000,
        }
    }
}

impl Config {
    /// The checks the types cannot make; one line naming the key on failure.
    pub fn validate(&self) -> Result<(), Invalid> {
        self.common.validate()?;
        meerkat_runtime::peers::check(&self.dc, &self.peers).map_err(|m| invalid("peers", m))?;
        if self.heartbeat_interval_ms == 0 {
            return Err(invalid("heartbeat_interval_ms", "must be above 0"));
        }
        if self.heartbeat_interval_ms >= self.suspect_after_ms {
            return Err(invalid(
                "suspect_after_ms",
                format!(
                    "{} must be above heartbeat_interval_ms ({}), or every beat is late",
                    self.suspect_after_ms, self.heartbeat_interval_ms
                ),
            ));
        }
        if self.suspect_after_ms >= self.down_after_ms {
            return Err(invalid(
                "down_after_ms",
                format!(
                    "{} must be above suspect_after_ms ({})",
                    self.down_after_ms, self.suspect_after_ms
                ),
            ));
        }
        let tick = u64::try_from(CHECK_TICK.as_millis()).unwrap_or(u64::MAX);
        for (key, after) in [
            ("down_after_ms", self.down_after_ms),
            ("gateway_down_after_ms", self.gateway_down_after_ms),
        ] {
            if after.saturating_add(tick) > self.detection_bound_ms {
                return Err(invalid(
                    key,
                    format!(
                        "{after} + the {tick} ms check tick exceeds detection_bound_ms ({})",
                        self.detection_bound_ms
                    ),
                ));
            }
        }
        if self.gateway_down_after_ms == 0 {
            return Err(invalid("gateway_down_after_ms", "must be above 0"));
        }
        if self.status_repeat_ms == 0 {
            return Err(invalid("status_repeat_ms", "must be above 0"));
        }
        if self.links_poll_ms == 0 {
            return Err(invalid("links_poll_ms", "must be above 0"));
        }
        if !self.management_url.is_empty() && !self.management_url.starts_with("http") {
            return Err(invalid(
                "management_url",
                format!("`{}` is not an http(s) URL", self.management_url),
            ));
        }
        Ok(())
    }

    pub fn instance(&self) -> String {
        if self.instance_id.is_empty() {
            format!("{}-health", self.dc)
        } else {
            self.instance_id.clone()
        }
    }

    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }
}

/// The settings every service has are the health service's own: `config.dc`.
impl std::ops::Deref for Config {
    type Target = Common;
    fn deref(&self) -> &Common {
        &self.common
    }
}

impl std::ops::DerefMut for Config {
    fn deref_mut(&mut self) -> &mut Common {
        &mut self.common
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: Option<&str>, env: &[(&str, &str)]) -> Config {
        meerkat_runtime::config::load_from(toml, env).expect("config")
    }

    #[test]
    fn defaults_hold_the_five_second_bound() {
        let c = Config::default();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.instance(), "dc1-health");
        assert!(c.down_after_ms + CHECK_TICK.as_millis() as u64 <= 5000);
    }

    #[test]
    fn peers_from_env_spec_and_toml_list() {
        let c = load(
            None,
            &[
                (
                    "MEERKAT_PEERS",
                    "dc2=amqp://g:g@h:5672/dc2, dc3=amqp://h:5673/%2f",
                ),
                ("MEERKAT_DC", "dc1"),
            ],
        );
        assert_eq!(
            c.peers,
            vec![
                Peer {
                    dc: "dc2".into(),
                    upstream_uri: "amqp://g:g@h:5672/dc2".into()
                },
                Peer {
                    dc: "dc3".into(),
                    upstream_uri: "amqp://h:5673/%2f".into()
                },
            ]
        );
        let c = load(
            Some("[[peers]]\ndc = \"dc2\"\nupstream_uri = \"amqp://x/y\"\n"),
            &[],
        );
        assert_eq!(c.peers[0].dc, "dc2");
        assert!(parse_peers("dc2").is_err());
        assert!(
            meerkat_runtime::config::load_from::<Config>(None, &[("MEERKAT_PEERS", "x")]).is_err()
        );
    }

    #[test]
    fn timings_that_break_the_bound_are_refused_by_key() {
        let with = |env: &[(&str, &str)]| load(None, env).validate().map_err(|e| e.key);
        assert_eq!(
            with(&[("MEERKAT_SUSPECT_AFTER_MS", "4000")]),
            Err("down_after_ms")
        );
        assert_eq!(
            with(&[("MEERKAT_DOWN_AFTER_MS", "4900")]),
            Err("down_after_ms")
        );
        assert_eq!(
            with(&[("MEERKAT_GATEWAY_DOWN_AFTER_MS", "6000")]),
            Err("gateway_down_after_ms")
        );
        assert_eq!(
            with(&[("MEERKAT_HEARTBEAT_INTERVAL_MS", "2000")]),
            Err("suspect_after_ms")
        );
        assert_eq!(with(&[("MEERKAT_PEERS", "dc1=amqp://x")]), Err("peers"));
        // A wider bound lets slower timings through.
        assert_eq!(
            with(&[
                ("MEERKAT_DOWN_AFTER_MS", "8000"),
                ("MEERKAT_DETECTION_BOUND_MS", "9000")
            ]),
            Ok(())
        );
        let e = load(None, &[("MEERKAT_DOWN_AFTER_MS", "4900")])
            .validate()
            .expect_err("invalid");
        assert!(!e.to_string().contains('\n'));
    }
}
