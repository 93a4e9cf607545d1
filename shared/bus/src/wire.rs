//! Reading the wire contract back from a received message's headers: its version and, for a
//! stanza message, its kind. Every consumer checks the version on receipt (consumer.rs); a
//! message this version cannot take is parked (parking.rs), never dropped.

use lapin::types::{AMQPValue, FieldTable};
use meerkat_wire::headers as h;
use meerkat_wire::version::{self, VersionError};
use meerkat_wire::{RouteKind, UnknownKind, WireVersion};

use crate::HeaderExt;

/// The `x-meerkat-wire` header: `MAJOR.MINOR` as a string, or the legacy integer (a major).
pub fn version(headers: Option<&FieldTable>) -> Result<WireVersion, VersionError> {
    let Some(value) = headers.and_then(|t| t.inner().get(h::WIRE)) else {
        return Err(VersionError::Missing);
    };
    match value {
        AMQPValue::LongString(_) | AMQPValue::ShortString(_) | AMQPValue::ByteArray(_) => {
            let s = headers.get_str(h::WIRE).unwrap_or_default();
            WireVersion::parse(&s)
        }
        _ => match headers.get_u64(h::WIRE) {
            Some(n) => WireVersion::from_legacy(n),
            None => Err(VersionError::Malformed(format!("{value:?}"))),
        },
    }
}

/// Why a received message is not for this version: the reason it is parked with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotForUs {
    #[error("wire version: {0}")]
    Version(#[from] VersionError),
    #[error("wire version {0}, this receiver speaks {current}", current = version::CURRENT)]
    Major(WireVersion),
    #[error(transparent)]
    Kind(#[from] UnknownKind),
    #[error("unreadable: {0}")]
    Unreadable(String),
}

impl NotForUs {
    /// The metric label (few values).
    pub fn label(&self) -> &'static str {
        match self {
            NotForUs::Version(_) | NotForUs::Major(_) => "version",
            NotForUs::Kind(_) => "kind",
            NotForUs::Unreadable(_) => "unreadable",
        }
    }

    pub fn unreadable(e: impl std::fmt::Display) -> NotForUs {
        NotForUs::Unreadable(e.to_string())
    }
}

/// Ok when this version handles a message with these headers (its major).
pub fn check(headers: Option<&FieldTable>) -> Result<WireVersion, NotForUs> {
    let v = version(headers)?;
    if version::CURRENT.understands(v) {
        Ok(v)
    } else {
        Err(NotForUs::Major(v))
    }
}

/// The `x-meerkat-kind` of a stanza message; absent is [`RouteKind::Stanza`].
pub fn kind(headers: Option<&FieldTable>) -> Result<RouteKind, UnknownKind> {
    match headers.get_str(h::KIND) {
        Some(k) => RouteKind::parse(&k),
        None => Ok(RouteKind::Stanza),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Headers;
    use lapin::types::{LongString, ShortString};

    fn with(value: AMQPValue) -> FieldTable {
        let mut t = FieldTable::default();
        t.insert(ShortString::from(h::WIRE), value);
        t
    }

    #[test]
    fn reads_the_text_and_the_legacy_integer_form() {
        let text = Headers::new().str(h::WIRE, "1.4").build();
        assert_eq!(version(Some(&text)), Ok(WireVersion::new(1, 4)));
        let legacy = Headers::new().u64(h::WIRE, 1).build();
        assert_eq!(version(Some(&legacy)), Ok(WireVersion::new(1, 0)));
        assert_eq!(
            version(Some(&with(AMQPValue::ShortShortUInt(2)))),
            Err(VersionError::Malformed("ShortShortUInt(2)".into()))
        );
        assert_eq!(
            version(Some(&with(AMQPValue::LongInt(2)))),
            Ok(WireVersion::new(2, 0))
        );
        assert_eq!(version(None), Err(VersionError::Missing));
        assert!(version(Some(&with(AMQPValue::LongString(LongString::from("v1"))))).is_err());
        assert!(version(Some(&with(AMQPValue::LongLongInt(-1)))).is_err());
        assert!(version(Some(&with(AMQPValue::Boolean(true)))).is_err());
    }

    #[test]
    fn a_newer_minor_is_taken_another_major_is_not() {
        let h = |v: &str| Headers::new().str(h::WIRE, v).build();
        assert_eq!(check(Some(&h("1.7"))), Ok(WireVersion::new(1, 7)));
        assert_eq!(
            check(Some(&h("2.0"))).map_err(|e| e.label()),
            Err("version")
        );
        assert_eq!(check(None).map_err(|e| e.label()), Err("version"));
    }

    #[test]
    fn kinds() {
        assert_eq!(kind(None), Ok(RouteKind::Stanza));
        let k = Headers::new().str(h::KIND, "local-presence").build();
        assert_eq!(kind(Some(&k)), Ok(RouteKind::LocalPresence));
        let k = Headers::new().str(h::KIND, "recheck").build();
        assert!(kind(Some(&k)).is_err());
    }
}
