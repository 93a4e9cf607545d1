//! Stream errors (RFC 6120 §4.9) and stanza errors (RFC 6120 §8.3).

use crate::{ns, Element};

/// A stream-level error condition; the stream is closed after it is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamError {
    pub condition: &'static str,
    pub text: Option<String>,
}

impl StreamError {
    pub fn new(condition: &'static str) -> StreamError {
        StreamError {
            condition,
            text: None,
        }
    }

    pub fn with_text(condition: &'static str, text: impl Into<String>) -> StreamError {
        StreamError {
            condition,
            text: Some(text.into()),
        }
    }

    /// `<stream:error>…</stream:error>` ready to write into a client stream.
    pub fn to_xml(&self) -> String {
        let mut out = String::from("<stream:error>");
        Element::new(self.condition, ns::STREAMS_ERR).write_to(&mut out, ns::CLIENT);
        if let Some(text) = &self.text {
            Element::new("text", ns::STREAMS_ERR)
                .with_attr("xml:lang", "en")
                .with_text(text.clone())
                .write_to(&mut out, ns::CLIENT);
        }
        out.push_str("</stream:error>");
        out
    }
}

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.text {
            Some(t) => write!(f, "{}: {}", self.condition, t),
            None => f.write_str(self.condition),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorType {
    Auth,
    Cancel,
    Continue,
    Modify,
    Wait,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Auth => "auth",
            ErrorType::Cancel => "cancel",
            ErrorType::Continue => "continue",
            ErrorType::Modify => "modify",
            ErrorType::Wait => "wait",
        }
    }
}

/// A stanza error condition with its type, e.g. `service-unavailable` / `cancel`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StanzaError {
    pub kind: ErrorType,
    pub condition: &'static str,
    pub text: Option<String>,
    /// An application-specific condition (RFC 6120 §8.4), e.g. a pubsub error's.
    /// Boxed: the error travels in many `Result`s and stays small.
    pub app: Option<Box<Element>>,
}

impl StanzaError {
    pub fn new(kind: ErrorType, condition: &'static str) -> StanzaError {
        StanzaError {
            kind,
            condition,
            text: None,
            app: None,
        }
    }

    /// Adds an application-specific condition element.
    pub fn app(mut self, condition: Element) -> StanzaError {
        self.app = Some(Box::new(condition));
        self
    }

    pub fn text(mut self, text: impl Into<String>) -> StanzaError {
        self.text = Some(text.into());
        self
    }

    pub fn service_unavailable() -> StanzaError {
        StanzaError::new(ErrorType::Cancel, "service-unavailable")
    }
    pub fn bad_request() -> StanzaError {
        StanzaError::new(ErrorType::Modify, "bad-request")
    }
    pub fn feature_not_implemented() -> StanzaError {
        StanzaError::new(ErrorType::Cancel, "feature-not-implemented")
    }
    pub fn item_not_found() -> StanzaError {
        StanzaError::new(ErrorType::Cancel, "item-not-found")
    }
    pub fn not_allowed() -> StanzaError {
        StanzaError::new(ErrorType::Cancel, "not-allowed")
    }
    pub fn forbidden() -> StanzaError {
        StanzaError::new(ErrorType::Auth, "forbidden")
    }
    pub fn not_acceptable() -> StanzaError {
        StanzaError::new(ErrorType::Modify, "not-acceptable")
    }
    pub fn conflict() -> StanzaError {
        StanzaError::new(ErrorType::Cancel, "conflict")
    }
    pub fn jid_malformed() -> StanzaError {
        StanzaError::new(ErrorType::Modify, "jid-malformed")
    }
    pub fn internal_server_error() -> StanzaError {
        StanzaError::new(ErrorType::Wait, "internal-server-error")
    }
    pub fn resource_constraint() -> StanzaError {
        StanzaError::new(ErrorType::Wait, "resource-constraint")
    }
    pub fn recipient_unavailable() -> StanzaError {
        StanzaError::new(ErrorType::Wait, "recipient-unavailable")
    }
    pub fn policy_violation() -> StanzaError {
        StanzaError::new(ErrorType::Modify, "policy-violation")
    }
    pub fn not_authorized() -> StanzaError {
        StanzaError::new(ErrorType::Auth, "not-authorized")
    }
    pub fn remote_server_not_found() -> StanzaError {
        StanzaError::new(ErrorType::Cancel, "remote-server-not-found")
    }

    /// The `<error/>` child element.
    pub fn to_element(&self) -> Element {
        let mut e = Element::new("error", ns::CLIENT)
            .with_attr("type", self.kind.as_str())
            .with_child(Element::new(self.condition, ns::STANZAS_ERR));
        if let Some(t) = &self.text {
            e.push_child(
                Element::new("text", ns::STANZAS_ERR)
                    .with_attr("xml:lang", "en")
                    .with_text(t.clone()),
            );
        }
        if let Some(app) = &self.app {
            e.push_child((**app).clone());
        }
        e
    }
}

impl std::fmt::Display for StanzaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind.as_str(), self.condition)
    }
}
