//! What stream negotiation hands over to a session, and what both of them and SASL share: how
//! a stream ends, the bound resource, and the connection's place in the counts. Kept apart so
//! that `negotiate` (which starts the session) and `session`/`sasl` (which end streams) do not
//! import each other.

use meerkat_xmpp::stanza::iq_result_with;
use meerkat_xmpp::{ns, Element, ReadError, StreamError};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::OwnedSemaphorePermit;

/// Why negotiation stopped without a session.
pub enum End {
    /// Send this stream error, then close.
    Error(StreamError),
    /// The client closed the stream (we answer with our close).
    ClientClosed,
    /// The connection is gone; nothing can be sent.
    Gone,
}

impl From<ReadError> for End {
    fn from(e: ReadError) -> End {
        match e {
            ReadError::Stream(se) => End::Error(se),
            ReadError::Eof | ReadError::Io(_) => End::Gone,
        }
    }
}

impl From<std::io::Error> for End {
    fn from(_: std::io::Error) -> End {
        End::Gone
    }
}

/// An open client connection's place: one of `max_connections`, and counted in
/// `meerkat_gateway_connections`, while it lives.
pub struct Counted {
    gauge: Gauge,
    _permit: OwnedSemaphorePermit,
}

impl Counted {
    pub fn new(gauge: &Gauge, permit: OwnedSemaphorePermit) -> Counted {
        gauge.inc();
        Counted {
            gauge: gauge.clone(),
            _permit: permit,
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// What negotiation produces: an authenticated, bound resource.
pub struct Bound {
    pub username: String,
    pub jid: String,
    /// Fingerprint of the credentials it authenticated with.
    pub credentials: u64,
    /// The bind iq to answer once the session is announced.
    pub bind_request: Element,
}

/// The bind result for the bound JID.
pub fn bind_result(request: &Element, jid: &str) -> Element {
    iq_result_with(
        request,
        Element::new("bind", ns::BIND).with_child(Element::new("jid", ns::BIND).with_text(jid)),
    )
}
