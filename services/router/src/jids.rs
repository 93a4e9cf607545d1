//! JID string helpers. The gateways stamp and normalise JIDs; here we only need to split them
//! and compare the case-insensitive parts (node and domain) case-insensitively.

/// The bare part of a JID (`user@domain` or `domain`), lowercased.
pub fn bare(jid: &str) -> String {
    jid.split('/').next().unwrap_or(jid).to_lowercase()
}

/// The resource, if the JID is a full JID.
pub fn resource(jid: &str) -> Option<&str> {
    jid.split_once('/').map(|(_, r)| r)
}

/// A full JID with its bare part lowercased (resources are case-sensitive).
pub fn full(jid: &str) -> String {
    match jid.split_once('/') {
        Some((b, r)) => format!("{}/{r}", b.to_lowercase()),
        None => jid.to_lowercase(),
    }
}

/// The node (username) and domain of a bare JID; `None` node for a domain JID.
pub fn split_bare(bare: &str) -> (Option<&str>, &str) {
    match bare.split_once('@') {
        Some((n, d)) => (Some(n), d),
        None => (None, bare),
    }
}

/// A parsed destination JID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Addr {
    /// Lowercased bare JID.
    pub bare: String,
    pub node: Option<String>,
    pub domain: String,
    pub resource: Option<String>,
}

impl Addr {
    /// Parses with the `jid` crate (rejecting what is not a JID), then splits.
    pub fn parse(s: &str) -> Option<Addr> {
        let jid = meerkat_xmpp::Jid::new(s).ok()?;
        let text = jid.to_string();
        let b = bare(&text);
        let (node, domain) = split_bare(&b);
        Some(Addr {
            node: node.map(str::to_owned),
            domain: domain.to_owned(),
            resource: resource(&text).map(str::to_owned),
            bare: b,
        })
    }

    /// The full JID (lowercased bare part) or the bare JID.
    pub fn full(&self) -> String {
        match &self.resource {
            Some(r) => format!("{}/{r}", self.bare),
            None => self.bare.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_normalises() {
        assert_eq!(bare("Alice@Example.com/Phone"), "alice@example.com");
        assert_eq!(full("Alice@Example.com/Phone"), "alice@example.com/Phone");
        assert_eq!(resource("a@b/c/d"), Some("c/d"));
        let a = Addr::parse("bob@example.com/desk").expect("jid");
        assert_eq!(a.node.as_deref(), Some("bob"));
        assert_eq!(a.domain, "example.com");
        assert_eq!(a.full(), "bob@example.com/desk");
        let d = Addr::parse("example.com").expect("jid");
        assert_eq!((d.node, d.resource), (None, None));
        assert!(Addr::parse("@x").is_none());
    }
}
