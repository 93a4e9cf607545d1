//! The wire version every message carries in `x-meerkat-wire`: `major.minor`.
//!
//! A receiver handles a message of its own major version whatever its minor (a minor version
//! only adds what older receivers may ignore or park, docs/protocol.md); a message of another
//! major version, or with a version it cannot read, it parks. The first releases wrote a bare
//! integer (`1`): it reads as major 1, minor 0.

use std::fmt;

/// A `major.minor` wire version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WireVersion {
    pub major: u16,
    pub minor: u16,
}

/// The version this build speaks.
pub const CURRENT: WireVersion = WireVersion { major: 1, minor: 9 };

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("wire version {0:?} is not MAJOR.MINOR")]
    Malformed(String),
    #[error("no wire version")]
    Missing,
}

impl WireVersion {
    pub const fn new(major: u16, minor: u16) -> WireVersion {
        WireVersion { major, minor }
    }

    /// Reads the header's text form: `1.2`, or the legacy `1` (= `1.0`).
    pub fn parse(s: &str) -> Result<WireVersion, VersionError> {
        let bad = || VersionError::Malformed(s.chars().take(32).collect());
        let (major, minor) = match s.split_once('.') {
            Some((ma, mi)) => (ma, mi),
            None => (s, "0"),
        };
        let number = |t: &str| {
            if t.is_empty() || t.len() > 5 || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            t.parse::<u16>().map_err(|_| bad())
        };
        Ok(WireVersion {
            major: number(major)?,
            minor: number(minor)?,
        })
    }

    /// The legacy integer form (`x-meerkat-wire: 1`): a major version.
    pub fn from_legacy(n: u64) -> Result<WireVersion, VersionError> {
        u16::try_from(n)
            .map(|major| WireVersion { major, minor: 0 })
            .map_err(|_| VersionError::Malformed(n.to_string()))
    }

    /// Whether a receiver speaking `self` handles a message of version `msg`: same major.
    pub fn understands(self, msg: WireVersion) -> bool {
        self.major == msg.major
    }
}

impl fmt::Display for WireVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_forms_and_writes_major_dot_minor() {
        assert_eq!(WireVersion::parse("1.0"), Ok(WireVersion::new(1, 0)));
        assert_eq!(WireVersion::parse("1.12"), Ok(WireVersion::new(1, 12)));
        assert_eq!(WireVersion::parse("2"), Ok(WireVersion::new(2, 0)));
        assert_eq!(WireVersion::from_legacy(1), Ok(WireVersion::new(1, 0)));
        assert_eq!(WireVersion::new(1, 3).to_string(), "1.3");
        let v = WireVersion::new(7, 65535);
        assert_eq!(WireVersion::parse(&v.to_string()), Ok(v));
    }

    #[test]
    fn refuses_what_is_not_a_version() {
        for bad in [
            "", ".", "1.", ".1", "1.2.3", "-1", "+1", "1.-0", " 1", "1 ", "x", "65536", "1.99999",
            "١",
        ] {
            assert!(WireVersion::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(WireVersion::from_legacy(70_000).is_err());
    }

    #[test]
    fn a_receiver_takes_its_major_whatever_the_minor() {
        assert!(CURRENT.understands(WireVersion::new(1, 0)));
        assert!(CURRENT.understands(WireVersion::new(1, 10)));
        assert!(!CURRENT.understands(WireVersion::new(2, 0)));
        assert!(!CURRENT.understands(WireVersion::new(0, 9)));
    }
}
