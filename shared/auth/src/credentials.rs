//! Stored SCRAM credentials (RFC 5802 §3): what we keep instead of a password.

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::saslname::prep_password;
use crate::SaslError;

/// The SCRAM hash function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScramAlg {
    Sha1,
    Sha256,
}

impl ScramAlg {
    /// The SASL mechanism name.
    pub fn mechanism(self) -> &'static str {
        match self {
            ScramAlg::Sha1 => "SCRAM-SHA-1",
            ScramAlg::Sha256 => "SCRAM-SHA-256",
        }
    }

    /// Parses a SASL mechanism name (only the SCRAM ones).
    pub fn from_mechanism(name: &str) -> Option<ScramAlg> {
        match name {
            "SCRAM-SHA-1" => Some(ScramAlg::Sha1),
            "SCRAM-SHA-256" => Some(ScramAlg::Sha256),
            _ => None,
        }
    }

    pub(crate) fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        // HMAC accepts keys of any length, so new_from_slice cannot fail.
        match self {
            ScramAlg::Sha1 => {
                let mut mac =
                    <Hmac<Sha1> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
                parts.iter().for_each(|p| mac.update(p));
                mac.finalize().into_bytes().to_vec()
            }
            ScramAlg::Sha256 => {
                let mut mac =
                    <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
                parts.iter().for_each(|p| mac.update(p));
                mac.finalize().into_bytes().to_vec()
            }
        }
    }

    pub(crate) fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramAlg::Sha1 => Sha1::digest(data).to_vec(),
            ScramAlg::Sha256 => Sha256::digest(data).to_vec(),
        }
    }

    fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            ScramAlg::Sha1 => {
                let mut out = [0u8; 20];
                pbkdf2::pbkdf2_hmac::<Sha1>(password, salt, iterations, &mut out);
                out.to_vec()
            }
            ScramAlg::Sha256 => {
                let mut out = [0u8; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
                out.to_vec()
            }
        }
    }
}

/// One algorithm's stored keys: enough to verify a client, useless to impersonate one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCredential {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl StoredCredential {
    /// Derives the keys for a password that is already SASLprepped.
    pub fn derive_prepped(
        alg: ScramAlg,
        prepped_password: &str,
        salt: &[u8],
        iterations: u32,
    ) -> Result<StoredCredential, SaslError> {
        if iterations == 0 {
            return Err(SaslError::InvalidPassword(
                "iteration count must be positive".into(),
            ));
        }
        let salted = alg.salted_password(prepped_password.as_bytes(), salt, iterations);
        let client_key = alg.hmac(&salted, &[b"Client Key"]);
        Ok(StoredCredential {
            salt: salt.to_vec(),
            iterations,
            stored_key: alg.hash(&client_key),
            server_key: alg.hmac(&salted, &[b"Server Key"]),
        })
    }
}

/// SCRAM credentials for both algorithms, each with its own salt.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub sha1: StoredCredential,
    pub sha256: StoredCredential,
}

impl Credentials {
    pub const DEFAULT_ITERATIONS: u32 = 4096;

    /// SASLpreps `password` and derives both credentials with fresh random 16-byte salts.
    pub fn derive(password: &str, iterations: u32) -> Result<Credentials, SaslError> {
        let prepped = prep_password(password)?;
        if prepped.is_empty() {
            return Err(SaslError::InvalidPassword("empty password".into()));
        }
        let mut rng = rand::thread_rng();
        let mut salt1 = [0u8; 16];
        let mut salt256 = [0u8; 16];
        rng.fill_bytes(&mut salt1);
        rng.fill_bytes(&mut salt256);
        Ok(Credentials {
            sha1: StoredCredential::derive_prepped(ScramAlg::Sha1, &prepped, &salt1, iterations)?,
            sha256: StoredCredential::derive_prepped(
                ScramAlg::Sha256,
                &prepped,
                &salt256,
                iterations,
            )?,
        })
    }

    pub fn get(&self, alg: ScramAlg) -> &StoredCredential {
        match alg {
            ScramAlg::Sha1 => &self.sha1,
            ScramAlg::Sha256 => &self.sha256,
        }
    }

    /// Checks a plaintext password (SASL PLAIN) against the SHA-256 credential.
    pub fn verify_plain(&self, password: &str) -> bool {
        let Ok(prepped) = prep_password(password) else {
            return false;
        };
        let stored = &self.sha256;
        match StoredCredential::derive_prepped(
            ScramAlg::Sha256,
            &prepped,
            &stored.salt,
            stored.iterations,
        ) {
            Ok(candidate) => bool::from(candidate.stored_key.ct_eq(&stored.stored_key)),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derive_uses_distinct_random_salts() {
        let a = Credentials::derive("pencil", 16).unwrap();
        let b = Credentials::derive("pencil", 16).unwrap();
        assert_eq!(a.sha1.salt.len(), 16);
        assert_ne!(a.sha1.salt, a.sha256.salt);
        assert_ne!(a.sha256.salt, b.sha256.salt);
        assert_eq!(a.sha1.stored_key.len(), 20);
        assert_eq!(a.sha256.server_key.len(), 32);
        assert_eq!(a.get(ScramAlg::Sha1), &a.sha1);
    }

    #[test]
    fn verify_plain_accepts_only_the_password() {
        let c = Credentials::derive("pencil", 16).unwrap();
        assert!(c.verify_plain("pencil"));
        assert!(!c.verify_plain("pencil2"));
        assert!(!c.verify_plain(""));
    }

    #[test]
    fn saslprep_applies_to_passwords() {
        // U+00A0 (non-ASCII space) maps to U+0020 under SASLprep.
        let c = Credentials::derive("a\u{00A0}b", 16).unwrap();
        assert!(c.verify_plain("a b"));
        assert!(Credentials::derive("bad\u{0007}", 16).is_err());
        assert!(Credentials::derive("", 16).is_err());
        assert!(Credentials::derive("x", 0).is_err());
    }
}
