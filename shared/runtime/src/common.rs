//! The settings every service has, under the same keys and `MEERKAT_*` variables: flattened
//! (`#[serde(flatten)]`) into each service's own config, which reads them as its own fields
//! (`config.dc`) through `Deref`.

use std::net::SocketAddr;
use std::num::NonZeroU32;

use serde::{Deserialize, Serialize};

use crate::config::{invalid, Invalid};
use crate::secret::SecretUrl;

/// What every service is told: where it is, which broker, where its admin port listens.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Common {
    /// This DC's id (`dc1`, ...).
    pub dc: String,
    /// The XMPP domain served.
    pub domain: String,
    /// This DC's broker (vhost). Its password is never printed.
    pub amqp_url: SecretUrl,
    /// Admin HTTP port (`/healthz`, `/readyz`, `/metrics`, and the service's own pages);
    /// port 0 picks one.
    pub admin_addr: SocketAddr,
    /// Unique per process: names its connection and its own queues. Empty: each service
    /// makes one (see [`Common::instance_or`]).
    pub instance_id: String,
}

impl Default for Common {
    fn default() -> Common {
        Common {
            dc: "dc1".into(),
            domain: "example.com".into(),
            amqp_url: SecretUrl::new("amqp://guest:guest@127.0.0.1:5672/%2f"),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            instance_id: String::new(),
        }
    }
}

impl Common {
    /// The checks the types cannot make.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.dc.is_empty() {
            return Err(invalid("dc", "must not be empty"));
        }
        if self.domain.is_empty() {
            return Err(invalid("domain", "must not be empty"));
        }
        Ok(())
    }

    /// Sets `instance_id` when none was configured, from the DC and 8 random hex digits
    /// (`make(dc, hex)`), and returns it.
    pub fn instance_or(&mut self, make: impl FnOnce(&str, &str) -> String) -> String {
        if self.instance_id.is_empty() {
            let id = uuid::Uuid::new_v4().simple().to_string();
            let hex = &id[..8];
            self.instance_id = make(&self.dc, hex);
        }
        self.instance_id.clone()
    }
}

/// The DC's PostgreSQL, for the services that use it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Database {
    /// Its password is never printed. The session replicator takes an empty one as "sessions
    /// only".
    pub database_url: SecretUrl,
    /// Connections to PostgreSQL this process keeps at most.
    pub database_pool: NonZeroU32,
}

/// The pool size when none is configured.
pub const DEFAULT_POOL: NonZeroU32 = NonZeroU32::new(4).expect("4 is not 0");

impl Default for Database {
    fn default() -> Database {
        Database {
            database_url: SecretUrl::new("postgres://postgres@127.0.0.1:55432/meerkat_dc1"),
            database_pool: DEFAULT_POOL,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_from;
    use crate::secret::Secret;

    /// A service config as the services write theirs.
    #[derive(Clone, Debug, Serialize, Deserialize)]
    #[serde(default)]
    struct Service {
        #[serde(flatten)]
        common: Common,
        #[serde(flatten)]
        database: Database,
        own: u32,
        password: Secret,
    }

    impl Default for Service {
        fn default() -> Service {
            Service {
                common: Common::default(),
                database: Database::default(),
                own: 7,
                password: Secret::new("guest"),
            }
        }
    }

    #[test]
    fn flattened_keys_are_the_same_keys_and_variables() {
        let s: Service = load_from(
            Some("dc = \"dc2\"\nown = 8\ndatabase_pool = 9\n"),
            &[
                ("MEERKAT_AMQP_URL", "amqp://u:p@h:5672/v"),
                ("MEERKAT_ADMIN_ADDR", "127.0.0.1:9000"),
                ("MEERKAT_INSTANCE_ID", "x"),
            ],
        )
        .unwrap();
        assert_eq!(s.common.dc, "dc2");
        assert_eq!(s.own, 8);
        assert_eq!(s.database.database_pool.get(), 9);
        assert_eq!(s.common.amqp_url.expose(), "amqp://u:p@h:5672/v");
        assert_eq!(s.common.admin_addr.port(), 9000);
        assert_eq!(s.common.instance_id, "x");
        let keys = serde_json::to_value(Service::default()).unwrap();
        let mut keys: Vec<&String> = keys.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "admin_addr",
                "amqp_url",
                "database_pool",
                "database_url",
                "dc",
                "domain",
                "instance_id",
                "own",
                "password"
            ]
        );
    }

    #[test]
    fn a_bad_flattened_value_still_names_its_key_and_variable() {
        let e = load_from::<Service>(None, &[("MEERKAT_ADMIN_ADDR", "nowhere")]).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("admin_addr"), "{e}");
        assert_eq!(e.origin, "MEERKAT_ADMIN_ADDR");
        let e = load_from::<Service>(Some("database_pool = 0"), &[]).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("database_pool"), "{e}");
        // A number where text is wanted is text, flattened or not.
        let s: Service = load_from(None, &[("MEERKAT_DC", "2")]).unwrap();
        assert_eq!(s.common.dc, "2");
        let e = load_from::<Service>(None, &[("MEERKAT_OWN", "x")]).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("own"), "{e}");
    }

    #[test]
    fn debug_shows_no_password() {
        let s: Service = load_from(
            None,
            &[
                ("MEERKAT_AMQP_URL", "amqp://meerkat:amqp-pw-1@h:5672/v"),
                ("MEERKAT_DATABASE_URL", "postgres://meerkat:pg-pw-2@db/x"),
                ("MEERKAT_PASSWORD", "plain-pw-3"),
            ],
        )
        .unwrap();
        let shown = format!("{s:?} {s:#?}");
        for pw in ["amqp-pw-1", "pg-pw-2", "plain-pw-3"] {
            assert!(!shown.contains(pw), "{shown}");
        }
        assert!(
            shown.contains("amqp://meerkat:(secret)@h:5672/v"),
            "{shown}"
        );
    }
}
