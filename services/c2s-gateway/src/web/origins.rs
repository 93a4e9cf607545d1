//! Which web origins may open a WebSocket (the browser's `Origin` header).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Allowed origins (`https://chat.example.com`), compared without regard to case; `*` allows
/// every origin and requests without one. The default allows all, as ejabberd does: a client
/// authenticates with SASL on the stream itself, so a page from another origin gains nothing a
/// script could not do by connecting directly (no cookie or ambient credential rides along).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origins(Vec<String>);

impl Default for Origins {
    fn default() -> Origins {
        Origins(vec!["*".to_owned()])
    }
}

impl Origins {
    pub fn allows(&self, origin: Option<&str>) -> bool {
        self.0.iter().any(|o| {
            o == "*"
                || origin.is_some_and(|given| o.trim_end_matches('/').eq_ignore_ascii_case(given))
        })
    }
}

impl std::str::FromStr for Origins {
    type Err = String;

    /// Comma-separated.
    fn from_str(s: &str) -> Result<Origins, String> {
        Ok(Origins(
            s.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect(),
        ))
    }
}

impl Serialize for Origins {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(&self.0)
    }
}

impl<'de> Deserialize<'de> for Origins {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Origins, D::Error> {
        crate::cidr::list_text(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_origin_by_default_listed_ones_otherwise() {
        let all = Origins::default();
        assert!(all.allows(Some("https://evil.example")));
        assert!(all.allows(None));
        let listed: Origins = "https://chat.example.com, http://localhost:8080/"
            .parse()
            .unwrap();
        assert!(listed.allows(Some("https://CHAT.example.com")));
        assert!(listed.allows(Some("http://localhost:8080")));
        assert!(!listed.allows(Some("https://chat.example.com.evil")));
        assert!(!listed.allows(None));
        let l: Origins = serde_json::from_str(r#"["https://a.example"]"#).unwrap();
        assert!(l.allows(Some("https://a.example")));
    }
}
