//! XMPP protocol types shared by the services: the element tree, the bounded stream
//! reader and its WebSocket framing (RFC 7395), namespaces, stream and stanza errors, and JIDs (re-exported from `jid`).

pub mod addr;
pub mod avatar;
pub mod bosh;
pub mod carbons;
pub mod chars;
pub mod element;
pub mod error;
pub mod framing;
pub mod hints;
pub mod ns;
pub mod reader;
pub mod stanza;
mod tree;

pub use element::{escape_attr, escape_text, Element, Node};
pub use error::{ErrorType, StanzaError, StreamError};
pub use hints::Hints;
pub use jid::{BareJid, FullJid, Jid};
pub use reader::{Inbound, Limits, ReadError, StreamHeader, StreamReader};
pub use stanza::{StanzaKind, StanzaType};
