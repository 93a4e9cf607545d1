//! SASL failures and their RFC 6120 §6.5 conditions.

/// Why a SASL exchange failed. Each variant maps to the `<failure/>` child the client sees.
#[derive(Debug, thiserror::Error)]
pub enum SaslError {
    /// The message does not follow the mechanism's grammar.
    #[error("malformed SASL request: {0}")]
    MalformedRequest(String),
    /// Wrong credentials or unknown user (deliberately indistinguishable).
    #[error("not authorized")]
    NotAuthorized,
    /// The client asked to act as someone else.
    #[error("invalid authorization identity")]
    InvalidAuthzid,
    /// The mechanism is not offered.
    #[error("invalid mechanism")]
    InvalidMechanism,
    /// The mechanism needs TLS first (PLAIN).
    #[error("encryption required")]
    EncryptionRequired,
    /// The client aborted the exchange.
    #[error("aborted")]
    Aborted,
    /// A backend (e.g. the database) failed; the client may retry later.
    #[error("temporary authentication failure")]
    TemporaryAuthFailure,
    /// A password that SASLprep prohibits, or unusable derivation parameters.
    #[error("invalid password: {0}")]
    InvalidPassword(String),
}

impl SaslError {
    /// RFC 6120 §6.5 defined-condition element name.
    pub fn condition(&self) -> &'static str {
        match self {
            SaslError::MalformedRequest(_) => "malformed-request",
            SaslError::NotAuthorized | SaslError::InvalidPassword(_) => "not-authorized",
            SaslError::InvalidAuthzid => "invalid-authzid",
            SaslError::InvalidMechanism => "invalid-mechanism",
            SaslError::EncryptionRequired => "encryption-required",
            SaslError::Aborted => "aborted",
            SaslError::TemporaryAuthFailure => "temporary-auth-failure",
        }
    }

    pub(crate) fn malformed(why: impl Into<String>) -> SaslError {
        SaslError::MalformedRequest(why.into())
    }
}
