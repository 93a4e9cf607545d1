//! SASL for Meerkat: SCRAM-SHA-1 / SCRAM-SHA-256 (RFC 5802, RFC 7677) server exchanges, PLAIN
//! (RFC 4616) parsing, and the stored SCRAM credentials that replace passwords on disk.
//!
//! Pure computation, no I/O: the gateway feeds it bytes from the stream and the store persists
//! [`Credentials`].

mod credentials;
mod error;
mod plain;
mod saslname;
mod scram;

pub use credentials::{Credentials, ScramAlg, StoredCredential};
pub use error::SaslError;
pub use plain::{parse_plain, PlainAuth};
pub use scram::ScramServer;
