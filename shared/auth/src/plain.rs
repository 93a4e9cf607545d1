//! SASL PLAIN (RFC 4616) message parsing. The gateway offers PLAIN only inside TLS.

use crate::saslname::prep_username;
use crate::SaslError;

/// A parsed PLAIN message: `[authzid] NUL authcid NUL passwd`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlainAuth {
    /// Requested authorization identity; `None` when empty.
    pub authzid: Option<String>,
    /// The SASLprepped authentication identity (username).
    pub authcid: String,
    /// The password as sent; [`crate::Credentials::verify_plain`] SASLpreps it.
    pub password: String,
}

pub fn parse_plain(msg: &[u8]) -> Result<PlainAuth, SaslError> {
    let text =
        std::str::from_utf8(msg).map_err(|_| SaslError::malformed("PLAIN message is not UTF-8"))?;
    let mut parts = text.split('\0');
    let (Some(authzid), Some(authcid), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::malformed(
            "PLAIN message needs exactly two NUL separators",
        ));
    };
    if authcid.is_empty() || password.is_empty() {
        return Err(SaslError::malformed("empty authcid or password"));
    }
    Ok(PlainAuth {
        authzid: (!authzid.is_empty()).then(|| authzid.to_owned()),
        authcid: prep_username(authcid)?,
        password: password.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_without_authzid() {
        let p = parse_plain(b"\0user\0pencil").unwrap();
        assert_eq!(
            p,
            PlainAuth {
                authzid: None,
                authcid: "user".into(),
                password: "pencil".into()
            }
        );
    }

    #[test]
    fn parses_with_authzid() {
        let p = parse_plain(b"user@example.com\0user\0pencil").unwrap();
        assert_eq!(p.authzid.as_deref(), Some("user@example.com"));
        assert_eq!(p.authcid, "user");
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            &b"user\0pencil"[..],
            b"\0user\0pencil\0x",
            b"\0\0pencil",
            b"\0user\0",
            b"\0us\xffer\0p",
            b"",
        ] {
            let e = parse_plain(bad).unwrap_err();
            assert_eq!(e.condition(), "malformed-request", "{bad:?}");
        }
    }
}
