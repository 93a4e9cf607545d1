//! The local stack's self-signed certificate for the domain and its subdomains.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::layout;

/// Writes `certs/cert.pem` and `certs/key.pem` for `domain` and `*.domain` unless they exist;
/// returns their paths.
pub fn ensure(domain: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let dir = layout::certs_dir();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    // Remembers which domain the pair was made for, so `--domain` changes take effect.
    let made_for = dir.join("domain");
    let same_domain = std::fs::read_to_string(&made_for).is_ok_and(|d| d.trim() == domain);
    if cert.exists() && key.exists() && same_domain {
        return Ok((cert, key));
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let names = vec![domain.to_string(), format!("*.{domain}")];
    let certified = rcgen::generate_simple_self_signed(names).context("generating certificate")?;
    std::fs::write(&cert, certified.cert.pem())
        .with_context(|| format!("writing {}", cert.display()))?;
    std::fs::write(&key, certified.key_pair.serialize_pem())
        .with_context(|| format!("writing {}", key.display()))?;
    std::fs::write(&made_for, domain).with_context(|| format!("writing {}", made_for.display()))?;
    println!(
        "wrote self-signed certificate for {domain} and *.{domain}: {}",
        cert.display()
    );
    Ok((cert, key))
}
