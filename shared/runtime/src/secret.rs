//! Config values that must never reach a log line or a `{:?}`: passwords, shared secrets, and
//! URLs that carry a password. Both types keep the value in a [`secrecy::SecretString`]
//! (wiped from memory when dropped) and show only a placeholder when debug-printed; the value
//! is read with `expose()`, at the one place that hands it to a connection.
//!
//! They serialise to the plain value: the config loader layers the defaults through serde,
//! and nothing else serialises a config.

use std::fmt;

use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A secret shown as `(secret)` (or `(none)` when empty).
#[derive(Clone, Default)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(SecretString::from(value.into()))
    }

    /// The value itself, for the code that uses it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_empty() {
            "(none)"
        } else {
            "(secret)"
        })
    }
}

/// A URL whose password is secret (`amqp://user:pass@host/vhost`, `postgres://...`): shown
/// with the password replaced by `(secret)`, so logs still say which host and user it names.
#[derive(Clone, Default)]
pub struct SecretUrl(SecretString);

impl SecretUrl {
    pub fn new(value: impl Into<String>) -> SecretUrl {
        SecretUrl(SecretString::from(value.into()))
    }

    /// The URL with its password, for the code that connects.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }

    /// The URL with its password (if any) replaced by `(secret)`.
    pub fn redacted(&self) -> String {
        redact_url(self.expose())
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// `scheme://user:password@rest` → `scheme://user:(secret)@rest`. A value that is not of that
/// shape but has an `@` (a password that could not be found) is hidden whole.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return if url.contains('@') {
            "(secret)".to_owned()
        } else {
            url.to_owned()
        };
    };
    // The userinfo ends at the last `@` before the path: a password may contain `@` only
    // percent-encoded, but be safe with raw ones too.
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:(secret)@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

macro_rules! plain_serde {
    ($t:ident) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.expose())
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<$t, D::Error> {
                String::deserialize(d).map($t::new)
            }
        }

        impl From<&str> for $t {
            fn from(value: &str) -> $t {
                $t::new(value)
            }
        }

        impl From<String> for $t {
            fn from(value: String) -> $t {
                $t::new(value)
            }
        }
    };
}

plain_serde!(Secret);
plain_serde!(SecretUrl);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_everything_but_the_password() {
        for (url, shown) in [
            (
                "amqp://guest:guest@127.0.0.1:5672/%2f",
                "amqp://guest:(secret)@127.0.0.1:5672/%2f",
            ),
            (
                "postgres://meerkat:p@ss@db:5432/meerkat",
                "postgres://meerkat:(secret)@db:5432/meerkat",
            ),
            (
                "postgres://postgres@127.0.0.1:55432/x",
                "postgres://postgres@127.0.0.1:55432/x",
            ),
            ("amqp://h:5672/%2f", "amqp://h:5672/%2f"),
            ("user:pw@host", "(secret)"),
            ("", ""),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("hunter2hunter2hunter2");
        assert_eq!(format!("{s:?}"), "(secret)");
        assert_eq!(format!("{:?}", Secret::default()), "(none)");
        let u = SecretUrl::new("amqp://link:hunter2@h/v");
        assert!(!format!("{u:?}").contains("hunter2"));
        assert!(!u.to_string().contains("hunter2"));
        assert_eq!(u.expose(), "amqp://link:hunter2@h/v");
    }

    #[test]
    fn serde_round_trip_is_the_plain_value() {
        let u: SecretUrl = serde_json::from_str("\"amqp://a:b@c/d\"").unwrap();
        assert_eq!(serde_json::to_string(&u).unwrap(), "\"amqp://a:b@c/d\"");
    }
}
