//! Durations in config: a key keeps its unit in its name (`idle_timeout_secs`,
//! `heartbeat_interval_ms`) and takes either a number in that unit, as config files always
//! have, or a humantime string (`"30s"`, `"500ms"`, `"7d"`, `"1m 30s"`). In code the value is
//! a [`std::time::Duration`].
//!
//! `#[serde(with = "meerkat_runtime::duration::secs")]` or `...::millis` on the field.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};

struct In {
    unit: &'static str,
    from_int: fn(u64) -> Duration,
}

impl<'de> Visitor<'de> for In {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a whole number of {} or a duration such as \"30s\" or \"500ms\"",
            self.unit
        )
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Duration, E> {
        Ok((self.from_int)(n))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Duration, E> {
        u64::try_from(n)
            .map(self.from_int)
            .map_err(|_| E::custom(format!("a duration cannot be negative ({n})")))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
        let text = text.trim();
        // A number given as text (an environment variable) is in the key's unit.
        if let Ok(n) = text.parse::<u64>() {
            return Ok((self.from_int)(n));
        }
        humantime::parse_duration(text).map_err(|e| E::custom(format!("{text:?}: {e}")))
    }
}

/// Keys in seconds.
pub mod secs {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(In {
            unit: "seconds",
            from_int: Duration::from_secs,
        })
    }
}

/// Keys in milliseconds.
pub mod millis {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(In {
            unit: "milliseconds",
            from_int: Duration::from_millis,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde::{Deserialize, Serialize};

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(default)]
    struct Timers {
        #[serde(with = "super::secs")]
        idle_secs: Duration,
        #[serde(with = "super::millis")]
        beat_ms: Duration,
    }

    fn load(toml: &str, env: &[(&str, &str)]) -> Result<Timers, crate::config::ConfigError> {
        crate::config::load_from(Some(toml), env)
    }

    #[test]
    fn numbers_in_the_keys_unit_or_humantime_strings() {
        let t = load("idle_secs = 600\nbeat_ms = 250", &[]).unwrap();
        assert_eq!(t.idle_secs, Duration::from_secs(600));
        assert_eq!(t.beat_ms, Duration::from_millis(250));
        let t = load("idle_secs = \"10m\"\nbeat_ms = \"1s 500ms\"", &[]).unwrap();
        assert_eq!(t.idle_secs, Duration::from_secs(600));
        assert_eq!(t.beat_ms, Duration::from_millis(1500));
        let t = load(
            "",
            &[("MEERKAT_IDLE_SECS", "90"), ("MEERKAT_BEAT_MS", "2s")],
        )
        .unwrap();
        assert_eq!(t.idle_secs, Duration::from_secs(90));
        assert_eq!(t.beat_ms, Duration::from_secs(2));
    }

    #[test]
    fn bad_durations_name_their_key() {
        let e = load("", &[("MEERKAT_BEAT_MS", "soon")]).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("beat_ms"), "{e}");
        assert_eq!(e.origin, "MEERKAT_BEAT_MS");
        let e = load("idle_secs = -5", &[]).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("idle_secs"), "{e}");
    }
}
