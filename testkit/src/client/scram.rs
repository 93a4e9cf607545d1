//! The client side of SCRAM (RFC 5802, RFC 7677) without channel binding: builds the client
//! messages and checks the server's signature, so a test proves the server knows the password.

use anyhow::{anyhow, bail, Context};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::Rng;
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// GS2 header for "client does not support channel binding".
const GS2_HEADER: &str = "n,,";

/// The hash a SCRAM mechanism is built on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScramHash {
    Sha1,
    Sha256,
}

impl ScramHash {
    pub fn mechanism(self) -> &'static str {
        match self {
            ScramHash::Sha1 => "SCRAM-SHA-1",
            ScramHash::Sha256 => "SCRAM-SHA-256",
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        // HMAC accepts keys of any length, so construction cannot fail; `expect` would still
        // trip the lint, hence the fallback to an impossible empty tag.
        match self {
            ScramHash::Sha1 => Hmac::<Sha1>::new_from_slice(key)
                .map(|mut m| {
                    m.update(data);
                    m.finalize().into_bytes().to_vec()
                })
                .unwrap_or_default(),
            ScramHash::Sha256 => Hmac::<Sha256>::new_from_slice(key)
                .map(|mut m| {
                    m.update(data);
                    m.finalize().into_bytes().to_vec()
                })
                .unwrap_or_default(),
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => Sha1::digest(data).to_vec(),
            ScramHash::Sha256 => Sha256::digest(data).to_vec(),
        }
    }

    /// Hi() of RFC 5802 §2.2, i.e. PBKDF2 with one output block.
    fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => {
                let mut out = [0u8; 20];
                pbkdf2::pbkdf2_hmac::<Sha1>(password, salt, iterations, &mut out);
                out.to_vec()
            }
            ScramHash::Sha256 => {
                let mut out = [0u8; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
                out.to_vec()
            }
        }
    }
}

/// The salted password of one SCRAM login (RFC 5802 §3: `SaltedPassword`), which a client may
/// keep and reuse while the server offers the same salt and iteration count: then a login
/// costs it no PBKDF2 (as Conversations and Monal do), and the server never runs PBKDF2 for
/// SCRAM at all. What a reconnecting phone sends is then a few HMACs away.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaltedPassword {
    salt: Vec<u8>,
    iterations: u32,
    salted: Vec<u8>,
}

/// One SCRAM exchange, driven step by step by the SASL code.
pub struct ScramClient {
    hash: ScramHash,
    password: String,
    client_nonce: String,
    client_first_bare: String,
    /// Set once the server-first message has been answered.
    server_signature: Option<Vec<u8>>,
    /// Reused when the server's salt and iteration count match; set by `client_final`.
    salted: Option<SaltedPassword>,
}

impl ScramClient {
    /// A client with a fresh random nonce. Username and password go through SASLprep.
    pub fn new(hash: ScramHash, username: &str, password: &str) -> anyhow::Result<ScramClient> {
        let nonce: [u8; 18] = rand::thread_rng().gen();
        ScramClient::with_nonce(hash, username, password, &B64.encode(nonce))
    }

    /// A client with a chosen nonce (the RFC test vectors).
    pub fn with_nonce(
        hash: ScramHash,
        username: &str,
        password: &str,
        nonce: &str,
    ) -> anyhow::Result<ScramClient> {
        let username = stringprep::saslprep(username).context("SASLprep of the username")?;
        let password = stringprep::saslprep(password).context("SASLprep of the password")?;
        let client_first_bare = format!("n={},r={}", escape_username(&username), nonce);
        Ok(ScramClient {
            hash,
            password: password.into_owned(),
            client_nonce: nonce.to_owned(),
            client_first_bare,
            server_signature: None,
            salted: None,
        })
    }

    /// Reuses the salted password of an earlier login (when the salt and iteration count the
    /// server offers are the same).
    pub fn with_cached(mut self, salted: Option<SaltedPassword>) -> ScramClient {
        self.salted = salted;
        self
    }

    /// The salted password this exchange used, to keep for the next login.
    pub fn salted(&self) -> Option<&SaltedPassword> {
        self.salted.as_ref()
    }

    /// The client-first message (with GS2 header).
    pub fn client_first(&self) -> String {
        format!("{GS2_HEADER}{}", self.client_first_bare)
    }

    /// Answers the server-first message with the client-final message.
    pub fn client_final(&mut self, server_first: &str) -> anyhow::Result<String> {
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for part in server_first.split(',') {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| anyhow!("malformed server-first attribute {part:?}"))?;
            match key {
                "r" => nonce = Some(value),
                "s" => salt = Some(B64.decode(value).context("salt is not base64")?),
                "i" => iterations = Some(value.parse::<u32>().context("bad iteration count")?),
                "m" => bail!("server requires an unsupported extension"),
                _ => {}
            }
        }
        let nonce = nonce.ok_or_else(|| anyhow!("server-first without nonce"))?;
        let salt = salt.ok_or_else(|| anyhow!("server-first without salt"))?;
        let iterations = iterations.ok_or_else(|| anyhow!("server-first without iterations"))?;
        if !nonce.starts_with(&self.client_nonce) || nonce.len() == self.client_nonce.len() {
            bail!("server nonce does not extend the client nonce");
        }
        if iterations == 0 {
            bail!("iteration count must be positive");
        }

        let h = self.hash;
        let salted = match self.salted.take() {
            Some(c) if c.salt == salt && c.iterations == iterations => c.salted,
            _ => h.salted_password(self.password.as_bytes(), &salt, iterations),
        };
        self.salted = Some(SaltedPassword {
            salt,
            iterations,
            salted: salted.clone(),
        });
        let client_key = h.hmac(&salted, b"Client Key");
        let stored_key = h.hash(&client_key);
        let without_proof = format!("c={},r={}", B64.encode(GS2_HEADER), nonce);
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, server_first, without_proof
        );
        let client_signature = h.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&client_signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = h.hmac(&salted, b"Server Key");
        self.server_signature = Some(h.hmac(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Checks the server-final message: the server must prove it knows the password too.
    pub fn verify_server_final(&self, server_final: &str) -> anyhow::Result<()> {
        let expected = self
            .server_signature
            .as_ref()
            .ok_or_else(|| anyhow!("server-final before server-first"))?;
        if let Some(err) = server_final.strip_prefix("e=") {
            bail!("server reported SCRAM error {err}");
        }
        let verifier = server_final
            .split(',')
            .find_map(|p| p.strip_prefix("v="))
            .ok_or_else(|| anyhow!("server-final without verifier: {server_final:?}"))?;
        let got = B64.decode(verifier).context("verifier is not base64")?;
        if &got != expected {
            bail!("server signature does not match: the server does not know the password");
        }
        Ok(())
    }
}

/// RFC 5802 §5.1: `=` and `,` in a username are escaped.
fn escape_username(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc5802_sha1_example() {
        let mut c = ScramClient::with_nonce(
            ScramHash::Sha1,
            "user",
            "pencil",
            "fyko+d2lbbFgONRv9qkxdawL",
        )
        .unwrap();
        assert_eq!(c.client_first(), "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL");
        let fin = c
            .client_final("r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096")
            .unwrap();
        assert_eq!(
            fin,
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
        );
        c.verify_server_final("v=rmF9pqV8S7suAoZWja4dJRkFsKQ=")
            .unwrap();
        assert!(c
            .verify_server_final("v=AAAAAAAAAAAAAAAAAAAAAAAAAAA=")
            .is_err());
    }

    #[test]
    fn rfc7677_sha256_example() {
        let mut c =
            ScramClient::with_nonce(ScramHash::Sha256, "user", "pencil", "rOprNGfwEbeRWgbNEkqO")
                .unwrap();
        assert_eq!(c.client_first(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let fin = c
            .client_final(
                "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            )
            .unwrap();
        assert_eq!(
            fin,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        c.verify_server_final("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
        assert!(c.verify_server_final("e=invalid-proof").is_err());
    }

    #[test]
    fn a_cached_salted_password_gives_the_same_proof_and_a_stale_one_is_ignored() {
        let first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let fresh = || {
            ScramClient::with_nonce(ScramHash::Sha256, "user", "pencil", "rOprNGfwEbeRWgbNEkqO")
                .unwrap()
        };
        let mut a = fresh();
        let expected = a.client_final(first).unwrap();
        let kept = a.salted().cloned();
        let mut b = fresh().with_cached(kept.clone());
        assert_eq!(b.client_final(first).unwrap(), expected);
        // Another salt (the password was changed): the cache is not used.
        let mut c = fresh().with_cached(kept);
        let other =
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=QSXCR+Q6sek8bf92,i=4096";
        assert_ne!(c.client_final(other).unwrap(), expected);
        assert_ne!(c.salted(), a.salted());
    }

    #[test]
    fn rejects_a_nonce_that_does_not_extend_ours() {
        let mut c = ScramClient::with_nonce(ScramHash::Sha256, "user", "pencil", "abc").unwrap();
        assert!(c
            .client_final("r=xyz123,s=QSXCR+Q6sek8bf92,i=4096")
            .is_err());
        assert!(c.client_final("r=abc,s=QSXCR+Q6sek8bf92,i=4096").is_err());
    }

    #[test]
    fn escapes_usernames() {
        let c = ScramClient::with_nonce(ScramHash::Sha1, "a=b,c", "p", "n").unwrap();
        assert_eq!(c.client_first(), "n,,n=a=3Db=2Cc,r=n");
    }
}
