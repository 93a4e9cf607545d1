//! JID helpers of the router. Normalisation is `meerkat_xmpp::addr`'s, the one every service
//! uses (the bare JID is the route partition key).

pub use meerkat_xmpp::addr::{bare, full};

/// The resource, if the JID is a full JID.
pub fn resource(jid: &str) -> Option<&str> {
    jid.split_once('/').map(|(_, r)| r)
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
    /// Normalised bare JID.
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

    /// The normalised full JID, or the bare JID.
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
