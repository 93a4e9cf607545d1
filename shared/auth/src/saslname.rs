//! SASLprep and the SCRAM `saslname` encoding (`,` as `=2C`, `=` as `=3D`).

use crate::SaslError;

/// SASLprep (RFC 4013) a username; failures are the client's fault.
pub(crate) fn prep_username(s: &str) -> Result<String, SaslError> {
    let prepped = stringprep::saslprep(s)
        .map_err(|e| SaslError::malformed(format!("username fails SASLprep: {e}")))?;
    if prepped.is_empty() {
        return Err(SaslError::malformed("empty username"));
    }
    Ok(prepped.into_owned())
}

/// SASLprep a password.
pub(crate) fn prep_password(s: &str) -> Result<String, SaslError> {
    stringprep::saslprep(s)
        .map(|p| p.into_owned())
        .map_err(|e| SaslError::InvalidPassword(format!("fails SASLprep: {e}")))
}

/// Decodes a `saslname`; any `=` not starting `=2C`/`=3D` is malformed (RFC 5802 §5.1).
pub(crate) fn decode(s: &str) -> Result<String, SaslError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let esc = rest.get(i..i + 3);
        match esc {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(SaslError::malformed("bad '=' escape in saslname")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes() {
        assert_eq!(decode("a=2Cb=3Dc").unwrap(), "a,b=c");
        assert_eq!(decode("plain").unwrap(), "plain");
        assert!(decode("a=2").is_err());
        assert!(decode("a=41").is_err());
    }

    #[test]
    fn preps_username() {
        // SASLprep maps non-ASCII space to space and removes soft hyphen (RFC 4013 §3 examples).
        assert_eq!(prep_username("I\u{00AD}X").unwrap(), "IX");
        assert!(prep_username("\u{0007}").is_err());
        assert!(prep_username("").is_err());
    }
}
