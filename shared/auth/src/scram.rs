//! One server-side SCRAM exchange (RFC 5802, RFC 7677), without channel binding.

use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rand::RngCore;
use subtle::ConstantTimeEq;

use crate::saslname::{decode, prep_username};
use crate::{Credentials, SaslError, ScramAlg, StoredCredential};

/// A SCRAM exchange: `start` → `server_first` → `client_final`.
pub struct ScramServer {
    alg: ScramAlg,
    /// The exact gs2 header, which the client must echo (base64) in `c=`.
    gs2_header: String,
    client_first_bare: String,
    client_nonce: String,
    server_nonce: String,
    username: String,
    authzid: Option<String>,
    /// Keys the fake salt for unknown users; see [`ScramServer::set_fake_salt_secret`].
    fake_salt_secret: Option<Vec<u8>>,
    /// Set by `server_first`: the message sent and the credential (None: unknown user).
    sent: Option<(String, Option<StoredCredential>)>,
}

impl ScramServer {
    /// Parses client-first-message. Returns the exchange and the SASLprepped username.
    pub fn start(alg: ScramAlg, client_first: &[u8]) -> Result<(ScramServer, String), SaslError> {
        let text = std::str::from_utf8(client_first)
            .map_err(|_| SaslError::malformed("client-first is not UTF-8"))?;
        let (cbind, rest) = text
            .split_once(',')
            .ok_or_else(|| SaslError::malformed("missing gs2 header"))?;
        match cbind {
            // "y": the client could bind but thinks we can't — true, we don't offer -PLUS.
            "n" | "y" => {}
            c if c.starts_with("p=") => {
                return Err(SaslError::malformed("channel binding is not supported"))
            }
            _ => return Err(SaslError::malformed("bad gs2 channel binding flag")),
        }
        let (authz_field, bare) = rest
            .split_once(',')
            .ok_or_else(|| SaslError::malformed("missing gs2 header"))?;
        let authzid = match authz_field {
            "" => None,
            a => Some(decode(
                a.strip_prefix("a=")
                    .ok_or_else(|| SaslError::malformed("bad authzid field"))?,
            )?),
        };
        let gs2_header = text[..text.len() - bare.len()].to_owned();

        let mut attrs = bare.split(',');
        let user_attr = attrs.next().unwrap_or_default();
        if user_attr.starts_with("m=") {
            return Err(SaslError::malformed(
                "mandatory extensions are not supported",
            ));
        }
        let raw_user = user_attr
            .strip_prefix("n=")
            .ok_or_else(|| SaslError::malformed("missing username"))?;
        let username = prep_username(&decode(raw_user)?)?;
        let client_nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or_else(|| SaslError::malformed("missing client nonce"))?;
        if client_nonce.is_empty() || !client_nonce.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(SaslError::malformed("bad client nonce"));
        }
        // Optional extensions after the nonce are ignored, as RFC 5802 allows.

        if let Some(a) = &authzid {
            if !authzid_matches(a, &username) {
                return Err(SaslError::InvalidAuthzid);
            }
        }

        let server = ScramServer {
            alg,
            gs2_header,
            client_first_bare: bare.to_owned(),
            client_nonce: client_nonce.to_owned(),
            server_nonce: random_nonce(),
            username: username.clone(),
            authzid,
            fake_salt_secret: None,
            sent: None,
        };
        Ok((server, username))
    }

    /// The authorization identity the client asked for, if any (already checked against the
    /// username's localpart by `start`).
    pub fn authzid(&self) -> Option<&str> {
        self.authzid.as_deref()
    }

    pub fn alg(&self) -> ScramAlg {
        self.alg
    }

    /// Replaces the random server nonce. For tests reproducing published example exchanges.
    pub fn set_server_nonce(&mut self, nonce: &str) {
        self.server_nonce = nonce.to_owned();
    }

    /// Keys the fake salt answered for unknown users. Gateways of one deployment should share a
    /// secret so that every instance answers the same salt (else comparing two instances reveals
    /// which users don't exist); without one, a per-process random secret is used.
    pub fn set_fake_salt_secret(&mut self, secret: &[u8]) {
        self.fake_salt_secret = Some(secret.to_vec());
    }

    /// server-first-message. `cred` None (unknown user): a fake salt derived from the username,
    /// and `client_final` fails with NotAuthorized.
    pub fn server_first(&mut self, cred: Option<&StoredCredential>) -> Vec<u8> {
        let (salt, iterations) = match cred {
            Some(c) => (c.salt.clone(), c.iterations),
            None => (self.fake_salt(), Credentials::DEFAULT_ITERATIONS),
        };
        let msg = format!(
            "r={}{},s={},i={}",
            self.client_nonce,
            self.server_nonce,
            B64.encode(salt),
            iterations
        );
        self.sent = Some((msg.clone(), cred.cloned()));
        msg.into_bytes()
    }

    /// Verifies client-final-message; on success returns server-final-message (`v=...`).
    pub fn client_final(self, client_final: &[u8]) -> Result<Vec<u8>, SaslError> {
        let (server_first, cred) = self
            .sent
            .as_ref()
            .ok_or_else(|| SaslError::malformed("client-final before server-first"))?;
        let text = std::str::from_utf8(client_final)
            .map_err(|_| SaslError::malformed("client-final is not UTF-8"))?;
        let proof_at = text
            .rfind(",p=")
            .ok_or_else(|| SaslError::malformed("missing proof"))?;
        let without_proof = &text[..proof_at];
        let proof_b64 = &text[proof_at + 3..];
        if proof_b64.contains(',') {
            return Err(SaslError::malformed("proof must be the last attribute"));
        }
        let proof = B64
            .decode(proof_b64)
            .map_err(|_| SaslError::malformed("proof is not base64"))?;

        let mut attrs = without_proof.split(',');
        let cbind = attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or_else(|| SaslError::malformed("missing channel binding"))?;
        let cbind = B64
            .decode(cbind)
            .map_err(|_| SaslError::malformed("channel binding is not base64"))?;
        if cbind != self.gs2_header.as_bytes() {
            return Err(SaslError::malformed(
                "channel binding does not match the gs2 header",
            ));
        }
        let nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or_else(|| SaslError::malformed("missing nonce"))?;
        let expected_nonce = format!("{}{}", self.client_nonce, self.server_nonce);
        if nonce != expected_nonce {
            return Err(SaslError::malformed("nonce mismatch"));
        }

        let Some(cred) = cred else {
            return Err(SaslError::NotAuthorized);
        };
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, server_first, without_proof
        );
        let client_signature = self.alg.hmac(&cred.stored_key, &[auth_message.as_bytes()]);
        if proof.len() != client_signature.len() {
            return Err(SaslError::NotAuthorized);
        }
        let client_key: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(p, s)| p ^ s)
            .collect();
        let stored_key = self.alg.hash(&client_key);
        if !bool::from(stored_key.ct_eq(&cred.stored_key)) {
            return Err(SaslError::NotAuthorized);
        }
        let server_signature = self.alg.hmac(&cred.server_key, &[auth_message.as_bytes()]);
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }

    fn fake_salt(&self) -> Vec<u8> {
        let secret = self
            .fake_salt_secret
            .as_deref()
            .unwrap_or_else(|| process_secret());
        let mut salt = ScramAlg::Sha256.hmac(
            secret,
            &[
                self.alg.mechanism().as_bytes(),
                b"\0",
                self.username.as_bytes(),
            ],
        );
        salt.truncate(16);
        salt
    }
}

/// An authzid names the authenticated user: the bare username or a JID with that localpart.
/// The domain is not ours to check here; the gateway stamps its own domain on every stanza, so
/// a foreign domain cannot grant anything.
fn authzid_matches(authzid: &str, username: &str) -> bool {
    if authzid == username {
        return true;
    }
    match authzid.split_once('@') {
        Some((local, domain)) => local == username && !domain.is_empty() && !domain.contains('/'),
        None => false,
    }
}

fn random_nonce() -> String {
    let mut bytes = [0u8; 18];
    rand::thread_rng().fill_bytes(&mut bytes);
    // Standard base64 never contains ',', so it is a valid SCRAM nonce.
    B64.encode(bytes)
}

fn process_secret() -> &'static [u8] {
    static SECRET: OnceLock<[u8; 32]> = OnceLock::new();
    SECRET.get_or_init(|| {
        let mut s = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut s);
        s
    })
}

#[cfg(test)]
#[path = "scram_tests.rs"]
mod tests;
