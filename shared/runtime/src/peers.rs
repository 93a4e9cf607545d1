//! The other DCs a service listens to, and the upstream URI each one's messages arrive
//! through (what the federation's `x-received-from` names): the router, the session
//! replicator and dc-health all check the origin of what crosses DCs against this list.
//! Configured as a list of tables, or as `dc2=amqp://...,dc3=amqp://...` (`MEERKAT_PEERS`).

use serde::{Deserialize, Deserializer, Serialize};

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub dc: String,
    /// As RabbitMQ names the upstream in `x-received-from`; a password in it is never printed.
    pub upstream_uri: String,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("dc", &self.dc)
            .field(
                "upstream_uri",
                &crate::secret::redact_url(&self.upstream_uri),
            )
            .finish()
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("peers: expected `dc=uri[,dc=uri...]`, got `{0}`")]
pub struct BadPeers(String);

/// Parses `dc2=amqp://...,dc3=amqp://...` (empty = no peers).
pub fn parse_peers(spec: &str) -> Result<Vec<Peer>, BadPeers> {
    spec.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((dc, uri)) if !dc.trim().is_empty() && !uri.trim().is_empty() => Ok(Peer {
                dc: dc.trim().to_owned(),
                upstream_uri: uri.trim().to_owned(),
            }),
            _ => Err(BadPeers(p.to_owned())),
        })
        .collect()
}

/// `#[serde(deserialize_with = "meerkat_runtime::peers::list_or_spec")]`: either form.
pub fn list_or_spec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Peer>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        List(Vec<Peer>),
        Spec(String),
    }
    match Form::deserialize(d)? {
        Form::List(list) => Ok(list),
        Form::Spec(spec) => parse_peers(&spec).map_err(serde::de::Error::custom),
    }
}

/// The peers checks every service makes: not this DC itself, none named twice. The message
/// for the `peers` key on failure.
pub fn check(dc: &str, peers: &[Peer]) -> Result<(), String> {
    if let Some(p) = peers.iter().find(|p| p.dc == dc) {
        return Err(format!("{} is this DC itself", p.dc));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(p) = peers.iter().find(|p| !seen.insert(&p.dc)) {
        return Err(format!("{} named twice", p.dc));
    }
    Ok(())
}
