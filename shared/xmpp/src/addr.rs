//! JIDs as every service keys things by, with one normalisation: the `jid` crate's (RFC 7622:
//! nodeprep for the local part, nameprep for the domain, resourceprep for the resource).
//!
//! The normalised bare JID is the key that keeps one account's stanzas in order — the routing
//! key of `meerkat.route`, whichever service publishes there (a gateway for its client, a
//! gateway or dc-health bouncing what a session could not take, the replicator and routers
//! nudging an account) — and it names the account in every directory. Two services that
//! computed it differently would put one account's stanzas in two partitions and lose their
//! order, so there is one definition, [`bare`].

use jid::Jid;

/// A normalised bare JID: `Alice@Example.COM/Phone` → `alice@example.com`. What is not a JID
/// (a hostile or broken address) still gets a stable key, its bare part lowercased, so that
/// every service routes it to the same partition, where the router answers it.
pub fn bare(jid: &str) -> String {
    match Jid::new(jid) {
        Ok(j) => j.to_bare().to_string(),
        Err(_) => jid.split('/').next().unwrap_or(jid).to_lowercase(),
    }
}

/// A normalised JID, full or bare (resources keep their case). What is not a JID keeps its
/// resource and gets its bare part lowercased, as in [`bare`].
pub fn full(jid: &str) -> String {
    match Jid::new(jid) {
        Ok(j) => j.to_string(),
        Err(_) => match jid.split_once('/') {
            Some((b, r)) => format!("{}/{r}", b.to_lowercase()),
            None => jid.to_lowercase(),
        },
    }
}

/// The normalised bare JID of the account `username` of `domain`.
pub fn account(username: &str, domain: &str) -> String {
    bare(&format!("{username}@{domain}"))
}

/// Whether two JIDs name the same account (their bare parts normalise alike).
pub fn same_account(a: &str, b: &str) -> bool {
    bare(a) == bare(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_normalisation_for_keys() {
        assert_eq!(bare("Alice@Example.COM/Phone"), "alice@example.com");
        assert_eq!(bare("alice@example.com"), "alice@example.com");
        assert_eq!(bare("Example.com"), "example.com");
        assert_eq!(full("Alice@Example.com/Phone"), "alice@example.com/Phone");
        assert_eq!(account("Bob", "Example.com"), "bob@example.com");
        assert!(same_account("BOB@example.com/a", "bob@EXAMPLE.com/b"));
    }

    #[test]
    fn nodeprep_folds_more_than_ascii_case() {
        // Case folding of nodeprep (RFC 3491 table B.2), not only ASCII lowercasing.
        assert_eq!(bare("STRASSE@example.com"), bare("strasse@example.com"));
        assert_eq!(bare("ÉMILE@example.com"), "émile@example.com");
    }

    #[test]
    fn what_is_not_a_jid_still_gets_a_stable_key() {
        assert_eq!(bare("@Example.com/x"), "@example.com");
        assert_eq!(full("a@b@C/R"), "a@b@c/R");
        assert_eq!(bare(""), "");
    }
}
