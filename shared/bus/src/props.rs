//! The AMQP mapping of Meerkat's messages, written once: which properties a stanza message and
//! an event carry (docs/protocol.md). Producers describe what they send with [`Props`]; the
//! wire version is stamped by the [`crate::Publisher`] on every message it publishes.

use lapin::types::FieldTable;
use lapin::BasicProperties;
use meerkat_wire::headers as h;
use meerkat_wire::RouteKind;

use crate::Headers;

/// Properties of one message under construction.
pub struct Props {
    message_id: Option<String>,
    content_type: &'static str,
    persistent: bool,
    expiration_ms: Option<u64>,
    headers: Headers,
}

impl Props {
    /// A stanza (its XML, or a route envelope between DCs) of kind `kind`, persistent, from
    /// `origin_dc`.
    pub fn stanza(kind: RouteKind, origin_dc: &str) -> Props {
        Props {
            message_id: None,
            content_type: h::CONTENT_XMPP,
            persistent: true,
            expiration_ms: None,
            headers: Headers::new()
                .str(h::ORIGIN_DC, origin_dc)
                .str(h::KIND, kind.as_str()),
        }
    }

    /// A JSON event, persistent, from `origin_dc`.
    pub fn event(origin_dc: &str) -> Props {
        Props {
            message_id: None,
            content_type: h::CONTENT_JSON,
            persistent: true,
            expiration_ms: None,
            headers: Headers::new().str(h::ORIGIN_DC, origin_dc),
        }
    }

    /// The envelope id (for de-duplication); a fresh UUID when not given.
    pub fn id(mut self, id: impl Into<String>) -> Props {
        self.message_id = Some(id.into());
        self
    }

    /// Not written to disk by the broker (a heartbeat: a lost one is replaced by the next).
    pub fn transient(mut self) -> Props {
        self.persistent = false;
        self
    }

    /// Expires unread after `ms`.
    pub fn expires_after_ms(mut self, ms: u64) -> Props {
        self.expiration_ms = Some(ms);
        self
    }

    pub fn str(mut self, key: &str, value: &str) -> Props {
        self.headers = self.headers.str(key, value);
        self
    }

    pub fn u64(mut self, key: &str, value: u64) -> Props {
        self.headers = self.headers.u64(key, value);
        self
    }

    pub fn bool(mut self, key: &str, value: bool) -> Props {
        self.headers = self.headers.bool(key, value);
        self
    }

    /// `str` when `value` is there.
    pub fn opt_str(self, key: &str, value: Option<&str>) -> Props {
        match value {
            Some(v) => self.str(key, v),
            None => self,
        }
    }

    /// The header table, e.g. to inject the trace context.
    pub fn headers_mut(&mut self) -> &mut FieldTable {
        self.headers.table()
    }

    pub fn build(self) -> BasicProperties {
        let id = self
            .message_id
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let mut p = BasicProperties::default()
            .with_message_id(id.into())
            .with_content_type(self.content_type.into())
            .with_delivery_mode(if self.persistent { 2 } else { 1 })
            .with_headers(self.headers.build());
        if let Some(ms) = self.expiration_ms {
            p = p.with_expiration(ms.to_string().into());
        }
        p
    }
}

impl From<Props> for BasicProperties {
    fn from(p: Props) -> BasicProperties {
        p.build()
    }
}

/// Properties of an event on a DC's control exchange (`meerkat.control`).
pub fn control_event_properties(origin_dc: &str) -> BasicProperties {
    Props::event(origin_dc).build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HeaderExt;

    #[test]
    fn a_stanza_message_says_what_it_is() {
        let p = Props::stanza(RouteKind::Bounce, "dc1")
            .id("x")
            .u64(h::HOPS, 2)
            .opt_str(h::SENDER, None)
            .build();
        assert_eq!(p.message_id().as_ref().map(|s| s.as_str()), Some("x"));
        assert_eq!(
            p.content_type().as_ref().map(|s| s.as_str()),
            Some(h::CONTENT_XMPP)
        );
        assert_eq!(p.delivery_mode(), &Some(2));
        let hd = p.headers().as_ref();
        assert_eq!(hd.get_str(h::KIND).as_deref(), Some("bounce"));
        assert_eq!(hd.get_str(h::ORIGIN_DC).as_deref(), Some("dc1"));
        assert_eq!(hd.get_u64(h::HOPS), Some(2));
        assert_eq!(hd.get_str(h::SENDER), None);
    }

    #[test]
    fn an_event_is_json_with_a_fresh_id() {
        let p = Props::event("dc2")
            .transient()
            .expires_after_ms(3000)
            .build();
        assert_eq!(
            p.content_type().as_ref().map(|s| s.as_str()),
            Some(h::CONTENT_JSON)
        );
        assert_eq!(p.delivery_mode(), &Some(1));
        assert_eq!(p.expiration().as_ref().map(|s| s.as_str()), Some("3000"));
        let id = p.message_id().as_ref().map(|s| s.to_string()).unwrap();
        assert!(uuid::Uuid::parse_str(&id).is_ok());
    }
}
