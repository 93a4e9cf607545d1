//! Is a message from another DC really from the DC it claims? The federation plugin appends an
//! `x-received-from` entry (array of tables) for each link it crossed, naming the upstream URI
//! as configured, credentials removed. The last entry is the link into this DC; it must be the
//! upstream of the claimed origin. A message without it was published in this DC itself.

use std::collections::HashMap;

use lapin::types::{AMQPValue, FieldTable};

pub const RECEIVED_FROM: &str = "x-received-from";

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0} is not a peer DC")]
    UnknownDc(String),
    #[error("no x-received-from: published in this DC, not received from {0}")]
    NotFederated(String),
    #[error("claims {claimed} but came through the link from {via}")]
    WrongLink { claimed: String, via: String },
}

/// The configured upstream URI of each peer DC, in the form `x-received-from` carries.
#[derive(Clone, Debug, Default)]
pub struct Origins {
    uri_by_dc: HashMap<String, String>,
}

impl Origins {
    pub fn new<'a>(peers: impl IntoIterator<Item = (&'a str, &'a str)>) -> Origins {
        Origins {
            uri_by_dc: peers
                .into_iter()
                .map(|(dc, uri)| (dc.to_owned(), strip_credentials(uri)))
                .collect(),
        }
    }

    /// Ok when the last `x-received-from` entry names the upstream of `claimed_dc`.
    pub fn check(&self, headers: Option<&FieldTable>, claimed_dc: &str) -> Result<(), Refusal> {
        let expected = self
            .uri_by_dc
            .get(claimed_dc)
            .ok_or_else(|| Refusal::UnknownDc(claimed_dc.to_owned()))?;
        let via =
            last_link_uri(headers).ok_or_else(|| Refusal::NotFederated(claimed_dc.to_owned()))?;
        if strip_credentials(&via) == *expected {
            Ok(())
        } else {
            Err(Refusal::WrongLink {
                claimed: claimed_dc.to_owned(),
                via,
            })
        }
    }
}

/// The `uri` of the last `x-received-from` entry.
pub fn last_link_uri(headers: Option<&FieldTable>) -> Option<String> {
    let AMQPValue::FieldArray(hops) = headers?.inner().get(RECEIVED_FROM)? else {
        return None;
    };
    let AMQPValue::FieldTable(last) = hops.as_slice().last()? else {
        return None;
    };
    match last.inner().get("uri")? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// `uri` without `user:password@` (the federation plugin removes them from what it writes).
pub fn strip_credentials(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => uri.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{FieldArray, LongString, ShortString};

    fn hop(uri: &str) -> AMQPValue {
        let mut t = FieldTable::default();
        t.insert(
            ShortString::from("uri"),
            AMQPValue::LongString(LongString::from(uri)),
        );
        t.insert(
            ShortString::from("exchange"),
            AMQPValue::LongString(LongString::from("meerkat.inter.sessions")),
        );
        AMQPValue::FieldTable(t)
    }

    fn headers(hops: Vec<AMQPValue>) -> FieldTable {
        let mut t = FieldTable::default();
        t.insert(
            ShortString::from(RECEIVED_FROM),
            AMQPValue::FieldArray(FieldArray::from(hops)),
        );
        t
    }

    fn origins() -> Origins {
        Origins::new([
            ("dc1", "amqp://guest:guest@127.0.0.1:5672/t-1"),
            ("dc3", "amqp://127.0.0.1:5672/t-3"),
        ])
    }

    #[test]
    fn the_link_of_the_claimed_dc_is_accepted() {
        let h = headers(vec![hop("amqp://127.0.0.1:5672/t-1")]);
        assert_eq!(origins().check(Some(&h), "dc1"), Ok(()));
        // The last hop counts.
        let h = headers(vec![hop("amqp://x/y"), hop("amqp://127.0.0.1:5672/t-3")]);
        assert_eq!(origins().check(Some(&h), "dc3"), Ok(()));
    }

    #[test]
    fn forged_origins_are_refused() {
        let o = origins();
        assert_eq!(
            o.check(None, "dc1"),
            Err(Refusal::NotFederated("dc1".into()))
        );
        assert_eq!(
            o.check(Some(&FieldTable::default()), "dc1"),
            Err(Refusal::NotFederated("dc1".into()))
        );
        let via3 = headers(vec![hop("amqp://127.0.0.1:5672/t-3")]);
        assert!(matches!(
            o.check(Some(&via3), "dc1"),
            Err(Refusal::WrongLink { .. })
        ));
        assert_eq!(
            o.check(Some(&via3), "dc7"),
            Err(Refusal::UnknownDc("dc7".into()))
        );
    }

    #[test]
    fn credentials_are_stripped() {
        assert_eq!(
            strip_credentials("amqp://guest:guest@127.0.0.1:5672/t-1"),
            "amqp://127.0.0.1:5672/t-1"
        );
        assert_eq!(strip_credentials("amqp://h/%2f"), "amqp://h/%2f");
    }
}
