//! The TLS acceptor: the configured certificate, or a self-signed one made at start.

use std::sync::Arc;

use anyhow::Context as _;
use tokio_rustls::TlsAcceptor;

use crate::Config;

pub fn acceptor(config: &Config) -> anyhow::Result<TlsAcceptor> {
    let (certs, key) = match (&config.cert_path, &config.key_path) {
        (Some(cert), Some(key)) => {
            let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
                std::fs::File::open(cert)
                    .with_context(|| format!("cert_path {}", cert.display()))?,
            ))
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("cert_path {}: not a PEM certificate", cert.display()))?;
            let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
                std::fs::File::open(key).with_context(|| format!("key_path {}", key.display()))?,
            ))
            .with_context(|| format!("key_path {}: not a PEM key", key.display()))?
            .with_context(|| format!("key_path {}: no private key found", key.display()))?;
            (certs, key)
        }
        (None, None) => {
            tracing::warn!("no cert_path/key_path configured: using a self-signed certificate");
            let names = vec![config.domain.clone(), format!("*.{}", config.domain)];
            let cert = rcgen::generate_simple_self_signed(names)?;
            let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
            (vec![cert.cert.der().clone()], key)
        }
        _ => anyhow::bail!("cert_path and key_path must be set together"),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("certificate and key do not match")?;
    Ok(TlsAcceptor::from(Arc::new(server)))
}
